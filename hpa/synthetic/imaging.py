"""Acquisition: from float signal maps to camera counts.

A confocal/widefield image is the specimen seen through uneven illumination and the
optics' blur, with debris on the coverslip, then digitised by a camera with an offset,
photon (shot) noise and read noise. 8-bit output uses the Kaggle 2018 range (background
near 0–4, the brightest structures at 150–255); 16-bit output uses about 12 bits
(offset near 100, bright structures at 2,000–4,000), as a raw HPA camera file does.

Each channel's gain and noise come from its own generator, so the reference channels
never depend on the green channel's content.
"""

from __future__ import annotations

import cv2
import numpy as np

from hpa.synthetic.layout import smooth_noise

#: ``(offset, full scale, read noise)`` in counts, per bit depth.
_CAMERA = {8: (1.5, 255.0, 1.2), 16: (100.0, 4095.0, 9.0)}


def illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth multiplicative illumination field: a tilted vignette, 0.7–1.0.

    Returns:
        ``(size, size)`` float32.
    """
    n = 64
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n - 0.5
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    vignette = 1.0 - rng.uniform(0.0, 0.5) * ((xx - cx) ** 2 + (yy - cy) ** 2)
    gx, gy = rng.uniform(-0.12, 0.12, 2)
    field_ = vignette * (1.0 + gx * xx + gy * yy) * (1.0 + 0.04 * smooth_noise(rng, (n, n), n / 4))
    field_ = cv2.resize(
        (field_ / field_.max()).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR
    )
    return field_


def add_debris(rng: np.random.Generator, signals: np.ndarray, scale: float) -> None:
    """Add 0–3 bright autofluorescent specks, in every channel, to ``signals`` in place.

    Args:
        rng: random generator.
        signals: ``(H, W, C)`` float32 signal maps.
        scale: image size / 512.
    """
    n = int(rng.choice([0, 0, 0, 1, 1, 2, 3]))
    size = signals.shape[0]
    for _ in range(n):
        speck = np.zeros((size, size), np.float32)
        x, y = rng.uniform(0, size, 2)
        axes = (max(1, round(rng.uniform(1.5, 5) * scale)), max(1, round(rng.uniform(1.5, 4) * scale)))
        cv2.ellipse(speck, (round(x), round(y)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        speck = np.asarray(cv2.GaussianBlur(speck, (0, 0), scale), np.float32)
        weights = rng.uniform(0.3, 1.0, signals.shape[2]) * rng.uniform(1.0, 3.0)
        signals += speck[..., None] * weights.astype(np.float32)


def acquire(
    signals: np.ndarray,
    rng: np.random.Generator,
    channel_rngs: list[np.random.Generator],
    bit_depth: int = 8,
) -> np.ndarray:
    """Turn signal maps into a camera image.

    Shared by all channels (from ``rng``): illumination, out-of-focus blur (about one
    image in five), debris. Per channel (from ``channel_rngs[c]``): exposure (the
    brightest 0.1% of pixels land at 55–95% of full scale), shot and read noise, offset.

    Args:
        signals: ``(H, W, C)`` float32 signal maps (C = 4, red, green, blue, yellow).
        rng: generator for the shared effects.
        channel_rngs: one generator per channel.
        bit_depth: 8 or 16.

    Returns:
        ``(H, W, C)`` uint8 (8-bit) or uint16 (16-bit, about 12 bits used).
    """
    if bit_depth not in _CAMERA:
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    size = signals.shape[0]
    scale = size / 512.0
    signals = (signals * illumination(rng, size)[..., None]).astype(np.float32)
    psf = 0.5 * scale
    if rng.random() < 0.2:  # out of focus
        psf = rng.uniform(1.0, 2.5) * scale
    add_debris(rng, signals, scale)
    offset, full, read = _CAMERA[bit_depth]
    out = np.empty(signals.shape, np.uint16 if bit_depth == 16 else np.uint8)
    for c in range(signals.shape[2]):
        crng = channel_rngs[c]
        chan = cv2.GaussianBlur(signals[..., c], (0, 0), psf)
        step = max(1, size // 256)
        top = float(np.percentile(chan[::step, ::step], 99.9))
        gain = crng.uniform(0.55, 0.95) * (full - offset) / max(top, 1e-6)
        counts = chan * np.float32(gain)
        # Shot noise (variance proportional to the signal, a few photons per count) and
        # read noise, drawn together as one Gaussian of the summed variance.
        photons_per_count = crng.uniform(1.5, 4.0)
        sd = cv2.sqrt(np.maximum(counts, 0.0) * np.float32(1.0 / photons_per_count) + np.float32(read**2))
        counts += crng.standard_normal(chan.shape, dtype=np.float32) * sd + np.float32(offset + 0.5)
        np.clip(counts, 0, full if bit_depth == 8 else 65535, out=counts)
        out[..., c] = counts  # truncation after +0.5: rounding
    return out
