"""Issue 23, the "Unclear or low" list: each case fails on the code before the fix."""

from __future__ import annotations

import base64
import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask
from reliability_helpers import write_untrained_model

from hpa.aggregation.rle import encode_cells, encode_mask
from hpa.aggregation.submission_2021 import read_submission_2021, write_submission_2021
from hpa.cli import main as hpa_main
from hpa.constants import CLASS_NAMES_2018
from hpa.errors import HPADataError
from hpa.io import write_label_image
from hpa.pipelines.predict import predict_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def run(tiny_dataset: dict[str, Path], model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished prediction folder of the tiny dataset (with its masks)."""
    out = tmp_path_factory.mktemp("run") / "pred"
    predict_folder(tiny_dataset["images"], model, out, masks=tiny_dataset["masks"], workers=1, progress=False)
    return out


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------- 1. RLE bytes equal the competition's ---


def _reference(mask: np.ndarray) -> str:
    """The competition encoder: pycocotools on a Fortran-order uint8 mask, zlib 9, base64."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return base64.b64encode(zlib.compress(rle["counts"], zlib.Z_BEST_COMPRESSION)).decode("ascii")


def _edge_masks() -> dict[str, np.ndarray]:
    h, w = 6, 5
    masks = {"empty": np.zeros((h, w), bool), "full": np.ones((h, w), bool)}
    for name, (y, x) in {"last": (h - 1, w - 1), "first": (0, 0), "first-col-end": (h - 1, 0)}.items():
        m = np.zeros((h, w), bool)
        m[y, x] = True
        masks[name] = m
    m = np.zeros((h, w), bool)
    m[:, -2:] = True  # the last two columns: one run to the end of the image
    masks["last-columns"] = m
    m = np.zeros((h, w), bool)
    m[3:, -1] = True
    masks["last-column-tail"] = m
    m = np.ones((h, w), bool)
    m[0, 0] = False
    masks["all-but-first"] = m
    return masks


@pytest.mark.parametrize("name", sorted(_edge_masks()))
def test_rle_bytes_match_the_competition_encoder_on_edge_masks(name):
    mask = _edge_masks()[name]
    assert encode_mask(mask) == _reference(mask)
    if mask.any():
        labels = mask.astype(np.int32) * 3
        assert encode_cells(labels)[3] == _reference(mask)


# ---------------------------------------------- 2. NaN confidences in a 2021 file ---

MASK = encode_mask(np.ones((2, 2), bool))


@pytest.mark.parametrize("conf", ["nan", "NaN", "inf", "-inf"])
def test_nan_confidence_is_refused_by_the_reader_naming_file_and_line(tmp_path, caplog, conf):
    sub = tmp_path / "submission_2021.csv"
    sub.write_text(f"ID,ImageWidth,ImageHeight,PredictionString\na,2,2,0 0.5 {MASK}\nb,2,2,3 {conf} {MASK}\n")
    with pytest.raises(HPADataError, match=rf"submission_2021.csv, line 3: class 3 has confidence '{conf}'"):
        read_submission_2021(sub)
    truth = tmp_path / "truth"
    for image_id in "ab":
        write_label_image(truth / "cells" / f"{image_id}.png", np.ones((2, 2), np.int32))
    (truth / "cell_labels_2021.csv").write_text("image_id,cell_id,Label\na,1,0\nb,1,3\n")
    caplog.clear()
    assert hpa_main(["evaluate", str(sub), "--truth", str(truth)]) == 1
    (line,) = _errors(caplog)
    assert str(sub) in line and "line 3" in line and "finite" in line


def test_nan_confidence_is_refused_by_the_writers(run, tmp_path):
    out = tmp_path / "sub.csv"
    with pytest.raises(HPADataError, match=r"sub.csv: Id b: class 0 has confidence 'nan'"):
        write_submission_2021(out, [("a", 2, 2, f"0 0.5 {MASK}"), ("b", 2, 2, f"0 nan {MASK}")])
    assert not out.exists()

    from hpa.pipelines.single_cell import write_single_cell

    pred = tmp_path / "pred"
    shutil.copytree(run, pred)
    cells_path = pred / "cell_predictions.parquet"
    cells = pd.read_parquet(cells_path)
    cells.loc[2, CLASS_NAMES_2018[5]] = np.nan
    cells.to_parquet(cells_path)
    with pytest.raises(HPADataError, match=r"cell_predictions.parquet: row 3 \(image_id \w+, cell_id \d+\)"):
        write_single_cell(pred, progress=False)
    assert not (pred / "submission_2021.csv").exists()
