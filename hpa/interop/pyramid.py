"""Resolution pyramids for the exports that viewers open zoomed out (OME-Zarr, OME-TIFF).

Each level halves the one above it in y and x (size ``ceil(n / 2)``): an image by the mean
of 2x2 blocks (the last row or column repeated where a side is odd), a label image by
taking every second pixel (nearest neighbour: ids stay ids, no new values). Levels stop
where the smaller side would drop under :data:`SMALLEST_SIDE` px, at :data:`MOST_LEVELS`.
"""

from __future__ import annotations

import numpy as np

#: The smallest side a level may have (px).
SMALLEST_SIDE = 64
#: The most levels of a pyramid, the full resolution included.
MOST_LEVELS = 4


def level_count(shape_hw: tuple[int, ...], smallest: int = SMALLEST_SIDE, most: int = MOST_LEVELS) -> int:
    """Levels of the pyramid of an image of ``shape_hw`` (``(H, W)``), at least 1.

    >>> level_count((512, 512)), level_count((128, 200)), level_count((100, 100)), level_count((4096, 4096))
    (4, 2, 1, 4)
    """
    n, side = 1, min(shape_hw[:2])
    while n < most and -(-side // 2) >= smallest:
        side = -(-side // 2)
        n += 1
    return n


def halve_mean(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, ...)`` image at half resolution by 2x2 block means, in its own dtype.

    >>> halve_mean(np.array([[0, 2, 4], [2, 4, 4]], np.uint8)).tolist()
    [[2, 4]]
    """
    h, w = image.shape[:2]
    pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge").astype(np.float64)
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, *image.shape[2:])
    mean = blocks.mean(axis=(1, 3))
    if np.issubdtype(image.dtype, np.integer):
        return np.rint(mean).astype(image.dtype)
    return mean.astype(image.dtype)


def image_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` arrays: ``image`` (``(H, W, ...)``), then each half of the one before."""
    out = [image]
    for _ in range(levels - 1):
        out.append(halve_mean(out[-1]))
    return out


def label_pyramid(labels: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels`` label images: ``labels`` (``(H, W)``), then every ``2**k``-th pixel of it."""
    return [labels[:: 2**k, :: 2**k] for k in range(levels)]
