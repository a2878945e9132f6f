"""``hpa evaluate``: the macro F1 of a submission against a label file.

Works with 2018 (``Id,Target``) and 2021 (``ID,Label``) label files; the submission is
``Id,Predicted`` with class numbers of that label set. Every labelled Id must be in the
submission exactly once and the submission must hold no other Id; otherwise the
command fails (exit status 1) with a message that counts and names the offending Ids.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from hpa.aggregation.metrics import format_report, macro_f1, per_class_report
from hpa.aggregation.submission import align_submission, read_submission
from hpa.aggregation.submission_2021 import HEADER as HEADER_2021
from hpa.aggregation.thresholds import load_thresholds_file
from hpa.artefacts import PredDir
from hpa.config import CLI, Spelling
from hpa.constants import LABEL_SETS
from hpa.errors import HPAConfigError
from hpa.io import read_labels

log = logging.getLogger(__name__)


def evaluate(submission_path: str | Path, labels_path: str | Path) -> dict[str, Any]:
    """Score a submission file against a label file.

    Args:
        submission_path: ``Id,Predicted`` CSV.
        labels_path: label CSV (2018 ``Id,Target`` or 2021 ``ID,Label``).

    Returns:
        ``{"macro_f1": float, "n_images": int, "label_set": str, "submission": str,
        "labels": str, "per_class": [{"class", "name", "precision", "recall", "f1",
        "support", "predicted"}, ...]}`` with plain Python types (JSON-ready).

    Raises:
        HPADataError: an unreadable file, or Ids missing, duplicated or unknown.
        HPAConfigError: the submission was predicted with another label set's classes
            (:func:`check_label_set`).
    """
    truth = read_labels(labels_path)
    check_label_set(submission_path, truth.label_set, labels_path)
    sub_ids, sub_y = read_submission(submission_path, truth.label_set)
    y_true, y_pred = align_submission(sub_ids, sub_y, truth)
    score = macro_f1(y_true, y_pred)
    report = per_class_report(y_true, y_pred, truth.class_names)
    log.debug("evaluated %d images of %s against %s", len(truth), submission_path, labels_path)
    per_class = [
        {
            "class": int(r["class"]),
            "name": str(r["name"]),
            "precision": float(r["precision"]),
            "recall": float(r["recall"]),
            "f1": float(r["f1"]),
            "support": int(r["support"]),
            "predicted": int(r["predicted"]),
        }
        for r in report.to_dict("records")
    ]
    return {
        "macro_f1": score,
        "n_images": len(truth),
        "label_set": truth.label_set,
        "submission": str(submission_path),
        "labels": str(labels_path),
        "per_class": per_class,
    }


def check_label_set(submission_path: str | Path, label_set: str, labels_path: str | Path) -> None:
    """Refuse a submission predicted with the other label set's classes.

    Class numbers alone cannot tell a 2021 submission (classes 0-18) from a 2018 one,
    so the ``thresholds.json`` that ``hpa predict`` writes beside its submission is
    read: when its class names are those of another label set than the labels', the
    scores would compare unrelated classes. Without that file nothing is checked.

    Raises:
        HPAConfigError: the submission's classes are another label set's.
    """
    spec_path = Path(submission_path).parent / PredDir.THRESHOLDS
    if not spec_path.is_file():
        return
    names = load_thresholds_file(spec_path).class_names
    for other, classes in LABEL_SETS.items():
        if other != label_set and tuple(names) == tuple(classes):
            raise HPAConfigError(
                f"{submission_path}: predicted with the {other} classes (per {spec_path}), but "
                f"{labels_path} holds {label_set} labels; score it against {other} labels"
            )


def format_result(result: dict[str, Any]) -> str:
    """The result of :func:`evaluate` as a readable per-class table."""
    import pandas as pd

    head = (
        f"{result['submission']} vs {result['labels']} "
        f"({result['n_images']} images, {result['label_set']} classes)"
    )
    return head + "\n" + format_report(pd.DataFrame(result["per_class"]), result["macro_f1"])


def is_submission_2021(path: str | Path) -> bool:
    """Whether ``path`` starts with the 2021 header (``ID,ImageWidth,ImageHeight,PredictionString``)."""
    try:
        with Path(path).open(encoding="utf-8-sig") as fh:
            first = fh.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False  # the reader of the format chosen reports it
    return tuple(h.strip().lower() for h in first.rstrip("\r\n").split(",")) == tuple(
        h.lower() for h in HEADER_2021
    )


def evaluate_submission(
    submission: str | Path,
    labels: str | Path | None = None,
    *,
    truth: str | Path | None = None,
    fmt: str | None = None,
    names: Spelling = CLI,
) -> tuple[str, dict[str, Any]]:
    """Score a submission as ``hpa evaluate`` does: image labels (2018) or cells (2021).

    Args:
        submission: ``submission.csv`` (``Id,Predicted``) or ``submission_2021.csv``.
        labels: image labels (2018 ``Id,Target`` or 2021 ``ID,Label``) for a
            ``submission.csv``.
        truth: folder of ``cells/<Id>.png`` and ``cell_labels_2021.csv`` for a 2021
            submission.
        fmt: ``2018`` (macro F1 against ``labels``) or ``2021`` (cell mAP against
            ``truth``); default: 2021 with ``truth`` or a 2021 submission file, else 2018.
        names: how messages name the arguments (CLI flags, or the API's).

    Returns:
        The format and the result: :func:`evaluate`'s or
        :func:`hpa.pipelines.single_cell.evaluate_2021`'s.

    Raises:
        HPAConfigError: an unknown format, or the file the format needs is not given
            (a 2021 submission with image labels only is refused, saying what scores what).
    """
    if fmt not in (None, "2018", "2021"):
        raise HPAConfigError(f"{names.prefix()}{names.given('format', fmt)}: choose from 2018, 2021")
    is_2021 = is_submission_2021(submission)
    fmt = fmt or ("2021" if truth is not None or is_2021 else "2018")
    if fmt == "2021":
        if truth is None:
            hint = (
                f"; image labels such as {labels} score a submission.csv (Id,Predicted), which "
                "'hpa predict --format both' writes beside it"
                if labels is not None
                else ""
            )
            raise HPAConfigError(
                f"{names.prefix()}{submission}: a 2021 submission is scored cell by cell: give "
                f"{names.needs('truth', 'TRUTH_DIR')} (cells/<Id>.png, cell_labels_2021.csv){hint}"
            )
        from hpa.pipelines.single_cell import evaluate_2021

        return fmt, evaluate_2021(submission, truth)
    if is_2021:
        raise HPAConfigError(
            f"{names.prefix()}{submission}: a 2021 submission (ID,ImageWidth,ImageHeight,PredictionString) "
            f"cannot be scored as {names.given('format', '2018')}; give {names.needs('truth', 'TRUTH_DIR')} to score its cells"
        )
    if labels is None:
        raise HPAConfigError(
            f"{names.prefix()}{names.given('format', '2018')} needs {names.needs('labels', 'LABELS.csv')} "
            "(image labels: 2018 Id,Target or 2021 ID,Label)"
        )
    return fmt, evaluate(submission, labels)


def main(args: argparse.Namespace) -> tuple[int, str]:
    """Entry point of ``hpa evaluate SUBMISSION --labels LABELS [--json]``: status and report text.

    With ``--truth TRUTH_DIR`` (or a 2021 submission file), the cell-level mAP of a 2021
    submission (:func:`hpa.pipelines.single_cell.evaluate_2021`).
    """
    fmt, result = evaluate_submission(
        args.submission, args.labels, truth=getattr(args, "truth", None), fmt=getattr(args, "format", None)
    )
    if getattr(args, "json", False):
        return 0, json.dumps(result, indent=2)
    if fmt == "2021":
        from hpa.pipelines.single_cell import format_result_2021

        return 0, format_result_2021(result)
    return 0, format_result(result)
