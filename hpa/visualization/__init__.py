"""Pictures and reports of predictions: overlays of per-cell calls, an HTML report.

Public API:

- :func:`composite`: the HPA colour composite of an ``(H, W, 4)`` sample, uint8 RGB.
- :func:`render_overlay`: one image's cells outlined and labelled by their top predicted
  class, beside the green channel alone, as a uint8 RGB figure.
- :func:`overlay_panel`: the outlined composite alone (thumbnails).
- :func:`class_palette`: the fixed colour of every class.
- :func:`load_prediction_run` and :func:`write_report`: read a PRED_DIR, write the report.
"""

from hpa.visualization.classes import cell_calls, class_palette
from hpa.visualization.composite import composite
from hpa.visualization.overlay import overlay_panel, place_labels, render_overlay
from hpa.visualization.preddir import PredictionRun, load_prediction_run
from hpa.visualization.report import write_report

__all__ = [
    "PredictionRun",
    "cell_calls",
    "class_palette",
    "composite",
    "load_prediction_run",
    "overlay_panel",
    "place_labels",
    "render_overlay",
    "write_report",
]
