"""Per-class thresholds: tune them on validation scores, apply them, save and load them.

Macro F1 rewards getting rare classes right, and a single 0.5 cut-off rarely does: each
class gets its own threshold, tuned on validation image scores. The F1 sweep is exact:
for each class the scores are sorted once and the F1 of every distinct cut-off is read
from cumulative sums (``O(M log M)`` per class), not from a coarse grid. Thresholds sit
halfway between consecutive distinct scores, so they do not depend on whether the
comparison is ``>`` or ``>=``; :func:`apply_thresholds` predicts ``score > threshold``.

The tuned thresholds travel with the model as ``thresholds.json`` (see
``docs/artefacts.md``): ``{"class_names", "thresholds", "method", "global_threshold"}``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hpa.aggregation.metrics import f1_per_class
from hpa.errors import HPAConfigError
from hpa.io import write_text_atomic

log = logging.getLogger(__name__)

#: Tuning methods of :func:`tune_thresholds`.
THRESHOLD_METHODS = ("f1", "rate")


@dataclass(frozen=True, eq=False)
class ThresholdResult:
    """Thresholds tuned by :func:`tune_thresholds`.

    Attributes:
        thresholds: ``(C,)`` float64 threshold per class (predict ``score > threshold``).
        method: ``"f1"`` or ``"rate"``.
        global_threshold: the single threshold maximising macro F1 over all classes,
            used for the fallback classes.
        f1: ``(C,)`` float64 F1 of each class on the tuning data at its threshold.
        fallback: classes (ascending) that had fewer than ``min_positives`` positives
            (or no finite score) and got ``global_threshold``.
    """

    thresholds: np.ndarray
    method: str
    global_threshold: float
    f1: np.ndarray
    fallback: tuple[int, ...]


def _distinct_desc(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct finite scores, descending, with the true and all positives at or above each.

    Returns ``(u, tp, pp)``: ``tp[j]``/``pp[j]`` are the true/predicted positives when
    every score ``>= u[j]`` is predicted positive. NaN scores are never predicted.
    """
    finite = np.isfinite(scores)
    s, t = scores[finite], y[finite]
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, dtype=bool)
    tp = np.cumsum(t, dtype=np.int64)[last]
    pp = np.arange(1, s.size + 1, dtype=np.int64)[last]
    return s[last].astype(np.float64), tp, pp


def _cut(u: np.ndarray, j: int) -> float:
    """Threshold that predicts exactly ``u[:j + 1]`` positive (``j = -1``: none).

    Halfway between ``u[j]`` and ``u[j + 1]``; past either end, half the neighbouring
    gap beyond it (0.5 when there is a single distinct value).
    """
    if u.size == 0:
        return 0.5
    if j < 0:
        return float(u[0] + (0.5 * (u[0] - u[1]) if u.size > 1 else 0.5))
    if j >= u.size - 1:
        return float(u[-1] - (0.5 * (u[-2] - u[-1]) if u.size > 1 else 0.5))
    return float(0.5 * (u[j] + u[j + 1]))


def _best_f1_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """Exact F1-maximising threshold of one class (the highest one if several tie)."""
    u, tp, pp = _distinct_desc(scores, y)
    n_pos = int(y.sum())
    if u.size == 0 or n_pos == 0:
        return _cut(u, -1)
    f1 = 2.0 * tp / (pp + n_pos)
    return _cut(u, int(np.argmax(f1)))


def _rate_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """Threshold predicting as many positives as there are labels (ties may add more)."""
    u, _, pp = _distinct_desc(scores, y)
    n_pos = int(y.sum())
    if n_pos == 0 or u.size == 0:
        return _cut(u, -1)
    # the first distinct value whose cumulative count reaches the label count
    j = int(np.searchsorted(pp, n_pos, side="left"))
    return _cut(u, min(j, u.size - 1))


