"""A model and its companion, blended image by image (``TrainConfig.companion``).

Frozen ImageNet features of the protein channel (the default recipe) are what works on
a few dozen real images; a small network trained from scratch on the four channels
learns the patterns a large set holds, relative to the reference stains. Which one a
user's data favours is not known in advance, so the default run trains both on the same
split and lets the validation images decide:

* ``OUT/main/``: the run's own settings; ``OUT/<companion>/``: the companion recipe
  (:data:`hpa.classification.train.COMPANIONS`). Each is a complete model folder, or a
  ``--folds`` folder with out-of-fold scores. The ``features`` companion is no network
  but a logistic regression on each image's localisation features, fitted on the main
  model's split (:func:`train_feature_member`, :mod:`hpa.classification.feature_head`);
* the blend weight (the main model's share of the image scores, on the grid
  :data:`BLEND_WEIGHTS`) is chosen by macro average precision on the validation (or
  out-of-fold) images with the one-standard-error rule (:func:`choose_blend_weight`):
  a companion that does not beat the main model by more than the noise of those images
  gets no weight. The thresholds are then tuned on the blend;
* ``OUT/ensemble.json`` (``"combine": "image"``), ``thresholds.json`` tuned on the
  blended scores, ``metrics.json``, ``blend_scores.csv`` (the blended validation or
  out-of-fold image scores) and a model card. ``hpa predict --model OUT`` pools each
  member its own way and averages the image scores
  (:func:`hpa.classification.inference.image_scores`).

A rerun keeps finished members and resumes an interrupted one. ``ensemble.json`` is
removed before the blend files are rewritten and written last: a run killed in between
leaves a folder ``hpa predict`` refuses, never new thresholds behind an old blend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpa import runlog
from hpa.aggregation.metrics import macro_average_precision
from hpa.aggregation.selection import choose_weight
from hpa.artefacts import ModelDir, read_csv_table, write_csv
from hpa.artefacts.modelcard import write_training_record
from hpa.artefacts.provenance import Provenance, check_reuse, remove_record, write_record
from hpa.artefacts.tables import ID_COLUMN, image_score_table
from hpa.classification.ensemble import MAIN
from hpa.config import save_json, save_yaml, to_dict
from hpa.io import write_labels
from hpa.outputs import claim_entries

if TYPE_CHECKING:
    from hpa.aggregation import ThresholdResult
    from hpa.classification.cache import Folders
    from hpa.classification.train import TrainConfig
    from hpa.io import Labels
    from hpa.io_tiff import ChannelMap

log = logging.getLogger(__name__)

#: Candidate shares of the main model, best first on ties (a companion must earn its weight).
BLEND_WEIGHTS = tuple(round(1.0 - k / 10, 1) for k in range(11))
#: Bootstrap resamples behind the standard errors of :func:`choose_blend_weight`.
BOOTSTRAP = 100
#: The blended validation (or out-of-fold) image scores of a blend folder.
BLEND_SCORES = ModelDir.BLEND_SCORES


def choose_blend_weight(
    y: np.ndarray, main: np.ndarray, companion: np.ndarray, *, resamples: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, dict[float, float], dict[float, float]]:
    """The main model's share of the blend, by macro average precision on labelled images.

    The best share is the one with the highest macro average precision (AP: the ranking
    of the blended scores, judged without thresholds, which on a few dozen images make
    macro F1 jump between neighbouring weights). Then the one-standard-error rule
    (:func:`hpa.aggregation.selection.choose_weight`): the largest main share whose AP is
    within one bootstrap standard error (images drawn with replacement, paired) of the
    best is taken, so the companion gets weight only where it beats the main model by
    more than the noise of these images. On the real cross-validation this keeps the
    main model alone; on the synthetic benchmark it blends them half and half
    (benchmarks/RESULTS.md).

    Args:
        y: ``(N, K)`` multi-hot labels.
        main, companion: ``(N, K)`` image scores of the two models.
        resamples: bootstrap resamples for the standard errors.
        seed: seed of the resampling.

    Returns:
        ``(weight, {weight: macro AP}, {weight: standard error of its AP deficit to the best})``.

    >>> y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    >>> good, flat = y * 0.8 + 0.1, np.full((4, 2), 0.5)
    >>> choose_blend_weight(y, good, flat)[0]
    1.0
    """
    choice = choose_weight(
        y, BLEND_WEIGHTS, lambda w: w * main + (1.0 - w) * companion, macro_average_precision,
        resamples=resamples, seed=seed,
    )  # fmt: skip
    return choice.weight, choice.metric, choice.errors


def train_blend(
    images: Folders,
    labels: Labels,
    masks: Folders,
    out: str | Path,
    cfg: TrainConfig,
    *,
    all_folds: bool = False,
    cache_root: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    channel_map: ChannelMap | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` and its companion into ``out`` and blend them (see the module doc).

    Args:
        images, labels, masks, cache_root, progress, channel_map: as
            :func:`hpa.pipelines.train.train_model`.
        out: the blend folder.
        cfg: the run's settings; ``cfg.companion`` names the companion recipe.
        all_folds: train every fold of each (``--folds K`` without ``--fold``) and blend
            their out-of-fold scores; else fold ``cfg.fold`` and its validation images.
        resume: continue an interrupted member from its checkpoint.
        overwrite: retrain every member (none is kept or resumed); a member folder of
            another kind loses hpa's files of that kind first.

    Returns:
        The metrics written to ``OUT/metrics.json``.

    Raises:
        HPAConfigError: a finished member was trained on other inputs or settings
            (:func:`hpa.artefacts.provenance.check_reuse`), or is of another kind, and
            ``overwrite`` is False.
    """
    from hpa.classification.distributed import world_from_env
    from hpa.classification.train import FEATURE_COMPANION as FEATURES

    out = Path(out)
    record = _open_blend_folder(out, cfg, images, labels, masks, all_folds)
    member_metrics = {}
    for name, part in _networks(cfg).items():
        member_metrics[name] = _train_member(
            images, labels, masks, out / name, part, all_folds, cache_root, resume, progress, channel_map,
            overwrite,
        )  # fmt: skip
    if not world_from_env().is_main:
        return member_metrics[MAIN]
    if cfg.companion == FEATURES:
        member_metrics[FEATURES] = train_feature_member(
            images, labels, masks, out / FEATURES, out / MAIN, cfg, all_folds
        )
    blend = _choose_blend(out, labels, cfg, all_folds)
    metrics = _blend_metrics(blend, member_metrics, cfg, all_folds)
    _publish_blend(out, cfg, blend, metrics, all_folds)
    write_training_record(
        out, name=out.name, seg_dirs=masks, images=images, labels=labels, metrics=metrics,
        thresholds=blend.tuned.thresholds, settings=to_dict(cfg),
    )  # fmt: skip
    write_record(out, record)
    _write_ensemble_file(out, cfg, metrics["blend"]["weights"])  # last: OUT is a model for hpa predict now
    _log_blend(out, cfg, blend, metrics, all_folds)
    return metrics


