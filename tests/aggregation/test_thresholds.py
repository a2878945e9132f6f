"""Threshold tuning (exact sweeps against brute force), application, save and load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpa.aggregation import (
    ThresholdResult,
    apply_thresholds,
    load_thresholds,
    macro_f1,
    save_thresholds,
    tune_thresholds,
)
from hpa.aggregation.metrics import f1_per_class
from hpa.errors import HPAConfigError


def _random_problem(seed: int, m: int = 120, c: int = 6, decimals: int | None = 2):
    rng = np.random.default_rng(seed)
    y = (rng.random((m, c)) < rng.uniform(0.05, 0.5, c)).astype(np.uint8)
    scores = np.clip(0.3 * y + rng.random((m, c)) * 0.8, 0, 1)
    if decimals is not None:  # ties between scores
        scores = scores.round(decimals)
    return y, scores


def _candidates(values: np.ndarray) -> np.ndarray:
    u = np.unique(values[np.isfinite(values)])
    return np.r_[u[0] - 1.0, (u[1:] + u[:-1]) / 2, u[-1] + 1.0]


@pytest.mark.parametrize("seed", range(5))
def test_f1_sweep_finds_the_brute_force_optimum(seed):
    y, scores = _random_problem(seed, decimals=2 if seed % 2 else None)
    if seed == 4:
        scores[::7, 1] = np.nan  # NaN scores are never predicted
    result = tune_thresholds(y, scores, method="f1", min_positives=1)
    assert result.fallback == () and result.method == "f1"
    for c in range(y.shape[1]):
        brute = max(
            f1_per_class(y[:, [c]], (scores[:, [c]] > t).astype(np.uint8))[0]
            for t in _candidates(scores[:, c])
        )
        at_ours = f1_per_class(y[:, [c]], apply_thresholds(scores[:, [c]], result.thresholds[[c]], False))[0]
        assert at_ours == pytest.approx(brute, abs=1e-12)
        assert result.f1[c] == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_global_threshold_maximises_macro_f1(seed):
    y, scores = _random_problem(seed + 10, m=80, c=5)
    y[:, 4] = 0  # a class without positives counts 0 in every macro F1
    result = tune_thresholds(y, scores, min_positives=10**6)  # every class falls back
    assert result.fallback == tuple(range(5))
    assert np.all(result.thresholds == result.global_threshold)
    brute = max(macro_f1(y, apply_thresholds(scores, np.full(5, t), False)) for t in _candidates(scores))
    ours = macro_f1(y, apply_thresholds(scores, result.thresholds, False))
    assert ours == pytest.approx(brute, abs=1e-12)


def test_rare_classes_fall_back_to_the_global_threshold():
    y, scores = _random_problem(1, m=100, c=4)
    y[:, 2] = 0
    y[:2, 2] = 1  # two positives
    y[:, 3] = 0  # none
    result = tune_thresholds(y, scores, min_positives=3)
    assert isinstance(result, ThresholdResult)
    assert result.fallback == (2, 3)
    assert result.thresholds[2] == result.thresholds[3] == result.global_threshold
    assert result.thresholds.shape == (4,) and result.f1.shape == (4,)
    with pytest.raises(ValueError, match="unknown threshold method"):
        tune_thresholds(y, scores, method="grid")
    with pytest.raises(ValueError, match="shape"):
        tune_thresholds(y, scores[:, :3])
    with pytest.raises(ValueError, match="0 and 1"):
        tune_thresholds(y * 2, scores)


def test_shrink_pulls_thresholds_toward_the_global_one_by_support():
    y, scores = _random_problem(2, m=200, c=4)
    plain = tune_thresholds(y, scores)
    shrunk = tune_thresholds(y, scores, shrink=5.0)
    assert shrunk.global_threshold == plain.global_threshold
    n_pos = y.sum(0)
    w = n_pos / (n_pos + 5.0)
    expected = w * plain.thresholds + (1 - w) * plain.global_threshold
    assert np.allclose(shrunk.thresholds, expected)
    # each moved toward the global threshold, never past it
    moved = np.abs(shrunk.thresholds - plain.global_threshold)
    assert (moved <= np.abs(plain.thresholds - plain.global_threshold) + 1e-12).all()


def test_rate_matches_the_label_rate():
    y, scores = _random_problem(2, m=200, c=5, decimals=None)  # no ties
    result = tune_thresholds(y, scores, method="rate", min_positives=1)
    pred = apply_thresholds(scores, result.thresholds, fill_top=False)
    np.testing.assert_array_equal(pred.sum(axis=0), y.sum(axis=0))
    assert result.method == "rate"


def test_apply_thresholds_fill_top_and_nan():
    scores = np.array([[0.9, 0.1, 0.0], [0.4, 0.1, 0.05], [np.nan, np.nan, np.nan], [np.nan, 0.01, 0.0]])
    t = np.array([0.5, 0.5, 0.1])
    plain = apply_thresholds(scores, t, fill_top=False)
    assert plain.dtype == np.uint8
    assert plain.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    filled = apply_thresholds(scores, t)
    # row 1: ratio 0.4/0.5 = 0.8 beats 0.05/0.1 = 0.5; row 3: its NaN class is never filled
    assert filled.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]]
    # the ratio, not the raw score, picks the class
    assert apply_thresholds(np.array([[0.3, 0.15]]), np.array([0.5, 0.2])).tolist() == [[0, 1]]
    assert apply_thresholds(np.zeros((0, 3)), t).shape == (0, 3)


def test_save_load_round_trip(tmp_path):
    y, scores = _random_problem(0, c=3)
    result = tune_thresholds(y, scores)
    path = tmp_path / "model" / "thresholds.json"
    save_thresholds(path, result, ["A", "B", "C"])
    data = json.loads(path.read_text())
    assert set(data) == {"class_names", "thresholds", "method", "global_threshold"}
    assert data["method"] == "f1" and data["global_threshold"] == result.global_threshold
    thresholds, names = load_thresholds(path, expected_classes=["A", "B", "C"])
    np.testing.assert_array_equal(thresholds, result.thresholds)
    assert names == ("A", "B", "C")
    save_thresholds(path, [0.1, 0.2, 0.3], ("A", "B", "C"))
    assert json.loads(path.read_text())["method"] is None
    assert load_thresholds(path)[0].tolist() == [0.1, 0.2, 0.3]
    assert [p.name for p in path.parent.iterdir()] == ["thresholds.json"]  # no temp files left
    with pytest.raises(ValueError, match="2 thresholds for 3"):
        save_thresholds(path, [0.1, 0.2], ["A", "B", "C"])
    with pytest.raises(ValueError, match="finite"):
        save_thresholds(path, [0.1, np.nan, 0.2], ["A", "B", "C"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a valid thresholds JSON"),
        ('["a"]', "'class_names' and 'thresholds'"),
        ('{"class_names": ["A"]}', "'class_names' and 'thresholds'"),
        ('{"class_names": "A", "thresholds": [0.5]}', "list of strings"),
        ('{"class_names": ["A"], "thresholds": ["0.5"]}', "finite numbers"),
        ('{"class_names": ["A"], "thresholds": [NaN]}', "finite numbers"),
        ('{"class_names": ["A"], "thresholds": [true]}', "finite numbers"),
        ('{"class_names": ["A", "B"], "thresholds": [0.5]}', "1 thresholds for 2 class names"),
    ],
)
def test_malformed_thresholds_files(tmp_path, text, message):
    path = tmp_path / "thresholds.json"
    path.write_text(text)
    with pytest.raises(HPAConfigError, match=message) as info:
        load_thresholds(path)
    assert str(path) in str(info.value)


def test_class_count_mismatch_and_missing_file(tmp_path):
    path = tmp_path / "thresholds.json"
    save_thresholds(path, [0.5, 0.5], ["A", "B"])
    with pytest.raises(HPAConfigError, match="thresholds for 2 classes, but the scores have 3"):
        load_thresholds(path, expected_classes=["A", "B", "C"])
    with pytest.raises(HPAConfigError, match="class names differ"):
        load_thresholds(path, expected_classes=["A", "X"])
    with pytest.raises(HPAConfigError, match="not found"):
        load_thresholds(tmp_path / "absent.json")
