"""hpa: protein subcellular localisation from Human Protein Atlas images.

A two-stage, cell-crop system: :mod:`hpa.segmentation` finds cells from the reference
channels, :mod:`hpa.classification` scores multi-channel cell crops and whole-image
tiles with a CNN, :mod:`hpa.aggregation` pools cell scores into image labels with tuned
per-class thresholds. :mod:`hpa.pipelines` runs the stages over folders of images.

The Python API (:mod:`hpa.api`) mirrors the command: :func:`segment_folder`,
:func:`train`, :func:`predict_folder`, :func:`evaluate`, and :class:`Classifier` for
images in memory. They load on first use, so ``import hpa`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = ("CellPredictions", "Classifier", "evaluate", "predict_folder", "segment_folder", "train")
__all__ = [
    "CellPredictions",
    "Classifier",
    "__version__",
    "evaluate",
    "predict_folder",
    "segment_folder",
    "train",
]

if TYPE_CHECKING:
    from hpa.api import CellPredictions, Classifier, evaluate, predict_folder, segment_folder, train


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("hpa.api"), name)
    raise AttributeError(f"module 'hpa' has no attribute {name!r}")