def _open_blend_folder(
    out: Path, cfg: TrainConfig, images: Folders, labels: Labels, masks: Folders, all_folds: bool
) -> Provenance:
    """Check the masks against the images, claim OUT's entries and start its run log.

    Returns:
        The provenance record of the blend (written once its files are).
    """
    from hpa.pipelines.train import check_masks_of, model_record

    assert cfg.companion is not None
    check_masks_of(images, masks)
    record = model_record("blend", cfg, images, labels, masks, all_folds=all_folds)
    claim_entries(out, [*ModelDir.ENTRIES, BLEND_SCORES, MAIN, cfg.companion], "hpa train-cells")
    runlog.write_into(out)
    return record


def _log_blend(out: Path, cfg: TrainConfig, blend: _Blend, metrics: dict[str, Any], all_folds: bool) -> None:
    """Log the chosen share, the figures it was chosen by, and the blend's F1 beside each member's."""
    key, own = _f1_key(all_folds), metrics["blend"]["members_macro_f1"]
    log.info(
        "blend of %s: weight %.1f for the main model (macro AP by weight: %s); %s %.4f (main alone %.4f, %s alone %.4f)",
        out, blend.weight, ", ".join(f"{w}: {f:.4f}" for w, f in blend.selection.items()), key, metrics[key],
        own[MAIN], cfg.companion, own[cfg.companion],
    )  # fmt: skip


