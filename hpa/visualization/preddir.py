"""Reading a prediction run (PRED_DIR) as written by ``hpa predict``.

See ``docs/artefacts.md``: ``submission.csv``, ``cell_predictions.parquet``,
``image_scores.csv``, ``thresholds.json``, ``config.yaml`` (with the ``images`` and
``masks`` folders used) and ``failures.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.aggregation.thresholds import load_thresholds_file
from hpa.artefacts import ID_COLUMN, PredDir, SegDir, read_csv_table, read_failures
from hpa.artefacts.provenance import check_masks_images
from hpa.errors import detail
from hpa.io import HPADataError, check_image_id, read_label_image, read_sample
from hpa.visualization.classes import parse_class_list

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionRun:
    """The artefacts of one ``hpa predict`` run.

    Attributes:
        root: the PRED_DIR.
        class_names: class names in class-number order (from ``thresholds.json``).
        thresholds: ``(C,)`` float array of the thresholds applied.
        ids: image Ids in submission order.
        predicted: image-level predicted class numbers per Id (``submission.csv``).
        cells: ``cell_predictions.parquet``.
        image_scores: ``image_scores.csv`` indexed by Id (empty if absent).
        failures: ``image_id -> error`` from ``failures.csv``.
        images_dir: the images folder named in ``config.yaml`` (None if absent).
        masks_dir: the SEG_DIR named in ``config.yaml`` (None if absent).
        method: how the thresholds were chosen, if ``thresholds.json`` says.
        channel_map: the :class:`hpa.io_tiff.ChannelMap` the run read its multi-channel
            TIFFs with (``config.yaml``), None for per-channel files.
    """

    root: Path
    class_names: tuple[str, ...]
    thresholds: np.ndarray
    ids: tuple[str, ...]
    predicted: dict[str, tuple[int, ...]]
    cells: pd.DataFrame
    image_scores: pd.DataFrame
    failures: dict[str, str] = field(default_factory=dict)
    images_dir: Path | None = None
    masks_dir: Path | None = None
    method: str | None = None
    channel_map: Any = None

    def cells_of(self, image_id: str) -> pd.DataFrame:
        """Rows of ``cell_predictions`` for one image (possibly empty), in table order."""
        rows = self._rows_by_image.get(image_id)
        return self.cells.iloc[rows] if rows is not None else self.cells.iloc[:0]

    @cached_property
    def _rows_by_image(self) -> dict[str, np.ndarray]:
        """Row positions of each image's cells: one pass over the table, not one per image."""
        return dict(self.cells.groupby("image_id", sort=False).indices)

    def mask_path(self, image_id: str) -> Path:
        """Path of the cell instance mask of an image (``SEG_DIR/cells/<Id>.png``)."""
        masks = self.masks_dir if self.masks_dir is not None else PredDir(self.root).path(PredDir.MASKS)
        return SegDir(masks).cell_mask(check_image_id(image_id))

    def check_masks(self, images_dir: str | Path | None = None, *, flag: str = "--pred") -> None:
        """Refuse to draw or export this run's masks on another images folder.

        The masks the run used (its SEG_DIR, or the ``masks/`` it segmented on the fly)
        are checked against ``images_dir`` (default: the run's own images) by their
        provenance record (:func:`hpa.artefacts.provenance.check_masks_images`): the masks
        of other images are refused; a folder that moved is accepted, logged.

        Raises:
            HPAConfigError: the masks were made from another images folder.
        """
        images = images_dir if images_dir is not None else self.images_dir
        masks = self.masks_dir if self.masks_dir is not None else PredDir(self.root).path(PredDir.MASKS)
        if images is not None and masks.is_dir():
            check_masks_images(masks, images, flag=f"{flag} {self.root}: masks")

    def load(self, image_id: str, images_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read an image and its cell mask.

        Args:
            image_id: the sample's Id.
            images_dir: folder of channel files; default: the one in ``config.yaml``.

        Returns:
            ``(image, cells)``: ``(H, W, 4)`` uint8/uint16 sample and ``(H, W)`` int32
            cell labels.

        Raises:
            HPADataError: no images folder known, a file missing or unreadable, or
                image and mask differ in size.
        """
        folder = images_dir or self.images_dir
        if folder is None:
            raise HPADataError(f"{self.root / PredDir.CONFIG} names no images folder; pass --images")
        image = read_sample(folder, image_id, self.channel_map)
        cells = read_label_image(self.mask_path(image_id))
        if cells.shape != image.shape[:2]:
            raise HPADataError(
                f"Id {image_id}: cell mask {cells.shape[1]}x{cells.shape[0]} and image "
                f"{image.shape[1]}x{image.shape[0]} differ in size"
            )
        return image, cells


def _union_of_cells(cells: pd.DataFrame, ids: list[str], negative: int) -> dict[str, tuple[int, ...]]:
    """Image classes of the 2021 view: its cells' localisations, else Negative."""
    out: dict[str, tuple[int, ...]] = {}
    by_image = {i: g for i, g in cells.groupby("image_id", sort=False)["predicted"]}
    for image_id in ids:
        found: set[int] = set()
        for text in by_image.get(image_id, ()):
            found.update(parse_class_list(text))
        local = sorted(k for k in found if k != negative)
        out[image_id] = tuple(local) if local else ((negative,) if found else ())
    return out


def _read_csv(path: Path, **kwargs: object) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=False, dtype={"Id": str, "ID": str}, **kwargs)  # type: ignore[call-overload]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise HPADataError(f"{path}: cannot read CSV ({detail(exc, path)})") from exc


