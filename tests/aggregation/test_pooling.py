"""Pooling cell scores into image scores, and the fallback to tile scores."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hpa.aggregation import combine_with_tiles, pool_cells

# image "a" has 5 cells; only one carries class 0. Image "b" has one cell, "c" none.
IDS = ["a", "a", "a", "a", "a", "b"]
SCORES = np.array(
    [
        [0.05, 0.6],
        [0.95, 0.5],
        [0.05, 0.4],
        [0.05, 0.7],
        [0.10, 0.8],
        [0.30, 0.2],
    ]
)


def test_max_finds_a_label_carried_by_one_cell_and_mean_dilutes_it():
    pooled_max = pool_cells(IDS, SCORES, ["a", "b", "c"], method="max")
    pooled_mean = pool_cells(IDS, SCORES, ["a", "b", "c"], method="mean")
    assert pooled_max.dtype == np.float32 and pooled_max.shape == (3, 2)
    np.testing.assert_allclose(pooled_max[:2], [[0.95, 0.8], [0.3, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(pooled_mean[0], [0.24, 0.6], rtol=1e-6)
    assert pooled_max[0, 0] > 0.5 > pooled_mean[0, 0]
    assert np.isnan(pooled_max[2]).all() and np.isnan(pooled_mean[2]).all()


def test_topk_and_noisy_or():
    topk = pool_cells(IDS, SCORES, ["b", "a"], method="topk", k=2)
    np.testing.assert_allclose(topk, [[0.3, 0.2], [(0.95 + 0.10) / 2, 0.75]], rtol=1e-6)
    # k larger than the number of cells: the mean of all cells
    np.testing.assert_allclose(
        pool_cells(IDS, SCORES, ["a"], method="topk", k=50), pool_cells(IDS, SCORES, ["a"], method="mean")
    )
    noisy = pool_cells(IDS, SCORES, ["a", "b"], method="noisy-or")
    expected = 1 - np.prod(1 - SCORES[:5], axis=0)
    np.testing.assert_allclose(noisy[0], expected, rtol=1e-6)
    np.testing.assert_allclose(noisy[1], SCORES[5], rtol=1e-6)
    # a certain cell makes the image certain, without warnings
    assert pool_cells(["a", "a"], np.array([[1.0], [0.2]]), ["a"], method="noisy-or")[0, 0] == 1.0


def test_topk_counts_ties_once_per_cell():
    s = np.array([[0.9], [0.9], [0.1], [0.5]])
    out = pool_cells(["x"] * 4, s, ["x"], method="topk", k=3)
    np.testing.assert_allclose(out, [[(0.9 + 0.9 + 0.5) / 3]], rtol=1e-6)


@pytest.mark.parametrize("method", ["max", "topk", "mean", "noisy-or"])
def test_vectorised_pooling_matches_a_loop_on_shuffled_cells(method):
    rng = np.random.default_rng(3)
    n_images, n_classes = 40, 5
    image_of_cell = rng.integers(0, n_images + 5, size=600)  # ids >= 40 are not requested
    scores = rng.random((600, n_classes)).astype(np.float32)
    ids = [f"img{i}" for i in range(n_images)]
    out = pool_cells([f"img{i}" for i in image_of_cell], scores, ids, method=method, k=3)
    for m, _ in enumerate(ids):
        cells = scores[image_of_cell == m].astype(np.float64)
        if not len(cells):
            assert np.isnan(out[m]).all()
            continue
        if method == "max":
            ref = cells.max(0)
        elif method == "mean":
            ref = cells.mean(0)
        elif method == "topk":
            ref = np.sort(cells, axis=0)[::-1][:3].mean(0)
        else:
            ref = 1 - np.prod(1 - cells, axis=0)
        np.testing.assert_allclose(out[m], ref, rtol=1e-5)


def test_pool_cells_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_cells(IDS, SCORES, ["a"], method="median")
    with pytest.raises(ValueError, match="unique"):
        pool_cells(IDS, SCORES, ["a", "a"])
    with pytest.raises(ValueError, match="NaN"):
        pool_cells(["a"], np.array([[np.nan]]), ["a"])
    with pytest.raises(ValueError, match="cell image Ids"):
        pool_cells(["a"], SCORES, ["a"])
    with pytest.raises(ValueError, match="k >= 1"):
        pool_cells(IDS, SCORES, ["a"], method="topk", k=0)
    empty = pool_cells([], np.zeros((0, 3)), ["a", "b"])
    assert empty.shape == (2, 3) and np.isnan(empty).all()


def test_images_without_cells_fall_back_to_tiles():
    cells = pool_cells(IDS, SCORES, ["a", "b", "c"])
    tiles = np.array([[0.5, 0.4], [0.1, 0.2], [0.7, 0.3]])
    for method in ("mean", "product"):
        out = combine_with_tiles(cells, tiles, method=method)
        assert out.shape == (3, 2) and not np.isnan(out).any()
        np.testing.assert_allclose(out[2], tiles[2], rtol=1e-6)
    np.testing.assert_allclose(combine_with_tiles(cells, tiles)[0], [0.725, 0.6], rtol=1e-6)
    prod = combine_with_tiles(cells, tiles, method="product")
    np.testing.assert_allclose(prod[0], np.sqrt([0.95 * 0.5, 0.8 * 0.4]), rtol=1e-6)
    # weight 1 keeps only tiles, weight 0 only cells
    np.testing.assert_allclose(combine_with_tiles(cells, tiles, tile_weight=1.0), tiles, rtol=1e-6)
    np.testing.assert_allclose(combine_with_tiles(cells, tiles, tile_weight=0.0)[:2], cells[:2])


def test_missing_everywhere_scores_zero_with_a_warning(caplog):
    cells = np.array([[0.4, np.nan], [np.nan, np.nan]])
    with caplog.at_level(logging.WARNING, logger="hpa.aggregation.pooling"):
        out = combine_with_tiles(cells, None)
    assert out.tolist() == [[pytest.approx(0.4), 0.0], [0.0, 0.0]]
    assert "neither a cell score nor a tile score" in caplog.text
    tiles = np.array([[np.nan, 0.2], [np.nan, np.nan]])
    with caplog.at_level(logging.WARNING):
        out = combine_with_tiles(cells, tiles, method="product")
    np.testing.assert_allclose(out, [[0.4, 0.2], [0.0, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        combine_with_tiles(cells, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="tile_weight"):
        combine_with_tiles(cells, tiles, tile_weight=2.0)