def _networks(cfg: TrainConfig) -> dict[str, TrainConfig]:
    """The blend's networks by name: the main model and a network companion (the
    ``features`` companion is none: :func:`train_feature_member`)."""
    from hpa.classification.train import FEATURE_COMPANION as FEATURES
    from hpa.classification.train import companion_config

    assert cfg.companion is not None
    parts = {MAIN: replace(cfg, companion=None)}
    if cfg.companion != FEATURES:
        parts[cfg.companion] = companion_config(cfg)
    return parts


@dataclass(frozen=True)
class _Blend:
    """The blend of the two members, chosen on their validation (or out-of-fold) images.

    Attributes:
        ids: the judged images, rows of ``scores``, sorted by Id.
        judged: their labels.
        weight: the main model's share (:func:`choose_blend_weight`).
        selection: macro average precision by candidate share.
        errors: the standard error of each share's shortfall from the best.
        scores: ``(N, K)`` float32 blended image scores.
        tuned: the thresholds tuned on them.
    """

    ids: list[str]
    judged: Labels
    weight: float
    selection: dict[float, float]
    errors: dict[float, float]
    scores: np.ndarray
    tuned: ThresholdResult


def _choose_blend(out: Path, labels: Labels, cfg: TrainConfig, all_folds: bool) -> _Blend:
    """Choose the main model's share on the members' scores, blend them and tune thresholds.

    Raises:
        HPAConfigError: the members were validated on different images.
    """
    from hpa.aggregation import tune_thresholds

    assert cfg.companion is not None
    (ids, main), (ids_c, comp) = (_scores(out / name, labels, all_folds) for name in (MAIN, cfg.companion))
    if ids != ids_c:
        from hpa.errors import HPAConfigError

        raise HPAConfigError(
            f"{out}: the members were validated on different images (folders from other runs?); "
            "remove them or use another --out"
        )
    judged = labels.subset(ids)
    weight, selection, errors = choose_blend_weight(judged.y, main, comp, seed=cfg.seed)
    scores = (weight * main + (1.0 - weight) * comp).astype(np.float32)
    tuned = tune_thresholds(judged.y, scores, shrink=cfg.threshold_shrink)
    return _Blend(ids, judged, weight, selection, errors, scores, tuned)


def _blend_metrics(
    blend: _Blend, member_metrics: dict[str, dict[str, Any]], cfg: TrainConfig, all_folds: bool
) -> dict[str, Any]:
    """What ``OUT/metrics.json`` records: the blend's macro F1 (overall and per class), the
    shares and how they were chosen, each member's own F1 and tile weight, and the split."""
    from hpa.aggregation import apply_thresholds, macro_f1, per_class_report
    from hpa.classification.train import FEATURE_COMPANION as FEATURES

    assert cfg.companion is not None
    judged, scores = blend.judged, blend.scores
    y_pred = apply_thresholds(scores, blend.tuned.thresholds)
    shares = {MAIN: blend.weight, cfg.companion: round(1.0 - blend.weight, 1)}
    metrics: dict[str, Any] = {
        _f1_key(all_folds): macro_f1(judged.y, y_pred),
        "blend": {
            "weights": shares,
            "macro_ap_by_weight": {str(w): f for w, f in blend.selection.items()},
            "macro_ap_standard_error": {str(w): e for w, e in blend.errors.items()},
            "members_macro_f1": {name: _own_f1(m, all_folds) for name, m in member_metrics.items()},
            **({"feature_head_C": member_metrics[FEATURES]["C"]} if cfg.companion == FEATURES else {}),
        },
        "tile_weight": {name: _tile_weight(m) for name, m in member_metrics.items()},
        "per_class": per_class_report(judged.y, y_pred, list(judged.class_names)).to_dict(orient="records"),
    }
    main_metrics = member_metrics[MAIN]
    if all_folds:
        metrics.update(
            n_images=len(blend.ids),
            folds=cfg.folds,
            fold_val_macro_f1=main_metrics.get("fold_val_macro_f1", []),
        )
    else:
        metrics.update(
            {
                "val_macro_f1_at_0.5": macro_f1(judged.y, (scores >= 0.5).astype(np.int64)),
                "n_train_images": main_metrics.get("n_train_images"),
                "n_val_images": len(blend.ids),
                "best_epoch": main_metrics.get("best_epoch"),
            }
        )
    return metrics


