"""Image-level aggregation: pool cell scores, tune and apply thresholds, score, submit.

Pure numpy/pandas (scikit-learn only inside :func:`per_class_report`); never imports
torch, so predictions can be re-thresholded and evaluated without the model stack.
The single-cell (2021) side lives in :mod:`~hpa.aggregation.single_cell` (class mapping,
cell scores), :mod:`~hpa.aggregation.rle` (mask encoding, with pycocotools),
:mod:`~hpa.aggregation.submission_2021` and :mod:`~hpa.aggregation.cell_map` (the metric).
"""

from hpa.aggregation.metrics import f1_per_class, format_report, macro_f1, per_class_report
from hpa.aggregation.pooling import COMBINE_METHODS, POOLING_METHODS, combine_with_tiles, pool_cells
from hpa.aggregation.submission import align_submission, read_submission, write_submission
from hpa.aggregation.thresholds import (
    THRESHOLD_METHODS,
    ThresholdResult,
    ThresholdsFile,
    apply_thresholds,
    load_thresholds,
    load_thresholds_file,
    save_thresholds,
    tune_thresholds,
)

__all__ = [
    "COMBINE_METHODS",
    "POOLING_METHODS",
    "THRESHOLD_METHODS",
    "ThresholdResult",
    "ThresholdsFile",
    "align_submission",
    "apply_thresholds",
    "combine_with_tiles",
    "f1_per_class",
    "format_report",
    "load_thresholds",
    "load_thresholds_file",
    "macro_f1",
    "per_class_report",
    "pool_cells",
    "read_submission",
    "save_thresholds",
    "tune_thresholds",
    "write_submission",
]
