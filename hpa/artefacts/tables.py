"""The tables stages exchange: one atomic writer per format, one Id column.

Every internal table is keyed by :data:`ID_COLUMN` (``image_id``): cells, cell and tile
predictions, image scores, validation and out-of-fold tables, ``failures.csv``. Only the
competition files keep their own header (``Id`` in a 2018 submission, ``ID`` in a 2021
one). Tables written by hpa before the rename carry ``Id``; :func:`read_csv_table` and
:func:`read_parquet_table` rename it on read, so old model and prediction folders stay
usable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.errors import HPADataError, detail
from hpa.io import atomic_path, write_text_atomic

#: The image Id column of every internal table.
ID_COLUMN = "image_id"
#: The name older versions gave it in image score tables; renamed on read.
LEGACY_ID_COLUMN = "Id"
#: Every run's list of images that could not be read or processed.
FAILURES_FILE = "failures.csv"


def write_parquet(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet (no index) through a temporary file."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV (no index, UTF-8) through a temporary file."""
    write_text_atomic(path, frame.to_csv(index=False))


def with_id_column(frame: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """``frame`` with its Id column named :data:`ID_COLUMN` (an older ``Id`` is renamed).

    Raises:
        HPADataError: the table has neither column; names ``source``.

    >>> list(with_id_column(pd.DataFrame({"Id": ["a"], "x": [1]}), "t.csv").columns)
    ['image_id', 'x']
    """
    if ID_COLUMN in frame.columns:
        return frame
    if LEGACY_ID_COLUMN in frame.columns:
        return frame.rename(columns={LEGACY_ID_COLUMN: ID_COLUMN})
    raise HPADataError(f"{source}: no {ID_COLUMN} column (columns: {list(frame.columns)[:6]})")


def read_csv_table(path: str | Path, **kwargs: object) -> pd.DataFrame:
    """Read an hpa CSV table, Ids as strings, its Id column named :data:`ID_COLUMN`.

    Raises:
        HPADataError: the file is missing, not CSV, or has no Id column.
    """
    path = Path(path)
    if not path.is_file():
        raise HPADataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(
            path,
            keep_default_na=False,
            dtype={ID_COLUMN: str, LEGACY_ID_COLUMN: str},
            **kwargs,  # type: ignore[arg-type]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise HPADataError(f"{path}: cannot read CSV ({detail(exc, path)})") from exc
    return with_id_column(frame, path)


def read_parquet_table(path: str | Path) -> pd.DataFrame:
    """Read an hpa Parquet table, its Id column named :data:`ID_COLUMN`.

    Raises:
        HPADataError: the file is missing or unreadable, or has no Id column.
    """
    path = Path(path)
    if not path.is_file():
        raise HPADataError(f"{path}: file not found")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise HPADataError(f"{path}: cannot read Parquet ({detail(exc, path)})") from exc
    frame = with_id_column(frame, path)
    frame[ID_COLUMN] = frame[ID_COLUMN].astype(str)
    return frame


def image_score_table(ids: Sequence[str], scores: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per image: :data:`ID_COLUMN` and one score column per class.

    Args:
        ids: ``N`` image Ids.
        scores: ``(N, K)`` float scores.
        class_names: the ``K`` column names.

    >>> image_score_table(["a"], np.array([[0.5, 1.0]]), ["x", "y"]).to_dict("records")
    [{'image_id': 'a', 'x': 0.5, 'y': 1.0}]
    """
    return pd.concat(
        [pd.DataFrame({ID_COLUMN: list(ids)}), pd.DataFrame(np.asarray(scores), columns=list(class_names))],
        axis=1,
    )


def write_failures(path: str | Path, failures: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write ``failures.csv``: ``image_id,error``, one row per failed image, atomically.

    Args:
        path: the file (its folder's ``failures.csv``).
        failures: ``image_id -> error`` or ``(image_id, error)`` pairs, in the order to write.
    """
    pairs = list(failures.items()) if isinstance(failures, Mapping) else list(failures)
    frame = pd.DataFrame({ID_COLUMN: [p[0] for p in pairs], "error": [p[1] for p in pairs]})
    write_csv(path, frame)


def read_failures(path: str | Path) -> dict[str, str]:
    """``image_id -> error`` of a ``failures.csv`` (empty when the file is absent).

    Raises:
        HPADataError: the file exists but is not a failures table.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    frame = read_csv_table(path)
    if "error" not in frame.columns:
        raise HPADataError(f"{path}: expected columns image_id,error, got {list(frame.columns)}")
    return dict(zip(frame[ID_COLUMN].astype(str), frame["error"].astype(str), strict=True))


#: The columns of a views index (:func:`hpa.classification.cache.views_index`).
VIEW_COLUMNS = ("image_id", "kind", "cell_id", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")
_BOX = ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1")


def split_views(
    index: pd.DataFrame, probs: np.ndarray, class_names: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cell table and the tile table of scored views, as ``hpa predict`` writes them.

    Args:
        index: one row per view: ``image_id``, ``kind`` (``cell``/``tile``), ``cell_id``
            (the tile number for tiles) and the box columns.
        probs: ``(len(index), K)`` float probabilities.
        class_names: the ``K`` probability column names.

    Returns:
        ``(cells, tiles)``: ``image_id, cell_id, bbox_*`` and one column per class; and
        ``image_id, tile`` and one column per class.

    >>> index = pd.DataFrame({"image_id": ["a", "a"], "kind": ["cell", "tile"], "cell_id": [3, 0],
    ...                       "bbox_y0": [0, -1], "bbox_x0": [0, -1], "bbox_y1": [2, -1], "bbox_x1": [2, -1]})
    >>> cells, tiles = split_views(index, np.array([[0.25], [0.5]]), ["x"])
    >>> cells.to_dict("records"), tiles.to_dict("records")
    ([{'image_id': 'a', 'cell_id': 3, 'bbox_y0': 0, 'bbox_x0': 0, 'bbox_y1': 2, 'bbox_x1': 2, 'x': 0.25}], [{'image_id': 'a', 'tile': 0, 'x': 0.5}])
    """
    columns = list(class_names)
    is_cell = (index["kind"] == "cell").to_numpy()
    cells = index[is_cell].drop(columns="kind").reset_index(drop=True)
    cells = pd.concat([cells, pd.DataFrame(probs[is_cell], columns=columns)], axis=1)
    tiles = index[~is_cell][[ID_COLUMN, "cell_id"]].rename(columns={"cell_id": "tile"}).reset_index(drop=True)
    tiles = pd.concat([tiles, pd.DataFrame(probs[~is_cell], columns=columns)], axis=1)
    return cells, tiles


def join_views(cells: pd.DataFrame, tiles: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """The inverse of :func:`split_views`: one table of views, probabilities as columns.

    Each image's cells come before its tiles; images keep their order of first
    appearance. Tiles get the box ``-1`` as in a views index.

    Returns:
        :data:`VIEW_COLUMNS` and one column per class.
    """
    columns = list(class_names)
    cells = with_id_column(cells, "cell table")
    tiles = with_id_column(tiles, "tile table")
    cell_part = cells.assign(kind="cell")[[*VIEW_COLUMNS, *columns]]
    tile_part = tiles.rename(columns={"tile": "cell_id"}).assign(kind="tile", **dict.fromkeys(_BOX, -1))
    tile_part = tile_part[[*VIEW_COLUMNS, *columns]]
    views = pd.concat([cell_part, tile_part], ignore_index=True)
    order = {i: k for k, i in enumerate(dict.fromkeys(views[ID_COLUMN]))}
    views = views.assign(_order=views[ID_COLUMN].map(order))
    views = views.sort_values(["_order", "kind"], kind="stable").drop(columns="_order")
    return views.reset_index(drop=True)
