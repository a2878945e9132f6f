"""``hpa segment``: segment every sample of a folder into a SEG_DIR (docs/artefacts.md).

Per image Id: ``cells/<Id>.png`` and ``nuclei/<Id>.png`` (uint16 labels) and
``tables/<Id>.parquet`` (its rows of the cells table), each written atomically, the
table last: an image is finished when all three exist, and a rerun skips it. At the end
every table is merged into ``cells.parquet``; ``config.yaml`` holds the resolved
settings and ``failures.csv`` the images that could not be read or segmented (one bad
image never stops the run).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hpa import runlog
from hpa.artefacts.provenance import Provenance, check_reuse, read_record, write_record
from hpa.artefacts.segdir import SegDir, source_signature
from hpa.config import default_workers, log_settings, resolve, to_dict
from hpa.errors import HPAConfigError
from hpa.io import (
    HPADataError,
    check_folder_ids,
    list_image_ids,
    read_id_list,
    remove_stale_temporaries,
)
from hpa.io_tiff import ChannelMap, check_channel_map
from hpa.outputs import check_apart, claim_entries
from hpa.parallel import process_pool
from hpa.segmentation import SegmentConfig
from hpa.segmentation.write import segment_and_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentSummary:
    """What a :func:`segment_folder` run did.

    Attributes:
        n_done: images segmented in this run.
        n_skipped: images already finished by an earlier run.
        n_failed: images that could not be read or segmented (see ``failures.csv``).
        seconds: wall time of the run.
    """

    n_done: int
    n_skipped: int
    n_failed: int
    seconds: float


def segment_one(
    images_dir: str | Path,
    out_dir: str | Path,
    image_id: str,
    config: SegmentConfig,
    channel_map: ChannelMap | None = None,
) -> tuple[str, int, str | None]:
    """Segment one image and write its files; never raises for a bad image.

    ``channel_map`` says which channel of a multi-channel TIFF is which (see
    :mod:`hpa.io_tiff`).

    Returns:
        ``(image_id, n_cells, error)``; ``error`` is None on success, else a message.
    """
    from hpa.io import read_sample

    try:
        image = read_sample(images_dir, image_id, channel_map)
        source = source_signature(images_dir, image_id)
        _, table = segment_and_write(image, out_dir, image_id, config, source)
        return image_id, len(table), None
    except (HPADataError, ValueError, TypeError, OSError, RuntimeError) as exc:
        return image_id, 0, f"{type(exc).__name__}: {exc}"


def _source_or_none(images_dir: str | Path, image_id: str) -> str | None:
    """The image's :func:`source_signature`; None when its files are missing (the worker
    then reports the image as failed, naming the file)."""
    try:
        return source_signature(images_dir, image_id)
    except (HPADataError, OSError):
        return None


#: One image to segment: images folder, SEG_DIR, Id, settings, channel map.
_Job = tuple[str, str, str, SegmentConfig, ChannelMap | None]


def _star(job: _Job) -> tuple[str, int, str | None]:
    return segment_one(*job)


def _segment_task(
    images_dir: str,
    out_dir: str,
    image_id: str,
    config: SegmentConfig,
    channel_map: ChannelMap | None = None,
) -> tuple[str, int, str | None]:
    """A Dask task: one image, on a worker that runs one task per thread."""
    import cv2

    cv2.setNumThreads(1)  # one image per task; OpenCV's threads would only compete
    return segment_one(images_dir, out_dir, image_id, config, channel_map)


def _run_on_cluster(
    jobs: list[_Job], scheduler: str, images_dir: Path, out_dir: Path
) -> Iterator[tuple[str, int, str | None]]:
    """Segment ``jobs`` on a Dask cluster; yield results as they complete.

    The workers write the files themselves, so ``out_dir`` is checked on each of them
    first. A task lost on the cluster (a worker killed three times while running it) is
    reported as that image's failure, like an unreadable image: a rerun retries it.
    Temporaries left by killed workers are removed once every task has ended.
    """
    from hpa.pipelines.cluster import as_completed_results, check_shared_folders, connect

    images_dir, out_dir = images_dir.resolve(), out_dir.resolve()  # workers may run elsewhere
    jobs = [(str(images_dir), str(out_dir), *job[2:]) for job in jobs]
    names = [job[2] for job in jobs]
    with connect(scheduler) as client:
        check_shared_folders(client, out_dir, readable=[images_dir])
        with closing(as_completed_results(client, _segment_task, jobs, names)) as results:
            for k, result, error in results:
                yield result if error is None else (names[k], 0, f"{type(error).__name__}: {error}")
    _remove_stray_temporaries(out_dir)


def _run(jobs: list[_Job], workers: int) -> Iterator[tuple[str, int, str | None]]:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _star(job)
        return
    with process_pool(workers, len(jobs)) as pool:
        yield from pool.map(_star, jobs, chunksize=1)


def _remove_stray_temporaries(out_dir: Path) -> None:
    """Remove the temporaries of killed runs (:func:`hpa.io.remove_stale_temporaries`)."""
    for sub in (*SegDir.SUBDIRS, "."):
        remove_stale_temporaries(out_dir / sub)


def check_same_settings(out_dir: str | Path, settings: dict[str, Any]) -> None:
    """Refuse to add masks made with other settings to a SEG_DIR that holds finished images.

    Raises:
        HPAConfigError: naming the SEG_DIR and each differing setting.
    """
    seg = SegDir(out_dir)
    if not seg.has_finished_images():
        return  # nothing finished yet: the settings are free to change
    diff = seg.settings_differences(settings)
    if diff:
        raise HPAConfigError(
            f"--out {out_dir}: holds masks made with other settings ({'; '.join(diff)}); "
            "use the same settings to resume, or another folder"
        )


def check_reusable(
    out_dir: str | Path, record: Provenance, settings: dict[str, Any], *, overwrite: bool
) -> None:
    """Let a run add to ``out_dir`` only when its finished images were made from the same inputs.

    Its settings must be the run's (:func:`check_same_settings`, naming each one); with a
    provenance record, the record must match ``record`` too (:func:`check_reuse`: the
    images, the channel map); for a folder written before records, a different images
    folder in its ``inputs.yaml`` is warned about. With ``overwrite``, a folder
    that does not match is cleared (:meth:`SegDir.clear`) instead.

    Raises:
        HPAConfigError: the folder does not match and ``overwrite`` is False.
    """
    seg = SegDir(out_dir)
    if not seg.has_finished_images():
        return  # nothing finished yet: inputs and settings are free to change
    if overwrite and seg.settings_differences(settings):
        log.info("%s: masks made with other settings; removing them (--overwrite)", out_dir)
        seg.clear()
        return
    check_same_settings(out_dir, settings)  # each setting named, recorded -> now
    if read_record(out_dir) is not None:
        if not check_reuse(out_dir, record, overwrite=overwrite):
            seg.clear()
        return
    log.info("%s: no provenance record (an older hpa wrote it); finished images kept", out_dir)
    before, now = seg.read_inputs().get("images"), record.inputs["images"][0].path
    if before and now and str(Path(before).resolve()) != now:
        log.warning(
            "%s: its masks were made from %s, not %s; use --overwrite if they differ", out_dir, before, now
        )


def segment_folder(
    images_dir: str | Path,
    out_dir: str | Path,
    ids: Sequence[str] | None = None,
    config: SegmentConfig | None = None,
    workers: int | None = None,
    progress: bool = True,
    scheduler: str | None = None,
    channel_map: ChannelMap | None = None,
    overwrite: bool = False,
) -> SegmentSummary:
    """Segment every sample of ``images_dir`` into the SEG_DIR ``out_dir``.

    Args:
        images_dir: folder of ``<Id>_<color>.png`` channel files.
        out_dir: SEG_DIR to write (created; finished images in it are skipped).
        ids: Ids to segment (default: every Id in ``images_dir``).
        config: settings (default ``SegmentConfig()``).
        workers: processes (default: CPU cores; the cellpose backend runs in-process).
        progress: show a tqdm progress bar.
        scheduler: send the images to a dask.distributed cluster instead of local
            processes: a scheduler address (``tcp://host:8786``) or ``local:N`` for a
            local cluster of N worker processes (``workers`` is then unused). The
            workers write into ``out_dir``, which must be on a filesystem they share.
        channel_map: which channel of a multi-channel TIFF is which
            (:mod:`hpa.io_tiff`); saved with the images folder in ``inputs.yaml``.
        overwrite: when ``out_dir`` holds masks of other images or settings, remove
            them (hpa's files only) and segment anew, instead of refusing.

    Returns:
        A :class:`SegmentSummary`; failures are listed in ``out_dir/failures.csv``.

    Raises:
        hpa.pipelines.cluster.ClusterError: with ``scheduler``, dask.distributed is not
            installed or a worker cannot see or write ``out_dir``.
        HPAConfigError: ``out_dir`` is, holds or sits inside ``images_dir``, or holds
            finished images segmented from other images or with other settings (its
            ``provenance.json`` differs) and ``overwrite`` is False.
    """
    start = time.perf_counter()
    config = config or SegmentConfig()
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    ids, workers = _check_run(images_dir, ids, config, workers, scheduler, channel_map)
    seg = _open_seg_dir(images_dir, out_dir, config, channel_map, overwrite)
    todo, n_skipped = _images_to_do(seg, images_dir, ids)
    jobs: list[_Job] = [(str(images_dir), str(out_dir), i, config, channel_map) for i in todo]
    results = _results(jobs, workers, scheduler, images_dir, out_dir)
    n_done, n_cells, failures = _collect(results, len(jobs), progress)
    seg.write_failures(failures)
    seg.merge_tables()
    # a killed run's worker may still have been ending when this run began (its temporary
    # was then a live process's, and kept): by now it has ended, so sweep again
    _remove_stray_temporaries(out_dir)
    summary = SegmentSummary(n_done, n_skipped, len(failures), time.perf_counter() - start)
    _log_summary(summary, n_cells, out_dir)
    return summary


def _log_summary(summary: SegmentSummary, n_cells: int, out_dir: Path) -> None:
    """Log what the run did, and where its failures are listed."""
    seconds = summary.seconds
    rate = summary.n_done / seconds if seconds > 0 else 0.0
    log.info(
        "segmented %d images (%d cells) in %.1f s (%.2f images/s), %d skipped, %d failed -> %s",
        summary.n_done, n_cells, seconds, rate, summary.n_skipped, summary.n_failed, out_dir,
    )  # fmt: skip
    if summary.n_failed:
        log.warning("%d image(s) failed; see %s", summary.n_failed, out_dir / SegDir.FAILURES)


def _results(
    jobs: list[_Job], workers: int, scheduler: str | None, images_dir: Path, out_dir: Path
) -> Iterator[tuple[str, int, str | None]]:
    """The jobs' results as they come: from local processes, or from the cluster of
    ``scheduler`` (none started when there is nothing to do)."""
    if scheduler is None:
        return _run(jobs, min(workers, max(len(jobs), 1)))
    if jobs:
        return _run_on_cluster(jobs, scheduler, images_dir, out_dir)
    return iter(())


def _check_run(
    images_dir: Path,
    ids: Sequence[str] | None,
    config: SegmentConfig,
    workers: int | None,
    scheduler: str | None,
    channel_map: ChannelMap | None,
) -> tuple[list[str], int]:
    """Check what a run needs before it writes anything: the images folder, its channel
    map and file names, dask.distributed for a ``scheduler``, the cellpose weights.

    Returns:
        ``(ids, workers)``: the Ids to segment (default: every Id of the folder) and the
        processes (one for the cellpose backend, which runs in-process).
    """
    if not images_dir.is_dir():
        raise NotADirectoryError(f"{images_dir}: image folder not found")
    check_channel_map(images_dir, channel_map)
    ids = list(ids) if ids is not None else list_image_ids(images_dir)
    check_folder_ids(images_dir, ids)  # bad or ambiguous file names fail before any work
    if scheduler is not None:
        from hpa.pipelines.cluster import parse_local, require_distributed

        require_distributed()  # fail before writing anything
        parse_local(scheduler)
    workers = workers or default_workers()
    if config.backend == "cellpose" and workers > 1 and scheduler is None:
        log.info("cellpose backend: segmenting in-process (one model per device), not %d workers", workers)
        workers = 1
    if config.backend == "cellpose" and scheduler is None:
        from hpa.segmentation.cellpose_backend import check_models

        check_models(config)  # a missing or foreign weights file fails before any work
    return ids, workers


def _open_seg_dir(
    images_dir: Path, out_dir: Path, config: SegmentConfig, channel_map: ChannelMap | None, overwrite: bool
) -> SegDir:
    """Claim ``out_dir`` for this run (refusing one of other inputs unless ``overwrite``)
    and write what it is made from: provenance record, run log, settings, inputs."""
    check_apart(out_dir, {"IMAGES": images_dir})
    claim_entries(out_dir, SegDir.ENTRIES, "hpa segment")  # never a user's config.yaml or masks
    record = SegDir.record(
        images_dir, to_dict(config), channel_map.spec if channel_map else None, "hpa segment"
    )
    check_reusable(out_dir, record, to_dict(config), overwrite=overwrite)
    seg = SegDir(out_dir)
    seg.create()
    write_record(out_dir, record)  # before any mask: what the folder's finished images are made from
    runlog.write_into(out_dir)  # appended to by a resumed run
    _remove_stray_temporaries(out_dir)
    seg.write_settings(to_dict(config))
    seg.write_inputs(images_dir, channel_map.spec if channel_map else None)  # for viewers: hpa.interop.napari
    return seg


def _images_to_do(seg: SegDir, images_dir: Path, ids: list[str]) -> tuple[list[str], int]:
    """The Ids not finished from their current files, and how many are skipped."""
    todo = [i for i in ids if not seg.is_finished(i, _source_or_none(images_dir, i))]
    n_skipped = len(ids) - len(todo)
    if n_skipped:
        log.info("%d of %d images already finished, skipping them", n_skipped, len(ids))
    changed = [i for i in todo if seg.is_finished(i)]
    if changed:
        log.info("%d finished image(s) changed in %s since (e.g. %s): segmenting them again",
                 len(changed), images_dir, changed[0])  # fmt: skip
    return todo, n_skipped


def _collect(
    results: Iterator[tuple[str, int, str | None]], total: int, progress: bool
) -> tuple[int, int, list[tuple[str, str]]]:
    """Count the images segmented and their cells, and list the failures (each logged).

    Returns:
        ``(n_done, n_cells, [(image_id, error)])``.
    """
    failures: list[tuple[str, str]] = []
    n_done = n_cells = 0
    with tqdm(total=total, unit="img", desc="segment", disable=not progress) as bar:
        for image_id, n, error in results:
            if error is None:
                n_done += 1
                n_cells += n
            else:
                failures.append((image_id, error))
                log.warning("%s: %s", image_id, error)
            bar.update(1)
    return n_done, n_cells, failures


def resolve_segment_config(args: argparse.Namespace) -> SegmentConfig:
    """The run's :class:`SegmentConfig`: defaults, then ``--config`` YAML, then explicit flags."""
    return resolve(
        SegmentConfig,
        args.config,
        backend=args.backend,
        cellpose_model=args.cellpose_model,
        cellpose_nuclei_model=args.cellpose_nuclei_model,
        cellpose_device=args.device,
    )


def main(args: argparse.Namespace) -> int:
    """Entry point of ``hpa segment``; returns the exit status.

    0 when at least one image is segmented (or already was), 1 when every image failed
    or there was none.
    """
    config = resolve_segment_config(args)
    log_settings("segmentation settings", to_dict(config))
    ids = read_id_list(args.ids) if args.ids else None
    summary = segment_folder(
        args.images,
        args.out,
        ids=ids,
        config=config,
        workers=args.workers,
        scheduler=getattr(args, "scheduler", None),
        channel_map=getattr(args, "channel_map", None),
        overwrite=getattr(args, "overwrite", False),
    )
    if summary.n_done + summary.n_skipped == 0:
        log.error("no image was segmented (%d failed)", summary.n_failed)
        return 1
    return 0
