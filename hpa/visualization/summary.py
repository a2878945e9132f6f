"""Image-level scores of a run against the truth: per-class F1, confusion summary, chart.

Per-class precision, recall and F1 come from
:func:`hpa.aggregation.metrics.per_class_report` (scikit-learn underneath), so the
report's numbers are those of ``hpa evaluate``.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpa.aggregation.metrics import per_class_report
from hpa.io import read_labels, write_bytes_atomic
from hpa.visualization.classes import class_palette, hex_colour

log = logging.getLogger(__name__)


def read_truth(path: str | Path, class_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """True class numbers per Id from a label CSV (2018 or 2021 format).

    The label set is guessed from the header; its classes must number as many as the
    run's, or the truth cannot be compared and an error is raised.

    Raises:
        HPADataError: the CSV is malformed (see :func:`hpa.io.read_labels`).
        ValueError: the label set has a different number of classes than the run.
    """
    labels = read_labels(path)
    if labels.y.shape[1] != len(class_names):
        raise ValueError(
            f"{path}: {labels.label_set} labels have {labels.y.shape[1]} classes, "
            f"the predictions {len(class_names)}"
        )
    if tuple(labels.class_names) != tuple(class_names):
        log.warning("%s: class names differ from the run's; comparing by class number", path)
    return {i: tuple(np.flatnonzero(row).tolist()) for i, row in zip(labels.ids, labels.y)}


def multi_hot(rows: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """``(N, C)`` uint8 matrix of class-number lists.

    >>> multi_hot([(0, 2), ()], 3).tolist()
    [[1, 0, 1], [0, 0, 0]]
    """
    y = np.zeros((len(rows), n_classes), dtype=np.uint8)
    for i, row in enumerate(rows):
        y[i, list(row)] = 1
    return y


def class_summary(
    predicted: Mapping[str, Sequence[int]],
    truth: Mapping[str, Sequence[int]],
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
    top_confusions: int = 3,
) -> pd.DataFrame:
    """Per-class scores of image-level predictions against the truth.

    Only Ids present in both mappings are compared.

    Args:
        predicted: predicted class numbers per Id.
        truth: true class numbers per Id.
        class_names: class names in class-number order.
        thresholds: per-class thresholds (reported as they are).
        top_confusions: how many co-predicted wrong classes to list per class.

    Returns:
        One row per class: ``class, name, threshold, support, tp, fp, fn, precision,
        recall, f1`` and ``confused_with``: a list of ``(class number, count)`` of the
        wrong classes (predicted, not true) most often predicted on images of this
        class.
    """
    ids = [i for i in predicted if i in truth]
    n = len(class_names)
    y_pred = multi_hot([predicted[i] for i in ids], n)
    y_true = multi_hot([truth[i] for i in ids], n)
    tp = (y_pred & y_true).sum(axis=0)
    fp = (y_pred & (1 - y_true)).sum(axis=0)
    fn = ((1 - y_pred) & y_true).sum(axis=0)
    report = per_class_report(y_true, y_pred, class_names)
    p, r, f = (report[c].to_numpy(dtype=np.float64) for c in ("precision", "recall", "f1"))
    wrong = y_pred & (1 - y_true)
    confused = []
    for k in range(n):
        counts: Counter[int] = Counter()
        for row in wrong[y_true[:, k] == 1]:
            counts.update(np.flatnonzero(row).tolist())
        confused.append(counts.most_common(top_confusions))
    return pd.DataFrame(
        {
            "class": np.arange(n),
            "name": list(class_names),
            "threshold": np.asarray(thresholds, dtype=np.float64),
            "support": y_true.sum(axis=0),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": p,
            "recall": r,
            "f1": f,
            "confused_with": confused,
        }
    )


def f1_chart_png(table: pd.DataFrame, path: str | Path, dpi: int = 100) -> None:
    """Horizontal bar chart of per-class F1 (classes with support or predictions).

    Bars take the class colours; the support is written beside each bar. Written
    atomically as PNG.

    Args:
        table: the result of :func:`class_summary`.
        path: PNG file to write.
        dpi: resolution.
    """
    rows = table[(table["support"] > 0) | (table["fp"] > 0)].iloc[::-1]
    palette = class_palette(len(table))
    height = max(2.0, 0.28 * len(rows) + 1.0)
    fig = Figure(figsize=(7.0, height), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.36, 0.8 / height, 0.56, 1 - 1.2 / height))
    colours = [hex_colour(palette[k]) for k in rows["class"]]
    ax.barh(np.arange(len(rows)), rows["f1"], color=colours, edgecolor="#333333", linewidth=0.4)
    ax.set_yticks(
        np.arange(len(rows)), [f"{k}  {n}" for k, n in zip(rows["class"], rows["name"])], fontsize=8
    )
    for y, (f1, n) in enumerate(zip(rows["f1"], rows["support"])):
        ax.text(min(f1, 1.0) + 0.01, y, f"{f1:.2f}  (n={n})", va="center", fontsize=7, color="#333333")
    macro = float(table.loc[table["support"] > 0, "f1"].mean()) if (table["support"] > 0).any() else 0.0
    ax.axvline(macro, color="#555555", lw=1, ls="--")
    ax.set_xlim(0, 1.15)
    ax.set_xlabel(f"F1 per class (dashed: macro F1 over present classes = {macro:.3f})", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    write_bytes_atomic(path, buf.getvalue())
