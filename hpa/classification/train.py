"""Training the cell-crop + tile classifier from image-level labels.

Cell crops inherit their image's labels (weak supervision: a label carried by one cell
is also given to its unlabelled neighbours), tiles carry the image's labels too. The
model is selected and its thresholds tuned by the image-level macro F1 it yields after
pooling the validation views per image, which is what the competition scores.

Recipe: AdamW, linear warm-up then cosine decay (timm's scheduler, stepped per
update); with pretrained weights the head is first trained with the backbone frozen,
then everything; channels-last, and bf16 autocast where the device computes bf16
natively (CUDA, AVX512-BF16/AMX CPUs); an optional progressive
schedule of input sizes; a checkpoint after every epoch for ``--resume``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from hpa.aggregation import POOLING_METHODS, ThresholdResult
from hpa.classification.crops import CROP_SCALES
from hpa.classification.data import BatchLoader, balance_weights
from hpa.classification.distributed import World, barrier, gather_rows
from hpa.classification.engine import check_engine, make_engine, training_engine
from hpa.classification.inference import autocast, resolve_precision, score_views
from hpa.classification.losses import LOSSES, get_loss
from hpa.classification.model import INTENSITIES
from hpa.classification.pretrained import pretrained_for_backbone
from hpa.classification.probe import fit_head
from hpa.classification.validation import score_validation_images
from hpa.config import check_count, default_workers, from_dict, resolve_device
from hpa.errors import HPAConfigError
from hpa.io import atomic_path

if TYPE_CHECKING:
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (``hpa train-cells``; saved as ``train_config.yaml``).

    Attributes:
        backbone: timm model name.
        pretrained: local checkpoint, ``"hub"``, or None for random initialisation.
        crop_size: side of crops and tiles.
        margin: crop margin, fraction of the cell's longer side.
        mask_outside: blank pixels outside the cell's own mask.
        crop_scale: ``box`` (each crop follows its cell's box) or ``image`` (one window
            side per image, so structures keep their size; see :mod:`hpa.classification.crops`).
        tile_grids: tile grids of the whole image, e.g. ``(1, 2)``.
        use_cells, use_tiles: which views to train on.
        epochs: passes over the training views; None = :func:`auto_epochs` of the
            number of training views (the CPU default).
        batch_size: views per update.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: linear warm-up length, in epochs (may be fractional).
        freeze_epochs: epochs with the backbone frozen (weights and BatchNorm statistics);
            -1 = 1 with pretrained weights, 0 without (a random backbone gains nothing
            from it); :data:`FREEZE_ALL` (-2) = the whole run with pretrained weights
            (only the head learns: a linear probe on the pretrained features), 0 without.
        loss: ``bce``, ``focal``, ``softf1`` or ``focal+softf1``.
        folds, fold: the image split (fold ``fold`` of ``folds`` is validation).
        seed: the run's seed (split, initialisation, shuffling, augmentation).
        jitter: intensity jitter amplitude.
        progressive_sizes: input sizes for equal parts of the run, e.g. ``(48, 64)``;
            empty = always ``crop_size``.
        balance: oversampling of rare classes: a view is drawn with weight
            ``max over its labels of (1 / class frequency) ** balance``; 0 = plain shuffling.
        ema: decay of an exponential moving average of the weights (timm's ModelEmaV3,
            with its warm-up, so early steps average over fewer updates); the average is
            what is validated, selected and saved. 0 = no average. The default 0.998
            raised dev-set macro F1 from 0.688 to 0.707 on the synthetic benchmark
            (benchmarks/RESULTS.md).
        pooling: cell-to-image pooling for validation and thresholds.
        threshold_shrink: pseudo-count pulling per-class thresholds toward the global
            one (:func:`hpa.aggregation.tune_thresholds`); 0 = per-class optima.
        tile_weight: weight of tile scores in the image score; None = chosen on the
            validation images after training among :data:`TILE_WEIGHTS` (0.5 meanwhile).
        max_steps: stop after this many updates (smoke tests); None = no limit.
        device: ``cpu`` or ``cuda`` (resolved).
        precision: ``bf16`` or ``fp32`` autocast (``auto`` is resolved for the device by
            :func:`hpa.classification.inference.resolve_precision`).
        engine: what runs the frozen backbone's embedding (``freeze_epochs: -2``):
            ``torch``, ``onnxruntime`` or ``openvino`` (``auto`` is resolved for the device and precision
            by :func:`hpa.classification.engine.training_engine`); training itself is torch's.
        workers: processes cutting crops when the cache is built.
        channels: input channels, as ``--channels`` takes them (``rgby``, ``rgb``,
            ``g,b,r+y``; :func:`hpa.classification.channels.parse_channels`).
        intensity: how views are scaled to [0, 1]: ``dataset`` (by the dtype's maximum),
            ``view`` (by each view's bright end) or ``image`` (by its image's bright end;
            :func:`hpa.classification.model.unit_views`).
        input_size: the network's input side; crops are cut at ``crop_size`` and resized
            to it (ImageNet features need objects near the size they were learnt at).
            None = ``crop_size``.
        companion: a second model trained beside this one on the same split, from a
            recipe of :data:`COMPANIONS`, and blended with it image by image, its
            weight chosen on the validation images (:mod:`hpa.pipelines.blend`). None =
            this model alone. Only ``hpa train-cells`` (and :func:`hpa.train`) act on it.
    """

    backbone: str = "resnet10t"
    pretrained: str | None = None
    crop_size: int = 64
    margin: float = 0.1
    mask_outside: bool = False
    crop_scale: str = "box"
    tile_grids: tuple[int, ...] = (1, 2)
    use_cells: bool = True
    use_tiles: bool = True
    epochs: int | None = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 0.5
    freeze_epochs: int = -1
    loss: str = "bce"
    folds: int = 5
    fold: int = 0
    seed: int = 0
    jitter: float = 0.2
    progressive_sizes: tuple[int, ...] = ()
    balance: float = 0.5
    ema: float = 0.998
    pooling: str = "max"
    threshold_shrink: float = 5.0
    tile_weight: float | None = None
    max_steps: int | None = None
    device: str = "cpu"
    precision: str = "auto"
    engine: str = "auto"
    workers: int = 2
    channels: str = "rgby"
    intensity: str = "dataset"
    input_size: int | None = None
    companion: str | None = None

    def __post_init__(self) -> None:
        counts = {"crop_size": 8, "batch_size": 1, "folds": 2, "fold": 0, "workers": 1, "seed": 0}
        for name, minimum in counts.items():
            check_count(getattr(self, name), name, minimum)
        check_count(self.epochs, "epochs", 1, optional=True)
        check_count(self.max_steps, "max_steps", 1, optional=True)
        check_count(self.input_size, "input_size", 8, optional=True)
        check_count(self.freeze_epochs, "freeze_epochs", FREEZE_ALL)
        if self.fold >= self.folds:
            raise HPAConfigError(
                f"fold must be in 0..{self.folds - 1} for {self.folds} folds, got {self.fold}"
            )
        if not isinstance(self.channels, str):
            raise HPAConfigError(
                f"channels must be text such as 'rgby', 'g' or 'g,b,r+y', got {self.channels!r}"
            )
        if not (self.use_cells or self.use_tiles):
            raise HPAConfigError(
                "use_cells and use_tiles both false (--no-cells --no-tiles): nothing to train on"
            )
        if not all(isinstance(g, int) and g >= 1 for g in self.tile_grids) or not self.tile_grids:
            raise HPAConfigError(f"tile_grids must be positive integers, got {list(self.tile_grids)}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise HPAConfigError(f"lr must be a positive number, got {self.lr!r}")
        choices = {
            "pooling": POOLING_METHODS,
            "crop_scale": CROP_SCALES,
            "loss": LOSSES,
            "intensity": INTENSITIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise HPAConfigError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.companion is not None and self.companion not in (*COMPANIONS, FEATURE_COMPANION):
            raise HPAConfigError(
                f"companion must be one of {', '.join(COMPANIONS)}, {FEATURE_COMPANION} or none, "
                f"got {self.companion!r}"
            )
        if self.tile_weight is not None and not (
            isinstance(self.tile_weight, int | float) and 0.0 <= self.tile_weight <= 1.0
        ):
            raise HPAConfigError(f"tile_weight must be a number in [0, 1] or null, got {self.tile_weight!r}")

    @classmethod
    def for_device(cls, device: str = "auto", *, source: str = "settings", **overrides: Any) -> TrainConfig:
        """The settings of a run on ``device``: its defaults, then ``overrides``.

        The defaults are :data:`DEVICE_DEFAULTS` of the resolved device (``auto``: a GPU
        when one is visible) with ``workers`` = the CPU cores. ``precision`` ``auto`` is
        resolved for the device; the packaged ImageNet start is dropped for another
        backbone unless ``pretrained`` is among the overrides
        (:func:`hpa.classification.pretrained.pretrained_for_backbone`).

        Args:
            device: ``auto``, ``cpu`` or ``cuda``.
            source: what the overrides came from, named in errors (a YAML file, flags).
            **overrides: fields of :class:`TrainConfig` (a ``device`` among them is ignored).

        Raises:
            HPAConfigError: an unknown setting or a bad value; names ``source``.
        """
        resolved = resolve_device(device)
        data: dict[str, Any] = {**DEVICE_DEFAULTS[resolved], "workers": default_workers(), **overrides}
        data["device"] = resolved
        data["pretrained"] = pretrained_for_backbone(
            str(data.get("backbone")), data.get("pretrained"), explicit="pretrained" in overrides
        )
        if data.get("companion") in ("none", ""):
            data["companion"] = None
        if "backbone" in overrides and "companion" not in overrides and data.get("companion"):
            # a chosen backbone is the user's own recipe: no companion unless asked for
            log.info("backbone %s chosen: no companion model (--companion to add one)", data["backbone"])
            data["companion"] = None
        asked = data.get("precision") or "auto"
        data["engine"] = training_engine(check_engine(data.get("engine") or "auto"), resolved, asked)
        data["precision"] = resolve_precision(asked, resolved)
        if not data["pretrained"] and "input_size" not in overrides and data.get("input_size"):
            # the resize serves pretrained features; a network learnt from scratch sees the crops
            log.info("random start: input size %s -> the crop size (no resize)", data["input_size"])
            data["input_size"] = None
        return from_dict(cls, data, source=source)

    @classmethod
    def from_settings(cls, data: dict[str, Any], source: str = "settings") -> TrainConfig:
        """:meth:`for_device` with the device taken from ``data`` (default ``auto``)."""
        data = dict(data)
        return cls.for_device(data.pop("device", None) or "auto", source=source, **data)


#: :attr:`TrainConfig.freeze_epochs` value: the backbone stays frozen for the whole run.
FREEZE_ALL = -2

#: Candidate tile weights when :attr:`TrainConfig.tile_weight` is None (ties: the first).
TILE_WEIGHTS = (0.5, 0.25, 0.75, 0.0, 1.0)

#: Defaults by device: CPU runs finish a few hundred images in minutes; GPU runs the
#: full configuration.
#:
#: Both start from the packaged ImageNet EfficientNet-Lite0, on the checkpoint's own
#: architecture (``tf_efficientnet_lite0``: :mod:`hpa.classification.pretrained`; on the
#: three splits below it scores 0.392 against 0.362 for ``efficientnet_lite0``, which
#: computed another function with the same weights and on which the other figures here
#: were measured), and feed it the protein channel alone, each view scaled by its own bright end, 64 px crops resized to 224 px
#: (the scale its features were learnt at), with cell scores mean-pooled per image: on
#: 5-fold cross-validation of 67 real Kaggle images (benchmarks/real_bench.py, three
#: splits) this reached macro F1 0.380 against 0.244 for calling every class, and beat
#: max pooling, smaller inputs, more channels, tiles alone and random weights
#: (benchmarks/RESULTS.md, "Real images"). The CPU keeps the backbone frozen for the
#: whole run, so its features are computed once and only the head is trained; the GPU
#: fine-tunes the whole network after one frozen epoch (not measured here: no GPU).
#: Both also train the ``scratch`` companion (:data:`COMPANIONS`) and blend the two as
#: the validation images decide: on the real cross-validation it got no weight (0.380
#: unchanged), on the synthetic benchmark half (0.831 against 0.714 without it).
_RECIPE: dict[str, Any] = dict(
    backbone="tf_efficientnet_lite0",
    pretrained="imagenet",
    channels="g",
    intensity="view",
    input_size=224,
    pooling="mean",
)
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": dict(
        _RECIPE, freeze_epochs=-2, crop_size=64, batch_size=64, epochs=None, lr=2e-3, companion="scratch"
    ),
    "cuda": dict(
        _RECIPE, freeze_epochs=-1, crop_size=128, batch_size=256, epochs=20, lr=1e-3, companion="scratch"
    ),
}

