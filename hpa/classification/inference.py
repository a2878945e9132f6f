"""Scoring views with a trained network, and pooling view scores into image scores."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from hpa.aggregation import combine_with_tiles, pool_cells
from hpa.classification.data import BatchLoader, dihedral
from hpa.classification.engine import Engine, OnnxEngine

if TYPE_CHECKING:
    from hpa.classification.model import ModelConfig

log = logging.getLogger(__name__)

#: Dihedral transforms in the order TTA uses them: identity, flip, rot180, ...
TTA_ORDER = (0, 4, 2, 6, 1, 5, 3, 7)

#: ``--precision`` choices: ``auto`` = bf16 where the hardware computes it natively.
PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as torch's cpuinfo sees it.

    oneDNN emulates bf16 on older CPUs, which is slower than fp32, so ``auto`` keeps
    those on fp32.
    """
    probes = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", None),
        getattr(torch.cpu, "_is_amx_tile_supported", None),
    )
    return torch.backends.mkldnn.is_available() and any(f is not None and f() for f in probes)


def resolve_precision(precision: str, device: str) -> str:
    """``bf16`` or ``fp32`` for ``precision`` (``auto``, ``bf16`` or ``fp32``) on ``device``.

    ``auto`` picks bf16 autocast on CUDA cards that support it and on CPUs with native
    bf16 (about 1.6x the fp32 training throughput of a small ResNet on an AVX512-BF16
    CPU, see benchmarks/RESULTS.md), fp32 elsewhere.

    >>> resolve_precision("fp32", "cuda")
    'fp32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: str, precision: str = "auto") -> torch.autocast:
    """bf16 autocast on ``device`` when ``precision`` resolves to bf16, else a disabled context."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")


@torch.inference_mode()
def score_views(
    model: nn.Module | Engine,
    views: np.ndarray,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
    scale: float,
    *,
    rows: np.ndarray | None = None,
    device: str = "cpu",
    batch_size: int = 256,
    tta: int = 1,
    precision: str = "auto",
    mix: np.ndarray | None = None,
    intensity: str = "dataset",
    size: int | None = None,
) -> np.ndarray:
    """Class probabilities of views.

    Args:
        model: the network, in eval mode, on ``device``, or an engine running it
            (:func:`hpa.classification.engine.make_engine`; autocast applies to torch's).
        views: ``(N, S, S, C)`` uint8/uint16 views (an array or the cache's memmap).
        mean, std: normalisation of [0, 1]-scaled inputs.
        scale: dtype maximum of ``views``.
        rows: which rows to score (default: all).
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: views per forward pass.
        tta: number of dihedral transforms averaged (1, 2, 4 or 8).
        precision: ``auto``, ``bf16`` or ``fp32`` (see :func:`resolve_precision`).
        mix: ``(C, 4)`` channel mixing matrix of the model's inputs; None = the four stains.
        intensity: how views are scaled to [0, 1] (:func:`hpa.classification.model.unit_views`).
        size: the network's input side (views are resized to it); None = as cut.

    Returns:
        ``(len(rows), K)`` float32 probabilities.
    """
    if tta not in (1, 2, 4, 8):
        raise ValueError(f"tta must be 1, 2, 4 or 8, got {tta}")
    rows = np.arange(len(views)) if rows is None else np.asarray(rows)
    loader = BatchLoader(
        views,
        rows,
        None,
        batch_size,
        np.asarray(mean),
        np.asarray(std),
        scale,
        device=device,
        mix=mix,
        intensity=intensity,
        size=size,
    )
    out = []
    precision = resolve_precision(precision, device)
    for x, _ in loader:
        if not isinstance(model, OnnxEngine):  # ONNX Runtime takes NCHW arrays
            x = x.contiguous(memory_format=torch.channels_last)
        p = None
        for k in TTA_ORDER[:tta]:
            with autocast(device, precision):
                q = torch.sigmoid(model(dihedral(x, k)).float())
            p = q if p is None else p + q
        assert p is not None
        out.append((p / tta).cpu().numpy())
    n_classes = getattr(model, "num_classes", 0)
    return np.concatenate(out) if out else np.zeros((0, n_classes), dtype=np.float32)


def pool_views(
    index: pd.DataFrame,
    probs: np.ndarray,
    image_ids: Sequence[str],
    pooling: str = "max",
    tile_weight: float = 0.5,
    use_cells: bool = True,
    use_tiles: bool = True,
) -> np.ndarray:
    """Image scores from cell and tile scores.

    Cell scores are pooled per image with ``pooling``; tile scores are max-pooled (a
    label seen in one quadrant tile is in the image); the two are combined by a
    weighted mean. An image without cells falls back to its tile scores.

    Args:
        index: one row per view with ``image_id`` and ``kind`` (``"cell"``/``"tile"``).
        probs: ``(len(index), K)`` view probabilities.
        image_ids: the images, in output order.

    Returns:
        ``(len(image_ids), K)`` float32 scores.
    """
    kind = index["kind"].to_numpy()
    view_ids = index["image_id"].to_numpy()
    cells, tiles = kind == "cell", kind == "tile"
    n_classes = probs.shape[1]
    if use_cells and cells.any():
        cell_scores = pool_cells(view_ids[cells], probs[cells], image_ids, method=pooling)
    else:
        cell_scores = np.full((len(image_ids), n_classes), np.nan, dtype=np.float32)
    tile_scores = None
    if use_tiles and tiles.any():
        tile_scores = pool_cells(view_ids[tiles], probs[tiles], image_ids, method="max")
    return combine_with_tiles(cell_scores, tile_scores, method="mean", tile_weight=tile_weight)


def image_scores(
    index: pd.DataFrame,
    probs: np.ndarray,
    image_ids: Sequence[str],
    cfg: ModelConfig,
    pooling: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image scores and view probabilities of a model's outputs (one model or a blend).

    One model: :func:`pool_views` with the config's pooling and tile weight. A blend
    (``cfg.groups``): each group's block of ``probs`` is pooled with its own pooling and
    tile weight, and the image scores are the groups' weighted mean; the view
    probabilities are the weighted mean of the blocks.

    Args:
        index: one row per view with ``image_id`` and ``kind``.
        probs: ``(len(index), cfg.output_width)`` view probabilities.
        image_ids: the images, in output order.
        cfg: the model's config.
        pooling: a cell pooling for every group instead of their own (``--pooling``).

    Returns:
        ``(len(image_ids), K)`` image scores and ``(len(index), K)`` view probabilities.
    """
    if not cfg.groups:
        scores = pool_views(
            index, probs, image_ids, pooling or cfg.pooling, cfg.tile_weight, cfg.use_cells, cfg.use_tiles
        )
        return scores, probs
    k = cfg.num_classes
    scores = np.zeros((len(image_ids), k), np.float32)
    views = np.zeros((len(index), k), np.float32)
    for g, group in enumerate(cfg.groups):
        block = probs[:, g * k : (g + 1) * k]
        scores += group.weight * pool_views(
            index, block, image_ids, pooling or group.pooling, group.tile_weight, cfg.use_cells, cfg.use_tiles
        )
        views += group.weight * block
    return scores, views
