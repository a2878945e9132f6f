"""Training with a frozen pretrained backbone: embed every view once, fit the head on the features.

When the whole run keeps the backbone frozen (``freeze_epochs: -2`` with pretrained
weights; the CPU default), every epoch of :func:`hpa.classification.train.fit` would
push each view through the same fixed network again. Here each view is embedded once
(eval mode, no augmentation, exactly as :func:`hpa.classification.inference.score_views`
will see it at prediction time), and the linear head is trained on the cached
features: the backbone's cost is paid once instead of once per epoch, so a run costs
about one prediction pass over its views.

The head is fitted on standardised features (mean 0, std 1 per feature over the
training views), which conditions the problem; the standardisation is then folded into
the head's weights, so the saved model is the plain timm network and predicts as any
other model folder does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hpa.classification.data import BatchLoader, balance_weights
from hpa.classification.engine import make_engine, training_engine
from hpa.classification.inference import autocast, resolve_precision
from hpa.classification.losses import get_loss
from hpa.classification.validation import score_validation_images
from hpa.io import atomic_path

if TYPE_CHECKING:
    from hpa.classification.train import TrainConfig, TrainData

log = logging.getLogger(__name__)


class PooledFeatures(nn.Module):
    """A timm network up to its pooled features (``forward_head(..., pre_logits=True)``):
    the unit the probe's embedding runs, and exports for the onnxruntime engine."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(  # type: ignore[operator]
            self.model.forward_features(x),  # type: ignore[operator]
            pre_logits=True,
        )

    def unused(self) -> tuple[str, ...]:
        """Parameter name prefixes of the classifier, which the features do not depend on."""
        name = getattr(self.model, "pretrained_cfg", {}).get("classifier")
        return (f"model.{name}.",) if name else ()


#: Where the onnxruntime engine keeps the embedding's export in a crop cache folder.
ENGINE_CACHE = "features/engine"


