"""Cell crops and whole-image tiles: the classifier's two kinds of input.

Both are square ``(S, S, 4)`` views with the image's dtype, so one network reads both:

* a **cell crop** is the square around a cell's bounding box, widened by a margin and
  resized to ``S``; pixels outside the cell's own mask can be blanked. With
  ``scale="image"`` every crop of an image has the same side (the image's 75th
  percentile cell size), so a structure keeps its size in pixels from cell to cell, as
  it does under the microscope: size then tells a large perinuclear blob (MTOC,
  aggresome) from a small one (centrosome), whatever the size of the cell;
* **tiles** are multi-resolution views of the whole image: for each grid size ``g`` in
  ``tile_grids`` the image is cut into ``g x g`` tiles, each resized to ``S`` (``g = 1``
  is the whole image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

#: Crop window choices (:attr:`CropSettings.scale`).
CROP_SCALES = ("box", "image")


@dataclass(frozen=True)
class CropSettings:
    """How views are cut from an image.

    Attributes:
        crop_size: side of every crop and tile, pixels.
        margin: fraction of the bounding box's longer side added on each side.
        mask_outside: blank the pixels of a cell crop that are not the cell's own.
        tile_grids: tile grid sizes; ``(1, 2)`` gives the whole image and a 2x2 grid.
        scale: ``"box"``: each crop's window follows its cell's box; ``"image"``: one
            window side per image, the 75th percentile of its cells' box sides (plus the
            margin), centred on each cell (a larger cell is cut at the window's edge).
        image_scale: before cutting, stretch each channel of the image so that its
            99.5th percentile reaches the dtype's maximum (:func:`scale_image`): every
            view of an image then shares one exposure, and a cell without the protein
            stays dark beside one with it.
    """

    crop_size: int = 64
    margin: float = 0.1
    mask_outside: bool = False
    tile_grids: tuple[int, ...] = (1, 2)
    scale: str = "box"
    image_scale: bool = False

    def __post_init__(self) -> None:
        if self.scale not in CROP_SCALES:
            raise ValueError(f"crop scale must be one of {', '.join(CROP_SCALES)}, got {self.scale!r}")

    @property
    def tiles_per_image(self) -> int:
        return sum(g * g for g in self.tile_grids)


def cell_boxes(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids and bounding boxes of the cells of a label image.

    Args:
        cells: ``(H, W)`` integer instance labels, 0 = background.

    Returns:
        ``(ids, boxes)``: ``(N,)`` int64 cell ids ascending and ``(N, 4)`` int64
        boxes ``(y0, x0, y1, x1)`` with exclusive ends, as scikit-image's ``bbox``.

    >>> ids, boxes = cell_boxes(np.array([[0, 2], [2, 2]]))
    >>> ids.tolist(), boxes.tolist()
    ([2], [[0, 0, 2, 2]])
    """
    slices = ndi.find_objects(cells)
    ids, boxes = [], []
    for k, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        ids.append(k)
        boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
    return np.asarray(ids, dtype=np.int64), np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def _square_window(box: Sequence[int], margin: float, side: float | None = None) -> tuple[int, int, int]:
    """Top-left corner and side of the square window around a box (``side``: a fixed one)."""
    y0, x0, y1, x1 = (int(v) for v in box)
    if side is None:
        side = max(y1 - y0, x1 - x0)
    side = round(side * (1.0 + 2.0 * margin)) or 1
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return round(cy - side / 2.0), round(cx - side / 2.0), side


def _cut(array: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """``array[top:top+side, left:left+side]`` padded with zeros where it leaves the image."""
    h, w = array.shape[:2]
    out = np.zeros((side, side, *array.shape[2:]), dtype=array.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, h), min(left + side, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return out


def resize(view: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(h, w, C)`` view to ``(size, size, C)``: area averaging down, linear up."""
    if view.shape[0] == size and view.shape[1] == size:
        return view
    interp = cv2.INTER_AREA if view.shape[0] > size else cv2.INTER_LINEAR
    out = cv2.resize(view, (size, size), interpolation=interp)
    return out.reshape(size, size, view.shape[2])


#: Quantile of an image's channel that :func:`scale_image` maps to the dtype's maximum.
IMAGE_QUANTILE = 99.5


def scale_image(image: np.ndarray) -> np.ndarray:
    """Stretch each channel of an ``(H, W, C)`` integer image by its own bright end.

    A channel is divided by its 99.5th percentile plus 1/255 of the dtype's range (so an
    empty channel stays near black), mapped to the dtype's maximum and clipped.

    >>> img = np.zeros((10, 10, 2), np.uint8); img[:5, :, 0] = 20; img[:, :, 1] = 200
    >>> scale_image(img)[0, 0].tolist(), scale_image(img)[9, 0].tolist()
    ([243, 254], [0, 254])
    """
    top = float(np.iinfo(image.dtype).max)
    bright = np.percentile(image.reshape(-1, image.shape[-1]), IMAGE_QUANTILE, axis=0)
    factor = (top / (bright + top / 255.0)).astype(np.float32)
    return np.clip(np.rint(image * factor), 0, top).astype(image.dtype)


def crop_cells(
    image: np.ndarray,
    cells: np.ndarray,
    ids: np.ndarray,
    boxes: np.ndarray,
    settings: CropSettings,
) -> np.ndarray:
    """Square crops around cells.

    Args:
        image: ``(H, W, 4)`` uint8/uint16 sample.
        cells: ``(H, W)`` integer cell labels.
        ids: ``(N,)`` cell ids to crop.
        boxes: ``(N, 4)`` boxes ``(y0, x0, y1, x1)`` of those cells (with
            ``scale="image"``, all the image's cells: they set the window side).
        settings: crop size, margin, masking and scale.

    Returns:
        ``(N, S, S, 4)`` crops with the image's dtype.
    """
    size = settings.crop_size
    out = np.zeros((len(ids), size, size, image.shape[2]), dtype=image.dtype)
    fixed = None
    if settings.scale == "image" and len(boxes):
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        fixed = float(np.percentile(sides, 75))
    for n, (cid, box) in enumerate(zip(ids, boxes, strict=True)):
        top, left, side = _square_window(box, settings.margin, fixed)
        view = _cut(image, top, left, side)
        if settings.mask_outside:
            own = _cut(cells, top, left, side) == cid
            view = view * own[..., None].astype(view.dtype)
        out[n] = resize(view, size)
    return out


def image_tiles(image: np.ndarray, settings: CropSettings) -> np.ndarray:
    """Multi-resolution tiles of a whole image.

    Args:
        image: ``(H, W, 4)`` sample.
        settings: crop size and tile grids.

    Returns:
        ``(T, S, S, 4)`` tiles, ``T = settings.tiles_per_image``, grid by grid, row-major.
    """
    size = settings.crop_size
    h, w = image.shape[:2]
    tiles = []
    for g in settings.tile_grids:
        ys = np.linspace(0, h, g + 1).round().astype(int)
        xs = np.linspace(0, w, g + 1).round().astype(int)
        for i in range(g):
            for j in range(g):
                tiles.append(resize(image[ys[i] : ys[i + 1], xs[j] : xs[j + 1]], size))
    return np.stack(tiles).astype(image.dtype, copy=False)