def _publish_blend(
    out: Path, cfg: TrainConfig, blend: _Blend, metrics: dict[str, Any], all_folds: bool
) -> None:
    """Write the blend's files but ``ensemble.json``, which :func:`_write_ensemble_file` adds
    last: until then OUT is no model ``hpa predict`` takes (no new thresholds behind an old
    blend)."""
    from hpa.aggregation import save_thresholds
    from hpa.classification.ensemble import ENSEMBLE_FILE
    from hpa.classification.model import THRESHOLDS_FILE

    cols = list(blend.judged.class_names)
    (out / ENSEMBLE_FILE).unlink(missing_ok=True)
    remove_record(out)  # written again, before ensemble.json, once the blend files are
    if all_folds:
        write_labels(out / ModelDir.OOF_LABELS, blend.judged)
        write_csv(out / ModelDir.OOF_IMAGES, image_score_table(blend.ids, blend.scores, cols))
    save_yaml(out / ModelDir.TRAIN_CONFIG, to_dict(cfg))
    write_csv(out / BLEND_SCORES, image_score_table(blend.ids, blend.scores, cols))
    save_thresholds(out / THRESHOLDS_FILE, blend.tuned, cols)
    save_json(out / ModelDir.METRICS, metrics)


def _write_ensemble_file(out: Path, cfg: TrainConfig, shares: dict[str, float]) -> None:
    """``OUT/ensemble.json``: the members with a share (``"combine": "image"``); it makes OUT a
    model for ``hpa predict``."""
    from hpa.classification.ensemble import BLEND, ENSEMBLE_FILE

    kept = {name: w for name, w in shares.items() if w > 0}
    save_json(
        out / ENSEMBLE_FILE,
        {
            "members": list(kept),
            "weights": list(kept.values()),
            "combine": BLEND,
            "threshold_shrink": cfg.threshold_shrink,
        },
    )


