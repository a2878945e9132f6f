"""``hpa predict``: score every cell, pool to image labels, write the submission.

Worker processes read each image, segment it (or load its masks) and cut its crops and
tiles while the main process runs the classifier on the views the workers have
already prepared, so both stay busy. Views of several images are scored together to
fill batches. Every requested Id gets a row in the submission, in the requested order:
an image that fails to read gets an empty prediction and a line in ``failures.csv``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa import runlog
from hpa.artefacts import PredDir, SegDir, read_failures, write_csv, write_failures, write_parquet
from hpa.artefacts.tables import image_score_table, split_views
from hpa.config import default_workers, log_settings, resolve, save_yaml
from hpa.errors import HPAConfigError
from hpa.io import HPADataError, check_folder_ids, list_image_ids, read_id_list
from hpa.io_tiff import check_channel_map
from hpa.outputs import StagedFolder, check_apart
from hpa.parallel import process_pool
from hpa.pipelines.predict_config import PredictConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictSummary:
    """What a prediction run did."""

    n_images: int
    n_failed: int
    n_cells: int
    seconds: float
    out: Path

    @property
    def images_per_s(self) -> float:
        return self.n_images / max(self.seconds, 1e-9)


# ------------------------------------------------------------------ worker side ---


def _prepare(task: tuple[str, str, str, Any, Any, Any]) -> Any:
    """Read, segment (or load masks) and cut the views of one image, in a worker."""
    from hpa.artefacts.segdir import load_or_segment
    from hpa.classification.cache import image_views
    from hpa.io import read_sample

    images_dir, masks_dir, image_id, crop, seg_config, channel_map = task
    try:
        image = read_sample(images_dir, image_id, channel_map)
        if seg_config is None:
            cells, table = SegDir(masks_dir).read_cells(image_id), None
        else:  # the same files as hpa segment (resuming an interrupted run): OUT/masks is a SEG_DIR
            cells, table = load_or_segment(image, masks_dir, image_id, seg_config)
        return image_views(image, cells, image_id, crop), table
    except (HPADataError, OSError, ValueError, TypeError) as exc:
        return image_id, f"{type(exc).__name__}: {exc}"


def _prepared(tasks: list[tuple[str, str, str, Any, Any, Any]], workers: int) -> Iterator[Any]:
    """Prepared views of ``tasks`` in order, made ahead of the classifier.

    One worker is a thread (reading, decoding and resizing release the GIL, so it
    overlaps the model's forward passes without a process to start); more are processes.
    At most ``8 * workers`` images wait, so memory stays bounded however long the run.
    """
    pool: Executor = ThreadPoolExecutor(1) if workers <= 1 else process_pool(workers, len(tasks))
    with pool:
        pending: deque[Future] = deque()
        queue = iter(tasks)
        for task in itertools.islice(queue, 8 * max(workers, 1)):
            pending.append(pool.submit(_prepare, task))
        while pending:
            result = pending.popleft().result()
            for task in itertools.islice(queue, 1):
                pending.append(pool.submit(_prepare, task))
            yield result


# -------------------------------------------------------------------- main side ---


@dataclass
class ScoredViews:
    """Class probabilities of every view of a set of images.

    Attributes:
        index: one row per view (:func:`hpa.classification.cache.views_index`).
        probs: ``(len(index), K)`` float32 probabilities.
        failures: ``image_id -> error`` for images that could not be read or segmented.
        seg_tables: per-cell segmentation tables of images segmented on the fly.
    """

    index: pd.DataFrame
    probs: np.ndarray
    failures: dict[str, str]
    seg_tables: list[pd.DataFrame]


def score_images(
    model: Any,
    cfg: Any,
    images: str | Path,
    ids: Sequence[str],
    masks_dir: Path,
    seg_config: Any = None,
    device: str = "cpu",
    workers: int = 1,
    batch_size: int = 128,
    tta: int = 1,
    progress: bool = True,
    precision: str = "auto",
    channel_map: Any = None,
) -> ScoredViews:
    """Score every cell and tile of ``ids``; segment on the fly when ``seg_config`` is given.

    Workers prepare views while this process runs the model on full batches.
    ``channel_map`` (:class:`hpa.io_tiff.ChannelMap`) is for multi-channel TIFF input.
    """
    from hpa.classification.cache import views_index
    from hpa.classification.channels import channel_matrix, is_identity
    from hpa.classification.inference import score_views

    tasks = [(str(images), str(masks_dir), i, cfg.crop, seg_config, channel_map) for i in ids]
    failures: dict[str, str] = {}
    index_parts: list[pd.DataFrame] = []
    prob_parts: list[np.ndarray] = []
    seg_tables: list[pd.DataFrame] = []
    pending: list[Any] = []
    # the model's inputs from the four stains: a choice, an order or a merge of them
    mix = None if is_identity(cfg.channels) else channel_matrix(cfg.channels)

    def flush() -> None:
        if not pending:
            return
        per_image = [np.concatenate([v.crops, v.tiles]) for v in pending]
        sizes = [len(v) for v in per_image]
        probs = np.empty((sum(sizes), cfg.num_classes), np.float32)
        starts = np.cumsum([0, *sizes])
        # 8- and 16-bit images are scaled by their own range: views of one bit depth
        # are scored together (np.concatenate of both would promote 8-bit views to uint16)
        for dtype in sorted({v.dtype.str for v in per_image}):
            members = [k for k, v in enumerate(per_image) if v.dtype.str == dtype]
            scored = score_views(
                model,
                np.concatenate([per_image[k] for k in members]),
                cfg.mean,
                cfg.std,
                float(np.iinfo(np.dtype(dtype)).max),
                device=device,
                batch_size=batch_size,
                tta=tta,
                precision=precision,
                mix=mix,
                intensity=cfg.intensity,
                size=cfg.network_size,
            )
            offset = 0
            for k in members:
                probs[starts[k] : starts[k + 1]] = scored[offset : offset + sizes[k]]
                offset += sizes[k]
        prob_parts.append(probs)
        index_parts.extend(views_index(v) for v in pending)
        pending.clear()

    n_pending = 0
    bar = tqdm(
        _prepared(tasks, workers), total=len(tasks), desc="predicting", unit="img", disable=not progress
    )
    for item in bar:
        if isinstance(item[0], str):
            image_id, error = item
            log.warning("Id %s failed: %s", image_id, error)
            failures[image_id] = error
            continue
        views, table = item
        if table is not None:
            seg_tables.append(table)
        pending.append(views)
        n_pending += len(views.cell_ids) + len(views.tiles)
        if n_pending >= batch_size * 4:
            flush()
            n_pending = 0
    flush()
    index = pd.concat(index_parts, ignore_index=True) if index_parts else _empty_index()
    probs = np.concatenate(prob_parts) if prob_parts else np.zeros((0, cfg.num_classes), np.float32)
    return ScoredViews(index, probs, failures, seg_tables)


def _empty_index() -> pd.DataFrame:
    return pd.DataFrame({"image_id": [], "kind": [], "cell_id": []})


def write_predictions(
    out: Path,
    ids: Sequence[str],
    scored: ScoredViews,
    cfg: Any,
    thresholds: np.ndarray,
    pooling: str,
    fill_top: bool,
    submission: bool = True,
) -> int:
    """Pool, threshold and write the submission and the tables of a prediction run.

    Args:
        submission: write the 2018-style ``submission.csv`` (False for ``--format 2021``).

    Returns:
        The number of cells scored.
    """
    from hpa.aggregation import apply_thresholds, save_thresholds, write_submission
    from hpa.classification.inference import pool_views

    index, probs, failures = scored.index, scored.probs, scored.failures
    scores = pool_views(index, probs, ids, pooling, cfg.tile_weight, cfg.use_cells, cfg.use_tiles)
    failed_rows = np.array([i in failures for i in ids], dtype=bool)
    scores[failed_rows] = 0.0
    y_pred = apply_thresholds(scores, thresholds, fill_top=fill_top)
    y_pred[failed_rows] = 0

    pred = PredDir(out)
    if submission:
        write_submission(pred.path(PredDir.SUBMISSION), ids, y_pred)
    write_csv(pred.path(PredDir.IMAGE_SCORES), image_score_table(ids, scores, cfg.class_names))
    cells, tiles = split_views(index, probs, cfg.class_names)
    called = apply_thresholds(cells[list(cfg.class_names)].to_numpy(), thresholds, fill_top=False)
    cells["predicted"] = [" ".join(map(str, np.flatnonzero(r))) for r in called]
    write_parquet(pred.path(PredDir.CELLS), cells)
    write_parquet(pred.path(PredDir.TILES), tiles)
    save_thresholds(pred.path(PredDir.THRESHOLDS), thresholds, cfg.class_names)
    write_failures(pred.path(PredDir.FAILURES), failures)
    return len(cells)


# ----------------------------------------------------------------- Dask cluster ---

#: The marker file of a prediction folder, and every name ``hpa predict`` (and ``hpa show``
#: and ``hpa report`` by default) writes in it: only such a folder is ever replaced.
PREDICT_MARKER = PredDir.MARKER
PREDICT_ENTRIES = PredDir.ENTRIES

# (model folder, weights mtime, device) -> (model, config): a worker process loads its model once
_MODEL_CACHE: dict[tuple[str, int, str], tuple[Any, Any]] = {}


def _cached_model(model_dir: str, device: str) -> tuple[Any, Any]:
    from hpa.classification.model import WEIGHTS_FILE, load_model

    key = (model_dir, (Path(model_dir) / WEIGHTS_FILE).stat().st_mtime_ns, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # one model per worker process: a retrained folder replaces it
        _MODEL_CACHE[key] = load_model(model_dir, device)
    return _MODEL_CACHE[key]


def _shard_paths(parts_dir: str | Path, k: int) -> dict[str, Path]:
    parts_dir = Path(parts_dir)
    return {
        "scores": parts_dir / f"shard-{k}.parquet",
        "failures": parts_dir / f"shard-{k}.failures.csv",
        "cells": parts_dir / f"shard-{k}.cells.parquet",
    }


def _score_shard(
    model_dir: str,
    images: str,
    masks_dir: str,
    seg_config: Any,
    ids: list[str],
    k: int,
    parts_dir: str,
    device: str,
    batch_size: int | None,
    tta: int,
    precision: str = "auto",
    channel_map: Any = None,
) -> str:
    """A Dask task: score one shard of Ids on this worker's device; write its part files.

    Writes ``shard-<k>.failures.csv``, ``shard-<k>.cells.parquet`` (segmented on the fly
    only) and last ``shard-<k>.parquet``: the :func:`views_index` columns and one
    probability column per class. Returns the device used.
    """
    from hpa.config import resolve_device

    device = resolve_device(device)
    model, cfg = _cached_model(model_dir, device)
    batch_size = batch_size or (512 if device == "cuda" else 128)
    scored = score_images(
        model,
        cfg,
        images,
        ids,
        Path(masks_dir),
        seg_config,
        device,
        1,
        batch_size,
        tta,
        progress=False,
        precision=precision,
        channel_map=channel_map,
    )
    paths = _shard_paths(parts_dir, k)
    write_failures(paths["failures"], scored.failures)
    if scored.seg_tables:
        write_parquet(paths["cells"], pd.concat(scored.seg_tables, ignore_index=True))
    probs = pd.DataFrame(scored.probs, columns=list(cfg.class_names))
    write_parquet(paths["scores"], pd.concat([scored.index.reset_index(drop=True), probs], axis=1))
    return device


def merge_shards(parts_dir: str | Path, n_shards: int, class_names: Sequence[str]) -> ScoredViews:
    """Read the part files of shards ``0 .. n_shards - 1`` back into one :class:`ScoredViews`.

    Shards hold consecutive Ids, so concatenating them in shard order gives the views,
    failures and segmentation tables in the order of a single-process run.
    """
    columns = list(class_names)
    frames: list[pd.DataFrame] = []
    seg_tables: list[pd.DataFrame] = []
    failures: dict[str, str] = {}
    for k in range(n_shards):
        paths = _shard_paths(parts_dir, k)
        table = pd.read_parquet(paths["scores"])
        if len(table):
            frames.append(table)
        failures.update(read_failures(paths["failures"]))
        if paths["cells"].is_file():
            seg_tables.append(pd.read_parquet(paths["cells"]))
    if not frames:
        return ScoredViews(_empty_index(), np.zeros((0, len(columns)), np.float32), failures, seg_tables)
    table = pd.concat(frames, ignore_index=True)
    probs = table[columns].to_numpy(np.float32)
    return ScoredViews(table.drop(columns=columns), probs, failures, seg_tables)


def _score_on_cluster(
    scheduler: str,
    model_dir: Path,
    class_names: Sequence[str],
    images: Path,
    ids: list[str],
    masks_dir: Path,
    seg_config: Any,
    device: str,
    batch_size: int | None,
    tta: int,
    out: Path,
    progress: bool,
    precision: str = "auto",
    channel_map: Any = None,
) -> ScoredViews:
    """Score ``ids`` in shards on a Dask cluster, each worker on its own device.

    Shard parts go to a folder ``parts-<run>`` made by this run in ``out`` (the staged
    prediction folder), removed once they are merged; a failed shard stops the run and
    leaves the parts for inspection until the next run into the same folder.

    Raises:
        hpa.pipelines.cluster.ClusterError: a worker cannot see the folders, or a shard
            was lost on the cluster.
    """
    import shutil

    from hpa.pipelines.cluster import (
        ClusterError,
        as_completed_results,
        check_shared_folders,
        connect,
        split_shards,
        worker_addresses,
    )

    parts = out / f"parts-{uuid.uuid4().hex[:12]}"  # this run's own: nothing else is ever removed
    parts.mkdir(parents=True)
    readable = [images, model_dir] + ([masks_dir] if seg_config is None else [])
    with connect(scheduler) as client:
        check_shared_folders(client, out, readable)
        shards = split_shards(ids, len(worker_addresses(client)))
        log.info("scoring %d images in %d shards on %s", len(ids), len(shards), scheduler)
        jobs = [
            (
                str(model_dir),
                str(images),
                str(masks_dir),
                seg_config,
                shard,
                k,
                str(parts),
                device,
                batch_size,
                tta,
                precision,
                channel_map,
            )
            for k, shard in enumerate(shards)
        ]
        devices: set[str] = set()
        names = [str(k) for k in range(len(jobs))]
        bar = tqdm(total=len(ids), desc="predicting", unit="img", disable=not progress)
        with bar, closing(as_completed_results(client, _score_shard, jobs, names)) as done:
            for k, used, error in done:
                if error is not None:
                    raise ClusterError(
                        f"shard {k} (Ids {shards[k][0]} .. {shards[k][-1]}) was lost on the cluster: "
                        f"{type(error).__name__}: {error}; its finished neighbours are in {parts}"
                    )
                devices.add(used)
                bar.update(len(shards[k]))
    log.info("shards scored on: %s", ", ".join(sorted(devices)) or "nothing")
    scored = merge_shards(parts, len(shards), class_names)
    shutil.rmtree(parts)
    return scored


def predict_folder(
    images: str | Path,
    model_dir: str | Path | Sequence[str | Path],
    out: str | Path,
    masks: str | Path | None = None,
    ids: Sequence[str] | None = None,
    tta: int = 1,
    pooling: str | None = None,
    fill_top: bool = True,
    batch_size: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    backend: str | None = None,
    progress: bool = True,
    scheduler: str | None = None,
    precision: str = "auto",
    channel_map: Any = None,
    fmt: str | None = None,
    cell_score: str | None = None,
    min_cell_score: float | None = None,
    model_weights: Sequence[float] | None = None,
) -> PredictSummary:
    """Predict image labels and per-cell scores for a folder of images.

    Args:
        images: folder of channel files.
        model_dir: model folder of ``hpa train-cells``, or several whose probabilities
            are averaged (:func:`hpa.classification.ensemble.load_predictor`); a
            ``--folds`` folder averages its folds.
        out: PRED_DIR to write.
        masks: SEG_DIR of ``hpa segment``; None = segment on the fly into ``OUT/masks``.
        ids: Ids in submission order (default: every Id in ``images``, sorted).
        tta: dihedral test-time augmentation views (1, 2, 4, 8).
        pooling: cell-to-image pooling (default: the model's).
        fill_top: predict the top class where no class passes its threshold.
        batch_size: views per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        workers: processes reading, segmenting and cropping.
        backend: segmentation backend when ``masks`` is None; the other segmentation
            settings are those of the model's training masks
            (:func:`hpa.pipelines.predict_config.model_segmentation`); None = their backend too.
        progress: show a tqdm progress bar.
        scheduler: score on a dask.distributed cluster: a scheduler address
            (``tcp://host:8786``) or ``local:N`` for a local cluster of N worker
            processes. The Ids are cut into shards; each worker loads the model once,
            scores its shards on its own device (``device`` is resolved there) and writes
            them to a folder of this run's own in the staged output, merged here. ``out``,
            ``images``, ``model_dir`` and ``masks`` must be on a filesystem every worker
            shares; ``workers`` is unused.
        precision: ``auto``, ``bf16`` or ``fp32`` autocast
            (:func:`hpa.classification.inference.resolve_precision`).
        channel_map: which channel of a multi-channel TIFF is which
            (:class:`hpa.io_tiff.ChannelMap`); saved in ``config.yaml``.
        fmt: ``2018`` (``submission.csv``), ``2021`` (``submission_2021.csv`` and the
            2021 per-cell table) or ``both``; default: the model's label set
            (:mod:`hpa.pipelines.single_cell`).
        cell_score: the 2021 cell confidence rule (default: the benchmark's choice).
        min_cell_score: the lowest confidence listed in ``submission_2021.csv``.
        model_weights: weight of each of several ``model_dir`` (default: equal).

    Returns:
        A :class:`PredictSummary`.

    The run is built in ``<parent>/.hpa-partial-<name>`` beside ``out`` and swapped
    into place at the end (:class:`hpa.outputs.StagedFolder`), so ``out`` always holds
    one run's complete output: the previous one until this run has finished. Masks
    segmented on the fly are kept there by a killed run and resumed by the next one
    (the masks of the previous finished run are reused when their settings match).

    Raises:
        hpa.pipelines.cluster.ClusterError: with ``scheduler``, dask.distributed is not
            installed, a worker cannot see the folders, or a shard was lost.
        HPAConfigError: ``out`` is, holds or sits inside an input folder, or holds
            files ``hpa predict`` did not write, or another run is writing it.
    """
    out = Path(out)
    models = [model_dir] if isinstance(model_dir, str | Path) else list(model_dir)
    check_apart(out, {"IMAGES": images, "--masks": masks, **{f"--model {m}": m for m in models}})
    with StagedFolder(
        out, PREDICT_MARKER, PREDICT_ENTRIES, "hpa predict", keep=(PredDir.MASKS, PredDir.RUN_LOG)
    ) as stage:
        runlog.write_into(stage.path)  # a killed run's log is kept and appended to
        summary = _predict_staged(
            stage.path, images, model_dir, out, masks, ids, tta, pooling, fill_top, batch_size,
            device, workers, backend, progress, scheduler, precision, channel_map, fmt, cell_score,
            min_cell_score, model_weights,
        )  # fmt: skip
        stage.commit()
    return summary


def _predict_staged(
    work: Path,
    images: str | Path,
    model_dir: str | Path | Sequence[str | Path],
    out: Path,
    masks: str | Path | None,
    ids: Sequence[str] | None,
    tta: int,
    pooling: str | None,
    fill_top: bool,
    batch_size: int | None,
    device: str,
    workers: int | None,
    backend: str | None,
    progress: bool,
    scheduler: str | None,
    precision: str,
    channel_map: Any,
    fmt: str | None,
    cell_score: str | None,
    min_cell_score: float | None,
    model_weights: Sequence[float] | None,
) -> PredictSummary:
    """:func:`predict_folder` writing into ``work``, the folder that becomes ``out``."""
    import torch

    from hpa.aggregation import load_thresholds
    from hpa.classification.ensemble import load_predictor, read_ensemble
    from hpa.classification.model import THRESHOLDS_FILE, load_model_config
    from hpa.config import resolve_device, to_dict
    from hpa.pipelines import single_cell

    t0 = time.perf_counter()
    model_dirs = [model_dir] if isinstance(model_dir, str | Path) else list(model_dir)
    if scheduler is not None and (len(model_dirs) > 1 or read_ensemble(model_dirs[0]) is not None):
        raise HPAConfigError("--scheduler scores one plain model folder; average several without it")
    model_dir = model_dirs[0]
    if scheduler is not None:
        from hpa.pipelines.cluster import parse_local, require_distributed

        require_distributed()  # fail before writing anything
        parse_local(scheduler)
    check_channel_map(images, channel_map)
    ids = list(ids) if ids is not None else list_image_ids(images)
    check_folder_ids(images, ids)  # a badly named file fails now, not after the work
    if scheduler is None:
        from hpa.classification.inference import resolve_precision

        device = resolve_device(device)
        precision = resolve_precision(precision, device)
        model, cfg, thresholds = load_predictor(model_dirs, model_weights, device)
    else:  # each worker resolves the device and loads the model itself
        model, cfg = None, load_model_config(model_dir)
        thresholds, _ = load_thresholds(Path(model_dir) / THRESHOLDS_FILE, expected_classes=cfg.class_names)
    pooling = pooling or cfg.pooling
    fmt = single_cell.resolve_format(fmt, cfg.class_names)
    if scheduler is None:
        cores = default_workers()
        if masks is not None:
            # reading masks and cutting crops is light: a few workers keep the model fed,
            # and on the CPU the model keeps every core
            workers = workers or max(1, cores // 4)
            threads = cores
        else:
            # segmentation is the heavy part: every core but the model's segments
            workers = workers or max(1, cores - (0 if device == "cuda" else 1))
            threads = max(1, cores - workers)
        batch_size = batch_size or (512 if device == "cuda" else 128)
        if device == "cpu":
            torch.set_num_threads(threads)

    seg_config = None
    masks_dir = Path(masks) if masks else work / "masks"
    if masks is None:
        from hpa.pipelines.predict_config import model_segmentation

        seg_config = model_segmentation(model_dirs, backend)
        _resume_masks(masks_dir, out / "masks", to_dict(seg_config))
        SegDir(masks_dir).write_settings(to_dict(seg_config))
    else:
        SegDir(masks_dir).check()
    settings = {
        "images": str(Path(images).resolve()),
        "masks": str(masks_dir.resolve()),
        "model": [str(Path(m).resolve()) for m in model_dirs]
        if len(model_dirs) > 1
        else str(Path(model_dir).resolve()),
        "model_weights": list(model_weights) if model_weights else None,
        "device": device,
        "precision": precision,
        "workers": workers,
        "batch_size": batch_size,
        "tta": tta,
        "pooling": pooling,
        "fill_top": fill_top,
        "tile_weight": cfg.tile_weight,
        "segmented_on_the_fly": masks is None,
        "segmentation_backend": seg_config.backend if seg_config is not None else None,
        "n_images": len(ids),
        "channel_map": channel_map.spec if channel_map is not None else None,
        "format": fmt,
    }
    if fmt != "2018":
        cell_score = cell_score or single_cell.DEFAULT_CELL_SCORE
        min_cell_score = single_cell.DEFAULT_MIN_SCORE if min_cell_score is None else min_cell_score
        settings.update(cell_score=cell_score, min_cell_score=min_cell_score)
    if scheduler is not None:  # workers and batch size are the workers' own, by device
        settings.update(scheduler=scheduler, workers=None)
    log_settings("predict settings", settings)
    save_yaml(work / PredDir.CONFIG, settings)

    if scheduler is None:
        assert workers is not None and batch_size is not None
        scored = score_images(
            model,
            cfg,
            images,
            ids,
            masks_dir,
            seg_config,
            device,
            workers,
            batch_size,
            tta,
            progress,
            precision=precision,
            channel_map=channel_map,
        )
    else:
        scored = _score_on_cluster(
            scheduler, Path(model_dir).resolve(), cfg.class_names, Path(images).resolve(), ids,
            masks_dir.resolve(), seg_config, device, batch_size, tta, work.resolve(), progress, precision,
            channel_map,
        )  # fmt: skip
    n_cells = write_predictions(work, ids, scored, cfg, thresholds, pooling, fill_top, fmt != "2021")
    if scored.seg_tables:
        SegDir(masks_dir).merge_tables(scored.seg_tables)
    if fmt != "2018":
        assert cell_score is not None and min_cell_score is not None
        single_cell.write_single_cell(work, cell_score, min_cell_score, progress, masks_dir=masks_dir)
    summary = PredictSummary(len(ids), len(scored.failures), n_cells, time.perf_counter() - t0, out)
    log.info(
        "predicted %d images (%d failed, %d cells) in %.1f s, %.2f images/s; outputs in %s",
        summary.n_images,
        summary.n_failed,
        summary.n_cells,
        summary.seconds,
        summary.images_per_s,
        out,
    )
    return summary


def _resume_masks(masks_dir: Path, previous: Path, settings: dict[str, Any]) -> None:
    """Prepare the on-the-fly SEG_DIR ``masks_dir`` of a staged run for resuming.

    Masks left there by a killed run are kept when made with ``settings`` (else removed);
    a new ``masks_dir`` starts from the masks of the previous finished run
    (``previous``, hard links: every file is replaced by rename, never rewritten) when
    their settings match.
    """
    import shutil

    if masks_dir.is_dir() and SegDir(masks_dir).settings_differences(settings):
        log.info("%s: masks of an interrupted run with other settings; segmenting anew", masks_dir)
        shutil.rmtree(masks_dir)
    if masks_dir.is_dir() or SegDir(previous).read_settings() is None:
        return
    if SegDir(previous).settings_differences(settings):
        return
    try:
        shutil.copytree(previous, masks_dir, copy_function=os.link)
    except OSError:  # no hard links here: copy
        shutil.rmtree(masks_dir, ignore_errors=True)
        shutil.copytree(previous, masks_dir)
    log.info("reusing the masks of the previous run in %s", previous)


def resolve_predict_config(args: argparse.Namespace) -> PredictConfig:
    """The run's :class:`PredictConfig`: defaults, then ``--config`` YAML, then explicit flags."""
    flags = {
        "tta": args.tta,
        "pooling": args.pooling,
        "fill_top": False if args.no_fill_top else None,
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": getattr(args, "precision", None),
        "workers": args.workers,
        "backend": args.backend,
        "format": getattr(args, "format", None),
        "cell_score": getattr(args, "cell_score", None),
        "min_cell_score": getattr(args, "min_cell_score", None),
        "model_weights": getattr(args, "model_weights", None),
    }
    return resolve(PredictConfig, getattr(args, "config", None), **flags)


def main(args: argparse.Namespace) -> tuple[int, str]:
    """Entry point of ``hpa predict``."""
    ids = read_id_list(args.ids) if args.ids else None
    cfg = resolve_predict_config(args)
    summary = predict_folder(
        args.images,
        args.model,
        args.out,
        masks=args.masks,
        ids=ids,
        tta=cfg.tta,
        pooling=cfg.pooling,
        fill_top=cfg.fill_top,
        batch_size=cfg.batch_size,
        device=cfg.device,
        workers=cfg.workers,
        backend=cfg.backend,
        scheduler=getattr(args, "scheduler", None),
        precision=cfg.precision,
        channel_map=getattr(args, "channel_map", None),
        fmt=cfg.format,
        cell_score=cfg.cell_score,
        min_cell_score=cfg.min_cell_score,
        model_weights=cfg.model_weights,
    )
    written = [n for n in (PredDir.SUBMISSION, PredDir.SUBMISSION_2021) if (summary.out / n).is_file()]
    text = (
        f"submission: {', '.join(str(summary.out / n) for n in written)} ({summary.n_images} images, "
        f"{summary.n_failed} failed, {summary.n_cells} cells, {summary.images_per_s:.2f} images/s)"
    )
    return (0 if summary.n_failed < summary.n_images else 1), text
