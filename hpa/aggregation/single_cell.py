"""Single-cell output in the 2021 scheme: class mapping, Negative, cell confidence, rows.

**2018 -> 2021 classes.** A 2021-scheme model emits its 19 classes directly. A
2018-scheme model's 28 scores are mapped by :data:`MAP_2018_TO_2021`; a 2021 class's
score is the maximum of its sources' scores:

====  ==========================================  ==============================================
2021  2021 class                                  2018 sources
====  ==========================================  ==============================================
0     Nucleoplasm                                 0 Nucleoplasm
1     Nuclear membrane                            1 Nuclear membrane
2     Nucleoli                                    2 Nucleoli
3     Nucleoli fibrillar center                   3 Nucleoli fibrillar center
4     Nuclear speckles                            4 Nuclear speckles
5     Nuclear bodies                              5 Nuclear bodies
6     Endoplasmic reticulum                       6 Endoplasmic reticulum
7     Golgi apparatus                             7 Golgi apparatus
8     Intermediate filaments                      11 Intermediate filaments
9     Actin filaments                             12 Actin filaments, 13 Focal adhesion sites
10    Microtubules                                14 Microtubules
11    Mitotic spindle                             17 Mitotic spindle
12    Centrosome                                  18 Microtubule organizing center, 19 Centrosome
13    Plasma membrane                             21 Plasma membrane, 22 Cell junctions
14    Mitochondria                                23 Mitochondria
15    Aggresome                                   24 Aggresome
16    Cytosol                                     25 Cytosol
17    Vesicles and punctate cytosolic patterns    8 Peroxisomes, 9 Endosomes, 10 Lysosomes,
                                                  20 Lipid droplets, 26 Cytoplasmic bodies
18    Negative                                    (derived, see below)
====  ==========================================  ==============================================

Dropped (no 2021 class): 15 Microtubule ends, 16 Cytokinetic bridge, 27 Rods & rings.

**Negative.** A model with a Negative output (a 2021-scheme model) keeps it. Otherwise a
cell's Negative score is ``1 - max`` of its 18 localisation scores (:func:`negative_score`).
For labels (not scores), a row none of whose classes maps to a 2021 localisation is
Negative (:func:`map_labels_2018_to_2021`).

**Cell confidence** (:data:`CELL_SCORES`): ``cell`` = the cell's own probability;
``image`` = its image's pooled probability, the same for every cell of the image;
``product`` = cell x image (the rule of the 2021 competition's second place);
``geometric`` = sqrt(cell x image); ``image-then-cell`` = image x (1 - e + e x cell) with
``e`` = :data:`TIE_BREAK` (0.001): the image's probability ranks cells across images, and
within an image the cell's own probability orders them (a cell never moves past a cell of
an image scored more than 0.1 % higher).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hpa.constants import CLASS_NAMES_2018, CLASS_NAMES_2021

#: 2018 class number -> 2021 class number, or None where the class has no 2021 equivalent.
MAP_2018_TO_2021: dict[int, int | None] = {
    0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7,
    8: 17, 9: 17, 10: 17, 11: 8, 12: 9, 13: 9, 14: 10, 15: None,
    16: None, 17: 11, 18: 12, 19: 12, 20: 17, 21: 13, 22: 13, 23: 14,
    24: 15, 25: 16, 26: 17, 27: None,
}  # fmt: skip
#: Number of the 2021 Negative class.
NEGATIVE = CLASS_NAMES_2021.index("Negative")
#: Rules for a cell's confidence in a class (see the module docstring).
CELL_SCORES = ("cell", "image", "product", "geometric", "image-then-cell")
#: Weight of the cell's own probability under ``image-then-cell``.
TIE_BREAK = 1e-3


def _sources() -> list[list[int]]:
    sources: list[list[int]] = [[] for _ in range(NEGATIVE)]
    for old, new in MAP_2018_TO_2021.items():
        if new is not None:
            sources[new].append(old)
    return sources


def negative_score(scores: np.ndarray) -> np.ndarray:
    """Negative confidence derived from the 18 localisation scores: ``1 - max``.

    Args:
        scores: ``(N, 18)`` float probabilities.

    Returns:
        ``(N,)`` float32 in [0, 1]; 1 for a row of zeros.

    Example:
        >>> negative_score(np.array([[0.2, 0.7], [0.0, 0.0]])).astype(float).round(2).tolist()
        [0.3, 1.0]
    """
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"scores must be (N, K), got shape {s.shape}")
    if s.shape[1] == 0:
        return np.ones(len(s), np.float32)
    return np.clip(1.0 - s.max(axis=1), 0.0, 1.0).astype(np.float32)


def map_scores_2018_to_2021(scores: np.ndarray) -> np.ndarray:
    """Map 28 2018-scheme probabilities to the 19 2021 classes.

    Args:
        scores: ``(N, 28)`` float probabilities in :data:`~hpa.constants.CLASS_NAMES_2018`
            order.

    Returns:
        ``(N, 19)`` float32: each 2021 localisation the max of its sources, Negative
        ``1 - max`` of the 18 localisations.

    Example:
        >>> s = np.zeros((1, 28)); s[0, 13] = 0.8; s[0, 12] = 0.3
        >>> out = map_scores_2018_to_2021(s)
        >>> float(out[0, 9]), round(float(out[0, 18]), 2)
        (0.800000011920929, 0.2)
    """
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 2 or s.shape[1] != len(CLASS_NAMES_2018):
        raise ValueError(f"scores must be (N, {len(CLASS_NAMES_2018)}), got shape {s.shape}")
    out = np.zeros((len(s), len(CLASS_NAMES_2021)), np.float32)
    for new, olds in enumerate(_sources()):
        out[:, new] = s[:, olds].max(axis=1)
    out[:, NEGATIVE] = negative_score(out[:, :NEGATIVE])
    return out


def map_labels_2018_to_2021(y: np.ndarray) -> np.ndarray:
    """Map 2018 multi-hot labels to 2021 ones; a row with no mapped class is Negative.

    Args:
        y: ``(N, 28)`` {0, 1} labels.

    Returns:
        ``(N, 19)`` uint8 labels.

    Example:
        >>> y = np.zeros((2, 28), np.uint8); y[0, [8, 22]] = 1; y[1, 16] = 1
        >>> [np.flatnonzero(r).tolist() for r in map_labels_2018_to_2021(y)]
        [[13, 17], [18]]
    """
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != len(CLASS_NAMES_2018):
        raise ValueError(f"labels must be (N, {len(CLASS_NAMES_2018)}), got shape {y.shape}")
    out = np.zeros((len(y), len(CLASS_NAMES_2021)), np.uint8)
    for new, olds in enumerate(_sources()):
        out[:, new] = y[:, olds].max(axis=1) > 0
    out[:, NEGATIVE] = out[:, :NEGATIVE].max(axis=1) == 0
    return out


def to_2021_scores(scores: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Scores of a model in the 2021 scheme, whichever scheme the model has.

    Args:
        scores: ``(N, K)`` probabilities of a model whose classes are ``class_names``.
        class_names: the 2018 (mapped) or 2021 (kept as they are) class names.

    Returns:
        ``(N, 19)`` float32.

    Raises:
        ValueError: ``class_names`` is neither label set.
    """
    names = tuple(class_names)
    s = np.asarray(scores, dtype=np.float32)
    if names == tuple(CLASS_NAMES_2021):
        return s
    if names == tuple(CLASS_NAMES_2018):
        return map_scores_2018_to_2021(s)
    raise ValueError(f"the model's {len(names)} classes are neither the 2018 nor the 2021 label set")


