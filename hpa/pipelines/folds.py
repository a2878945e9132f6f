"""``hpa train-cells --folds K`` without ``--fold``: every fold, out-of-fold thresholds.

Fold ``k`` is trained into ``OUT/fold-<k>/``, a complete model folder validated on the
``k``-th part of the images. Every training image is validated by exactly one fold, so
the folds' validation scores together are out-of-fold scores for all of them: the
tile weight and the per-class thresholds are tuned on those (all the images, not one
fold's fifth), and ``OUT`` becomes an ensemble that ``hpa predict --model OUT``
averages. A rerun skips finished folds and resumes an interrupted one from its
``last.ckpt``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpa import runlog
from hpa.artefacts import ModelDir, write_csv, write_parquet
from hpa.artefacts.modelcard import write_training_record
from hpa.artefacts.provenance import check_reuse, remove_record, write_record
from hpa.artefacts.tables import image_score_table
from hpa.config import save_json, to_dict
from hpa.errors import HPAConfigError
from hpa.io import Labels, write_labels
from hpa.outputs import claim_entries

if TYPE_CHECKING:
    from hpa.aggregation import ThresholdResult
    from hpa.classification.cache import Folders
    from hpa.classification.train import TrainConfig
    from hpa.io_tiff import ChannelMap

log = logging.getLogger(__name__)

#: Settings that may differ between a finished fold and a rerun without invalidating it.
_FREE = {"fold", "workers", "device", "precision", "engine", "world_size", "max_steps"}


def fold_dir(out: str | Path, k: int) -> Path:
    """The model folder of fold ``k``."""
    return ModelDir(out).fold(k).root


def check_same_settings(folder: Path, cfg: TrainConfig) -> None:
    """Refuse to reuse a fold folder trained with other settings (naming the first difference)."""
    path = folder / ModelDir.TRAIN_CONFIG
    saved = ModelDir(folder).read_train_config()
    if saved is None:
        return
    for key, value in to_dict(cfg).items():
        if key in _FREE or (key == "epochs" and value is None):
            continue
        if key in saved and saved[key] != value:
            raise HPAConfigError(
                f"{path}: this fold was trained with {key}={saved[key]!r}, the run asks for {value!r}; "
                "use another --out, or remove the folder"
            )


def train_folds(
    images: Folders,
    labels: Labels,
    masks: Folders,
    out: str | Path,
    cfg: TrainConfig,
    *,
    cache_root: str | Path | None = None,
    progress: bool = True,
    channel_map: ChannelMap | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every fold of ``cfg.folds`` and tune the thresholds on the out-of-fold scores.

    Args:
        images, labels, masks: as :func:`hpa.pipelines.train.train_model`.
        out: the ensemble folder (``fold-<k>/``, ``ensemble.json``, ``thresholds.json``,
            ``oof_image_scores.csv``, ``oof_view_scores.parquet``, ``oof_labels.csv``,
            ``metrics.json``).
        cfg: a :class:`hpa.classification.train.TrainConfig`; ``cfg.fold`` is ignored.
        cache_root: crop cache folder, shared by the folds.
        channel_map: which channel of a multi-channel TIFF is which (:mod:`hpa.io_tiff`).
        overwrite: retrain every fold (none is kept or resumed).

    Returns:
        The metrics written to ``OUT/metrics.json`` (out-of-fold macro F1, per class,
        each fold's validation F1 and time).

    Raises:
        HPAConfigError: a finished fold was trained on other inputs or settings
            (:func:`hpa.artefacts.provenance.check_reuse`) and ``overwrite`` is False.
    """
    from hpa.pipelines.train import check_masks_of, model_record

    t0 = time.perf_counter()
    out = Path(out)
    folds = [ModelDir(out).fold(k).root.name for k in range(cfg.folds)]
    claim_entries(out, [*ModelDir.ENTRIES, *folds], "hpa train-cells")
    runlog.write_into(out)  # one log for every fold, appended to by a rerun
    check_masks_of(images, masks)
    record = model_record("model-folds", cfg, images, labels, masks)
    fold_metrics = [
        _train_fold(
            images, labels, masks, out, replace(cfg, fold=k), cache_root, progress, channel_map, overwrite
        )
        for k in range(cfg.folds)
    ]
    oof = _tune_out_of_fold(out, labels, cfg)
    metrics = _folds_metrics(oof, cfg, fold_metrics, t0)
    remove_record(out)  # written again once the ensemble files are
    _write_ensemble(out, cfg, oof, metrics)
    write_training_record(
        out, name=out.name, seg_dirs=masks, images=images, labels=oof.labels, metrics=metrics,
        thresholds=oof.tuned.thresholds, settings=to_dict(cfg),
    )  # fmt: skip
    write_record(out, record)
    log.info(
        "%d folds in %s: out-of-fold macro F1 %.4f over %d images (tile weight %.2f); %.0f s",
        cfg.folds, out, metrics["oof_macro_f1"], len(oof.labels.ids), oof.tile_weight, metrics["seconds"],
    )  # fmt: skip
    return metrics


@dataclass(frozen=True)
class _OutOfFold:
    """The folds' validation scores together (each training image scored by one fold),
    and what was tuned on them.

    Attributes:
        views: the view scores, with their ``image_id``, ``kind`` and ``cell_id``.
        labels: the labels of the images, in the order of ``scores``.
        tile_weight: the tile weight (chosen on them when the settings leave it open).
        scores: ``(N, K)`` image scores at that weight.
        tuned: the thresholds tuned on them.
        selection: macro F1 by candidate tile weight (empty when it was given).
    """

    views: pd.DataFrame
    labels: Labels
    tile_weight: float
    scores: np.ndarray
    tuned: ThresholdResult
    selection: dict[float, float]


