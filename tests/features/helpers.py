"""Constructed cells whose features are known: a round cell with a round nucleus."""

from __future__ import annotations

import numpy as np

SIZE = 128
CENTRE = 64
CELL_R = 50
NUCLEUS_R = 20


def radius_map() -> np.ndarray:
    """``(SIZE, SIZE)`` distance of each pixel to the centre."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.hypot(yy - CENTRE, xx - CENTRE)


def round_cell(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, cells, nuclei)``: one cell (id 1), its nucleus, textured stains, no protein yet.

    The image is uint16; blue fills the nucleus, red and yellow fill the cell with
    independent noise; green is 0 (the tests draw it).
    """
    rng = np.random.default_rng(seed)
    r = radius_map()
    cells = (r <= CELL_R).astype(np.uint16)
    nuclei = (r <= NUCLEUS_R).astype(np.uint16)
    image = np.zeros((SIZE, SIZE, 4), np.uint16)
    image[..., 2] = np.where(nuclei > 0, 2000, 20) + rng.integers(0, 100, (SIZE, SIZE))
    for channel in (0, 3):
        image[..., channel] = np.where(cells > 0, 500 + rng.integers(0, 400, (SIZE, SIZE)), 0)
    return image, cells, nuclei


def noise(seed: int, low: int = 0, high: int = 20) -> np.ndarray:
    """``(SIZE, SIZE)`` integer noise."""
    return np.random.default_rng(seed).integers(low, high, (SIZE, SIZE))
