"""A static HTML report of a prediction run, browsable from disk.

Layout of the report folder (every link relative, no network)::

    index.html            gallery of thumbnails, filterable by class
    summary.html          thresholds, counts; with the truth: F1 chart, TP/FP/FN, confusions
    f1.png                per-class F1 bar chart (with the truth only)
    thumbs/<Id>.jpg       192 px composite with coloured cell outlines
    overlays/<Id>.png     the full overlay (:func:`hpa.visualization.render_overlay`)
    images/<Id>.html      one page per image: overlay, image scores, table of cells

The report is built in a temporary folder beside the target and swapped into place
(:func:`hpa.outputs.swap_in`), so a killed run leaves any earlier report untouched. The
folder carries a marker file, :data:`REPORT_MARKER`: only such a folder (or an empty
one) is ever replaced.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hpa import runlog
from hpa.config import default_workers
from hpa.io import HPADataError, temp_name, write_bytes_atomic, write_png, write_text_atomic
from hpa.outputs import check_apart, check_replaceable, swap_in, write_marker
from hpa.parallel import process_pool
from hpa.visualization.classes import cell_calls, image_title
from hpa.visualization.overlay import overlay_panel, render_overlay
from hpa.visualization.pages import image_page, index_page, summary_page
from hpa.visualization.preddir import PredictionRun
from hpa.visualization.summary import class_summary, f1_chart_png

log = logging.getLogger(__name__)

#: The file that marks a folder as a report ``hpa report`` wrote (and may replace).
REPORT_MARKER = ".hpa-report"
#: Everything a report folder holds besides the marker.
REPORT_ENTRIES = ("index.html", "summary.html", "f1.png", "thumbs", "overlays", "images", runlog.RUN_LOG)

#: Longest side of a report overlay panel and of a gallery thumbnail, pixels.
OVERLAY_SIDE = 768
THUMB_SIDE = 192


def write_jpeg(path: str | Path, image: np.ndarray, quality: int = 85) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB image as JPEG, atomically."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


def write_report(
    run: PredictionRun,
    out: str | Path,
    *,
    images_dir: str | Path | None = None,
    truth: Mapping[str, Sequence[int]] | None = None,
    ids: Sequence[str] | None = None,
    overlay_side: int = OVERLAY_SIDE,
    thumb_side: int = THUMB_SIDE,
    workers: int | None = None,
) -> Path:
    """Write the HTML report of a prediction run.

    An image that cannot be read is logged and gets a page without overlay; the report
    goes on with the others.

    Args:
        run: the run (:func:`hpa.visualization.preddir.load_prediction_run`).
        out: report folder to write: new, empty, or an earlier report (which is
            replaced as a whole); never an input folder, the prediction folder itself
            or the current directory.
        images_dir: folder of channel files; default: the one in the run's config.
        truth: true class numbers per Id; adds the truth, F1 and confusions.
        ids: Ids to include, in order; default: every Id of the submission.
        overlay_side: longest side of each overlay panel, pixels.
        thumb_side: longest side of each thumbnail, pixels.
        workers: processes drawing the overlays; None = the CPU cores.

    Returns:
        Path of ``index.html``.
    """
    folder = Path(images_dir) if images_dir is not None else run.images_dir
    check_apart(out, {"PRED_DIR": run.root, "--images": folder}, may_sit_inside=("PRED_DIR",))
    check_replaceable(out, REPORT_MARKER, REPORT_ENTRIES, "hpa report")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    ids = list(ids if ids is not None else run.ids)
    tmp = out.parent / temp_name(out.name)
    tmp.mkdir()
    runlog.write_into(tmp)
    try:
        workers = workers if workers is not None else default_workers()
        has_thumb = _write_images(run, tmp, ids, folder, truth, overlay_side, thumb_side, workers)
        _write_pages(run, tmp, ids, truth, has_thumb, folder)
        write_marker(tmp, REPORT_MARKER, "hpa report")
        swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / "index.html"


def _write_images(
    run: PredictionRun,
    root: Path,
    ids: Sequence[str],
    folder: Path | None,
    truth: Mapping[str, Sequence[int]] | None,
    overlay_side: int,
    thumb_side: int,
    workers: int,
) -> dict[str, str | None]:
    """Overlays and thumbnails, drawn by ``workers`` processes; returns the problem per Id (None = drawn)."""
    problems: dict[str, str | None] = {
        i: f"prediction failed: {run.failures[i]}" for i in ids if i in run.failures
    }
    tasks = [
        _DrawTask(
            _one_image(run, i),
            i,
            folder,
            None if truth is None else truth.get(i),
            root,
            overlay_side,
            thumb_side,
        )
        for i in ids
        if i not in run.failures
    ]
    parallel = workers > 1 and len(tasks) >= _MIN_PARALLEL
    with process_pool(workers, len(tasks)) if parallel else nullcontext() as pool:
        drawn = pool.map(_draw, tasks, chunksize=4) if pool is not None else map(_draw, tasks)
        for k, (image_id, problem) in enumerate(tqdm(drawn, total=len(tasks), desc="report", unit="image")):
            if problem is not None:
                log.warning("Id %s: no overlay (%s)", image_id, problem)
            problems[image_id] = problem
            if (k + 1) % 50 == 0:
                log.info("report: %d of %d images drawn", k + 1, len(tasks))
    return problems


#: Fewer images than this are drawn in this process (starting workers would cost more).
_MIN_PARALLEL = 8


@dataclass(frozen=True)
class _DrawTask:
    """One image's overlay and thumbnail, as a worker process draws them."""

    run: PredictionRun  # this image's share of the run (its cells only)
    image_id: str
    folder: Path | None
    true: Sequence[int] | None
    root: Path
    overlay_side: int
    thumb_side: int