def _global_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """One threshold for all classes maximising macro F1, by an exact pooled sweep.

    Each class's F1 is a step function of the threshold; its steps (score, change of
    F1) from all classes are merged, sorted, and summed, so the macro F1 of every
    distinct pooled cut-off is known exactly.
    """
    values, deltas = [], []
    for c in range(y.shape[1]):
        u, tp, pp = _distinct_desc(scores[:, c], y[:, c])
        n_pos = int(y[:, c].sum())
        if u.size == 0 or n_pos == 0:
            continue  # F1 is 0 at every threshold
        f1 = 2.0 * tp / (pp + n_pos)
        values.append(u)
        deltas.append(np.diff(f1, prepend=0.0))
    pooled = np.unique(scores[np.isfinite(scores)]).astype(np.float64)[::-1]
    if not values:
        return _cut(pooled, -1)
    u_all = np.concatenate(values)
    order = np.argsort(-u_all, kind="stable")
    u_all, total = u_all[order], np.cumsum(np.concatenate(deltas)[order])
    last = np.r_[u_all[1:] != u_all[:-1], True]
    best = int(np.argmax(total[last]))
    best_u = u_all[last][best]
    # cut just below best_u, before the next distinct pooled score of any class
    return _cut(pooled, int(np.searchsorted(-pooled, -best_u, side="left")))


def tune_thresholds(
    y_true: np.ndarray,
    scores: np.ndarray,
    method: str = "f1",
    min_positives: int = 3,
    shrink: float = 0.0,
) -> ThresholdResult:
    """Tune one threshold per class on validation image scores.

    ``"f1"`` picks, per class, the threshold maximising that class's F1 (the highest
    such threshold if several tie), by an exact sweep over every cut-off between
    consecutive distinct scores. ``"rate"`` picks the threshold at which the class is
    predicted as often as it is labelled (ties at the cut may predict a few more).
    Either way, a class with fewer than ``min_positives`` positives gets the *global*
    threshold instead: the single threshold maximising macro F1 over all ``C`` classes,
    found by an exact sweep over the pooled distinct scores of every class. NaN scores
    are never predicted positive (a NaN-scored positive counts as missed).

    With ``shrink`` = k > 0, each tuned threshold is pulled toward the global one in
    proportion to how few positives it rests on: ``w t_class + (1 - w) t_global`` with
    ``w = n_pos / (n_pos + k)``. A class's optimum on 5 validation positives is mostly
    noise; k = 5 raised test macro F1 by about 0.01 on the synthetic benchmark (two
    models, two test sets; benchmarks/RESULTS.md).

    Args:
        y_true: ``(M, C)`` {0, 1} labels.
        scores: ``(M, C)`` float image scores.
        method: ``"f1"`` or ``"rate"``.
        min_positives: classes with fewer positives fall back to the global threshold.
        shrink: pseudo-count of positives pulling thresholds toward the global one.

    Returns:
        A :class:`ThresholdResult`.

    Example:
        >>> y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
        >>> s = np.array([[0.9, 0.1], [0.4, 0.2], [0.3, 0.7], [0.1, 0.6]])
        >>> r = tune_thresholds(y, s, min_positives=2)
        >>> r.thresholds.round(3).tolist(), r.f1.tolist(), r.fallback
        ([0.35, 0.65], [1.0, 1.0], (1,))
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose from {THRESHOLD_METHODS}")
    y = _check_binary(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape:
        raise ValueError(f"scores shape {s.shape} differs from y_true shape {y.shape}")
    n_classes = y.shape[1]
    global_t = _global_threshold(y, s)
    pick = _best_f1_threshold if method == "f1" else _rate_threshold
    thresholds = np.empty(n_classes, dtype=np.float64)
    fallback = []
    for c in range(n_classes):
        if int(y[:, c].sum()) < min_positives or not np.isfinite(s[:, c]).any():
            thresholds[c] = global_t
            fallback.append(c)
        else:
            thresholds[c] = pick(s[:, c], y[:, c])
            if shrink > 0:
                w = y[:, c].sum() / (y[:, c].sum() + shrink)
                thresholds[c] = w * thresholds[c] + (1 - w) * global_t
    if fallback:
        log.info(
            "%d class(es) with < %d positives use the global threshold %.4f: %s",
            len(fallback),
            min_positives,
            global_t,
            fallback,
        )
    pred = apply_thresholds(s, thresholds, fill_top=False)
    return ThresholdResult(thresholds, method, global_t, f1_per_class(y, pred), tuple(fallback))


def _check_binary(y: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (M, C), got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return arr.astype(np.int64)


def apply_thresholds(scores: np.ndarray, thresholds: np.ndarray, fill_top: bool = True) -> np.ndarray:
    """Turn scores into multi-hot labels: ``score > threshold`` per class.

    With ``fill_top``, a row with no class over its threshold gets the class with the
    highest ratio ``score / threshold`` (thresholds floored at 1e-6): the class
    *relatively* closest to passing, so a rare class with a low threshold is not
    crowded out by a common class whose scores are merely larger. NaN scores never
    pass and are never filled in; an all-NaN row stays empty.

    Args:
        scores: ``(M, C)`` float scores.
        thresholds: ``(C,)`` float thresholds (or a scalar).
        fill_top: give every row with any finite score at least one class.

    Returns:
        ``(M, C)`` uint8 multi-hot predictions.

    Example:
        >>> s = np.array([[0.9, 0.1], [0.3, 0.15], [np.nan, np.nan]])
        >>> apply_thresholds(s, np.array([0.5, 0.2])).tolist()  # 0.15/0.2 > 0.3/0.5
        [[1, 0], [0, 1], [0, 0]]
        >>> apply_thresholds(s, np.array([0.5, 0.2]), fill_top=False).tolist()
        [[1, 0], [0, 0], [0, 0]]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (M, C), got shape {s.shape}")
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (s.shape[1],))
    with np.errstate(invalid="ignore"):
        pred = s > t  # NaN > t is False
    if fill_top and s.size:
        empty = ~pred.any(axis=1) & np.isfinite(s).any(axis=1)
        if empty.any():
            ratio = np.where(np.isfinite(s[empty]), s[empty] / np.maximum(t, 1e-6), -np.inf)
            pred[np.flatnonzero(empty), np.argmax(ratio, axis=1)] = True
    return pred.astype(np.uint8)


