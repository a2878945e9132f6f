"""PRED_DIR, the folder ``hpa predict`` writes (docs/artefacts.md): its file names and settings.

The reading of a whole run for drawing and reports is
:func:`hpa.visualization.preddir.load_prediction_run`; it takes its file names here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import yaml

from hpa.artefacts.folder import SETTINGS_FILE, THRESHOLDS_FILE, Folder
from hpa.artefacts.provenance import RECORD_FILE
from hpa.artefacts.tables import FAILURES_FILE
from hpa.errors import HPAConfigError
from hpa.runlog import RUN_LOG


class PredDir(Folder):
    """A prediction folder of ``hpa predict``.

    >>> PredDir("pred").path(PredDir.SUBMISSION).as_posix()
    'pred/submission.csv'
    """

    SUBMISSION = "submission.csv"
    IMAGE_SCORES = "image_scores.csv"
    CELLS = "cell_predictions.parquet"
    TILES = "tile_predictions.parquet"
    THRESHOLDS = THRESHOLDS_FILE
    SUBMISSION_2021 = "submission_2021.csv"
    CELLS_2021 = "cell_predictions_2021.parquet"
    THRESHOLDS_2021 = "thresholds_2021.json"
    FAILURES = FAILURES_FILE
    CONFIG = SETTINGS_FILE
    MASKS = "masks"
    REPORT = "report"
    OVERLAYS = "overlays"
    RUN_LOG = RUN_LOG
    RECORD = RECORD_FILE
    #: The marker of a folder ``hpa predict`` wrote and may replace.
    MARKER = ".hpa-predict"
    #: Every name ``hpa predict`` (and ``hpa show``/``hpa report`` by default) writes in it.
    ENTRIES = (
        SUBMISSION, IMAGE_SCORES, CELLS, TILES, THRESHOLDS, SUBMISSION_2021, CELLS_2021,
        THRESHOLDS_2021, FAILURES, CONFIG, MASKS, REPORT, OVERLAYS, RUN_LOG, RECORD,
    )  # fmt: skip
    #: scheme -> (submission, cell table, thresholds) of that scheme's outputs.
    SCHEMES: ClassVar[dict[str, tuple[str, str, str]]] = {
        "2018": (SUBMISSION, CELLS, THRESHOLDS),
        "2021": (SUBMISSION_2021, CELLS_2021, THRESHOLDS_2021),
    }

    def is_preddir(self) -> bool:
        """True when the folder has a cell table and its thresholds (of either scheme)."""
        return any(
            self.path(cells).is_file() and self.path(thresholds).is_file()
            for _, cells, thresholds in self.SCHEMES.values()
        )

    def read_settings(self) -> dict[str, Any]:
        """``config.yaml``: the run's resolved settings (empty when absent).

        Raises:
            HPAConfigError: the file is not YAML.
        """
        path = self.path(self.CONFIG)
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise HPAConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        return data if isinstance(data, dict) else {}
