"""Per-cell localisation measures: compartments, colocalisation, radial profile, puncta, granularity.

Each function takes a :class:`~hpa.features.view.CellView` and the settings and returns
an ordered ``{name: value}`` dict whose keys never depend on the cell (NaN where a value
cannot be measured: an empty compartment, a uniform cell). Every value is scale-free in
the protein's intensity (a fraction, a ratio to the cell's own mean, a correlation),
except the areas and counts, which are geometry.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import manders_coloc_coeff
from skimage.morphology import disk, white_tophat

from hpa.constants import BLUE
from hpa.features.settings import FeatureSettings, scaled
from hpa.features.view import CellView

NAN = float("nan")
Row = dict[str, float]


def _ratio(num: float, den: float) -> float:
    """``num / den``, NaN when ``den`` is not positive."""
    return float(num / den) if den > 0 else NAN


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else NAN


def nucleoli_mask(view: CellView, settings: FeatureSettings) -> np.ndarray:
    """Nucleus pixels whose smoothed blue is below ``nucleoli_dim`` x the nucleus's median blue."""
    if not view.has_nucleus:
        return np.zeros_like(view.cell)
    blue = ndi.gaussian_filter(view.stain(BLUE), sigma=max(1.0, 0.02 * view.ref))
    # the nucleus's outline is dim in DAPI too: look only a rim-band inside it
    inner = ndi.binary_erosion(view.nucleus, iterations=scaled(settings.rim_band, view.ref))
    return inner & (blue < settings.nucleoli_dim * np.median(blue[view.nucleus]))


def _bands(view: CellView, settings: FeatureSettings) -> tuple[np.ndarray, np.ndarray]:
    """The cell-edge band (outside the nucleus) and the nuclear-rim band."""
    edge = view.cell & (view.dist_to_edge <= scaled(settings.edge_band, view.ref)) & ~view.nucleus
    if not view.has_nucleus:
        return edge, np.zeros_like(view.cell)
    width = scaled(settings.rim_band, view.ref)
    inside = np.asarray(ndi.distance_transform_edt(np.pad(view.nucleus, 1)))[1:-1, 1:-1]
    outside = np.asarray(ndi.distance_transform_edt(~view.nucleus))
    rim = view.cell & ((view.nucleus & (inside <= width)) | (~view.nucleus & (outside <= width)))
    return edge, rim


