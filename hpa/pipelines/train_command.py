"""``hpa train-cells``: its settings, and the choice of what it trains.

A blend of the main model and its companion (:mod:`hpa.pipelines.blend`), every fold of
a split (:mod:`hpa.pipelines.folds`) or one model (:func:`hpa.pipelines.train.train_model`);
those three build on :mod:`hpa.pipelines.train` and never on this module.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpa.config import log_settings, resolve, to_dict
from hpa.pipelines.blend import train_blend
from hpa.pipelines.folds import train_folds
from hpa.pipelines.train import (
    check_backbone,
    check_inputs,
    check_model_kind,
    clear_other_kind,
    combine_sources,
    masked_ids,
    read_training_labels,
    train_model,
)

if TYPE_CHECKING:
    from hpa.classification.cache import Folders
    from hpa.classification.train import TrainConfig
    from hpa.io import Labels
    from hpa.io_tiff import ChannelMap

log = logging.getLogger(__name__)

#: Fewer labelled images than this, and the device defaults train every fold of the split
#: (as ``--folds 5``) without a companion: one split would tune each class's threshold on
#: its validation fold, under 20 images with a handful of positives, where every fold
#: tunes them on the out-of-fold scores of all images and predicts with the average of
#: five models. On nested cross-validation of 67 real images (benchmarks/RESULTS.md,
#: issue 24) that raised the frozen-feature model's macro AP on every split seed, under
#: both segmentation settings (+0.040 and +0.032 over three seeds), and its macro F1
#: on five of six seed-setting pairs; the scratch companion, which a one-split run trains
#: beside it, got no weight on those images and would cost five trainings here.
SMALL_SET = 100


def plan_for_size(
    cfg: TrainConfig, n_images: int, *, all_folds: bool, given: Collection[str]
) -> tuple[TrainConfig, bool]:
    """The settings and the every-fold choice of a run of the defaults on ``n_images`` images.

    Below :data:`SMALL_SET` labelled images, a run of the device defaults (no backbone,
    ``folds`` or ``fold`` among the ``given`` settings) trains every fold, and no
    companion unless one is given; anything else is left as it is.

    Args:
        cfg: the resolved settings.
        n_images: labelled images of the run that have a cell mask
            (:func:`hpa.pipelines.train.masked_ids`).
        all_folds: the choice of the flags (``--folds K`` without ``--fold``).
        given: the settings the user gave (flags, ``--config`` keys, API keywords).

    Returns:
        ``(settings, all_folds)``.

    >>> from hpa.classification.train import TrainConfig
    >>> cfg = TrainConfig(companion="scratch")
    >>> plan, every = plan_for_size(cfg, 67, all_folds=False, given=())
    >>> plan.companion, every
    (None, True)
    >>> plan_for_size(cfg, 67, all_folds=False, given=("companion",))[0].companion
    'scratch'
    >>> [plan_for_size(cfg, n, all_folds=False, given=g)[1] for n, g in [(240, ()), (67, ("fold",))]]
    [False, False]
    """
    if all_folds or n_images >= SMALL_SET or {"backbone", "folds", "fold"} & set(given):
        return cfg, all_folds
    companion = cfg.companion if "companion" in given else None
    log.info(
        "%d labelled images (fewer than %d): every fold of %d is trained, thresholds from all images' "
        "out-of-fold scores, companion: %s (--fold 0 for one split, --companion to add one)",
        n_images, SMALL_SET, cfg.folds, companion or "none",
    )  # fmt: skip
    return replace(cfg, companion=companion), True


def _train_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields of ``hpa train-cells``' flags (None: not given)."""
    return {
        "backbone": args.backbone,
        "pretrained": args.pretrained,
        "crop_size": args.crop_size,
        "crop_scale": getattr(args, "crop_scale", None),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "loss": args.loss,
        "folds": args.folds,
        "fold": args.fold,
        "seed": args.seed,
        "max_steps": args.max_steps,
        "workers": args.workers,
        "channels": getattr(args, "channels", None),
        "input_size": getattr(args, "input_size", None),
        "intensity": getattr(args, "intensity", None),
        "freeze_epochs": getattr(args, "freeze_epochs", None),
        "use_tiles": False if args.no_tiles else None,
        "use_cells": False if args.no_cells else None,
        "device": args.device,
        "precision": getattr(args, "precision", None),
        "engine": getattr(args, "engine", None),
        "companion": getattr(args, "companion", None),
    }


def given_settings(args: argparse.Namespace) -> set[str]:
    """The settings the user gave: flags, and the keys of a ``--config`` file."""
    from hpa.config import load_yaml

    given = {name for name, value in _train_flags(args).items() if value is not None}
    return given | set(load_yaml(args.config)) if args.config else given


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's :class:`TrainConfig`: device defaults, then ``--config`` YAML, then explicit flags."""
    from hpa.classification.train import TrainConfig

    cfg = resolve(TrainConfig, args.config, build=TrainConfig.from_settings, **_train_flags(args))
    check_backbone(cfg.backbone)
    return cfg


