"""``hpa train-cells``: from images, image labels and masks to a model folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpa import runlog
from hpa.artefacts import ModelDir, SegDir, write_csv
from hpa.artefacts.cachedir import CacheDir
from hpa.artefacts.modelcard import write_training_record
from hpa.artefacts.provenance import (
    KIND_NAMES,
    WAY_OUT,
    Provenance,
    fingerprints,
    folder_fingerprint,
    images_fingerprint,
    labels_digest,
    labels_fingerprint,
    read_record,
    write_record,
)
from hpa.classification.engine import training_engine
from hpa.classification.inference import resolve_precision
from hpa.classification.validation import split_images
from hpa.config import save_json, save_yaml, to_dict
from hpa.errors import HPAConfigError
from hpa.io import HPADataError, Labels, read_labels
from hpa.outputs import claim_entries, prepare_staging, swap_in_keeping

if TYPE_CHECKING:
    import torch

    from hpa.aggregation import ThresholdResult
    from hpa.classification.cache import CropCache, Folders
    from hpa.classification.crops import CropSettings
    from hpa.classification.distributed import World
    from hpa.classification.model import ModelConfig
    from hpa.classification.train import TrainConfig, TrainData
    from hpa.io_tiff import ChannelMap

log = logging.getLogger(__name__)


def read_training_labels(path: str | Path) -> Labels:
    """The labels of a ``--labels`` file to train on: :func:`hpa.io.read_labels`, at least one row.

    Raises:
        HPADataError: as :func:`hpa.io.read_labels`, or a file with no row under its header.
    """
    labels = read_labels(path)
    if not len(labels):
        raise HPADataError(f"{path}: no rows under the header: the label file labels no image to train on")
    return labels


def check_inputs(images: Folders, labels: Labels, masks: Folders, folds: int = 2) -> None:
    """Before any work: every image folder exists and holds some of its labelled images,
    every SEG_DIR is one, and there are enough labelled images for ``folds`` folds.

    Raises:
        HPADataError: an image folder that is missing, or where none of its labelled
            Ids has a file; a SEG_DIR without ``cells/``; fewer labelled images than folds.
    """
    from hpa.io import list_image_ids

    if len(labels) < folds:
        raise HPADataError(
            f"{len(labels)} labelled images cannot be split into {folds} folds (every fold needs a "
            f"validation image): use at most {max(2, len(labels))} folds, or label more images"
        )

    by_folder: dict[str, list[str]] = {}
    for image_id in labels.ids:
        folder = images[image_id] if isinstance(images, Mapping) else images
        by_folder.setdefault(str(folder), []).append(image_id)
    for folder, ids in by_folder.items():
        if not Path(folder).is_dir():
            raise HPADataError(f"{folder}: images folder not found")
        present = set(list_image_ids(folder))
        if not present.intersection(ids):
            raise HPADataError(
                f"{folder}: none of the {len(ids)} labelled Id(s) has a file in this images folder "
                f"(e.g. {ids[0]}_green.png); is it the folder of the label file's images?"
            )
    for seg in sorted({str(p) for p in masks.values()}) if isinstance(masks, Mapping) else [str(masks)]:
        SegDir(seg).check()


def model_kind(out: str | Path) -> str | None:
    """The kind of model ``out`` holds: ``model``, ``model-folds``, ``blend`` (None: none).

    Told by its provenance record, else by its files: ``ensemble.json`` (a blend's says
    ``"combine": "image"``), ``fold-<k>/`` folders, ``config.json``.
    """
    import json

    from hpa.classification.ensemble import BLEND, MAIN

    out = Path(out)
    if not out.is_dir():
        return None
    record = read_record(out)
    if record is not None and record.kind in ("model", "model-folds", "blend"):
        return record.kind
    spec = out / ModelDir.ENSEMBLE
    try:
        combine = json.loads(spec.read_text(encoding="utf-8")).get("combine") if spec.is_file() else None
    except (ValueError, AttributeError):
        combine = None  # a malformed file is reported where it is read
    if combine == BLEND or (out / MAIN).is_dir():
        return "blend"
    if spec.is_file() or any(out.glob(f"{ModelDir.FOLD_PREFIX}*/{ModelDir.CONFIG}")):
        return "model-folds"
    if (out / ModelDir.CONFIG).is_file():
        return "model"
    return None


def check_model_kind(out: str | Path, blend: bool, *, folds: bool = False) -> None:
    """Refuse to train one kind of model (plain, ``--folds``, blend) into a folder of another.

    A plain or ``--folds`` run keeps the entries of ``out`` it does not write, so over a
    blend folder it would leave ``ensemble.json`` pointing ``hpa predict`` at the old
    members; over a ``--folds`` folder a plain model would be averaged with the old
    folds; a blend over a model folder would leave that model's files beside it.

    Raises:
        HPAConfigError: naming the folder, both kinds and what to do.
    """
    have = model_kind(out)
    want = "blend" if blend else "model-folds" if folds else "model"
    if have is None or have == want:
        return
    if blend:
        raise HPAConfigError(
            f"{out}: holds {KIND_NAMES[have]}, trained without a companion; use another --out, add "
            "--companion none to retrain that model, or --overwrite to rebuild the folder"
        )
    if have == "blend":
        raise HPAConfigError(
            f"{out}: holds a model blended with a companion (ensemble.json); use another --out, "
            "train with the companion again (--companion scratch, the defaults' from 100 labelled "
            "images on), or --overwrite to rebuild the folder"
        )
    raise HPAConfigError(f"{out}: holds {KIND_NAMES[have]}, this run trains {KIND_NAMES[want]}; {WAY_OUT}")


def clear_other_kind(out: str | Path, *, blend: bool, folds: bool) -> None:
    """Remove hpa's files of a model of another kind from ``out`` (``--overwrite``).

    Only the names a model, ``--folds`` or blend folder holds are removed (the user's
    own files stay), and only when ``out`` holds another kind than the run's.
    """
    import shutil

    from hpa.classification.ensemble import MAIN
    from hpa.classification.train import COMPANIONS
    from hpa.runlog import RUN_LOG

    out = Path(out)
    have = model_kind(out)
    if have is None or have == ("blend" if blend else "model-folds" if folds else "model"):
        return
    files = {
        v for k, v in vars(ModelDir).items() if k.isupper() and isinstance(v, str) and k != "FOLD_PREFIX"
    }
    files |= {RUN_LOG, "provenance.json"}
    dirs = {MAIN, *COMPANIONS}
    log.info("%s: removing the files of %s (--overwrite)", out, KIND_NAMES[have])
    for entry in list(out.iterdir()):
        if (
            entry.is_dir()
            and not entry.is_symlink()
            and (entry.name in dirs or entry.name.startswith(ModelDir.FOLD_PREFIX))
        ):
            shutil.rmtree(entry)
        elif entry.is_file() and entry.name in files:
            entry.unlink()


def model_record(
    kind: str, cfg: TrainConfig, images: Folders, labels: Labels, masks: Folders, **extra: Any
) -> Provenance:
    """The provenance record of a model folder trained by ``cfg`` on these inputs.

    Settings that change where and how fast a run goes (:data:`_RECORD_FREE`) are left
    out; ``extra`` settings are added (a blend's ``all_folds``).
    """
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _RECORD_FREE}
    if kind != "model":
        settings.pop("fold", None)
    image_dirs = images.values() if isinstance(images, Mapping) else [images]
    seg_dirs = masks.values() if isinstance(masks, Mapping) else [masks]
    return Provenance(
        kind,
        "hpa train-cells",
        {**settings, **extra},
        {
            "images": fingerprints(image_dirs, images_fingerprint),
            "labels": (labels_fingerprint(labels),),
            "masks": fingerprints(seg_dirs, folder_fingerprint),
        },
    )


#: Training settings not in a model's record: where and how fast, not what, it trains.
_RECORD_FREE = ("workers", "device", "precision", "engine", "max_steps")


def check_backbone(name: str) -> None:
    """Raise :class:`HPAConfigError` unless ``name`` is a timm model, suggesting close names."""
    import difflib

    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise HPAConfigError(f"--backbone {name!r}: not a timm model{hint}; timm.list_models() lists them")


def train_model(
    images: Folders,
    labels: Labels,
    masks: Folders,
    out: str | Path,
    cfg: TrainConfig,
    *,
    cache_root: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    channel_map: ChannelMap | None = None,
) -> dict[str, Any]:
    """Train a classifier and write its model folder.

    Args:
        images: folder of channel files, or ``{image_id: folder}`` for images from
            several folders (:func:`combine_sources`).
        labels: image labels (2018 or 2021 set).
        masks: SEG_DIR of ``hpa segment``, or ``{image_id: SEG_DIR}``.
        out: the model folder to write.
        cfg: the run's settings.
        cache_root: crop cache folder (default ``$HPA_CACHE_DIR`` or ``MASKS/crop-cache``).
        resume: continue from ``OUT/last.ckpt``.
        channel_map: which channel of a multi-channel TIFF is which.

    Returns:
        The metrics written to ``metrics.json``.
    """
    from hpa.classification.channels import parse_channels
    from hpa.classification.crops import CropSettings
    from hpa.classification.train import auto_epochs, frozen_run

    t_start = time.perf_counter()
    channels = parse_channels(cfg.channels)
    seg_dirs = _check_folders(images, masks, out, channel_map)
    check_masks_of(images, masks)
    record = model_record("model", cfg, images, labels, masks)
    run = _start_run(Path(out), cfg, labels, resume=resume, progress=progress, record=record)
    cfg = run.cfg
    labels = _labels_with_masks(labels, masks, seg_dirs)
    crop = CropSettings(cfg.crop_size, cfg.margin, cfg.mask_outside, tuple(cfg.tile_grids), cfg.crop_scale,
                        image_scale=cfg.intensity == "image")  # fmt: skip
    root = CacheDir.default_root(cache_root, seg_dirs[0])
    cache, labels = _build_cache_once(images, masks, labels, crop, root, run, channel_map)
    data, train_ids = _split_views(cache, labels, cfg, channels)
    if cfg.epochs is None:
        cfg = replace(cfg, epochs=auto_epochs(len(data.train_rows), frozen=frozen_run(cfg)))
        log.info(
            "epochs: %d (automatic for %d training views%s)",
            cfg.epochs,
            len(data.train_rows),
            ", head on frozen features" if frozen_run(cfg) else "",
        )
    _log_views(data)
    model_cfg = _model_config(cfg, labels, data, crop, channels)
    if run.world.is_main:
        _write_settings_and_split(run, cfg, labels, train_ids)
    model, history, evaluated = _fit_and_validate(run, cfg, model_cfg, data, resume=resume)
    if not run.world.is_main:
        return evaluated[0]
    result = _choose_tile_weight(data, cfg, model_cfg, evaluated)
    metrics = _metrics(result, data, train_ids, history, time.perf_counter() - t_start)
    image_dirs = sorted({str(p) for p in images.values()}) if isinstance(images, Mapping) else [str(images)]
    _publish_model_folder(
        run, model, result, data, metrics, history, _Sources(seg_dirs, image_dirs, labels), record
    )
    return metrics


def _fit_and_validate(
    run: _Run, cfg: TrainConfig, model_cfg: ModelConfig, data: TrainData, *, resume: bool
) -> tuple[
    torch.nn.Module, list[dict[str, Any]], tuple[dict[str, float], np.ndarray, np.ndarray, ThresholdResult]
]:
    """Create the network, train it (the model folder saved at every best epoch), score the validation.

    Returns:
        The best epoch's model, the per-epoch history and what
        :func:`hpa.classification.train.evaluate_views` returns for it.
    """
    from hpa.classification import distributed
    from hpa.classification.model import create_model, save_model_folder
    from hpa.classification.train import evaluate_views, fit

    model = create_model(cfg.backbone, model_cfg.num_classes, model_cfg.in_chans, cfg.pretrained)
    model, history = fit(
        model,
        data,
        cfg,
        run.checkpoint,
        resume=resume,
        on_best=lambda m, rec: save_model_folder(run.staging, model_cfg, m),
        world=run.world,
        settings=run.settings,
    )
    engine = training_engine(cfg.engine, cfg.device, cfg.precision)
    evaluated = evaluate_views(model.to(cfg.device), data, cfg, run.world, engine=engine)
    distributed.shutdown(run.world)
    return model, history, evaluated


def _check_folders(
    images: Folders, masks: Folders, out: str | Path, channel_map: ChannelMap | None
) -> list[str]:
    """Check the input and output folders before any work; returns the SEG_DIRs.

    Raises:
        HPADataError: a SEG_DIR has no ``cells/``, or an image folder does not fit ``channel_map``.
        HPAConfigError: ``out`` exists and is not a folder.
    """
    from hpa.io_tiff import check_channel_map

    image_dirs = sorted({str(p) for p in images.values()}) if isinstance(images, Mapping) else [str(images)]
    for folder in image_dirs:
        check_channel_map(folder, channel_map)
    seg_dirs = sorted({str(p) for p in masks.values()}) if isinstance(masks, Mapping) else [str(masks)]
    for seg in seg_dirs:
        SegDir(seg).check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HPAConfigError(f"--out {out}: exists and is not a folder")
    return seg_dirs


@dataclass(frozen=True)
class _Run:
    """One process's view of a training run (one of several under torchrun).

    Attributes:
        cfg: the settings, device and precision resolved.
        world: the torchrun world (one process without torchrun).
        out: the model folder (a link to it resolved).
        staging: where the model folder is built (``out`` on the other ranks).
        checkpoint: ``OUT/last.ckpt``.
        settings: what ``--resume`` checks (:func:`resume_settings`).
        progress: show progress bars (rank 0 only).
    """

    cfg: TrainConfig
    world: World
    out: Path
    staging: Path
    checkpoint: Path
    settings: dict[str, Any]
    progress: bool


def _start_run(
    out: Path, cfg: TrainConfig, labels: Labels, *, resume: bool, progress: bool, record: Provenance
) -> _Run:
    """Join the torchrun world, check ``--resume``, stage the model folder, seed.

    The checkpoint records the digest of ``record``'s inputs: a resume with other
    images, labels or masks is refused like one with other settings.
    """
    import torch

    from hpa.classification import distributed
    from hpa.classification.train import set_seed

    if out.is_symlink():  # the folder is swapped, not the link to it
        out = out.resolve()
    world, device = distributed.init(cfg.device)
    # the engine from the precision as given (auto is not bf16 for it), then the precision
    engine = training_engine(cfg.engine, device, cfg.precision)
    cfg = replace(cfg, device=device, precision=resolve_precision(cfg.precision, device), engine=engine)
    if not world.is_main:
        progress = False
        logging.getLogger("hpa").setLevel(logging.WARNING)
    settings = {
        **resume_settings(cfg, labels),
        "world_size": world.size,
        "inputs_sha256": record.inputs_digest(),
    }
    checkpoint = out / CHECKPOINT_FILE
    if resume:
        check_resume(checkpoint, settings)
    # The model folder is built beside OUT and swapped in at the end, so OUT always
    # holds one run's complete model; last.ckpt stays in OUT, where --resume finds it.
    staging = prepare_staging(out, rescue=(CHECKPOINT_FILE,)) if world.is_main else out
    if world.is_main:
        runlog.write_into(staging, previous=out if resume else None)
    claim_entries(out, ModelDir.ENTRIES, "hpa train-cells")  # never a user's README.md or other file
    set_seed(cfg.seed)
    if cfg.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.size))
    return _Run(cfg, world, out, staging, checkpoint, settings, progress)


def masked_ids(labels: Labels, masks: Folders) -> list[str]:
    """The Ids of ``labels`` whose image has a cell mask in ``masks`` (the images a run trains on)."""
    from hpa.classification.cache import folder_of

    return [i for i in labels.ids if SegDir(folder_of(masks, i)).cell_mask(i).is_file()]


def _labels_with_masks(labels: Labels, masks: Folders, seg_dirs: Sequence[str]) -> Labels:
    """The labelled images that have a cell mask (the others are left out, with a warning)."""
    have_mask = masked_ids(labels, masks)
    if len(have_mask) < len(labels):
        log.warning(
            "%d of %d labelled images have no mask in %s and are left out",
            len(labels) - len(have_mask),
            len(labels),
            ", ".join(seg_dirs),
        )
    if not have_mask:
        raise HPADataError(f"{', '.join(seg_dirs)}: none of the labelled images has a cell mask")
    return labels.subset(have_mask)


def _build_cache_once(
    images: Folders,
    masks: Folders,
    labels: Labels,
    crop: CropSettings,
    cache_root: Path,
    run: _Run,
    channel_map: ChannelMap | None,
) -> tuple[CropCache, Labels]:
    """The crop cache of the labelled images: rank 0 builds it, the other ranks then open it.

    Returns:
        The cache and the labels of the images it holds (those that could not be
        cropped are left out, with a warning).
    """
    from hpa.classification import distributed
    from hpa.classification.cache import build_cache

    if not run.world.is_main:
        distributed.barrier(run.world)
    cache = build_cache(
        images,
        masks,
        list(labels.ids),
        crop,
        cache_root,
        workers=run.cfg.workers,
        progress=run.progress,
        channel_map=channel_map,
    )
    if run.world.is_main:
        distributed.barrier(run.world)
    ok = [i for i in labels.ids if i not in cache.failures]
    if len(ok) < len(labels):
        log.warning("%d image(s) could not be cropped and are left out of the split", len(labels) - len(ok))
    return cache, labels.subset(ok)


def _write_settings_and_split(run: _Run, cfg: TrainConfig, labels: Labels, train_ids: set[str]) -> None:
    """``train_config.yaml`` (the resolved settings) and ``split.csv`` (each image's side)."""
    save_yaml(run.staging / ModelDir.TRAIN_CONFIG, {**to_dict(cfg), "world_size": run.world.size})
    sides = ["train" if i in train_ids else "val" for i in labels.ids]
    split = pd.DataFrame({"image_id": labels.ids, "side": sides})
    write_csv(run.staging / ModelDir.SPLIT, split)


def _split_views(
    cache: CropCache, labels: Labels, cfg: TrainConfig, channels: tuple[str, ...]
) -> tuple[TrainData, set[str]]:
    """Split the images (:func:`split_images`) and select each side's views of ``cfg``'s kinds.

    Returns:
        The :class:`TrainData` (normalisation measured on the training views) and the
        training image Ids.

    Raises:
        HPADataError: one side has no view.
    """
    from hpa.classification.cache import channel_stats
    from hpa.classification.channels import channel_matrix, is_identity
    from hpa.classification.train import TrainData, frozen_run

    train_idx, val_idx = split_images(labels.y, cfg.folds, cfg.fold, cfg.seed)
    train_ids = {labels.ids[k] for k in train_idx}
    val_ids = [labels.ids[k] for k in val_idx]
    log.info(
        "split: %d training images, %d validation images (fold %d of %d)",
        len(train_ids),
        len(val_ids),
        cfg.fold,
        cfg.folds,
    )
    row_of = {i: k for k, i in enumerate(labels.ids)}
    kinds = {"cell"} if not cfg.use_tiles else {"tile"} if not cfg.use_cells else {"cell", "tile"}
    index = cache.index
    usable = index["kind"].isin(kinds).to_numpy()
    in_train = index["image_id"].isin(train_ids).to_numpy()
    train_rows = np.flatnonzero(usable & in_train)
    val_rows = np.flatnonzero(usable & ~in_train & index["image_id"].isin(set(val_ids)).to_numpy())
    if not len(train_rows) or not len(val_rows):
        raise HPADataError("no training or no validation views: check the masks and the label file")
    targets = labels.y[[row_of[i] for i in index["image_id"].to_numpy()[train_rows]]].astype(np.float32)
    mix = None if is_identity(channels) else channel_matrix(channels)
    # a frozen backbone's features do not depend on the split when its input statistics do
    # not either: they come from every view (no label is used), so every fold of a
    # --folds run reuses one set of features
    stat_rows = np.flatnonzero(usable) if frozen_run(cfg) else train_rows
    mean, std = channel_stats(cache, stat_rows, seed=cfg.seed, mix=mix, intensity=cfg.intensity)
    val_y = labels.subset(val_ids).y
    data = TrainData(
        cache.views, cache.scale, index, train_rows, val_rows, targets, val_ids, val_y, mean, std, mix,
        cache.folder,
    )  # fmt: skip
    return data, train_ids


def _log_views(data: TrainData) -> None:
    from hpa.classification.cache import CELL

    log.info(
        "%d training views (%d cells), %d validation views; channel mean %s std %s",
        len(data.train_rows),
        int((data.index["kind"].to_numpy()[data.train_rows] == CELL).sum()),
        len(data.val_rows),
        np.round(data.mean, 4).tolist(),
        np.round(data.std, 4).tolist(),
    )


def _model_config(
    cfg: TrainConfig, labels: Labels, data: TrainData, crop: CropSettings, channels: tuple[str, ...]
) -> ModelConfig:
    """What the model folder records about the network, its inputs and its pooling."""
    from hpa.classification.model import ModelConfig

    return ModelConfig(
        backbone=cfg.backbone,
        class_names=tuple(labels.class_names),
        label_set=labels.label_set,
        in_chans=len(channels),
        channels=channels,
        mean=tuple(float(v) for v in data.mean),
        std=tuple(float(v) for v in data.std),
        crop=crop,
        pooling=cfg.pooling,
        tile_weight=0.5 if cfg.tile_weight is None else cfg.tile_weight,
        use_cells=cfg.use_cells,
        use_tiles=cfg.use_tiles,
        intensity=cfg.intensity,
        input_size=cfg.input_size,
    )


@dataclass(frozen=True)
class _Validation:
    """The final model's validation results, at the tile weight kept in ``model_cfg``.

    Attributes:
        model_cfg: the model folder's config.
        metrics: ``val_macro_f1`` and ``val_macro_f1_at_0.5``.
        probs: ``(len(val_rows), K)`` view probabilities.
        scores: ``(M, K)`` validation image scores.
        tuned: the thresholds tuned on them.
        selection: validation macro F1 by candidate tile weight (empty when it was given).
    """

    model_cfg: ModelConfig
    metrics: dict[str, float]
    probs: np.ndarray
    scores: np.ndarray
    tuned: ThresholdResult
    selection: dict[float, float]


def _choose_tile_weight(
    data: TrainData,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    evaluated: tuple[dict[str, float], np.ndarray, np.ndarray, ThresholdResult],
) -> _Validation:
    """Choose the tile weight on the validation images when ``cfg`` leaves it open.

    ``evaluated`` is ``(metrics, view probabilities, image scores, thresholds)`` at the
    provisional weight (:func:`hpa.classification.train.evaluate_views`).
    """
    from hpa.aggregation.selection import choose_weight, tuned_macro_f1
    from hpa.classification.train import TILE_WEIGHTS
    from hpa.classification.validation import score_validation_images, validation_image_scores

    metrics, probs, scores, tuned = evaluated
    selection: dict[float, float] = {}
    if cfg.tile_weight is None and cfg.use_cells and cfg.use_tiles:
        choice = choose_weight(
            data.val_y, TILE_WEIGHTS, partial(validation_image_scores, data, probs, cfg),
            tuned_macro_f1(cfg.threshold_shrink),
        )  # fmt: skip
        weight, selection = choice.weight, choice.metric
        log.info(
            "tile weight %.2f chosen on the validation images (macro F1 by weight: %s)",
            weight,
            {w: round(f, 4) for w, f in selection.items()},
        )
        model_cfg = replace(model_cfg, tile_weight=weight)
        metrics, scores, tuned = score_validation_images(data, probs, cfg, weight)
    return _Validation(model_cfg, metrics, probs, scores, tuned, selection)


def _metrics(
    result: _Validation, data: TrainData, train_ids: set[str], history: list[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    """What ``metrics.json`` records: validation F1 (overall and per class), sizes, time."""
    from hpa.aggregation import apply_thresholds, per_class_report

    y_pred = apply_thresholds(result.scores, result.tuned.thresholds)
    report = per_class_report(data.val_y, y_pred, result.model_cfg.class_names)
    return {
        **result.metrics,
        "n_train_images": len(train_ids),
        "n_val_images": len(data.val_ids),
        "n_train_views": len(data.train_rows),
        "best_epoch": _best_epoch(history),
        "train_seconds": seconds,
        "tile_weight": result.model_cfg.tile_weight,
        "tile_weight_selection": {str(w): f for w, f in result.selection.items()},
        "per_class": report.to_dict(orient="records"),
    }


@dataclass(frozen=True)
class _Sources:
    """What the model card says the model was trained on."""

    seg_dirs: list[str]
    image_dirs: list[str]
    labels: Labels


def _publish_model_folder(
    run: _Run,
    model: torch.nn.Module,
    result: _Validation,
    data: TrainData,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    sources: _Sources,
    record: Provenance,
) -> None:
    """Weights, config, thresholds, metrics, history, validation scores, the model card
    (``README.md``) and the provenance record, swapped into OUT."""
    from hpa.aggregation import save_thresholds
    from hpa.classification.model import THRESHOLDS_FILE, save_model_folder

    model_cfg, staging = result.model_cfg, run.staging
    save_model_folder(staging, model_cfg, model)
    save_thresholds(staging / THRESHOLDS_FILE, result.tuned, model_cfg.class_names)
    save_json(staging / ModelDir.METRICS, metrics)
    write_csv(staging / ModelDir.HISTORY, pd.DataFrame(history))
    val_index = data.index.iloc[data.val_rows].reset_index(drop=True)
    ModelDir(staging).write_val_scores(
        data.val_ids, result.scores, val_index, result.probs, model_cfg.class_names
    )
    write_training_record(
        staging, name=run.out.name, seg_dirs=sources.seg_dirs, images=sources.image_dirs, labels=sources.labels,
        metrics=metrics, thresholds=result.tuned.thresholds, settings=to_dict(run.cfg),
    )  # fmt: skip
    write_record(staging, record)
    swap_in_keeping(staging, run.out)
    log.info(
        "model folder %s: val macro F1 %.4f (tuned thresholds), %.4f at 0.5; %.0f s",
        run.out,
        metrics["val_macro_f1"],
        metrics["val_macro_f1_at_0.5"],
        metrics["train_seconds"],
    )


#: The checkpoint ``--resume`` continues from, in the model folder.
CHECKPOINT_FILE = ModelDir.CHECKPOINT

#: Settings that may change on ``--resume``: they change where and how fast a run goes,
#: not what it trains.
_RESUME_FREE = ("workers", "device", "precision", "engine")


def resume_settings(cfg: TrainConfig, labels: Labels) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: settings and labels.

    Every training setting except :data:`_RESUME_FREE`, and a digest of the labels
    (Ids, label set and classes), so that another label file is caught too.
    """
    settings = {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE}
    return {**settings, "labels_sha256": labels_digest(labels)}


def check_resume(checkpoint: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume ``checkpoint`` with other settings than the run that wrote it.

    Raises:
        HPAConfigError: the settings differ (each one named, old and new value), or the
            checkpoint does not record them.
    """
    import torch

    if not checkpoint.is_file():
        return
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise HPAConfigError(f"{checkpoint}: cannot read the checkpoint to resume ({exc})") from None
    saved = state.get("settings") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise HPAConfigError(
            f"{checkpoint}: the checkpoint does not record its run's settings (an older hpa wrote it), "
            "so --resume cannot check it continues the same run; rerun without --resume"
        )
    changed = []
    for key in sorted(set(saved) | set(settings)):
        if key == "inputs_sha256" and key not in saved:
            continue  # written before checkpoints recorded their inputs: settings and labels checked
        if saved.get(key) != settings.get(key):
            if key == "labels_sha256":
                changed.append("the labels (file content)")
            elif key == "inputs_sha256":
                changed.append("the images, labels or masks (their fingerprints)")
            else:
                changed.append(f"{key} {saved.get(key)!r} -> {settings.get(key)!r}")
    if changed:
        raise HPAConfigError(
            f"--resume: {checkpoint} was written with other settings: {'; '.join(changed)}; "
            "rerun with the interrupted run's settings, or without --resume to start over"
        )


def combine_sources(
    images: Sequence[str | Path], labels: Sequence[Labels], masks: Sequence[str | Path]
) -> tuple[dict[str, Path], Labels, dict[str, Path]]:
    """One training set from several ``--images DIR --labels CSV --masks SEG_DIR`` triples.

    Args:
        images, labels, masks: one entry per source, in the same order.

    Returns:
        ``({image_id: images folder}, all labels, {image_id: SEG_DIR})``.

    Raises:
        HPAConfigError: the counts differ, the label sets differ, or an Id is in two sources.
    """
    from hpa.errors import HPAConfigError

    if not len(images) == len(labels) == len(masks):
        raise HPAConfigError(
            f"{len(images)} --images, {len(labels)} --labels and {len(masks)} --masks: give one of each per source"
        )
    sets = {lab.label_set for lab in labels}
    if len(sets) > 1:
        raise HPAConfigError(f"the --labels files use different label sets ({', '.join(sorted(sets))})")
    image_dir: dict[str, Path] = {}
    seg_dir: dict[str, Path] = {}
    for folder, lab, seg in zip(images, labels, masks):
        for i in lab.ids:
            if i in image_dir:
                raise HPAConfigError(f"Id {i} is labelled in two sources ({image_dir[i]} and {folder})")
            image_dir[i], seg_dir[i] = Path(folder), Path(seg)
    ids = tuple(i for lab in labels for i in lab.ids)
    y = np.concatenate([lab.y for lab in labels])
    return image_dir, Labels(ids, y, labels[0].label_set), seg_dir


def _best_epoch(history: list[dict[str, Any]]) -> int:
    if not history:
        return 0
    return int(max(history, key=lambda r: r["val_macro_f1"])["epoch"])


def check_masks_of(images: Folders, masks: Folders) -> None:
    """Refuse ``--masks`` made from another images folder than ``--images`` (each source).

    Raises:
        HPAConfigError: :func:`hpa.artefacts.provenance.check_masks_images`.
    """
    from hpa.artefacts.provenance import check_masks_images

    if isinstance(masks, Mapping) or isinstance(images, Mapping):
        ids = masks.keys() if isinstance(masks, Mapping) else images.keys()  # type: ignore[union-attr]
        pairs = {
            (
                str(masks[i] if isinstance(masks, Mapping) else masks),
                str(images[i] if isinstance(images, Mapping) else images),
            )
            for i in ids
        }
    else:
        pairs = {(str(masks), str(images))}
    for seg, folder in sorted(pairs):
        check_masks_images(seg, folder)