def _tune_out_of_fold(out: Path, labels: Labels, cfg: TrainConfig) -> _OutOfFold:
    """Read the folds' validation scores and tune the tile weight and thresholds on them
    (:func:`hpa.classification.ensemble.tune_on_views`)."""
    from hpa.classification.ensemble import tune_on_views

    views, ids = _read_out_of_fold(out, labels, cfg.folds)
    oof_labels = labels.subset(ids)
    probs = views[list(labels.class_names)].to_numpy(np.float32)
    tile_weight, scores, tuned, selection = tune_on_views(
        views, probs, ids, oof_labels.y, cfg.pooling, cfg.use_cells, cfg.use_tiles, cfg.tile_weight,
        cfg.threshold_shrink,
    )  # fmt: skip
    return _OutOfFold(views, oof_labels, tile_weight, scores, tuned, selection)


def _folds_metrics(
    oof: _OutOfFold, cfg: TrainConfig, fold_metrics: list[dict[str, Any]], t0: float
) -> dict[str, Any]:
    """What the folder's ``metrics.json`` records: out-of-fold macro F1 (overall and per
    class), the tile weight, each fold's validation F1 and time, the seconds since ``t0``."""
    from hpa.aggregation import apply_thresholds, macro_f1, per_class_report

    y_pred = apply_thresholds(oof.scores, oof.tuned.thresholds)
    report = per_class_report(oof.labels.y, y_pred, list(oof.labels.class_names))
    return {
        "oof_macro_f1": macro_f1(oof.labels.y, y_pred),
        "n_images": len(oof.labels.ids),
        "folds": cfg.folds,
        "tile_weight": oof.tile_weight,
        "tile_weight_selection": {str(w): f for w, f in oof.selection.items()},
        "fold_val_macro_f1": [float(m["val_macro_f1"]) for m in fold_metrics],
        "fold_train_seconds": [float(m["train_seconds"]) for m in fold_metrics],
        "seconds": time.perf_counter() - t0,
        "per_class": report.to_dict(orient="records"),
    }


def _train_fold(
    images: Folders,
    labels: Labels,
    masks: Folders,
    out: Path,
    cfg: TrainConfig,
    cache_root: str | Path | None,
    progress: bool,
    channel_map: ChannelMap | None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train fold ``cfg.fold`` into ``OUT/fold-<k>`` (resumed from its checkpoint, or kept when
    finished and made from the same inputs and settings); returns its metrics."""
    from hpa.pipelines.train import model_record, train_model

    k, folder = cfg.fold, fold_dir(out, cfg.fold)
    if not overwrite:
        check_same_settings(folder, cfg)
    record = model_record("model", cfg, images, labels, masks)
    if (folder / ModelDir.METRICS).is_file() and check_reuse(folder, record, overwrite=overwrite):
        log.info("fold %d of %d: finished earlier in %s, kept", k + 1, cfg.folds, folder)
        return dict(ModelDir(folder).read_metrics())
    resume = (folder / ModelDir.CHECKPOINT).is_file() and not overwrite
    log.info("fold %d of %d -> %s%s", k + 1, cfg.folds, folder, " (resumed)" if resume else "")
    return train_model(
        images,
        labels,
        masks,
        folder,
        cfg,
        cache_root=cache_root,
        resume=resume,
        progress=progress,
        channel_map=channel_map,
    )


def _read_out_of_fold(out: Path, labels: Labels, folds: int) -> tuple[pd.DataFrame, list[str]]:
    """The folds' validation view scores, and their validation image Ids, in fold order.

    Raises:
        HPAConfigError: an image is validated by two folds.
    """
    cols = list(labels.class_names)
    members = [ModelDir(out).fold(k) for k in range(folds)]
    views = pd.concat([f.read_val_views(cols) for f in members], ignore_index=True)
    ids = [i for f in members for i in f.read_val_image_ids()]
    if len(set(ids)) != len(ids):
        raise HPAConfigError(
            f"{out}: an image is validated by two folds; the fold folders come from other runs"
        )
    return views, ids


def _write_ensemble(out: Path, cfg: TrainConfig, oof: _OutOfFold, metrics: dict[str, Any]) -> None:
    """The out-of-fold tables, thresholds, metrics and ``ensemble.json`` of the folds."""
    from hpa.aggregation import save_thresholds
    from hpa.classification.ensemble import ENSEMBLE_FILE, OOF_IMAGES_FILE, OOF_LABELS_FILE, OOF_VIEWS_FILE
    from hpa.classification.model import THRESHOLDS_FILE

    cols = list(oof.labels.class_names)
    write_parquet(out / OOF_VIEWS_FILE, oof.views)
    write_csv(out / OOF_IMAGES_FILE, image_score_table(list(oof.labels.ids), oof.scores, cols))
    write_labels(out / OOF_LABELS_FILE, oof.labels)
    save_thresholds(out / THRESHOLDS_FILE, oof.tuned, cols)
    save_json(out / ModelDir.METRICS, metrics)
    save_json(
        out / ENSEMBLE_FILE,
        {
            "members": [fold_dir(out, k).name for k in range(cfg.folds)],
            "weights": [1.0] * cfg.folds,
            "tile_weight": oof.tile_weight,
            "pooling": cfg.pooling,
            "threshold_shrink": cfg.threshold_shrink,
        },
    )