def _train_member(
    images: Folders,
    labels: Labels,
    masks: Folders,
    folder: Path,
    cfg: TrainConfig,
    all_folds: bool,
    cache_root: str | Path | None,
    resume: bool,
    progress: bool,
    channel_map: ChannelMap | None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """One member: every fold (resumed per fold, kept when finished), or one run (kept when
    finished); kept only when made from the same inputs and settings."""
    from hpa.pipelines.folds import check_same_settings, train_folds
    from hpa.pipelines.train import check_model_kind, clear_other_kind, model_record, train_model

    log.info(
        "blend member %s: %s, %s start, channels %s, %s pooling -> %s",
        folder.name, cfg.backbone, cfg.pretrained or "random", cfg.channels, cfg.pooling, folder,
    )  # fmt: skip
    if overwrite:
        clear_other_kind(folder, blend=False, folds=all_folds)
    check_model_kind(folder, blend=False, folds=all_folds)
    if all_folds:
        return train_folds(
            images, labels, masks, folder, cfg, cache_root=cache_root, progress=progress,
            channel_map=channel_map, overwrite=overwrite,
        )  # fmt: skip
    if not overwrite:
        check_same_settings(folder, cfg)
    record = model_record("model", cfg, images, labels, masks)
    if (folder / ModelDir.METRICS).is_file() and check_reuse(folder, record, overwrite=overwrite):
        log.info("%s: finished earlier, kept", folder)
        return dict(ModelDir(folder).read_metrics())
    resume = (resume or (folder / ModelDir.CHECKPOINT).is_file()) and not overwrite
    return train_model(
        images, labels, masks, folder, cfg, cache_root=cache_root, resume=resume, progress=progress,
        channel_map=channel_map,
    )  # fmt: skip


def _scores(folder: Path, labels: Labels, all_folds: bool) -> tuple[list[str], np.ndarray]:
    """A member's validation (or out-of-fold) image scores, rows sorted by image Id."""
    path = folder / (ModelDir.OOF_IMAGES if all_folds else ModelDir.VAL_IMAGES)
    table: pd.DataFrame = read_csv_table(path).set_index(ID_COLUMN).sort_index()
    return list(table.index), table[list(labels.class_names)].to_numpy(np.float64)


def _f1_key(all_folds: bool) -> str:
    """The macro F1 a run records: out-of-fold with every fold, else on the validation images."""
    return "oof_macro_f1" if all_folds else "val_macro_f1"


def _own_f1(metrics: dict[str, Any], all_folds: bool) -> float:
    return float(metrics[_f1_key(all_folds)])


def _tile_weight(metrics: dict[str, Any]) -> float | None:
    w = metrics.get("tile_weight")
    return float(w) if w is not None else None


def train_feature_member(
    images: Folders,
    labels: Labels,
    masks: Folders,
    folder: Path,
    main: Path,
    cfg: TrainConfig,
    all_folds: bool,
) -> dict[str, Any]:
    """The ``features`` companion: a localisation-feature head on the main model's split.

    The head (:mod:`hpa.classification.feature_head`, its ``C`` chosen by inner
    cross-validation on the training images alone) is fitted on the images the main model
    trained on and scores its validation images (``val_image_scores.csv``); with
    ``all_folds`` one head per fold, each scoring its fold (``oof_image_scores.csv``), all
    of them saved and averaged by ``hpa predict``. Features are computed once per image
    and cached in its SEG_DIR (:func:`hpa.features.folder_features`). Writes
    ``feature_head.json``, the scores and ``metrics.json`` into ``folder``.

    Returns:
        The member's metrics: its own macro F1 (thresholds tuned on its scores) and ``C``.
    """
    from hpa.aggregation import apply_thresholds, macro_f1, tune_thresholds
    from hpa.classification.feature_head import (
        HEAD_FILE,
        feature_table,
        fit_feature_head_once,
        make_feature_head,
        write_feature_head,
    )

    folder.mkdir(parents=True, exist_ok=True)
    splits = [ModelDir(main).fold(k) for k in range(cfg.folds)] if all_folds else [ModelDir(main)]
    sides = [read_csv_table(s.path(ModelDir.SPLIT)).set_index(ID_COLUMN)["side"] for s in splits]
    ids = list(dict.fromkeys(i for side in sides for i in side.index))
    log.info("features companion: localisation features of %d images", len(ids))
    table = feature_table(images, masks, ids, workers=cfg.workers)
    columns = [c for c in table.columns if c != "n_cells"]
    heads, scored_ids, parts = [], [], []
    for side in sides:
        train = [i for i in side.index if side[i] == "train"]
        val = [i for i in side.index if side[i] == "val"]
        x = table.loc[train, columns].to_numpy(np.float64)
        head = fit_feature_head_once(x, labels.subset(train).y, seed=cfg.seed)
        heads.append(head)
        scored_ids += val
        parts.append(head.probabilities(table.loc[val, columns].to_numpy(np.float64)))
    model = make_feature_head(columns, heads, labels.class_names)
    write_feature_head(folder / HEAD_FILE, model)
    scores = np.concatenate(parts).astype(np.float32)
    cols = list(labels.class_names)
    judged = labels.subset(scored_ids)
    tuned = tune_thresholds(judged.y, scores, shrink=cfg.threshold_shrink)
    own = macro_f1(judged.y, apply_thresholds(scores, tuned.thresholds))
    key = _f1_key(all_folds)
    metrics = {key: own, "C": [h.c for h in heads], "n_features": len(columns), "n_images": len(ids)}
    if all_folds:
        write_labels(folder / ModelDir.OOF_LABELS, judged)
        write_csv(folder / ModelDir.OOF_IMAGES, image_score_table(scored_ids, scores, cols))
    else:
        write_csv(folder / ModelDir.VAL_IMAGES, image_score_table(scored_ids, scores, cols))
    save_json(folder / ModelDir.METRICS, metrics)
    log.info("features companion -> %s: C %s, %s %.4f", folder, metrics["C"], key, own)
    return metrics
