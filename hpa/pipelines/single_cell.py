"""Single-cell output of a prediction run (2021 format) and its cell-level evaluation.

:func:`write_single_cell` turns a PRED_DIR of ``hpa predict`` (``cell_predictions.parquet``,
``image_scores.csv``, ``thresholds.json``, ``config.yaml``) and its SEG_DIR into:

- ``submission_2021.csv``: ``ID,ImageWidth,ImageHeight,PredictionString``, every Id in
  the run's order, each cell once per class whose confidence reaches ``min_score`` (put
  through the rule: its square for ``product``);
- ``cell_predictions_2021.parquet``: ``image_id, cell_id`` and the bounding box, one
  confidence column per 2021 class, ``predicted`` (2021 classes called for the cell);
- ``thresholds_2021.json``: the thresholds behind ``predicted``.

A cell is called for a localisation when its confidence is over the class's threshold
(``>``, :func:`hpa.aggregation.apply_thresholds`, as for images)
put through the same cell-score rule (``t`` for ``cell``, ``image`` and ``geometric``,
``t * t`` for ``product``, ``t * (1 - e + e * t)`` for ``image-then-cell``); a 2018 model's
2021 threshold is the lowest of its sources'.
A cell called for no localisation is called Negative.

:func:`evaluate_2021` scores a 2021 submission against a truth folder (``cells/<Id>.png``
and ``cell_labels_2021.csv``, as ``hpa synth`` writes).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.aggregation.cell_map import CellTruth, cell_map
from hpa.aggregation.rle import encode_cells
from hpa.aggregation.single_cell import (
    CELL_SCORES,
    MAP_2018_TO_2021,
    NEGATIVE,
    cell_confidence,
    prediction_string,
    to_2021_scores,
)
from hpa.aggregation.submission_2021 import read_submission_2021, write_submission_2021
from hpa.aggregation.thresholds import apply_thresholds, load_thresholds, save_thresholds
from hpa.artefacts import (
    ID_COLUMN,
    PredDir,
    SegDir,
    read_csv_table,
    read_failures,
    read_parquet_table,
    write_parquet,
)
from hpa.constants import CLASS_NAMES_2018, CLASS_NAMES_2021
from hpa.errors import HPAConfigError, HPADataError
from hpa.io import check_image_id, read_label_image

log = logging.getLogger(__name__)

#: Output formats of ``hpa predict --format``.
FORMATS = ("2018", "2021", "both")
#: Default ``--cell-score``: chosen by ``benchmarks/single_cell_bench.py`` (RESULTS.md).
DEFAULT_CELL_SCORE = "image-then-cell"
#: Default lowest confidence listed in a PredictionString.
DEFAULT_MIN_SCORE = 0.01
SUBMISSION_2021 = PredDir.SUBMISSION_2021
CELLS_2021 = PredDir.CELLS_2021
THRESHOLDS_2021 = PredDir.THRESHOLDS_2021
TRUTH_LABELS_2021 = "cell_labels_2021.csv"
_BOX = ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")


def resolve_format(fmt: str | None, class_names: Sequence[str]) -> str:
    """The output format: ``fmt``, or by default the model's own scheme.

    Raises:
        HPAConfigError: an unknown format, or ``2021`` output from a model whose classes
            are neither label set.
    """
    names = tuple(class_names)
    if fmt is None:
        return "2021" if names == CLASS_NAMES_2021 else "2018"
    if fmt not in FORMATS:
        raise HPAConfigError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt != "2018" and names not in (CLASS_NAMES_2018, CLASS_NAMES_2021):
        raise HPAConfigError(f"--format {fmt}: the model's {len(names)} classes are not a known label set")
    return fmt


def thresholds_2021(thresholds: np.ndarray, class_names: Sequence[str], rule: str) -> np.ndarray:
    """Per-class thresholds on the 2021 confidences of a ``rule``.

    Args:
        thresholds: ``(K,)`` the model's thresholds.
        class_names: the model's classes (2018: mapped, lowest source wins, Negative 0.5).
        rule: the cell-score rule.

    Returns:
        ``(19,)`` float64.
    """
    t = np.asarray(thresholds, dtype=np.float64)
    if tuple(class_names) == CLASS_NAMES_2018:
        mapped = np.full(len(CLASS_NAMES_2021), 0.5)
        for new in range(NEGATIVE):
            mapped[new] = min(t[old] for old, n in MAP_2018_TO_2021.items() if n == new)
        t = mapped
    return cell_confidence(t[None, :], t[None, :], rule)[0].astype(np.float64)


def call_cells(confidence: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """2021 classes called for each cell; Negative exactly where no localisation is.

    Args:
        confidence: ``(N, 19)`` cell confidences.
        thresholds: ``(19,)`` thresholds on them.

    Returns:
        ``(N, 19)`` bool.

    Example:
        >>> conf = np.zeros((2, 19)); conf[0, 3] = 0.9; conf[:, 18] = 0.6
        >>> [np.flatnonzero(r).tolist() for r in call_cells(conf, np.full(19, 0.5))]
        [[3], [18]]
    """
    called = apply_thresholds(np.asarray(confidence), np.asarray(thresholds), fill_top=False).astype(bool)
    called[:, NEGATIVE] = ~called[:, :NEGATIVE].any(axis=1)
    return called


def _check_finite(table: pd.DataFrame, names: Sequence[str], path: Path, keys: Sequence[str]) -> None:
    """Refuse a score table with a NaN or infinite score, naming the file and the row.

    Raises:
        HPADataError: the first such row, by its ``keys`` (Id, cell).
    """
    scores = table[list(names)].to_numpy(np.float64)
    bad = np.argwhere(~np.isfinite(scores))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        key = ", ".join(f"{k} {table[k].iloc[row]}" for k in keys if k in table.columns)
        raise HPADataError(
            f"{path}: row {row + 1} ({key}): score of {names[col]!r} is {scores[row, col]}, not a finite "
            f"number ({len(bad)} such score(s)); predict again into a new folder"
        )


def _read_run(pred_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, list[str], Path, set[str]]:
    run = PredDir(pred_dir)
    for name in (run.CELLS, run.IMAGE_SCORES, run.THRESHOLDS, run.CONFIG):
        if not run.path(name).is_file():
            raise HPADataError(f"{pred_dir}: missing {name} (is this a PRED_DIR written by 'hpa predict'?)")
    thresholds, names = load_thresholds(run.path(run.THRESHOLDS))
    cells = read_parquet_table(run.path(run.CELLS))
    images = read_csv_table(run.path(run.IMAGE_SCORES))
    missing = [n for n in names if n not in cells.columns or n not in images.columns]
    if missing:
        raise HPADataError(f"{pred_dir}: score tables lack the model's classes {missing[:3]}")
    _check_finite(cells, names, run.path(run.CELLS), ["image_id", "cell_id"])
    _check_finite(images, names, run.path(run.IMAGE_SCORES), [ID_COLUMN])
    config = run.read_settings()
    if not config.get("masks"):
        raise HPADataError(f"{run.path(run.CONFIG)} names no masks folder")
    failures = set(read_failures(run.path(run.FAILURES)))
    return cells, images, thresholds, list(names), Path(config["masks"]), failures


def write_single_cell(
    pred_dir: str | Path,
    cell_score: str = DEFAULT_CELL_SCORE,
    min_score: float = DEFAULT_MIN_SCORE,
    progress: bool = True,
    *,
    masks_dir: str | Path | None = None,
) -> Path:
    """Write the 2021 outputs of a prediction run (see the module docstring).

    Args:
        pred_dir: PRED_DIR of ``hpa predict``.
        cell_score: one of :data:`hpa.aggregation.single_cell.CELL_SCORES`.
        min_score: the lowest confidence listed in the submission, on the probability
            scale: put through the rule like the thresholds (``min_score ** 2`` for
            ``product``).
        progress: show a progress bar.
        masks_dir: the run's SEG_DIR where it is not yet where ``config.yaml`` says
            (``hpa predict`` writes a run beside its final folder, then swaps it in).

    Returns:
        The path of ``submission_2021.csv``.

    Raises:
        HPAConfigError: an unknown ``cell_score`` or a negative ``min_score``.
        HPADataError: a missing run file or a cell mask that does not match the run.
    """
    if cell_score not in CELL_SCORES:
        raise HPAConfigError(f"--cell-score {cell_score!r}: choose from {', '.join(CELL_SCORES)}")
    if not min_score >= 0:
        raise HPAConfigError(f"--min-cell-score {min_score}: must be >= 0")
    pred_dir = Path(pred_dir)
    cells, images, thresholds, names, recorded_masks, failures = _read_run(pred_dir)
    masks_dir = Path(masks_dir) if masks_dir is not None else recorded_masks
    ids = [check_image_id(i) for i in images[ID_COLUMN]]
    image_2021 = pd.DataFrame(to_2021_scores(images[names].to_numpy(np.float32), names), index=ids)
    cell_2021 = to_2021_scores(cells[names].to_numpy(np.float32), names)
    image_rows = image_2021.loc[cells["image_id"].astype(str)].to_numpy(np.float32)
    confidence = cell_confidence(cell_2021, image_rows, cell_score)
    t2021 = thresholds_2021(thresholds, names, cell_score)
    called = call_cells(confidence, t2021)
    # the floor is on the probability scale, put through the rule like the thresholds, so
    # that product and geometric list the same pairs (else product would drop more)
    floor = float(cell_confidence(np.array([[min_score]]), np.array([[min_score]]), cell_score)[0, 0])

    rows_of = cells.groupby(cells["image_id"].astype(str), sort=False).indices
    rows: list[tuple[str, int | None, int | None, str]] = []
    for image_id in tqdm(ids, desc="2021 submission", unit="img", disable=not progress):
        path = SegDir(masks_dir).cell_mask(image_id)
        if image_id in failures or not path.is_file():
            rows.append((image_id, None, None, ""))
            continue
        labels = read_label_image(path)
        idx = rows_of.get(image_id, np.zeros(0, np.int64))
        cell_ids = cells["cell_id"].to_numpy()[idx].astype(int).tolist()
        masks = encode_cells(labels, cell_ids)
        rows.append((image_id, labels.shape[1], labels.shape[0],
                     prediction_string(cell_ids, confidence[idx], masks, floor)))  # fmt: skip
    out = pred_dir / SUBMISSION_2021
    write_submission_2021(out, rows)

    keep = ["image_id", "cell_id", *[c for c in _BOX if c in cells.columns]]
    table = pd.concat([cells[keep].reset_index(drop=True),
                       pd.DataFrame(confidence, columns=list(CLASS_NAMES_2021))], axis=1)  # fmt: skip
    table["predicted"] = [" ".join(map(str, np.flatnonzero(r))) for r in called]
    write_parquet(pred_dir / CELLS_2021, table)
    save_thresholds(pred_dir / THRESHOLDS_2021, t2021, CLASS_NAMES_2021)
    log.info("2021 outputs (%s cell score) of %d images written to %s", cell_score, len(ids), pred_dir)
    return out


# ------------------------------------------------------------------ evaluation ---


def load_cell_truth(truth_dir: str | Path) -> dict[str, CellTruth]:
    """Read annotated cells: ``cells/<Id>.png`` and ``cell_labels_2021.csv``.

    ``cell_labels_2021.csv`` has ``image_id,cell_id,Label`` with ``|``-separated 2021
    class numbers; its images are the annotated ones.

    Raises:
        HPADataError: a missing file, a malformed row, an unknown class, or a labelled
            cell absent from its mask.
    """
    truth_dir = Path(truth_dir)
    labels_path = truth_dir / TRUTH_LABELS_2021
    if not labels_path.is_file():
        raise HPADataError(f"{truth_dir}: no {TRUTH_LABELS_2021} (image_id,cell_id,Label)")
    classes: dict[str, dict[int, frozenset[int]]] = {}
    with labels_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:3] != ["image_id", "cell_id", "label"]:
            raise HPADataError(f"{labels_path}: header {header!r}, expected image_id,cell_id,Label")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{labels_path}, line {line_no}"
            try:
                image_id, cell_id = check_image_id(row[0].strip()), int(row[1])
                cls = frozenset(int(t) for t in row[2].replace("|", " ").split())
            except (IndexError, ValueError) as exc:
                raise HPADataError(f"{where}: malformed row {row!r} ({exc})") from None
            if any(not 0 <= c < len(CLASS_NAMES_2021) for c in cls):
                raise HPADataError(f"{where}: class outside 0-{len(CLASS_NAMES_2021) - 1} in {row[2]!r}")
            classes.setdefault(image_id, {})[cell_id] = cls
    truth: dict[str, CellTruth] = {}
    for image_id, per_cell in classes.items():
        path = SegDir(truth_dir).cell_mask(image_id)
        if not path.is_file():
            raise HPADataError(f"{path}: no cell mask for annotated Id {image_id}")
        labels = read_label_image(path)
        present = set(np.unique(labels).tolist())
        absent = sorted(k for k in per_cell if k not in present)
        if absent:
            raise HPADataError(f"{labels_path}: cells {absent[:5]} of Id {image_id} are not in {path}")
        truth[image_id] = CellTruth(labels, per_cell)
    return truth


def evaluate_2021(submission_path: str | Path, truth_dir: str | Path) -> dict[str, Any]:
    """Cell-level mAP (IoU >= 0.6, 19 classes) of a 2021 submission.

    The annotated images present in the submission are scored (a truth folder may hold
    more, e.g. the training split of ``hpa synth``).

    Returns:
        ``{"map", "n_images", "n_annotated_not_submitted", "n_truth_cells", "submission", "truth", "per_class":
        [{"class", "name", "ap", "truth_cells", "predictions", "true_positives"}]}``,
        JSON-ready (an AP without truth cells is None).

    Raises:
        HPADataError: unreadable files, no submission image annotated, or a submission
            image whose size differs from its truth mask.
    """
    annotated = load_cell_truth(truth_dir)
    rows = {r.image_id: r for r in read_submission_2021(submission_path)}
    # a truth folder may annotate more images than were predicted (hpa synth's holds the
    # training split too): the submission's annotated images are scored
    truth = {i: t for i, t in annotated.items() if i in rows}
    if not truth:
        raise HPADataError(
            f"{submission_path}: none of its {len(rows)} Ids has annotated cells in {truth_dir}"
        )
    if len(truth) < len(annotated):
        log.info("%d annotated image(s) not in the submission are not scored", len(annotated) - len(truth))
    for image_id, cells in truth.items():
        row = rows.get(image_id)
        h, w = cells.labels.shape
        if row is not None and row.width is not None and (row.width, row.height) != (w, h):
            raise HPADataError(
                f"{submission_path}: Id {image_id} is {row.width}x{row.height}, its truth mask {w}x{h}"
            )
    extra = [i for i in rows if i not in truth]
    if extra:
        log.warning("%d submission Id(s) without annotated cells are not scored", len(extra))
    result = cell_map({i: r.predictions for i, r in rows.items()}, truth)
    per_class = [
        {
            "class": k,
            "name": CLASS_NAMES_2021[k],
            "ap": None if np.isnan(result.ap[k]) else float(result.ap[k]),
            "truth_cells": int(result.n_truth[k]),
            "predictions": int(result.n_pred[k]),
            "true_positives": int(result.n_tp[k]),
        }
        for k in range(len(CLASS_NAMES_2021))
    ]
    return {
        "map": None if np.isnan(result.mean_ap) else result.mean_ap,
        "n_images": len(truth),
        "n_annotated_not_submitted": len(annotated) - len(truth),
        "n_truth_cells": int(sum(len(t.classes) for t in truth.values())),
        "submission": str(submission_path),
        "truth": str(truth_dir),
        "per_class": per_class,
    }


def format_result_2021(result: dict[str, Any]) -> str:
    """The result of :func:`evaluate_2021` as a per-class AP table."""
    lines = [
        f"{result['submission']} vs {result['truth']} ({result['n_images']} images, "
        f"{result['n_truth_cells']} annotated cells, IoU >= 0.6)",
        f"{'class':>5}  {'name':<42} {'AP':>6} {'truth':>6} {'pred':>7} {'TP':>6}",
    ]
    for r in result["per_class"]:
        ap = "-" if r["ap"] is None else f"{r['ap']:.4f}"
        lines.append(f"{r['class']:>5}  {r['name']:<42} {ap:>6} {r['truth_cells']:>6} "
                     f"{r['predictions']:>7} {r['true_positives']:>6}")  # fmt: skip
    mean = "-" if result["map"] is None else f"{result['map']:.4f}"
    lines.append(f"mAP (classes with annotated cells): {mean}")
    return "\n".join(lines)
