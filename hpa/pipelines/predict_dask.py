"""``hpa predict --scheduler``: scoring the Ids in shards on a Dask cluster.

The Ids are cut into consecutive shards, one task each (:func:`_score_shard`). A worker
loads the model once, scores its shards on its own device with
:func:`hpa.pipelines.predict_views.score_folder_views` and writes each as part files into a
folder of this run's own in the staged output; :func:`merge_shards` reads them back in
shard order, so the result is that of a single-process run. Only
:func:`score_on_cluster` is called by :mod:`hpa.pipelines.predict`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.artefacts import read_failures, write_failures, write_parquet
from hpa.pipelines.predict_views import ScoredViews, score_folder_views

if TYPE_CHECKING:
    from distributed import Client

    from hpa.classification.predictor import Predictor
    from hpa.io_tiff import ChannelMap
    from hpa.pipelines.predict import PredictRun
    from hpa.pipelines.predict_config import PredictConfig
    from hpa.segmentation import SegmentConfig

log = logging.getLogger(__name__)

# (model folder, its newest weights' mtime, device, precision, engine) -> the predictor: a
# worker process loads its model once
_MODEL_CACHE: dict[tuple[str, int, str, str, str], Predictor] = {}


def _cached_predictor(model_dir: str, device: str, precision: str, engine: str) -> Predictor:
    """The predictor of a plain, ``--folds`` or blend folder, as ``hpa predict`` loads it,
    on this worker's device (``device`` resolved here)."""
    from hpa.classification.engine import engine_threads
    from hpa.classification.ensemble import expand_members
    from hpa.classification.model import WEIGHTS_FILE
    from hpa.classification.predictor import Predictor

    stamp = max((m.folder / WEIGHTS_FILE).stat().st_mtime_ns for m in expand_members([model_dir]))
    key = (model_dir, stamp, device, precision, engine)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # one model per worker process: a retrained folder replaces it
        _MODEL_CACHE[key] = Predictor.load(
            [model_dir], device=device, precision=precision, engine=engine, threads=engine_threads(1)
        )
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
    seg_config: SegmentConfig | None,
    ids: list[str],
    k: int,
    parts_dir: str,
    device: str,
    batch_size: int | None,
    tta: int,
    precision: str = "auto",
    channel_map: ChannelMap | None = None,
    engine: str = "auto",
) -> str:
    """A Dask task: score one shard of Ids on this worker's device; write its part files.

    Writes ``shard-<k>.failures.csv``, ``shard-<k>.cells.parquet`` (segmented on the fly
    only) and last ``shard-<k>.parquet``: the :func:`views_index` columns and one
    probability column per class. Returns the device used.
    """
    from hpa.config import resolve_device

    predictor = _cached_predictor(model_dir, resolve_device(device), precision, engine)
    scored = score_folder_views(
        predictor,
        images,
        ids,
        Path(masks_dir),
        seg_config=seg_config,
        workers=1,
        batch_size=batch_size or predictor.default_batch_size,
        tta=tta,
        progress=False,
        channel_map=channel_map,
    )
    paths = _shard_paths(parts_dir, k)
    write_failures(paths["failures"], scored.failures)
    if scored.seg_tables:
        write_parquet(paths["cells"], pd.concat(scored.seg_tables, ignore_index=True))
    probs = pd.DataFrame(scored.probs, columns=predictor.config.output_columns)
    write_parquet(paths["scores"], pd.concat([scored.index.reset_index(drop=True), probs], axis=1))
    return predictor.device


def merge_shards(parts_dir: str | Path, n_shards: int, columns: Sequence[str]) -> ScoredViews:
    """Read the part files of shards ``0 .. n_shards - 1`` back into one :class:`ScoredViews`.

    Shards hold consecutive Ids, so concatenating them in shard order gives the views,
    failures and segmentation tables in the order of a single-process run.
    """
    columns = list(columns)
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
        return ScoredViews.empty(len(columns), failures, seg_tables)
    table = pd.concat(frames, ignore_index=True)
    probs = table[columns].to_numpy(np.float32)
    return ScoredViews(table.drop(columns=columns), probs, failures, seg_tables)


def score_on_cluster(
    run: PredictRun,
    settings: PredictConfig,
    columns: Sequence[str],
    ids: list[str],
    masks_dir: Path,
    seg_config: SegmentConfig | None,
    out: Path,
) -> ScoredViews:
    """Score ``ids`` in shards on the Dask cluster ``run.scheduler``, each worker on its own device.

    ``settings`` give the device (resolved on each worker), batch size (default: by the
    worker's device), TTA, precision and engine; ``run`` the first model folder, the images,
    channel map and progress bar. Shard parts go to a folder ``parts-<run>`` made by this run
    in ``out`` (the staged prediction folder), removed once they are merged; a failed shard
    stops the run and leaves the parts for inspection until the next run into the same folder.

    Raises:
        hpa.pipelines.cluster.ClusterError: a worker cannot see the folders, or a shard
            was lost on the cluster.
    """
    import shutil

    from hpa.pipelines.cluster import check_shared_folders, connect, split_shards, worker_addresses

    model_dir, images, masks_dir, out = (
        Path(p).resolve() for p in (run.models[0], run.images, masks_dir, out)
    )
    parts = out / f"parts-{uuid.uuid4().hex[:12]}"  # this run's own: nothing else is ever removed
    parts.mkdir(parents=True)
    readable = [images, model_dir] + ([masks_dir] if seg_config is None else [])
    assert run.scheduler is not None
    with connect(run.scheduler) as client:
        check_shared_folders(client, out, readable)
        shards = split_shards(ids, len(worker_addresses(client)))
        log.info("scoring %d images in %d shards on %s", len(ids), len(shards), run.scheduler)
        common = (
            str(parts), settings.device, settings.batch_size, settings.tta, settings.precision, run.channel_map,
            settings.engine,
        )  # fmt: skip
        jobs = [
            (str(model_dir), str(images), str(masks_dir), seg_config, shard, k, *common)
            for k, shard in enumerate(shards)
        ]
        devices = _run_shards(client, jobs, shards, parts, run.progress)
    log.info("shards scored on: %s", ", ".join(sorted(devices)) or "nothing")
    scored = merge_shards(parts, len(shards), columns)
    shutil.rmtree(parts)
    return scored


def _run_shards(
    client: Client, jobs: list[tuple[Any, ...]], shards: list[list[str]], parts: Path, progress: bool
) -> set[str]:
    """Run the :func:`_score_shard` ``jobs`` of ``shards``; returns the devices they ran on.

    Raises:
        hpa.pipelines.cluster.ClusterError: a shard was lost on the cluster.
    """
    from hpa.pipelines.cluster import ClusterError, as_completed_results

    devices: set[str] = set()
    names = [str(k) for k in range(len(jobs))]
    bar = tqdm(total=sum(len(shard) for shard in shards), desc="predicting", unit="img", disable=not progress)
    with bar, closing(as_completed_results(client, _score_shard, jobs, names)) as done:
        for k, used, error in done:
            if error is not None:
                raise ClusterError(
                    f"shard {k} (Ids {shards[k][0]} .. {shards[k][-1]}) was lost on the cluster: "
                    f"{type(error).__name__}: {error}; its finished neighbours are in {parts}"
                )
            devices.add(used)
            bar.update(len(shards[k]))
    return devices