def train_cells(
    images: Folders,
    labels: Labels,
    masks: Folders,
    out: str | Path,
    cfg: TrainConfig,
    *,
    all_folds: bool = False,
    cache_root: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    channel_map: ChannelMap | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """What ``hpa train-cells`` runs: the model and its companion blended
    (:func:`hpa.pipelines.blend.train_blend`) when ``cfg.companion`` names one, else every
    fold (:func:`hpa.pipelines.folds.train_folds`) or one run
    (:func:`hpa.pipelines.train.train_model`).

    Returns:
        The metrics written to ``OUT/metrics.json``.

    With ``overwrite``, a folder of another kind loses hpa's files of that kind first, a
    fold or member made from other inputs or settings is retrained instead of refused,
    and no checkpoint is resumed.

    Raises:
        HPAConfigError: ``out`` holds a model of another kind (a blend, a ``--folds``
            ensemble or a plain model), which this run would leave half replaced, and
            ``overwrite`` is False.
    """
    blend, folds = cfg.companion is not None, all_folds and cfg.companion is None
    check_inputs(images, labels, masks, cfg.folds)
    if overwrite:
        clear_other_kind(out, blend=blend, folds=folds)
        resume = False
    check_model_kind(out, blend=blend, folds=folds)
    if cfg.companion is not None:
        return train_blend(
            images, labels, masks, out, cfg, all_folds=all_folds, cache_root=cache_root, resume=resume,
            progress=progress, channel_map=channel_map, overwrite=overwrite,
        )  # fmt: skip
    if all_folds:
        return train_folds(
            images, labels, masks, out, cfg, cache_root=cache_root, progress=progress, channel_map=channel_map,
            overwrite=overwrite,
        )  # fmt: skip
    return train_model(
        images, labels, masks, out, cfg, cache_root=cache_root, resume=resume, progress=progress,
        channel_map=channel_map,
    )  # fmt: skip


def main(args: argparse.Namespace) -> int | tuple[int, str]:
    """Entry point of ``hpa train-cells``."""
    from hpa.io import remove_stale_temporaries
    from hpa.outputs import check_apart

    inputs = {
        f"{flag} {path}": path
        for flag in ("--images", "--masks", "--labels")
        for path in (lambda v: v if isinstance(v, list) else [v])(getattr(args, flag[2:]))
    }
    check_apart(args.out, inputs)
    channel_map = getattr(args, "channel_map", None)
    remove_stale_temporaries(args.out)  # of a run killed while writing the model folder
    cfg = resolve_train_config(args)
    images: Folders = args.images
    masks: Folders = args.masks
    if isinstance(args.images, list):  # --images/--labels/--masks may be repeated
        if len(args.images) == len(args.labels) == len(args.masks) == 1:
            images, labels, masks = args.images[0], read_training_labels(args.labels[0]), args.masks[0]
        else:
            images, labels, masks = combine_sources(
                args.images, [read_training_labels(p) for p in args.labels], args.masks
            )
            log.info("%d images from %d sources", len(labels), len(args.images))
    else:
        labels = read_training_labels(args.labels)
    all_folds = args.folds is not None and args.fold is None  # every fold, out-of-fold thresholds
    n_images = len(masked_ids(labels, masks))  # the images it trains on
    cfg, all_folds = plan_for_size(cfg, n_images, all_folds=all_folds, given=given_settings(args))
    log_settings(
        "train-cells settings",
        {
            **to_dict(cfg),
            "every_fold": all_folds,
            "epochs": cfg.epochs or "auto (by the number of training views)",
            "label_set": labels.label_set,
            "images": args.images,
            "masks": args.masks,
            "out": args.out,
            "channel_map": args.channel_map.spec if getattr(args, "channel_map", None) else None,
        },
    )
    from hpa.classification.distributed import world_from_env

    metrics = train_cells(
        images, labels, masks, args.out, cfg, all_folds=all_folds, cache_root=args.cache,
        resume=args.resume, channel_map=channel_map, overwrite=getattr(args, "overwrite", False),
    )  # fmt: skip
    if not world_from_env().is_main:
        return 0
    what = "out-of-fold" if all_folds else "validation"
    score = metrics["oof_macro_f1" if all_folds else "val_macro_f1"]
    if cfg.companion is not None:
        from hpa.classification.ensemble import MAIN

        w = metrics["blend"]["weights"][MAIN]
        return 0, f"blend written to {args.out}: {what} macro F1 {score:.4f} (main model's share {w:.1f})"
    if all_folds:
        return 0, f"{cfg.folds} fold models written to {args.out}: out-of-fold macro F1 {score:.4f}"
    return 0, f"model written to {args.out}: validation macro F1 {score:.4f}"
