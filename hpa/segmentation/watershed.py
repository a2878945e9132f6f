"""Classical segmentation: nuclei from blue, cells by a seeded watershed over red + yellow.

Every size is measured in nucleus diameters. The nucleus diameter is estimated on each
image (:func:`estimate_nucleus_diameter`, like cellpose's size model but classical), the
image is shrunk so that a nucleus is ``config.work_nucleus_diameter`` pixels across, the
work is done at that scale and the labels are mapped back to the input's resolution by
nearest neighbour. Green (the label signal) is never read.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.segmentation import watershed

from hpa.constants import BLUE, RED, YELLOW
from hpa.segmentation.config import SegmentConfig

log = logging.getLogger(__name__)

# Implementation constants (not sizes of the image): the widest disc, in pixels of the
# shrunk copy, of the background opening, and the smallest probe object (pixels) whose
# area can be measured at all.
_OPENING_DISC = 15.0
_MIN_PROBE_AREA = 4


def channel_float(image: np.ndarray, channel: int) -> np.ndarray:
    """One channel as float32 in 8-bit units, so 8- and 16-bit copies give equal arrays.

    Args:
        image: ``(H, W, 4)`` uint8 or uint16 sample.
        channel: channel index (never :data:`hpa.constants.GREEN` here).

    Returns:
        ``(H, W)`` float32; a uint16 value ``v * 257`` becomes exactly ``v``.
    """
    plane = image[..., channel].astype(np.float32)
    if image.dtype == np.uint16:
        plane /= np.float32(257.0)
    elif image.dtype != np.uint8:
        raise TypeError(f"segmentation takes uint8 or uint16 images, got {image.dtype}")
    return plane


def _normalise(plane: np.ndarray) -> np.ndarray:
    """Divide by the 99.9th percentile (robust to the bits a camera actually uses).

    The percentile is taken over every other row and column: a quarter of the pixels
    give the same robust maximum at a quarter of the cost.
    """
    hi = float(np.percentile(plane[::2, ::2], 99.9))
    return plane / hi if hi > 0 else plane


def resize(plane: np.ndarray, scale: float) -> np.ndarray:
    """Shrink a float ``(H, W)`` plane by ``scale`` (<= 1) with area averaging."""
    if scale >= 1.0:
        return plane
    h, w = plane.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)


def upsample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Map a label image to ``shape`` by nearest neighbour (pixel centres), int32."""
    if labels.shape == shape:
        return labels.astype(np.int32, copy=False)
    rows = np.minimum(
        ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(np.intp), labels.shape[0] - 1
    )
    cols = np.minimum(
        ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(np.intp), labels.shape[1] - 1
    )
    return labels[rows[:, None], cols[None, :]].astype(np.int32, copy=False)