def compartments(view: CellView, settings: FeatureSettings) -> Row:
    """Where the cell's protein sits: fractions of its total and enrichments over its mean.

    ``frac_X``: share of the cell's protein in compartment X; ``enrich_X``: X's mean
    protein over the cell's; ``nucleoli_vs_nucleus``: nucleoli's mean over the nucleus's.
    """
    g, cell, nucleus = view.protein, view.cell, view.nucleus
    edge, rim = _bands(view, settings)
    nucleoli = nucleoli_mask(view, settings)
    cyto = cell & ~nucleus
    total = float(g[cell].sum())
    mean = _ratio(total, view.area)
    values = g[cell]
    row: Row = {"area": float(view.area), "nucleus_area_frac": _ratio(float(nucleus.sum()), view.area)}
    for name, mask in (("nucleus", nucleus), ("cytoplasm", cyto), ("edge", edge), ("nuclear_rim", rim)):
        row[f"frac_{name}"] = _ratio(float(g[mask].sum()), total)
        row[f"enrich_{name}"] = _ratio(_mean(g[mask]), mean)
    row["frac_nucleoli"] = _ratio(float(g[nucleoli].sum()), total)
    row["nucleoli_area_frac"] = _ratio(float(nucleoli.sum()), float(nucleus.sum()))
    row["nucleoli_vs_nucleus"] = _ratio(_mean(g[nucleoli]), _mean(g[nucleus]))
    row["protein_cv"] = _ratio(float(values.std()), mean)
    top = np.sort(values)[-max(1, values.size // 10) :]
    row["frac_top10"] = _ratio(float(top.sum()), total)
    return row


def colocalisation(view: CellView, settings: FeatureSettings) -> Row:
    """Pearson's r and Manders' M1/M2 of the protein with the nucleus, microtubule and ER stains.

    M1: share of the protein above its Otsu threshold that lies where the stain is above
    its own; M2: the converse share of the stain. Both 1 for identical images.
    """
    g, cell = view.protein, view.cell
    row: Row = {}
    g_thr = _otsu(g[cell])
    for name, stain in view.references.items():
        s_thr = _otsu(stain[cell])
        flat = np.ptp(g[cell]) == 0 or np.ptp(stain[cell]) == 0
        row[f"pearson_{name}"] = NAN if flat else float(np.corrcoef(g[cell], stain[cell])[0, 1])
        row[f"m1_{name}"] = _manders(g, cell & (g > g_thr), stain > s_thr) if not flat else NAN
        row[f"m2_{name}"] = _manders(stain, cell & (stain > s_thr), g > g_thr) if not flat else NAN
    return row


def _otsu(values: np.ndarray) -> float:
    return float(threshold_otsu(values)) if values.size and np.ptp(values) > 0 else NAN


def _manders(image: np.ndarray, mask: np.ndarray, other: np.ndarray) -> float:
    """Share of ``image`` inside ``mask`` that is also inside ``other`` (NaN when none)."""
    if not mask.any() or image[mask].sum() <= 0:
        return NAN
    return float(manders_coloc_coeff(image, other, mask))


def radial(view: CellView, settings: FeatureSettings) -> Row:
    """The protein's radial distribution (CellProfiler's MeasureObjectIntensityDistribution).

    Each pixel's scaled radius is ``d_centre / (d_centre + d_edge)``: 0 at the nucleus
    centre, 1 on the cell outline. ``radial_frac_k`` is the share of the protein in ring k
    (1 = innermost), ``radial_meanfrac_k`` that share over the ring's share of the area
    (1 everywhere for a uniform cell), ``radial_mean_r`` the protein-weighted mean radius,
    ``polarity`` the distance from the nucleus centre to the protein's centre of mass over
    the reference length (0 for a stain symmetric around the nucleus, large for one-sided
    Golgi, MTOC or aggresome).
    """
    n = settings.rings
    cy, cx = view.centre
    yy, xx = np.nonzero(view.cell)
    d_centre = np.hypot(yy - cy, xx - cx)
    r = d_centre / (d_centre + view.dist_to_edge[yy, xx])
    ring = np.minimum((r * n).astype(np.int64), n - 1)
    g = view.protein[yy, xx]
    total = float(g.sum())
    sums = np.bincount(ring, weights=g, minlength=n)
    counts = np.bincount(ring, minlength=n)
    row: Row = {}
    for k in range(n):
        frac = _ratio(sums[k], total)
        row[f"radial_frac_{k + 1}"] = frac
        row[f"radial_meanfrac_{k + 1}"] = _ratio(frac, counts[k] / max(len(r), 1)) if counts[k] else NAN
    row["radial_mean_r"] = _ratio(float((g * r).sum()), total)
    shift = np.hypot(_ratio(float((g * yy).sum()), total) - cy, _ratio(float((g * xx).sum()), total) - cx)
    row["polarity"] = float(shift / view.ref)
    return row


def smoothed(view: CellView, settings: FeatureSettings) -> np.ndarray:
    """The protein blurred by a Gaussian of ``smooth`` x the reference length (its pixel noise
    at 2048 px would otherwise read as fine spots that its 512 px version does not have)."""
    return np.asarray(ndi.gaussian_filter(view.protein, settings.smooth * view.ref))


def puncta(view: CellView, settings: FeatureSettings) -> Row:
    """Bright spots of protein found by a white top-hat, thresholded relative to the cell.

    The top-hat is taken of the :func:`smoothed` protein; a spot pixel's response exceeds
    both ``puncta_mean`` x the cell's mean protein and ``puncta_noise`` x the top-hat's
    robust spread in the cell.
    ``puncta_per_kpx``: spots per 1,000 px of cell area; ``puncta_mean_area``: their mean
    area in px; ``puncta_area_rel``: the same over the reference length squared;
    ``frac_puncta``: share of the cell's protein inside them.
    """
    g, cell = view.protein, view.cell
    values = g[cell]
    filled = np.where(cell, smoothed(view, settings), np.median(values))  # no edge spot from outside
    tophat = white_tophat(filled, disk(scaled(settings.tophat_radius, view.ref)))
    response = tophat[cell]
    spread = 1.4826 * float(np.median(np.abs(response - np.median(response))))
    thr = max(settings.puncta_mean * float(values.mean()), settings.puncta_noise * spread)
    spots = cell & (tophat > thr) if thr > 0 else np.zeros_like(cell)
    labels, n = ndi.label(spots)
    sizes = np.bincount(labels.ravel())[1:]
    keep = sizes >= max(2.0, settings.puncta_min_area * view.ref**2)
    kept = np.isin(labels, np.flatnonzero(keep) + 1) if n else spots
    count = int(keep.sum())
    mean_area = float(sizes[keep].mean()) if count else NAN
    return {
        "puncta_count": float(count),
        "puncta_per_kpx": 1000.0 * count / max(view.area, 1),
        "puncta_mean_area": mean_area,
        "puncta_area_rel": mean_area / view.ref**2 if count else NAN,
        "frac_puncta": _ratio(float(g[kept].sum()), float(values.sum())),
    }


def granularity(view: CellView, settings: FeatureSettings) -> Row:
    """The protein's granularity spectrum: what successive openings remove (CellProfiler's MeasureGranularity).

    The protein is opened (eroded then dilated) with discs of growing radius;
    ``granularity_k`` is the share of the cell's protein removed by the k-th disc and
    not the one before: large at small k for fine spots, at large k for coarse blobs.
    The protein is first smoothed (:func:`smoothed`); pixels outside the cell are set to
    the cell's minimum, so the outline is no spot.
    """
    values = view.protein[view.cell]
    g = np.where(view.cell, smoothed(view, settings), values.min()).astype(np.float32)
    total = float(g[view.cell].sum())
    row: Row = {}
    previous = total
    for k in range(settings.granularity_steps):
        radius = scaled(settings.granularity_step * (k + 1), view.ref)  # rounded once, not k times
        opened = cv2.morphologyEx(g, cv2.MORPH_OPEN, disk(radius).astype(np.uint8))
        current = float(opened[view.cell].sum())
        row[f"granularity_{k + 1}"] = _ratio(previous - current, total)
        previous = current
    return row
