"""Multi-channel OME-TIFF input through every command that reads images, as a user runs them.

The truth is the same data as per-channel PNGs: masks, predictions and overlays made from
the OME-TIFFs (channels stored in another order, mapped back by name) must equal those
made from the PNGs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from hpa.io import list_image_ids, read_label_image, read_sample

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
STORED = ("Hoechst", "Calnexin", "TUBB", "GFP-tagged")  # nucleus, ER, microtubules, protein
MAP = "microtubules=TUBB,protein=GFP-tagged,nucleus=Hoechst,er=Calnexin"


def hpa(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "hpa", *args], capture_output=True, text=True, timeout=600, env=ENV
    )
    if ok:
        assert res.returncode == 0, f"hpa {' '.join(args)} failed:\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def tiffs(tiny_dataset, tmp_path_factory) -> Path:
    """The tiny dataset's images as one OME-TIFF each, channels in :data:`STORED` order."""
    folder = tmp_path_factory.mktemp("ome")
    for image_id in list_image_ids(tiny_dataset["images"]):
        img = read_sample(tiny_dataset["images"], image_id)
        planes = np.stack([img[..., k] for k in (2, 3, 0, 1)])
        tifffile.imwrite(
            folder / f"{image_id}.ome.tif",
            planes,
            photometric="minisblack",
            metadata={"axes": "CYX", "Channel": {"Name": list(STORED)}},
        )
    return folder


def test_segment_train_predict_show_report_on_ome_tiff(tiny_dataset, tiffs, tmp_path):
    pngs, masks = tiny_dataset["images"], tiny_dataset["masks"]
    hpa("segment", str(tiffs), "--out", str(tmp_path / "seg-tif"), "--workers", "1", "--channel-map", MAP)
    hpa("segment", str(pngs), "--out", str(tmp_path / "seg-png"), "--workers", "1")
    for image_id in list_image_ids(pngs):
        tif_cells = read_label_image(tmp_path / "seg-tif" / "cells" / f"{image_id}.png")
        png_cells = read_label_image(tmp_path / "seg-png" / "cells" / f"{image_id}.png")
        np.testing.assert_array_equal(tif_cells, png_cells)
    assert "channel_map: microtubules=TUBB" in (tmp_path / "seg-tif" / "inputs.yaml").read_text()

    model = tmp_path / "model"
    hpa(
        "train-cells", "--images", str(tiffs), "--labels", str(tiny_dataset["labels"]), "--masks", str(masks),
        "--out", str(model), "--backbone", "test_resnet", "--crop-size", "32", "--epochs", "1",
        "--max-steps", "2", "--batch-size", "16", "--folds", "3", "--fold", "0", "--device", "cpu",
        "--cache", str(tmp_path / "cache"), "--channel-map", MAP,
    )  # fmt: skip
    assert (model / "weights.safetensors").is_file()

    common = ("--model", str(model), "--masks", str(masks), "--device", "cpu", "--workers", "1")
    hpa("predict", str(pngs), "--out", str(tmp_path / "pred-png"), *common)
    hpa("predict", str(tiffs), "--out", str(tmp_path / "pred-tif"), *common, "--channel-map", MAP)
    a = pd.read_parquet(tmp_path / "pred-png" / "cell_predictions.parquet")
    b = pd.read_parquet(tmp_path / "pred-tif" / "cell_predictions.parquet")
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b, atol=1e-5)

    # show and report read the channel map from PRED_DIR/config.yaml
    first = list_image_ids(pngs)[0]
    hpa("show", str(pngs), "--pred", str(tmp_path / "pred-png"), "--id", first)
    hpa("show", str(tiffs), "--pred", str(tmp_path / "pred-tif"), "--id", first)
    drawn = [cv2.imread(str(tmp_path / p / "overlays" / f"{first}.png")) for p in ("pred-png", "pred-tif")]
    np.testing.assert_array_equal(drawn[0], drawn[1])
    hpa(
        "export",
        str(tmp_path / "pred-tif"),
        "--to",
        "ome-zarr",
        "--out",
        str(tmp_path / "zarr"),
        "--id",
        first,
    )
    zarr = pytest.importorskip("zarr")
    stored = zarr.open_group(str(tmp_path / "zarr" / f"{first}.ome.zarr"), mode="r")["0"][...]
    np.testing.assert_array_equal(np.moveaxis(stored, 0, -1), read_sample(pngs, first))  # RGBY again
    hpa("report", str(tmp_path / "pred-tif"))
    assert (tmp_path / "pred-tif" / "report" / "index.html").is_file()
    n_overlays = len(list((tmp_path / "pred-tif" / "report" / "overlays").glob("*.png")))
    assert n_overlays == len(list_image_ids(tiffs))  # every image read from its OME-TIFF


def test_channel_map_errors_are_one_line(tiny_dataset, tiffs, tmp_path):
    res = hpa(
        "segment", str(tiny_dataset["images"]), "--out", str(tmp_path / "s"), "--channel-map", MAP, ok=False
    )
    assert res.returncode == 1
    assert "holds no multi-channel TIFF" in res.stderr and "Traceback" not in res.stderr
    res = hpa(
        "segment", str(tiffs), "--out", str(tmp_path / "s"), "--channel-map", "protein=1,dna=2", ok=False
    )
    assert res.returncode == 1 and "unknown key 'dna'" in res.stderr
    bad = "microtubules=TUBB,protein=GFP,nucleus=Hoechst"
    res = hpa(
        "segment", str(tiffs), "--out", str(tmp_path / "s2"), "--channel-map", bad, "--workers", "1", ok=False
    )
    assert res.returncode == 1  # every image failed, each named in failures.csv
    failures = pd.read_csv(tmp_path / "s2" / "failures.csv")
    assert len(failures) == len(list_image_ids(tiffs))
    assert failures["error"].str.contains("no channel named 'GFP'").all()