#: Companion recipes (:attr:`TrainConfig.companion`): settings that replace the main
#: run's in the companion model. ``scratch`` is the earlier CPU default, a small
#: network trained from random weights on the four stains with max pooling, on the
#: crops at their own size (64 px with the CPU defaults, whose crop cache it shares): at
#: chance-plus-0.05 on 67 real images, but 0.817 test macro F1 on the 2,000-image
#: synthetic benchmark, where frozen ImageNet features of the protein channel reach
#: 0.714; blended, the validation images choose between them (benchmarks/RESULTS.md).
COMPANIONS: dict[str, dict[str, Any]] = {
    "scratch": dict(
        backbone="resnet10t",
        pretrained=None,
        channels="rgby",
        intensity="dataset",
        input_size=None,  # the crops at their own size: the main run's crop size, sharing its cache
        progressive_sizes=(),
        freeze_epochs=0,
        lr=2e-3,
        pooling="max",
    ),
}


#: The companion that is no network but a head on the localisation features of each image
#: (:mod:`hpa.classification.feature_head`; :func:`hpa.pipelines.blend.train_feature_member`).
FEATURE_COMPANION = "features"


def companion_config(cfg: TrainConfig) -> TrainConfig:
    """The settings of ``cfg``'s companion model: the main run's, with the recipe's in place."""
    if cfg.companion is None or cfg.companion == FEATURE_COMPANION:
        raise HPAConfigError(f"this run has no companion network (companion: {cfg.companion})")
    recipe = dict(COMPANIONS[cfg.companion])
    if cfg.intensity == "image":  # the views of a blend are cut once: both scale them by the image
        recipe["intensity"] = "image"
    return replace(cfg, **recipe, companion=None)


