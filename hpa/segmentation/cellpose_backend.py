"""The ``cellpose`` backend: cellpose 3.1's own ``CellposeModel`` for cells and nuclei.

Cells come from a cytoplasm model (default ``cyto3``) on ``[cytoplasm = red + yellow,
nucleus = blue]``; nuclei from a nuclei model (default ``nuclei``) on blue. Each nucleus
takes the id of the cell that covers most of it. Models are given by cellpose name or
by a path to a weights file; weights are never downloaded here: a missing file is an
error that says where to put it, raised before cellpose would try the network.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from hpa.constants import BLUE
from hpa.errors import HPAConfigError
from hpa.segmentation.config import SegmentConfig
from hpa.segmentation.postprocess import match_nuclei_to_cells
from hpa.segmentation.watershed import channel_float, cytoplasm, estimate_nucleus_diameter

log = logging.getLogger(__name__)

#: files of a SEGMODEL folder written by ``hpa train-segmenter``
SEGMODEL_META = "segmodel.json"
SEGMODEL_WEIGHTS = "weights"

#: Weights file names of cellpose's built-in models, where they differ from the name.
_BUILTIN_FILES = {"nuclei": "nucleitorch_0", "cyto": "cytotorch_0", "cyto2": "cyto2torch_0"}


def segmodel_weights(folder: Path, kind: str | None = None) -> Path:
    """The weights file of a SEGMODEL folder (``segmodel.json`` + ``weights``), checked for ``kind``."""
    meta_path = folder / SEGMODEL_META
    if not meta_path.is_file():
        raise HPAConfigError(
            f"{folder}: not a SEGMODEL folder (no {SEGMODEL_META}; see 'hpa train-segmenter')"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise HPAConfigError(f"{meta_path}: invalid JSON ({exc})") from exc
    if kind is not None and meta.get("kind") != kind:
        raise HPAConfigError(f"{folder}: a {meta.get('kind')!r} model, but a {kind!r} model is needed here")
    weights = folder / SEGMODEL_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: SEGMODEL weights file {SEGMODEL_WEIGHTS} is missing")
    return weights


def model_input(image: np.ndarray, kind: str) -> np.ndarray:
    """What a cellpose model of ``kind`` sees of a sample (the same in training and use).

    Args:
        image: ``(H, W, 4)`` uint8/uint16 sample; green is not read.
        kind: ``"cells"``: ``(H, W, 2)`` float32, cytoplasm (red + yellow) and blue, for
            cellpose channels ``[1, 2]``; ``"nuclei"``: ``(H, W)`` float32 blue, for ``[0, 0]``.
    """
    blue = channel_float(image, BLUE)
    blue = blue / max(float(blue.max()), 1e-6)
    if kind == "nuclei":
        return blue.astype(np.float32)
    return np.stack([cytoplasm(image), blue], axis=-1).astype(np.float32)


def cellpose_model_dir() -> Path:
    """Where cellpose keeps its weights: ``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``."""
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def resolve_weights(model: str, kind: str | None = None) -> Path:
    """The weights file of a cellpose model name, weights file or SEGMODEL folder; never downloads.

    Args:
        model: a weights file path, a SEGMODEL folder written by ``hpa train-segmenter``,
            or a built-in name such as ``cyto3`` or ``nuclei``.
        kind: ``"cells"`` or ``"nuclei"``: a SEGMODEL folder must have been trained for it.

    Returns:
        Path of an existing weights file.

    Raises:
        FileNotFoundError: the file is absent; the message names the file and folder.
        HPAConfigError: a SEGMODEL folder of the other kind, or a folder without
            ``segmodel.json``.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return segmodel_weights(path, kind)
    from cellpose.models import MODEL_NAMES

    if model in MODEL_NAMES:
        folder = cellpose_model_dir()
        path = folder / _BUILTIN_FILES.get(model, model)
        if path.is_file():
            return path
        raise FileNotFoundError(
            f"cellpose weights for model {model!r} not found: expected the file {path}. "
            f"Without network access, download https://www.cellpose.org/models/{path.name} "
            f"elsewhere and copy it to {folder} (set CELLPOSE_LOCAL_MODELS_PATH to use "
            "another folder), or pass a weights file path as the model."
        )
    raise FileNotFoundError(
        f"cellpose model {model!r} is neither a weights file nor a built-in cellpose model "
        f"name ({', '.join(MODEL_NAMES[:4])}, ...)"
    )


