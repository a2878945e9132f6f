"""The Python API: the commands as functions, and a classifier held in memory.

The folder functions are the ones the ``hpa`` command runs, so a script and the
command give the same files::

    import hpa

    hpa.segment_folder("train/", "seg-train/")
    hpa.train("train/", "train.csv", "seg-train/", "model/", epochs=3)
    hpa.predict_folder("test/", "model/", "pred/", masks="seg-test/")
    result = hpa.evaluate("pred/submission.csv", "test_labels.csv")

For images already in memory, :class:`Classifier` loads a model folder once and
scores one ``(H, W, 4)`` image at a time, segmenting it when no cell mask is given
(like cellpose's ``model.eval`` or StarDist's ``predict_instances``), with the settings
its training masks were made with, as ``hpa predict`` does::

    clf = hpa.Classifier.from_folder("model/")
    result = clf.predict(image)            # or clf.predict(image, cells=cell_labels)
    result.labels, result.cells            # image labels; one row per cell

Heavy libraries (torch, timm) are imported when a function runs, not by ``import hpa``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpa.config import Spelling
from hpa.errors import HPAConfigError, HPADataError
from hpa.pipelines import predict as _predict
from hpa.pipelines.segment import segment_folder

if TYPE_CHECKING:
    import torch

    from hpa.classification.model import ModelConfig
    from hpa.classification.predictor import Predictor
    from hpa.segmentation.config import SegmentConfig

__all__ = ["CellPredictions", "Classifier", "evaluate", "predict_folder", "segment_folder", "train"]

log = logging.getLogger(__name__)


def train(
    images: str | Path,
    labels: str | Path,
    masks: str | Path,
    out: str | Path,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Train a cell classifier into the model folder ``out`` (``hpa train-cells``).

    The settings start from the defaults for ``device`` (the table in the README) and
    are overridden by ``settings``, which take the fields of
    :class:`hpa.classification.train.TrainConfig` (``backbone``, ``crop_size``,
    ``epochs``, ``batch_size``, ``folds``, ``fold``, ``lr``, ...). As with
    ``hpa train-cells``, ``folds`` without ``fold`` trains every fold into
    ``out/fold-<k>/`` and tunes the thresholds on the out-of-fold scores; so do the
    device defaults on fewer than 100 labelled images, without a companion
    (:func:`hpa.pipelines.train_command.plan_for_size`).

    Args:
        images: folder of ``<Id>_<colour>.png`` channel files.
        labels: label CSV (2018 ``Id,Target`` or 2021 ``ID,Label``).
        masks: SEG_DIR written by :func:`segment_folder`.
        out: model folder to write.
        device: ``auto``, ``cpu`` or ``cuda``.
        resume: continue an interrupted run from ``out/last.ckpt``.
        progress: show progress bars.
        **settings: overrides of the device defaults.

    Returns:
        The metrics written to ``out/metrics.json``.

    Raises:
        HPAConfigError: a setting that ``TrainConfig`` does not have.
    """
    from hpa.classification.train import TrainConfig
    from hpa.pipelines.train import masked_ids, read_training_labels
    from hpa.pipelines.train_command import plan_for_size, train_cells

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise HPAConfigError(f"hpa.train: unknown setting(s) {', '.join(unknown)}; known: {sorted(known)}")
    cfg = TrainConfig.for_device(device, source="hpa.train", **settings)
    table = read_training_labels(labels)
    all_folds = "folds" in settings and "fold" not in settings  # as train-cells --folds K: every fold
    cfg, all_folds = plan_for_size(cfg, len(masked_ids(table, masks)), all_folds=all_folds, given=settings)
    return train_cells(
        images,
        table,
        masks,
        out,
        cfg,
        all_folds=all_folds,
        resume=resume,
        progress=progress,
    )


def predict_folder(
    images: str | Path, model_dir: str | Path | Sequence[str | Path], out: str | Path, **options: Any
) -> _predict.PredictSummary:
    """Predict a folder of images into ``out``, as ``hpa predict`` does.

    The options are those of :func:`hpa.pipelines.predict.predict_folder` (``masks``,
    ``ids``, ``tta``, ``fmt``, ``min_cell_score``, ``model_weights``, ...), checked as
    ``hpa predict`` checks its flags; errors name these arguments (``min_cell_score=7.5``),
    not the flags.

    Returns:
        A :class:`hpa.pipelines.predict.PredictSummary`.

    Raises:
        HPAConfigError: a refused option, or an ``out`` that is an input or holds files
            ``hpa predict`` did not write.
    """
    names = Spelling("hpa.predict_folder", arguments=(("format", "fmt"),))
    return _predict.predict_folder(images, model_dir, out, names=names, **options)


