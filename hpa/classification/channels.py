"""Input channels of the classifier: a choice or a merge of the four stains.

Views are always cut with the four channels of :data:`hpa.constants.CHANNELS`; the
network's inputs are made from them by a ``(C, 4)`` mixing matrix, applied to the
[0, 1]-scaled views before normalisation. Each input channel is one stain or the mean
of several: ``--channels rgby`` (all four, the default), ``rgb``, ``gby`` or
``g,b,r+y`` (green, blue, and the mean of red and yellow as one channel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpa.constants import CHANNELS
from hpa.errors import HPAConfigError

_LETTERS = {c[0]: c for c in CHANNELS}


def parse_channels(spec: str) -> tuple[str, ...]:
    """Input channels of a ``--channels`` value, as stain names (``"red+yellow"`` for a merge).

    Args:
        spec: letters (``"rgby"``, ``"gby"``), or comma-separated items of letters or
            names joined by ``+`` (``"g,b,r+y"``, ``"green,blue,red+yellow"``).

    Raises:
        HPAConfigError: an unknown stain, an empty item, or a stain used twice.

    >>> parse_channels("g,b,r+y")
    ('green', 'blue', 'red+yellow')
    >>> parse_channels("rgb")
    ('red', 'green', 'blue')
    >>> parse_channels("green"), parse_channels("g")
    (('green',), ('green',))
    """
    text = spec.strip().lower()
    whole_names = "," in text or "+" in text or text in CHANNELS
    items = text.split(",") if whole_names else list(text)
    out: list[str] = []
    used: list[str] = []
    for item in items:
        parts = [p.strip() for p in item.split("+")]
        names = []
        for part in parts:
            name = _LETTERS.get(part, part)
            if name not in CHANNELS:
                raise HPAConfigError(
                    f"--channels {spec!r}: unknown channel {part!r} (use r, g, b, y or "
                    f"{', '.join(CHANNELS)}; merge with +, separate with commas)"
                )
            names.append(name)
        used += names
        out.append("+".join(names))
    if not out:
        raise HPAConfigError("--channels is empty")
    repeated = sorted({n for n in used if used.count(n) > 1})
    if repeated:
        raise HPAConfigError(f"--channels {spec!r}: {', '.join(repeated)} used more than once")
    return tuple(out)


def channel_matrix(channels: Sequence[str]) -> np.ndarray:
    """The ``(C, 4)`` float32 matrix making input channels from the four stains.

    Row ``i`` averages the stains named in ``channels[i]`` (``"red+yellow"`` gives 0.5
    on red and yellow).

    >>> channel_matrix(("green", "red+yellow")).tolist()
    [[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.5]]
    """
    mix = np.zeros((len(channels), len(CHANNELS)), np.float32)
    for i, item in enumerate(channels):
        names = item.split("+")
        for name in names:
            if name not in CHANNELS:
                raise HPAConfigError(f"unknown channel {name!r} in {item!r}")
            mix[i, CHANNELS.index(name)] = 1.0 / len(names)
    return mix


def is_identity(channels: Sequence[str]) -> bool:
    """Whether ``channels`` are the four stains in their canonical order (no mixing needed)."""
    return tuple(channels) == CHANNELS
