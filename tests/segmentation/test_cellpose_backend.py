"""The cellpose backend: missing-weights error, wiring with random weights, tiny training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpa.segmentation import SegmentConfig, f1_at, segment
from hpa.segmentation.cellpose_backend import resolve_weights, run_model

from .helpers import disc_sample


def _random_weights(path: Path, seed: int = 0) -> Path:
    import torch
    from cellpose.models import CellposeModel

    torch.manual_seed(seed)
    model = CellposeModel(gpu=False, pretrained_model=False, device=torch.device("cpu"))
    model.net.save_model(str(path))  # a state dict, as cellpose writes its own weights
    return path


def test_missing_weights_error_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "models"))
    with pytest.raises(FileNotFoundError) as info:
        resolve_weights("nuclei")
    message = str(info.value)
    assert str(tmp_path / "models" / "nucleitorch_0") in message
    assert "CELLPOSE_LOCAL_MODELS_PATH" in message
    with pytest.raises(FileNotFoundError, match="cyto3"):
        segment(disc_sample(128), SegmentConfig(backend="cellpose"))
    with pytest.raises(FileNotFoundError, match="neither a weights file"):
        resolve_weights(str(tmp_path / "no-such-model"))
    assert not (tmp_path / "models").exists()  # nothing was downloaded or created


def test_cellpose_wiring_with_random_weights(tmp_path: Path) -> None:
    weights = _random_weights(tmp_path / "random_cp")
    assert resolve_weights(str(weights)) == weights
    config = SegmentConfig(
        backend="cellpose",
        cellpose_model=str(weights),
        cellpose_nuclei_model=str(weights),
        cellpose_device="cpu",
    )
    cells, nuclei = segment(disc_sample(128), config)
    assert cells.shape == nuclei.shape == (128, 128)
    assert cells.dtype == nuclei.dtype == np.int32
    ids = np.unique(cells[cells > 0])
    assert ids.tolist() == list(range(1, ids.size + 1))
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])
    assert set(np.unique(nuclei[nuclei > 0])) == set(ids.tolist())  # cells without nucleus dropped


def _training_set(n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Bright discs of random position and radius on noise, with their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        img = rng.normal(0.1, 0.03, (size, size)).astype(np.float32)
        lab = np.zeros((size, size), np.int32)
        k = 0
        for _try in range(60):
            r = rng.uniform(8, 12)
            cy, cx = rng.uniform(r, size - r, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            if (lab[disc] > 0).any() or ((yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 3) ** 2)[lab > 0].any():
                continue
            k += 1
            lab[disc] = k
            img[disc] += 0.8
        images.append(img)
        labels.append(lab)
    return images, labels


@pytest.mark.slow
def test_tiny_cellpose_training_beats_random_init(tmp_path: Path) -> None:
    import torch
    from cellpose.models import CellposeModel
    from cellpose.train import train_seg

    torch.manual_seed(0)
    train_x, train_y = _training_set(8, 128, seed=0)
    test_x, test_y = _training_set(2, 128, seed=1)
    model = CellposeModel(
        gpu=False, pretrained_model=False, device=torch.device("cpu"), diam_mean=20.0, mkldnn=False
    )  # MKLDNN tensors cannot be trained
    config = SegmentConfig(cellpose_flow_threshold=0.0)  # 0 turns off the flow check
    before = np.mean([f1_at(y, run_model(model, x, [0, 0], 20.0, config)) for x, y in zip(test_x, test_y)])
    weights, _train_losses, _test_losses = train_seg(
        model.net, train_data=train_x, train_labels=train_y, channels=[0, 0], normalize=True,
        n_epochs=40, learning_rate=0.05, batch_size=8, bsize=128, min_train_masks=1,
        save_path=str(tmp_path), model_name="tiny", rescale=False,
    )  # fmt: skip
    trained = CellposeModel(gpu=False, pretrained_model=str(weights), device=torch.device("cpu"))
    after = np.mean([f1_at(y, run_model(trained, x, [0, 0], 20.0, config)) for x, y in zip(test_x, test_y)])
    assert after > before + 0.2, (before, after)
