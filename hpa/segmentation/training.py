"""Train a cellpose 3.1 model for the ``cellpose`` backend (``hpa train-segmenter``).

Training pairs come from the layouts this project reads:

* HPA samples: ``IMAGES/<Id>_{red,green,blue,yellow}.png`` (``hpa synth``'s ``train/``,
  the HPA 2021 samples) with masks ``MASKS/<kind>/<Id>.png`` (a SEG_DIR, ``hpa synth``'s
  ``truth/``), ``MASKS/<Id>_cellmask.png`` / ``_nucleimask.png`` (the HPA Cell
  Segmentation tool's reference masks) or ``MASKS/<Id>.png``;
* grey nucleus images (DSB 2018): ``IMAGES/<name>.png|.tif`` with ``MASKS/<name>.png|.tif``,
  fed as the blue channel (``--kind nuclei`` only).

The model sees exactly what :func:`hpa.segmentation.cellpose_backend.model_input` gives
the backend at run time. Images whose objects are wider than the model's diameter are
shrunk first (cellpose rescales every crop to that diameter anyway), which keeps the flow
computation on large HPA images cheap. The result is a SEGMODEL folder:
``weights`` (cellpose's own state dict) and ``segmodel.json`` (kind, channels, diameter,
initial weights, training settings, sources, losses).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from hpa.artefacts.segdir import SegDir
from hpa.errors import HPAConfigError, HPADataError
from hpa.io import list_image_ids, read_grey, read_sample, write_text_atomic
from hpa.segmentation.cellpose_backend import SEGMODEL_META, SEGMODEL_WEIGHTS, model_input, resolve_weights

if TYPE_CHECKING:
    from cellpose.models import CellposeModel

log = logging.getLogger(__name__)

KINDS = (SegDir.CELLS, SegDir.NUCLEI)
_GREY_EXTENSIONS = (".png", ".tif", ".tiff")
_REFERENCE_SUFFIX = {"cells": "cellmask", "nuclei": "nucleimask"}
#: cellpose's own object diameters of new models (its ``cyto*`` and ``nuclei`` conventions)
DEFAULT_DIAMETER = {"cells": 30.0, "nuclei": 17.0}


@dataclass(frozen=True)
class SegTrainConfig:
    """Settings of :func:`train_segmenter`.

    Attributes:
        kind: ``"cells"`` (input: cytoplasm + blue) or ``"nuclei"`` (input: blue).
        init: ``"random"``, a cellpose model name (``cyto3``, ``nuclei``; local weights
            only) or a weights file / SEGMODEL folder to start from.
        epochs: epochs of training (cellpose warms the learning rate up over the first 10).
        images_per_epoch: random crops drawn per epoch; 0 = one of each training image.
        learning_rate: AdamW peak learning rate (cellpose warms up over 10 epochs).
        weight_decay: AdamW weight decay.
        batch_size: crops per step.
        crop: side of the square training crops, pixels (cellpose's ``bsize``).
        seed: seed of torch and of the initial weights.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    kind: str = "cells"
    init: str = "random"
    epochs: int = 100
    images_per_epoch: int = 0
    learning_rate: float = 0.005
    weight_decay: float = 1e-5
    batch_size: int = 8
    crop: int = 224
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise HPAConfigError(f"--kind must be one of {KINDS}, got {self.kind!r}")
        if (
            self.epochs < 1
            or self.images_per_epoch < 0
            or self.batch_size < 1
            or self.crop < 32
            or self.learning_rate <= 0
        ):
            raise HPAConfigError(
                f"--epochs, --batch-size must be >= 1, --images-per-epoch >= 0, --crop >= 32, --lr > 0 "
                f"(got {self.epochs}, {self.batch_size}, {self.images_per_epoch}, {self.crop}, {self.learning_rate})"
            )


@dataclass(frozen=True)
class TrainingPair:
    """One training image: ``x`` as :func:`model_input` gives it, ``labels`` ``(H, W)`` int32."""

    name: str
    x: np.ndarray
    labels: np.ndarray


def _mask_path(masks: Path, name: str, kind: str) -> Path:
    seg = SegDir(masks)  # a SEG_DIR, or hpa synth's truth/ in the same layout
    in_seg = seg.cell_mask(name) if kind == SegDir.CELLS else seg.nucleus_mask(name)
    candidates = [in_seg, masks / f"{name}_{_REFERENCE_SUFFIX[kind]}.png"]
    candidates += [masks / f"{name}{ext}" for ext in _GREY_EXTENSIONS]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p.relative_to(masks)) for p in candidates)
    raise HPADataError(f"{masks}: no {kind} mask for image {name!r} (tried {tried})")