def cell_confidence(cell: np.ndarray, image: np.ndarray, rule: str) -> np.ndarray:
    """Each cell's confidence per class under one of the :data:`CELL_SCORES` rules.

    Args:
        cell: ``(N, K)`` float cell probabilities.
        image: ``(N, K)`` float probabilities of each cell's image (row ``i`` is the
            image of cell ``i``).
        rule: one of :data:`CELL_SCORES`.

    Returns:
        ``(N, K)`` float32.

    Example:
        >>> c, i = np.array([[0.9, 0.2]]), np.array([[0.4, 0.5]])
        >>> [cell_confidence(c, i, r).astype(float).round(2).tolist()[0] for r in CELL_SCORES]
        [[0.9, 0.2], [0.4, 0.5], [0.36, 0.1], [0.6, 0.32], [0.4, 0.5]]
        >>> cells = np.array([[0.9], [0.2]])  # two cells of one image: the first ranks higher
        >>> cell_confidence(cells, np.full((2, 1), 0.5), "image-then-cell").astype(float).round(5).ravel().tolist()
        [0.49995, 0.4996]
    """
    c = np.asarray(cell, dtype=np.float32)
    i = np.asarray(image, dtype=np.float32)
    if c.shape != i.shape:
        raise ValueError(f"cell scores {c.shape} and image scores {i.shape} differ in shape")
    if rule == "cell":
        return c.copy()
    if rule == "image":
        return i.copy()
    if rule == "product":
        return c * i
    if rule == "geometric":
        return np.sqrt(np.clip(c, 0, None) * np.clip(i, 0, None))
    if rule == "image-then-cell":
        return i * (1.0 - TIE_BREAK + TIE_BREAK * np.clip(c, 0, 1))
    raise ValueError(f"unknown cell score {rule!r}; choose from {', '.join(CELL_SCORES)}")


