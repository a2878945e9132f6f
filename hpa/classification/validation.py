"""The validation score of a classifier: view probabilities pooled per image, thresholds tuned.

Full training (:func:`hpa.classification.train.fit`), the head fitted on frozen features
(:mod:`hpa.classification.probe`) and the choice of the tile weight all select a model
by this score, the image-level macro F1 the competition scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hpa.aggregation import ThresholdResult, apply_thresholds, macro_f1, tune_thresholds
from hpa.classification.inference import pool_views
from hpa.errors import HPAConfigError, HPADataError

if TYPE_CHECKING:
    from hpa.classification.train import TrainConfig, TrainData


def score_validation_images(
    data: TrainData, probs: np.ndarray, cfg: TrainConfig, tile_weight: float
) -> tuple[dict[str, float], np.ndarray, ThresholdResult]:
    """Pool validation view probabilities per image, tune thresholds, measure macro F1.

    Args:
        data: the split; ``probs`` follows ``data.val_rows``.
        probs: ``(len(data.val_rows), K)`` float32 view probabilities.
        cfg: pooling, views used and threshold shrinkage.
        tile_weight: weight of the tile scores in the image score.

    Returns:
        ``(metrics, (M, K) image scores, tuned thresholds)``; ``metrics`` holds
        ``val_macro_f1`` (tuned thresholds) and ``val_macro_f1_at_0.5``.
    """
    scores = validation_image_scores(data, probs, cfg, tile_weight)
    tuned = tune_thresholds(data.val_y, scores, shrink=cfg.threshold_shrink)
    metrics = {
        "val_macro_f1": macro_f1(data.val_y, apply_thresholds(scores, tuned.thresholds)),
        "val_macro_f1_at_0.5": macro_f1(data.val_y, apply_thresholds(scores, np.full(scores.shape[1], 0.5))),
    }
    return metrics, scores, tuned


def validation_image_scores(
    data: TrainData, probs: np.ndarray, cfg: TrainConfig, tile_weight: float
) -> np.ndarray:
    """The ``(M, K)`` validation image scores: ``probs`` (following ``data.val_rows``) pooled
    per image with ``cfg``'s pooling and views and ``tile_weight``."""
    index = data.index.iloc[data.val_rows]
    return pool_views(index, probs, data.val_ids, cfg.pooling, tile_weight, cfg.use_cells, cfg.use_tiles)


def split_images(y: np.ndarray, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified multi-label split of images (iterative stratification).

    Args:
        y: ``(N, K)`` multi-hot labels of the images.
        folds: number of folds (>= 2).
        fold: the validation fold, ``0 <= fold < folds``.
        seed: shuffling seed.

    Returns:
        ``(train, val)`` row indices into ``y``; every image is on exactly one side.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if folds < 2:
        raise HPAConfigError(f"--folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise HPAConfigError(f"--fold must be in 0..{folds - 1}, got {fold}")
    if len(y) < folds:
        raise HPADataError(f"{len(y)} usable labelled images cannot be split into {folds} folds")
    splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (train, val) in enumerate(splitter.split(np.zeros(len(y)), y)):
        if k == fold:
            return np.sort(train), np.sort(val)
    raise AssertionError("unreachable")
