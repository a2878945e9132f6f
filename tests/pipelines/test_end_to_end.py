"""The whole pipeline through the command line, as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _multi_hot(target: str, n_classes: int = 28) -> np.ndarray:
    row = np.zeros(n_classes, np.uint8)
    row[[int(t) for t in str(target).split()]] = 1
    return row


def hpa(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "hpa", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )
    assert res.returncode == 0, f"hpa {' '.join(args)} failed:\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    hpa("synth", str(root / "data"), "--n-train", "15", "--n-test", "5", "--seed", "3", "--size", "256")
    return root


def test_segment_train_predict_evaluate_report(synth):
    data, root = synth / "data", synth
    hpa("segment", str(data / "train"), "--out", str(root / "seg-train"), "--workers", "2")
    hpa("segment", str(data / "test"), "--out", str(root / "seg-test"), "--workers", "1")
    for seg in ("seg-train", "seg-test"):
        assert (root / seg / "cells.parquet").is_file() and (root / seg / "config.yaml").is_file()
    hpa(
        "train-cells",
        "--images",
        str(data / "train"),
        "--labels",
        str(data / "train.csv"),
        "--masks",
        str(root / "seg-train"),
        "--out",
        str(root / "model"),
        "--backbone",
        "test_resnet",
        "--crop-size",
        "32",
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--batch-size",
        "16",
        "--folds",
        "3",
        "--fold",
        "0",
        "--device",
        "cpu",
    )
    for name in ("config.json", "weights.safetensors", "thresholds.json", "metrics.json", "history.csv"):
        assert (root / "model" / name).is_file(), name
    hpa(
        "predict",
        str(data / "test"),
        "--model",
        str(root / "model"),
        "--masks",
        str(root / "seg-test"),
        "--ids",
        str(data / "sample_submission.csv"),
        "--out",
        str(root / "pred"),
        "--tta",
        "2",
    )
    pred = root / "pred"
    for name in (
        "submission.csv",
        "cell_predictions.parquet",
        "tile_predictions.parquet",
        "image_scores.csv",
        "thresholds.json",
        "config.yaml",
        "failures.csv",
    ):
        assert (pred / name).is_file(), name
    order = pd.read_csv(data / "sample_submission.csv")["Id"].tolist()
    sub = pd.read_csv(pred / "submission.csv", keep_default_na=False)
    assert sub["Id"].tolist() == order  # the order of --ids, which is shuffled
    assert order != sorted(order)
    cells = pd.read_parquet(pred / "cell_predictions.parquet")
    seg_cells = pd.read_parquet(root / "seg-test" / "cells.parquet")
    assert len(cells) == len(seg_cells)  # every segmented cell scored
    res = hpa("evaluate", str(pred / "submission.csv"), "--labels", str(data / "test_labels.csv"), "--json")
    result = json.loads(res.stdout)
    assert result["n_images"] == 5
    # the command's score is sklearn's macro F1 of the submission against the labels
    truth = pd.read_csv(data / "test_labels.csv", keep_default_na=False).set_index("Id")
    y_true = np.array([_multi_hot(truth.loc[i, "Target"]) for i in sub["Id"]])
    y_pred = np.array([_multi_hot(t) for t in sub["Predicted"]])
    assert y_pred.sum(1).min() >= 1  # every image gets a label (fill_top)
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert result["macro_f1"] == pytest.approx(expected, abs=1e-12)
    hpa("report", str(pred), "--labels", str(data / "test_labels.csv"))
    assert (pred / "report" / "index.html").is_file()
    hpa("show", str(data / "test"), "--pred", str(pred), "--id", order[0])
    assert (pred / "overlays" / f"{order[0]}.png").is_file()


@pytest.mark.slow  # about 70 s alone; the test above covers the same commands quickly
def test_demo_runs_end_to_end(tmp_path):
    res = hpa(
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--n-train",
        "20",
        "--n-test",
        "6",
        "--epochs",
        "1",
        timeout=900,
    )
    assert "test macro F1" in res.stdout
    out = tmp_path / "demo"
    assert (out / "evaluation.json").is_file()
    assert (out / "pred" / "submission.csv").is_file()
    assert (out / "pred" / "report" / "index.html").is_file()
    assert (out / "pred-real" / "submission.csv").is_file()  # the shipped real samples
    # the demo's settings (flags over defaults) are saved, and its whole log is in run.log
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text()) == {
        "n_train": 20, "n_test": 6, "epochs": 1, "seed": 0, "device": "auto",
    }  # fmt: skip
    log = (out / "run.log").read_text()
    assert "hpa demo --out" in log.splitlines()[0] and "demo settings:" in log and "  n_train: 20" in log
    assert "predicted 6 images" in log  # the stages' messages too, in the one log
