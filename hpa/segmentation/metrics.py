"""Instance matching between two label images: IoU table, greedy matching, F1.

The F1 at an IoU threshold counts a predicted object as a true positive when it is
matched one-to-one to a true object with at least that IoU. Pairs are matched greedily
in order of decreasing IoU (at IoU > 0.5 the matching is unique anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: IoU thresholds of the benchmark's table, and those averaged by :func:`mean_f1`
#: (0.5:0.95 in steps of 0.05, as COCO and cellpose's ``average_precision`` use them).
REPORT_IOUS = (0.5, 0.6, 0.7, 0.8, 0.9)
COCO_IOUS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


def iou_table(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every overlapping (true, predicted) pair of objects.

    Args:
        truth: ``(H, W)`` integer labels, 0 = background.
        pred: ``(H, W)`` integer labels of the same shape.

    Returns:
        ``(true_ids, pred_ids, iou)``: 1-D arrays, one entry per overlapping pair.

    >>> t = np.array([[1, 1, 0, 2]]); p = np.array([[3, 3, 3, 0]])
    >>> [x.tolist() for x in iou_table(t, p)[:2]], iou_table(t, p)[2].round(3).tolist()
    ([[1], [3]], [0.667])
    """
    if truth.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {truth.shape} vs {pred.shape}")
    t = truth.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    t_area = np.bincount(t)
    p_area = np.bincount(p)
    both = (t > 0) & (p > 0)
    key = t[both] * (p_area.size) + p[both]
    keys, inter = np.unique(key, return_counts=True)
    ti, pi = keys // p_area.size, keys % p_area.size
    iou = inter / (t_area[ti] + p_area[pi] - inter)
    return ti, pi, iou


@dataclass(frozen=True)
class MatchResult:
    """Outcome of matching predicted objects to true ones.

    Attributes:
        tp: matched pairs; fp: unmatched predictions; fn: unmatched true objects.
        pairs: ``(K, 2)`` int array of matched (true id, predicted id).
        ious: ``(K,)`` IoU of each matched pair.
    """

    tp: int
    fp: int
    fn: int
    pairs: np.ndarray
    ious: np.ndarray

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 when both images are empty."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 1.0


def match_labels(truth: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> MatchResult:
    """Greedy one-to-one matching of IoU-sorted pairs with IoU >= ``iou_threshold``.

    Args:
        truth: ``(H, W)`` integer true labels, 0 = background.
        pred: ``(H, W)`` integer predicted labels.
        iou_threshold: smallest IoU of a match.

    >>> t = np.array([[1, 1, 0, 2, 2, 2]]); p = np.array([[5, 5, 0, 0, 0, 7]])
    >>> r = match_labels(t, p); (r.tp, r.fp, r.fn, r.f1)
    (1, 1, 1, 0.5)
    """
    ti, pi, iou = iou_table(truth, pred)
    n_true = np.unique(truth[truth > 0]).size
    n_pred = np.unique(pred[pred > 0]).size
    order = np.argsort(-iou, kind="stable")
    used_t: set[int] = set()
    used_p: set[int] = set()
    pairs, ious = [], []
    for k in order:
        if iou[k] < iou_threshold:
            break
        a, b = int(ti[k]), int(pi[k])
        if a in used_t or b in used_p:
            continue
        used_t.add(a)
        used_p.add(b)
        pairs.append((a, b))
        ious.append(float(iou[k]))
    tp = len(pairs)
    return MatchResult(
        tp=tp,
        fp=n_pred - tp,
        fn=n_true - tp,
        pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2),
        ious=np.array(ious, dtype=np.float64),
    )


def f1_at(truth: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> float:
    """Matched-object F1 of ``pred`` against ``truth`` at an IoU threshold."""
    return match_labels(truth, pred, iou_threshold).f1


def f1_curve(truth: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = REPORT_IOUS) -> np.ndarray:
    """Matched-object F1 at several IoU thresholds (each >= 0.5) from one matching.

    Above IoU 0.5 an object overlaps at most one other that well, so one matching at the
    lowest threshold holds for every higher one: the true positives at ``t`` are the
    matched pairs with IoU >= ``t``. The counts equal those of
    ``cellpose.metrics.average_precision`` (which reports TP / (TP + FP + FN)).

    Args:
        truth: ``(H, W)`` integer true labels, 0 = background.
        pred: ``(H, W)`` integer predicted labels.
        thresholds: IoU thresholds, each >= 0.5.

    Returns:
        ``(len(thresholds),)`` float64 F1 values.

    >>> t = np.array([[1, 1, 1, 1, 0, 2, 2]]); p = np.array([[1, 1, 1, 0, 0, 2, 2]])
    >>> f1_curve(t, p, (0.5, 0.8)).tolist()
    [1.0, 0.5]
    """
    if min(thresholds) < 0.5:
        raise ValueError(f"f1_curve needs IoU thresholds >= 0.5 (unique matching), got {min(thresholds)}")
    r = match_labels(truth, pred, min(thresholds))
    n_true, n_pred = r.tp + r.fn, r.tp + r.fp
    out = []
    for t in thresholds:
        tp = int(np.count_nonzero(r.ious >= t))
        denom = n_true + n_pred
        out.append(2 * tp / denom if denom else 1.0)
    return np.array(out, dtype=np.float64)


def mean_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the matched F1 over IoU 0.5:0.95 (:data:`COCO_IOUS`).

    >>> t = np.array([[1, 1, 1, 1, 0, 2, 2]])
    >>> mean_f1(t, t)
    1.0
    """
    return float(f1_curve(truth, pred, COCO_IOUS).mean())
