"""Kaggle submissions: ``Id,Predicted`` with class numbers ascending, space-separated.

:func:`write_submission` writes one row per Id, in the given order, atomically.
:func:`read_submission` reads one back and :func:`align_submission` lines it up with
the truth; every problem (malformed row, unknown class, duplicated, missing or unknown
Id) raises :class:`hpa.io.HPADataError` naming the file or the Ids, with counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpa.constants import LABEL_SETS
from hpa.io import (
    HPADataError,
    Labels,
    check_image_id,
    format_target,
    open_csv,
    parse_class_number,
    write_text_atomic,
)

#: Header of a submission file.
SUBMISSION_HEADER = ("Id", "Predicted")
_EXAMPLES = 5  # Ids quoted in an error message


def write_submission(path: str | Path, ids: Sequence[str], y_pred: np.ndarray) -> None:
    """Write ``Id,Predicted`` rows atomically, one per Id, in the order given.

    Args:
        path: output CSV.
        ids: ``M`` image Ids.
        y_pred: ``(M, C)`` {0, 1} multi-hot predictions; an all-zero row is written as
            an empty ``Predicted``.

    Raises:
        ValueError: row count mismatch, duplicated or unsafe Id.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "submission.csv"
        >>> write_submission(out, ["a", "b"], np.array([[1, 0, 1], [0, 0, 0]]))
        >>> print(out.read_text(), end="")
        Id,Predicted
        a,0 2
        b,
    """
    y = np.asarray(y_pred)
    ids = list(ids)
    if y.ndim != 2 or y.shape[0] != len(ids):
        raise ValueError(f"y_pred must be ({len(ids)}, C) for {len(ids)} Ids, got shape {y.shape}")
    dup = [i for i, n in Counter(ids).items() if n > 1]
    if dup:
        raise ValueError(f"{len(dup)} duplicated Id(s) in a submission, e.g. {dup[:_EXAMPLES]}")
    for i in ids:
        check_image_id(i)
    lines = [",".join(SUBMISSION_HEADER)]
    lines += [f"{i},{format_target(row)}" for i, row in zip(ids, y, strict=True)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _n_classes(label_set: str | None, n_classes: int | None) -> int:
    if n_classes is not None:
        if label_set is not None and n_classes != len(LABEL_SETS[label_set]):
            raise ValueError(f"n_classes={n_classes} contradicts label set {label_set}")
        return n_classes
    if label_set is None:
        raise ValueError("read_submission needs a label_set or n_classes")
    if label_set not in LABEL_SETS:
        raise ValueError(f"unknown label set {label_set!r}; choose from {sorted(LABEL_SETS)}")
    return len(LABEL_SETS[label_set])


def read_submission(
    path: str | Path, label_set: str | None = None, *, n_classes: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Read an ``Id,Predicted`` submission.

    Args:
        path: the CSV.
        label_set: ``"2018"`` or ``"2021"``, which sets the class count; or give
        n_classes: the class count directly.

    Returns:
        ``(ids, y_pred)``: the Ids in file order and an ``(M, C)`` uint8 multi-hot matrix.

    Raises:
        HPADataError: missing or empty file, wrong header, a row without exactly two
            fields, an unsafe Id, a token that is not a class number, a class number
            outside ``0..C-1`` (each with its line), or duplicated Ids (all of them
            counted, with examples and lines).
    """
    n = _n_classes(label_set, n_classes)
    path = Path(path)
    if not path.is_file():
        raise HPADataError(f"{path}: submission file not found")
    ids: list[str] = []
    rows: list[list[int]] = []
    first_line: dict[str, int] = {}
    duplicates: dict[str, list[int]] = {}
    with open_csv(path) as reader:
        header = next(reader, None)
        if header is None:
            raise HPADataError(f"{path}: empty submission file")
        if tuple(h.strip().lower() for h in header) != tuple(h.lower() for h in SUBMISSION_HEADER):
            raise HPADataError(f"{path}: header {header!r}, expected 'Id,Predicted'")
        for line_no, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                raise HPADataError(
                    f"{path}, line {line_no}: malformed row {','.join(row)!r}: expected 2 fields "
                    f"(Id,Predicted), got {len(row)}"
                )
            image_id = row[0].strip()
            try:
                check_image_id(image_id)
            except HPADataError as exc:
                raise HPADataError(f"{path}, line {line_no}: {exc}") from None
            if image_id in first_line:
                duplicates.setdefault(image_id, [first_line[image_id]]).append(line_no)
                continue
            first_line[image_id] = line_no
            ids.append(image_id)
            rows.append(_parse_classes(row[1], n, f"{path}, line {line_no}"))
    if duplicates:
        examples = "; ".join(
            f"{i} (lines {', '.join(map(str, lines))})" for i, lines in list(duplicates.items())[:_EXAMPLES]
        )
        raise HPADataError(f"{path}: {len(duplicates)} duplicated Id(s): {examples}")
    y = np.zeros((len(ids), n), dtype=np.uint8)
    for k, classes in enumerate(rows):
        y[k, classes] = 1
    return ids, y


