"""Segmenting an image into a SEG_DIR (:class:`hpa.artefacts.segdir.SegDir`), or reading it back.

The folder's layout, readers and writers are :mod:`hpa.artefacts.segdir`'s; here the
segmenter runs and its masks and table are written there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hpa.artefacts.segdir import SegDir
from hpa.segmentation import cell_table, segment

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from hpa.segmentation.config import SegmentConfig


def segment_and_write(
    image: np.ndarray,
    seg_dir: str | Path | SegDir,
    image_id: str,
    config: SegmentConfig,
    source: str | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Segment an ``(H, W, 4)`` sample and write its SEG_DIR files (masks, the ``source``
    signature of its files, then its table).

    Returns:
        ``(cells, table)``: the ``(H, W)`` int32 cell labels and the per-cell table.
    """
    folder = seg_dir if isinstance(seg_dir, SegDir) else SegDir(seg_dir)
    cells, nuclei = segment(image, config)
    table = cell_table(image_id, image, cells, nuclei)
    folder.write_image(image_id, cells, nuclei, table, source)
    return cells, table


def load_or_segment(
    image: np.ndarray, seg_dir: str | Path, image_id: str, config: SegmentConfig, source: str | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """An image's cells and table from ``seg_dir`` when finished there from the same files
    (``source``: :func:`hpa.artefacts.segdir.source_signature`), else segmented now.

    This is how an interrupted on-the-fly segmentation is resumed.
    """
    folder = SegDir(seg_dir)
    if folder.is_finished(image_id, source):
        return folder.read_cells(image_id), folder.read_image_table(image_id)
    return segment_and_write(image, folder, image_id, config, source)
