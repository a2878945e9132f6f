"""``hpa export PRED_DIR --to FORMAT --out DIR``: a run for QuPath, napari, Fiji, R.

``geojson`` writes ``DIR/<Id>.geojson`` (one FeatureCollection of cells per image,
:mod:`hpa.interop.geojson`) and ``imagej-roi`` ``DIR/<Id>_rois.zip`` (one ImageJ ROI per
cell, :mod:`hpa.interop.imagej`); they need the run's masks only. ``ome-zarr`` writes
``DIR/<Id>.ome.zarr`` (image and cell labels, :mod:`hpa.interop.omezarr`) and
``ome-tiff`` ``DIR/<Id>.ome.tif`` (the image, :mod:`hpa.interop.ometiff`); they also read
the images, from the folder in ``PRED_DIR/config.yaml`` or ``--images``. An image that
fails is logged and the others go on. ``csv`` writes the run's per-cell table, the rows
of the exported Ids, as ``DIR/cell_predictions.csv``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from hpa.artefacts import PredDir, SegDir
from hpa.artefacts.provenance import RECORD_FILE, Provenance, claim_record, folder_fingerprint
from hpa.errors import HPADataError
from hpa.io import check_image_id, read_label_image, write_text_atomic
from hpa.outputs import check_apart, claim_entries
from hpa.visualization.preddir import PredictionRun, default_scheme, load_prediction_run

if TYPE_CHECKING:
    from hpa.io_tiff import ChannelMap

log = logging.getLogger(__name__)

FORMATS = ("geojson", "ome-zarr", "imagej-roi", "csv", "ome-tiff")
#: File written by ``--to csv``.
CSV_NAME = "cell_predictions.csv"
#: The name of an image's export in each format (``--to csv`` writes :data:`CSV_NAME`).
ENTRY_NAMES = {
    "geojson": "{}.geojson",
    "ome-zarr": "{}.ome.zarr",
    "imagej-roi": "{}_rois.zip",
    "ome-tiff": "{}.ome.tif",
}
#: The way out of an export folder that holds another run's export.
EXPORT_WAY_OUT = "use another --out (or delete that folder's files to export there anew)"


def entry_names(to: str, ids: Sequence[str]) -> list[str]:
    """The names ``--to`` writes in the export folder for ``ids``, with its record.

    >>> entry_names("imagej-roi", ["a", "b"])
    ['a_rois.zip', 'b_rois.zip', 'provenance.json']
    >>> entry_names("csv", ["a"])
    ['cell_predictions.csv', 'provenance.json']
    """
    names = [CSV_NAME] if to == "csv" else [ENTRY_NAMES[to].format(image_id) for image_id in ids]
    return [*names, RECORD_FILE]


def export_record(run: PredictionRun, scheme: str) -> Provenance:
    """What an export folder is made from: the prediction run (its folder and record) and
    the cell labels' scheme. Every format may share one folder (GeoJSON beside its OME-TIFF)."""
    return Provenance("export", "hpa export", {"scheme": scheme}, {"pred": (folder_fingerprint(run.root),)})


def export_image(
    run: PredictionRun, image_id: str, to: str, out: Path, images_dir: Path | None = None
) -> Path:
    """Export one image of a run; returns the path written.

    Raises:
        HPADataError: its mask or image is missing or unreadable, or they differ in size.
    """
    table = run.cells_of(image_id)
    if to == "imagej-roi":
        from hpa.interop.imagej import cell_rois, write_roi_zip

        cells = _read_mask(run, image_id)
        rois = cell_rois(cells, table, run.class_names, run.thresholds)
        return write_roi_zip(out / ENTRY_NAMES[to].format(image_id), rois)
    if to == "ome-tiff":
        from hpa.interop.ometiff import write_ome_tiff

        image, _ = run.load(image_id, images_dir)
        return write_ome_tiff(out / ENTRY_NAMES[to].format(image_id), image)
    if to == "geojson":
        from hpa.interop.geojson import cell_features, write_geojson

        cells = _read_mask(run, image_id)
        nuclei_path = SegDir(run.mask_path(image_id).parent.parent).nucleus_mask(image_id)
        nuclei = read_label_image(nuclei_path) if nuclei_path.is_file() else None
        path = out / ENTRY_NAMES[to].format(image_id)
        write_geojson(path, cell_features(cells, table, run.class_names, run.thresholds, nuclei))
        return path
    from hpa.interop.omezarr import write_ome_zarr

    image, cells = run.load(image_id, images_dir)
    return write_ome_zarr(
        out / ENTRY_NAMES["ome-zarr"].format(image_id), image, cells, table, run.class_names, run.thresholds
    )


