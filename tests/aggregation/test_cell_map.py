"""Cell-level mAP: a hand-computed toy case and an independent brute-force reference."""

import numpy as np
import pytest

from hpa.aggregation.cell_map import CellTruth, average_precision, cell_map, match_predictions
from hpa.aggregation.rle import encode_mask
from hpa.errors import HPADataError


def _toy():
    # image a: three 4x2 cells side by side; image b: one cell
    a = np.zeros((4, 6), np.int32)
    a[:, 0:2], a[:, 2:4], a[:, 4:6] = 1, 2, 3
    b = np.zeros((4, 6), np.int32)
    b[:, 0:2] = 1
    truth = {
        "a": CellTruth(a, {1: frozenset({0}), 2: frozenset({0, 1}), 3: frozenset({18})}),
        "b": CellTruth(b, {1: frozenset({0})}),
    }
    half2 = np.zeros((4, 6), bool)
    half2[:, 2] = True  # IoU 4/8 = 0.5 with cell 2: below 0.6
    grown2 = a == 2
    grown2[0, 4] = grown2[1, 4] = True  # IoU 8/10 = 0.8
    preds = {
        "a": [
            (0, 0.9, encode_mask(a == 1)),  # TP
            (0, 0.8, encode_mask(a == 1)),  # its best cell is taken: FP
            (0, 0.7, encode_mask(half2)),  # FP
            (1, 0.6, encode_mask(grown2)),  # TP
            (18, 0.3, encode_mask(a == 1)),  # FP (the Negative cell is 3)
        ],
        "b": [(0, 0.75, encode_mask(b == 1))],  # TP
    }
    return preds, truth


def test_hand_computed_toy_case():
    preds, truth = _toy()
    result = cell_map(preds, truth)
    # class 0, ranked TP FP TP FP with 3 truth cells: precision 1, 1/2, 2/3, 1/2 at
    # recall 1/3, 1/3, 2/3, 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert result.ap[0] == pytest.approx(5 / 9, abs=1e-12)
    assert result.ap[1] == pytest.approx(1.0)
    assert result.ap[18] == 0.0
    assert np.isnan(result.ap[2:18]).all()
    assert result.mean_ap == pytest.approx((5 / 9 + 1 + 0) / 3, abs=1e-12)
    assert result.n_truth[[0, 1, 18]].tolist() == [3, 1, 1]
    assert result.n_pred[[0, 1, 18]].tolist() == [4, 1, 1]
    assert result.n_tp[[0, 1, 18]].tolist() == [2, 1, 0]


def test_matching_has_no_fallback_and_ap_formula():
    # both predictions overlap truth 0 most; the second does not fall back to truth 1
    ious = np.array([[0.9, 0.0], [0.8, 0.65]])
    assert match_predictions(ious, np.array([0.9, 0.5])).tolist() == [True, False]
    assert average_precision(np.array([0.5]), np.array([True]), 0) != average_precision(
        np.array([0.5]), np.array([True]), 1
    )
    assert average_precision(np.array([0.9, 0.1]), np.array([False, True]), 1) == pytest.approx(0.5)


def test_missing_image_and_bad_class_are_errors():
    preds, truth = _toy()
    with pytest.raises(HPADataError, match="missing from the submission"):
        cell_map({"a": preds["a"]}, truth)
    with pytest.raises(HPADataError, match="unknown class 19"):
        cell_map({"a": [(19, 0.5, preds["a"][0][2])], "b": []}, truth)


# ---------------------------------------------------------- brute-force reference ---


def _brute_force_map(preds, truth, n_classes=19, thr=0.6):
    aps = []
    for c in range(n_classes):
        gts = [(i, k) for i, t in truth.items() for k, cls in t.classes.items() if c in cls]
        items = [(conf, i, mask) for i in truth for cls, conf, mask in preds[i] if cls == c]
        items = sorted(enumerate(items), key=lambda e: (-e[1][0], e[0]))  # stable by confidence
        if not gts:
            continue
        taken = set()
        hits = []
        for _, (_, i, text) in items:
            labels = truth[i].labels
            h, w = labels.shape
            from hpa.aggregation.rle import decode_mask

            m = decode_mask(text, h, w)
            best, best_iou = None, -1.0
            for gi, k in gts:
                if gi != i:
                    continue
                cell = labels == k
                inter = np.logical_and(m, cell).sum()
                union = np.logical_or(m, cell).sum()
                iou = inter / union if union else 0.0
                if iou > best_iou:
                    best, best_iou = (gi, k), iou
            ok = best is not None and best_iou >= thr and best not in taken
            if ok:
                taken.add(best)
            hits.append(ok)
        n = len(gts)
        ap, tp = 0.0, 0
        precisions = [sum(hits[: j + 1]) / (j + 1) for j in range(len(hits))]
        for j, hit in enumerate(hits):
            if hit:
                tp += 1
                ap += max(precisions[j:]) / n
        aps.append(ap)
    return float(np.mean(aps))


def _random_case(seed):
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(seed)
    truth, preds = {}, {}
    for i in range(int(rng.integers(2, 5))):
        h, w = rng.integers(24, 48, 2)
        labels = np.zeros((h, w), np.int32)
        n = int(rng.integers(2, 7))
        labels[rng.integers(0, h, n), rng.integers(0, w, n)] = np.arange(1, n + 1)
        labels = expand_labels(labels, 12)
        ids = [int(k) for k in np.unique(labels) if k]
        classes = {
            k: frozenset(rng.choice(4, size=int(rng.integers(1, 3)), replace=False).tolist()) for k in ids
        }
        truth[f"img{i}"] = CellTruth(labels, classes)
        rows = []
        for k in ids:
            for _ in range(int(rng.integers(1, 4))):  # several guesses per cell, some sloppy
                m = labels == k
                noise = rng.random((h, w)) < rng.uniform(0.0, 0.5)
                m = np.where(rng.random() < 0.5, m ^ (noise & (labels == k)), m | (noise & (labels != k)))
                rows.append((int(rng.integers(0, 5)), float(rng.random()), encode_mask(m)))
        preds[f"img{i}"] = rows
    return preds, truth


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_brute_force(seed):
    preds, truth = _random_case(seed)
    fast = cell_map(preds, truth).mean_ap
    assert abs(fast - _brute_force_map(preds, truth)) < 1e-9


def test_brute_force_agrees_on_the_toy_case():
    preds, truth = _toy()
    assert _brute_force_map(preds, truth) == pytest.approx((5 / 9 + 1) / 3, abs=1e-12)
