"""Scores of multi-label predictions: macro F1 (the Kaggle 2018 metric) and a per-class table.

:func:`macro_f1` is a numpy version of ``sklearn.metrics.f1_score(average="macro",
zero_division=0)`` over all ``C`` classes, fast enough to call inside a threshold
search; the tests check it against scikit-learn. A class with neither positives nor
predictions scores 0, as in scikit-learn with ``zero_division=0``, so predicting nothing
for an absent class does not raise the mean. :func:`per_class_report` calls
scikit-learn's ``precision_recall_fscore_support`` directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Columns of :func:`per_class_report`.
REPORT_COLUMNS = ("class", "name", "precision", "recall", "f1", "support", "predicted")


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 2 or t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must be (M, C) of one shape, got {t.shape} and {p.shape}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0 and 1")
    return t.astype(bool), p.astype(bool)


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 of each class, ``2 TP / (2 TP + FP + FN)``, 0 where that is 0/0.

    Args:
        y_true: ``(M, C)`` {0, 1} labels.
        y_pred: ``(M, C)`` {0, 1} predictions.

    Returns:
        ``(C,)`` float64.

    Example:
        >>> f1_per_class(np.array([[1, 0], [1, 0]]), np.array([[1, 0], [0, 0]])).tolist()
        [0.6666666666666666, 0.0]
    """
    t, p = _check_pair(y_true, y_pred)
    tp = (t & p).sum(axis=0)
    denom = t.sum(axis=0) + p.sum(axis=0)
    return np.divide(2.0 * tp, denom, out=np.zeros(t.shape[1]), where=denom > 0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over all ``C`` classes.

    Equal to ``sklearn.metrics.f1_score(y_true, y_pred, average="macro",
    zero_division=0)``.

    Args:
        y_true: ``(M, C)`` {0, 1} labels.
        y_pred: ``(M, C)`` {0, 1} predictions.

    Returns:
        Macro F1 in [0, 1] (0 when there are no classes).

    Example:
        >>> macro_f1(np.array([[1, 0], [0, 1]]), np.array([[1, 0], [1, 0]]))
        0.3333333333333333
    """
    f1 = f1_per_class(y_true, y_pred)
    return float(f1.mean()) if f1.size else 0.0


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1, support and predicted count of every class.

    Args:
        y_true: ``(M, C)`` {0, 1} labels.
        y_pred: ``(M, C)`` {0, 1} predictions.
        class_names: ``C`` names, in class-number order.

    Returns:
        A ``C``-row frame with columns ``class`` (int), ``name``, ``precision``,
        ``recall``, ``f1`` (float) and ``support``, ``predicted`` (int: positives in
        ``y_true`` and ``y_pred``).

    Example:
        >>> t = np.array([[1, 0], [1, 1]])
        >>> p = np.array([[1, 1], [0, 1]])
        >>> per_class_report(t, p, ["A", "B"])[["name", "f1", "support"]].round(3).values.tolist()
        [['A', 0.667, 2], ['B', 0.667, 1]]
    """
    from sklearn.metrics import precision_recall_fscore_support  # imported here: slow to import

    t, p = _check_pair(y_true, y_pred)
    names = list(class_names)
    if len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} class names for {t.shape[1]} classes")
    n_classes = t.shape[1]
    if t.shape[0] == 0:
        prec = rec = f1 = np.zeros(n_classes)
    else:
        prec, rec, f1, _ = precision_recall_fscore_support(
            t.astype(np.uint8),
            p.astype(np.uint8),
            labels=list(range(n_classes)),
            average=None,
            zero_division=0,
        )
    return pd.DataFrame(
        {
            "class": np.arange(n_classes),
            "name": names,
            "precision": np.asarray(prec, dtype=np.float64),
            "recall": np.asarray(rec, dtype=np.float64),
            "f1": np.asarray(f1, dtype=np.float64),
            "support": t.sum(axis=0).astype(np.int64),
            "predicted": p.sum(axis=0).astype(np.int64),
        },
        columns=list(REPORT_COLUMNS),
    )


def format_report(report: pd.DataFrame, macro: float | None = None) -> str:
    """A per-class report as an aligned text table, with the macro F1 on the last line."""
    width = max([len(str(n)) for n in report["name"]] + [4])
    lines = [f"{'class':>5}  {'name':<{width}}  precision  recall      f1  support  predicted"]
    for r in report[list(REPORT_COLUMNS)].itertuples(index=False):
        lines.append(
            f"{r[0]:>5}  {r[1]:<{width}}  {r[2]:>9.4f}  {r[3]:>6.4f}  {r[4]:>6.4f}  {r[5]:>7}  {r[6]:>9}"
        )
    if macro is not None:
        lines.append(f"macro F1: {macro:.4f}")
    return "\n".join(lines)


def macro_average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes with positives and negatives of the average precision of ``scores``.

    >>> macro_average_precision(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.1, 0.8]]))
    1.0
    """
    n = y.sum(axis=0)
    judged = np.flatnonzero((n > 0) & (n < len(y)))
    if not len(judged):
        return 0.0
    return float(np.mean([class_average_precision(y[:, k], scores[:, k]) for k in judged]))


def class_average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's ``average_precision_score`` of one class, without its input checks.

    The sum over distinct score thresholds (ties count together) of the recall gained
    times the precision there. :func:`hpa.pipelines.blend.choose_blend_weight` calls it a few thousand times
    per choice, where scikit-learn's checks cost 50 times the sum.

    >>> class_average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.8, 0.1]))
    0.8333333333333333
    """
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each distinct score
    tps = np.cumsum(t)[last]
    precision = tps / (last + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
