"""napari reader: open a SEG_DIR or PRED_DIR as four channel layers and a cell Labels layer.

Registered by the npe2 manifest ``hpa/interop/napari.yaml`` (entry point
``napari.manifest``; ``pip install 'hpa-cells[napari]'``). The manifest claims folders
only, and the reader takes a folder only when hpa wrote it: a ``PRED_DIR`` (``hpa
predict``, also ``--format 2021`` alone) or a ``SEG_DIR`` (``cells/`` beside one of
:data:`SEG_MARKERS`); it opens the run's first image. Other PNGs stay napari's.
:func:`read_run` also takes ``.../cells/<Id>.png`` inside either, for that image, and
:func:`read_image` any image of a run by its Id (:func:`image_ids`). The manifest's
widget, *Images of a run* (:mod:`hpa.interop.napari_widget`), steps through a run's
images with :func:`show_image`, which replaces one image's layers by another's.

Layers: the red, green, blue and yellow channels as additive image layers in their HPA
colours, then a Labels layer of the cells whose ``features`` is the image's per-cell
table (``index`` = cell id), so hovering a cell shows its values: for a PRED_DIR every
class probability and the top call (``top_class``, ``top_probability``), each cell
coloured by its top class in the report's colours (:func:`class_colours`); for a SEG_DIR
the rows of ``cells.parquet``. The images folder and channel map come from the run
(``PRED_DIR/config.yaml``, ``SEG_DIR/inputs.yaml``); without them only the Labels layer
opens. Every layer's ``metadata["hpa"]`` names its run, image Id and pixel size.

Scale: hpa's runs record no pixel size, but an OME-TIFF input may
(:func:`hpa.io_tiff.pixel_size`: ``PhysicalSizeX``/``Y``); its layers then get that
``scale`` and ``units`` (napari >= 0.6), so napari's scale bar reads µm. Other inputs
(the HPA PNGs) open in pixel units, and the log and ``metadata["hpa"]["pixel_size"]``
(None) say so. Nothing here imports napari but :func:`show_image`: the reader returns
napari's layer data tuples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.artefacts import PredDir, SegDir
from hpa.constants import CHANNEL_STAINS, CHANNELS
from hpa.errors import HPADataError
from hpa.io import read_label_image, read_sample
from hpa.io_tiff import ChannelMap, pixel_size
from hpa.visualization.classes import DIM_COLOUR, cell_calls, class_palette
from hpa.visualization.composite import STRETCH_HIGH, STRETCH_LOW
from hpa.visualization.preddir import default_scheme, load_prediction_run

log = logging.getLogger(__name__)

#: napari's layer data tuple: ``(data, keyword arguments of add_<type>, layer type)``.
LayerData = tuple[Any, dict[str, Any], str]
#: Files of which one marks a SEG_DIR (beside its ``cells/``): ``hpa segment`` writes its
#: settings and inputs first and the cells table last.
SEG_MARKERS = (SegDir.CELLS_TABLE, SegDir.CONFIG, SegDir.INPUTS)
#: The key of a layer's ``metadata`` under which the reader names its run and image.
METADATA_KEY = "hpa"


def _is_pred_dir(folder: Path) -> bool:
    return PredDir(folder).is_preddir()


def _is_seg_dir(folder: Path) -> bool:
    """A ``cells/`` folder beside a file ``hpa segment`` writes (its table or settings)."""
    seg = SegDir(folder)
    return seg.is_segdir() and any(seg.path(name).is_file() for name in SEG_MARKERS)


def _locate(path: str | Path) -> tuple[Path, str | None] | None:
    """``(run folder, Id or None)`` of a path this reader opens, else None."""
    path = Path(path)
    if path.is_dir():
        return (path, None) if _is_pred_dir(path) or _is_seg_dir(path) else None
    if path.suffix.lower() == ".png" and path.parent.name == SegDir.CELLS:
        seg = path.parent.parent
        if _is_seg_dir(seg):
            run = seg.parent if seg.name == PredDir.MASKS and _is_pred_dir(seg.parent) else seg
            return run, path.stem
    return None


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The npe2 reader command: :func:`read_run` when ``path`` is a run napari should open here."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_run if _locate(path) is not None else None


def read_run(path: str | list[str]) -> list[LayerData]:
    """Layer data of one image of a SEG_DIR or PRED_DIR (see the module docstring).

    Returns:
        Four ``"image"`` layers (``(H, W)`` uint8/uint16 channel planes), then one
        ``"labels"`` layer (``(H, W)`` int32 cell ids) with its ``features`` table; only
        the Labels layer when the run names no readable images folder.

    Raises:
        HPADataError: ``path`` is not a run, or its files are missing or unreadable.
    """
    target = path[0] if isinstance(path, list) else path
    folder, image_id = _run_of(target)
    return read_image(folder, image_id or _first(image_ids(folder), folder))


def _run_of(path: str | Path) -> tuple[Path, str | None]:
    found = _locate(path)
    if found is None:
        raise HPADataError(
            f"{path}: not a SEG_DIR or PRED_DIR written by hpa (nor cells/<Id>.png inside one)"
        )
    return found


def image_ids(path: str | Path) -> list[str]:
    """The image Ids of a run, in the order the reader steps through them.

    A PRED_DIR's are the Ids it predicted (its submission's order), a SEG_DIR's those
    with a cell mask (sorted). ``path`` may be a ``cells/<Id>.png`` inside the run.

    Raises:
        HPADataError: ``path`` is not a run, or the run has no image.
    """
    folder, _ = _run_of(path)
    if _is_pred_dir(folder):
        ids = [str(i) for i in load_prediction_run(folder, default_scheme(folder)).ids]
    else:
        ids = sorted(p.stem for p in (folder / SegDir.CELLS).glob("*.png"))
    if not ids:
        raise HPADataError(f"{folder}: no image (the run predicted none, or cells/ holds no mask)")
    return ids


def read_image(path: str | Path, image_id: str) -> list[LayerData]:
    """Layer data of the image ``image_id`` of the run at ``path`` (as :func:`read_run`).

    Raises:
        HPADataError: ``path`` is not a run, ``image_id`` is not one of its images, or
            its files are missing or unreadable.
    """
    folder, _ = _run_of(path)
    if _is_pred_dir(folder):
        return _pred_layers(folder, image_id)
    return _seg_layers(folder, image_id)


def show_image(viewer: Any, path: str | Path, image_id: str) -> list[Any]:
    """Show one image of a run in a napari viewer, in place of that run's layers.

    The layers the reader made for the same run (by ``metadata["hpa"]["run"]``) are
    replaced, at the place of the first of them, keeping each one's visibility and
    opacity; other layers stay. The new image is read first, so a failure leaves the
    viewer as it was. Needs napari.

    Args:
        viewer: a ``napari.Viewer`` (or its headless ``ViewerModel``).
        path: the run (or a path inside it, as :func:`read_run` takes).
        image_id: one of :func:`image_ids`.

    Returns:
        The layers added.
    """
    from napari.layers import Layer

    folder, _ = _run_of(path)
    data = read_image(folder, image_id)
    run = str(folder.resolve())
    old = [layer for layer in viewer.layers if hpa_metadata(layer).get("run") == run]
    kept = {hpa_metadata(layer).get("role"): (layer.visible, layer.opacity) for layer in old}
    at = viewer.layers.index(old[0]) if old else len(viewer.layers)
    for layer in old:
        viewer.layers.remove(layer)
    added = []
    for k, (array, kwargs, kind) in enumerate(data):
        role = kwargs["metadata"][METADATA_KEY]["role"]
        if role in kept:
            kwargs = {**kwargs, "visible": kept[role][0], "opacity": kept[role][1]}
        layer = Layer.create(array, kwargs, kind)
        viewer.layers.insert(at + k, layer)
        added.append(layer)
    return added


def hpa_metadata(layer: Any) -> dict[str, Any]:
    """``metadata["hpa"]`` of a layer the reader made (run, image_id, role, pixel_size), else ``{}``."""
    meta = getattr(layer, "metadata", None) or {}
    value = meta.get(METADATA_KEY)
    return value if isinstance(value, dict) else {}


def _check_id(image_id: str, ids: list[str], folder: Path) -> None:
    if image_id not in ids:
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        raise HPADataError(f"{folder}: no image {image_id} in this run ({len(ids)} images: {shown})")


def _pred_layers(folder: Path, image_id: str) -> list[LayerData]:
    run = load_prediction_run(folder, default_scheme(folder))  # 2021 for a --format 2021 run
    _check_id(image_id, [str(i) for i in run.ids], folder)
    run.check_masks()  # the masks are shown over the run's images
    cells = read_label_image(run.mask_path(image_id))
    table = run.cells_of(image_id)
    calls = cell_calls(table, run.class_names, run.thresholds)
    features = pd.DataFrame(
        {
            "index": table["cell_id"].to_numpy(dtype=np.int64),
            "top_class": [run.class_names[k] if k >= 0 else "" for k in calls["top_class"]],
            "top_probability": calls["top_prob"].to_numpy(),
        }
    )
    features = pd.concat([features, table[list(run.class_names)].reset_index(drop=True)], axis=1)
    colours = class_colours(
        cells, features["index"].tolist(), calls["top_class"].tolist(), len(run.class_names)
    )
    return _layers(folder, image_id, cells, features, run.images_dir, run.channel_map, colours)


def class_colours(
    cells: np.ndarray, cell_ids: list[int], top_classes: list[int], n_classes: int
) -> dict[int | None, list[float]]:
    """The Labels colormap of a prediction: each cell in its top class's report colour.

    Args:
        cells: ``(H, W)`` cell labels.
        cell_ids: cell ids of the table rows.
        top_classes: each row's top class over threshold, -1 for none.
        n_classes: number of classes (:func:`hpa.visualization.class_palette`).

    Returns:
        ``{label: [r, g, b, a]}`` floats in ``[0, 1]`` as napari's ``colormap`` takes
        them: 0 transparent, a cell without a call (or without a row) grey
        (:data:`hpa.visualization.classes.DIM_COLOUR`), ``None`` (any other label) grey.

    >>> class_colours(np.array([[0, 1, 2]]), [1, 2], [0, -1], 28)[1]
    [0.12156862745098039, 0.4666666666666667, 0.7058823529411765, 1.0]
    """
    palette = class_palette(n_classes)
    grey = [v / 255 for v in DIM_COLOUR] + [1.0]
    colours: dict[int | None, list[float]] = {None: grey, 0: [0.0, 0.0, 0.0, 0.0]}
    colours.update({int(i): grey for i in np.unique(cells) if i})
    for cid, top in zip(cell_ids, top_classes):
        if top >= 0:
            colours[int(cid)] = [float(v) / 255 for v in palette[top]] + [1.0]
    return colours


def _seg_layers(folder: Path, image_id: str) -> list[LayerData]:
    seg = SegDir(folder)
    if not seg.cell_mask(image_id).is_file():
        _check_id(image_id, image_ids(folder), folder)
    cells = read_label_image(seg.cell_mask(image_id))
    table_path = seg.image_table(image_id)
    table = pd.read_parquet(table_path) if table_path.is_file() else pd.DataFrame({"cell_id": []})
    features = table.drop(columns=["image_id"], errors="ignore").rename(columns={"cell_id": "index"})
    images_dir, channel_map = _seg_inputs(folder)
    return _layers(folder, image_id, cells, features, images_dir, channel_map)


def _seg_inputs(folder: Path) -> tuple[Path | None, ChannelMap | None]:
    """Images folder and channel map of a SEG_DIR, from its ``inputs.yaml``."""
    inputs = SegDir(folder).read_inputs()
    images = Path(inputs["images"]) if inputs.get("images") else None
    spec = inputs.get("channel_map")
    return images, ChannelMap.parse(str(spec)) if spec else None


def _first(ids: list[str], folder: Path) -> str:
    if len(ids) > 1:
        log.info(
            "%s: opening %s, the first of %d images (step through them with the widget "
            "Plugins > Images of a run (HPA cells))",
            folder,
            ids[0],
            len(ids),
        )
    return ids[0]


def _layers(
    folder: Path,
    image_id: str,
    cells: np.ndarray,
    features: pd.DataFrame,
    images_dir: Path | None,
    channel_map: ChannelMap | None,
    colours: dict[int | None, list[float]] | None = None,
) -> list[LayerData]:
    layers: list[LayerData] = []
    size = None
    if images_dir is not None and images_dir.is_dir():
        image = read_sample(images_dir, image_id, channel_map)
        if image.shape[:2] != cells.shape:
            raise HPADataError(
                f"Id {image_id}: image {image.shape[:2]} and cell mask {cells.shape} differ in size"
            )
        size = pixel_size(images_dir, image_id)
        for k, colour in enumerate(CHANNELS):
            plane = image[..., k]
            lo, hi = np.percentile(plane, (STRETCH_LOW, STRETCH_HIGH))
            kwargs = {
                "name": f"{image_id} {colour} ({CHANNEL_STAINS[colour]})",
                "colormap": colour,
                "blending": "additive",
                "contrast_limits": [float(lo), float(max(hi, lo + 1))],
            }
            layers.append((plane, kwargs, "image"))
    else:
        log.warning("Id %s: images folder %s not found; opening the cells only", image_id, images_dir)
    labels_kwargs = {"name": f"{image_id} cells", "features": features.reset_index(drop=True), "opacity": 0.5}
    if colours is not None:
        labels_kwargs["colormap"] = colours
    layers.append((cells, labels_kwargs, "labels"))
    if size is None:
        log.info(
            "Id %s: no physical pixel size recorded (only OME-TIFF inputs carry one): pixel units", image_id
        )
    roles = [*CHANNELS[: len(layers) - 1], "cells"]
    for (_, options, _), role in zip(layers, roles):
        meta = {"run": str(folder.resolve()), "image_id": image_id, "role": role}
        options["metadata"] = {METADATA_KEY: {**meta, "pixel_size": list(size) if size else None}}
        if size is not None:
            options["scale"] = [size[0], size[1]]
            options["units"] = [size[2], size[2]]
    return layers