#: Views an automatic CPU schedule presents in all (:func:`auto_epochs`): about 5 minutes
#: of resnet10t at 64 px on two AVX512-BF16 cores.
AUTO_EPOCH_VIEWS = 120_000


def auto_epochs(n_views: int, budget: int = AUTO_EPOCH_VIEWS, frozen: bool = False) -> int:
    """Epochs for ``n_views`` training views: ``budget / n_views`` presentations, 3 to 12.

    A few hundred images get 12 epochs; larger sets get fewer passes over more diverse
    data (on the synthetic benchmark, 800 images for 6 epochs beat 400 for 12 at the
    same cost: dev-set macro F1 0.688 against 0.637); at least 3, so that a large set
    still gets a warm-up, a decay and an epoch to select. A ``frozen`` run (the head on
    cached features, :func:`frozen_run`) pays seconds an epoch whatever the set's size,
    so it always gets 12 (the best epoch is kept).

    >>> auto_epochs(8_000), auto_epochs(32_000), auto_epochs(1_000_000), auto_epochs(32_000, frozen=True)
    (12, 4, 3, 12)
    """
    if frozen:
        return 12
    return int(min(12, max(3, round(budget / max(n_views, 1)))))


@dataclass
class TrainData:
    """Cache rows and targets of the two sides of the split.

    Attributes:
        views: ``(N, S, S, 4)`` view array.
        scale: its dtype maximum.
        index: the cache index (``image_id``, ``kind``, ``cell_id``, boxes).
        train_rows, val_rows: cache rows of each side.
        train_targets: ``(len(train_rows), K)`` float32 labels inherited from the images.
        val_ids: validation image Ids; ``val_y``: their ``(M, K)`` labels.
        mean, std: normalisation statistics (of the mixed input channels).
        mix: ``(C, 4)`` channel mixing matrix, or None for the four stains as they are.
        cache_folder: the crop cache's folder; a frozen-backbone run keeps its features there.
    """

    views: np.ndarray
    scale: float
    index: pd.DataFrame
    train_rows: np.ndarray
    val_rows: np.ndarray
    train_targets: np.ndarray
    val_ids: list[str]
    val_y: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    mix: np.ndarray | None = None
    cache_folder: Path | None = None


