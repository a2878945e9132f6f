"""Synthetic samples drawn in code: a grid of round cells, each with a round nucleus."""

from __future__ import annotations

import numpy as np


def disc_sample(size: int = 256, grid: int = 3, seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    """``(size, size, 4)`` sample: ``grid x grid`` cells (red/yellow discs) with nuclei (blue).

    Radii scale with ``size``; noise is added, so thresholds are exercised for real.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    step = size / grid
    r_cell, r_nuc = 0.38 * step, 0.16 * step
    image = np.zeros((size, size, 4), np.float64)
    for i in range(grid):
        for j in range(grid):
            cy, cx = (i + 0.5) * step, (j + 0.5) * step
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            cell = d2 <= r_cell**2
            image[..., 0] += 120 * cell
            image[..., 3] += 90 * cell
            image[..., 2] += 200 * (d2 <= r_nuc**2)
            image[..., 1] += 150 * (d2 <= (0.3 * step) ** 2)
    image += rng.normal(0, 6, image.shape)
    image = np.clip(image + 10, 0, 255).astype(np.uint8)
    if dtype == np.uint16:
        return image.astype(np.uint16) * 257
    return image
