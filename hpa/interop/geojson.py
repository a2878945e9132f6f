"""Cells of a prediction run as GeoJSON, in the form QuPath imports.

One FeatureCollection per image. Each cell is a Feature whose geometry is the Polygon of
the cell's outer contour with its holes as interior rings (stray fragments left out; a
cell that encloses another keeps it out), in pixel coordinates with
the origin at the top-left corner of the image and pixel ``(row, col)`` covering
``[col, col + 1] x [row, row + 1]``, as QuPath uses. Its ``properties`` carry QuPath's
import keys: ``objectType`` (``"cell"`` with a ``nucleusGeometry`` where the cell has a
nucleus in ``nuclei/<Id>.png``, else ``"detection"``), ``classification`` (the cell's
top class over threshold with its colour, as :func:`hpa.visualization.cell_calls`; absent
for a cell with none) and ``measurements`` (every class probability, the area and the
cell id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skimage.draw import polygon2mask
from skimage.measure import find_contours, label, regionprops

from hpa.io import write_text_atomic
from hpa.visualization.classes import cell_calls, class_palette

log = logging.getLogger(__name__)


def outer_contour(mask: np.ndarray) -> np.ndarray:
    """The outer contour of the largest connected part of a binary mask.

    Args:
        mask: ``(H, W)`` bool array.

    Returns:
        ``(N, 2)`` float64 ``(x, y)`` vertices of a closed ring (first = last), in pixel
        corner coordinates (the mask's pixels span ``[0, W] x [0, H]``), counter-clockwise
        in ``(x, y)`` (RFC 7946), without collinear vertices. Empty ``(0, 2)`` for an empty mask.

    >>> outer_contour(np.ones((2, 3), bool)).tolist()
    [[0.0, 0.5], [0.5, 0.0], [2.5, 0.0], [3.0, 0.5], [3.0, 1.5], [2.5, 2.0], [0.5, 2.0], [0.0, 1.5], [0.0, 0.5]]
    """
    return _largest_ring(mask, "low")


def _largest_ring(mask: np.ndarray, fully_connected: str) -> np.ndarray:
    """The counter-clockwise ring around the largest part of ``mask`` (see :func:`outer_contour`)."""
    if not mask.any():
        return np.zeros((0, 2))
    padded = np.pad(mask, 1).astype(np.float32)
    contours = find_contours(padded, 0.5, fully_connected=fully_connected)
    ring = max(contours, key=lambda c: abs(_area(c)))  # the outer ring encloses the most
    xy = ring[:, ::-1] - 0.5  # (row, col) of the padded array -> pixel-corner (x, y)
    if not np.allclose(xy[0], xy[-1]):
        xy = np.vstack([xy, xy[:1]])
    xy = _drop_collinear(xy)
    if _area(xy) < 0:  # RFC 7946: exterior rings counter-clockwise in (x, y)
        xy = xy[::-1]
    return xy


def polygon_rings(mask: np.ndarray) -> list[np.ndarray]:
    """The rings of the Polygon of a binary mask: its outer contour, then its holes.

    The exterior is :func:`outer_contour`. A hole is a part of the background inside it
    that touches the outside through no pixel edge or corner (the exterior's contour runs
    between such pixels), whatever fills it: nothing, another cell, or a stray fragment
    of this mask (left out as the other fragments are).

    Args:
        mask: ``(H, W)`` bool array.

    Returns:
        ``(N, 2)`` float64 ``(x, y)`` closed rings, pixel-corner coordinates as
        :func:`outer_contour`: the exterior counter-clockwise, then the holes clockwise
        (RFC 7946) in scan order. Empty for an empty mask.

    >>> ring = np.ones((5, 5), bool)
    >>> ring[2, 2] = False
    >>> [len(r) for r in polygon_rings(ring)], _area(polygon_rings(ring)[1])
    ([9, 5], -0.5)
    """
    exterior = outer_contour(mask)
    if not len(exterior):
        return []
    inside = polygon2mask(mask.shape, exterior[:, ::-1] - 0.5)  # pixel centres inside the ring
    parts = label(inside & ~_largest_part(mask), connectivity=2)
    holes = [_largest_ring(parts == k, "high")[::-1] for k in range(1, int(parts.max()) + 1)]
    return [exterior, *holes]


def _largest_part(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected part of a mask (the one :func:`outer_contour` follows)."""
    parts = label(mask, connectivity=1)
    if parts.max() <= 1:
        return mask
    return parts == int(np.argmax(np.bincount(parts.ravel())[1:])) + 1


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """A closed ring without the vertices that lie on the line of their neighbours."""
    pts = ring[:-1]
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    cross = (pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - pts[:, 0]
    )
    keep = pts[np.abs(cross) > 1e-9]
    start = int(np.lexsort((keep[:, 1], keep[:, 0]))[0])  # a stable first vertex
    keep = np.roll(keep, -start, axis=0)
    return np.vstack([keep, keep[:1]])


def _polygon(*rings: np.ndarray) -> dict[str, Any]:
    coords = [[[round(float(x), 2), round(float(y), 2)] for x, y in ring] for ring in rings]
    return {"type": "Polygon", "coordinates": coords}


def cell_features(
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
    nuclei: np.ndarray | None = None,
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of every cell of one image.

    Args:
        cells: ``(H, W)`` integer cell labels (0 = background).
        cell_table: the image's rows of ``cell_predictions.parquet`` (``cell_id``, one
            probability column per class, optionally ``predicted``). A cell in the mask
            without a row is exported without classification or probabilities.
        class_names: class names in class-number order.
        thresholds: ``(C,)`` per-class thresholds (used where ``predicted`` is absent).
        nuclei: ``(H, W)`` nucleus labels carrying their cell's id, or None.

    Returns:
        The FeatureCollection as a dict, one Feature per cell of ``cells`` in id order.
    """
    calls = cell_calls(cell_table, class_names, thresholds).set_index("cell_id") if len(cell_table) else None
    probs = cell_table.set_index("cell_id")[list(class_names)] if len(cell_table) else None
    colours = class_palette(len(class_names))
    features = []
    for region in regionprops(cells.astype(np.int32)):
        cid = int(region.label)
        y0, x0, y1, x1 = region.bbox
        offset = np.array([x0, y0], dtype=np.float64)  # box corner in (x, y)
        rings = [ring + offset for ring in polygon_rings(region.image)]
        props: dict[str, Any] = {"objectType": "detection", "isLocked": False, "name": f"cell {cid}"}
        measurements: dict[str, float] = {"cell_id": cid, "Area px^2": float(region.area)}
        # no "id": QuPath reads it as a UUID and makes its own where it is absent
        feature: dict[str, Any] = {"type": "Feature", "geometry": _polygon(*rings)}
        if nuclei is not None:
            nucleus = nuclei[y0:y1, x0:x1] == cid
            if nucleus.any():
                feature["nucleusGeometry"] = _polygon(outer_contour(nucleus) + offset)
                props["objectType"] = "cell"
                measurements["Nucleus area px^2"] = float(nucleus.sum())
        if probs is not None and cid in probs.index:
            assert calls is not None
            measurements.update({f"{n}: probability": float(p) for n, p in probs.loc[cid].items()})
            top = int(calls.loc[cid, "top_class"])
            if top >= 0:
                props["classification"] = {"name": class_names[top], "color": [int(v) for v in colours[top]]}
        props["measurements"] = measurements
        feature["properties"] = props
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, collection: dict[str, Any]) -> None:
    """Write a FeatureCollection as UTF-8 JSON, atomically."""
    write_text_atomic(path, json.dumps(collection, separators=(",", ":")) + "\n")
