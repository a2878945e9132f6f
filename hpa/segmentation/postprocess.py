"""Post-processing shared by every backend: sizes, nucleus pairing, border, relabelling.

Input: raw cell and nucleus label images of any numbering. Output: cells numbered
``1..N`` and nuclei carrying their cell's id, with every threshold taken from
:class:`hpa.segmentation.config.SegmentConfig` and sizes scaled to the nucleus size.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def match_nuclei_to_cells(cells: np.ndarray, nuclei: np.ndarray, min_overlap: float = 0.5) -> np.ndarray:
    """Give every nucleus the id of the cell that covers most of it.

    A nucleus whose best cell covers less than ``min_overlap`` of it is dropped; parts of
    a nucleus outside its cell are cut off; two nuclei in one cell both take its id.

    Args:
        cells: ``(H, W)`` int cell labels, 0 = background.
        nuclei: ``(H, W)`` int nucleus labels, independent numbering.
        min_overlap: smallest covered fraction of a nucleus.

    Returns:
        ``(H, W)`` int32 nucleus labels in cell ids.

    >>> c = np.array([[1, 1, 2, 2]]); n = np.array([[7, 7, 7, 0]])
    >>> match_nuclei_to_cells(c, n).tolist()
    [[1, 1, 0, 0]]
    """
    n = nuclei.ravel().astype(np.int64)
    c = cells.ravel().astype(np.int64)
    n_max, c_max = int(n.max(initial=0)), int(c.max(initial=0))
    if n_max == 0 or c_max == 0:
        return np.zeros(nuclei.shape, np.int32)
    inside = (n > 0) & (c > 0)
    overlap = np.bincount(n[inside] * (c_max + 1) + c[inside], minlength=(n_max + 1) * (c_max + 1))
    overlap = overlap.reshape(n_max + 1, c_max + 1)
    area = np.bincount(n, minlength=n_max + 1)
    best = overlap.argmax(axis=1)
    ok = overlap[np.arange(n_max + 1), best] >= min_overlap * np.maximum(area, 1)
    ok[0] = False
    lut = np.where(ok, best, 0)
    out = lut[n].reshape(nuclei.shape)
    out[out != cells] = 0
    return out.astype(np.int32)


def border_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids of the objects that touch the image border.

    >>> border_ids(np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3]])).tolist()
    [1, 3]
    """
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.unique(edge[edge > 0])


def postprocess(
    cells: np.ndarray,
    nuclei: np.ndarray,
    min_cell_area: float,
    min_nucleus_area: float,
    keep_cells_without_nucleus: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Clean raw labels and number cells ``1..N``, nuclei with their cell's id.

    Nuclei must already carry their cell's id (see :func:`match_nuclei_to_cells`);
    nucleus pixels outside their cell are removed.

    Args:
        cells: ``(H, W)`` int raw cell labels.
        nuclei: ``(H, W)`` int nucleus labels in cell ids.
        min_cell_area: cells with fewer pixels are dropped.
        min_nucleus_area: nuclei with fewer pixels are dropped (their cell then has none).
        keep_cells_without_nucleus: keep (True) or drop (False) cells without a nucleus.

    Returns:
        ``(cells, nuclei)`` int32, consecutive ids, the same id for a cell and its nucleus.

    >>> c = np.array([[5, 5, 5, 0, 9, 9]]); n = np.array([[5, 0, 0, 0, 0, 0]])
    >>> [a.tolist() for a in postprocess(c, n, min_cell_area=2, min_nucleus_area=1)]
    [[[1, 1, 1, 0, 0, 0]], [[1, 0, 0, 0, 0, 0]]]
    >>> [a.tolist() for a in postprocess(c, n, 2, 1, keep_cells_without_nucleus=True)]
    [[[1, 1, 1, 0, 2, 2]], [[1, 0, 0, 0, 0, 0]]]
    """
    cells = cells.astype(np.int64, copy=False)
    nuclei = np.where(nuclei == cells, nuclei, 0).astype(np.int64)
    size = int(cells.max(initial=0)) + 1
    cell_area = np.bincount(cells.ravel(), minlength=size)
    nuc_area = np.bincount(nuclei.ravel(), minlength=size)
    has_nucleus = nuc_area >= max(min_nucleus_area, 1)
    keep = cell_area >= max(min_cell_area, 1)
    if not keep_cells_without_nucleus:
        keep &= has_nucleus
    keep[0] = False
    lut = np.zeros(size, np.int64)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    nuc_lut = np.where(has_nucleus, lut, 0)
    log.debug("postprocess: kept %d of %d cells", int(keep.sum()), int((cell_area[1:] > 0).sum()))
    return lut[cells].astype(np.int32), nuc_lut[nuclei].astype(np.int32)