def set_seed(seed: int) -> None:
    """Seed torch and Python's ``random`` (numpy draws use explicit Generators)."""
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def _set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    head = {id(p) for p in model.get_classifier().parameters()}  # type: ignore[operator]
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(trainable)


def _frozen_epochs(cfg: TrainConfig) -> int:
    """Epochs with a frozen backbone, as :attr:`TrainConfig.freeze_epochs` says."""
    if cfg.freeze_epochs >= 0:
        return cfg.freeze_epochs
    if not cfg.pretrained:
        return 0
    if cfg.freeze_epochs == FREEZE_ALL:
        return int(cfg.epochs or 0)
    if cfg.freeze_epochs == -1:
        return 1
    raise ValueError(f"freeze_epochs must be >= 0, -1 or {FREEZE_ALL}, got {cfg.freeze_epochs}")


def frozen_run(cfg: TrainConfig) -> bool:
    """Whether the pretrained backbone stays frozen for the whole run (only the head learns).

    Such a run is a head fitted on fixed features: :mod:`hpa.classification.probe`
    computes them once (and keeps them beside the crop cache for the next run).
    """
    if not cfg.pretrained:
        return False
    if cfg.freeze_epochs == FREEZE_ALL:
        return True
    return cfg.epochs is not None and _frozen_epochs(cfg) >= cfg.epochs