def _as_sample(grey: np.ndarray) -> np.ndarray:
    image = np.zeros((*grey.shape, 4), grey.dtype)
    image[..., 2] = grey
    return image


def load_pairs(images: str | Path, masks: str | Path, kind: str) -> list[TrainingPair]:
    """Every (model input, label image) pair of a folder of images and a folder of masks.

    Args:
        images: folder of HPA channel files or of grey nucleus images (see module doc).
        masks: folder of label images in one of the layouts of the module doc.
        kind: ``"cells"`` or ``"nuclei"``.

    Returns:
        Pairs sorted by name; ``x`` is float32 ``(H, W, 2)`` (cells) or ``(H, W)`` (nuclei).

    Raises:
        HPADataError: a folder is missing or empty, an image has no mask, shapes differ,
            or grey images are given for a cells model.
    """
    images, masks = Path(images), Path(masks)
    for folder, flag in ((images, "--images"), (masks, "--masks")):
        if not folder.is_dir():
            raise HPADataError(f"{flag} {folder}: not a folder")
    pairs = []
    ids = list_image_ids(images)
    if ids:
        for image_id in ids:
            sample = read_sample(images, image_id)
            pairs.append((image_id, sample, _mask_path(masks, image_id, kind)))
    else:
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in _GREY_EXTENSIONS)
        if files and kind == "cells":
            raise HPADataError(
                f"--images {images}: grey images (no <Id>_<color>.png files) can train nuclei only"
            )
        pairs = [(p.stem, _as_sample(read_grey(p)), _mask_path(masks, p.stem, kind)) for p in files]
    if not pairs:
        raise HPADataError(f"--images {images}: no HPA channel files or grey images found")
    out = []
    for name, sample, mask_path in pairs:
        labels = read_grey(mask_path).astype(np.int32)
        if labels.shape != sample.shape[:2]:
            raise HPADataError(f"{mask_path}: mask is {labels.shape}, image {name} is {sample.shape[:2]}")
        out.append(TrainingPair(name, model_input(sample, kind), labels))
    log.info("training pairs: %d images from %s with masks from %s", len(out), images, masks)
    return out


