"""Cell masks as the 2021 competition encodes them: COCO compressed RLE, zlib, base64.

A mask is encoded at the image's full resolution. pycocotools does the run-length
compression; the runs of a cell are taken from its bounding box only (a cell's runs
outside its box are background), so encoding every cell of a 2048 px image costs
about one pass over the image rather than one pass per cell. zlib runs at its best
compression level, as the competition's own encoder did (its strings start ``eNo``).

Example:
    >>> import numpy as np
    >>> mask = np.zeros((4, 5), dtype=bool)
    >>> mask[1:3, 2:4] = True
    >>> text = encode_mask(mask)
    >>> bool((decode_mask(text, 4, 5) == mask).all())
    True
"""

from __future__ import annotations

import base64
import binascii
import zlib

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage

from hpa.errors import HPADataError


def _compress(counts: list[int], height: int, width: int) -> str:
    """Uncompressed column-major run lengths -> base64(zlib(COCO compressed RLE))."""
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return base64.b64encode(zlib.compress(rle["counts"], zlib.Z_BEST_COMPRESSION)).decode("ascii")


def _box_runs(box: np.ndarray, y0: int, x0: int, height: int, width: int) -> list[int]:
    """Column-major run lengths of a ``(height, width)`` mask that is zero outside a box.

    Args:
        box: ``(h, w)`` bool, the mask inside the box whose top-left pixel is ``(y0, x0)``.

    Returns:
        COCO's uncompressed counts: alternating runs of 0 and 1, starting with 0.
    """
    h = box.shape[0]
    padded = np.zeros((h + 2, box.shape[1]), dtype=np.int8)
    padded[1:-1] = box
    flat = padded.ravel(order="F")
    change = np.diff(flat)
    starts = np.flatnonzero(change == 1) + 1  # first pixel of a run, padded index
    ends = np.flatnonzero(change == -1) + 1  # one past its last pixel

    def to_image(p: np.ndarray) -> np.ndarray:
        col, row = np.divmod(p, h + 2)
        return (col + x0) * height + (row - 1 + y0)

    s, e = to_image(starts), to_image(ends - 1) + 1
    # a cell spanning the full height may run on from one column into the next
    keep_s = np.ones(len(s), dtype=bool)
    keep_e = np.ones(len(e), dtype=bool)
    joined = e[:-1] == s[1:]
    keep_e[:-1] &= ~joined
    keep_s[1:] &= ~joined
    bounds = np.empty(2 * int(keep_s.sum()) + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = s[keep_s], e[keep_e]
    if len(bounds) > 2 and bounds[-2] == bounds[-1]:
        # the last run of ones reaches the image's last pixel: COCO ends there, with
        # no zero-length run of background after it
        bounds = bounds[:-1]
    return np.diff(bounds).tolist()


def encode_mask(mask: np.ndarray) -> str:
    """Encode one binary mask as the competition's ``base64(zlib(COCO RLE))`` string.

    Args:
        mask: ``(H, W)`` array, non-zero = inside.

    Returns:
        An ASCII string; an empty mask gives the competition's empty string for
        that size (``eNoLCAgIMAEABJkBdQ==`` at 2048 px).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    height, width = mask.shape
    return _compress(_box_runs(mask != 0, 0, 0, height, width), height, width)


def encode_cells(labels: np.ndarray, cell_ids: list[int] | None = None) -> dict[int, str]:
    """Encode every cell of an instance label image.

    Args:
        labels: ``(H, W)`` integer instance labels, 0 = background.
        cell_ids: the cells to encode (default: every label present). A requested id
            absent from ``labels`` is encoded as an empty mask.

    Returns:
        ``cell_id -> string``, each the cell's mask at the full ``(H, W)`` resolution.

    Example:
        >>> labels = np.array([[0, 1, 1], [2, 2, 0]])
        >>> strings = encode_cells(labels)
        >>> sorted(strings) == [1, 2] and bool((decode_mask(strings[2], 2, 3) == (labels == 2)).all())
        True
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    height, width = labels.shape
    present = [int(k) for k in np.unique(labels) if k != 0]
    wanted = present if cell_ids is None else [int(k) for k in cell_ids]
    objects = ndimage.find_objects(labels.astype(np.int64, copy=False)) if present else []
    out: dict[int, str] = {}
    for k in wanted:
        box = objects[k - 1] if 0 < k <= len(objects) else None
        if box is None:
            out[k] = _compress([height * width], height, width)
            continue
        rows, cols = box
        runs = _box_runs(labels[box] == k, int(rows.start), int(cols.start), height, width)
        out[k] = _compress(runs, height, width)
    return out


def decode_mask(text: str, height: int, width: int) -> np.ndarray:
    """Decode a competition mask string back to an ``(height, width)`` bool array.

    Raises:
        HPADataError: the string is not base64, not zlib data, or not a COCO RLE of
            that size.
    """
    try:
        counts = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (binascii.Error, zlib.error, UnicodeEncodeError, ValueError) as exc:
        raise HPADataError(f"mask {text[:24]!r}...: not base64(zlib(RLE)): {exc}") from None
    rle = {"size": [int(height), int(width)], "counts": counts}
    try:
        area = int(coco_mask.area(rle))
        mask = coco_mask.decode(rle)
    except (TypeError, ValueError) as exc:
        raise HPADataError(f"mask {text[:24]!r}...: not a COCO RLE: {exc}") from None
    if area > height * width:
        raise HPADataError(f"mask {text[:24]!r}...: RLE covers {area} pixels, more than {height}x{width}")
    return mask.astype(bool)
