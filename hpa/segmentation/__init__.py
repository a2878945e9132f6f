"""Cell and nucleus segmentation from the reference channels (red, blue, yellow; never green).

Public API::

    cells, nuclei = segment(image)                  # (H, W, 4) uint8/uint16 -> int32 labels
    table = cell_table(image_id, image, cells, nuclei)

Backends: ``watershed`` (classical, default) and ``cellpose`` (cellpose 3.1 models),
chosen by :attr:`SegmentConfig.backend`. Both share :mod:`.postprocess`.
"""

from __future__ import annotations

import numpy as np

from hpa.segmentation.config import BACKENDS, SegmentConfig
from hpa.segmentation.measure import TABLE_COLUMNS, cell_table
from hpa.segmentation.metrics import (
    COCO_IOUS,
    REPORT_IOUS,
    MatchResult,
    f1_at,
    f1_curve,
    match_labels,
    mean_f1,
)
from hpa.segmentation.postprocess import match_nuclei_to_cells, postprocess
from hpa.segmentation.watershed import estimate_nucleus_diameter

__all__ = [
    "BACKENDS",
    "COCO_IOUS",
    "REPORT_IOUS",
    "TABLE_COLUMNS",
    "MatchResult",
    "SegmentConfig",
    "cell_table",
    "estimate_nucleus_diameter",
    "f1_at",
    "f1_curve",
    "match_labels",
    "match_nuclei_to_cells",
    "mean_f1",
    "postprocess",
    "segment",
]


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[-1] != 4:
        raise ValueError(f"segment takes an (H, W, 4) image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"segment takes uint8 or uint16 images, got {image.dtype}")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"image too small to segment: {image.shape[1]}x{image.shape[0]}")


def segment(image: np.ndarray, config: SegmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Find every cell and its nucleus in one sample.

    Args:
        image: ``(H, W, 4)`` uint8 or uint16 array in red, green, blue, yellow order.
            Green is never read.
        config: settings; ``SegmentConfig()`` if None.

    Returns:
        ``(cells, nuclei)``: ``(H, W)`` int32 label images, 0 = background, cells
        numbered ``1..N``; a nucleus carries its cell's id.

    Raises:
        ValueError, TypeError: the image is not ``(H, W, 4)`` uint8/uint16.
        FileNotFoundError: the cellpose backend's weights are missing.
    """
    config = config or SegmentConfig()
    _check_image(image)
    if config.backend == "cellpose":
        from hpa.segmentation.cellpose_backend import segment_cellpose

        cells, nuclei, diameter = segment_cellpose(image, config)
    else:
        from hpa.segmentation.watershed import segment_watershed

        cells, nuclei, diameter = segment_watershed(image, config)
    disc = np.pi * diameter**2 / 4.0
    return postprocess(
        cells,
        nuclei,
        min_cell_area=config.min_cell_area * disc,
        min_nucleus_area=config.min_nucleus_area * disc,
        keep_cells_without_nucleus=config.keep_cells_without_nucleus,
    )
