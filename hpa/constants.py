"""Names shared by every stage: channels, label sets, class names.

Arrays are ``(H, W, C)`` everywhere, with the channels in :data:`CHANNELS` order.
"""

from __future__ import annotations

from typing import Final

#: ``--engine`` choices of ``hpa predict`` and ``hpa train-cells`` (:mod:`hpa.classification.engine`).
ENGINES: Final = ("auto", "torch", "onnxruntime", "openvino")

#: Canonical channel order of every ``(H, W, 4)`` array in the project.
CHANNELS: Final = ("red", "green", "blue", "yellow")
#: What each channel stains.
CHANNEL_STAINS: Final = {
    "red": "microtubules",
    "green": "protein of interest",
    "blue": "nucleus",
    "yellow": "endoplasmic reticulum",
}
RED: Final = 0
GREEN: Final = 1
BLUE: Final = 2
YELLOW: Final = 3
#: Channels segmentation may look at. Green is the label signal and never is one.
REFERENCE_CHANNELS: Final = (RED, BLUE, YELLOW)

CLASS_NAMES_2018: Final = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)

CLASS_NAMES_2021: Final = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)

#: Label sets by name: "2018" (28 classes, ``Id,Target``, space-separated) and
#: "2021" (19 classes, ``ID,Label``, ``|``-separated).
LABEL_SETS: Final = {"2018": CLASS_NAMES_2018, "2021": CLASS_NAMES_2021}

#: Fraction of images carrying each 2018 class in the real Kaggle 2018 ``train.csv``
#: (31,072 images). Used by ``hpa synth`` to draw realistic label frequencies.
CLASS_FREQUENCIES_2018: Final = (
    0.41468, 0.04036, 0.11654, 0.05024, 0.05980, 0.08088, 0.03244, 0.09082,
    0.00171, 0.00145, 0.00090, 0.03518, 0.02214, 0.01728, 0.03431, 0.00068,
    0.01706, 0.00676, 0.02903, 0.04770, 0.00554, 0.12156, 0.02581, 0.09542,
    0.01036, 0.26480, 0.01056, 0.00035,
)  # fmt: skip

IMAGE_EXTENSIONS: Final = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
