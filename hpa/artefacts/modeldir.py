"""MODEL_DIR, the folder ``hpa train-cells`` writes (docs/artefacts.md): file names, readers, writers.

A plain model folder holds ``config.json``, ``weights.safetensors`` and
``thresholds.json`` (all ``hpa predict`` needs), the training record (settings, split,
history, metrics, validation scores), the segmentation settings its masks were made
with (``segmentation.yaml``) and a model card (``README.md``). A ``--folds K`` folder
holds ``fold-<k>/`` model folders and the ensemble files beside them.

The validation views are written as ``hpa predict`` writes its predictions: a cell
table (``val_cell_scores.parquet``) and a tile table (``val_tile_scores.parquet``).
A folder written before that split has cells and tiles in ``val_cell_scores.parquet``
(with a ``kind`` column); :meth:`ModelDir.read_val_views` reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.artefacts.folder import THRESHOLDS_FILE, Folder
from hpa.artefacts.provenance import RECORD_FILE
from hpa.artefacts.tables import (
    ID_COLUMN,
    VIEW_COLUMNS,
    image_score_table,
    join_views,
    read_csv_table,
    read_parquet_table,
    split_views,
    write_csv,
    write_parquet,
)
from hpa.config import load_json_object, load_yaml, save_yaml
from hpa.errors import HPAConfigError
from hpa.runlog import RUN_LOG


class ModelDir(Folder):
    """A model folder of ``hpa train-cells`` (or a ``--folds`` ensemble folder).

    >>> ModelDir("model").path(ModelDir.THRESHOLDS).as_posix()
    'model/thresholds.json'
    """

    CONFIG = "config.json"
    WEIGHTS = "weights.safetensors"
    THRESHOLDS = THRESHOLDS_FILE
    TRAIN_CONFIG = "train_config.yaml"
    SPLIT = "split.csv"
    CHECKPOINT = "last.ckpt"
    METRICS = "metrics.json"
    HISTORY = "history.csv"
    VAL_IMAGES = "val_image_scores.csv"
    VAL_CELLS = "val_cell_scores.parquet"
    VAL_TILES = "val_tile_scores.parquet"
    SEGMENTATION = "segmentation.yaml"
    CARD = "README.md"
    ENSEMBLE = "ensemble.json"
    OOF_VIEWS = "oof_view_scores.parquet"
    OOF_IMAGES = "oof_image_scores.csv"
    OOF_LABELS = "oof_labels.csv"
    FOLD_PREFIX = "fold-"
    #: The onnxruntime engine's exported graphs of this folder's network, a cache keyed by
    #: the weights' digest (:mod:`hpa.classification.engine`).
    ENGINE_CACHE = "engine-cache"
    #: The localisation-feature head of a ``--companion features`` member
    #: (:mod:`hpa.classification.feature_head`).
    FEATURE_HEAD = "feature_head.json"
    #: The blended validation (or out-of-fold) image scores of a blend folder.
    BLEND_SCORES = "blend_scores.csv"
    #: Every file ``hpa train-cells`` writes in a model folder of any kind; the fold and
    #: member folders are claimed with them (:func:`hpa.outputs.claim_entries`).
    ENTRIES = (
        CONFIG, WEIGHTS, THRESHOLDS, TRAIN_CONFIG, SPLIT, CHECKPOINT, METRICS, HISTORY, VAL_IMAGES,
        VAL_CELLS, VAL_TILES, SEGMENTATION, CARD, ENSEMBLE, OOF_VIEWS, OOF_IMAGES, OOF_LABELS, RUN_LOG,
        RECORD_FILE, ENGINE_CACHE,
    )  # fmt: skip

    def fold(self, k: int) -> ModelDir:
        """The model folder of fold ``k`` of a ``--folds`` folder."""
        return ModelDir(self.root / f"{self.FOLD_PREFIX}{k}")

    # ------------------------------------------------------------ metrics ---

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json``.

        Raises:
            HPAConfigError: missing or not a JSON object; names the file.
        """
        return load_json_object(self.path(self.METRICS))

    def read_train_config(self) -> dict[str, Any] | None:
        """``train_config.yaml``: the run's resolved training settings (None when absent).

        Raises:
            HPAConfigError: the file is not a YAML mapping; names it.
        """
        path = self.path(self.TRAIN_CONFIG)
        return load_yaml(path) if path.is_file() else None

    # ------------------------------------------------- validation scores ---

    def write_val_scores(
        self,
        ids: Sequence[str],
        scores: np.ndarray,
        index: pd.DataFrame,
        probs: np.ndarray,
        class_names: Sequence[str],
    ) -> None:
        """Write the validation predictions: image scores, then cell and tile tables.

        Args:
            ids: the ``N`` validation image Ids.
            scores: ``(N, K)`` pooled image scores.
            index: one row per validation view (:data:`VIEW_COLUMNS`).
            probs: ``(len(index), K)`` view probabilities.
            class_names: the ``K`` classes.
        """
        write_csv(self.path(self.VAL_IMAGES), image_score_table(ids, scores, class_names))
        cells, tiles = split_views(index[list(VIEW_COLUMNS)].reset_index(drop=True), probs, class_names)
        write_parquet(self.path(self.VAL_CELLS), cells)
        write_parquet(self.path(self.VAL_TILES), tiles)

    def read_val_image_ids(self) -> list[str]:
        """The validation image Ids, in ``val_image_scores.csv`` order."""
        return list(
            read_csv_table(self.path(self.VAL_IMAGES), usecols=lambda c: c in (ID_COLUMN, "Id"))[ID_COLUMN]
        )

    def read_val_views(self, class_names: Sequence[str]) -> pd.DataFrame:
        """Every validation view: :data:`VIEW_COLUMNS` and one probability column per class.

        Reads the cell and tile tables, or the single mixed table of an older folder.
        """
        cells = read_parquet_table(self.path(self.VAL_CELLS))
        if "kind" in cells.columns:  # an older folder: cells and tiles in one table
            return cells[[*VIEW_COLUMNS, *class_names]]
        return join_views(cells, read_parquet_table(self.path(self.VAL_TILES)), class_names)

    # ------------------------------------------------------- segmentation ---

    def write_segmentation(self, settings: dict[str, Any] | None, source: str | Path | None = None) -> None:
        """Write ``segmentation.yaml``: the settings the training masks were made with.

        Args:
            settings: a SEG_DIR's ``config.yaml`` content (None: unknown, nothing written).
            source: the SEG_DIR it came from, recorded beside the settings.
        """
        if settings is None:
            return
        save_yaml(
            self.path(self.SEGMENTATION), {"source": str(source) if source else None, "settings": settings}
        )

    def read_segmentation(self) -> dict[str, Any] | None:
        """The segmentation settings of the training masks (None for a folder without them).

        A ``--folds`` folder answers with its first fold's.

        Raises:
            HPAConfigError: the file is malformed.
        """
        path = self.path(self.SEGMENTATION)
        if not path.is_file():
            first = self.fold(0)
            return (
                first.read_segmentation()
                if (self.root / self.ENSEMBLE).is_file() and first.root.is_dir()
                else None
            )
        data = load_yaml(path)
        settings = data.get("settings")
        if not isinstance(settings, dict):
            raise HPAConfigError(f"{path}: expected a mapping 'settings' of segmentation settings")
        return settings
