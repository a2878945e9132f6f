"""Choosing a weight on held-out scores: the one rule behind the tile and blend weights.

Three steps of training choose one number from a short grid by how well the image
scores it makes do on labelled images the model did not train on:

* a model's tile weight (the tiles' share of the image score), on its validation images
  (:func:`hpa.pipelines.train.train_model`);
* a ``--folds`` run's tile weight, on the out-of-fold images of all its folds
  (:func:`hpa.classification.ensemble.tune_on_views`);
* a blend's weight (the main model's share beside its companion), on the validation or
  out-of-fold images (:func:`hpa.pipelines.blend.choose_blend_weight`).

:func:`choose_weight` is that choice. What differs between them is a parameter:

* ``metric``: both tile weights are judged by macro F1 at thresholds tuned on the same
  images (:func:`tuned_macro_f1`), the blend weight by macro average precision
  (:func:`hpa.aggregation.metrics.macro_average_precision`: the ranking alone, which on a
  few dozen images moves less between neighbouring weights than a tuned F1);
* ``resamples``: the tile weights take the best weight (``resamples=0``); the blend
  weight takes the one-standard-error rule over bootstrap resamples of the images, so
  that a companion gets weight only where it beats the main model by more than the
  noise of these images.

The grid is in order of preference: ties go to the earlier weight, and so does the
one-standard-error rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hpa.aggregation.metrics import macro_f1
from hpa.aggregation.thresholds import apply_thresholds, tune_thresholds

#: A held-out metric: ``metric(y, scores)`` of ``(N, K)`` labels and image scores, higher is better.
Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class WeightChoice:
    """What :func:`choose_weight` chose, and the figures it chose by.

    Attributes:
        weight: the chosen weight.
        scores: the ``(N, K)`` image scores at that weight.
        metric: the metric on all the held-out images, by weight (in grid order).
        errors: by weight, the bootstrap standard error of its metric's shortfall from
            the best weight's (0 without resampling).
    """

    weight: float
    scores: np.ndarray
    metric: dict[float, float]
    errors: dict[float, float]


def choose_weight(
    y: np.ndarray,
    grid: Sequence[float],
    scores_at: Callable[[float], np.ndarray],
    metric: Metric,
    *,
    resamples: int = 0,
    seed: int = 0,
) -> WeightChoice:
    """The weight of ``grid`` whose image scores do best by ``metric`` on labelled images.

    The best weight is the one with the highest ``metric`` on all the images (the first
    of equals). With ``resamples`` > 1, the one-standard-error rule: the first weight of
    the grid whose metric is within one standard error of the best is taken, the error
    being that of its shortfall from the best across ``resamples`` bootstrap resamples
    (images drawn with replacement, the same draw for every weight). Without resampling
    that is the best weight itself.

    Args:
        y: ``(N, K)`` multi-hot labels of the held-out images.
        grid: candidate weights, in order of preference.
        scores_at: the ``(N, K)`` image scores a weight makes, rows as ``y``.
        metric: what judges them (:data:`Metric`).
        resamples: bootstrap resamples for the one-standard-error rule (0: the best).
        seed: seed of the resampling.

    >>> from hpa.aggregation.metrics import macro_average_precision
    >>> y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    >>> good, flat = y * 0.8 + 0.1, np.full((4, 2), 0.5)
    >>> blend = lambda w: w * good + (1 - w) * flat
    >>> choice = choose_weight(y, (0.0, 0.5, 1.0), blend, macro_average_precision)
    >>> choice.weight, choice.metric
    (0.5, {0.0: 0.5, 0.5: 1.0, 1.0: 1.0})
    >>> choose_weight(y, (1.0, 0.5, 0.0), blend, macro_average_precision).weight  # ties: the first
    1.0

    Four images cannot tell a perfect ranking from a good one: with the
    one-standard-error rule the first weight stays.

    >>> y = np.array([[1], [0], [1], [0]])
    >>> main, other = np.array([[0.9], [0.6], [0.5], [0.1]]), np.array([[0.9], [0.1], [0.8], [0.2]])
    >>> blend = lambda w: w * main + (1 - w) * other
    >>> choose_weight(y, (1.0, 0.0), blend, macro_average_precision).metric
    {1.0: 0.8333333333333333, 0.0: 1.0}
    >>> choose_weight(y, (1.0, 0.0), blend, macro_average_precision, resamples=100).weight
    1.0
    """
    candidates = [scores_at(w) for w in grid]
    values = np.array([metric(y, s) for s in candidates])
    best = int(np.argmax(values))  # the first of equals
    errors = _shortfall_errors(y, candidates, metric, best, resamples, seed)
    chosen = next(k for k in range(len(grid)) if values[best] - values[k] <= errors[k])
    return WeightChoice(
        weight=grid[chosen],
        scores=candidates[chosen],
        metric={w: float(v) for w, v in zip(grid, values)},
        errors={w: float(e) for w, e in zip(grid, errors)},
    )


def _shortfall_errors(
    y: np.ndarray, candidates: list[np.ndarray], metric: Metric, best: int, resamples: int, seed: int
) -> np.ndarray:
    """Per candidate, the bootstrap standard error of its metric's shortfall from ``best``'s
    (paired: one draw of images for all); zeros for fewer than two resamples."""
    rng = np.random.default_rng(seed)
    shortfalls = []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        boot = np.array([metric(y[rows], s[rows]) for s in candidates])
        shortfalls.append(boot[best] - boot)
    return np.std(shortfalls, axis=0) if resamples > 1 else np.zeros(len(candidates))


def tuned_macro_f1(shrink: float) -> Metric:
    """The metric of the tile weights: macro F1 at per-class thresholds tuned on the same
    images (:func:`hpa.aggregation.tune_thresholds` with ``shrink``).

    >>> y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    >>> tuned_macro_f1(0.0)(y, y * 0.2 + 0.1)  # a perfect ranking, below 0.5
    1.0
    """

    def metric(y: np.ndarray, scores: np.ndarray) -> float:
        tuned = tune_thresholds(y, scores, shrink=shrink)
        return macro_f1(y, apply_thresholds(scores, tuned.thresholds))

    return metric