# scheme -> (submission, cell table, thresholds) files of a PRED_DIR
_SCHEME_FILES = PredDir.SCHEMES


def default_scheme(pred_dir: str | Path) -> str:
    """The scheme a run is read in when none is asked for: ``"2018"``, or ``"2021"`` for a
    run written with ``hpa predict --format 2021`` only (it has no ``submission.csv``).

    >>> default_scheme("/nowhere")
    '2018'
    """
    root = Path(pred_dir)
    if not (root / _SCHEME_FILES["2018"][0]).is_file() and all(
        (root / name).is_file() for name in _SCHEME_FILES["2021"]
    ):
        return "2021"
    return "2018"


def load_prediction_run(pred_dir: str | Path, scheme: str = "2018") -> PredictionRun:
    """Read the artefacts of a PRED_DIR.

    Args:
        pred_dir: folder written by ``hpa predict``.
        scheme: ``2018``: the model's own image and cell predictions; ``2021``: the 2021
            per-cell labels of ``hpa predict --format 2021|both``
            (``cell_predictions_2021.parquet``, ``thresholds_2021.json``); an image's
            predicted classes are then the union of its cells' localisations (Negative
            when no cell has one).

    Returns:
        The run; ``image_scores``, ``failures`` and the folders of ``config.yaml`` are
        optional and empty or None where absent.

    Raises:
        HPADataError: the folder, ``submission.csv`` or ``cell_predictions.parquet``
            is missing or malformed.
        HPAConfigError: ``thresholds.json`` is malformed
            (:func:`hpa.aggregation.load_thresholds_file`).
    """
    root = Path(pred_dir)
    _check_run_files(root, scheme)
    sub_name, cells_name, thresholds_name = _SCHEME_FILES[scheme]
    spec = load_thresholds_file(root / thresholds_name)
    class_names, thresholds = spec.class_names, spec.thresholds
    cells = _read_cells(root, cells_name, class_names)
    if scheme == "2021":
        ids = [check_image_id(str(i)) for i in _read_csv(root / sub_name, usecols=[0]).iloc[:, 0]]
        predicted = _union_of_cells(cells, ids, len(class_names) - 1)
        scores = pd.DataFrame()
    else:
        predicted, scores = _read_image_predictions(root, sub_name)
    failures = read_failures(PredDir(root).path(PredDir.FAILURES))
    images_dir, masks_dir, channel_map = _run_inputs(root)
    log.debug("%s: %d images, %d cells, %d classes", root, len(predicted), len(cells), len(class_names))
    return PredictionRun(
        root=root,
        class_names=class_names,
        thresholds=thresholds,
        ids=tuple(predicted),
        predicted=predicted,
        cells=cells,
        image_scores=scores,
        failures=failures,
        images_dir=images_dir,
        masks_dir=masks_dir,
        method=spec.method,
        channel_map=channel_map,
    )