@torch.inference_mode()
def embed_views(
    model: nn.Module,
    data: TrainData,
    rows: np.ndarray,
    cfg: TrainConfig,
    desc: str = "embedding",
) -> np.ndarray:
    """Pooled backbone features of the cache rows ``rows``.

    The forward pass is ``cfg.engine``'s (:mod:`hpa.classification.engine`); the
    onnxruntime export is cached in the crop cache (:data:`ENGINE_CACHE`).

    Returns:
        ``(len(rows), D)`` float32 features (timm's ``forward_head(..., pre_logits=True)``).
    """
    model.eval()
    loader = BatchLoader(
        data.views,
        rows,
        None,
        max(cfg.batch_size, 128),
        data.mean,
        data.std,
        data.scale,
        device=cfg.device,
        mix=data.mix,
        intensity=cfg.intensity,
        size=cfg.input_size or cfg.crop_size,
    )
    precision = resolve_precision(cfg.precision, cfg.device)
    pooled = PooledFeatures(model).eval()
    engine = make_engine(
        pooled,
        training_engine(cfg.engine, cfg.device, cfg.precision),
        cache_dir=None if data.cache_folder is None else data.cache_folder / ENGINE_CACHE,
        skip=pooled.unused(),
    )
    log.info("frozen backbone: embedding %d views with the %s engine", len(rows), engine.name)
    parts = []
    for x, _ in tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        with autocast(cfg.device, precision):
            f = engine(x if engine.name != "torch" else x.contiguous(memory_format=torch.channels_last))
        parts.append(f.float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def cached_features(model: nn.Module, data: TrainData, rows: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """:func:`embed_views` of ``rows``, kept in ``data.cache_folder/features/`` for later runs.

    The file's name is a hash of everything the features depend on: the rows, the start
    weights (name, or a local file's path, size and modification time), the backbone,
    the input channels, intensity scaling, input size, normalisation, precision and engine. The
    folds of a ``--folds`` run, and reruns, embed once.

    Returns:
        ``(len(rows), D)`` float32 features.
    """
    if data.cache_folder is None:
        return embed_views(model, data, rows, cfg)
    engine = training_engine(cfg.engine, cfg.device, cfg.precision)
    start = str(cfg.pretrained)
    weights = Path(start).expanduser()
    if weights.is_file():
        stat = weights.stat()
        start = f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    key = json.dumps(
        {
            "rows": hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest(),
            "start": start,
            "backbone": cfg.backbone,
            "mix": None if data.mix is None else np.asarray(data.mix).round(6).tolist(),
            "intensity": cfg.intensity,
            "size": cfg.input_size or cfg.crop_size,
            "mean": np.asarray(data.mean).round(8).tolist(),
            "std": np.asarray(data.std).round(8).tolist(),
            "precision": resolve_precision(cfg.precision, cfg.device),
            # torch's features keep their earlier key; another engine's (fp32 ONNX) their own
            **({} if engine == "torch" else {"engine": engine}),
        },
        sort_keys=True,
    )
    path = data.cache_folder / "features" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if path.is_file():
        feats = np.load(path)
        if feats.shape[0] == len(rows):
            log.info("frozen backbone: features of %d views read from %s", len(rows), path)
            return feats.astype(np.float32)
    feats = embed_views(model, data, rows, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, feats.astype(np.float16))
    # what later runs read: the float16 copy, so this run and a rerun see the same numbers
    return feats.astype(np.float16).astype(np.float32)


def fit_head(
    model: nn.Module,
    data: TrainData,
    cfg: TrainConfig,
    on_best: Callable[[nn.Module, dict[str, Any]], None] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train the head of ``model`` on frozen features; return the best epoch's model and history.

    The schedule follows ``cfg``: ``epochs`` passes over the training views in batches of
    ``batch_size`` (rare classes oversampled by ``balance``), AdamW at ``lr`` with
    ``weight_decay``, cosine decay, the loss ``loss``; after every epoch the validation
    images are pooled and thresholded as :func:`hpa.classification.train.fit` does, and
    the best epoch is kept (``on_best`` is called with it).
    """
    assert cfg.epochs is not None
    head = model.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"{cfg.backbone}: a frozen-backbone run needs a linear head, got {type(head).__name__}"
        )
    t0 = time.perf_counter()
    features = _Features.of(model.to(cfg.device), data, cfg)
    embed_s = time.perf_counter() - t0
    fitting = _HeadFit.start(features, data, cfg)
    history: list[dict[str, Any]] = []
    best_f1 = -1.0
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        loss = fitting.epoch(cfg)
        record = _validate(fitting, features, data, cfg, epoch, loss, time.perf_counter() - t0)
        record["seconds"] += embed_s if epoch == 0 else 0.0
        history.append(record)
        improved = record["val_macro_f1"] > best_f1
        log.info(
            "epoch %d/%d (head on frozen features): loss %.4f, val macro F1 %.4f%s",
            epoch + 1,
            cfg.epochs,
            loss,
            record["val_macro_f1"],
            " (best)" if improved else "",
        )
        if improved:
            best_f1 = record["val_macro_f1"]
            fitting.keep_best()
            if on_best is not None:
                on_best(fitting.folded_into(model, head), record)
        if fitting.stopped(cfg):
            break
    return fitting.folded_into(model, head), history


class _Features:
    """Standardised frozen features of the training and validation views."""

    def __init__(self, train: torch.Tensor, val: torch.Tensor, mu: np.ndarray, sd: np.ndarray):
        self.train, self.val, self.mu, self.sd = train, val, mu, sd

    @classmethod
    def of(cls, model: nn.Module, data: TrainData, cfg: TrainConfig) -> _Features:
        rows = np.union1d(data.train_rows, data.val_rows)
        feats = cached_features(model, data, rows, cfg)
        train_x = feats[np.searchsorted(rows, data.train_rows)]
        val_x = feats[np.searchsorted(rows, data.val_rows)]
        log.info(
            "frozen backbone: %d training + %d validation views, %d features each",
            len(train_x),
            len(val_x),
            train_x.shape[1],
        )
        mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
        return cls(torch.from_numpy((train_x - mu) / sd), torch.from_numpy((val_x - mu) / sd), mu, sd)


class _HeadFit:
    """A linear head on standardised features, its optimiser, schedule and sampling."""

    def __init__(self, features: _Features, targets: torch.Tensor, cfg: TrainConfig, p: np.ndarray | None):
        gen = torch.Generator().manual_seed(cfg.seed)
        k, d = targets.shape[1], features.train.shape[1]
        self.weight = nn.Parameter(torch.randn(k, d, generator=gen) * 0.01)
        self.bias = nn.Parameter(torch.zeros(k))
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [self.weight], "weight_decay": cfg.weight_decay},
                {"params": [self.bias], "weight_decay": 0.0},
            ],
            lr=cfg.lr,
        )
        self.features, self.targets, self.p = features, targets, p
        self.n = len(features.train)
        self.batch = min(cfg.batch_size, self.n)
        self.steps_per_epoch = max(self.n // self.batch, 1)
        assert cfg.epochs is not None
        total = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(total, 1), eta_min=cfg.lr * 0.01
        )
        self.loss_fn = get_loss(cfg.loss)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.best = (self.weight.detach().clone(), self.bias.detach().clone())

    @classmethod
    def start(cls, features: _Features, data: TrainData, cfg: TrainConfig) -> _HeadFit:
        p = None
        if cfg.balance > 0:
            p = balance_weights(data.train_targets, cfg.balance)
            p = p / p.sum()
        return cls(features, torch.from_numpy(data.train_targets), cfg, p)

    def stopped(self, cfg: TrainConfig) -> bool:
        return cfg.max_steps is not None and self.step >= cfg.max_steps

    def epoch(self, cfg: TrainConfig) -> float:
        """One pass over the training views (drawn by ``p`` when rebalanced); the running loss."""
        n = self.n
        order = self.rng.choice(n, size=n, p=self.p) if self.p is not None else self.rng.permutation(n)
        run_loss = 0.0
        for b in range(self.steps_per_epoch):
            if self.stopped(cfg):
                break
            sel = torch.from_numpy(order[b * self.batch : (b + 1) * self.batch])
            loss = self.loss_fn(self.features.train[sel] @ self.weight.T + self.bias, self.targets[sel])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            self.step += 1
            value = float(loss.detach())
            run_loss = value if b == 0 else 0.9 * run_loss + 0.1 * value
        return run_loss

    def val_probs(self) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self.features.val @ self.weight.T + self.bias).numpy()

    def keep_best(self) -> None:
        self.best = (self.weight.detach().clone(), self.bias.detach().clone())

    def folded_into(self, model: nn.Module, head: nn.Linear) -> nn.Module:
        return _with_head(model, head, *self.best, self.features.mu, self.features.sd)


def _validate(
    fitting: _HeadFit,
    features: _Features,
    data: TrainData,
    cfg: TrainConfig,
    epoch: int,
    loss: float,
    seconds: float,
) -> dict[str, Any]:
    """The epoch's record: validation images pooled and thresholded as in full training."""
    tile_weight = 0.5 if cfg.tile_weight is None else cfg.tile_weight
    metrics, _, _ = score_validation_images(data, fitting.val_probs(), cfg, tile_weight)
    return {
        "epoch": epoch + 1,
        "step": fitting.step,
        "loss": loss,
        "lr": fitting.optimizer.param_groups[0]["lr"],
        "input_size": cfg.input_size or cfg.crop_size,
        "crops_per_s": len(features.train) / max(seconds, 1e-9),
        **metrics,
        "seconds": seconds,
    }


def _with_head(
    model: nn.Module, head: nn.Linear, w: torch.Tensor, b: torch.Tensor, mu: np.ndarray, sd: np.ndarray
) -> nn.Module:
    """Write a head fitted on standardised features into ``head``, folding the standardisation in.

    ``w @ ((f - mu) / sd) + b == (w / sd) @ f + (b - w @ (mu / sd))``.
    """
    mu_t = torch.from_numpy(mu).to(w)
    sd_t = torch.from_numpy(sd).to(w)
    with torch.no_grad():
        head.weight.copy_((w / sd_t).to(head.weight))
        head.bias.copy_((b - w @ (mu_t / sd_t)).to(head.bias))
    return model