def save_thresholds(
    path: str | Path,
    result_or_array: ThresholdResult | np.ndarray | Sequence[float],
    class_names: Sequence[str],
) -> None:
    """Write ``thresholds.json`` atomically, thresholds clipped to [0, 1].

    Args:
        path: output file.
        result_or_array: a :class:`ThresholdResult`, or ``(C,)`` thresholds (then
            ``method`` and ``global_threshold`` are written as null).
        class_names: the ``C`` class names, in class-number order.

    Raises:
        ValueError: the class count differs from the thresholds, or a threshold is
            not finite.
    """
    if isinstance(result_or_array, ThresholdResult):
        t = np.asarray(result_or_array.thresholds, dtype=np.float64)
        method: str | None = result_or_array.method
        global_t: float | None = float(result_or_array.global_threshold)
    else:
        t, method, global_t = np.asarray(result_or_array, dtype=np.float64), None, None
    names = [str(n) for n in class_names]
    if t.ndim != 1 or t.size != len(names):
        raise ValueError(f"{t.size} thresholds for {len(names)} class names")
    if not np.isfinite(t).all():
        raise ValueError("thresholds must be finite")
    # A tuned cut past the highest (lowest) score can lie above 1 (below 0); for scores
    # in [0, 1] the clipped value predicts the same, and the file holds probabilities.
    t = np.clip(t, 0.0, 1.0)
    if global_t is not None:
        global_t = min(max(global_t, 0.0), 1.0)
    data = {"class_names": names, "thresholds": t.tolist(), "method": method, "global_threshold": global_t}
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


