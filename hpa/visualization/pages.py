"""HTML of the report's pages: the gallery, one page per image, the summary.

Every string that comes from data (Ids, class names, errors, paths) is escaped with
:func:`html.escape`; every link is relative to the report folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from urllib.parse import quote

import numpy as np
import pandas as pd

from hpa.visualization.classes import cell_calls, class_palette, hex_colour, probability_matrix, short_name
from hpa.visualization.templates import page


def _url(*parts: str) -> str:
    return escape("/".join(quote(p) for p in parts))


def chips(
    classes: Sequence[int], class_names: Sequence[str], other: Sequence[int] | None = None, wrong: str = "fp"
) -> str:
    """Coloured class chips; with ``other`` (the truth or the prediction) marked right/wrong.

    Args:
        classes: class numbers to show.
        class_names: class names in class-number order.
        other: the class numbers to compare with, or None to mark nothing.
        wrong: CSS class of a chip not in ``other`` (``"fp"`` or ``"fn"``).
    """
    palette = class_palette(len(class_names))
    out = []
    for k in classes:
        state = "" if other is None else (" ok" if k in other else f" {wrong}")
        name = class_names[k]
        out.append(
            f'<span class="chip{state}" style="--c:{hex_colour(palette[k])}" title="{escape(name)} ({k})">'
            f"{escape(short_name(name, 24))}</span>"
        )
    return "".join(out) if out else '<span class="legend">none</span>'


def _header(title: str, prefix: str, extra: str = "") -> str:
    return (
        f'<h1>{escape(title)}</h1><a href="{prefix}index.html">gallery</a>'
        f'<a href="{prefix}summary.html">summary &amp; thresholds</a>{extra}'
    )


def index_page(
    ids: Sequence[str],
    predicted: Mapping[str, Sequence[int]],
    truth: Mapping[str, Sequence[int]] | None,
    class_names: Sequence[str],
    has_thumb: Mapping[str, bool],
    meta: str,
) -> str:
    """The gallery: a thumbnail per image with its labels, filterable by class."""
    counts = np.zeros(len(class_names), dtype=int)
    for i in ids:
        for k in set(predicted.get(i, ())) | set((truth or {}).get(i, ())):
            counts[k] += 1
    options = "".join(
        f'<option value="{k}">{escape(class_names[k])} ({counts[k]})</option>' for k in np.flatnonzero(counts)
    )
    modes = '<option value="pred">predicted</option>'
    if truth is not None:
        modes += '<option value="true">true</option><option value="wrong">wrong (false positive or missed)</option>'
    items = []
    for i in ids:
        pred = tuple(predicted.get(i, ()))
        true = tuple(truth[i]) if truth is not None and i in truth else None
        img = (
            f'<img src="{_url("thumbs", i + ".jpg")}" loading="lazy" alt="{escape(i)}">'
            if has_thumb.get(i)
            else '<div class="noimg">no image</div>'
        )
        data = f' data-pred="{" ".join(map(str, pred))}"'
        rows = f'<div class="chips"><span class="lbl">pred</span>{chips(pred, class_names, true, "fp")}</div>'
        if true is not None:
            data += f' data-truth="{" ".join(map(str, true))}"'
            rows += f'<div class="chips"><span class="lbl">true</span>{chips(true, class_names, pred, "fn")}</div>'
        items.append(
            f'<figure class="item"{data}><a href="{_url("images", i + ".html")}">{img}</a>'
            f'<figcaption><div class="id" title="{escape(i)}">{escape(i)}</div>{rows}</figcaption></figure>'
        )
    legend = "Chips: image-level labels, colour = class colour in the overlays."
    if truth is not None:
        legend += " Bold = correct, struck through = false positive, italic = missed."
    body = (
        '<div class="controls"><label>Class <select id="cls"><option value="">all classes</option>'
        f'{options}</select></label><label>images where the class is <select id="mode">{modes}</select>'
        f'</label><span id="count" class="count"></span></div><p class="legend">{escape(legend)}</p>'
        f'<div id="gallery">{"".join(items)}</div>'
    )
    return page(
        "HPA predictions", _header("HPA predictions", "", f'<span class="meta">{escape(meta)}</span>'), body
    )


def image_page(
    image_id: str,
    cells: pd.DataFrame,
    scores: pd.Series | None,
    predicted: Sequence[int],
    truth: Sequence[int] | None,
    class_names: Sequence[str],
    thresholds: np.ndarray,
    neighbours: tuple[str | None, str | None],
    overlay: str | None,
    problem: str | None = None,
) -> str:
    """One image: its overlay, its image-level scores and a sortable table of its cells."""
    prev_id, next_id = neighbours
    nav = "".join(
        f'<a href="{_url(n + ".html")}">{label}</a>'
        for n, label in ((prev_id, "&larr; previous"), (next_id, "next &rarr;"))
        if n
    )
    parts = [
        f'<div class="chips"><span class="lbl">pred</span>{chips(predicted, class_names, truth, "fp")}</div>'
    ]
    if truth is not None:
        parts.append(
            f'<div class="chips"><span class="lbl">true</span>{chips(truth, class_names, predicted, "fn")}</div>'
        )
    if overlay:
        parts.append(
            f'<section class="overlay"><a href="{overlay}"><img src="{overlay}" alt="overlay of {escape(image_id)}"></a></section>'
        )
    else:
        parts.append(f'<p class="warn">No overlay: {escape(problem or "image not available")}</p>')
    if scores is not None:
        rows = []
        order = np.argsort(-scores.to_numpy(dtype=float))
        for k in order:
            s = float(scores.iloc[k])
            if s < 0.5 * thresholds[k] and k not in predicted and (truth is None or k not in truth):
                continue
            tr = "" if truth is None else f"<td>{'yes' if k in truth else ''}</td>"
            rows.append(
                f"<tr><td>{chips([int(k)], class_names)}</td><td class=num>{s:.3f}</td><td class=num>{thresholds[k]:.3f}</td>"
                f"<td>{'yes' if k in predicted else ''}</td>{tr}</tr>"
            )
        head = "<th>class</th><th>score</th><th>threshold</th><th>predicted</th>" + (
            "<th>true</th>" if truth is not None else ""
        )
        parts.append(
            "<h2>Image-level scores</h2><p class=legend>classes scoring at least half their threshold, or predicted, or true</p>"
            f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        )
    parts.append(f"<h2>Cells ({len(cells)})</h2>{cell_table_html(cells, class_names, thresholds)}")
    return page(image_id, _header(image_id, "../", f'<span class="nav">{nav}</span>'), "\n".join(parts))


def cell_table_html(
    cells: pd.DataFrame, class_names: Sequence[str], thresholds: np.ndarray, top: int = 3
) -> str:
    """A sortable table of cells: called classes, top classes with probabilities, box."""
    if cells.empty:
        return '<p class="legend">No cells.</p>'
    probs = probability_matrix(cells, class_names)
    calls = cell_calls(cells, class_names, thresholds)
    head = "<th>cell</th><th>called classes</th>" + "".join(
        f"<th>#{j + 1} class</th><th>p</th>" for j in range(top)
    )
    has_box = {"bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"} <= set(cells.columns)
    head += "<th>box (y0, x0, y1, x1)</th>" if has_box else ""
    rows = []
    boxes = cells[["bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"]].to_numpy() if has_box else None
    for r, (cid, called) in enumerate(zip(calls["cell_id"], calls["classes"])):
        order = np.argsort(-probs[r])[:top]
        tops = "".join(
            f'<td data-v="{escape(class_names[k])}">{chips([int(k)], class_names)}</td><td class=num>{probs[r, k]:.3f}</td>'
            for k in order
        )
        box = f"<td>{', '.join(str(int(v)) for v in boxes[r])}</td>" if boxes is not None else ""
        rows.append(
            f'<tr><td class=num>{int(cid)}</td><td data-v="{len(called)}">{chips(called, class_names)}</td>{tops}{box}</tr>'
        )
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def summary_page(
    class_names: Sequence[str],
    thresholds: np.ndarray,
    predicted: Mapping[str, Sequence[int]],
    cell_counts: np.ndarray,
    table: pd.DataFrame | None,
    meta: Sequence[tuple[str, str]],
    failures: Mapping[str, str],
    chart: str | None,
) -> str:
    """Run facts, per-class thresholds and counts, and with the truth: F1 and confusions."""
    facts = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in meta)
    parts = [f"<section><h2>Run</h2><table>{facts}</table></section>"]
    if chart:
        parts.append(f'<section><h2>F1 per class</h2><img src="{chart}" alt="F1 per class"></section>')
    n_pred = np.zeros(len(class_names), dtype=int)
    for classes in predicted.values():
        n_pred[list(classes)] += 1
    head = (
        "<th>#</th><th>class</th><th>threshold</th><th>images predicted</th><th>cells called (top class)</th>"
    )
    if table is not None:
        head += "".join(
            f"<th>{h}</th>"
            for h in (
                "support",
                "TP",
                "FP",
                "FN",
                "precision",
                "recall",
                "F1",
                "most often predicted wrongly with it",
            )
        )
    rows = []
    for k, name in enumerate(class_names):
        cells = f'<td class=num>{k}</td><td data-v="{escape(name)}">{chips([k], class_names)}</td><td class=num>{thresholds[k]:.3f}</td>'
        cells += f"<td class=num>{n_pred[k]}</td><td class=num>{int(cell_counts[k])}</td>"
        if table is not None:
            t = table.iloc[k]
            conf = ", ".join(f"{escape(class_names[j])} ({n})" for j, n in t["confused_with"])
            cells += "".join(f"<td class=num>{int(t[c])}</td>" for c in ("support", "tp", "fp", "fn"))
            cells += "".join(f"<td class=num>{float(t[c]):.3f}</td>" for c in ("precision", "recall", "f1"))
            cells += f"<td>{conf}</td>"
        rows.append(f"<tr>{cells}</tr>")
    parts.append(
        "<section><h2>Classes</h2><p class=legend>'most often predicted wrongly with it': on images that truly show "
        "the class, the classes predicted that are not true, with counts.</p>"
        f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>'
    )
    if failures:
        frows = "".join(
            f"<tr><td class=id>{escape(i)}</td><td>{escape(e)}</td></tr>" for i, e in failures.items()
        )
        parts.append(
            f"<section><h2>Failures ({len(failures)})</h2><table><tr><th>Id</th><th>error</th></tr>{frows}</table></section>"
        )
    return page("Summary", _header("Summary", ""), "\n".join(parts))
