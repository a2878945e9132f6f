"""Macro F1 and the per-class report against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from hpa.aggregation import f1_per_class, format_report, macro_f1, per_class_report


@pytest.mark.parametrize("seed", range(6))
def test_macro_f1_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    m, c = int(rng.integers(1, 60)), 28
    y_true = (rng.random((m, c)) < 0.15).astype(np.uint8)
    y_pred = (rng.random((m, c)) < 0.15).astype(np.uint8)
    y_true[:, :3] = 0  # classes without positives ...
    y_pred[:, 2:5] = 0  # ... without predictions, and both (class 2)
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert macro_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(
        f1_per_class(y_true, y_pred), f1_score(y_true, y_pred, average=None, zero_division=0), atol=1e-12
    )


def test_macro_f1_edge_cases():
    assert macro_f1(np.ones((3, 2)), np.ones((3, 2))) == 1.0
    assert macro_f1(np.zeros((3, 2)), np.zeros((3, 2))) == 0.0  # as sklearn, zero_division=0
    with pytest.raises(ValueError, match="one shape"):
        macro_f1(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="0 and 1"):
        macro_f1(np.full((1, 2), 2), np.zeros((1, 2)))


def test_per_class_report_matches_sklearn():
    rng = np.random.default_rng(7)
    y_true = (rng.random((50, 4)) < 0.3).astype(np.uint8)
    y_pred = (rng.random((50, 4)) < 0.3).astype(np.uint8)
    y_true[:, 3] = 0
    report = per_class_report(y_true, y_pred, ["A", "B", "C", "D"])
    assert list(report.columns) == ["class", "name", "precision", "recall", "f1", "support", "predicted"]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    np.testing.assert_allclose(report["precision"], p)
    np.testing.assert_allclose(report["recall"], r)
    np.testing.assert_allclose(report["f1"], f)
    assert report["support"].tolist() == s.tolist()
    assert report["predicted"].tolist() == y_pred.sum(0).tolist()
    assert report["f1"].mean() == pytest.approx(macro_f1(y_true, y_pred))
    text = format_report(report, 0.5)
    assert "macro F1: 0.5000" in text and "D" in text
    with pytest.raises(ValueError, match="class names"):
        per_class_report(y_true, y_pred, ["A"])