def object_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter of the objects of a label image (0 if none), pixels.

    >>> lab = np.zeros((10, 10), int); lab[:4, :4] = 1; lab[6:, 6:] = 2
    >>> round(object_diameter(lab), 2)
    4.51
    """
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(4.0 * np.median(areas) / np.pi)) if areas.size else 0.0


def shrink_pair(pair: TrainingPair, diameter: float) -> TrainingPair:
    """Shrink a pair (never enlarge) so that its median object is about ``diameter`` px wide."""
    d = object_diameter(pair.labels)
    if d <= diameter:
        return pair
    h, w = pair.labels.shape
    size = (max(1, round(w * diameter / d)), max(1, round(h * diameter / d)))
    x = cv2.resize(pair.x, size, interpolation=cv2.INTER_AREA)
    labels = cv2.resize(pair.labels, size, interpolation=cv2.INTER_NEAREST)
    return TrainingPair(pair.name, x.astype(np.float32), labels.astype(np.int32))


def _initial_weights(init: str, kind: str) -> str | None:
    if init == "random":
        return None
    return str(resolve_weights(init, kind))


def train_segmenter(
    pairs: list[TrainingPair], out: str | Path, config: SegTrainConfig, *, sources: list[str] | None = None
) -> Path:
    """Train a cellpose model on ``pairs`` and write a SEGMODEL folder.

    Args:
        pairs: training images of ``config.kind`` (see :func:`load_pairs`).
        out: folder to write (``weights``, ``segmodel.json``); created if needed.
        config: settings.
        sources: descriptions of the training data, recorded in ``segmodel.json``.

    Returns:
        The SEGMODEL folder.

    Raises:
        HPADataError: no pair has an object.
        FileNotFoundError: ``config.init`` names weights that are not on this machine.
    """
    import cellpose
    import torch

    from hpa.config import resolve_device

    out = Path(out)
    pairs = [p for p in pairs if p.labels.max() > 0]
    if not pairs:
        raise HPADataError("no training image has a labelled object")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    init = _initial_weights(config.init, config.kind)
    model = _cellpose_model(config, device, init)
    diameter = float(model.diam_mean)
    pairs = [shrink_pair(p, diameter) for p in pairs]
    channels = [1, 2] if config.kind == "cells" else [0, 0]
    log.info(
        "training a %s model from %s on %d images (%s, diameter %.0f px, %d epochs)",
        config.kind, config.init, len(pairs), device, diameter, config.epochs,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_losses = _train_weights(model, pairs, config, channels, out)
    seconds = time.perf_counter() - start
    meta = {
        "kind": config.kind,
        "channels": channels,
        "input": "cytoplasm (red + yellow), blue" if config.kind == "cells" else "blue",
        "diameter": diameter,
        "trained_diameter": float(model.net.diam_labels.item()),
        "settings": asdict(config),
        "initial_weights": init or "random",
        "n_images": len(pairs),
        "images": [p.name for p in pairs],
        "sources": sources or [],
        "train_losses": [round(float(v), 5) for v in train_losses],
        "seconds": round(seconds, 1),
        "cellpose_version": cellpose.version,
    }
    write_text_atomic(out / SEGMODEL_META, json.dumps(meta, indent=2) + "\n")
    log.info("trained in %.0f s, final loss %.4f -> %s", seconds, float(train_losses[-1]), out)
    return out


def _cellpose_model(config: SegTrainConfig, device: str, init: str | None) -> CellposeModel:
    """The cellpose model to train: from the weights ``init``, or random (None)."""
    import torch
    from cellpose.models import CellposeModel

    return CellposeModel(
        gpu=device == "cuda",
        pretrained_model=init or False,
        device=torch.device(device),
        diam_mean=DEFAULT_DIAMETER[config.kind],
        mkldnn=False,  # MKLDNN tensors cannot be trained
    )


def _train_weights(
    model: CellposeModel, pairs: list[TrainingPair], config: SegTrainConfig, channels: list[int], out: Path
) -> np.ndarray:
    """Train ``model.net`` with cellpose's ``train_seg``; its weights go to ``OUT/weights``.

    Returns:
        The training loss of each epoch.
    """
    from cellpose.train import train_seg

    with tempfile.TemporaryDirectory(dir=out, prefix=".train-") as tmp:
        weights, train_losses, _test_losses = train_seg(
            model.net,
            train_data=[p.x for p in pairs],
            train_labels=[p.labels for p in pairs],
            channels=channels,
            channel_axis=-1 if config.kind == "cells" else None,
            normalize=True,
            n_epochs=config.epochs,
            nimg_per_epoch=config.images_per_epoch or None,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            batch_size=config.batch_size,
            bsize=config.crop,
            min_train_masks=1,
            save_path=tmp,
            save_every=config.epochs + 1,
            model_name=SEGMODEL_WEIGHTS,
            rescale=True,
        )
        shutil.move(str(weights), out / SEGMODEL_WEIGHTS)  # same filesystem: an atomic rename
    return train_losses
