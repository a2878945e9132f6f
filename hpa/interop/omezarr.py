"""An image and its cells as OME-Zarr (OME-NGFF 0.4, Zarr format 2).

Layout of ``<Id>.ome.zarr``, as ome-zarr-py writes it and OME-NGFF readers
(napari-ome-zarr, Fiji's MoBIE / n5-viewer) read it::

    .zattrs            multiscales (axes c, y, x; one dataset per level) and omero
                       (HPA channel colours)
    0/, 1/, ...        (4, H, W) uint8/uint16 image, channels in red, green, blue, yellow
                       order, then each level at half the resolution (2x2 means)
    labels/.zattrs     {"labels": ["cells"]}
    labels/cells/      multiscales (axes y, x) and image-label (class colour of each cell,
                       and per cell its top class and class probabilities)
    labels/cells/0/, 1/, ...  (H, W) uint32 cell labels, 0 = background, then every
                       second pixel of the level above (nearest: ids stay ids)

The levels are those of :mod:`hpa.interop.pyramid` (2 to 4 for 128 px to 2048 px
images); level ``k`` carries the scale ``2**k`` in y and x (pixel units: the images
carry no physical pixel size). ``multiscales`` names its downsampling in ``type`` and
``metadata``, the optional fields of NGFF 0.4.

The folder is written beside its final name and renamed into place. The ``zarr`` package
(light: numcodecs, donfig, crc32c) is needed; ``ome-zarr-py`` is not.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa import __version__
from hpa.constants import CHANNEL_STAINS, CHANNELS
from hpa.errors import HPAConfigError
from hpa.interop.pyramid import image_pyramid, label_pyramid, level_count
from hpa.io import temp_name
from hpa.outputs import swap_in
from hpa.visualization.classes import DIM_COLOUR, cell_calls, class_palette

NGFF_VERSION = "0.4"
#: Display colour of each channel, as in :mod:`hpa.visualization.composite`.
CHANNEL_HEX = ("FF0000", "00FF00", "0000FF", "FFFF00")
_CHUNK = 1024


def require_zarr() -> Any:
    """The ``zarr`` module (format 3 API), or HPAConfigError saying how to install it."""
    try:
        import zarr
    except ImportError as exc:
        raise HPAConfigError(
            "--to ome-zarr needs the zarr package: python -m pip install 'hpa-cells[interop]'"
        ) from exc
    if int(zarr.__version__.split(".")[0]) < 3:
        raise HPAConfigError(f"--to ome-zarr needs zarr >= 3 (Python >= 3.11), found zarr {zarr.__version__}")
    return zarr


#: ``multiscales`` ``type`` and ``metadata`` of the image and label pyramids.
_DOWNSAMPLING = {
    "image": ("mean", "hpa.interop.pyramid.halve_mean", "mean of 2x2 blocks, last row/column repeated"),
    "labels": ("nearest", "hpa.interop.pyramid.label_pyramid", "every second pixel (array[::2, ::2])"),
}


def _multiscales(axes: list[dict[str, str]], name: str, levels: int, kind: str) -> list[dict[str, Any]]:
    kind_type, method, description = _DOWNSAMPLING[kind]
    lead = [1.0] * (len(axes) - 2)
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": axes,
            "datasets": [
                {
                    "path": str(k),
                    "coordinateTransformations": [{"type": "scale", "scale": [*lead, 2.0**k, 2.0**k]}],
                }
                for k in range(levels)
            ],
            "type": kind_type,
            "metadata": {"method": method, "description": description, "version": __version__},
        }
    ]


def write_ome_zarr(
    path: str | Path,
    image: np.ndarray,
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
) -> Path:
    """Write one image and its cell labels as an OME-Zarr folder (replacing an older one).

    Args:
        path: the ``<Id>.ome.zarr`` folder to write.
        image: ``(H, W, 4)`` uint8/uint16 sample in red, green, blue, yellow order.
        cells: ``(H, W)`` integer cell labels.
        cell_table: the image's rows of ``cell_predictions.parquet``.
        class_names: class names in class-number order.
        thresholds: ``(C,)`` per-class thresholds.

    Returns:
        ``path``.
    """
    zarr = require_zarr()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name(path.name)  # a killed export's is removed by the next one
    tmp.mkdir()
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        levels = level_count(cells.shape)
        for k, level in enumerate(image_pyramid(image, levels)):
            _write_array(root, str(k), np.moveaxis(level, -1, 0), (1, _CHUNK, _CHUNK))
        root.attrs.update(_image_attrs(image, path.name, levels))
        _write_cell_labels(root, cells, levels, _label_properties(cells, cell_table, class_names, thresholds))
        swap_in(tmp, path)  # an older export of this image is replaced in one step
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _image_attrs(image: np.ndarray, name: str, levels: int) -> dict[str, Any]:
    """The image group's metadata: its ``multiscales`` and the ``omero`` channel display
    (each stain in its colour, the window from 0 to the channel's brightest pixel)."""
    hi = int(np.iinfo(image.dtype).max)
    return {
        "multiscales": _multiscales(
            [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space"},
                {"name": "x", "type": "space"},
            ],
            name,
            levels,
            "image",
        ),
        "omero": {
            "version": NGFF_VERSION,
            "channels": [
                {
                    "label": f"{c} ({CHANNEL_STAINS[c]})",
                    "color": CHANNEL_HEX[k],
                    "active": True,
                    "window": {
                        "min": 0,
                        "max": hi,
                        "start": 0,
                        "end": int(image[..., k].max()) or hi,
                    },
                }
                for k, c in enumerate(CHANNELS)
            ],
            "rdefs": {"model": "color"},
        },
    }


def _write_cell_labels(root: Any, cells: np.ndarray, levels: int, properties: dict[str, Any]) -> None:
    """The ``labels/cells`` group: the cell label pyramid and its image-label metadata
    (``properties``: each cell's colour and calls, :func:`_label_properties`)."""
    labels = root.create_group("labels")
    labels.attrs["labels"] = ["cells"]
    group = labels.create_group("cells")
    for k, level in enumerate(label_pyramid(cells.astype(np.uint32), levels)):
        _write_array(group, str(k), level, (_CHUNK, _CHUNK))
    group.attrs.update(
        {
            "multiscales": _multiscales(
                [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "cells",
                levels,
                "labels",
            ),
            "image-label": {
                "version": NGFF_VERSION,
                "source": {"image": "../../"},
                **properties,
            },
        }
    )


def _write_array(group: Any, name: str, data: np.ndarray, chunks: tuple[int, ...]) -> None:
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape))
    array = group.create_array(
        name,
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    array[...] = data


def _label_properties(
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
) -> dict[str, Any]:
    """``colors`` and ``properties`` of the image-label metadata: one entry per cell."""
    ids = [int(i) for i in np.unique(cells) if i]
    palette = class_palette(len(class_names))
    by_id = cell_table.set_index("cell_id") if len(cell_table) else None
    calls = cell_calls(cell_table, class_names, thresholds).set_index("cell_id") if len(cell_table) else None
    colors, properties = [], []
    for cid in ids:
        prop: dict[str, Any] = {"label-value": cid}
        rgb: Sequence[int] = DIM_COLOUR
        if by_id is not None and calls is not None and cid in by_id.index:
            top = int(calls.loc[cid, "top_class"])
            prop["class"] = class_names[top] if top >= 0 else ""
            prop.update({n: round(float(by_id.loc[cid, n]), 6) for n in class_names})
            if top >= 0:
                rgb = palette[top]
        colors.append({"label-value": cid, "rgba": [int(v) for v in rgb] + [255]})
        properties.append(prop)
    return {"colors": colors, "properties": properties}
