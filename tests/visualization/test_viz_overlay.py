"""Composite, outlines, label placement and the overlay figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.segmentation import find_boundaries

from hpa.constants import CLASS_NAMES_2018
from hpa.visualization import class_palette, composite, place_labels, render_overlay
from hpa.visualization.classes import cell_calls
from hpa.visualization.overlay import LINE, PAD, outline_cells

from .viz_fixtures import CELLS, THRESHOLD, cell_rows, draw_sample

NAMES = CLASS_NAMES_2018
THRESHOLDS = np.full(len(NAMES), THRESHOLD)


def _table() -> pd.DataFrame:
    return pd.DataFrame(cell_rows("x", NAMES))


def test_composite_8_and_16_bit_agree() -> None:
    img8, _ = draw_sample(0, 8)
    img16 = img8.astype(np.uint16) * 257
    a, b = composite(img8), composite(img16)
    assert a.dtype == np.uint8 and a.shape == (*img8.shape[:2], 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_composite_channels() -> None:
    img, _ = draw_sample(0, 16)
    grey = composite(img, "g")
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    blue_only = composite(img, "b")
    assert blue_only.max() == 255
    rgb = composite(img, "rgb")
    assert not np.array_equal(rgb, composite(img, "rgby"))
    with pytest.raises(ValueError, match="rgby"):
        composite(img, "x")


def test_cell_calls_top_class_and_dim() -> None:
    calls = cell_calls(_table(), NAMES, THRESHOLDS).set_index("cell_id")
    assert calls.loc[1, "top_class"] == 0 and calls.loc[2, "top_class"] == 2
    assert calls.loc[3, "top_class"] == -1  # nothing over threshold
    no_col = cell_calls(_table().drop(columns="predicted"), NAMES, THRESHOLDS)
    assert no_col["top_class"].tolist() == calls["top_class"].tolist()


def test_outline_pixels_have_class_colour() -> None:
    _, cells = draw_sample(0)
    panel = np.full((*cells.shape, 3), 40, np.uint8)
    palette = class_palette(len(NAMES))
    colours = {1: tuple(palette[0]), 2: tuple(palette[2])}
    out = outline_cells(panel, cells.astype(np.int32), colours, width=2)
    edge = find_boundaries(cells, mode="inner")
    for cid, k in ((1, 0), (2, 2)):
        assert (out[edge & (cells == cid)] == palette[k]).all()
    dim = out[edge & (cells == 3)]
    assert (dim != palette[0]).any(axis=1).all() and (dim > 40).all()  # grey, not a class colour
    assert (out[200:, :40] == 40).all()  # far from any cell: untouched
    assert (out[cells == 1][:, 0] == 40).sum() > 0  # the inside is not filled


def _left_panel(figure: np.ndarray, title_lines: int, side: int) -> np.ndarray:
    top = PAD + LINE * title_lines + LINE
    return figure[top : top + side, PAD : PAD + side]


@pytest.mark.parametrize("depth", [8, 16])
def test_render_overlay_colours_and_labels(depth: int) -> None:
    image, cells = draw_sample(1, depth)
    palette = class_palette(len(NAMES))
    fig = render_overlay(image, cells, _table(), NAMES, THRESHOLDS, title="img\nPredicted: x")
    assert fig.dtype == np.uint8 and fig.ndim == 3
    side = 512  # 256 px images are enlarged to min_side
    panel = _left_panel(fig, 2, side)
    for cid, k in ((1, 0), (2, 2)):
        r, c, rad, _, _ = CELLS[cid]
        ring = panel[
            2 * (r - 3) : 2 * (r + 3), 2 * (c - rad) - 2 : 2 * (c - rad) + 6
        ]  # left edge of the disk
        assert (ring == palette[k]).all(axis=-1).any(), f"no class colour on the outline of cell {cid}"
    far = panel[470:, :60]
    for k in range(len(NAMES)):
        assert not (far == palette[k]).all(axis=-1).any()
    bare = render_overlay(
        image, cells, _table(), NAMES, THRESHOLDS, title="img\nPredicted: x", show_labels=False
    )
    assert fig.shape == bare.shape
    changed = (fig != bare).any(axis=-1)
    assert changed.sum() > 200, "labels were not drawn"
    r, c = CELLS[1][:2]
    near = (_left_panel(fig, 2, side) != _left_panel(bare, 2, side)).any(axis=-1)
    assert near[2 * r - 30 : 2 * r + 30, 2 * c - 80 : 2 * c + 80].any(), "label not on its cell"


def test_render_overlay_large_image_is_shrunk() -> None:
    image, cells = draw_sample(2, 16)
    big = np.repeat(np.repeat(image, 8, axis=0), 8, axis=1)  # 2048 px
    big_cells = np.repeat(np.repeat(cells, 8, axis=0), 8, axis=1)
    fig = render_overlay(big, big_cells, _table(), NAMES, THRESHOLDS, max_side=400)
    assert fig.shape[0] < 600 and fig.shape[1] < 900


def test_render_overlay_rejects_mismatched_mask() -> None:
    image, cells = draw_sample(0)
    with pytest.raises(ValueError, match="differ in size"):
        render_overlay(image, cells[:100], _table(), NAMES, THRESHOLDS)


def test_place_labels_no_overlap() -> None:
    anchors = [(100.0, 100.0)] * 6 + [(5.0, 5.0)]
    sizes = [(60.0, 14.0)] * 7
    placed = place_labels(anchors, sizes, (300.0, 300.0))
    boxes = [(x - 30, y - 7, x + 30, y + 7) for p in placed if p is not None for x, y in [p]]
    assert len(boxes) >= 6
    for i, a in enumerate(boxes):
        assert a[0] >= 0 and a[1] >= 0 and a[2] <= 300 and a[3] <= 300
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert placed[0] == (100.0, 100.0)


def test_palette_distinct() -> None:
    pal = class_palette(28)
    assert len({tuple(c) for c in pal}) == 28
    assert np.array_equal(class_palette(28), pal)


def test_cell_calls_follow_the_image_level_thresholding_rule() -> None:
    """A score exactly at its threshold is not a call, for cells as for images (``>``)."""
    from hpa.aggregation import apply_thresholds

    table = pd.DataFrame({"cell_id": [1, 2]})
    probs = np.zeros((2, len(NAMES)))
    probs[0, 3] = THRESHOLD  # exactly at the threshold
    probs[1, 3] = np.nextafter(THRESHOLD, 1.0)  # just over it
    table = pd.concat([table, pd.DataFrame(probs, columns=list(NAMES))], axis=1)
    calls = cell_calls(table, NAMES, THRESHOLDS)
    expected = apply_thresholds(probs, THRESHOLDS, fill_top=False)
    assert expected[:, 3].tolist() == [0, 1]
    assert calls["top_class"].tolist() == [-1, 3]
