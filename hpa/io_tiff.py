"""One file per sample: multi-channel TIFF and OME-TIFF, mapped to red/green/blue/yellow.

Microscopes and Fiji save a sample as one multi-channel file, ``<Id>.tif``, ``<Id>.tiff``,
``<Id>.ome.tif`` or ``<Id>.ome.tiff``, with the channels first (``CYX``) or last
(``YXC``, interleaved samples), 8 or 16 bit. A :class:`ChannelMap` says which channel is
which stain, by index or by OME channel name::

    microtubules=0,protein=1,nucleus=2,er=3
    microtubules=Tubulin,protein=GFP,nucleus=DAPI,er=Calreticulin

Keys are the stains (``microtubules``, ``protein``, ``nucleus``, ``er``) or their HPA
colours (``red``, ``green``, ``blue``, ``yellow``). Without a map, an OME-TIFF whose
channel names are all known stains (:data:`KNOWN_STAIN_NAMES`: DAPI, Tubulin, GFP,
Calreticulin, ...) is read by those names; otherwise a 4-channel file is read in red,
green, blue, yellow order and a 3-channel file as red, green, blue (with a warning
when its channels carry other names).

A file without an ER channel (3 channels, or a map without ``er``/with ``er=none``)
gives a yellow channel of zeros: segmentation then finds cell bodies from the
microtubules alone, and a classifier trained on 4-channel HPA images sees no ER signal,
so train and predict on files of the same kind.

:func:`hpa.io.read_sample` and :func:`hpa.io.list_image_ids` call this module for
folders of such files; per-channel files (``<Id>_red.png`` ...) are read by
:mod:`hpa.io` itself and take no channel map.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpa.constants import CHANNELS
from hpa.errors import HPAConfigError, HPADataError, detail

log = logging.getLogger(__name__)

#: Suffixes of one-file-per-sample stacks, longest first (``.ome.tif`` before ``.tif``).
STACK_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")
#: Map keys by the channel they fill (index into :data:`hpa.constants.CHANNELS`).
ROLE_NAMES = {
    "red": 0,
    "microtubules": 0,
    "green": 1,
    "protein": 1,
    "blue": 2,
    "nucleus": 2,
    "yellow": 3,
    "er": 3,
}
_STAINS = ("microtubules", "protein", "nucleus", "er")
_PER_CHANNEL = re.compile(r"_(" + "|".join(CHANNELS) + r")$", re.IGNORECASE)
#: Largest channel count accepted when the file does not say which axis holds channels.
_MAX_UNLABELLED_CHANNELS = 8


@dataclass(frozen=True)
class ChannelMap:
    """Which channel of a multi-channel file fills each HPA channel.

    Attributes:
        sources: one entry per HPA channel in :data:`hpa.constants.CHANNELS` order: a
            channel index (``int``), an OME channel name (``str``, matched without
            regard to case) or None (yellow only: no ER channel, filled with zeros).
        spec: the text the map was parsed from (saved in ``config.yaml``).
    """

    sources: tuple[int | str | None, int | str | None, int | str | None, int | str | None]
    spec: str

    @classmethod
    def parse(cls, spec: str) -> ChannelMap:
        """Parse ``"microtubules=0,protein=1,nucleus=2,er=3"`` (indices or OME names).

        >>> ChannelMap.parse("red=2, green=0, blue=1").sources
        (2, 0, 1, None)

        Raises:
            HPAConfigError: an unknown key, a key given twice (also as stain and
                colour), a missing microtubules/protein/nucleus entry, an empty value,
                a negative index, or two channels mapped to the same source.
        """
        where = f"--channel-map {spec!r}"
        sources: list[int | str | None] = [None] * 4
        seen: dict[int, str] = {}
        for item in spec.split(","):
            if not item.strip():
                continue
            key, sep, value = (s.strip() for s in item.partition("="))
            if not sep or not value:
                raise HPAConfigError(f"{where}: expected KEY=CHANNEL, got {item.strip()!r}")
            role = ROLE_NAMES.get(key.lower())
            if role is None:
                raise HPAConfigError(
                    f"{where}: unknown key {key!r} (use {', '.join(_STAINS)} or {', '.join(CHANNELS)})"
                )
            if role in seen:
                raise HPAConfigError(
                    f"{where}: {key!r} and {seen[role]!r} both set the {CHANNELS[role]} channel"
                )
            seen[role] = key
            if value.lower() == "none":
                if role != 3:
                    raise HPAConfigError(f"{where}: only er may be 'none', not {key!r}")
                continue
            if re.fullmatch(r"[+-]\d+", value) and int(value) < 0:
                raise HPAConfigError(
                    f"{where}: {key}={value}: a channel index counts from 0 (the file's first channel)"
                )
            sources[role] = int(value) if re.fullmatch(r"\+?\d+", value) else value
        missing = [_STAINS[r] for r in range(3) if sources[r] is None]
        if missing:
            raise HPAConfigError(f"{where}: no channel given for {', '.join(missing)}")
        _check_distinct(sources, where)
        return cls((sources[0], sources[1], sources[2], sources[3]), spec)

    def indices(self, n_channels: int, names: tuple[str, ...] | None, path: Path) -> list[int | None]:
        """The file channel of each HPA channel (None: fill with zeros).

        Args:
            n_channels: channels in the file.
            names: the file's OME channel names (None when it has none).
            path: the file, for messages.

        Raises:
            HPADataError: an index out of range, a name absent from the file, a name
                held by two channels, or names used on a file without OME names.
        """
        out: list[int | None] = []
        for source in self.sources:
            if source is None or isinstance(source, int):
                if source is not None and source >= n_channels:
                    raise HPADataError(
                        f"{path}: --channel-map {self.spec!r} uses channel {source}, "
                        f"the file has {n_channels} (0 to {n_channels - 1})"
                    )
                out.append(source)
                continue
            if names is None:
                raise HPADataError(
                    f"{path}: --channel-map {self.spec!r} names channel {source!r}, but the file "
                    "has no OME name for each channel; map by index (0, 1, ...)"
                )
            hits = [k for k, n in enumerate(names) if n.strip().lower() == source.lower()]
            if not hits:
                raise HPADataError(
                    f"{path}: no channel named {source!r} (the file's channels: {', '.join(names)})"
                )
            if len(hits) > 1:
                raise HPADataError(f"{path}: channel name {source!r} is ambiguous: channels {hits} carry it")
            out.append(hits[0])
        _check_distinct(out, f"{path}: --channel-map {self.spec!r}", HPADataError)
        return out


def _check_distinct(sources: list[Any], where: str, error: type[Exception] = HPAConfigError) -> None:
    """Raise ``error`` where two HPA channels take the same source (index or name)."""
    keys = [s.lower() if isinstance(s, str) else s for s in sources]
    for key in keys:
        roles = [_STAINS[r] for r, k in enumerate(keys) if k is not None and k == key]
        if len(roles) > 1:
            raise error(f"{where}: ambiguous, channel {key!r} is mapped to {' and '.join(roles)}")


def default_indices(n_channels: int, path: Path) -> list[int | None]:
    """File channels used without a map: RGBY for 4 channels, RGB (no ER) for 3.

    Raises:
        HPADataError: any other channel count.
    """
    if n_channels == 4:
        return [0, 1, 2, 3]
    if n_channels == 3:
        return [0, 1, 2, None]
    raise HPADataError(
        f"{path}: {n_channels} channel(s); without --channel-map a file must have 4 "
        "(microtubules, protein, nucleus, ER) or 3 (no ER); say which is which with "
        "--channel-map microtubules=I,protein=J,nucleus=K[,er=L]"
    )


# -------------------------------------------------------------------- folders ---


def stack_id(name: str) -> str | None:
    """The sample Id of a multi-channel file name, or None for anything else.

    Per-channel TIFFs (``<Id>_red.tif``) are not stacks.

    >>> stack_id("plate1_A01.ome.tif"), stack_id("x_red.tif"), stack_id("x.png")
    ('plate1_A01', None, None)
    """
    lower = name.lower()
    for suffix in STACK_SUFFIXES:
        if lower.endswith(suffix):
            stem = name[: -len(suffix)]
            if not stem or _PER_CHANNEL.search(stem):
                return None
            return stem
    return None


def list_stack_ids(images_dir: str | Path) -> list[str]:
    """Ids of the multi-channel files in a folder (unsorted)."""
    ids = []
    for entry in os.scandir(images_dir):
        image_id = stack_id(entry.name)
        if image_id is not None and entry.is_file():
            ids.append(image_id)
    return ids


def stack_path(images_dir: str | Path, image_id: str) -> Path | None:
    """The multi-channel file of an Id, or None when the folder has none."""
    images_dir = Path(images_dir)
    for suffix in STACK_SUFFIXES:
        path = images_dir / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


#: Length units of OME's ``PhysicalSizeXUnit`` that :func:`pixel_size` reports (OME's
#: default is ``µm``); other units (``pixel``, ``reference frame``) give no size.
LENGTH_UNITS = ("pm", "Å", "nm", "µm", "mm", "cm", "m")


def pixel_size(images_dir: str | Path, image_id: str) -> tuple[float, float, str] | None:
    """The physical pixel size of an image, where its file records one.

    Only an OME-TIFF stack (``<Id>.ome.tif`` ...) records it: ``PhysicalSizeY`` and
    ``PhysicalSizeX`` of its first image, in ``PhysicalSizeXUnit`` (``µm`` when absent).
    Per-channel PNGs, plain TIFFs and OME-TIFFs without a size give None, as does an
    unreadable file (reading the pixels reports that).

    Returns:
        ``(y, x, unit)``, e.g. ``(0.08, 0.08, "µm")``, or None.
    """
    import tifffile

    path = stack_path(images_dir, image_id)
    if path is None:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            pixels = _ome_pixels(tif) if tif.is_ome else None
    except Exception:  # tifffile raises many types for broken files; read_stack says why
        return None
    if pixels is None or "PhysicalSizeX" not in pixels:
        return None
    unit = str(pixels.get("PhysicalSizeXUnit", "µm"))
    if unit != str(pixels.get("PhysicalSizeYUnit", unit)) or unit not in LENGTH_UNITS:
        log.debug("%s: pixel size in %s: not a length unit both axes share; ignored", path, unit)
        return None
    try:
        x = float(pixels["PhysicalSizeX"])
        y = float(pixels.get("PhysicalSizeY", x))
    except (TypeError, ValueError):
        return None
    return (y, x, unit) if x > 0 and y > 0 and np.isfinite([x, y]).all() else None


def check_channel_map(images_dir: str | Path, channel_map: ChannelMap | None) -> None:
    """Refuse a channel map for a folder that holds no multi-channel file.

    Raises:
        HPAConfigError: ``channel_map`` is given and ``images_dir`` holds per-channel
            files only.
    """
    if channel_map is not None and Path(images_dir).is_dir() and not list_stack_ids(images_dir):
        raise HPAConfigError(
            f"--channel-map {channel_map.spec!r}: {images_dir} holds no multi-channel TIFF "
            f"(<Id>{'/'.join(STACK_SUFFIXES)}); per-channel files (<Id>_red.png ...) need no channel map"
        )


# ---------------------------------------------------------------------- files ---


def read_stack(path: str | Path, channel_map: ChannelMap | None = None) -> np.ndarray:
    """Read a multi-channel TIFF / OME-TIFF as an HPA sample.

    Args:
        path: the file; its first image (series) is read, full resolution, channels
            first or last, singleton Z/T axes allowed.
        channel_map: which channel is which (default: :func:`default_indices`).

    Returns:
        ``(H, W, 4)`` array in red, green, blue, yellow order, uint8 or uint16 as stored;
        yellow is zeros where the map has no ER channel.

    Raises:
        HPADataError: unreadable file, not 8/16-bit, not one plane per channel, a
            channel count or map that does not fit the file.
    """
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            names = _ome_channel_names(tif) if tif.is_ome else None
    except Exception as exc:  # tifffile raises many types for broken files
        raise HPADataError(f"{path}: cannot read TIFF ({detail(exc, path)})") from exc
    if data.dtype not in (np.uint8, np.uint16):
        raise HPADataError(f"{path}: unsupported pixel type {data.dtype} (expected 8 or 16 bit)")
    planes = _channels_last(data, axes, path)
    n = planes.shape[-1]
    if names is not None and len(names) != n:
        log.debug("%s: %d OME channel names for %d channels; names ignored", path, len(names), n)
        names = None
    if channel_map:
        index = channel_map.indices(n, names, path)
    else:
        index = (names_indices(names) if names else None) or default_indices(n, path)
        if names and index != names_indices(names):
            _warn_unknown_names(path, names)
    out = np.zeros((*planes.shape[:2], 4), dtype=planes.dtype)
    for k, source in enumerate(index):
        if source is not None:
            out[..., k] = planes[..., source]
    if index[3] is None:
        log.debug("%s: no ER channel, yellow is zeros", path)
    return out


#: OME channel names (lower case) read as each HPA channel without a ``--channel-map``.
KNOWN_STAIN_NAMES = (
    ("red", "microtubules", "microtubule", "tubulin", "alpha-tubulin"),
    ("green", "protein", "antibody", "gfp"),
    ("blue", "nucleus", "nuclei", "dapi", "hoechst", "dna"),
    ("yellow", "er", "endoplasmic reticulum", "calreticulin"),
)
_WARNED_NAMES: set[tuple[str, ...]] = set()


def names_indices(names: tuple[str, ...]) -> list[int | None] | None:
    """File channels by OME channel name, where every name is a known stain (else None).

    >>> names_indices(("DAPI", "Tubulin", "GFP", "Calreticulin"))
    [1, 2, 0, 3]
    >>> names_indices(("DAPI", "Tubulin", "GFP")), names_indices(("C1", "C2", "C3", "C4"))
    ([1, 2, 0, None], None)
    """
    index: list[int | None] = [None] * len(CHANNELS)
    for k, name in enumerate(names):
        roles = [r for r, known in enumerate(KNOWN_STAIN_NAMES) if name.strip().lower() in known]
        if not roles or index[roles[0]] is not None:
            return None
        index[roles[0]] = k
    return index if all(i is not None for i in index[:3]) else None


def _warn_unknown_names(path: Path, names: tuple[str, ...]) -> None:
    """Warn, once per set of names, that named channels are read in RGBY order."""
    if names in _WARNED_NAMES:
        return
    _WARNED_NAMES.add(names)
    log.warning(
        "%s: OME channel names %s are not the known stains: read as red, green, blue%s in file "
        "order; say which is which with --channel-map microtubules=NAME,protein=NAME,nucleus=NAME,er=NAME",
        path,
        ", ".join(names),
        ", yellow" if len(names) == 4 else "",
    )


def _ome_pixels(tif: Any) -> dict[str, Any] | None:
    """The ``Pixels`` element of an OME-TIFF's first image, as tifffile's dict, or None."""
    import tifffile

    try:
        ome = tifffile.xml2dict(tif.ome_metadata)["OME"]
        image = ome["Image"][0] if isinstance(ome["Image"], list) else ome["Image"]
        pixels = image["Pixels"]
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return pixels if isinstance(pixels, dict) else None


def _ome_channel_names(tif: Any) -> tuple[str, ...] | None:
    pixels = _ome_pixels(tif)
    if pixels is None:
        return None
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    names = tuple(str(c.get("Name", "")) for c in channels)
    return names if names and all(names) else None


def _channels_last(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """``(H, W, C)`` from a TIFF series with tifffile's axes codes (C/S = channels)."""
    keep = [k for k, (a, s) in enumerate(zip(axes, data.shape)) if s > 1 or a in "YXCS"]
    data = data.reshape([data.shape[k] for k in keep])
    axes = "".join(axes[k] for k in keep)
    if data.ndim == 2:
        raise HPADataError(f"{path}: a single grey plane, expected one plane per channel")
    if data.ndim != 3:
        raise HPADataError(
            f"{path}: axes {axes} shape {data.shape}: expected one plane per channel "
            "(no Z stack or time series)"
        )
    labelled = [k for k, a in enumerate(axes) if a in "CS"]
    if len(labelled) == 1:
        axis = labelled[0]
    else:  # no axis names: the small one of first and last
        small = [k for k in (0, 2) if data.shape[k] <= _MAX_UNLABELLED_CHANNELS]
        if len(small) != 1:
            raise HPADataError(f"{path}: shape {data.shape}: cannot tell which axis holds the channels")
        axis = small[0]
    if axis == 1:
        raise HPADataError(f"{path}: axes {axes}: channels between Y and X are not supported")
    return np.moveaxis(data, axis, -1)
