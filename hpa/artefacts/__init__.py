"""The on-disk layouts stages exchange: one home per folder, file name and table format.

* :class:`SegDir`: the SEG_DIR of ``hpa segment`` (masks, cells table, settings);
* :class:`ModelDir`: the MODEL_DIR of ``hpa train-cells`` (and its ``--folds`` form);
* :class:`PredDir`: the PRED_DIR of ``hpa predict``;
* :mod:`hpa.artefacts.tables`: the atomic Parquet/CSV writers, ``failures.csv`` and the
  ``image_id`` column every internal table is keyed by.

See docs/artefacts.md. Nothing heavy is imported here: the stage packages import this.
"""

from hpa.artefacts.modeldir import ModelDir
from hpa.artefacts.preddir import PredDir
from hpa.artefacts.segdir import SegDir
from hpa.artefacts.tables import (
    FAILURES_FILE,
    ID_COLUMN,
    read_csv_table,
    read_failures,
    read_parquet_table,
    write_csv,
    write_failures,
    write_parquet,
)

__all__ = [
    "FAILURES_FILE",
    "ID_COLUMN",
    "ModelDir",
    "PredDir",
    "SegDir",
    "read_csv_table",
    "read_failures",
    "read_parquet_table",
    "write_csv",
    "write_failures",
    "write_parquet",
]
