"""Per-cell predictions drawn over an image: coloured outlines, labels, legend, title.

:func:`render_overlay` draws one figure of two panels at display size: the composite
with each cell outlined in the colour of its top predicted class and a short label on
it, and the green (protein) channel alone, which is what the labels describe. Drawing is
done by scikit-image (outlines, fills) and matplotlib's Agg canvas (text, legend), with
no global pyplot state, so it is safe in worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from skimage.color import label2rgb
from skimage.measure import regionprops_table
from skimage.morphology import dilation, disk
from skimage.segmentation import find_boundaries

from hpa.constants import CHANNEL_STAINS, CHANNELS, GREEN
from hpa.visualization.classes import DIM_COLOUR, cell_calls, cell_label_text, class_palette, hex_colour
from hpa.visualization.composite import (
    composite,
    display_shape,
    grey_panel,
    parse_channels,
    resize_image,
    resize_labels,
)

DPI = 100
PAD = 10  # figure margin and gap between panels, pixels
LINE = 22  # height of one title line, pixels
LEGEND_ROW = 20  # height of one legend row, pixels
LEGEND_COL = 270  # width of one legend column, pixels
LABEL_FONT = 8  # points


def outline_cells(
    panel: np.ndarray,
    cells: np.ndarray,
    colours: dict[int, tuple[int, int, int]],
    *,
    width: int = 2,
    fill_alpha: float = 0.0,
) -> np.ndarray:
    """Draw cell outlines on an RGB panel: called cells in colour, the rest dimmed.

    Args:
        panel: ``(H, W, 3)`` uint8 RGB image.
        cells: ``(H, W)`` integer instance labels of the same size, 0 = background.
        colours: outline colour per cell id; cells not listed get a thin grey outline.
        width: outline width of coloured cells in pixels (inside the cell).
        fill_alpha: opacity of a fill in the cell's colour (0 = outlines only).

    Returns:
        ``(H, W, 3)`` uint8 RGB image; ``panel`` is not modified.
    """
    if panel.shape[:2] != cells.shape:
        raise ValueError(f"panel {panel.shape[:2]} and cell mask {cells.shape} differ in size")
    out = panel.copy()
    ids = np.array(sorted(colours), dtype=np.int64)
    lut = np.zeros((int(max(cells.max(initial=0), ids.max(initial=0))) + 1, 3), dtype=np.uint8)
    called = np.zeros(lut.shape[0], dtype=bool)
    for cid, rgb in colours.items():
        lut[cid], called[cid] = rgb, True
    called[0] = False
    if fill_alpha > 0 and called.any():
        fill_ids = np.where(called[cells], cells, 0)
        present = np.unique(fill_ids[fill_ids > 0])
        filled = label2rgb(
            fill_ids,
            image=out,
            colors=[lut[i] / 255.0 for i in present],
            alpha=fill_alpha,
            bg_label=0,
            kind="overlay",
            saturation=1.0,
        )
        out = np.round(filled * 255.0).astype(np.uint8)
    inner = find_boundaries(cells, mode="inner")
    dim = inner & ~called[cells] & (cells > 0)
    out[dim] = (0.4 * out[dim] + 0.6 * np.array(DIM_COLOUR)).astype(np.uint8)
    thick = dilation(inner, disk(max(width - 1, 0))) if width > 1 else inner
    thick &= called[cells]
    out[thick] = lut[cells[thick]]
    return out


def place_labels(
    anchors: Sequence[tuple[float, float]],
    sizes: Sequence[tuple[float, float]],
    bounds: tuple[float, float],
    max_steps: int = 3,
) -> list[tuple[float, float] | None]:
    """Greedy label placement: each box at its anchor or the nearest free spot.

    Labels are placed in the given order (put the most important first). A label goes
    on its anchor if its box overlaps no box already placed, else on the first free
    spot of a ring of 8 candidates around the anchor, rings 1 to ``max_steps`` box
    heights out; a label with no free spot is left out (``None``).

    Args:
        anchors: ``(x, y)`` box centres wanted, in pixels.
        sizes: ``(width, height)`` of each box, in pixels.
        bounds: ``(width, height)`` of the area boxes must stay inside.
        max_steps: rings of candidates to try.

    Returns:
        The centre chosen for each label, or ``None``.

    >>> place_labels([(50.0, 50.0), (52.0, 50.0)], [(40.0, 10.0), (40.0, 10.0)], (200.0, 200.0))
    [(50.0, 50.0), (52.0, 40.0)]
    """
    placed: list[tuple[float, float, float, float]] = []
    result: list[tuple[float, float] | None] = []
    for (ax, ay), (w, h) in zip(anchors, sizes):
        found = None
        offsets = [(0.0, 0.0)] + [
            (dx * w * 0.6 * s if dx else 0.0, dy * h * s)
            for s in range(1, max_steps + 1)
            for dx, dy in ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (1, -1), (-1, 1), (1, 1))
        ]
        for dx, dy in offsets:
            x, y = ax + dx, ay + dy
            box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            if box[0] < 0 or box[1] < 0 or box[2] > bounds[0] or box[3] > bounds[1]:
                continue
            if any(box[0] < p[2] and p[0] < box[2] and box[1] < p[3] and p[1] < box[3] for p in placed):
                continue
            found = (x, y)
            placed.append(box)
            break
        result.append(found)
    return result


def _channels_caption(channels: str) -> str:
    names = [CHANNELS[i] for i in parse_channels(channels)]
    if len(names) == 1:
        return f"{CHANNEL_STAINS[names[0]]} ({names[0]} channel, grey)"
    return ", ".join(f"{CHANNEL_STAINS[n].replace('endoplasmic reticulum', 'ER')} ({n})" for n in names)


def _prepare(
    image: np.ndarray,
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
    channels: str,
    max_side: int,
    min_side: int,
    fill_alpha: float,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray]:
    if image.ndim != 3 or image.shape[-1] != len(CHANNELS):
        raise ValueError(f"expected an (H, W, 4) image, got shape {image.shape}")
    if cells.shape != image.shape[:2]:
        raise ValueError(f"cell mask {cells.shape} and image {image.shape[:2]} differ in size")
    shape = display_shape(image.shape[0], image.shape[1], max_side=max_side, min_side=min_side)
    small = resize_image(image, shape)
    mask = resize_labels(cells, shape)
    palette = class_palette(len(class_names))
    calls = cell_calls(cell_table, class_names, thresholds)
    calls = calls[calls["cell_id"].isin(set(np.unique(mask).tolist()))]
    coloured = calls[calls["top_class"] >= 0]
    colours: dict[int, tuple[int, int, int]] = {}
    for c, k in zip(coloured["cell_id"], coloured["top_class"]):
        colours[int(c)] = (int(palette[k][0]), int(palette[k][1]), int(palette[k][2]))
    width = max(1, round(max(shape) / 300))
    panel = outline_cells(composite(small, channels), mask, colours, width=width, fill_alpha=fill_alpha)
    return small, mask, calls, panel


def overlay_panel(
    image: np.ndarray,
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
    *,
    channels: str = "rgby",
    max_side: int = 192,
    fill_alpha: float = 0.25,
) -> np.ndarray:
    """The composite with coloured cell outlines alone, without text (e.g. a thumbnail).

    Args:
        image: ``(H, W, 4)`` uint8 or uint16 sample.
        cells: ``(H, W)`` integer cell instance labels.
        cell_table: this image's rows of ``cell_predictions.parquet``.
        class_names: class names in class-number order.
        thresholds: per-class thresholds (used where ``predicted`` is absent).
        channels: channels of the composite, letters from ``"rgby"``.
        max_side: longest side of the result in pixels.
        fill_alpha: opacity of a fill of called cells in their class colour.

    Returns:
        ``(h, w, 3)`` uint8 RGB image.
    """
    return _prepare(image, cells, cell_table, class_names, thresholds, channels, max_side, 0, fill_alpha)[3]


def render_overlay(
    image: np.ndarray,
    cells: np.ndarray,
    cell_table: pd.DataFrame,
    class_names: Sequence[str],
    thresholds: Sequence[float] | np.ndarray,
    title: str = "",
    *,
    channels: str = "rgby",
    max_side: int = 1024,
    min_side: int = 512,
    show_labels: bool = True,
    fill_alpha: float = 0.0,
) -> np.ndarray:
    """Draw one image's cell predictions: composite with outlines and labels, green panel.

    Args:
        image: ``(H, W, 4)`` uint8 or uint16 sample, channels red, green, blue, yellow.
        cells: ``(H, W)`` integer cell instance labels (0 = background).
        cell_table: this image's rows of ``cell_predictions.parquet`` (``cell_id``, one
            probability column per class, optionally ``predicted``).
        class_names: class names in class-number order.
        thresholds: per-class thresholds (used where ``predicted`` is absent).
        title: title text; lines separated by ``\\n``, the first in bold.
        channels: channels of the composite panel, letters from ``"rgby"``.
        max_side: longest panel side in pixels; larger images are shrunk.
        min_side: smaller images are enlarged to this, so that labels fit.
        show_labels: draw the class label on each called cell.
        fill_alpha: opacity of a fill of called cells in their class colour.

    Returns:
        ``(h, w, 3)`` uint8 RGB figure.

    Raises:
        ValueError: the image and mask differ in size, or a class column is missing.
    """
    small, mask, calls, left = _prepare(
        image, cells, cell_table, class_names, thresholds, channels, max_side, min_side, fill_alpha
    )
    palette = class_palette(len(class_names))
    coloured = calls[calls["top_class"] >= 0]
    right = outline_cells(grey_panel(small[..., GREEN]), mask, {}, width=1)
    title_lines = [t for t in title.split("\n") if t] if title else []
    classes_present = sorted(set(coloured["top_class"].tolist()))
    present = set(np.unique(mask).tolist())
    n_dim = int((calls["top_class"] < 0).sum()) + len(present - {0} - set(calls["cell_id"].tolist()))
    layout = _Layout.of(mask.shape, len(title_lines), len(classes_present) + (1 if n_dim else 0))
    fig = Figure(figsize=(layout.fig_w / DPI, layout.fig_h / DPI), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    _draw_title(fig, title_lines, layout)
    axes = _draw_panels(fig, ((left, _channels_caption(channels)), (right, GREEN_CAPTION)), layout)
    if show_labels and len(coloured):
        _draw_labels(fig, canvas, axes[0], mask, coloured, class_names, palette, (layout.w, layout.h))
    if layout.entries:
        _draw_legend(fig, coloured, classes_present, n_dim, class_names, palette, layout)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


#: Caption of the right panel of :func:`render_overlay`.
GREEN_CAPTION = "protein of interest (green channel, grey)"


@dataclass(frozen=True)
class _Layout:
    """Pixel sizes of a :func:`render_overlay` figure: two ``w`` x ``h`` panels side by side,
    title lines and captions above (``top_h``), the legend below (``legend_h``, ``ncol``
    columns of ``entries`` entries)."""

    w: int
    h: int
    fig_w: int
    fig_h: int
    top_h: int
    legend_h: int
    ncol: int
    entries: int

    @classmethod
    def of(cls, shape: tuple[int, ...], n_title_lines: int, entries: int) -> _Layout:
        h, w = shape
        fig_w = 2 * w + 3 * PAD
        ncol = max(1, min(entries, fig_w // LEGEND_COL))
        legend_h = (-(-entries // ncol) * LEGEND_ROW + PAD) if entries else 0
        top_h = PAD + LINE * n_title_lines + LINE  # title lines, then panel captions
        fig_h = top_h + h + legend_h + PAD
        return cls(w, h, fig_w, fig_h, top_h, legend_h, ncol, entries)


def _draw_title(fig: Figure, lines: Sequence[str], layout: _Layout) -> None:
    """Title lines at the top left, the first in bold."""
    for i, line in enumerate(lines):
        y = 1 - (PAD + LINE * i + LINE / 2) / layout.fig_h
        fig.text(PAD / layout.fig_w, y, line, fontsize=12 if i == 0 else 10.5, va="center",
                 fontweight="bold" if i == 0 else "normal")  # fmt: skip


def _draw_panels(fig: Figure, panels: Sequence[tuple[np.ndarray, str]], layout: _Layout) -> list[Axes]:
    """The ``(panel, caption)`` pairs side by side below the title; returns their axes."""
    fig_w, fig_h, w, h = layout.fig_w, layout.fig_h, layout.w, layout.h
    axes = []
    for j, (panel, caption) in enumerate(panels):
        x0 = PAD + j * (w + PAD)
        ax = fig.add_axes((x0 / fig_w, (fig_h - layout.top_h - h) / fig_h, w / fig_w, h / fig_h))
        ax.imshow(panel, interpolation="none")
        ax.set_axis_off()
        fig.text(
            x0 / fig_w,
            1 - (layout.top_h - LINE / 2) / fig_h,
            caption,
            fontsize=9,
            va="center",
            color="#444444",
        )
        axes.append(ax)
    return axes


def _draw_legend(
    fig: Figure,
    coloured: pd.DataFrame,
    classes_present: Sequence[int],
    n_dim: int,
    class_names: Sequence[str],
    palette: np.ndarray,
    layout: _Layout,
) -> None:
    """One entry per class called on a cell (with its cell count), one for the dim cells."""
    handles: list[Patch | Line2D] = []
    counts = coloured["top_class"].value_counts()
    for k in classes_present:
        n = int(counts[k])
        label = f"{class_names[k]} ({n} cell{'s' if n > 1 else ''})"
        handles.append(Patch(facecolor=hex_colour(palette[k]), edgecolor="none", label=label))
    if n_dim:
        handles.append(Line2D([], [], color=hex_colour(DIM_COLOUR), lw=1.5,
                              label=f"no class over threshold ({n_dim})"))  # fmt: skip
    fig.legend(handles=handles, loc="upper left", ncol=layout.ncol, frameon=False, fontsize=9,
               bbox_to_anchor=(PAD / layout.fig_w, (layout.legend_h + PAD) / layout.fig_h), handlelength=1.2,
               borderaxespad=0, columnspacing=1.2)  # fmt: skip


def _draw_labels(
    fig: Figure,
    canvas: FigureCanvasAgg,
    ax: Axes,
    mask: np.ndarray,
    coloured: pd.DataFrame,
    class_names: Sequence[str],
    palette: np.ndarray,
    bounds: tuple[int, int],
) -> None:
    props = pd.DataFrame(regionprops_table(mask, properties=("label", "centroid"))).set_index("label")
    order = coloured.sort_values("top_prob", ascending=False)
    renderer = canvas.get_renderer()
    texts, anchors, sizes = [], [], []
    for row in order.itertuples(index=False):
        cy, cx = props.loc[row.cell_id, ["centroid-0", "centroid-1"]]
        text = cell_label_text(class_names[row.top_class], row.top_prob, len(row.classes))
        colour = hex_colour(palette[row.top_class])
        t = ax.annotate(
            text, xy=(cx, cy), xytext=(cx, cy), fontsize=LABEL_FONT, color="white", ha="center", va="center",
            bbox={"boxstyle": "round,pad=0.25", "fc": (0, 0, 0, 0.65), "ec": colour, "lw": 1.0},
            arrowprops={"arrowstyle": "-", "color": colour, "lw": 1.0, "shrinkA": 0, "shrinkB": 0},
        )  # fmt: skip
        ext = t.get_window_extent(renderer)
        texts.append(t)
        anchors.append((float(cx), float(cy)))
        sizes.append((ext.width + 8, ext.height + 6))
    for t, pos in zip(texts, place_labels(anchors, sizes, (bounds[0], bounds[1]))):
        if pos is None:
            t.remove()
        else:
            t.set_position(pos)
            if t.arrow_patch is not None and pos == t.xy:
                t.arrow_patch.set_visible(False)
