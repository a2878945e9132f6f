"""hpa: protein subcellular localisation from Human Protein Atlas images.

A two-stage, cell-crop system: :mod:`hpa.segmentation` finds cells from the reference
channels, :mod:`hpa.classification` scores multi-channel cell crops and whole-image
tiles with a CNN, :mod:`hpa.aggregation` pools cell scores into image labels with tuned
per-class thresholds. :mod:`hpa.pipelines` runs the stages over folders of images.
"""

__version__ = "0.1.0"
