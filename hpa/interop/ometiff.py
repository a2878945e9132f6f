"""An image as one pyramidal multichannel OME-TIFF, the form QuPath opens as one image.

``<Id>.ome.tif`` (BigTIFF, written by ``tifffile``): the four channels as planes of one
OME Image (axes ``CYX``, uint8/uint16 as read, in red, green, blue, yellow order), each
named ``<colour> (<stain>)`` with its display colour in the OME-XML; below the full
resolution, the lower levels of :mod:`hpa.interop.pyramid` as SubIFDs (the layout
QuPath, Bio-Formats and OMERO read as a pyramid), tiled and zlib-compressed. The cells
go on top as the GeoJSON of ``hpa export --to geojson`` (same pixel coordinates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from hpa.constants import CHANNEL_STAINS, CHANNELS
from hpa.interop.omezarr import CHANNEL_HEX
from hpa.interop.pyramid import image_pyramid, level_count
from hpa.io import atomic_path

#: Tile side of every level (px).
TILE = 256


def channel_names() -> list[str]:
    """The OME channel names, in :data:`hpa.constants.CHANNELS` order.

    >>> channel_names()[0]
    'red (microtubules)'
    """
    return [f"{c} ({CHANNEL_STAINS[c]})" for c in CHANNELS]


def ome_colour(hex_rgb: str) -> int:
    """OME's Channel ``Color``: RGBA packed in a signed 32-bit integer (alpha 255).

    >>> ome_colour("FF0000"), ome_colour("0000FF")
    (-16776961, 65535)
    """
    value = (int(hex_rgb, 16) << 8) | 0xFF
    return value - (1 << 32) if value >= 1 << 31 else value


def write_ome_tiff(path: str | Path, image: np.ndarray, levels: int | None = None) -> Path:
    """Write one image as a pyramidal OME-TIFF, atomically (replacing an older one).

    Args:
        path: the ``<Id>.ome.tif`` file to write.
        image: ``(H, W, 4)`` uint8/uint16 sample in red, green, blue, yellow order.
        levels: pyramid levels, full resolution included (default:
            :func:`hpa.interop.pyramid.level_count`).

    Returns:
        ``path``.
    """
    path = Path(path)
    n = level_count(image.shape) if levels is None else levels
    pyramid = [np.ascontiguousarray(np.moveaxis(level, -1, 0)) for level in image_pyramid(image, n)]
    options = {"photometric": "minisblack", "tile": (TILE, TILE), "compression": "zlib"}
    metadata = {
        "axes": "CYX",
        "Name": path.name.removesuffix(".ome.tif"),
        "Channel": {"Name": channel_names(), "Color": [ome_colour(h) for h in CHANNEL_HEX]},
    }
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        tif.write(pyramid[0], subifds=n - 1, metadata=metadata, **options)  # type: ignore[arg-type]
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, metadata=None, **options)  # type: ignore[arg-type]
    return path