@functools.lru_cache(maxsize=4)
def load_model(weights: str, device: str) -> Any:
    """A ``cellpose.models.CellposeModel`` for a weights file, cached per process.

    Raises:
        HPAConfigError: the file is not cellpose weights (torch loads state dicts only).

    Args:
        weights: path of an existing weights file (see :func:`resolve_weights`).
        device: ``"cpu"`` or ``"cuda"``.
    """
    import torch
    from cellpose.models import CellposeModel

    log.info("loading cellpose weights %s on %s", weights, device)
    try:
        return CellposeModel(gpu=device == "cuda", pretrained_model=weights, device=torch.device(device))
    except Exception as exc:  # torch.load and cellpose raise many types for a foreign file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise HPAConfigError(
            f"{weights}: not a cellpose weights file (a state dict saved by cellpose; pickled "
            f"objects are never loaded): {type(exc).__name__}: {first}"
        ) from None


def check_models(config: SegmentConfig) -> None:
    """Load the configured cellpose models once, so a bad weights file fails before any work.

    Raises:
        FileNotFoundError: a weights file is missing.
        HPAConfigError: a file is not cellpose weights (e.g. a pickled object).
    """
    device = _device(config)
    for name in (config.cellpose_model, config.cellpose_nuclei_model):
        load_model(str(resolve_weights(name)), device)


def _device(config: SegmentConfig) -> str:
    from hpa.config import resolve_device

    return resolve_device(config.cellpose_device)


def run_model(
    model: Any, image: np.ndarray, channels: list[int], diameter: float, config: SegmentConfig
) -> np.ndarray:
    """Masks of one ``CellposeModel.eval`` call: ``(H, W)`` int32 labels.

    Args:
        model: a ``CellposeModel``.
        image: ``(H, W)`` or ``(H, W, C)`` float32 input.
        channels: cellpose's ``[cytoplasm, nucleus]`` channel numbers (1-based, 0 = grey).
        diameter: object diameter in input pixels.
        config: thresholds.
    """
    masks, _flows, _styles = model.eval(
        image,
        channels=channels,
        channel_axis=-1 if image.ndim == 3 else None,
        diameter=float(diameter),
        flow_threshold=config.cellpose_flow_threshold,
        cellprob_threshold=config.cellpose_cellprob_threshold,
    )
    return np.asarray(masks, dtype=np.int32)


def segment_cellpose(
    image: np.ndarray, config: SegmentConfig, models: tuple[Any, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw cells and nuclei of one sample with cellpose (before post-processing).

    Args:
        image: ``(H, W, 4)`` uint8/uint16 sample; green is not read.
        config: settings (``cellpose_*``).
        models: ``(cyto_model, nuclei_model)`` already built (tests, a trained model);
            by default they are loaded from ``config.cellpose_model`` and
            ``config.cellpose_nuclei_model``.

    Returns:
        ``(cells, nuclei, diameter)``: ``(H, W)`` int32 labels, a nucleus carrying its
        cell's id, and the nucleus diameter in input pixels used for the size filters.

    Raises:
        FileNotFoundError: weights missing (checked before cellpose is imported).
    """
    if models is None:
        cyto_weights = resolve_weights(config.cellpose_model, "cells")
        nuclei_weights = resolve_weights(config.cellpose_nuclei_model, "nuclei")
        device = _device(config)
        models = (load_model(str(cyto_weights), device), load_model(str(nuclei_weights), device))
    cyto_model, nuclei_model = models
    nucleus_d = estimate_nucleus_diameter(image, config)
    cell_d = config.cellpose_diameter or config.cellpose_cell_to_nucleus * nucleus_d
    cells = run_model(cyto_model, model_input(image, "cells"), [1, 2], cell_d, config)
    nuclei = run_model(nuclei_model, model_input(image, "nuclei"), [0, 0], nucleus_d, config)
    nuclei = match_nuclei_to_cells(cells, nuclei, config.min_nucleus_overlap)
    log.debug("cellpose: %d cells, nucleus diameter %.1f px", cells.max(), nucleus_d)
    return cells, nuclei, nucleus_d