def _freeze_norm_stats(model: nn.Module) -> None:
    """Keep a frozen backbone's BatchNorm statistics: its norm layers run in eval mode.

    Frozen weights with batch statistics would still drift (running means follow every
    batch), and a head trained on them would not see the features it is scored on.
    """
    head = {id(m) for m in model.get_classifier().modules()}  # type: ignore[operator]
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head:
            m.eval()


def _make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> CosineLRScheduler:
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(
        optimizer,
        t_initial=max(total_steps, 1),
        lr_min=1e-6,
        warmup_t=warmup_steps,
        warmup_lr_init=1e-6,
        warmup_prefix=True,
        t_in_epochs=False,
    )


def evaluate_views(
    model: nn.Module,
    data: TrainData,
    cfg: TrainConfig,
    world: World | None = None,
    *,
    engine: str = "torch",
) -> tuple[dict[str, float], np.ndarray, np.ndarray, ThresholdResult]:
    """Score the validation views, pool per image, tune thresholds.

    Under torchrun each rank scores a share of the views; the shares are gathered so
    that every rank pools and tunes on all of them. ``engine`` (resolved, see
    :func:`hpa.classification.engine.resolve_engine`) runs the forward pass: the final
    scoring of a trained model uses the engine ``hpa predict`` will use (an ONNX export
    made once, in a temporary folder); the per-epoch checks of training stay torch's.

    Returns:
        ``(metrics, view_probs, image_scores, thresholds)``; ``view_probs`` follows
        ``data.val_rows``.
    """
    world = world or World()
    model.eval()
    mine = np.arange(world.rank, len(data.val_rows), world.size)
    probs = score_views(
        model if engine == "torch" else make_engine(model, engine),
        data.views,
        data.mean,
        data.std,
        data.scale,
        rows=data.val_rows[mine],
        device=cfg.device,
        batch_size=max(cfg.batch_size, 128),
        precision=cfg.precision,
        mix=data.mix,
        intensity=cfg.intensity,
        size=cfg.input_size or cfg.crop_size,
    )
    positions, probs = gather_rows(world, mine, probs)
    probs = probs[np.argsort(positions, kind="stable")]
    tile_weight = 0.5 if cfg.tile_weight is None else cfg.tile_weight
    metrics, scores, tuned = score_validation_images(data, probs, cfg, tile_weight)
    return metrics, probs, scores, tuned