def _read_mask(run: PredictionRun, image_id: str) -> np.ndarray:
    mask = run.mask_path(image_id)
    if not mask.is_file():
        raise HPADataError(f"{mask}: no cell mask for Id {image_id}")
    return read_label_image(mask)


def export_table(run: PredictionRun, ids: Sequence[str], out: Path) -> Path:
    """Write the per-cell table of ``ids`` as ``out/cell_predictions.csv``; returns its path.

    The columns of ``cell_predictions.parquet`` unchanged, floats at full precision, an
    empty ``predicted`` for a cell with no class over threshold.
    """
    table = run.cells[run.cells["image_id"].isin(set(ids))]
    path = out / CSV_NAME
    write_text_atomic(path, table.to_csv(index=False))
    return path


def export_run(
    pred_dir: str | Path,
    to: str,
    out: str | Path,
    *,
    ids: Sequence[str] | None = None,
    images_dir: str | Path | None = None,
    channel_map: ChannelMap | None = None,
    scheme: str | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """Export the images of a prediction run.

    Args:
        pred_dir: PRED_DIR written by ``hpa predict``.
        to: one of :data:`FORMATS`.
        out: output folder.
        ids: Ids to export (default: every Id of the run).
        images_dir: folder of the images (default: the run's); ``ome-zarr`` and
            ``ome-tiff`` only.
        channel_map: :class:`hpa.io_tiff.ChannelMap` overriding the run's own.
        scheme: the cell labels exported, as :func:`load_prediction_run`; default
            ``"2018"``, or ``"2021"`` for a run written with ``--format 2021`` only.

    Returns:
        ``(paths written, Id -> error of the images that failed)``.
    """
    if to not in FORMATS:
        raise HPADataError(f"--to {to!r}: expected one of {', '.join(FORMATS)}")
    if to == "ome-zarr":
        from hpa.interop.omezarr import require_zarr

        require_zarr()  # one clear error before any image
    scheme = scheme or default_scheme(pred_dir)
    run = load_prediction_run(pred_dir, scheme)
    if channel_map is not None:
        import dataclasses

        run = dataclasses.replace(run, channel_map=channel_map)
    ids = [check_image_id(i) for i in ids] if ids else list(run.ids)
    out = Path(out)
    if to != "csv":  # the run's masks are exported with (or as drawn on) its images
        run.check_masks(images_dir, flag="PRED_DIR")
    # an export is an output of its own kind: it may sit inside PRED_DIR (pred/geojson), never
    # be PRED_DIR, nor be or sit inside what is read (the masks, the images)
    masks = run.masks_dir if run.masks_dir is not None else PredDir(run.root).path(PredDir.MASKS)
    check_apart(
        out,
        {
            "PRED_DIR": pred_dir,
            "the run's masks": masks,
            "--images": images_dir,
            "the run's images": run.images_dir,
        },
        may_sit_inside=("PRED_DIR",),
    )
    claim_entries(out, entry_names(to, ids), "hpa export")
    claim_record(out, export_record(run, scheme), way_out=EXPORT_WAY_OUT)  # one run's exports per folder
    folder = Path(images_dir) if images_dir is not None else None
    if to == "csv":
        return [export_table(run, ids, out)], {}
    written, failed = [], {}
    for image_id in tqdm(ids, desc=f"export {to}", unit="img"):
        try:
            written.append(export_image(run, image_id, to, out, folder))
        except (HPADataError, ValueError, OSError) as exc:
            failed[image_id] = str(exc)
            log.error("Id %s: not exported (%s)", image_id, exc)
    return written, failed


def main(args: argparse.Namespace) -> tuple[int, str]:
    """Handler of ``hpa export``: 0 when every image was exported."""
    written, failed = export_run(
        args.pred,
        args.to,
        args.out,
        ids=args.id,
        images_dir=args.images,
        channel_map=getattr(args, "channel_map", None),
        scheme=getattr(args, "scheme", None),
    )
    text = f"exported {len(written)} image(s) as {args.to} to {args.out}"
    if args.to == "csv":
        text = f"exported the per-cell table to {written[0]}"
    if failed:
        text += f"; {len(failed)} failed"
    return (0 if written and not failed else 1), text
