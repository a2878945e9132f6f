"""Cell-level mAP of the 2021 competition: Open Images style, IoU >= 0.6, 19 classes.

For each class, the predictions of that class over all images are ranked by confidence
(ties keep image order, then the order in the image's PredictionString). Going down the
ranking, a prediction is a true positive when the truth cell of that class it overlaps
most (highest IoU) reaches the IoU threshold and has not been matched already; otherwise
it is a false positive (as in the Open Images evaluation, a prediction does not fall back
to its second-best cell). The class's AP is the area under the precision-recall curve
with precision made monotone (every-point interpolation, as in Pascal VOC 2010+ and Open
Images); a class without truth cells has no AP (NaN) and is left out of the mean; a class
with truth cells but no prediction has AP 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hpa.aggregation.rle import decode_mask
from hpa.constants import CLASS_NAMES_2021
from hpa.errors import HPADataError

#: The competition's IoU threshold.
IOU_THRESHOLD = 0.6


@dataclass(frozen=True)
class CellTruth:
    """The annotated cells of one image.

    Attributes:
        labels: ``(H, W)`` integer cell instance labels, 0 = background.
        classes: ``cell_id -> 2021 class numbers`` of each annotated cell; a cell of
            ``labels`` absent here carries no class (a prediction on it is a false
            positive).
    """

    labels: np.ndarray
    classes: Mapping[int, frozenset[int]]


@dataclass(frozen=True)
class CellMapResult:
    """Cell-level mAP and its per-class parts.

    Attributes:
        mean_ap: mean AP over the classes that have truth cells (NaN if none has).
        ap: ``(C,)`` float64 AP per class, NaN where the class has no truth cell.
        n_truth: ``(C,)`` int64 truth cells per class.
        n_pred: ``(C,)`` int64 predictions per class.
        n_tp: ``(C,)`` int64 true positives per class over the whole ranking.
    """

    mean_ap: float
    ap: np.ndarray
    n_truth: np.ndarray
    n_pred: np.ndarray
    n_tp: np.ndarray


def match_predictions(ious: np.ndarray, scores: np.ndarray, threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """True/false positive flags of one image's predictions of one class.

    Args:
        ious: ``(P, G)`` float IoU of each prediction with each truth cell of the class.
        scores: ``(P,)`` float confidences.
        threshold: the lowest IoU of a match.

    Returns:
        ``(P,)`` bool, in the order of ``scores`` (not ranked).

    Example:
        >>> ious = np.array([[0.9, 0.0], [0.8, 0.1], [0.0, 0.7]])
        >>> match_predictions(ious, np.array([0.5, 0.9, 0.1])).tolist()
        [False, True, True]
    """
    ious = np.asarray(ious, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    tp = np.zeros(len(scores), dtype=bool)
    if ious.ndim != 2 or ious.shape[0] != len(scores):
        raise ValueError(f"ious must be ({len(scores)}, G), got shape {ious.shape}")
    if ious.shape[1] == 0:
        return tp
    best = ious.argmax(axis=1)
    matched = np.zeros(ious.shape[1], dtype=bool)
    for p in np.argsort(-scores, kind="stable"):
        g = best[p]
        if ious[p, g] >= threshold and not matched[g]:
            matched[g] = True
            tp[p] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_truth: int) -> float:
    """AP of one class from its ranked true/false positives.

    Args:
        scores: ``(P,)`` confidences of every prediction of the class.
        tp: ``(P,)`` bool, True for a true positive.
        n_truth: truth cells of the class.

    Returns:
        The area under the monotone precision-recall curve; NaN when ``n_truth`` is 0.

    Example:
        >>> average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
        0.8333333333333333
    """
    if n_truth == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(tp, dtype=bool)[order]
    if not hits.any():
        return 0.0
    tp_cum = np.cumsum(hits)
    precision = tp_cum / np.arange(1, len(hits) + 1)
    recall = tp_cum / n_truth
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def mask_ious(mask: np.ndarray, labels: np.ndarray, cell_ids: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """IoU of one predicted mask with the truth cells ``cell_ids``.

    Args:
        mask: ``(H, W)`` bool prediction.
        labels: ``(H, W)`` integer truth labels.
        cell_ids: ``(G,)`` truth cell ids.
        areas: ``(max_label + 1,)`` pixel count of every label value.

    Returns:
        ``(G,)`` float64.
    """
    inter = np.bincount(labels[mask].ravel(), minlength=len(areas))[cell_ids]
    union = int(mask.sum()) + areas[cell_ids] - inter
    return inter / np.maximum(union, 1)


def cell_map(
    predictions: Mapping[str, Sequence[tuple[int, float, str]]],
    truth: Mapping[str, CellTruth],
    n_classes: int = len(CLASS_NAMES_2021),
    iou_threshold: float = IOU_THRESHOLD,
) -> CellMapResult:
    """Cell-level mAP of a 2021 submission against annotated cells.

    Args:
        predictions: ``image_id -> [(class, confidence, encoded mask), ...]``, masks as
            :func:`hpa.aggregation.rle.encode_mask` writes them at the truth's size.
        truth: ``image_id -> CellTruth``; every truth image must have an entry in
            ``predictions`` (possibly empty). Predictions of other images are ignored.
        n_classes: number of classes.
        iou_threshold: the lowest IoU of a match.

    Returns:
        A :class:`CellMapResult`.

    Raises:
        HPADataError: a truth image missing from the predictions, a class number out of
            range, or an undecodable mask.
    """
    missing = [i for i in truth if i not in predictions]
    if missing:
        raise HPADataError(
            f"{len(missing)} annotated image(s) missing from the submission, e.g. {', '.join(missing[:5])}"
        )
    scores: list[list[float]] = [[] for _ in range(n_classes)]
    flags: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    n_truth = np.zeros(n_classes, np.int64)
    for image_id, cells in truth.items():
        labels = np.asarray(cells.labels)
        height, width = labels.shape
        areas = np.bincount(labels.ravel())
        by_class: list[np.ndarray] = []
        for c in range(n_classes):
            ids = np.array(sorted(k for k, cls in cells.classes.items() if c in cls), dtype=np.int64)
            by_class.append(ids[ids < len(areas)])
            n_truth[c] += len(ids)
        decoded: dict[str, np.ndarray] = {}
        per_class: list[list[tuple[float, str]]] = [[] for _ in range(n_classes)]
        for c, score, text in predictions[image_id]:
            if not 0 <= c < n_classes:
                raise HPADataError(f"Id {image_id}: unknown class {c} (classes are 0-{n_classes - 1})")
            per_class[c].append((float(score), text))
        for c in range(n_classes):
            if not per_class[c]:
                continue
            ious = np.zeros((len(per_class[c]), len(by_class[c])))
            if len(by_class[c]):
                for p, (_, text) in enumerate(per_class[c]):
                    if text not in decoded:
                        try:
                            decoded[text] = decode_mask(text, height, width)
                        except HPADataError as exc:
                            raise HPADataError(f"Id {image_id}: {exc}") from None
                    ious[p] = mask_ious(decoded[text], labels, by_class[c], areas)
            ranked = np.array([s for s, _ in per_class[c]])
            scores[c].extend(ranked.tolist())
            flags[c].append(match_predictions(ious, ranked, iou_threshold))
    ap = np.full(n_classes, np.nan)
    n_pred = np.zeros(n_classes, np.int64)
    n_tp = np.zeros(n_classes, np.int64)
    for c in range(n_classes):
        tp = np.concatenate(flags[c]) if flags[c] else np.zeros(0, bool)
        n_pred[c], n_tp[c] = len(tp), int(tp.sum())
        ap[c] = average_precision(np.asarray(scores[c]), tp, int(n_truth[c]))
    valid = ~np.isnan(ap)
    mean_ap = float(ap[valid].mean()) if valid.any() else float("nan")
    return CellMapResult(mean_ap, ap, n_truth, n_pred, n_tp)
