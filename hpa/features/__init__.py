"""Localisation features: what a cell biologist measures to say where a protein sits.

Per cell, from the four stains and the masks of ``hpa segment``: the protein's share in
the nucleus, cytoplasm, cell edge, nuclear rim and nucleoli; its colocalisation with the
nucleus, microtubule and ER stains; its radial distribution; puncta; granularity; and
texture (Haralick, LBP, threshold adjacency statistics). Pure numpy, scipy,
scikit-image and mahotas: no torch. docs/features.md defines each column.

- :func:`cell_features`: the table of one image's cells, from arrays.
- :func:`image_features`: mean, max and 90th percentile of each feature per image.
- :func:`folder_features`: a folder of images and its SEG_DIR, cached per image.
"""

from hpa.features.cells import IMAGE_STATS, cell_features, feature_names, image_features
from hpa.features.folder import folder_features
from hpa.features.settings import FEATURES_VERSION, FeatureSettings

__all__ = [
    "FEATURES_VERSION",
    "IMAGE_STATS",
    "FeatureSettings",
    "cell_features",
    "feature_names",
    "folder_features",
    "image_features",
]
