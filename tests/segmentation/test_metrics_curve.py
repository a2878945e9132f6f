"""F1 at several IoU thresholds, checked against cellpose's own matching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels, relabel_sequential

from hpa.segmentation import COCO_IOUS, f1_curve, mean_f1


def _perturbed_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Truth: random blobs; prediction: the same blobs grown, shrunk, shifted, some dropped or merged."""
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.normal(size=(160, 160)), 4)
    truth = ndi.label(noise > 0.02)[0]
    pred = expand_labels(truth, distance=int(rng.integers(0, 3)))
    pred = np.roll(pred, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
    ids = np.unique(truth[truth > 0])
    pred[np.isin(pred, rng.choice(ids, size=max(1, ids.size // 5), replace=False))] = 0
    pred[pred == ids[-1]] = ids[0]  # a merge
    return truth, relabel_sequential(pred)[0]  # cellpose counts objects as the largest id


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_counts_match_cellpose_average_precision(seed: int) -> None:
    from cellpose.metrics import average_precision

    truth, pred = _perturbed_pair(seed)
    thresholds = list(COCO_IOUS)
    _ap, tp, fp, fn = average_precision([truth], [pred], threshold=thresholds)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert np.allclose(f1_curve(truth, pred, thresholds), f1[0])
    assert 0.0 < mean_f1(truth, pred) < 1.0
    assert mean_f1(truth, pred) == pytest.approx(float(f1[0].mean()))


def test_curve_falls_with_threshold_and_rejects_low_iou() -> None:
    truth, pred = _perturbed_pair(5)
    curve = f1_curve(truth, pred, COCO_IOUS)
    assert np.all(np.diff(curve) <= 0) and curve[0] > curve[-1]
    assert f1_curve(truth, truth).tolist() == [1.0] * 5
    with pytest.raises(ValueError, match=r"IoU thresholds >= 0\.5"):
        f1_curve(truth, pred, (0.3, 0.5))
