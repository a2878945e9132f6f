"""The localisation-feature head: C chosen inside the training images, an exact JSON roundtrip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hpa.aggregation.metrics import macro_average_precision
from hpa.classification.feature_head import (
    C_GRID,
    HEAD_FILE,
    feature_columns,
    fit_feature_head_once,
    inner_scores,
    make_feature_head,
    read_feature_head,
    write_feature_head,
)
from hpa.errors import HPAConfigError


def _data(n: int = 30, f: int = 6, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 3), np.int64)
    y[:, 0] = rng.random(n) < 0.4
    y[:, 1] = rng.random(n) < 0.3
    y[0, 2] = 1  # one positive: no fit, a constant score
    x = rng.normal(0, 1, (n, f))
    x[:, 0] += 2.0 * y[:, 0]
    x[:, 1] -= 1.5 * y[:, 1]
    x[rng.random((n, f)) < 0.1] = np.nan  # unmeasured features
    x[:, -1] = np.nan  # a feature no image has
    table = pd.DataFrame(x, columns=[f"feat{i}_mean" for i in range(f)])
    table.insert(0, "n_cells", 3)
    table.insert(0, "image_id", [f"im{i}" for i in range(n)])
    return table, y


def test_c_is_chosen_by_inner_cross_validation_and_rare_classes_get_a_constant():
    table, y = _data()
    x = table.drop(columns=["image_id", "n_cells"]).to_numpy()
    head = fit_feature_head_once(x, y, seed=3)
    assert sorted(head.inner_macro_ap) == sorted(C_GRID)
    for c in C_GRID:  # the recorded figures are the inner out-of-fold ones
        assert head.inner_macro_ap[c] == pytest.approx(
            macro_average_precision(y, inner_scores(x, y, c, 4, 3))
        )
    assert head.c == max(C_GRID, key=lambda c: (head.inner_macro_ap[c], -c))
    p = head.probabilities(x)
    assert p.shape == y.shape and np.isfinite(p).all()
    assert np.ptp(p[:, 2]) == 0.0 and p[0, 2] == pytest.approx(1.5 / 31)  # smoothed prevalence
    assert np.all(head.coef[2] == 0) and np.all(head.coef[:, -1] == 0)  # the empty feature is inert
    # the informative features carry the classes
    assert macro_average_precision(y[:, :2], p[:, :2]) > 0.8


def test_the_json_head_roundtrips_exactly(tmp_path):
    table, y = _data()
    x = table.drop(columns=["image_id", "n_cells"]).to_numpy()
    heads = [fit_feature_head_once(x[:20], y[:20]), fit_feature_head_once(x[10:], y[10:])]
    model = make_feature_head(feature_columns(table), heads, ["a", "b", "c"])
    path = tmp_path / HEAD_FILE
    write_feature_head(path, model)
    back = read_feature_head(path)
    assert back.features == model.features == tuple(table.columns[2:])
    assert back.classes == ("a", "b", "c") and back.versions == model.versions
    for a, b in zip(back.heads, model.heads, strict=True):
        for name in ("medians", "mean", "scale", "coef", "intercept"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert (a.c, a.n_images, a.inner_macro_ap) == (b.c, b.n_images, b.inner_macro_ap)
    assert np.array_equal(back.scores(table), model.scores(table))
    assert np.array_equal(model.scores(table), np.mean([h.probabilities(x) for h in heads], axis=0))
    with pytest.raises(HPAConfigError, match="lacks 1 feature"):
        model.scores(table.drop(columns=["feat0_mean"]))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda text, data: text[: len(text) // 2], "not valid JSON"),
        (lambda text, data: json.dumps({**data, "format": "other"}), "not a feature head file"),
        (lambda text, data: json.dumps({**data, "format_version": 9}), "format version 9"),
        (lambda text, data: json.dumps({**data, "features": data["features"][:-1]}), r"coef must be 3 x 5"),
        (
            lambda text, data: json.dumps({**data, "heads": [{**data["heads"][0], "scale": [0.0] * 6}]}),
            r"heads\[0\]\.scale must be 6 finite positive",
        ),
        (
            lambda text, data: json.dumps({**data, "heads": [{**data["heads"][0], "C": "big"}]}),
            r"heads\[0\]\.C must be a positive number",
        ),
        (lambda text, data: json.dumps({**data, "features_version": 0}), "features version 0"),
    ],
)
def test_a_corrupt_head_file_is_refused_naming_it(tmp_path, corrupt, message):
    table, y = _data()
    x = table.drop(columns=["image_id", "n_cells"]).to_numpy()
    path = tmp_path / "model" / HEAD_FILE
    path.parent.mkdir()
    write_feature_head(
        path, make_feature_head(feature_columns(table), [fit_feature_head_once(x, y)], ["a", "b", "c"])
    )
    text = path.read_text()
    path.write_text(corrupt(text, json.loads(text)))
    with pytest.raises(HPAConfigError, match=message) as err:
        read_feature_head(path)
    assert str(path) in str(err.value)
    with pytest.raises(HPAConfigError, match="not found"):
        read_feature_head(tmp_path / "missing.json")