def prediction_string(
    cell_ids: Sequence[int], confidence: np.ndarray, masks: Mapping[int, str], min_confidence: float
) -> str:
    """One image's ``PredictionString``: ``class confidence mask`` for every listed pair.

    A cell appears once per class whose confidence is at least ``min_confidence``;
    pairs are written cell by cell, classes ascending.

    Args:
        cell_ids: ``N`` cell ids.
        confidence: ``(N, 19)`` float cell confidences.
        masks: ``cell_id -> encoded mask`` (:func:`hpa.aggregation.rle.encode_cells`).
        min_confidence: the lowest confidence listed.

    Example:
        >>> prediction_string([3], np.array([[0.5] + [0.0] * 18]), {3: "eNoL"}, 0.01)
        '0 0.5 eNoL'
    """
    conf = np.asarray(confidence, dtype=np.float64)
    parts: list[str] = []
    for cell_id, row in zip(cell_ids, conf, strict=True):
        mask = masks[int(cell_id)]
        for k in np.flatnonzero(row >= min_confidence):
            parts.append(f"{k} {row[k]:.6g} {mask}")
    return " ".join(parts)


def mapping_agreement(y_2018: np.ndarray, y_2021: np.ndarray) -> dict[str, float | int]:
    """How well :func:`map_labels_2018_to_2021` reproduces real 2021 labels.

    Args:
        y_2018: ``(N, 28)`` {0, 1} official 2018 labels.
        y_2021: ``(N, 19)`` {0, 1} official 2021 labels of the same images.

    Returns:
        ``n`` images, ``exact`` (fraction whose mapped set equals the 2021 set),
        ``jaccard`` (mean per-image intersection over union of the sets),
        ``precision`` and ``recall`` of the mapped labels over all image-class pairs.

    Example:
        >>> a = np.zeros((2, 28), np.uint8); a[0, 0] = a[1, 21] = 1
        >>> b = np.zeros((2, 19), np.uint8); b[0, 0] = b[1, 17] = 1
        >>> mapping_agreement(a, b)["exact"]
        0.5
    """
    mapped = map_labels_2018_to_2021(y_2018).astype(bool)
    truth = np.asarray(y_2021).astype(bool)
    if truth.shape != mapped.shape:
        raise ValueError(f"2021 labels must be ({len(mapped)}, 19), got shape {truth.shape}")
    inter = (mapped & truth).sum(axis=1)
    union = (mapped | truth).sum(axis=1)
    return {
        "n": len(truth),
        "exact": float((mapped == truth).all(axis=1).mean()) if len(truth) else float("nan"),
        "jaccard": float(np.mean(inter / np.maximum(union, 1))) if len(truth) else float("nan"),
        "precision": float(inter.sum() / max(int(mapped.sum()), 1)),
        "recall": float(inter.sum() / max(int(truth.sum()), 1)),
    }
