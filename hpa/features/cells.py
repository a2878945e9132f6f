"""The per-cell localisation feature table of one image, and its per-image summary.

>>> import numpy as np
>>> image = np.zeros((40, 40, 4), np.uint8); image[..., 1] = 50; image[12:28, 12:28, 1] = 200
>>> cells = np.zeros((40, 40), np.uint16); cells[4:36, 4:36] = 1
>>> nuclei = np.zeros_like(cells); nuclei[12:28, 12:28] = 1
>>> table = cell_features(image, cells, nuclei, image_id="a")
>>> table[["image_id", "cell_id"]].values.tolist(), round(float(table.frac_nucleus[0]), 2)
([['a', 1]], 0.57)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from hpa.artefacts.tables import ID_COLUMN
from hpa.features.measures import colocalisation, compartments, granularity, puncta, radial
from hpa.features.settings import FeatureSettings
from hpa.features.texture import texture
from hpa.features.view import CellView, cell_views

log = logging.getLogger(__name__)

#: The feature groups, in column order.
GROUPS: tuple[Callable[[CellView, FeatureSettings], dict[str, float]], ...] = (
    compartments,
    colocalisation,
    radial,
    puncta,
    granularity,
    texture,
)
#: The statistics :func:`image_features` takes over each image's cells.
IMAGE_STATS = ("mean", "max", "p90")


def cell_row(view: CellView, settings: FeatureSettings) -> dict[str, float]:
    """Every feature of one cell, in :func:`feature_names` order."""
    row: dict[str, float] = {}
    for group in GROUPS:
        row.update(group(view, settings))
    return row


def feature_names(settings: FeatureSettings | None = None) -> list[str]:
    """The feature columns of :func:`cell_features`, in order (measured on a model cell)."""
    settings = settings or FeatureSettings()
    raw = np.zeros((16, 16, 4), np.uint8)
    cell = np.zeros((16, 16), bool)
    cell[2:14, 2:14] = True
    return list(cell_row(CellView(1, raw, cell, np.zeros_like(cell)), settings))


def _check(image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 4 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an (H, W, 4) uint8/uint16 image, got {image.shape} {image.dtype}")
    if cells.shape != image.shape[:2] or nuclei.shape != image.shape[:2]:
        raise ValueError(f"masks {cells.shape} and {nuclei.shape} do not match the image's {image.shape[:2]}")


def cell_features(
    image: np.ndarray,
    cells: np.ndarray,
    nuclei: np.ndarray,
    image_id: str = "",
    settings: FeatureSettings | None = None,
) -> pd.DataFrame:
    """The localisation features of every cell of one image (docs/features.md).

    Args:
        image: ``(H, W, 4)`` uint8/uint16, channels red, green, blue, yellow
            (:data:`hpa.constants.CHANNELS`).
        cells: ``(H, W)`` integer cell labels, 0 = background (``hpa segment``'s ``cells/``).
        nuclei: ``(H, W)`` integer nucleus labels, a nucleus carrying its cell's id.
        image_id: written to the ``image_id`` column.
        settings: measurement settings; ``FeatureSettings()`` if None.

    Returns:
        One row per cell, ascending ``cell_id``: ``image_id, cell_id`` and the
        :func:`feature_names` columns (float64; NaN where a value cannot be measured).

    Raises:
        ValueError: the image is not ``(H, W, 4)`` uint8/uint16 or a mask's shape differs.
    """
    settings = settings or FeatureSettings()
    _check(image, cells, nuclei)
    views = cell_views(image, cells, nuclei)
    names = feature_names(settings)
    rows = [cell_row(view, settings) for view in views]
    table = pd.DataFrame(rows, columns=names, dtype=np.float64)
    table.insert(0, "cell_id", np.array([v.cell_id for v in views], dtype=np.int64))
    table.insert(0, ID_COLUMN, image_id)
    return table


def image_features(cell_table: pd.DataFrame) -> pd.DataFrame:
    """Summarise each image's cells: the mean, max and 90th percentile of every feature.

    Args:
        cell_table: rows of :func:`cell_features` (any number of images).

    Returns:
        One row per image: ``image_id, n_cells`` and ``<feature>_<stat>`` for each stat
        of :data:`IMAGE_STATS` (NaN-skipping; NaN when no cell has a value).

    >>> t = pd.DataFrame({"image_id": ["a", "a", "b"], "cell_id": [1, 2, 1], "f": [0.0, 1.0, 2.0]})
    >>> image_features(t).values.tolist()
    [['a', 2, 0.5, 1.0, 0.9], ['b', 1, 2.0, 2.0, 2.0]]
    """
    features = [c for c in cell_table.columns if c not in (ID_COLUMN, "cell_id")]
    grouped = cell_table.groupby(ID_COLUMN, sort=True)[features]
    parts = {"mean": grouped.mean(), "max": grouped.max(), "p90": grouped.quantile(0.9)}
    out = pd.concat({stat: parts[stat] for stat in IMAGE_STATS}, axis=1)
    out.columns = [f"{feature}_{stat}" for stat, feature in out.columns]
    out = out[[f"{f}_{s}" for f in features for s in IMAGE_STATS]]
    out.insert(0, "n_cells", cell_table.groupby(ID_COLUMN, sort=True).size().astype(np.int64))
    return out.reset_index()
