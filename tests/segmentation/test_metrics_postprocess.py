"""Matching F1 and post-processing on literal arrays."""

from __future__ import annotations

import numpy as np

from hpa.segmentation import match_labels, match_nuclei_to_cells, postprocess
from hpa.segmentation.metrics import iou_table
from hpa.segmentation.postprocess import border_ids


def test_perfect_match_ignores_numbering() -> None:
    t = np.array([[1, 1, 0], [0, 2, 2]])
    p = np.array([[7, 7, 0], [0, 3, 3]])
    r = match_labels(t, p)
    assert (r.tp, r.fp, r.fn, r.f1) == (2, 0, 0, 1.0)
    assert sorted(map(tuple, r.pairs.tolist())) == [(1, 7), (2, 3)]


def test_iou_threshold_and_one_to_one() -> None:
    t = np.array([[1, 1, 1, 1, 0, 0]])
    p = np.array([[5, 5, 5, 6, 0, 0]])  # 5: IoU 0.75 with 1; 6: IoU 0.25
    r = match_labels(t, p, 0.5)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert r.f1 == 2 / 3
    assert match_labels(t, p, 0.8).tp == 0


def test_greedy_takes_highest_iou_first() -> None:
    t = np.array([[1, 1, 1, 2, 2, 2]])
    p = np.array([[4, 4, 4, 4, 0, 0]])  # IoU(1,4) = 3/4, IoU(2,4) = 1/6
    r = match_labels(t, p, 0.1)
    assert r.pairs.tolist() == [[1, 4]] and r.fn == 1


def test_empty_images() -> None:
    z = np.zeros((3, 3), int)
    assert match_labels(z, z).f1 == 1.0
    assert match_labels(z, np.ones((3, 3), int)).f1 == 0.0
    ti, pi, iou = iou_table(z, z)
    assert ti.size == pi.size == iou.size == 0


def test_match_nuclei_to_cells() -> None:
    cells = np.array([[1, 1, 1, 2, 2, 2]])
    nuclei = np.array([[3, 3, 0, 0, 8, 0]])
    assert match_nuclei_to_cells(cells, nuclei).tolist() == [[1, 1, 0, 0, 2, 0]]
    straddle = np.array([[0, 0, 9, 9, 0, 0]])  # half in each cell
    assert match_nuclei_to_cells(cells, straddle, 0.6).max() == 0


def test_postprocess_sizes_and_relabel() -> None:
    cells = np.array([[4, 4, 4, 0, 9, 9, 9, 0, 2]])
    nuclei = np.array([[4, 0, 0, 0, 9, 9, 0, 0, 2]])
    c, n = postprocess(cells, nuclei, min_cell_area=2, min_nucleus_area=1)
    assert c.tolist() == [[1, 1, 1, 0, 2, 2, 2, 0, 0]]  # cell 2 too small
    assert n.tolist() == [[1, 0, 0, 0, 2, 2, 0, 0, 0]]
    c, n = postprocess(cells, nuclei, min_cell_area=1, min_nucleus_area=2)
    assert c.tolist() == [[0, 0, 0, 0, 1, 1, 1, 0, 0]]  # nucleus of 4 too small: no nucleus


def test_border_ids() -> None:
    labels = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 2, 2], [0, 0, 0, 0]])
    assert border_ids(labels).tolist() == [2]
