"""One cell cut out of an image: its crops, masks and reference length.

Every localisation feature of :mod:`hpa.features` is computed on a :class:`CellView`:
the cell's bounding box (plus a one-pixel margin) cut from the four stains and the two
label images, so a 2048 px image costs what its cells cost, not what its pixels cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi

from hpa.constants import BLUE, GREEN, RED, YELLOW

#: Below this many pixels a nucleus is treated as absent (a sliver left by a neighbour).
MIN_NUCLEUS_PX = 9


@dataclass(frozen=True)
class CellView:
    """The crops of one cell.

    Attributes:
        cell_id: the cell's label.
        raw: ``(h, w, 4)`` uint8/uint16 crop of the image, channels in
            :data:`hpa.constants.CHANNELS` order.
        cell: ``(h, w)`` bool, the cell's pixels.
        nucleus: ``(h, w)`` bool, its nucleus's pixels (inside ``cell``; may be empty).
    """

    cell_id: int
    raw: np.ndarray
    cell: np.ndarray
    nucleus: np.ndarray

    def stain(self, channel: int) -> np.ndarray:
        """The ``(h, w)`` float64 crop of one channel (``hpa.constants.RED`` etc.)."""
        return self.raw[..., channel].astype(np.float64)

    @cached_property
    def protein(self) -> np.ndarray:
        """The green (protein) crop, float64."""
        return self.stain(GREEN)

    @property
    def references(self) -> dict[str, np.ndarray]:
        """The three reference stains by feature name: nucleus, microtubules, ER."""
        return {"nucleus": self.stain(BLUE), "microtubules": self.stain(RED), "er": self.stain(YELLOW)}

    @cached_property
    def area(self) -> int:
        """The cell's area in pixels."""
        return int(self.cell.sum())

    @cached_property
    def has_nucleus(self) -> bool:
        """True when the nucleus has at least :data:`MIN_NUCLEUS_PX` pixels."""
        return int(self.nucleus.sum()) >= MIN_NUCLEUS_PX

    @cached_property
    def ref(self) -> float:
        """The reference length in pixels that scales bands, discs and distances.

        The nucleus's equivalent diameter (about 40-70 px in a 512 px HPA image), or half
        the cell's when the cell has no nucleus; so the features mean the same at 512 and
        at 2048 px.
        """
        if self.has_nucleus:
            return float(np.sqrt(4.0 * self.nucleus.sum() / np.pi))
        return 0.5 * float(np.sqrt(4.0 * max(self.area, 1) / np.pi))

    @cached_property
    def dist_to_edge(self) -> np.ndarray:
        """``(h, w)`` Euclidean distance of each cell pixel to the nearest pixel outside it (1 on the rim)."""
        return np.asarray(ndi.distance_transform_edt(np.pad(self.cell, 1)))[1:-1, 1:-1]

    @cached_property
    def centre(self) -> tuple[float, float]:
        """``(y, x)``: the nucleus's centroid, else the cell's."""
        mask = self.nucleus if self.has_nucleus else self.cell
        ys, xs = np.nonzero(mask)
        return float(ys.mean()), float(xs.mean())


def cell_views(image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray) -> list[CellView]:
    """Cut every cell of an image, in ascending id order.

    Args:
        image: ``(H, W, 4)`` uint8/uint16 image, channels in ``CHANNELS`` order.
        cells: ``(H, W)`` integer cell labels, 0 = background.
        nuclei: ``(H, W)`` integer nucleus labels, a nucleus carrying its cell's id.

    Returns:
        One view per cell id present.
    """
    h, w = cells.shape
    views = []
    for index, box in enumerate(ndi.find_objects(cells)):
        if box is None:
            continue
        cell_id = index + 1
        ys, xs = box
        crop = (
            slice(max(ys.start - 1, 0), min(ys.stop + 1, h)),
            slice(max(xs.start - 1, 0), min(xs.stop + 1, w)),
        )
        cell = cells[crop] == cell_id
        views.append(CellView(cell_id, image[crop], cell, (nuclei[crop] == cell_id) & cell))
    return views
