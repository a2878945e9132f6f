"""Display images: the HPA colour composite, a single-channel view, display resizing.

The composite follows the Human Protein Atlas convention: microtubules (red channel) in
red, the protein of interest (green) in green, the nucleus (blue) in blue, and the
endoplasmic reticulum (yellow) added half to red and half to green. Every channel is
contrast-stretched by its own percentiles first, so 8- and 16-bit inputs look alike.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np

from hpa.constants import CHANNELS
from hpa.io import percentile_stretch

#: Letter of each channel as used in ``channels="rgby"`` strings.
CHANNEL_LETTERS: Final = "rgby"
#: RGB weight of each channel in the composite, in :data:`hpa.constants.CHANNELS` order.
CHANNEL_COLOURS: Final = np.array(
    [
        [1.0, 0.0, 0.0],  # red: microtubules
        [0.0, 1.0, 0.0],  # green: protein of interest
        [0.0, 0.0, 1.0],  # blue: nucleus
        [0.5, 0.5, 0.0],  # yellow: endoplasmic reticulum, blended into red and green
    ],
    dtype=np.float32,
)
#: Percentiles of the contrast stretch (dark background, bright spots kept visible).
STRETCH_LOW: Final = 0.5
STRETCH_HIGH: Final = 99.8


def parse_channels(channels: str) -> list[int]:
    """Channel indices named by a string of channel letters.

    Args:
        channels: letters from ``"rgby"`` (red, green, blue, yellow), in any order,
            e.g. ``"rgby"``, ``"g"`` or ``"gb"``.

    Returns:
        Sorted indices into :data:`hpa.constants.CHANNELS`.

    Raises:
        ValueError: empty string or an unknown letter.

    >>> parse_channels("gb")
    [1, 2]
    """
    letters = channels.strip().lower()
    unknown = sorted(set(letters) - set(CHANNEL_LETTERS))
    if not letters or unknown:
        raise ValueError(
            f"--channels {channels!r}: use letters from 'rgby' ({', '.join(CHANNELS)}), e.g. 'rgby' or 'g'"
        )
    return sorted({CHANNEL_LETTERS.index(c) for c in letters})


def composite(image: np.ndarray, channels: str = "rgby") -> np.ndarray:
    """The standard HPA colour composite of a 4-channel sample.

    Each selected channel is stretched to [0, 1] between its 0.5th and 99.8th
    percentiles, coloured (red, green, blue; yellow as half red plus half green) and
    summed. A single selected channel is shown in grey, which shows faint structure
    best.

    Args:
        image: ``(H, W, 4)`` uint8 or uint16 array in red, green, blue, yellow order.
        channels: which channels enter the composite, letters from ``"rgby"``.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.

    >>> img = np.zeros((4, 4, 4), np.uint16); img[1, 1, 1] = 4000
    >>> composite(img)[1, 1].tolist(), composite(img, "g")[1, 1].tolist()
    ([0, 255, 0], [255, 255, 255])
    """
    if image.ndim != 3 or image.shape[-1] != len(CHANNELS):
        raise ValueError(f"composite takes an (H, W, 4) image, got shape {image.shape}")
    picked = parse_channels(channels)
    stretched = percentile_stretch(image[..., picked], STRETCH_LOW, STRETCH_HIGH)
    if len(picked) == 1:
        rgb = np.repeat(stretched, 3, axis=-1)
    else:
        rgb = stretched @ CHANNEL_COLOURS[picked]
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def grey_panel(channel: np.ndarray) -> np.ndarray:
    """One channel, contrast-stretched, as a grey RGB image.

    Args:
        channel: ``(H, W)`` uint8 or uint16 array.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    stretched = percentile_stretch(channel, STRETCH_LOW, STRETCH_HIGH)
    grey = np.round(stretched * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def display_shape(height: int, width: int, max_side: int = 1024, min_side: int = 0) -> tuple[int, int]:
    """Size at which to draw an image: shrunk to ``max_side``, enlarged to ``min_side``.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        max_side: longest side of the result at most (large 2048-3072 px images).
        min_side: longest side at least (tiny images, so that labels fit), capped at
            ``max_side``; 0 = never enlarge.

    Returns:
        ``(height, width)`` of the display image, aspect ratio kept.

    >>> display_shape(3072, 3072), display_shape(256, 128, min_side=512)
    ((1024, 1024), (512, 256))
    """
    longest = max(height, width)
    scale = min(1.0, max_side / longest)
    min_side = min(min_side, max_side)
    if min_side and longest * scale < min_side:
        scale = min_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an image (any channel count, uint8/uint16) to ``shape`` = ``(h, w)``.

    Shrinking averages pixels (``INTER_AREA``); enlarging interpolates linearly.
    """
    if image.shape[:2] == tuple(shape):
        return image
    shrink = shape[0] < image.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    if image.ndim == 3 and image.shape[-1] > 4:
        planes = [
            cv2.resize(image[..., c], (shape[1], shape[0]), interpolation=interp)
            for c in range(image.shape[-1])
        ]
        return np.stack(planes, axis=-1)
    out = cv2.resize(image, (shape[1], shape[0]), interpolation=interp)
    return out.reshape((*shape, *image.shape[2:]))


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an instance label image nearest-neighbour, keeping the label values.

    Args:
        labels: ``(H, W)`` integer label image (0 = background, values below 65536).
        shape: ``(h, w)`` of the result.

    Returns:
        ``(h, w)`` int32 label image.
    """
    if labels.shape == tuple(shape):
        return labels.astype(np.int32, copy=False)
    if labels.size and int(labels.max()) > np.iinfo(np.uint16).max:
        raise ValueError(f"label image has {int(labels.max())} labels; at most 65535 are supported")
    small = cv2.resize(labels.astype(np.uint16), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
    return small.astype(np.int32)
