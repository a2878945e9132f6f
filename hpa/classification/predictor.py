"""The one predictor: a trained model folder that scores views and pools them into labels.

``hpa predict`` (:mod:`hpa.pipelines.predict`), each shard of a cluster run
(:mod:`hpa.pipelines.predict_dask`) and :class:`hpa.Classifier` all score through a
:class:`Predictor`, so the network, its engine, precision and channel mix, the pooling of
cells and tiles and the thresholds are chosen in one place::

    predictor = Predictor.load(["model/"], device="cpu")
    probs = predictor.score([views], batch_size=128, tta=1)     # ImageViews -> (N, K)
    scores, probs = predictor.pool(index, probs, ["img"])       # image scores, view probs
    labels = predictor.labels(scores)                           # multi-hot, thresholded
    cells, tiles = predictor.tables(index, probs)               # with each cell's calls

It lives with the model (layer ``models``) and takes its settings as plain arguments:
the settings object of a run (:class:`hpa.pipelines.predict_config.PredictConfig`) is the
pipelines' and checked there, before a predictor is made.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hpa.aggregation import apply_thresholds
from hpa.artefacts.modeldir import ModelDir
from hpa.artefacts.tables import split_views

if TYPE_CHECKING:
    from torch import nn

    from hpa.classification.cache import ImageViews
    from hpa.classification.engine import Engine
    from hpa.classification.model import ModelConfig

log = logging.getLogger(__name__)

__all__ = ["Predictor"]


@dataclass(frozen=True, eq=False)
class Predictor:
    """A model (one folder, or several averaged) ready to score views of images.

    Attributes:
        config: the model's config: the views to cut, the classes, the pooling.
        thresholds: ``(K,)`` per-class thresholds.
        net: the network behind its engine; None for a predictor that only pools and
            thresholds views scored elsewhere (:meth:`plan`: a cluster's workers score).
        device: ``cpu`` or ``cuda`` (resolved).
        precision: ``bf16`` or ``fp32`` (resolved; onnxruntime runs fp32).
        engine: ``torch`` or ``onnxruntime`` (resolved).
        model: the network itself (``net`` runs it); None with ``net``.
    """

    config: ModelConfig
    thresholds: np.ndarray
    net: Engine | None = None
    device: str = "cpu"
    precision: str = "fp32"
    engine: str = "torch"
    model: nn.Module | None = None

    @classmethod
    def load(
        cls,
        folders: Sequence[str | Path],
        weights: Sequence[float] | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        engine: str = "auto",
        threads: int | None = None,
        flag: str = "--engine",
    ) -> Predictor:
        """Load model folders as ``hpa predict --model`` does, and choose how they run.

        Args:
            folders: a model folder, a ``--folds`` or blend folder, or several averaged
                (:func:`hpa.classification.ensemble.load_predictor`).
            weights: weight of each of several folders (default: equal).
            device: ``auto``, ``cpu`` or ``cuda``.
            precision: ``auto``, ``bf16`` or ``fp32``.
            engine: ``auto``, ``torch``, ``onnxruntime`` or ``openvino``; the ONNX export
                is cached in the first folder's ``engine-cache/``.
            threads: ONNX Runtime's intra-op threads (default: the cores).
            flag: how errors name the engine setting.

        Raises:
            HPAConfigError: an engine that cannot run here, or folders that cannot be
                loaded or averaged.
        """
        from hpa.classification.ensemble import load_predictor
        from hpa.config import resolve_device

        device = resolve_device(device)
        precision, engine = _run_mode(device, precision, engine, flag)
        model, config, thresholds = load_predictor(folders, weights, device)
        cache = ModelDir(folders[0]).path(ModelDir.ENGINE_CACHE)
        return cls.from_model(
            model, config, thresholds, device=device, precision=precision, engine=engine,
            engine_cache=cache, threads=threads, flag=flag,
        )  # fmt: skip

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        config: ModelConfig,
        thresholds: np.ndarray,
        *,
        device: str = "cpu",
        precision: str = "auto",
        engine: str = "auto",
        engine_cache: str | Path | None = None,
        threads: int | None = None,
        flag: str = "--engine",
    ) -> Predictor:
        """A predictor of a network already in memory, on ``device`` (resolved)."""
        from hpa.classification.engine import make_engine

        precision, engine = _run_mode(device, precision, engine, flag)
        net = make_engine(model, engine, cache_dir=engine_cache, threads=threads)
        thresholds = np.asarray(thresholds, dtype=np.float64)
        log.info("engine: %s (%s, %s)", engine, device, precision)
        return cls(config, thresholds, net, device=device, precision=precision, engine=engine, model=model)

    @classmethod
    def plan(cls, folders: Sequence[str | Path], weights: Sequence[float] | None = None) -> Predictor:
        """The config and thresholds of ``folders`` without their networks: pools and
        thresholds views that others score (``hpa predict --scheduler``)."""
        from hpa.classification.ensemble import predictor_config

        config, thresholds = predictor_config(folders, weights)
        return cls(config, thresholds)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config.class_names)

    @property
    def default_batch_size(self) -> int:
        """Views per forward pass unless told (:func:`default_batch_size`)."""
        return default_batch_size(self.device)

    def score(self, views: Sequence[ImageViews], *, batch_size: int = 256, tta: int = 1) -> np.ndarray:
        """``(N, W)`` float32 probabilities of the crops then tiles of each of ``views``, in order.

        ``W`` is the config's output width (the classes, once per group of a blend). 8- and
        16-bit images are scaled by their own range, so views of one bit depth are scored
        together (concatenating both would promote 8-bit views to uint16).
        """
        from hpa.classification.channels import channel_matrix, is_identity
        from hpa.classification.inference import score_views

        if self.net is None:
            raise RuntimeError("this predictor has no network (Predictor.plan): it pools and thresholds only")
        cfg = self.config
        # the model's inputs from the four stains: a choice, an order or a merge of them
        mix = None if is_identity(cfg.channels) else channel_matrix(cfg.channels)
        per_image = [np.concatenate([v.crops, v.tiles]) for v in views]
        sizes = [len(v) for v in per_image]
        probs = np.empty((sum(sizes), cfg.output_width), np.float32)
        starts = np.cumsum([0, *sizes])
        for dtype in sorted({v.dtype.str for v in per_image}):
            members = [k for k, v in enumerate(per_image) if v.dtype.str == dtype]
            scored = score_views(
                self.net, np.concatenate([per_image[k] for k in members]), cfg.mean, cfg.std,
                float(np.iinfo(np.dtype(dtype)).max), device=self.device, batch_size=batch_size, tta=tta,
                precision=self.precision, mix=mix, intensity=cfg.intensity, size=cfg.network_size,
            )  # fmt: skip
            offset = 0
            for k in members:
                probs[starts[k] : starts[k + 1]] = scored[offset : offset + sizes[k]]
                offset += sizes[k]
        return probs

    def pool(
        self, index: pd.DataFrame, probs: np.ndarray, image_ids: Sequence[str], pooling: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(len(image_ids), K)`` image scores and ``(len(index), K)`` view probabilities
        (:func:`hpa.classification.inference.image_scores`); ``pooling`` overrides the model's."""
        from hpa.classification.inference import image_scores

        return image_scores(index, probs, image_ids, self.config, pooling)

    def labels(self, scores: np.ndarray, fill_top: bool = True) -> np.ndarray:
        """Multi-hot ``uint8`` labels of ``scores`` over the thresholds
        (:func:`hpa.aggregation.apply_thresholds`)."""
        return apply_thresholds(scores, self.thresholds, fill_top=fill_top)

    def tables(self, index: pd.DataFrame, probs: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The cell and tile tables of pooled view probabilities (:func:`split_views`); each
        cell's ``predicted`` classes are those over their thresholds (none filled in)."""
        cells, tiles = split_views(index, probs, self.class_names)
        called = self.labels(cells[list(self.class_names)].to_numpy(), fill_top=False)
        cells["predicted"] = [" ".join(map(str, np.flatnonzero(r))) for r in called]
        return cells, tiles


def default_batch_size(device: str) -> int:
    """Views per forward pass unless told: 512 on CUDA, 128 on the CPU.

    >>> default_batch_size("cuda"), default_batch_size("cpu")
    (512, 128)
    """
    return 512 if device == "cuda" else 128


def _run_mode(device: str, precision: str, engine: str, flag: str) -> tuple[str, str]:
    """The precision and engine a network runs with on ``device``: onnxruntime runs fp32."""
    from hpa.classification.engine import resolve_engine
    from hpa.classification.inference import resolve_precision

    resolved = resolve_precision(precision, device)
    engine = resolve_engine(engine, device, precision, flag=flag)  # as asked: auto is not bf16
    return (resolved if engine == "torch" else "fp32"), engine
