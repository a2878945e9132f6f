"""``hpa evaluate``: in process, and through the CLI in a subprocess."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa.aggregation import write_submission
from hpa.io import Labels, read_labels, write_labels
from hpa.pipelines.evaluate import evaluate, format_result, main

REPO = Path(__file__).resolve().parents[2]


def _hpa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpa", "evaluate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture
def labelled(tmp_path):
    """A 2018 label file of 12 images and a submission with a few mistakes."""
    rng = np.random.default_rng(0)
    ids = tuple(f"img{i:02d}" for i in range(12))
    y = (rng.random((12, 28)) < 0.15).astype(np.uint8)
    labels_path = tmp_path / "train.csv"
    write_labels(labels_path, Labels(ids, y, "2018"))
    pred = y.copy()
    pred[:4] = (rng.random((4, 28)) < 0.2).astype(np.uint8)
    sub_path = tmp_path / "submission.csv"
    write_submission(sub_path, list(ids[::-1]), pred[::-1])
    return sub_path, labels_path, y, pred


@pytest.mark.parametrize("label_set", ["2018", "2021"])
def test_evaluate_matches_sklearn(tmp_path, label_set):
    n_classes = 28 if label_set == "2018" else 19
    rng = np.random.default_rng(1)
    ids = tuple(f"x{i}" for i in range(20))
    y = (rng.random((20, n_classes)) < 0.2).astype(np.uint8)
    pred = (rng.random((20, n_classes)) < 0.2).astype(np.uint8)
    write_labels(tmp_path / "labels.csv", Labels(ids, y, label_set))
    assert read_labels(tmp_path / "labels.csv").label_set == label_set
    write_submission(tmp_path / "sub.csv", list(ids), pred)
    result = evaluate(tmp_path / "sub.csv", tmp_path / "labels.csv")
    assert result["n_images"] == 20 and result["label_set"] == label_set
    assert result["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert len(result["per_class"]) == n_classes
    assert set(result["per_class"][0]) == {
        "class",
        "name",
        "precision",
        "recall",
        "f1",
        "support",
        "predicted",
    }
    json.dumps(result)  # plain types only
    assert "macro F1:" in format_result(result)


def test_main_returns_macro_f1_and_table(labelled):
    sub_path, labels_path, y, pred = labelled
    expected = f1_score(y, pred, average="macro", zero_division=0)
    code, out = main(argparse.Namespace(submission=str(sub_path), labels=str(labels_path), json=False))
    assert code == 0
    assert f"macro F1: {expected:.4f}" in out
    assert "Nucleoplasm" in out and "Rods & rings" in out


def test_cli_json(labelled):
    sub_path, labels_path, y, pred = labelled
    proc = _hpa(str(sub_path), "--labels", str(labels_path), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    expected = f1_score(y, pred, average="macro", zero_division=0)
    assert result["macro_f1"] == pytest.approx(expected) and result["n_images"] == 12


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[:-2], "2 labelled Id(s) missing from the submission"),
        (lambda rows: [*rows, rows[3]], "duplicated Id(s): img08"),
        (lambda rows: [*rows, "stranger,1"], "1 submission Id(s) not in the labels: stranger"),
    ],
    ids=["missing", "duplicate", "unknown"],
)
def test_cli_fails_on_mismatched_ids(labelled, edit, message):
    sub_path, labels_path, _, _ = labelled
    header, *rows = sub_path.read_text().splitlines()
    sub_path.write_text("\n".join([header, *edit(rows)]) + "\n")
    proc = _hpa(str(sub_path), "--labels", str(labels_path))
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stdout == ""
