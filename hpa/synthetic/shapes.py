"""Drawing primitives for the green patterns: a per-cell view and spots, rings, dashes.

Every primitive draws into a float32 patch over one cell's bounding box, with points in
box ``(x, y)`` coordinates; lines and circles use OpenCV's fixed-point coordinates
(``shift=4``) for sub-pixel placement and are softened by a Gaussian to mimic the optics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from hpa.synthetic.layout import Cell, Layout
from hpa.synthetic.reference import Reference


@dataclass(frozen=True)
class CellView:
    """One cell seen through its bounding box.

    Attributes:
        cell: the cell's geometry.
        own: ``(h, w)`` bool, the cell's pixels.
        nuc: ``(h, w)`` bool, its nucleus.
        cyto: ``(h, w)`` bool, its cytoplasm.
        rho: ``(h, w)`` float32 radial position in the cytoplasm (0 nucleus, 1 edge).
        origin: ``(x0, y0)`` of the box in the image.
        s: image size / 512.
    """

    cell: Cell
    own: np.ndarray
    nuc: np.ndarray
    cyto: np.ndarray
    rho: np.ndarray
    origin: tuple[int, int]
    s: float

    @classmethod
    def of(cls, layout: Layout, cell: Cell) -> CellView:
        """The view of ``cell`` in ``layout``."""
        sl = cell.slices
        own = layout.cells[sl] == cell.id
        nuc = layout.nuclei[sl] == cell.id
        return cls(cell, own, nuc, own & ~nuc, layout.rho[sl], (sl[1].start, sl[0].start), layout.scale)

    def local(self, xy: tuple[float, float] | np.ndarray) -> np.ndarray:
        """Image ``(x, y)`` to box coordinates."""
        return np.asarray(xy, np.float64) - self.origin

    def blank(self) -> np.ndarray:
        """A zero float32 patch over the box."""
        return np.zeros(self.own.shape, np.float32)


Pattern = Callable[[CellView, Layout, Reference, np.random.Generator], np.ndarray]


# ------------------------------------------------------------------- helpers ---


def sample_points(
    region: np.ndarray, n: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """``n`` random ``(x, y)`` points (with sub-pixel jitter) in a boolean region.

    Args:
        region: ``(h, w)`` bool mask.
        n: number of points.
        rng: random generator.
        weights: optional ``(h, w)`` non-negative sampling weights.

    Returns:
        ``(n, 2)`` float array, or ``(0, 2)`` if the region is empty.
    """
    idx = np.flatnonzero(region)
    if idx.size == 0 or n <= 0:
        return np.zeros((0, 2))
    p = None
    if weights is not None:
        w = weights.ravel()[idx].astype(np.float64) + 1e-9
        p = w / w.sum()
    pick = rng.choice(idx, size=n, p=p)
    ys, xs = np.divmod(pick, region.shape[1])
    return np.stack([xs, ys], 1) + rng.uniform(-0.5, 0.5, (n, 2))


def spots(
    shape: tuple[int, ...], pts: np.ndarray, sigma: float, amps: np.ndarray | float = 1.0
) -> np.ndarray:
    """Gaussian spots of peak ``amps`` and width ``sigma`` at ``pts`` (``(n, 2)`` x, y)."""
    out = np.zeros(shape, np.float32)
    if len(pts) == 0:
        return out
    xy = np.round(pts).astype(int)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < shape[0])
    a = np.broadcast_to(np.asarray(amps, np.float32), (len(pts),))[ok]
    np.add.at(out, (xy[ok, 1], xy[ok, 0]), a * 2 * np.pi * sigma**2)
    return cv2.GaussianBlur(out, (0, 0), sigma)


def rings(shape: tuple[int, ...], pts: np.ndarray, radii: np.ndarray, width: float, s: float) -> np.ndarray:
    """Hollow circles (vesicle membranes) of the given radii, softened by the optics."""
    out = np.zeros(shape, np.float32)
    for (x, y), r in zip(pts, radii, strict=True):
        cv2.circle(
            out, (round(x * 16), round(y * 16)), round(r * 16), 1.0, max(1, round(width)), cv2.LINE_8, 4
        )
    return cv2.GaussianBlur(out, (0, 0), 0.6 * s)


def segments(
    shape: tuple[int, ...], pts: np.ndarray, angles: np.ndarray, length: np.ndarray, width: float
) -> np.ndarray:
    """Straight dashes centred at ``pts`` with the given headings and lengths."""
    out = np.zeros(shape, np.float32)
    d = np.stack([np.cos(angles), np.sin(angles)], 1) * (np.asarray(length)[:, None] / 2)
    for p, q in zip(pts - d, pts + d, strict=True):
        cv2.line(out, (round(p[0] * 16), round(p[1] * 16)), (round(q[0] * 16), round(q[1] * 16)), 1.0,
                 max(1, round(width)), cv2.LINE_8, 4)  # fmt: skip
    return out


def outline_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of each pixel of ``mask`` to its outline (1 on the outline), float32."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]


def count(view: CellView, per_cell_at_60px: float) -> int:
    """A count scaled by cell size: ``per_cell_at_60px`` for a cell of radius 60 px at 512."""
    return max(1, round(per_cell_at_60px * view.cell.radius / (60 * view.s)))
