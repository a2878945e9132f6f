"""``hpa predict``: score every cell, pool to image labels, write the submission.

Worker processes read each image, segment it (or load its masks) and cut its crops and
tiles while the main process runs the classifier on the views the workers have
already prepared, so both stay busy. Views of several images are scored together to
fill batches. Every requested Id gets a row in the submission, in the requested order:
an image that fails to read gets an empty prediction and a line in ``failures.csv``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pandas as pd

from hpa import runlog
from hpa.artefacts import PredDir, SegDir, write_csv, write_failures, write_parquet
from hpa.artefacts.provenance import (
    Fingerprint,
    Provenance,
    check_masks_images,
    differences,
    folder_fingerprint,
    images_fingerprint,
    mismatch_message,
    read_record,
    write_record,
)
from hpa.artefacts.tables import image_score_table
from hpa.classification.feature_head import FeatureBlend, feature_blend
from hpa.config import CLI, SettingError, Spelling, default_workers, log_settings, resolve, save_yaml
from hpa.errors import HPAConfigError
from hpa.io import check_folder_ids, list_image_ids, read_id_list
from hpa.io_tiff import check_channel_map
from hpa.outputs import StagedFolder, check_apart, record_entries
from hpa.pipelines.predict_config import PredictConfig, check_weights_fit, predict_settings
from hpa.pipelines.predict_views import ScoredViews, score_folder_views

if TYPE_CHECKING:
    from hpa.classification.model import ModelConfig
    from hpa.classification.predictor import Predictor
    from hpa.io_tiff import ChannelMap
    from hpa.segmentation import SegmentConfig

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


def write_predictions(
    out: Path,
    ids: Sequence[str],
    scored: ScoredViews,
    predictor: Predictor,
    *,
    pooling: str | None,
    fill_top: bool,
    submission: bool = True,
    companion: tuple[FeatureBlend, np.ndarray] | None = None,
) -> int:
    """Pool, threshold and write the submission and the tables of a prediction run.

    Args:
        out: the (staged) PRED_DIR.
        ids: every requested Id, in submission order; failed ones get empty rows.
        scored: the views' probabilities and the failures.
        predictor: the model's pooling (its config: classes, tile weight, views used) and
            per-class thresholds.
        pooling: cell-to-image pooling; None = the model's (each blended model's own).
        fill_top: predict the top class where no class passes its threshold.
        submission: write the 2018-style ``submission.csv`` (False for ``--format 2021``).
        companion: a blend with the feature head and the head's ``(N, K)`` image scores:
            the image scores are blended with them before thresholding (cell and tile
            tables keep the model's own view probabilities).

    Returns:
        The number of cells scored.
    """
    from hpa.aggregation import save_thresholds, write_submission

    index, failures = scored.index, scored.failures
    scores, probs = predictor.pool(index, scored.probs, ids, pooling)
    if companion is not None:
        scores = companion[0].blend(scores, companion[1])
    failed_rows = np.array([i in failures for i in ids], dtype=bool)
    scores[failed_rows] = 0.0
    y_pred = predictor.labels(scores, fill_top=fill_top)
    y_pred[failed_rows] = 0

    pred = PredDir(out)
    if submission:
        write_submission(pred.path(PredDir.SUBMISSION), ids, y_pred)
    write_csv(pred.path(PredDir.IMAGE_SCORES), image_score_table(ids, scores, predictor.class_names))
    cells, tiles = predictor.tables(index, probs)
    _warn_cellless(ids, failures, cells)
    write_parquet(pred.path(PredDir.CELLS), cells)
    write_parquet(pred.path(PredDir.TILES), tiles)
    save_thresholds(pred.path(PredDir.THRESHOLDS), predictor.thresholds, predictor.class_names)
    write_failures(pred.path(PredDir.FAILURES), failures)
    return len(cells)


def _warn_cellless(ids: Sequence[str], failures: Mapping[str, str], cells: pd.DataFrame) -> None:
    """Warn, naming them, of the images predicted without a single cell (tiles alone)."""
    with_cells = set(cells["image_id"].astype(str)) if len(cells) else set()
    cellless = [i for i in ids if i not in failures and i not in with_cells]
    if cellless:
        shown = ", ".join(cellless[:10]) + (f" and {len(cellless) - 10} more" if len(cellless) > 10 else "")
        log.warning(
            "%d image(s) without a cell in their mask: %s; their labels come from the whole-image "
            "tiles alone (check their masks)",
            len(cellless),
            shown,
        )


# ------------------------------------------------------------ the PRED_DIR ---

#: The marker file of a prediction folder, and every name ``hpa predict`` (and ``hpa show``
#: and ``hpa report`` by default) writes in it: only such a folder is ever replaced.
PREDICT_MARKER = PredDir.MARKER
PREDICT_ENTRIES = PredDir.ENTRIES


@dataclass(frozen=True, kw_only=True)
class PredictRun:
    """What a prediction run reads and writes, beside its settings (a :class:`PredictConfig`).

    Attributes:
        images: folder of channel files.
        models: the model folders (several are averaged).
        out: PRED_DIR to write.
        masks: SEG_DIR of ``hpa segment``; None = segment on the fly into ``OUT/masks``.
        ids: Ids in submission order; None = every Id in the images folder, sorted.
        channel_map: which channel of a multi-channel TIFF is which; saved in ``config.yaml``.
        scheduler: score on a dask.distributed cluster: a scheduler address
            (``tcp://host:8786``) or ``local:N`` for a local cluster of N worker processes
            (:mod:`hpa.pipelines.predict_dask`). Each worker loads the model once and
            scores its shards of the Ids on its own device (the device is resolved there).
            The images, model, masks and output folders must be on a filesystem every
            worker shares; the ``workers`` setting is unused.
        progress: show a tqdm progress bar.
        overwrite: segment anew when the masks of the previous run in ``OUT/masks`` were
            made from other images (default: refuse).
    """

    images: str | Path
    models: list[str | Path]
    out: Path
    masks: str | Path | None = None
    ids: Sequence[str] | None = None
    channel_map: ChannelMap | None = None
    scheduler: str | None = None
    progress: bool = True
    overwrite: bool = False


def predict_folder(
    images: str | Path,
    model_dir: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
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
    channel_map: ChannelMap | None = None,
    fmt: str | None = None,
    cell_score: str | None = None,
    min_cell_score: float | None = None,
    model_weights: Sequence[float] | None = None,
    overwrite: bool = False,
    engine: str = "auto",
    names: Spelling = CLI,
) -> PredictSummary:
    """Predict image labels and per-cell scores for a folder of images (``hpa predict``).

    Args:
        images, out, masks, ids, channel_map, scheduler, progress, overwrite: the run's
            folders and Ids, and how it runs (:class:`PredictRun`).
        model_dir: model folder of ``hpa train-cells``, or several whose probabilities
            are averaged; a ``--folds`` folder averages its folds.
        tta, pooling, fill_top, batch_size, device, workers, backend, precision, fmt,
            cell_score, min_cell_score, model_weights, engine: the settings, the fields of
            :class:`PredictConfig` (``fmt``: ``format``), checked by its checks, as
            ``hpa predict`` checks its flags.
        names: how errors name the arguments (the flags; :func:`hpa.predict_folder`: its own).

    Returns:
        A :class:`PredictSummary` (see :func:`run_prediction`).

    Raises:
        HPAConfigError: a refused argument, named as ``names`` spells it; and as
            :func:`run_prediction` raises.
    """
    check_predict_inputs(names, images=images, model_dir=model_dir, out=out, masks=masks, ids=ids)
    settings = predict_settings(
        names, tta=tta, pooling=pooling, fill_top=fill_top, batch_size=batch_size, device=device,
        workers=workers, backend=backend, precision=precision, format=fmt, cell_score=cell_score,
        min_cell_score=min_cell_score, model_weights=model_weights, engine=engine,
    )  # fmt: skip
    models = [model_dir] if isinstance(model_dir, str | Path) else list(model_dir)
    run = PredictRun(
        images=images, models=models, out=Path(out), masks=masks, ids=ids, channel_map=channel_map,
        scheduler=scheduler, progress=progress, overwrite=overwrite,
    )  # fmt: skip
    return run_prediction(run, settings, names)


def run_prediction(run: PredictRun, settings: PredictConfig, names: Spelling = CLI) -> PredictSummary:
    """Run a prediction: ``hpa predict`` and :func:`predict_folder` alike.

    The run is built in ``<parent>/.hpa-partial-<name>`` beside ``run.out`` and swapped
    into place at the end (:class:`hpa.outputs.StagedFolder`), so ``out`` always holds
    one run's complete output: the previous one until this run has finished. Masks
    segmented on the fly are kept there by a killed run and resumed by the next one
    (the masks of the previous finished run are reused when their settings match).

    Raises:
        hpa.pipelines.cluster.ClusterError: with a scheduler, dask.distributed is not
            installed, a worker cannot see the folders, or a shard was lost.
        HPAConfigError: ``model_weights`` or ``scheduler`` do not fit the model folders;
            ``out`` is, holds or sits inside an input folder, or holds files
            ``hpa predict`` did not write, or another run is writing it; or ``masks``
            were made from another images folder; or ``out/masks`` holds masks of other
            images for these Ids and ``overwrite`` is False.
    """
    _check_models(run, settings, names)
    inputs = {"IMAGES": run.images, "--masks": run.masks, **{f"--model {m}": m for m in run.models}}
    check_apart(run.out, inputs)
    with StagedFolder(
        run.out, PREDICT_MARKER, PREDICT_ENTRIES, "hpa predict", keep=(PredDir.MASKS, PredDir.RUN_LOG)
    ) as stage:
        runlog.write_into(stage.path)  # a killed run's log is kept and appended to
        summary = _predict_staged(stage.path, run, settings, names)
        stage.commit()
    return summary


def check_predict_inputs(names: Spelling, **inputs: Any) -> None:
    """Check the folders and Ids given to :func:`predict_folder` as ``hpa predict`` reads them.

    The folders are paths (``model_dir`` one or a list), ``ids`` a non-empty list of Ids
    (not a string).

    Raises:
        HPAConfigError: the first refused argument, named as ``names`` spells it.
    """

    def refuse(name: str, problem: str) -> NoReturn:
        raise HPAConfigError(SettingError(name, inputs[name], problem).named(names))

    for name in ("images", "out", "masks"):
        if not isinstance(inputs[name], str | Path) and not (name == "masks" and inputs[name] is None):
            refuse(name, "expected a folder path (str or pathlib.Path)")
    models = inputs["model_dir"]
    if not isinstance(models, str | Path) and not (
        isinstance(models, Sequence) and models and all(isinstance(m, str | Path) for m in models)
    ):
        refuse("model_dir", "expected a model folder path (str or pathlib.Path) or a list of them")
    ids = inputs["ids"]
    if ids is not None:
        if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
            refuse("ids", "expected a list of Ids, not a single string")
        if not all(isinstance(i, str) for i in ids):
            refuse("ids", "expected a list of Ids (strings)")
        if not len(ids):
            refuse("ids", "an empty list: no image to predict")


def _check_models(run: PredictRun, settings: PredictConfig, names: Spelling) -> None:
    """One weight per model folder; with a scheduler, one model folder and a valid address
    (``local:N``), and dask.distributed installed: refused before anything is written."""
    check_weights_fit(settings, len(run.models), names)
    if run.scheduler is None:
        return
    from hpa.pipelines.cluster import ClusterError, parse_local, require_distributed

    if len(run.models) > 1:
        problem = f"scores one {names('model_dir')} folder; average several without it"
        raise HPAConfigError(SettingError("scheduler", run.scheduler, problem).named(names))
    require_distributed()
    try:
        parse_local(run.scheduler)
    except (ClusterError, AttributeError):  # local:0, or not a string
        problem = "expected a scheduler address or local:N with N >= 1 worker processes"
        raise HPAConfigError(SettingError("scheduler", run.scheduler, problem).named(names)) from None


def _predict_staged(work: Path, run: PredictRun, settings: PredictConfig, names: Spelling) -> PredictSummary:
    """:func:`run_prediction` writing into ``work``, the folder that becomes ``run.out``."""
    t0 = time.perf_counter()
    check_channel_map(run.images, run.channel_map)
    ids = list(run.ids) if run.ids is not None else list_image_ids(run.images)
    check_folder_ids(run.images, ids)  # a badly named file fails now, not after the work
    blend = feature_blend(run.models)
    if blend is not None and run.scheduler is not None:
        raise HPAConfigError(
            f"{blend.folder}: --scheduler does not run the features companion; predict without it"
        )
    settings = _machine_settings(settings, run)
    predictor, settings = _load_predictor([blend.main] if blend else run.models, settings, run, names)
    if blend is not None:
        predictor = replace(predictor, thresholds=blend.thresholds(predictor.class_names))
        if blend.head.classes != predictor.class_names:
            raise HPAConfigError(f"{blend.folder}: the feature head's classes differ from the main model's")
    settings = _model_settings(settings, predictor.config)
    masks_dir, seg_config = _masks_folder(work, run, settings.backend, ids)
    _record_run(work, run, settings, predictor.config, masks_dir, seg_config, len(ids))
    if run.scheduler is None:
        assert settings.workers is not None and settings.batch_size is not None
        scored = score_folder_views(
            predictor, run.images, ids, masks_dir, seg_config=seg_config, workers=settings.workers,
            batch_size=settings.batch_size, tta=settings.tta, progress=run.progress, channel_map=run.channel_map,
        )  # fmt: skip
    else:
        from hpa.pipelines.predict_dask import score_on_cluster

        scored = score_on_cluster(
            run, settings, predictor.config.output_columns, ids, masks_dir, seg_config, work
        )
    companion = None
    if blend is not None:  # the localisation-feature head's image scores, blended with the model's
        companion = (blend, blend.scores(run.images, masks_dir, ids, workers=settings.workers or 1))
    n_cells = _write_outputs(work, ids, scored, predictor, masks_dir, settings, run.progress, companion)
    summary = PredictSummary(len(ids), len(scored.failures), n_cells, time.perf_counter() - t0, run.out)
    log.info(
        "predicted %d images (%d failed, %d cells) in %.1f s, %.2f images/s; outputs in %s",
        summary.n_images,
        summary.n_failed,
        summary.n_cells,
        summary.seconds,
        summary.images_per_s,
        run.out,
    )
    return summary


def _record_run(
    work: Path,
    run: PredictRun,
    settings: PredictConfig,
    cfg: ModelConfig,
    masks_dir: Path,
    seg_config: SegmentConfig | None,
    n_images: int,
) -> None:
    """Log and save the run's resolved settings (``config.yaml``) and its provenance record."""
    seg_backend = seg_config.backend if seg_config is not None else None
    # masks made on the fly are recorded where they will be: OUT/masks, not the staging folder
    final_masks = masks_dir if run.masks is not None else Path(os.path.realpath(run.out)) / PredDir.MASKS
    recorded = _run_settings(run, final_masks, settings, cfg, n_images, seg_backend)
    log_settings("predict settings", recorded)
    save_yaml(work / PredDir.CONFIG, recorded)
    write_record(work, _prediction_record(run, masks_dir, recorded))


def _write_outputs(
    work: Path,
    ids: Sequence[str],
    scored: ScoredViews,
    predictor: Predictor,
    masks_dir: Path,
    settings: PredictConfig,
    progress: bool,
    companion: tuple[FeatureBlend, np.ndarray] | None = None,
) -> int:
    """The tables of :func:`write_predictions`, the 2021 outputs for ``settings.format``, and the
    cell table of masks segmented on the fly; returns the number of cells scored."""
    from hpa.pipelines import single_cell

    n_cells = write_predictions(
        work,
        ids,
        scored,
        predictor,
        pooling=settings.pooling,
        fill_top=settings.fill_top,
        submission=settings.format != "2021",
        companion=companion,
    )
    if scored.seg_tables:
        SegDir(masks_dir).merge_tables(scored.seg_tables)
    if settings.format != "2018":
        assert settings.cell_score is not None and settings.min_cell_score is not None
        single_cell.write_single_cell(
            work, settings.cell_score, settings.min_cell_score, progress, masks_dir=masks_dir
        )
    return n_cells


def _load_predictor(
    model_dirs: Sequence[str | Path], settings: PredictConfig, run: PredictRun, names: Spelling = CLI
) -> tuple[Predictor, PredictConfig]:
    """The model (its folders averaged) as a :class:`Predictor`; ``settings`` with the precision
    and engine it runs with (onnxruntime runs fp32, so its precision is fp32).

    With a scheduler, only the config and thresholds (:meth:`Predictor.plan` of a plain,
    ``--folds`` or blend folder): each worker resolves the device and loads the model itself.
    """
    from hpa.classification.predictor import Predictor

    if run.scheduler is not None:
        return Predictor.plan(model_dirs), settings
    assert settings.workers is not None
    predictor = Predictor.load(
        model_dirs, settings.model_weights, device=settings.device, precision=settings.precision,
        engine=settings.engine, threads=_network_threads(run, settings.workers), flag=names("engine"),
    )  # fmt: skip
    return predictor, replace(settings, precision=predictor.precision, engine=predictor.engine)


def _network_threads(run: PredictRun, workers: int) -> int:
    """The classifier's CPU threads, torch's or an ONNX engine's: with masks given every core
    (the workers reading masks and cutting crops are light), segmenting on the fly the cores
    the segmenting ``workers`` leave."""
    cores = default_workers()
    return cores if run.masks is not None else max(1, cores - workers)


def _machine_settings(settings: PredictConfig, run: PredictRun) -> PredictConfig:
    """``settings`` with the device resolved and, without a scheduler, the worker count and
    batch size by the cores and device (and the classifier's CPU threads set: every core but
    the segmenting workers'). With a scheduler, the workers resolve them by their own device.
    """
    import torch

    from hpa.classification.predictor import default_batch_size
    from hpa.config import resolve_device

    if run.scheduler is not None:
        return settings
    device = resolve_device(settings.device)
    cores = default_workers()
    if run.masks is not None:
        # reading masks and cutting crops is light: a few workers keep the model fed
        workers = settings.workers or max(1, cores // 4)
    else:
        # segmentation is the heavy part: every core but the model's segments
        workers = settings.workers or max(1, cores - (0 if device == "cuda" else 1))
    if device == "cpu":
        torch.set_num_threads(_network_threads(run, workers))
    batch_size = settings.batch_size or default_batch_size(device)
    return replace(settings, device=device, workers=workers, batch_size=batch_size)


def _model_settings(settings: PredictConfig, cfg: ModelConfig) -> PredictConfig:
    """``settings`` with the defaults that depend on the model: pooling and output format by
    the model, the 2021 cell score rule (the 2021 settings dropped for a 2018-only model)."""
    from hpa.pipelines import single_cell

    fmt = single_cell.resolve_format(settings.format, cfg.class_names)
    unused = [n for n in ("cell_score", "min_cell_score") if getattr(settings, n) is not None]
    if fmt == "2018" and unused:
        log.warning(
            "%s ignored: the model's label set writes the 2018 format only (ask for format 2021 or both)",
            " and ".join(unused),
        )
        settings = replace(settings, cell_score=None, min_cell_score=None)
    # a blend pools each model its own way unless --pooling says otherwise
    settings = replace(
        settings, pooling=settings.pooling or (None if cfg.groups else cfg.pooling), format=fmt
    )
    if fmt == "2018":
        return settings
    min_cell_score = settings.min_cell_score
    return replace(
        settings,
        cell_score=settings.cell_score or single_cell.DEFAULT_CELL_SCORE,
        min_cell_score=single_cell.DEFAULT_MIN_SCORE if min_cell_score is None else min_cell_score,
    )


def _masks_folder(
    work: Path, run: PredictRun, backend: str | None, ids: Sequence[str]
) -> tuple[Path, SegmentConfig | None]:
    """The SEG_DIR to read, or to segment into (``WORK/masks``, resumed) and its settings.

    Masks made on the fly follow the segmentation settings the model was trained with
    (:func:`hpa.pipelines.predict_config.model_segmentation`); ``backend`` overrides
    the backend. They get a provenance record, as a SEG_DIR of ``hpa segment`` does.

    Raises:
        HPADataError: ``run.masks`` is not a segmentation folder.
        HPAConfigError: ``run.masks`` were made from another images folder, or
            ``OUT/masks`` holds masks of other images (:func:`_resume_masks`).
    """
    from hpa.config import to_dict
    from hpa.pipelines.predict_config import model_segmentation

    masks_dir = Path(run.masks) if run.masks else work / PredDir.MASKS
    if run.masks is not None:
        SegDir(masks_dir).check()
        check_masks_images(masks_dir, run.images)
        return masks_dir, None
    seg_config = model_segmentation(run.models, backend)
    spec = run.channel_map.spec if run.channel_map is not None else None
    record = SegDir.record(run.images, to_dict(seg_config), spec, "hpa predict")
    previous = run.out / PredDir.MASKS
    _resume_masks(masks_dir, previous, to_dict(seg_config), record, ids, overwrite=run.overwrite)
    SegDir(masks_dir).write_settings(to_dict(seg_config))
    write_record(masks_dir, record)
    record_entries(masks_dir, SegDir.ENTRIES)  # hpa's own masks: a clean and a resumed run alike
    return masks_dir, seg_config


#: Run settings not in a PRED_DIR's record: paths (recorded as inputs), where and how fast it ran.
_RECORD_FREE = ("images", "masks", "model", "device", "workers", "batch_size", "scheduler")


def _prediction_record(run: PredictRun, masks_dir: Path, settings: dict[str, Any]) -> Provenance:
    """The PRED_DIR's provenance record: the run's settings, the images, model(s) and masks.

    Masks made on the fly are named ``masks`` (the folder's own), with their record's digest.
    """
    own = folder_fingerprint(masks_dir)
    masks = own if run.masks is not None else Fingerprint(PredDir.MASKS, own.sha256)
    return Provenance(
        "preddir",
        "hpa predict",
        {k: v for k, v in settings.items() if k not in _RECORD_FREE},
        {
            "images": (images_fingerprint(run.images),),
            "model": tuple(folder_fingerprint(m) for m in run.models),
            "masks": (masks,),
        },
    )


def _run_settings(
    run: PredictRun,
    masks_dir: Path,
    settings: PredictConfig,
    cfg: ModelConfig,
    n_images: int,
    seg_backend: str | None = None,
) -> dict[str, Any]:
    """What ``config.yaml`` records of a run: inputs, resolved settings, the model's tile weight."""
    models = run.models
    recorded = {
        "images": str(Path(run.images).resolve()),
        "masks": str(masks_dir.resolve()),
        "model": [str(Path(m).resolve()) for m in models]
        if len(models) > 1
        else str(Path(models[0]).resolve()),
        "model_weights": list(settings.model_weights) if settings.model_weights else None,
        "device": settings.device,
        "precision": settings.precision,
        "engine": settings.engine,
        "workers": settings.workers,
        "batch_size": settings.batch_size,
        "tta": settings.tta,
        "pooling": settings.pooling or [g.pooling for g in cfg.groups],
        "fill_top": settings.fill_top,
        "tile_weight": [g.tile_weight for g in cfg.groups] if cfg.groups else cfg.tile_weight,
        **({"blend_weights": [round(g.weight, 4) for g in cfg.groups]} if cfg.groups else {}),
        "segmented_on_the_fly": run.masks is None,
        "segmentation_backend": seg_backend,
        "n_images": n_images,
        "channel_map": run.channel_map.spec if run.channel_map is not None else None,
        "format": settings.format,
    }
    if settings.format != "2018":
        recorded.update(cell_score=settings.cell_score, min_cell_score=settings.min_cell_score)
    if run.scheduler is not None:
        recorded.update(scheduler=run.scheduler, workers=None)
    return recorded


def _resume_masks(
    masks_dir: Path,
    previous: Path,
    settings: dict[str, Any],
    record: Provenance,
    ids: Sequence[str],
    *,
    overwrite: bool = False,
) -> None:
    """Prepare the on-the-fly SEG_DIR ``masks_dir`` of a staged run for resuming.

    Masks left there by a killed run are kept when made from the same images with
    ``settings`` (their ``record`` matches; else they are removed); a new ``masks_dir``
    starts from the masks of the previous finished run (``previous``, hard links: every
    file is replaced by rename, never rewritten) when their settings and images match.

    Raises:
        HPAConfigError: ``previous`` holds masks of other images for some of ``ids``
            and ``overwrite`` is False (with it, they are not reused).
    """
    import shutil

    if masks_dir.is_dir():
        partial = read_record(masks_dir)
        if SegDir(masks_dir).settings_differences(settings) or (
            partial is not None and differences(partial, record)
        ):
            log.info(
                "%s: masks of an interrupted run with other images or settings; segmenting anew", masks_dir
            )
            shutil.rmtree(masks_dir)
    if masks_dir.is_dir() or SegDir(previous).read_settings() is None:
        return
    if SegDir(previous).settings_differences(settings):
        return
    if not _same_images(previous, record, ids, overwrite):
        return
    try:
        shutil.copytree(previous, masks_dir, copy_function=os.link)
    except OSError:  # no hard links here: copy
        shutil.rmtree(masks_dir, ignore_errors=True)
        shutil.copytree(previous, masks_dir)
    record_entries(masks_dir, SegDir.ENTRIES)  # hpa's masks, also when an older hpa wrote them
    log.info("reusing the masks of the previous run in %s", previous)


def _same_images(previous: Path, record: Provenance, ids: Sequence[str], overwrite: bool) -> bool:
    """Were the previous run's masks (``previous``, ``OUT/masks``) made from this run's images?

    By their provenance record; for a folder written before records, by the images
    folder its run's ``config.yaml`` names.

    Raises:
        HPAConfigError: they were not, they hold masks of some of ``ids``, and
            ``overwrite`` is False.
    """
    recorded = read_record(previous)
    if recorded is None:
        before = PredDir(previous.parent).read_settings().get("images")
        same = before is None or before == record.inputs["images"][0].path
        if not same:
            log.info("%s: masks of the images %s (no provenance record); not reused", previous, before)
        return same
    diff = differences(recorded, record)
    if not diff:
        return True
    if overwrite or not any(SegDir(previous).is_finished(i) for i in ids):
        log.info("%s: masks of other images (%s); segmenting anew", previous, "; ".join(diff.values()))
        return False
    raise HPAConfigError(mismatch_message(previous.parent, diff))


def resolve_predict_config(args: argparse.Namespace) -> PredictConfig:
    """The run's :class:`PredictConfig`: defaults, then ``--config`` YAML, then explicit flags."""
    flags = {
        "tta": args.tta,
        "pooling": args.pooling,
        "fill_top": False if args.no_fill_top else None,
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": getattr(args, "precision", None),
        "engine": getattr(args, "engine", None),
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
    run = PredictRun(
        images=args.images, models=list(args.model), out=Path(args.out), masks=args.masks,
        ids=read_id_list(args.ids) if args.ids else None, channel_map=getattr(args, "channel_map", None),
        scheduler=getattr(args, "scheduler", None), overwrite=getattr(args, "overwrite", False),
    )  # fmt: skip
    summary = run_prediction(run, resolve_predict_config(args))
    written = [n for n in (PredDir.SUBMISSION, PredDir.SUBMISSION_2021) if (summary.out / n).is_file()]
    text = (
        f"submission: {', '.join(str(summary.out / n) for n in written)} ({summary.n_images} images, "
        f"{summary.n_failed} failed, {summary.n_cells} cells, {summary.images_per_s:.2f} images/s)"
    )
    return (0 if summary.n_failed < summary.n_images else 1), text
