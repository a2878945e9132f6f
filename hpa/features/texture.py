"""Texture of the protein inside one cell: Haralick, local binary patterns, threshold adjacency.

The protein is first quantised between the cell's own 1st and 99th percentiles
(:func:`quantised`), so every texture value is the same for a tenfold brighter exposure.
Haralick and TAS come from mahotas, LBP from scikit-image.
"""

from __future__ import annotations

import mahotas.features
import numpy as np
from skimage.feature import local_binary_pattern

from hpa.features.settings import FeatureSettings, scaled
from hpa.features.view import CellView

NAN = float("nan")
Row = dict[str, float]

#: The 13 Haralick features in mahotas's order (Haralick et al. 1973), short names.
HARALICK_NAMES = (
    "asm",
    "contrast",
    "correlation",
    "variance",
    "idm",
    "sum_avg",
    "sum_var",
    "sum_entropy",
    "entropy",
    "diff_var",
    "diff_entropy",
    "imc1",
    "imc2",
)
LBP_POINTS = 8
TAS_BINS = 9


def quantised(view: CellView, levels: int) -> np.ndarray | None:
    """``(h, w)`` uint8: 0 outside the cell, 1..``levels`` inside; None for a uniform cell."""
    values = view.protein[view.cell]
    lo, hi = np.percentile(values, [1, 99])
    if hi <= lo:
        return None
    scaled_values = np.clip((view.protein - lo) / (hi - lo), 0.0, 1.0)
    q = 1 + np.rint(scaled_values * (levels - 1)).astype(np.uint8)
    return np.where(view.cell, q, 0).astype(np.uint8)


def texture(view: CellView, settings: FeatureSettings) -> Row:
    """Haralick features at each scale, the LBP histogram and the TAS histogram.

    ``haralick_<name>_s<i>``: feature at the i-th co-occurrence distance (averaged over 4
    directions); ``lbp_<k>``: share of cell pixels of rotation-invariant uniform pattern k
    (k = 0..8 edges and corners, 9 = non-uniform); ``tas_<k>``: threshold adjacency
    statistic k (mahotas's parameter-free TAS, first binarisation).
    """
    q = quantised(view, settings.grey_levels)
    row: Row = {}
    for i, fraction in enumerate(settings.haralick_scales):
        values = _haralick(q, scaled(fraction, view.ref))
        row.update({f"haralick_{name}_s{i + 1}": float(v) for name, v in zip(HARALICK_NAMES, values)})
    row.update(_lbp(view, settings))
    tas = _tas(q)
    row.update({f"tas_{k}": float(tas[k]) for k in range(TAS_BINS)})
    return row


def _haralick(q: np.ndarray | None, distance: int) -> np.ndarray:
    if q is None:
        return np.full(len(HARALICK_NAMES), np.nan)
    with np.errstate(all="ignore"):
        try:
            return np.asarray(
                mahotas.features.haralick(q, ignore_zeros=True, return_mean=True, distance=distance)
            )
        except ValueError:  # no pair of cell pixels at this distance in some direction
            return np.full(len(HARALICK_NAMES), np.nan)


def _lbp(view: CellView, settings: FeatureSettings) -> Row:
    bins = LBP_POINTS + 2
    raw = view.raw[..., 1]  # integer input: LBP compares neighbours only, any exposure
    codes = local_binary_pattern(raw, LBP_POINTS, scaled(settings.lbp_radius, view.ref), method="uniform")
    counts = np.bincount(codes[view.cell].astype(np.int64), minlength=bins)[:bins]
    uniform = np.ptp(raw[view.cell]) == 0
    return {f"lbp_{k}": NAN if uniform else float(counts[k] / max(view.area, 1)) for k in range(bins)}


def _tas(q: np.ndarray | None) -> np.ndarray:
    if q is None:
        return np.full(TAS_BINS, np.nan)
    with np.errstate(all="ignore"):
        return np.asarray(mahotas.features.pftas(q))[:TAS_BINS]
