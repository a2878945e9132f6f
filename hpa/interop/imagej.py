"""Cells of a prediction run as an ImageJ ROI set (Fiji's ROI Manager), with ``roifile``.

One ``<Id>_rois.zip`` per image, as the ROI Manager's *More > Save* writes it: one polygon
ROI per cell in cell-id order, named ``cell-<id>_<top class>`` (the cell's top class over
threshold as :func:`hpa.visualization.cell_calls`, spaces as ``-``; ``none`` for a cell
with no class over threshold or no row in the table). Vertices are the cell's outer
contour (:func:`hpa.interop.geojson.polygon_rings`) in subpixel image coordinates, with
the origin at the top-left corner of the image, as ImageJ uses them. A cell with holes
(one enclosing another cell, say) is a composite ROI (ImageJ's ``ShapeRoi``: its outer
contour and holes as closed paths, filled even-odd) so that it leaves its holes out, as
the GeoJSON polygons do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi, roiwrite
from skimage.measure import regionprops

from hpa.interop.geojson import polygon_rings
from hpa.io import atomic_path
from hpa.visualization.classes import cell_calls

#: Name part of a cell with no class over threshold.
NO_CALL = "none"
#: Operations of an ImageJ ShapeRoi path (``java.awt.geom.PathIterator``).
_MOVETO, _LINETO, _CLOSE = 0.0, 1.0, 4.0


def roi_name(cell_id: int, top_class: str | None) -> str:
    """The ROI name of a cell.

    >>> roi_name(7, "Nuclear membrane"), roi_name(8, None)
    ('cell-7_Nuclear-membrane', 'cell-8_none')
    """
    label = re.sub(r"[\s/\\]+", "-", top_class) if top_class else NO_CALL
    return f"cell-{cell_id}_{label}"


def cell_rois(
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
) -> list[ImagejRoi]:
    """One polygon ROI per cell of one image, in cell-id order.

    Args:
        cells: ``(H, W)`` integer cell labels (0 = background).
        cell_table: the image's rows of ``cell_predictions.parquet`` (``cell_id``, one
            probability column per class, optionally ``predicted``).
        class_names: class names in class-number order.
        thresholds: ``(C,)`` per-class thresholds (used where ``predicted`` is absent).

    Returns:
        The ROIs (``roifile.ImagejRoi``): POLYGON with subpixel coordinates, or a
        composite (RECT with a shape path) for a cell with holes.
    """
    calls = cell_calls(cell_table, class_names, thresholds).set_index("cell_id") if len(cell_table) else None
    rois = []
    for region in regionprops(cells.astype(np.int32)):
        cid = int(region.label)
        y0, x0 = region.bbox[:2]
        rings = [ring + np.array([x0, y0]) for ring in polygon_rings(region.image)]
        top = int(calls.loc[cid, "top_class"]) if calls is not None and cid in calls.index else -1
        name = roi_name(cid, class_names[top] if top >= 0 else None)
        rois.append(_polygon_roi(rings[0], name) if len(rings) == 1 else _shape_roi(rings, name))
    return rois


def _polygon_roi(ring: np.ndarray, name: str) -> ImagejRoi:
    roi = ImagejRoi.frompoints(ring[:-1], name=name)  # ImageJ closes polygons itself
    roi.roitype = ROI_TYPE.POLYGON
    return roi


def _shape_roi(rings: Sequence[np.ndarray], name: str) -> ImagejRoi:
    """A composite ROI: each closed ring as MOVETO, LINETO..., CLOSE (absolute coordinates)."""
    path: list[float] = []
    for ring in rings:
        (x, y), rest = ring[0], ring[1:-1]
        path += [_MOVETO, float(x), float(y)]
        for x, y in rest:
            path += [_LINETO, float(x), float(y)]
        path.append(_CLOSE)
    roi = ImagejRoi(roitype=ROI_TYPE.RECT, name=name)
    roi.options = ROI_OPTIONS.OVERLAY_BACKGROUNDS | ROI_OPTIONS.OVERLAY_LABELS
    roi.multi_coordinates = np.asarray(path, np.float32)
    roi.shape_roi_size = len(path)
    lo, hi = np.floor(rings[0].min(axis=0)), np.ceil(rings[0].max(axis=0))
    roi.left, roi.top, roi.right, roi.bottom = int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])
    return roi


def write_roi_zip(path: str | Path, rois: Sequence[ImagejRoi]) -> Path:
    """Write ROIs as an ImageJ ROI zip, atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        roiwrite(tmp, list(rois), mode="w")
    return Path(path)