def evaluate(
    submission: str | Path,
    labels: str | Path | None = None,
    *,
    truth: str | Path | None = None,
    format: str | None = None,
) -> dict[str, Any]:
    """Score a submission, as ``hpa evaluate`` does (the same checks, the same result).

    Args:
        submission: ``submission.csv`` (``Id,Predicted``) or ``submission_2021.csv``.
        labels: image labels (2018 ``Id,Target`` or 2021 ``ID,Label``): the macro F1 of a
            ``submission.csv``.
        truth: folder of ``cells/<Id>.png`` and ``cell_labels_2021.csv``: the cell-level
            mAP (IoU >= 0.6) of a 2021 submission.
        format: ``2018`` or ``2021``; default: 2021 with ``truth`` or a 2021 submission
            file, else 2018.

    Returns:
        2018: ``{"macro_f1", "n_images", "label_set", "submission", "labels", "per_class"}``;
        2021: ``{"map", "n_images", "n_truth_cells", "submission", "truth", "per_class", ...}``
        (JSON-ready, as ``hpa evaluate --json`` prints).

    Raises:
        HPAConfigError: a missing ``labels`` or ``truth`` for the format, or an unknown format.
        HPADataError: an unreadable file, or Ids missing, duplicated or unknown.
    """
    from hpa.pipelines.evaluate import evaluate_submission

    return evaluate_submission(submission, labels, truth=truth, fmt=format, names=Spelling("hpa.evaluate"))[1]


