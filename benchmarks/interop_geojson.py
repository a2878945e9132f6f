"""GeoJSON export on real HPA cells: polygon fidelity, size and speed.

For every real 2048/3072 px sample of ``../shared/data/hpa-2021-samples`` (cell masks of
the HPA Cell Segmentation reference), :func:`hpa.interop.geojson.cell_features` turns the
cells into polygons; each polygon is checked with shapely (valid, inside the image) and
rasterised back (pixel centres inside) to measure its IoU with the cell's hole-filled
mask. Prints one Markdown table row per image and a summary::

    python benchmarks/interop_geojson.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from shapely.geometry import box, shape
from skimage.draw import polygon2mask

from hpa.constants import CLASS_NAMES_2018
from hpa.interop.geojson import cell_features
from hpa.io import read_label_image

REPO = Path(__file__).resolve().parents[1]


def polygon_iou(ring: list[list[float]], cell: np.ndarray, y0: int, x0: int) -> float:
    """IoU of a pixel-corner (x, y) polygon rasterised in the box of ``cell`` (origin y0, x0)."""
    xy = np.asarray(ring, dtype=np.float64)
    drawn = polygon2mask(cell.shape, np.c_[xy[:, 1] - 0.5 - y0, xy[:, 0] - 0.5 - x0])
    return float((drawn & cell).sum() / max((drawn | cell).sum(), 1))


def measure(mask_path: Path) -> dict[str, float]:
    """Export one mask (uniform probabilities: geometry only) and check every polygon."""
    cells = read_label_image(mask_path)
    ids = [int(i) for i in np.unique(cells) if i]
    table = pd.DataFrame({"cell_id": ids, **{n: np.full(len(ids), 0.1) for n in CLASS_NAMES_2018}})
    t0 = time.perf_counter()
    collection = cell_features(cells, table, CLASS_NAMES_2018, np.full(len(CLASS_NAMES_2018), 0.5))
    seconds = time.perf_counter() - t0
    frame = box(0, 0, cells.shape[1], cells.shape[0])
    ious, valid, inside, vertices = [], 0, 0, 0
    slices = ndi.find_objects(cells)
    for feature in collection["features"]:
        cid = feature["properties"]["measurements"]["cell_id"]
        geom = shape(feature["geometry"])
        valid += geom.is_valid
        inside += frame.contains(geom)
        ring = feature["geometry"]["coordinates"][0]
        vertices += len(ring)
        sy, sx = slices[cid - 1]
        pad_y0, pad_x0 = max(sy.start - 1, 0), max(sx.start - 1, 0)
        crop = ndi.binary_fill_holes(cells[pad_y0 : sy.stop + 1, pad_x0 : sx.stop + 1] == cid)
        ious.append(polygon_iou(ring, crop, pad_y0, pad_x0))
    return {
        "size": cells.shape[0],
        "cells": len(ids),
        "valid": valid,
        "inside": inside,
        "iou_min": min(ious),
        "iou_mean": float(np.mean(ious)),
        "vertices_per_cell": vertices / len(ids),
        "kib": len(json.dumps(collection, separators=(",", ":"))) / 1024,
        "seconds": seconds,
    }


def main() -> int:
    """Measure every reference mask and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.environ.get("HPA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    p.add_argument("--data", default=default, help="the shared real data folder")
    args = p.parse_args()
    masks = sorted((Path(args.data) / "hpa-2021-samples" / "reference-masks").glob("*_cellmask.png"))
    masks.append(Path(args.data) / "hpa-16bit-sample" / "1000_A12_2_cellmask.png")
    print("| mask | px | cells | valid | inside | IoU min | IoU mean | vertices/cell | KiB | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for path in masks:
        r = measure(path)
        rows.append(r)
        print(
            f"| {path.name[:12]} | {r['size']:.0f} | {r['cells']:.0f} | {r['valid']:.0f} | {r['inside']:.0f} "
            f"| {r['iou_min']:.3f} | {r['iou_mean']:.4f} | {r['vertices_per_cell']:.0f} | {r['kib']:.0f} "
            f"| {r['seconds']:.2f} |"
        )
    n = sum(r["cells"] for r in rows)
    print(
        f"\n{n:.0f} cells: {sum(r['valid'] for r in rows):.0f} valid, {sum(r['inside'] for r in rows):.0f} inside, "
        f"IoU min {min(r['iou_min'] for r in rows):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