def _one_image(run: PredictionRun, image_id: str) -> PredictionRun:
    """``run`` cut down to one image: what a worker needs, small to send."""
    return replace(
        run,
        ids=(image_id,),
        predicted={image_id: run.predicted.get(image_id, ())},
        cells=run.cells_of(image_id),
        image_scores=run.image_scores.iloc[:0],
        failures={},
    )


def _draw(task: _DrawTask) -> tuple[str, str | None]:
    """Draw one image's overlay and thumbnail; returns ``(Id, problem)``, problem None when drawn."""
    run, image_id = task.run, task.image_id
    try:
        image, cells = run.load(image_id, task.folder)
        title = image_title(image_id, run.predicted.get(image_id, ()), run.class_names, task.true)
        args = (image, cells, run.cells_of(image_id), run.class_names, run.thresholds)
        write_png(
            task.root / "overlays" / f"{image_id}.png",
            render_overlay(*args, title=title, max_side=task.overlay_side),
        )
        write_jpeg(task.root / "thumbs" / f"{image_id}.jpg", overlay_panel(*args, max_side=task.thumb_side))
    except (HPADataError, ValueError, OSError) as exc:
        return image_id, str(exc)
    return image_id, None


def _write_pages(
    run: PredictionRun,
    root: Path,
    ids: Sequence[str],
    truth: Mapping[str, Sequence[int]] | None,
    problems: Mapping[str, str | None],
    folder: Path | None,
) -> None:
    """index.html, summary.html (+ f1.png) and one page per image."""
    n = len(run.class_names)
    has_thumb = {i: problems.get(i) is None for i in ids}
    for j, image_id in enumerate(ids):
        cells = run.cells_of(image_id)
        scores = None
        if not run.image_scores.empty and image_id in run.image_scores.index:
            scores = run.image_scores.loc[image_id, list(run.class_names)].astype(float)
        neighbours = (ids[j - 1] if j > 0 else None, ids[j + 1] if j + 1 < len(ids) else None)
        html = image_page(
            image_id,
            cells,
            scores,
            tuple(run.predicted.get(image_id, ())),
            tuple(truth[image_id]) if truth is not None and image_id in truth else None,
            run.class_names,
            run.thresholds,
            neighbours,
            f"../overlays/{image_id}.png" if has_thumb[image_id] else None,
            problems.get(image_id),
        )
        write_text_atomic(root / "images" / f"{image_id}.html", html)

    calls = cell_calls(run.cells, run.class_names, run.thresholds)
    cell_counts = np.bincount(calls.loc[calls["top_class"] >= 0, "top_class"], minlength=n)
    table = chart = None
    meta = [
        ("prediction folder", str(run.root.resolve())),
        ("images folder", str(folder) if folder else "(unknown)"),
        ("images", str(len(ids))),
        ("cells", str(len(run.cells))),
        ("classes", str(n)),
        ("thresholds", run.method or "(method not recorded)"),
    ]
    index_meta = f"{len(ids)} images · {len(run.cells)} cells"
    if truth is not None:
        compared = [i for i in ids if i in truth]
        missing = len(ids) - len(compared)
        if missing:
            log.warning(
                "%d of %d predicted images have no truth in the labels; left out of the scores",
                missing,
                len(ids),
            )
        table = class_summary(
            {i: run.predicted.get(i, ()) for i in compared}, truth, run.class_names, run.thresholds
        )
        f1_chart_png(table, root / "f1.png")
        chart = "f1.png"
        macro = float(table["f1"].mean())
        meta += [("images with truth", str(len(compared))), ("macro F1 (all classes)", f"{macro:.4f}")]
        index_meta += f" · macro F1 {macro:.3f} over {len(compared)} images"
    write_text_atomic(
        root / "summary.html",
        summary_page(
            run.class_names, run.thresholds, run.predicted, cell_counts, table, meta, run.failures, chart
        ),
    )
    write_text_atomic(
        root / "index.html", index_page(ids, run.predicted, truth, run.class_names, has_thumb, index_meta)
    )