@dataclass(frozen=True)
class CellPredictions:
    """What :meth:`Classifier.predict` found in one image.

    Attributes:
        cells: one row per cell: ``cell_id``, its box ``bbox_y0, bbox_x0, bbox_y1,
            bbox_x1``, one probability column per class and ``predicted`` (the classes
            over their thresholds, space-separated class numbers).
        image_scores: ``(K,)`` float32 image-level scores (cells and tiles pooled as
            ``hpa predict`` pools them).
        labels: image-level classes over their thresholds (the top one when none is).
        class_names: the model's ``K`` classes.
        cell_mask: ``(H, W)`` int32 cell labels the cells were cut from.
    """

    cells: pd.DataFrame
    image_scores: np.ndarray
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    cell_mask: np.ndarray

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of :attr:`labels`."""
        return tuple(self.class_names[k] for k in self.labels)


class Classifier:
    """A trained model folder in memory, scoring images one at a time.

    Use :meth:`from_folder`; the network, its normalisation, crop settings, pooling
    and tuned thresholds all come from the folder, and it scores through the same
    :class:`hpa.classification.predictor.Predictor` as ``hpa predict``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        thresholds: np.ndarray,
        *,
        device: str = "cpu",
        precision: str = "auto",
        segment_config: SegmentConfig | None = None,
        engine: str = "auto",
        engine_cache: str | Path | None = None,
    ) -> None:
        from hpa.classification.predictor import Predictor

        predictor = Predictor.from_model(
            model, config, thresholds, device=device, precision=precision, engine=engine,
            engine_cache=engine_cache, flag="engine",
        )  # fmt: skip
        self._use(predictor, segment_config)

    def _use(self, predictor: Predictor, segment_config: SegmentConfig | None) -> None:
        #: The model that scores, pools and thresholds (``hpa predict``'s).
        self.predictor = predictor
        #: How images without cell labels are segmented: the model's training masks' settings.
        self.segment_config = segment_config
        log.info("Classifier: engine %s on %s", predictor.engine, predictor.device)

    @classmethod
    def from_predictor(cls, predictor: Predictor, segment_config: SegmentConfig | None = None) -> Classifier:
        """A classifier of a loaded :class:`hpa.classification.predictor.Predictor`."""
        classifier = cls.__new__(cls)
        classifier._use(predictor, segment_config)
        return classifier

    @classmethod
    def from_folder(
        cls,
        folder: str | Path | Sequence[str | Path],
        *,
        weights: Sequence[float] | None = None,
        device: str = "auto",
        precision: str = "auto",
        engine: str = "auto",
    ) -> Classifier:
        """Load a model folder written by ``hpa train-cells``, as ``hpa predict --model`` does.

        Args:
            folder: a model folder (``config.json``, ``weights.safetensors``,
                ``thresholds.json``), a ``--folds`` folder (its folds averaged, with the
                out-of-fold thresholds), or several folders to average.
            weights: weight of each of several folders (default: equal).
            device: ``auto``, ``cpu`` or ``cuda``.
            precision: ``auto``, ``bf16`` or ``fp32`` autocast.
            engine: what runs the network: ``auto`` (openvino, else onnxruntime, on the CPU
                when installed; torch on CUDA), ``torch``, ``onnxruntime`` or ``openvino``;
                the ONNX export both run is cached in the (first) folder's ``engine-cache/``, as ``hpa predict`` does.

        Raises:
            HPAConfigError: a setting ``hpa predict`` refuses (the same checks, in
                :class:`hpa.pipelines.predict_config.PredictConfig`), named as this argument.
        """
        from hpa.classification.predictor import Predictor
        from hpa.config import SettingError
        from hpa.pipelines.predict_config import check_weights_fit, model_segmentation, predict_settings

        names = Spelling(
            "hpa.Classifier.from_folder", arguments=(("model_weights", "weights"), ("model_dir", "folder"))
        )
        if not isinstance(folder, str | Path) and not (
            isinstance(folder, Sequence) and folder and all(isinstance(f, str | Path) for f in folder)
        ):
            problem = "expected a model folder path (str or pathlib.Path) or a list of them"
            raise HPAConfigError(SettingError("folder", folder, problem).named(names))
        # hpa predict's checks of the same settings
        settings = predict_settings(
            names, device=device, precision=precision, model_weights=weights, engine=engine
        )
        folders = [folder] if isinstance(folder, str | Path) else list(folder)
        check_weights_fit(settings, len(folders), names)
        predictor = Predictor.load(
            folders, settings.model_weights, device=device, precision=precision, engine=engine, flag="engine"
        )
        return cls.from_predictor(predictor, model_segmentation(folders))  # segmented as hpa predict does

    @property
    def model(self) -> torch.nn.Module | None:
        """The network (its engine runs it)."""
        return self.predictor.model

    @property
    def config(self) -> ModelConfig:
        return self.predictor.config

    @property
    def thresholds(self) -> np.ndarray:
        return self.predictor.thresholds

    @property
    def device(self) -> str:
        return self.predictor.device

    @property
    def precision(self) -> str:
        """``bf16`` or ``fp32``, as resolved for the device and engine."""
        return self.predictor.precision

    @property
    def engine(self) -> str:
        """What runs the network: ``torch`` or ``onnxruntime`` (``engine`` resolved)."""
        return self.predictor.engine

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.predictor.class_names

    def predict(
        self,
        image: np.ndarray,
        cells: np.ndarray | None = None,
        *,
        tta: int = 1,
        segment_config: SegmentConfig | None = None,
    ) -> CellPredictions:
        """Score every cell of one image and pool them into image labels.

        Args:
            image: ``(H, W, 4)`` uint8 or uint16 channels in the order red, green,
                blue, yellow (:data:`hpa.constants.CHANNELS`).
            cells: ``(H, W)`` integer cell labels (0 = background); None segments the
                image with :func:`hpa.segmentation.segment` (``segment_config``).
            tta: dihedral test-time augmentation views (1, 2, 4 or 8).
            segment_config: segmentation settings when ``cells`` is None (default: those
                the model's training masks were made with, as ``hpa predict`` uses).

        Returns:
            A :class:`CellPredictions`.

        Raises:
            HPAConfigError: a ``tta`` that ``hpa predict --tta`` refuses.
            HPADataError: the image is not ``(H, W, 4)`` uint8/uint16, or ``cells`` does
                not match its size.
        """
        from hpa.classification.cache import image_views, views_index
        from hpa.pipelines.predict_config import predict_settings

        predict_settings(Spelling("hpa.Classifier.predict"), tta=tta)  # hpa predict's check of --tta
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 4 or image.dtype not in (np.uint8, np.uint16):
            raise HPADataError(
                f"Classifier.predict needs an (H, W, 4) uint8 or uint16 image, got {image.shape} {image.dtype}"
            )
        if cells is None:
            from hpa.segmentation import segment

            cells, _ = segment(image, segment_config or self.segment_config)
        cells = np.asarray(cells)
        views = image_views(image, cells.astype(np.int32, copy=False), "image", self.config.crop)
        index = views_index(views)
        probs = self.predictor.score([views], batch_size=256, tta=tta)
        scores, probs = self.predictor.pool(index, probs, ["image"])
        labels = tuple(int(k) for k in np.flatnonzero(self.predictor.labels(scores)[0]))
        table = self.predictor.tables(index, probs)[0].drop(columns="image_id")
        log.debug("scored %d cells and %d tiles", len(views.cell_ids), len(views.tiles))
        return CellPredictions(table, scores[0], labels, self.class_names, cells)