@dataclass
class _Updates:
    """How the weights move: loss, optimizer, learning-rate schedule, weight average."""

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    ema: ModelEmaV3 | None
    precision: str


@dataclass
class _Progress:
    """Where a run stands: what the checkpoint saves and ``--resume`` restores.

    Attributes:
        start_epoch: the first epoch this process runs (0-based).
        step: updates made so far.
        best_f1: the best validation macro F1 so far (-1 before the first epoch).
        history: one record per finished epoch.
        best_state: CPU copy of the weights of the best epoch.
    """

    start_epoch: int = 0
    step: int = 0
    best_f1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None


def fit(
    model: nn.Module,
    data: TrainData,
    cfg: TrainConfig,
    checkpoint: Path,
    *,
    resume: bool = False,
    on_best: Callable[[nn.Module, dict[str, Any]], None] | None = None,
    world: World | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train ``model`` and return the best epoch's model and the per-epoch history.

    Args:
        model: the network (on CPU); moved to ``cfg.device``.
        data: views, rows, targets and normalisation.
        cfg: the run's settings.
        checkpoint: where the last epoch's state is saved (and read with ``resume``).
        resume: continue from ``checkpoint``.
        on_best: called with the model and the epoch's record whenever validation improves
            (on rank 0 only).
        world: the torchrun world; gradients are averaged over its ranks by DDP, and only
            rank 0 writes the checkpoint.
        settings: what the run was started with, recorded in the checkpoint so that a
            resumed run can be checked against it
            (:func:`hpa.pipelines.train.check_resume`).
    """
    world = world or World()
    if frozen_run(cfg) and not world.distributed:
        # the backbone never changes: embed every view once, train the head on the features
        if resume:
            log.info("frozen-backbone run: --resume recomputes the features and refits the head")
        return fit_head(model, data, cfg, on_best)
    model = model.to(cfg.device).to(memory_format=torch.channels_last)
    loader = _make_loader(data, cfg, world)
    if cfg.epochs is None:
        raise ValueError("fit needs cfg.epochs; train_model resolves None with auto_epochs")
    updates = _make_updates(model, cfg, steps_per_epoch=max(len(loader), 1))
    run = _restore(checkpoint, model, updates, cfg.device) if resume else _Progress()
    freeze = _frozen_epochs(cfg)
    net, net_trainable = model, None
    for epoch in range(run.start_epoch, cfg.epochs):
        if cfg.max_steps is not None and run.step >= cfg.max_steps:
            break
        trainable = epoch >= freeze
        if trainable != net_trainable:
            _set_backbone_trainable(model, trainable)
            net, net_trainable = _wrap(model, world, cfg.device), trainable
        t0 = time.perf_counter()
        trained = _train_epoch(net, model, loader, updates, cfg, epoch, run, world, trainable)
        scored = model if updates.ema is None else updates.ema.module
        metrics, *_ = evaluate_views(scored, data, cfg, world)
        record = {
            "epoch": epoch + 1,
            "step": run.step,
            **trained,
            **metrics,
            "seconds": time.perf_counter() - t0,
        }
        _end_epoch(scored, record, run, cfg, world, on_best)
        if world.is_main:
            _save_checkpoint(checkpoint, model, updates, run, epoch, settings)
        barrier(world)
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    return model, run.history


def _make_loader(data: TrainData, cfg: TrainConfig, world: World) -> BatchLoader:
    """Shuffled, augmented (and with ``cfg.balance``, rebalanced) batches of the training views."""
    return BatchLoader(
        data.views,
        data.train_rows,
        data.train_targets,
        cfg.batch_size,
        data.mean,
        data.std,
        data.scale,
        device=cfg.device,
        shuffle=True,
        augment=True,
        jitter=cfg.jitter,
        seed=cfg.seed,
        drop_last=len(data.train_rows) > cfg.batch_size * world.size,
        world=world,
        weights=balance_weights(data.train_targets, cfg.balance) if cfg.balance > 0 else None,
        mix=data.mix,
        intensity=cfg.intensity,
    )


def _make_updates(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int) -> _Updates:
    """AdamW (no weight decay on biases and norms), warm-up + cosine schedule, EMA."""
    assert cfg.epochs is not None
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    scheduler = _make_scheduler(optimizer, total, int(cfg.warmup_epochs * steps_per_epoch))
    precision = resolve_precision(cfg.precision, cfg.device)
    return _Updates(get_loss(cfg.loss), optimizer, scheduler, _make_ema(model, cfg.ema), precision)


def _restore(checkpoint: Path, model: nn.Module, updates: _Updates, device: str) -> _Progress:
    """The state saved in ``checkpoint`` loaded into ``model`` and ``updates``; a fresh start without one."""
    if not checkpoint.is_file():
        log.warning("--resume: no checkpoint at %s, starting from scratch", checkpoint)
        return _Progress()
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    updates.optimizer.load_state_dict(state["optimizer"])
    updates.scheduler.load_state_dict(state["scheduler"])
    if updates.ema is not None:
        updates.ema.module.load_state_dict(state["ema"])
    run = _Progress(
        state["epoch"] + 1, state["step"], state["best_f1"], list(state["history"]), state["best_model"]
    )
    log.info(
        "resumed from %s at epoch %d (best val macro F1 %.4f)", checkpoint, run.start_epoch + 1, run.best_f1
    )
    return run


def _train_epoch(
    net: nn.Module,
    model: nn.Module,
    loader: BatchLoader,
    updates: _Updates,
    cfg: TrainConfig,
    epoch: int,
    run: _Progress,
    world: World,
    trainable: bool,
) -> dict[str, float]:
    """One pass over ``loader`` (``net`` is ``model``, or DDP around it); advances ``run.step``.

    With ``trainable`` False the backbone is frozen: its BatchNorm statistics are kept too.

    Returns:
        The epoch's ``loss`` (running mean), ``lr`` at its end, ``input_size`` and
        ``crops_per_s`` (over all ranks).
    """
    size = _epoch_size(cfg, epoch)
    model.train()
    if not trainable:
        _freeze_norm_stats(model)
    loader.epoch = epoch
    t0, seen, run_loss = time.perf_counter(), 0, 0.0
    bar = tqdm(
        loader,
        total=max(len(loader), 1),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        disable=not world.is_main,
    )
    for x, y in bar:
        assert y is not None
        value = _update(net, model, x, y, size, cfg.device, updates, run)
        seen += len(x) * world.size
        run_loss = 0.9 * run_loss + 0.1 * value if seen > len(x) else value
        bar.set_postfix(loss=f"{run_loss:.4f}", crops_s=f"{seen / (time.perf_counter() - t0):.0f}")
        if cfg.max_steps is not None and run.step >= cfg.max_steps:
            break
    lr = updates.optimizer.param_groups[0]["lr"]
    return {
        "loss": run_loss,
        "lr": lr,
        "input_size": size,
        "crops_per_s": seen / max(time.perf_counter() - t0, 1e-9),
    }


def _update(
    net: nn.Module,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    size: int,
    device: str,
    updates: _Updates,
    run: _Progress,
) -> float:
    """One optimizer step on the batch ``(x, y)`` resized to ``size``; returns its loss."""
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, updates.precision):
        logits = net(x)
    loss = updates.loss_fn(logits.float(), y)
    updates.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    updates.optimizer.step()
    run.step += 1
    if updates.ema is not None:
        updates.ema.update(model, step=run.step)
    updates.scheduler.step_update(run.step)
    return float(loss.detach())


def _end_epoch(
    scored: nn.Module,
    record: dict[str, Any],
    run: _Progress,
    cfg: TrainConfig,
    world: World,
    on_best: Callable[[nn.Module, dict[str, Any]], None] | None,
) -> None:
    """Log the epoch's ``record``, add it to the history and keep the weights when they are the best."""
    run.history.append(record)
    improved = record["val_macro_f1"] > run.best_f1
    log.info(
        "epoch %d/%d: loss %.4f, val macro F1 %.4f (at 0.5: %.4f), %.0f crops/s%s",
        record["epoch"],
        cfg.epochs,
        record["loss"],
        record["val_macro_f1"],
        record["val_macro_f1_at_0.5"],
        record["crops_per_s"],
        " (best)" if improved else "",
    )
    if improved:
        run.best_f1 = record["val_macro_f1"]
        run.best_state = {k: v.detach().to("cpu").clone() for k, v in scored.state_dict().items()}
        if on_best is not None and world.is_main:
            on_best(scored, record)


def _make_ema(model: nn.Module, decay: float) -> ModelEmaV3 | None:
    """timm's ModelEmaV3 of ``model`` (fp32, same device), or None when ``decay`` is 0."""
    if decay <= 0:
        return None
    if not decay < 1:
        raise ValueError(f"ema must be a decay in [0, 1), got {decay}")
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=3 / 4)


def _wrap(model: nn.Module, world: World, device: str) -> nn.Module:
    """DDP around ``model`` under torchrun (rebuilt whenever the trainable set changes)."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def _epoch_size(cfg: TrainConfig, epoch: int) -> int:
    if not cfg.progressive_sizes:
        return cfg.input_size or cfg.crop_size
    part = min(
        int(epoch * len(cfg.progressive_sizes) / max(cfg.epochs or 1, 1)), len(cfg.progressive_sizes) - 1
    )
    return int(cfg.progressive_sizes[part])


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    updates: _Updates,
    run: _Progress,
    epoch: int,
    settings: dict[str, Any] | None = None,
) -> None:
    """Save the state after ``epoch`` (0-based) for ``--resume``, atomically."""
    state = {
        "model": model.state_dict(),
        "optimizer": updates.optimizer.state_dict(),
        "scheduler": updates.scheduler.state_dict(),
        "epoch": epoch,
        "step": run.step,
        "best_f1": run.best_f1,
        "history": run.history,
        "best_model": run.best_state if run.best_state is not None else copy.deepcopy(model.state_dict()),
    }
    if updates.ema is not None:
        state["ema"] = updates.ema.module.state_dict()
    if settings is not None:
        state["settings"] = settings
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