def _smooth(plane: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(plane, (0, 0), sigmaX=max(float(sigma), 0.5)) if sigma > 0 else plane


def _log_plane(plane: np.ndarray, offset: float) -> np.ndarray:
    return np.log(plane + max(offset, 1e-6)).astype(np.float32)


def _otsu(values: np.ndarray) -> float:
    return (
        float(threshold_otsu(values)) if values.size and values.min() < values.max() else float(values.max())
    )


def _background(plane: np.ndarray, size: float) -> np.ndarray:
    """Greyscale opening of ``plane`` by a disc ``size`` px wide: the smooth glow under the nuclei.

    The opening is taken on a copy shrunk so that the disc is at most
    ``_OPENING_DISC`` px wide (the background is smooth at that scale) and brought back
    by linear interpolation, so its cost does not grow with the nucleus size.
    """
    factor = max(1.0, size / _OPENING_DISC)
    small = resize(plane, 1.0 / factor)
    k = max(3, round(size / factor) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, disc, borderType=cv2.BORDER_REPLICATE)
    if opened.shape != plane.shape:
        opened = cv2.resize(opened, (plane.shape[1], plane.shape[0]), interpolation=cv2.INTER_LINEAR)
    return opened


def nucleus_foreground(
    blue: np.ndarray, diameter: float, config: SegmentConfig, background: float = 0.0
) -> np.ndarray:
    """Boolean nucleus mask of a normalised blue plane whose nuclei are ``diameter`` px wide.

    Otsu on the log of the smoothed intensity (robust to bright and dim nuclei side by
    side), optionally widened by a local threshold that finds dim nuclei in bright
    surroundings.

    Args:
        blue: normalised ``(h, w)`` float32 blue plane.
        diameter: nucleus diameter in pixels of ``blue``.
        config: settings.
        background: if > 0, the greyscale opening by a disc this many nucleus diameters
            wide is subtracted first (a white top-hat), so nuclei packed on a bright bed
            (an embryo, a thick tissue) stand out from it.

    Returns:
        ``(h, w)`` bool mask with holes filled.
    """
    sm = _smooth(blue, config.nucleus_smooth * diameter)
    if background > 0:
        sm = np.maximum(sm - _background(sm, background * diameter), 0.0)  # resampling can overshoot
    lg = _log_plane(sm, config.nucleus_log_offset)
    t = _otsu(lg)
    fg = lg > t
    if config.nucleus_local_block > 0:
        k = max(3, int(config.nucleus_local_block * diameter) | 1)
        local = cv2.blur(lg, (k, k))
        floor = t + config.nucleus_local_offset
        fg |= (lg > local + 0.15) & (lg > floor)
    return ndi.binary_fill_holes(fg)


def _probe_diameter(blue: np.ndarray, config: SegmentConfig, background: float) -> float | None:
    """Median diameter (pixels of ``blue``) of the confident objects of a probe pass, or None."""
    scale = min(1.0, config.scale_probe_side / max(blue.shape))
    while True:
        probe = resize(blue, scale)
        fg = nucleus_foreground(probe, config.scale_probe_min_diameter, config, background)
        areas = np.bincount(label(fg, connectivity=1).ravel())[1:]
        areas = areas[areas >= _MIN_PROBE_AREA]
        if areas.size == 0:
            return None
        confident = areas[areas >= 0.1 * np.percentile(areas, 90)]
        diameter = float(np.sqrt(4.0 * np.median(confident) / np.pi))
        if diameter >= config.scale_probe_min_diameter or scale >= 1.0:
            return diameter / scale
        scale = min(1.0, 2.0 * scale)


def estimate_nucleus_diameter(image: np.ndarray, config: SegmentConfig | None = None) -> float:
    """Typical nucleus diameter of a sample in input pixels, measured from blue.

    A first pass on the image shrunk to ``config.scale_probe_side`` thresholds the
    nuclei and takes the median equivalent diameter of the confident objects (those at
    least a tenth the area of the 90th-percentile object); a pass that finds nuclei
    too small to measure is repeated at twice the resolution.

    Objects wider than ``config.max_nucleus_fraction`` of the image's shorter side are
    not nuclei but beds of many nuclei seen as one blob (an embryo, a tissue section).
    When the first pass measures such objects, a second pass measures again after
    subtracting the background wider than ``config.probe_background`` probe nuclei
    (a white top-hat), which separates the nuclei from the bright bed.

    Args:
        image: ``(H, W, 4)`` uint8/uint16 sample.
        config: settings (defaults if None).

    Returns:
        Diameter in input pixels (``config.default_nucleus_diameter`` if no nucleus).
    """
    config = config or SegmentConfig()
    blue = _normalise(channel_float(image, BLUE))
    diameter = _probe_diameter(blue, config, 0.0)
    if diameter is not None and diameter > config.max_nucleus_fraction * min(blue.shape):
        second = _probe_diameter(blue, config, config.probe_background)
        log.debug("first-pass nucleus diameter %.1f px is a blob; second pass %s", diameter, second)
        diameter = second if second is not None else diameter
    if diameter is None:
        return config.default_nucleus_diameter
    return max(diameter, config.min_nucleus_diameter)


def segment_nuclei(blue: np.ndarray, diameter: float, config: SegmentConfig) -> np.ndarray:
    """Nucleus labels of a normalised blue plane whose nuclei are ``diameter`` px wide.

    The glow wider than ``config.nucleus_background`` diameters is subtracted before
    thresholding (see :func:`nucleus_foreground`); touching nuclei are split by a
    watershed of the distance transform seeded with its h-maxima
    (``h = config.nucleus_split_h * diameter``).

    Returns:
        ``(H, W)`` int32 labels, 0 = background.
    """
    fg = nucleus_foreground(blue, diameter, config, config.nucleus_background)
    min_area = config.min_nucleus_area * np.pi * diameter**2 / 4.0
    fg = _remove_small(fg, min_area)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dist = ndi.distance_transform_edt(fg).astype(np.float32)
    dist = np.minimum(dist, config.nucleus_split_cap * diameter)
    bright = _smooth(blue, config.nucleus_split_smooth * diameter)
    bright = bright / max(float(np.median(bright[fg])), 1e-6)
    surface = _smooth(dist, config.nucleus_split_smooth * diameter) * bright**config.nucleus_split_intensity
    seeds = label(h_maxima(surface, config.nucleus_split_h * diameter))
    labels = watershed(-surface, seeds, mask=fg)
    return labels.astype(np.int32)


def h_maxima(image: np.ndarray, h: float) -> np.ndarray:
    """Boolean h-maxima of a float image (as ``skimage.morphology.h_maxima``, 8-connected).

    The greyscale reconstruction by dilation is iterated with OpenCV's 3x3 dilation,
    which is many times faster than scikit-image's sort-based one on these images.

    >>> h_maxima(np.array([[0, 3, 0, 1, 0]], np.float32), 2).astype(int).tolist()
    [[0, 1, 0, 0, 0]]
    """
    f = image.astype(np.float32)
    marker = f - np.float32(h)
    kernel = np.ones((3, 3), np.uint8)
    while True:
        grown = np.minimum(cv2.dilate(marker, kernel), f)
        if np.array_equal(grown, marker):
            break
        marker = grown
    return (f - marker) >= np.float32(h) * np.float32(1 - 1e-5)


def _remove_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    lab = label(mask, connectivity=1)
    areas = np.bincount(lab.ravel())
    keep = areas >= min_area
    keep[0] = False
    return keep[lab]


def cytoplasm(image: np.ndarray) -> np.ndarray:
    """Red + yellow, each normalised to its 99.9th percentile: ``(H, W)`` float32."""
    return (_normalise(channel_float(image, RED)) + _normalise(channel_float(image, YELLOW))) / 2.0


def segment_cells(cyto: np.ndarray, nuclei: np.ndarray, diameter: float, config: SegmentConfig) -> np.ndarray:
    """Grow each nucleus into its cell over the cytoplasm signal.

    Foreground is the cytoplasm above ``config.cell_threshold_scale`` times its Otsu
    threshold over background (everything, if red and yellow are flat), plus the nuclei, no further than
    ``config.max_cell_radius`` nucleus diameters from a nucleus; a watershed of the
    inverted smoothed cytoplasm seeded with the nuclei splits it into cells.

    Args:
        cyto: ``(h, w)`` float32 cytoplasm (see :func:`cytoplasm`) at work scale.
        nuclei: ``(h, w)`` int32 nucleus labels at work scale.
        diameter: nucleus diameter at work scale, pixels.
        config: settings.

    Returns:
        ``(h, w)`` int32 cell labels; a cell carries its nucleus's id.
    """
    sm = _smooth(cyto, config.cell_smooth * diameter)
    background = float(np.percentile(sm, 2))
    lg = _log_plane(np.maximum(sm - background, 0.0), 0.01)
    t = _otsu(lg)
    if float(sm.max()) > background:
        fg = lg > t + np.log(config.cell_threshold_scale)
    else:  # no cytoplasm signal (e.g. a nucleus-only image): cells reach max_cell_radius
        fg = np.ones(sm.shape, bool)
    fg |= nuclei > 0
    if config.max_cell_radius > 0:
        reach = ndi.distance_transform_edt(nuclei == 0)
        fg &= reach <= config.max_cell_radius * diameter
    cells = watershed(-sm, nuclei, mask=fg, compactness=config.cell_compactness)
    return cells.astype(np.int32)


def segment_watershed(
    image: np.ndarray, config: SegmentConfig | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw cells and nuclei of a sample (before :mod:`hpa.segmentation.postprocess`).

    Args:
        image: ``(H, W, 4)`` uint8/uint16 sample; green is not read.
        config: settings (defaults if None).

    Returns:
        ``(cells, nuclei, diameter)``: ``(H, W)`` int32 labels at the input's
        resolution (a nucleus carries its cell's id) and the estimated nucleus diameter
        in input pixels.
    """
    config = config or SegmentConfig()
    diameter = estimate_nucleus_diameter(image, config)
    scale = min(1.0, config.work_nucleus_diameter / diameter)
    work_d = diameter * scale
    blue = resize(_normalise(channel_float(image, BLUE)), scale)
    nuclei = segment_nuclei(blue, work_d, config)
    cells = segment_cells(resize(cytoplasm(image), scale), nuclei, work_d, config)
    log.debug("nucleus diameter %.1f px, work scale %.3f, %d nuclei", diameter, scale, nuclei.max())
    shape = (image.shape[0], image.shape[1])
    return upsample_labels(cells, shape), upsample_labels(nuclei, shape), diameter