def _parse_classes(target: str, n_classes: int, where: str) -> list[int]:
    classes = []
    for token in target.split():
        k = parse_class_number(token, target, where)
        if not 0 <= k < n_classes:
            other = n_classes == len(LABEL_SETS["2021"]) and k < len(LABEL_SETS["2018"])
            hint = "; a 2018 submission scored against 2021 labels?" if other else ""
            raise HPADataError(f"{where}: unknown class {k} (classes are 0-{n_classes - 1}{hint})")
        classes.append(k)
    return classes


def _examples(ids: Sequence[str]) -> str:
    shown = ", ".join(list(ids)[:_EXAMPLES])
    return shown + (", ..." if len(ids) > _EXAMPLES else "")


def align_submission(
    sub_ids: Sequence[str], sub_y: np.ndarray, truth: Labels
) -> tuple[np.ndarray, np.ndarray]:
    """Line up a submission with the truth, in the truth's Id order.

    Every labelled Id must appear in the submission exactly once, and the submission
    must not hold Ids without labels.

    Args:
        sub_ids: ``M`` submission Ids.
        sub_y: ``(M, C)`` {0, 1} submission predictions.
        truth: the labels.

    Returns:
        ``(y_true, y_pred)``, both ``(len(truth), C)`` uint8, row ``i`` for
        ``truth.ids[i]``.

    Raises:
        HPADataError: one message listing every kind of problem found: Ids missing
            from the submission, duplicated in it, or unknown to the labels (counts and
            a few examples each), or a class-count mismatch.

    Example:
        >>> truth = Labels(("a", "b"), np.array([[1, 0], [0, 1]], dtype=np.uint8), "2018")
        >>> t, p = align_submission(["b", "a"], np.array([[0, 1], [1, 1]]), truth)
        >>> p.tolist()
        [[1, 1], [0, 1]]
    """
    y = np.asarray(sub_y)
    ids = list(sub_ids)
    if y.ndim != 2 or y.shape[0] != len(ids):
        raise HPADataError(f"submission has {len(ids)} Ids but predictions of shape {y.shape}")
    if y.shape[1] != truth.y.shape[1]:
        raise HPADataError(
            f"submission has {y.shape[1]} classes, the labels ({truth.label_set}) {truth.y.shape[1]}"
        )
    counts = Counter(ids)
    truth_set = set(truth.ids)
    duplicated = [i for i, n in counts.items() if n > 1]
    missing = [i for i in truth.ids if i not in counts]
    unknown = [i for i in counts if i not in truth_set]
    problems = []
    if missing:
        problems.append(f"{len(missing)} labelled Id(s) missing from the submission: {_examples(missing)}")
    if duplicated:
        problems.append(f"{len(duplicated)} Id(s) duplicated in the submission: {_examples(duplicated)}")
    if unknown:
        problems.append(f"{len(unknown)} submission Id(s) not in the labels: {_examples(unknown)}")
    if problems:
        raise HPADataError(
            f"submission ({len(ids)} rows) does not match the labels ({len(truth)} Ids): "
            + "; ".join(problems)
        )
    row = {i: k for k, i in enumerate(ids)}
    order = np.fromiter((row[i] for i in truth.ids), dtype=np.int64, count=len(truth))
    return truth.y.astype(np.uint8), y[order].astype(np.uint8)
