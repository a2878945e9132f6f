"""``hpa show`` and ``hpa report``: pictures and an HTML report of a prediction run.

``hpa show IMAGES --pred PRED_DIR`` writes one overlay PNG per image (default
``PRED_DIR/overlays/<Id>.png``); ``hpa report PRED_DIR`` writes a static HTML report
(default ``PRED_DIR/report/``). Both read the artefacts of ``docs/artefacts.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from hpa.io import HPADataError, check_image_id, write_png
from hpa.outputs import check_apart, claim_entries
from hpa.visualization.classes import image_title
from hpa.visualization.composite import parse_channels
from hpa.visualization.overlay import render_overlay
from hpa.visualization.preddir import PredictionRun, load_prediction_run
from hpa.visualization.report import write_report
from hpa.visualization.summary import read_truth

if TYPE_CHECKING:
    from hpa.io_tiff import ChannelMap

log = logging.getLogger(__name__)


def _truth(path: str | None, run: PredictionRun) -> dict[str, tuple[int, ...]] | None:
    if not path:
        return None
    try:
        return read_truth(path, run.class_names)
    except ValueError as exc:  # HPADataError is a ValueError too
        raise HPADataError(str(exc)) from exc


def _ids(requested: Sequence[str] | None, run: PredictionRun) -> list[str]:
    if not requested:
        return list(run.ids)
    ids = [check_image_id(i) for i in requested]
    unknown = [i for i in ids if i not in run.predicted]
    if unknown:
        log.warning("%d Id(s) not in %s/submission.csv, drawn without predictions: %s",
                    len(unknown), run.root, ", ".join(unknown[:5]))  # fmt: skip
    return ids


def draw_overlays(
    run: PredictionRun,
    ids: Sequence[str],
    out: str | Path,
    *,
    images_dir: str | Path | None = None,
    channels: str = "rgby",
    truth: Mapping[str, Sequence[int]] | None = None,
) -> list[Path]:
    """Write ``out/<Id>.png`` for each Id; an image that fails is logged and skipped.

    Args:
        run: the prediction run.
        ids: Ids to draw.
        out: output folder.
        images_dir: folder of channel files; default: the one in the run's config.
        channels: channels of the composite, letters from ``"rgby"``.
        truth: true class numbers per Id, shown in the title.

    Returns:
        Paths of the files written.
    """
    out = Path(out)
    folder = Path(images_dir) if images_dir is not None else None
    written = []
    for image_id in tqdm(ids, desc="show", unit="image"):
        try:
            image, cells = run.load(image_id, folder)
            true = truth.get(image_id) if truth is not None else None
            title = image_title(image_id, run.predicted.get(image_id, ()), run.class_names, true)
            figure = render_overlay(
                image,
                cells,
                run.cells_of(image_id),
                run.class_names,
                run.thresholds,
                title=title,
                channels=channels,
            )
            path = out / f"{image_id}.png"
            write_png(path, figure)
            written.append(path)
        except (HPADataError, ValueError, OSError) as exc:
            log.error("Id %s: skipped (%s)", image_id, exc)
    return written


def show_main(args: argparse.Namespace) -> tuple[int, str]:
    """Handler of ``hpa show``: one overlay PNG per image.

    Args:
        args: ``images``, ``pred``, ``id`` (list or None), ``out``, ``channels``,
            ``labels``.

    Returns:
        0 if every image was drawn, 1 if any was skipped (or none was drawn).
    """
    try:
        parse_channels(args.channels)
    except ValueError as exc:
        raise HPADataError(str(exc)) from exc
    run = _with_channel_map(
        load_prediction_run(args.pred, getattr(args, "scheme", "2018")), getattr(args, "channel_map", None)
    )
    ids = _ids(args.id, run)
    run.check_masks(args.images)  # the overlays draw these masks on IMAGES
    out = Path(args.out) if args.out else run.root / "overlays"
    check_apart(out, {"IMAGES": args.images, "--pred": args.pred}, may_sit_inside=("--pred",))
    claim_entries(out, [f"{image_id}.png" for image_id in ids], "hpa show")
    written = draw_overlays(
        run, ids, out, images_dir=args.images, channels=args.channels, truth=_truth(args.labels, run)
    )
    text = f"wrote {len(written)} of {len(ids)} overlays to {out}"
    return (0 if written and len(written) == len(ids) else 1), text


def _with_channel_map(run: PredictionRun, channel_map: ChannelMap | None) -> PredictionRun:
    """The run, reading its images with ``channel_map`` when given (else the run's own)."""
    return run if channel_map is None else dataclasses.replace(run, channel_map=channel_map)


def make_report(
    pred: str | Path,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    out: str | Path | None = None,
    *,
    channel_map: ChannelMap | None = None,
    scheme: str = "2018",
    workers: int | None = None,
) -> Path:
    """Write the HTML report of a prediction run; returns the path of its ``index.html``.

    ``workers`` processes draw the overlays (None: the CPU cores).

    ``channel_map`` (:class:`hpa.io_tiff.ChannelMap`) overrides the one the run used.
    ``scheme="2021"`` reports the run's 2021 per-cell labels (``hpa predict --format
    2021|both``); ``labels`` is then a 2021 label file.
    """
    run = _with_channel_map(load_prediction_run(pred, scheme), channel_map)
    if images is None and run.images_dir is None:
        log.warning("%s/config.yaml names no images folder and no images were given: no overlays", run.root)
    run.check_masks(images)
    target = Path(out) if out else run.root / "report"
    return Path(
        write_report(
            run,
            target,
            images_dir=images,
            truth=_truth(str(labels) if labels else None, run),
            workers=workers,
        )
    )


def report_main(args: argparse.Namespace) -> tuple[int, str]:
    """Handler of ``hpa report``: the static HTML report of a prediction run.

    Args:
        args: ``pred``, ``images`` (or None: from the run's config), ``labels``,
            ``out`` (or None: ``PRED_DIR/report``).

    Returns:
        0 on success.
    """
    index = make_report(
        args.pred,
        args.images,
        args.labels,
        args.out,
        channel_map=getattr(args, "channel_map", None),
        scheme=getattr(args, "scheme", "2018"),
    )
    return 0, f"wrote the report to {index}"