class ThresholdsFile(NamedTuple):
    """The content of a ``thresholds.json`` (:func:`load_thresholds_file`).

    Attributes:
        thresholds: ``(C,)`` float64 thresholds, each in [0, 1].
        class_names: the ``C`` class names, in class-number order.
        method: how they were chosen (``"f1"``, ``"rate"``, ...), None where not said.
        global_threshold: the global threshold of the tuning, None where not tuned.
    """

    thresholds: np.ndarray
    class_names: tuple[str, ...]
    method: str | None
    global_threshold: float | None


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_thresholds_file(path: str | Path, expected_classes: Sequence[str] | None = None) -> ThresholdsFile:
    """Read and check a ``thresholds.json``: the one parser of this file, used everywhere.

    Args:
        path: the file written by :func:`save_thresholds`.
        expected_classes: if given, the class names the caller's scores have; a
            different count or different names is an error.

    Returns:
        A :class:`ThresholdsFile`.

    Raises:
        HPAConfigError: missing file, invalid JSON, a missing, mistyped or unknown
            field, a threshold outside [0, 1], duplicated class names, or a
            class-count mismatch; the message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise HPAConfigError(f"{path}: thresholds file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HPAConfigError(f"{path}: not a valid thresholds JSON file ({exc})") from None
    if not isinstance(data, dict) or not {"class_names", "thresholds"} <= set(data):
        raise HPAConfigError(f"{path}: expected a JSON object with 'class_names' and 'thresholds'")
    unknown = sorted(set(data) - {"class_names", "thresholds", "method", "global_threshold"})
    if unknown:
        raise HPAConfigError(f"{path}: unknown field(s) {unknown}")
    names, values = data["class_names"], data["thresholds"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise HPAConfigError(f"{path}: 'class_names' must be a non-empty list of strings")
    if len(set(names)) != len(names):
        raise HPAConfigError(f"{path}: 'class_names' holds duplicated names")
    if not isinstance(values, list) or not all(_is_number(v) for v in values):
        raise HPAConfigError(f"{path}: 'thresholds' must be a list of finite numbers")
    if len(values) != len(names):
        raise HPAConfigError(f"{path}: {len(values)} thresholds for {len(names)} class names")
    outside = [k for k, v in enumerate(values) if not 0.0 <= v <= 1.0]
    if outside:
        k = outside[0]
        raise HPAConfigError(
            f"{path}: 'thresholds' must lie in [0, 1]; class {k} ({names[k]}) has {values[k]}"
            + (f" ({len(outside)} classes outside)" if len(outside) > 1 else "")
        )
    method, global_t = data.get("method"), data.get("global_threshold")
    if method is not None and not isinstance(method, str):
        raise HPAConfigError(f"{path}: 'method' must be a string or null, got {method!r}")
    if global_t is not None and not (_is_number(global_t) and 0.0 <= global_t <= 1.0):
        raise HPAConfigError(
            f"{path}: 'global_threshold' must be a number in [0, 1] or null, got {global_t!r}"
        )
    if expected_classes is not None:
        expected = tuple(expected_classes)
        if len(expected) != len(names):
            raise HPAConfigError(
                f"{path}: thresholds for {len(names)} classes, but the scores have {len(expected)} classes"
            )
        if tuple(names) != expected:
            diff = [k for k, (a, b) in enumerate(zip(names, expected)) if a != b]
            raise HPAConfigError(f"{path}: class names differ from the expected ones at classes {diff[:5]}")
    return ThresholdsFile(
        np.asarray(values, dtype=np.float64),
        tuple(names),
        method,
        None if global_t is None else float(global_t),
    )


def load_thresholds(
    path: str | Path, expected_classes: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The thresholds and class names of a ``thresholds.json`` (:func:`load_thresholds_file`).

    Returns:
        ``(thresholds (C,) float64, class_names)``.

    Raises:
        HPAConfigError: as :func:`load_thresholds_file`.
    """
    spec = load_thresholds_file(path, expected_classes)
    return spec.thresholds, spec.class_names
