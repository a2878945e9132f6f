"""Every run's log also goes to <out>/run.log, with the resolved settings; --config for predict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def hpa(*args: object) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "hpa", *map(str, args)], capture_output=True, text=True, timeout=600, env=ENV
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runlog")
    hpa(
        "train-cells", "--images", tiny_dataset["images"], "--labels", tiny_dataset["labels"],
        "--masks", tiny_dataset["masks"], "--out", root / "model", "--cache", root / "cache",
        "--backbone", "test_resnet", "--crop-size", "32", "--epochs", "1", "--max-steps", "2",
        "--batch-size", "16", "--folds", "3", "--device", "cpu", "--workers", "1",
    )  # fmt: skip
    return root


def test_segment_writes_and_appends_its_run_log(tiny_dataset, tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("Id\nimg000\nimg001\n")
    config = tmp_path / "seg.yaml"
    config.write_text("cell_smooth: 0.1\n")
    out = tmp_path / "seg"
    hpa("segment", tiny_dataset["images"], "--out", out, "--ids", ids, "--workers", "1", "--config", config)
    text = (out / "run.log").read_text()
    assert "segmentation settings:" in text and "  cell_smooth: 0.1" in text
    assert f"hpa segment {tiny_dataset['images']} --out {out}" in text  # the command line
    assert "segmented 2 images" in text
    hpa("segment", tiny_dataset["images"], "--out", out, "--ids", ids, "--workers", "1", "--config", config)
    text = (out / "run.log").read_text()
    assert text.count("segmentation settings:") == 2 and "2 of 2 images already finished" in text


def test_train_cells_run_log_lands_in_the_model_folder(trained):
    text = (trained / "model" / "run.log").read_text()
    assert (
        "train-cells settings:" in text and "  backbone: test_resnet" in text and "  batch_size: 16" in text
    )
    assert "model folder" in text  # the last line, written after the folder was swapped in


def test_predict_config_file_then_flags_and_its_run_log(tiny_dataset, trained, tmp_path):
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump({"tta": 4, "pooling": "mean", "batch_size": 8}))
    pred = tmp_path / "pred"
    hpa(
        "predict", tiny_dataset["images"], "--model", trained / "model", "--masks", tiny_dataset["masks"],
        "--out", pred, "--config", config, "--tta", "2", "--workers", "1",
    )  # fmt: skip
    saved = yaml.safe_load((pred / "config.yaml").read_text())
    assert (saved["tta"], saved["pooling"], saved["batch_size"]) == (2, "mean", 8)  # flag > YAML > default
    text = (pred / "run.log").read_text()
    assert "predict settings:" in text and "  tta: 2" in text and "  pooling: mean" in text
    assert "predicted 18 images" in text
    assert not list(tmp_path.glob(".hpa-partial-*"))  # built beside, swapped in with its log
    hpa("report", pred, "--images", tiny_dataset["images"])
    assert "hpa report" in (pred / "report" / "run.log").read_text()
