"""The Python API: the README's example runs as written (slow: it segments, trains and
predicts a synthetic set), and Classifier agrees with predict (on the session's tiny model)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hpa
from hpa.errors import HPAConfigError, HPADataError
from hpa.io import list_image_ids, read_label_image, read_sample
from hpa.pipelines.predict import predict_folder

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("### Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under 'Python API'"
    return match.group(1)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    cmd = [sys.executable, "-m", "hpa", "synth", str(root / "data"), "--n-train", "12", "--n-test", "4"]
    subprocess.run([*cmd, "--size", "256"], check=True, capture_output=True)
    run = subprocess.run(
        [sys.executable, "-c", _readme_example()], cwd=root, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"macro F1 \d\.\d{3} on 4 images", run.stdout), run.stdout
    assert re.search(r" cells$", run.stdout.strip()), run.stdout
    return root


def test_import_hpa_stays_light() -> None:
    code = "import sys, hpa; assert 'torch' not in sys.modules and 'hpa.api' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_readme_example_writes_every_artefact(example_run: Path) -> None:
    for path in ("seg-train/cells.parquet", "model/thresholds.json", "pred/submission.csv"):
        assert (example_run / path).is_file(), path


@pytest.fixture(scope="module")
def predicted(
    tiny_dataset: dict[str, Path], tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``hpa predict`` of four tiny images with the session's tiny model, segmenting them
    on the fly (their masks in ``masks/``)."""
    out = tmp_path_factory.mktemp("api") / "pred"
    ids = list_image_ids(tiny_dataset["images"])[:4]
    predict_folder(tiny_dataset["images"], tiny_model, out, ids=ids, workers=1, device="cpu", progress=False)
    return out


def test_classifier_scores_cells_as_predict_does(
    tiny_dataset: dict[str, Path], tiny_model: Path, predicted: Path
) -> None:
    clf = hpa.Classifier.from_folder(tiny_model, device="cpu")
    pred_cells = pd.read_parquet(predicted / "cell_predictions.parquet")
    image_scores = pd.read_csv(predicted / "image_scores.csv").set_index("image_id")
    submission = pd.read_csv(predicted / "submission.csv", keep_default_na=False, dtype=str)
    names = list(clf.class_names)
    assert len(submission) == 4 and len(pred_cells)
    for image_id in submission["Id"]:
        image = read_sample(tiny_dataset["images"], image_id)
        cells = read_label_image(predicted / "masks" / "cells" / f"{image_id}.png")
        found = clf.predict(image, cells)
        expected = pred_cells[pred_cells["image_id"] == image_id].reset_index(drop=True)
        assert found.cells["cell_id"].tolist() == expected["cell_id"].tolist()
        np.testing.assert_allclose(found.cells[names].to_numpy(), expected[names].to_numpy(), atol=1e-5)
        assert found.cells["predicted"].tolist() == expected["predicted"].tolist()
        np.testing.assert_allclose(
            found.image_scores, image_scores.loc[image_id, names].to_numpy(), atol=1e-5
        )
        wanted = submission.set_index("Id").loc[image_id, "Predicted"]
        assert " ".join(map(str, found.labels)) == wanted
        assert found.label_names == tuple(names[k] for k in found.labels)


def test_classifier_segments_when_no_mask_is_given(
    tiny_dataset: dict[str, Path], tiny_model: Path, predicted: Path
) -> None:
    clf = hpa.Classifier.from_folder(tiny_model, device="cpu")
    image_id = "img001"
    image = read_sample(tiny_dataset["images"], image_id)
    found = clf.predict(image)
    # the default segmentation is what hpa predict segmented for this image
    np.testing.assert_array_equal(
        found.cell_mask, read_label_image(predicted / "masks" / "cells" / f"{image_id}.png")
    )
    assert len(found.cells) == len(np.unique(found.cell_mask)) - 1


def test_bad_inputs_are_refused(tiny_model: Path) -> None:
    clf = hpa.Classifier.from_folder(tiny_model, device="cpu")
    with pytest.raises(HPADataError, match=r"\(H, W, 4\)"):
        clf.predict(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(HPADataError, match="mask"):
        clf.predict(np.zeros((64, 64, 4), np.uint8), cells=np.zeros((32, 32), np.int32))
    with pytest.raises(HPAConfigError, match="crop_sise"):
        hpa.train("a", "b", "c", "d", crop_sise=32)
