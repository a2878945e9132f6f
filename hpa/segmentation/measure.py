"""The per-cell table of a segmented sample (the rows of ``SEG_DIR/cells.parquet``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from skimage.measure import regionprops_table

from hpa.artefacts.segdir import TABLE_COLUMNS
from hpa.constants import CHANNELS
from hpa.segmentation.postprocess import border_ids

_DTYPES = {
    "cell_id": "int32",
    "bbox_y0": "int32",
    "bbox_x0": "int32",
    "bbox_y1": "int32",
    "bbox_x1": "int32",
    "area": "int64",
    "centroid_y": "float64",
    "centroid_x": "float64",
    "nucleus_area": "int64",
    "touches_border": "bool",
    **{f"mean_{c}": "float64" for c in CHANNELS},
    "image_height": "int32",
    "image_width": "int32",
}


def cell_table(image_id: str, image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray) -> pd.DataFrame:
    """One row per cell: box, area, centroid, nucleus area, border flag, channel means.

    The channel means are of the raw pixel values (the image's own dtype range) inside
    the cell; green is measured here for later stages, segmentation never used it.

    Args:
        image_id: the sample's Id (the ``image_id`` column).
        image: ``(H, W, 4)`` uint8/uint16 sample.
        cells: ``(H, W)`` int cell labels, 0 = background.
        nuclei: ``(H, W)`` int nucleus labels carrying their cell's id.

    Returns:
        DataFrame with :data:`TABLE_COLUMNS`, sorted by ``cell_id`` (empty if no cell).
        Boxes are scikit-image's ``bbox`` (rows/cols, end exclusive).
    """
    h, w = cells.shape
    if image.shape[:2] != (h, w) or nuclei.shape != (h, w):
        raise ValueError(f"shapes differ: image {image.shape}, cells {cells.shape}, nuclei {nuclei.shape}")
    cells = cells.astype(np.int32, copy=False)
    props = regionprops_table(
        cells,
        intensity_image=image,
        properties=("label", "bbox", "area", "centroid", "intensity_mean"),
    )
    n = len(props["label"])
    ids = np.asarray(props["label"], dtype=np.int64)
    nuc_area = np.bincount(nuclei.ravel().astype(np.int64), minlength=int(cells.max(initial=0)) + 1)
    data: dict[str, object] = {
        "image_id": [image_id] * n,
        "cell_id": ids,
        "bbox_y0": props["bbox-0"],
        "bbox_x0": props["bbox-1"],
        "bbox_y1": props["bbox-2"],
        "bbox_x1": props["bbox-3"],
        "area": props["area"],
        "centroid_y": props["centroid-0"],
        "centroid_x": props["centroid-1"],
        "nucleus_area": nuc_area[ids] if n else np.zeros(0, np.int64),
        "touches_border": np.isin(ids, border_ids(cells)),
        **{f"mean_{c}": props[f"intensity_mean-{k}"] for k, c in enumerate(CHANNELS)},
        "image_height": np.full(n, h),
        "image_width": np.full(n, w),
    }
    table = pd.DataFrame(data, columns=list(TABLE_COLUMNS))
    table["image_id"] = table["image_id"].astype(str)
    return table.astype(_DTYPES).sort_values("cell_id", ignore_index=True)