def _check_run_files(root: Path, scheme: str) -> None:
    """Refuse a missing PRED_DIR, an unknown scheme or a run without that scheme's files.

    Raises:
        HPADataError: naming the folder or the missing file (and ``--scheme 2021`` where
            the run has the 2021 format only).
    """
    if not root.is_dir():
        raise HPADataError(f"{root}: prediction folder not found")
    if scheme not in _SCHEME_FILES:
        raise HPADataError(f"unknown scheme {scheme!r}; choose from {', '.join(_SCHEME_FILES)}")
    for name in _SCHEME_FILES[scheme]:
        if not (root / name).is_file():
            if scheme == "2018" and (root / _SCHEME_FILES["2021"][0]).is_file():
                raise HPADataError(
                    f"{root}: missing {name}: the run has the 2021 format only; use --scheme 2021"
                )
            hint = " with --format 2021 or both" if scheme == "2021" else ""
            raise HPADataError(f"{root}: missing {name} (is this a PRED_DIR written by 'hpa predict'{hint}?)")


def _read_cells(root: Path, cells_name: str, class_names: Sequence[str]) -> pd.DataFrame:
    """The cell table ``cells_name``, checked for its Id columns and one column per class.

    Raises:
        HPADataError: the file cannot be read or lacks a column.
    """
    try:
        cells = pd.read_parquet(root / cells_name)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise HPADataError(f"{root}/{cells_name}: cannot read ({exc})") from exc
    missing = [c for c in ("image_id", "cell_id", *class_names) if c not in cells.columns]
    if missing:
        raise HPADataError(f"{root}/{cells_name}: missing columns {missing[:5]}")
    cells["image_id"] = cells["image_id"].astype(str)
    return cells


def _read_image_predictions(root: Path, sub_name: str) -> tuple[dict[str, tuple[int, ...]], pd.DataFrame]:
    """The 2018 view: each image's predicted classes (the submission) and its scores
    (``image_scores.csv``, an empty table where absent).

    Raises:
        HPADataError: the submission is malformed.
    """
    sub = _read_csv(root / sub_name)
    if list(sub.columns[:2]) != ["Id", "Predicted"]:
        raise HPADataError(f"{root}/{sub_name}: expected columns Id,Predicted, got {list(sub.columns)}")
    predicted = {check_image_id(str(i)): parse_class_list(p) for i, p in zip(sub["Id"], sub["Predicted"])}
    scores_path = PredDir(root).path(PredDir.IMAGE_SCORES)
    scores = read_csv_table(scores_path).set_index(ID_COLUMN) if scores_path.is_file() else pd.DataFrame()
    return predicted, scores


def _run_inputs(root: Path) -> tuple[Path | None, Path | None, Any]:
    """The images folder, SEG_DIR and channel map the run's ``config.yaml`` names (None where absent)."""
    config = PredDir(root).read_settings()
    images_dir = Path(config["images"]) if config.get("images") else None
    masks_dir = Path(config["masks"]) if config.get("masks") else None
    channel_map = None
    if config.get("channel_map"):
        from hpa.io_tiff import ChannelMap

        channel_map = ChannelMap.parse(str(config["channel_map"]))
    return images_dir, masks_dir, channel_map
