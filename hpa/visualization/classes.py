"""Class colours and per-cell calls read from a ``cell_predictions`` table.

A cell's *call* is its top predicted class: of the classes over threshold (the
``predicted`` column that ``hpa predict`` writes, or the thresholds when that column is
absent) the one with the highest probability. A cell with no class over threshold has
no call and is drawn dimmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from matplotlib import colormaps

from hpa.aggregation.thresholds import apply_thresholds

#: Grey of cells with no class over threshold, RGB uint8.
DIM_COLOUR = (150, 150, 150)
#: Longest class name shown on a cell label before it is shortened.
SHORT_NAME_CHARS = 18


@lru_cache(maxsize=8)
def _palette(n: int) -> tuple[tuple[int, int, int], ...]:
    tab20 = colormaps["tab20"]([i for i in range(20) if i not in (14, 15)])  # greys left out
    dark2 = colormaps["Dark2"](range(7))  # its grey (the 8th) left out
    set1 = colormaps["Set1"]([3, 5, 7])  # purple, yellow, pink
    base = [tuple(round(255 * float(v)) for v in c[:3]) for c in np.concatenate([tab20, dark2, set1])]
    return tuple(base[i % len(base)] for i in range(n))  # type: ignore[misc]


def class_palette(n_classes: int) -> np.ndarray:
    """A fixed qualitative colour per class, the same in every image and report.

    Matplotlib's tab20, Dark2 and Set1 colours without their greys (grey marks cells
    with no call): 28 distinct colours, enough for the 2018 label set.

    Args:
        n_classes: number of classes.

    Returns:
        ``(n_classes, 3)`` uint8 RGB array; row ``k`` is the colour of class ``k``.

    >>> class_palette(28).shape, len({tuple(c) for c in class_palette(28)})
    ((28, 3), 28)
    """
    return np.array(_palette(n_classes), dtype=np.uint8).reshape(n_classes, 3)


def hex_colour(rgb: Sequence[int] | np.ndarray) -> str:
    """``#rrggbb`` of an RGB triple (for HTML and matplotlib).

    >>> hex_colour((255, 0, 16))
    '#ff0010'
    """
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def short_name(name: str, limit: int = SHORT_NAME_CHARS) -> str:
    """A class name cut to ``limit`` characters with an ellipsis.

    >>> short_name("Vesicles and punctate cytosolic patterns")
    'Vesicles and punc…'
    """
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


def parse_class_list(value: object) -> tuple[int, ...]:
    """Class numbers of a ``predicted`` cell (space-separated, may be empty or NaN).

    >>> parse_class_list("3 0"), parse_class_list(float("nan"))
    ((0, 3), ())
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    return tuple(sorted(int(v) for v in str(value).split()))


def probability_matrix(cell_table: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray:
    """The per-class probability columns of a cell table as a ``(cells, classes)`` array.

    Raises:
        ValueError: a class column is missing (names the first few).
    """
    missing = [n for n in class_names if n not in cell_table.columns]
    if missing:
        raise ValueError(f"cell predictions lack probability columns for classes {missing[:5]}")
    return cell_table[list(class_names)].to_numpy(dtype=np.float64)


def cell_calls(
    cell_table: pd.DataFrame, class_names: Sequence[str], thresholds: Sequence[float] | np.ndarray
) -> pd.DataFrame:
    """Each cell's top predicted class.

    Args:
        cell_table: rows of ``cell_predictions.parquet`` (``cell_id``, one probability
            column per class, optionally ``predicted``).
        class_names: class names, in class-number order.
        thresholds: per-class thresholds, used where ``predicted`` is absent.

    Returns:
        One row per cell, in the table's order: ``cell_id``, ``top_class`` (class
        number, -1 where no class is over threshold), ``top_prob`` (probability of
        ``top_class``, or the highest probability where there is none), ``top_any``
        (class with the highest probability, called or not) and ``classes`` (tuple of
        called class numbers).
    """
    probs = probability_matrix(cell_table, class_names)
    thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thr.size == 1:
        thr = np.full(len(class_names), float(thr[0]))
    if "predicted" in cell_table.columns:
        called = [parse_class_list(v) for v in cell_table["predicted"]]
    else:
        called = [tuple(np.flatnonzero(row).tolist()) for row in apply_thresholds(probs, thr, fill_top=False)]
    top, top_prob = [], []
    for row, classes in zip(probs, called):
        if classes:
            best = max(classes, key=lambda k: row[k])
            top.append(best)
            top_prob.append(row[best])
        else:
            top.append(-1)
            top_prob.append(row.max() if row.size else 0.0)
    return pd.DataFrame(
        {
            "cell_id": cell_table["cell_id"].to_numpy(dtype=np.int64),
            "top_class": np.asarray(top, dtype=np.int64),
            "top_prob": np.asarray(top_prob, dtype=np.float64),
            "top_any": probs.argmax(axis=1) if probs.size else np.zeros(len(cell_table), np.int64),
            "classes": called,
        }
    )


def cell_label_text(name: str, prob: float, n_called: int) -> str:
    """The short text drawn on a cell: class, probability, ``+k`` more classes.

    >>> cell_label_text("Nucleoli", 0.873, 2)
    'Nucleoli 0.87 +1'
    """
    extra = f" +{n_called - 1}" if n_called > 1 else ""
    return f"{short_name(name)} {prob:.2f}{extra}"


def image_title(
    image_id: str,
    predicted: Sequence[int],
    class_names: Sequence[str],
    truth: Sequence[int] | None = None,
) -> str:
    """Title of an overlay: the Id, the image-level prediction and, if known, the truth.

    >>> image_title("a1", [0, 2], ["Nucleoplasm", "Nuclear membrane", "Nucleoli"], [0])
    'a1\\nPredicted: Nucleoplasm, Nucleoli\\nTruth: Nucleoplasm'
    """

    def names(classes: Sequence[int]) -> str:
        return ", ".join(class_names[k] for k in classes) if len(classes) else "(none)"

    lines = [image_id, f"Predicted: {names(predicted)}"]
    if truth is not None:
        lines.append(f"Truth: {names(truth)}")
    return "\n".join(lines)
