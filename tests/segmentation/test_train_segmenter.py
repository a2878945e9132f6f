"""``hpa train-segmenter``: data layouts, errors, and a tiny training run with real steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpa.errors import HPAConfigError, HPADataError
from hpa.io import read_label_image, write_label_image, write_png
from hpa.segmentation.cellpose_backend import resolve_weights
from hpa.segmentation.training import (
    SegTrainConfig,
    load_pairs,
    object_diameter,
    shrink_pair,
    train_segmenter,
)

from .helpers import disc_sample

COLOURS = ("red", "green", "blue", "yellow")


def _disc_labels(size: int, grid: int, frac: float) -> np.ndarray:
    """Labels of :func:`disc_sample`'s cells (``frac`` 0.38) or nuclei (0.16), numbered row by row."""
    yy, xx = np.mgrid[:size, :size]
    step = size / grid
    labels = np.zeros((size, size), np.int32)
    for i in range(grid):
        for j in range(grid):
            d2 = (yy - (i + 0.5) * step) ** 2 + (xx - (j + 0.5) * step) ** 2
            labels[d2 <= (frac * step) ** 2] = i * grid + j + 1
    return labels


def _write_seg_dir_layout(root: Path, n: int = 2, size: int = 96) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    for k in range(n):
        image = disc_sample(size, grid=3, seed=k)
        for c, colour in enumerate(COLOURS):
            write_png(images / f"s{k}_{colour}.png", np.ascontiguousarray(image[..., c]))
        write_label_image(masks / "cells" / f"s{k}.png", _disc_labels(size, 3, 0.38))
        write_label_image(masks / "nuclei" / f"s{k}.png", _disc_labels(size, 3, 0.16))
    return images, masks


def test_layouts_hpa_seg_dir_reference_and_grey(tmp_path: Path) -> None:
    images, masks = _write_seg_dir_layout(tmp_path)
    cells = load_pairs(images, masks, "cells")
    assert [p.name for p in cells] == ["s0", "s1"]
    assert cells[0].x.shape == (96, 96, 2) and cells[0].x.dtype == np.float32
    assert cells[0].labels.max() == 9
    nuclei = load_pairs(images, masks, "nuclei")
    assert nuclei[0].x.shape == (96, 96) and nuclei[0].labels.max() == 9
    # the HPA reference layout: <Id>_cellmask.png beside each other
    ref = tmp_path / "ref"
    write_label_image(ref / "s0_cellmask.png", _disc_labels(96, 3, 0.38))
    write_label_image(ref / "s1_cellmask.png", _disc_labels(96, 3, 0.38))
    assert [p.labels.max() for p in load_pairs(images, ref, "cells")] == [9, 9]
    # DSB layout: grey images and same-named label images; nuclei only
    grey, labels = tmp_path / "grey", tmp_path / "labels"
    write_png(grey / "a.png", np.ascontiguousarray(disc_sample(96)[..., 2]))
    write_label_image(labels / "a.png", _disc_labels(96, 3, 0.16))
    pair = load_pairs(grey, labels, "nuclei")[0]
    assert pair.name == "a" and pair.x.shape == (96, 96) and pair.x.max() == pytest.approx(1.0)
    with pytest.raises(HPADataError, match="can train nuclei only"):
        load_pairs(grey, labels, "cells")


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    images, masks = _write_seg_dir_layout(tmp_path)
    (masks / "cells" / "s1.png").unlink()
    with pytest.raises(HPADataError, match=r"no cells mask for image 's1'.*cells/s1\.png"):
        load_pairs(images, masks, "cells")
    write_label_image(masks / "cells" / "s1.png", np.zeros((50, 50), np.int32))
    with pytest.raises(HPADataError, match=r"s1\.png: mask is \(50, 50\)"):
        load_pairs(images, masks, "cells")
    with pytest.raises(HPADataError, match=r"--images .*not a folder"):
        load_pairs(tmp_path / "nowhere", masks, "cells")
    with pytest.raises(HPAConfigError, match="--kind"):
        SegTrainConfig(kind="membranes")
    with pytest.raises(HPAConfigError, match="not a SEGMODEL folder"):
        resolve_weights(str(tmp_path))


