"""One synthetic sample: labels per cell, green patterns, acquisition.

Randomness is split into independent streams drawn from the caller's generator: geometry,
reference channels, labels, green patterns, acquisition (one more per channel). The
geometry and the reference channels therefore do not depend on which classes are drawn
(except that a mitotic cell or a dividing pair is forced into the layout when class 17 or
16 is asked for and the layout has none): the same seed with other classes gives the same
red, blue and yellow channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpa.constants import CLASS_FREQUENCIES_2018, CLASS_NAMES_2018
from hpa.synthetic.imaging import acquire
from hpa.synthetic.layout import DAUGHTER, MITOTIC, Layout, bandpass_noise, make_layout
from hpa.synthetic.patterns import PATTERNS
from hpa.synthetic.reference import Reference, draw_reference
from hpa.synthetic.shapes import CellView

N_CLASSES = len(CLASS_NAMES_2018)
#: Probability of 1, 2, 3, 4 labels per image (real Kaggle 2018 train.csv).
N_LABELS_P = (0.487, 0.402, 0.101, 0.010)
#: Floor on a class's draw weight, so that rare classes occur in a few % of images.
CLASS_FLOOR = 0.04
#: How an image label spreads over its cells: all eligible cells, some, or one.
SPREAD_P = {"all": 0.6, "some": 0.3, "one": 0.1}
NUCLEAR_CLASSES = frozenset(range(6))
BRIDGE, SPINDLE, JUNCTIONS = 16, 17, 22


@dataclass(frozen=True)
class SyntheticSample:
    """A synthetic image with its ground truth.

    Attributes:
        image: ``(H, W, 4)`` uint8 or uint16, red, green, blue, yellow.
        cells: ``(H, W)`` int32 cell instance labels, 0 = background.
        nuclei: ``(H, W)`` int32 nucleus labels; a nucleus has its cell's id.
        cell_labels: 2018 class numbers expressed by each cell id (every cell listed).
        labels: image labels, the sorted union of the cell labels.
    """

    image: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    cell_labels: dict[int, tuple[int, ...]]
    labels: tuple[int, ...]


def class_weights() -> np.ndarray:
    """Draw probability of each class: real 2018 frequency floored at :data:`CLASS_FLOOR`."""
    w = np.maximum(np.asarray(CLASS_FREQUENCIES_2018), CLASS_FLOOR)
    return w / w.sum()


def sample_image_labels(rng: np.random.Generator) -> tuple[int, ...]:
    """Draw an image's label set: 1-4 classes, frequent classes more often.

    >>> labels = sample_image_labels(np.random.default_rng(0))
    >>> 1 <= len(labels) <= 4 and list(labels) == sorted(set(labels))
    True
    """
    k = int(rng.choice(np.arange(1, len(N_LABELS_P) + 1), p=np.asarray(N_LABELS_P) / sum(N_LABELS_P)))
    return tuple(sorted(int(c) for c in rng.choice(N_CLASSES, size=k, replace=False, p=class_weights())))


def eligible_cells(layout: Layout, cls: int) -> list[int]:
    """Ids of the cells that can express ``cls``.

    Cytokinetic bridge: the daughters of a dividing pair; mitotic spindle: mitotic cells;
    nuclear classes: not mitotic cells (no nucleus in mitosis); cell junctions: cells
    touching another cell; everything else: every cell.
    """
    cells = layout.cell_list
    if cls == BRIDGE:
        return [c.id for c in cells if c.kind == DAUGHTER]
    if cls == SPINDLE:
        return [c.id for c in cells if c.kind == MITOTIC]
    ids = [c.id for c in cells if c.kind != MITOTIC or cls not in NUCLEAR_CLASSES]
    if cls == JUNCTIONS:
        touching = set(np.unique(layout.cells[layout.junction]).tolist())
        ids = [i for i in ids if i in touching]
    return ids


def assign_cell_labels(
    layout: Layout, labels: Sequence[int], rng: np.random.Generator
) -> dict[int, tuple[int, ...]]:
    """Spread image labels over cells: each to all, some or one of its eligible cells.

    Cell-cycle classes go to every cell that can carry them (the dividing pair, the
    mitotic cell). A label with no eligible cell is dropped.

    Returns:
        Sorted class numbers of every cell id of the layout (possibly empty).
    """
    per_cell: dict[int, set[int]] = {c.id: set() for c in layout.cell_list}
    areas = np.bincount(layout.cells.ravel(), minlength=len(per_cell) + 1)
    for cls in labels:
        ids = eligible_cells(layout, cls)
        if not ids:
            continue
        spread = rng.choice(list(SPREAD_P), p=list(SPREAD_P.values()))
        if cls in (BRIDGE, SPINDLE) or spread == "all" or len(ids) == 1:
            chosen = ids
        elif spread == "some" and len(ids) >= 3:
            chosen = list(rng.choice(ids, size=int(rng.integers(2, len(ids))), replace=False))
        else:  # one cell, preferably a large, well visible one
            big = [i for i in ids if areas[i] >= np.median(areas[ids])]
            chosen = [int(rng.choice(big))]
        for i in chosen:
            per_cell[int(i)].add(int(cls))
    return {i: tuple(sorted(v)) for i, v in per_cell.items()}


def draw_green(
    layout: Layout, ref: Reference, cell_labels: dict[int, tuple[int, ...]], rng: np.random.Generator
) -> np.ndarray:
    """The protein channel: each cell's patterns summed, plus faint autofluorescence.

    Each label gets an image-wide brightness and each cell a further log-normal factor,
    so staining varies between cells as in real images.

    Returns:
        ``(H, W)`` float32 signal map.
    """
    green = np.zeros((layout.size, layout.size), np.float32)
    label_gain = dict(zip(range(N_CLASSES), rng.lognormal(0.0, 0.25, N_CLASSES), strict=True))
    for cell in layout.cell_list:
        classes = cell_labels.get(cell.id, ())
        if not classes:
            continue
        view = CellView.of(layout, cell)
        cell_gain = rng.lognormal(0.0, 0.3)
        acc = np.zeros(view.own.shape, np.float32)
        for cls in classes:
            acc += label_gain[cls] * rng.lognormal(0.0, 0.15) * PATTERNS[cls](view, layout, ref, rng)
        green[cell.slices] += cell_gain * acc * view.own
    # Protein stains are grainy at the optical resolution, not smooth.
    grain = 1.0 + 0.22 * bandpass_noise(
        rng, (layout.size, layout.size), 0.8 * layout.scale, 3.0 * layout.scale
    )
    autofluorescence = np.float32(0.03) * (layout.cells > 0) + np.float32(0.01)
    return (green * np.clip(grain, 0.3, None) + autofluorescence).astype(np.float32)


def generate_sample(
    rng: np.random.Generator,
    size: int = 512,
    classes: Sequence[int] | None = None,
    bit_depth: int = 8,
) -> SyntheticSample:
    """Draw one synthetic HPA-like sample with its ground truth.

    Args:
        rng: random generator; the sample is a pure function of its state.
        size: image side in pixels (512 = Kaggle 2018 scale; lengths scale with it).
        classes: image labels to draw (2018 class numbers); ``None`` draws them with
            realistic frequencies. A class no cell can express (cell junctions without
            touching cells) is left out of ``labels``.
        bit_depth: 8 (uint8) or 16 (uint16, about 12 bits used).

    Returns:
        The :class:`SyntheticSample`.

    >>> s = generate_sample(np.random.default_rng(0), size=256, classes=[0, 25])
    >>> s.image.shape, s.image.dtype.name, s.labels
    ((256, 256, 4), 'uint8', (0, 25))
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    seeds = rng.integers(0, 2**62, size=5)
    geometry, reference, labeling, protein, optics = (np.random.default_rng(int(x)) for x in seeds)
    channel_rngs = [np.random.default_rng([int(seeds[4]), c]) for c in range(4)]
    if classes is None:
        wanted = sample_image_labels(labeling)
    else:
        wanted = tuple(sorted({int(c) for c in classes}))
        bad = [c for c in wanted if not 0 <= c < N_CLASSES]
        if bad:
            raise ValueError(f"unknown 2018 class number(s) {bad}: classes are 0-{N_CLASSES - 1}")
    layout = make_layout(geometry, size, mitosis=SPINDLE in wanted, division=BRIDGE in wanted)
    ref = draw_reference(layout, reference)
    cell_labels = assign_cell_labels(layout, wanted, labeling)
    if classes is None and not any(cell_labels.values()):  # e.g. junctions alone, no touching cells
        cell_labels = assign_cell_labels(layout, (0,), labeling)
    green = draw_green(layout, ref, cell_labels, protein)
    signals = np.stack([ref.red, green, ref.blue, ref.yellow], axis=-1)
    image = acquire(signals, optics, channel_rngs, bit_depth)
    labels = tuple(sorted({c for v in cell_labels.values() for c in v}))
    return SyntheticSample(image, layout.cells, layout.nuclei, cell_labels, labels)
