"""Settings of ``hpa predict``: one frozen dataclass, and the segmentation a model asks for.

``hpa predict`` resolves them as every command does (:func:`hpa.config.resolve`):
these defaults, then a ``--config`` YAML file, then the flags given. The segmentation
of images predicted without ``--masks`` is the model's own: the settings its training
masks were made with (``MODEL_DIR/segmentation.yaml``), so a model sees cells cut the
way it learned them; ``backend`` overrides only the backend.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpa.aggregation.pooling import POOLING_METHODS
from hpa.aggregation.single_cell import CELL_SCORES
from hpa.artefacts import ModelDir
from hpa.config import SettingError, Spelling, from_dict
from hpa.constants import ENGINES
from hpa.errors import HPAConfigError

if TYPE_CHECKING:
    from hpa.segmentation.config import SegmentConfig

log = logging.getLogger(__name__)

_CHOICES = {
    "tta": (1, 2, 4, 8),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "bf16", "fp32"),
    "engine": ENGINES,
    "format": (None, "2018", "2021", "both"),
    "backend": (None, "watershed", "cellpose"),
    "pooling": (None, *POOLING_METHODS),
    "cell_score": (None, *CELL_SCORES),
}


@dataclass(frozen=True)
class PredictConfig:
    """Settings of one ``hpa predict`` run (saved, resolved, in ``PRED_DIR/config.yaml``).

    Attributes:
        tta: dihedral test-time augmentation views (1, 2, 4, 8).
        pooling: cell-to-image pooling; None = the model's.
        fill_top: predict the top class where no class passes its threshold.
        batch_size: views per forward pass; None = by device (128 CPU, 512 GPU).
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``bf16`` or ``fp32`` autocast.
        engine: what runs the network: ``auto`` (openvino, else onnxruntime, on the CPU
            when installed; torch on CUDA), ``torch``, ``onnxruntime`` or ``openvino``
            (:mod:`hpa.classification.engine`).
        workers: processes reading, segmenting and cropping; None = by the cores.
        backend: segmentation backend without ``--masks``; None = the model's.
        format: ``2018``, ``2021`` or ``both``; None = the model's label set.
        cell_score: the 2021 cell confidence rule; None = the benchmark's choice.
        min_cell_score: lowest confidence listed in ``submission_2021.csv``.
        model_weights: weight of each ``--model`` in the average; None = equal.
    """

    tta: int = 1
    pooling: str | None = None
    fill_top: bool = True
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    engine: str = "auto"
    workers: int | None = None
    backend: str | None = None
    format: str | None = None
    cell_score: str | None = None
    min_cell_score: float | None = None
    model_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        """The checks of every predict setting: the CLI's (via :func:`hpa.config.resolve`)
        and the API's (:func:`predict_settings`), named as each caller does.

        Raises:
            SettingError: the first refused setting.
        """
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                shown = ", ".join(str(a) for a in allowed if a is not None)
                raise SettingError(name, getattr(self, name), f"choose from {shown}")
        for name in ("batch_size", "workers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SettingError(name, value, "expected an integer >= 1")
        if not isinstance(self.fill_top, bool):
            raise SettingError("fill_top", self.fill_top, "expected true or false")
        score = self.min_cell_score
        if score is not None and not (
            isinstance(score, int | float) and not isinstance(score, bool) and 0.0 <= score <= 1.0
        ):
            raise SettingError("min_cell_score", score, "expected a number in [0, 1]")
        weights = self.model_weights
        if weights is not None and (
            isinstance(weights, str)
            or not all(
                isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
                for w in weights
            )
        ):
            raise SettingError(
                "model_weights",
                list(weights) if not isinstance(weights, str) else weights,
                "each weight must be a number > 0 (leave a model out rather than weight it 0)",
            )
        if self.format == "2018":  # the 2021 settings of a run that writes no 2021 output
            for name in ("cell_score", "min_cell_score"):
                if getattr(self, name) is not None:
                    problem = "applies to the 2021 output only, not to"
                    raise SettingError(name, getattr(self, name), problem, against=("format", "2018"))


def predict_settings(names: Spelling, **settings: Any) -> PredictConfig:
    """The :class:`PredictConfig` of settings given as a function's arguments, checked.

    The one way the API's settings are checked (:func:`hpa.predict_folder`,
    :class:`hpa.Classifier`), by the checks ``hpa predict`` runs on its flags; a list of
    ``model_weights`` is held as a tuple.

    >>> predict_settings(Spelling("hpa.f"), tta=2, model_weights=[1, 3]).model_weights
    (1, 3)
    >>> predict_settings(Spelling("hpa.f"), tta=3)
    Traceback (most recent call last):
    ...
    hpa.errors.HPAConfigError: hpa.f: tta=3: choose from 1, 2, 4, 8

    Raises:
        HPAConfigError: an unknown or refused setting, named as ``names`` spells it.
    """
    weights = settings.get("model_weights")
    if weights is not None and not isinstance(weights, str | bytes) and isinstance(weights, Iterable):
        settings["model_weights"] = tuple(weights)
    return from_dict(PredictConfig, settings, source="settings", spelling=names)


def check_weights_fit(settings: PredictConfig, n_models: int, names: Spelling) -> None:
    """Refuse ``model_weights`` that do not give one weight per model folder.

    >>> check_weights_fit(PredictConfig(model_weights=(1.0, 2.0)), 1, Spelling("hpa.f"))
    Traceback (most recent call last):
    ...
    hpa.errors.HPAConfigError: hpa.f: model_weights=[1.0, 2.0]: expected one weight per model_dir, got 2 for 1
    """
    weights = settings.model_weights
    if weights is not None and len(weights) != n_models:
        problem = f"expected one weight per {names('model_dir')}, got {len(weights)} for {n_models}"
        raise HPAConfigError(SettingError("model_weights", list(weights), problem).named(names))


def model_segmentation(model_dirs: Sequence[str | Path], backend: str | None = None) -> SegmentConfig:
    """The segmentation settings to cut a model's cells with when no masks are given.

    Args:
        model_dirs: the ``--model`` folders; the first one's training masks decide.
        backend: an explicit ``--backend``, overriding the recorded one.

    Returns:
        The recorded settings (``segmentation.yaml``), else the defaults, with ``backend``.

    Raises:
        HPAConfigError: the recorded settings are not valid segmentation settings.
    """
    from hpa.segmentation import SegmentConfig

    folder = ModelDir(model_dirs[0])
    recorded = folder.read_segmentation()
    if recorded is None:
        log.info("%s records no segmentation settings: segmenting with the defaults", folder.root)
        recorded = {}
    else:
        log.info(
            "segmenting with the settings of the model's training masks (%s)",
            folder.path(folder.SEGMENTATION),
        )
    data = {**recorded, **({"backend": backend} if backend is not None else {})}
    return from_dict(SegmentConfig, data, source=str(folder.path(folder.SEGMENTATION)))