def test_shrink_pair_brings_objects_to_the_model_diameter(tmp_path: Path) -> None:
    images, masks = _write_seg_dir_layout(tmp_path, n=1, size=192)
    pair = load_pairs(images, masks, "cells")[0]
    assert object_diameter(pair.labels) > 40
    small = shrink_pair(pair, 20.0)
    assert small.x.shape[:2] == small.labels.shape and small.x.shape[-1] == 2
    assert object_diameter(small.labels) == pytest.approx(20.0, rel=0.1)
    assert small.labels.max() == 9
    assert shrink_pair(small, 30.0) is small  # never enlarged


def test_tiny_training_takes_real_steps(tmp_path: Path) -> None:
    import torch
    from cellpose.models import CellposeModel

    images, masks = _write_seg_dir_layout(tmp_path)
    config = SegTrainConfig(kind="nuclei", epochs=3, batch_size=2, crop=64, learning_rate=0.05)
    torch.manual_seed(config.seed)  # the same initial weights as train_segmenter draws
    init = CellposeModel(
        gpu=False, pretrained_model=False, diam_mean=17.0, mkldnn=False, device=torch.device("cpu")
    )
    before = {k: v.clone() for k, v in init.net.state_dict().items()}
    nuc = train_segmenter(load_pairs(images, masks, "nuclei"), tmp_path / "nuc", config)
    meta = json.loads((nuc / "segmodel.json").read_text())
    assert meta["kind"] == "nuclei" and meta["initial_weights"] == "random" and meta["n_images"] == 2
    assert len(meta["train_losses"]) == 3 and all(np.isfinite(meta["train_losses"]))
    after = torch.load(nuc / "weights", map_location="cpu", weights_only=True)
    changed = [k for k, v in before.items() if v.dtype.is_floating_point and not torch.equal(v, after[k])]
    assert len(changed) > 10, "optimizer steps must change the weights"
    assert not list(nuc.glob(".train-*"))  # the temporary training folder is gone
    with pytest.raises(HPAConfigError, match="'nuclei' model, but a 'cells' model"):
        resolve_weights(str(nuc), "cells")


@pytest.mark.slow
def test_cli_trains_both_kinds_and_segment_uses_them(tmp_path: Path) -> None:
    """End to end through subprocesses (each pays cellpose's import and numba compilation)."""
    images, masks = _write_seg_dir_layout(tmp_path)
    cmd = [sys.executable, "-m", "hpa", "-q"]
    train = [
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--crop",
        "64",
    ]
    for kind in ("cells", "nuclei"):
        res = subprocess.run(
            [*cmd, "train-segmenter", *train, "--kind", kind, "--out", str(tmp_path / kind), "--device", "cpu"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "cells" / "segmodel.json").read_text())["channels"] == [1, 2]
    seg = tmp_path / "seg"
    res = subprocess.run(
        [*cmd, "segment", str(images), "--out", str(seg), "--backend", "cellpose", "--device", "cpu",
         "--cellpose-model", str(tmp_path / "cells"), "--cellpose-nuclei-model", str(tmp_path / "nuclei"),
         "--workers", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for k in range(2):
        assert read_label_image(seg / "cells" / f"s{k}.png").shape == (96, 96)
    # a model of the wrong kind: every image fails with a message naming the folder
    res = subprocess.run(
        [*cmd, "segment", str(images), "--out", str(tmp_path / "seg2"), "--backend", "cellpose",
         "--cellpose-model", str(tmp_path / "nuclei"), "--workers", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 1
    assert "'nuclei' model, but a 'cells' model" in (tmp_path / "seg2" / "failures.csv").read_text()


def test_missing_initial_weights_names_the_file_and_downloads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, masks = _write_seg_dir_layout(tmp_path, n=1)
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "models"))
    pairs = load_pairs(images, masks, "cells")
    with pytest.raises(FileNotFoundError, match="cyto3") as info:
        train_segmenter(pairs, tmp_path / "m", SegTrainConfig(init="cyto3", epochs=1))
    assert str(tmp_path / "models") in str(info.value)
    assert not (tmp_path / "models").exists() and not (tmp_path / "m").exists()
