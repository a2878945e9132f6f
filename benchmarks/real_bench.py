"""Classification on real HPA images: 5-fold cross-validation on the 67 shared Kaggle samples.

Data: ``hpa-real/kaggle-2018`` (67 samples, official 2018 labels), segmented once with
``hpa segment`` (watershed) into ``OUT/seg-*`` and reused. Every row is judged by its
out-of-fold (OOF) image scores: 5 folds of iterative stratification (the split of
``hpa train-cells``), each image scored by the fold that did not train on it. The
thresholds applied to a fold's images are tuned on the OOF scores of the *other* four
folds (cross-fitted), so no image is scored with thresholds fitted on itself. Macro F1
is over the classes with at least 5 positives (9 classes); per-class F1 is reported.

Two kinds of rows:

* **probe** rows (cheap: this 2-core machine is shared): the backbone is frozen and
  every view (cell crop, tile) is embedded once, in eval mode, with the product's crop
  cache, channel mixing and normalisation; a linear head is then fitted per fold on
  the views' inherited labels (AdamW, full batch), view probabilities are pooled per
  image by the product's ``pool_views`` (max over cells, max over tiles, mean of the
  two). Rows vary one thing at a time: random vs ImageNet start, tiles only vs cells +
  tiles, channels, crop size, the 11 HPAv18 samples added to every training fold, one
  fold vs the 5-fold average (judged on 15 external real images: the 11 HPAv18
  samples and the 4 samples of ``hpa-2021-samples``, none of them among the 67).
* **train** rows: ``hpa train-cells --folds 5`` itself (``hpa.pipelines.folds``), the
  whole recipe with its own out-of-fold thresholds, re-scored here with cross-fitted
  thresholds.

Row results are cached in ``OUT/rows/<name>.json`` (delete one to rerun it); the report
goes to ``OUT/RESULTS-real.md``.

Usage::

    python benchmarks/real_bench.py --out benchmarks/out/real [--rows baseline,imagenet,...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

from hpa.artefacts import read_csv_table

log = logging.getLogger("real_bench")

MIN_POSITIVES = 5
FOLDS = 5
SEED = 0


@dataclass(frozen=True)
class Probe:
    """A probe row: frozen features of one start, channels and crop size; a linear head per fold."""

    start: str = "imagenet"  # imagenet | random
    channels: str = "rgby"
    crop_size: int = 64
    use_cells: bool = True
    use_tiles: bool = True
    extra: bool = False  # the HPAv18 samples join every training fold
    external: bool = False  # one fold vs 5-fold average on the external images
    backbone: str = "efficientnet_lite0"
    intensity: str = "dataset"  # how views are scaled to [0, 1] (TrainConfig.intensity)
    input_size: int | None = None  # the network's input side (None: the crop size)


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    probe: Probe | None = None
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides of a train row
    extra_train: bool = False  # a train row whose pool also holds the 11 HPAv18 samples
    blend: tuple[str, str] | None = None  # two train rows blended image by image (main, companion)


#: Settings of the frozen-backbone train rows (TrainConfig overrides of the CPU defaults).
FROZEN: dict[str, Any] = dict(
    backbone="efficientnet_lite0",
    pretrained="imagenet",
    freeze_epochs=-2,
    crop_size=64,
    input_size=128,
    intensity="view",
    channels="g",
    pooling="max",  # the CPU default when these rows were first run; "mean" rows say so
)
#: Settings of the from-scratch train rows: the previous CPU defaults (a small network
#: trained on all four channels), the recipe that wins on the synthetic benchmark.
SCRATCH: dict[str, Any] = dict(
    backbone="resnet10t",
    pretrained="none",
    freeze_epochs=0,
    crop_size=64,
    input_size=None,
    intensity="dataset",
    channels="rgby",
    pooling="max",
)
#: ``pretrained`` of a train row that starts from random weights saved to a file (the
#: frozen-backbone path needs a start to freeze; this is the control for ImageNet's).
RANDOM = "random-weights"

ROWS = [
    Row("baseline", "every class for every image (chance)"),
    Row("imagenet", "ImageNet start, cells + tiles, rgby, 64 px", Probe(external=True)),
    Row("tiles-only", "ImageNet start, tiles only (whole-image classification)", Probe(use_cells=False)),
    Row("cells-only", "ImageNet start, cells only", Probe(use_tiles=False)),
    Row("random", "random start, cells + tiles", Probe(start="random", backbone="efficientnet_lite0")),
    Row("rgb", "ImageNet start, channels rgb", Probe(channels="rgb")),
    Row("gbr+y", "ImageNet start, channels g,b,r+y", Probe(channels="g,b,r+y")),
    Row("hpav18", "ImageNet start, + 11 HPAv18 samples in every training fold", Probe(extra=True)),
    Row("train-default", "hpa train-cells --folds 5 with the no-flag CPU defaults", train={}),
    Row("crop96", "ImageNet start, 96 px crops", Probe(crop_size=96)),
    Row("crop128", "ImageNet start, 128 px crops", Probe(crop_size=128)),
    # hpa train-cells --folds 5 itself with a frozen ImageNet backbone (features computed
    # once, head fitted on them), each view scaled by its own bright end, 64 px crops
    # resized for the network; one thing varied per row
    Row("frozen-g-128", "frozen ImageNet, green only, view intensity, 64 px crops at 128", train=FROZEN),
    Row("frozen-g-224", "... at 224", train={**FROZEN, "input_size": 224}),
    Row("frozen-g-64", "... at 64 (no resize)", train={**FROZEN, "input_size": None}),
    Row("frozen-gb-128", "... channels g,b", train={**FROZEN, "channels": "g,b"}),
    Row("frozen-rgby-128", "... channels rgby", train={**FROZEN, "channels": "rgby"}),
    Row("frozen-g-128-dataset", "... dataset intensity", train={**FROZEN, "intensity": "dataset"}),
    Row("frozen-g-128-tiles", "... tiles only", train={**FROZEN, "use_cells": False}),
    Row("frozen-g-128-cells", "... cells only", train={**FROZEN, "use_tiles": False}),
    Row("frozen-gb-224", "... channels g,b at 224", train={**FROZEN, "channels": "g,b", "input_size": 224}),
    Row(
        "frozen-g-224-mean",
        "... at 224, cells mean-pooled",
        train={**FROZEN, "input_size": 224, "pooling": "mean"},
    ),
    Row(
        "frozen-gb-224-mean",
        "... channels g,b at 224, cells mean-pooled",
        train={**FROZEN, "channels": "g,b", "input_size": 224, "pooling": "mean"},
    ),
    Row("frozen-g-160", "... at 160", train={**FROZEN, "input_size": 160}),
    Row(
        "frozen-g-224-mean-tiles",
        "... at 224, tiles only (whole-image classification)",
        train={**FROZEN, "input_size": 224, "pooling": "mean", "use_cells": False},
    ),
    Row(
        "frozen-g-224-mean-random",
        "... at 224, cells mean-pooled, random weights instead of ImageNet",
        train={**FROZEN, "input_size": 224, "pooling": "mean", "pretrained": RANDOM},
    ),
    Row(
        "frozen-g-160-mean",
        "... at 160, cells mean-pooled",
        train={**FROZEN, "input_size": 160, "pooling": "mean"},
    ),
    Row(
        "frozen-g-224-dataset",
        "... at 224, dataset intensity",
        train={**FROZEN, "input_size": 224, "intensity": "dataset"},
    ),
    Row(
        "frozen-g-160-dataset",
        "... at 160, dataset intensity",
        train={**FROZEN, "input_size": 160, "intensity": "dataset"},
    ),
    Row(
        "frozen-gb-128-dataset",
        "... channels g,b, dataset intensity",
        train={**FROZEN, "channels": "g,b", "intensity": "dataset"},
    ),
    Row(
        "frozen-g-128-dataset-mean",
        "... dataset intensity, cells mean-pooled",
        train={**FROZEN, "intensity": "dataset", "pooling": "mean"},
    ),
    Row(
        "frozen-g-224-mean-crop96",
        "... at 224, cells mean-pooled, 96 px crops",
        train={**FROZEN, "input_size": 224, "pooling": "mean", "crop_size": 96},
    ),
    Row(
        "frozen-g-224-mean-crop128",
        "... at 224, cells mean-pooled, 128 px crops",
        train={**FROZEN, "input_size": 224, "pooling": "mean", "crop_size": 128},
    ),
    Row(
        "frozen-g-224-mean-hpav18",
        "... at 224, cells mean-pooled, + the 11 HPAv18 samples in the pool (judged on the 67)",
        train={**FROZEN, "input_size": 224, "pooling": "mean"},
        extra_train=True,
    ),
    Row(
        "frozen-b-224-mean",
        "... at 224, cells mean-pooled, blue (nucleus) only: what the reference channel alone tells",
        train={**FROZEN, "input_size": 224, "pooling": "mean", "channels": "b"},
    ),
    Row(
        "frozen-g-224-image",
        "... at 224, cells mean-pooled, image intensity (each image scaled by its own bright end)",
        train={**FROZEN, "input_size": 224, "pooling": "mean", "intensity": "image"},
    ),
    Row(
        "frozen-g-224-image-max",
        "... at 224, image intensity, cells max-pooled",
        train={**FROZEN, "input_size": 224, "intensity": "image"},
    ),
    Row(
        "frozen-g-224-mean-tflite",
        "... at 224, cells mean-pooled, on tf_efficientnet_lite0 (the checkpoint's own architecture: "
        "TF same padding, BatchNorm eps 1e-3)",
        train={**FROZEN, "input_size": 224, "pooling": "mean", "backbone": "tf_efficientnet_lite0"},
    ),
    # the no-flag CPU defaults: frozen-g-224-mean and its scratch companion blended image by
    # image (hpa.pipelines.blend); the weight and the thresholds applied to a fold's images
    # are chosen on the other folds' out-of-fold scores
    Row(
        "blend-default",
        "frozen-g-224-mean blended with scratch-rgby image by image, weight chosen on the other folds",
        blend=("frozen-g-224-mean", "scratch-rgby"),
    ),
    Row(
        "scratch-rgby",
        "the previous CPU recipe: resnet10t from random weights, trained, rgby, dataset intensity, 64 px, max",
        train=SCRATCH,
    ),
    Row(
        "frozen-g-128-random",
        "... random weights instead of ImageNet",
        train={**FROZEN, "pretrained": RANDOM},
    ),
]


# ------------------------------------------------------------------------- data ---


@dataclass
class Source:
    name: str
    images: Path
    labels: Any  # hpa.io.Labels
    masks: Path


def segmented(out: Path, name: str, images: Path) -> Path:
    """``hpa segment`` of a folder into ``OUT/seg-<name>`` (resumes: finished images are kept)."""
    seg = out / f"seg-{name}"
    cmd = [sys.executable, "-m", "hpa", "-q", "segment", str(images), "--out", str(seg), "--workers", "1"]
    subprocess.run(cmd, check=True)
    return seg


def sources(data: Path, out: Path) -> dict[str, Source]:
    from hpa.io import list_image_ids, read_labels

    real = data / "hpa-real"
    found = {}
    for name, images, labels in (
        ("kaggle", real / "kaggle-2018" / "images", real / "kaggle-2018" / "train.csv"),
        ("hpav18", real / "hpav18" / "images", real / "hpav18" / "labels.csv"),
        ("hpa2021", data / "hpa-2021-samples" / "images", data / "hpa-2021-samples" / "labels_2018.csv"),
    ):
        lab = read_labels(labels)
        lab = lab.subset([i for i in lab.ids if i in set(list_image_ids(images))])
        found[name] = Source(name, images, lab, segmented(out, name, images))
    return found


# ------------------------------------------------------------------ features ---


def embed(src: Source, probe: Probe, out: Path, ref: Source) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Frozen features of every view of ``src`` (cached in ``OUT/features``).

    Inputs are normalised with the statistics of ``ref``'s views (the training set), as
    a model folder does for every image it scores.

    Returns:
        ``(index, (N, D) float32 features, seconds spent embedding now)``.
    """
    import torch

    from hpa.classification.cache import build_cache, channel_stats
    from hpa.classification.channels import channel_matrix, parse_channels
    from hpa.classification.crops import CropSettings
    from hpa.classification.data import BatchLoader
    from hpa.classification.inference import autocast
    from hpa.classification.model import create_model

    key = f"{src.name}-{probe.backbone}-{probe.start}-{probe.channels.replace(',', '_')}-{probe.crop_size}"
    if probe.intensity != "dataset" or probe.input_size is not None:  # the earlier rows keep their names
        key += f"-{probe.intensity}-{probe.input_size or probe.crop_size}"
    path = out / "features" / f"{key}.npz"
    settings = CropSettings(probe.crop_size)
    cache = build_cache(src.images, src.masks, list(src.labels.ids), settings, out / "crop-cache", workers=1)
    if path.is_file():
        return cache.index, np.load(path)["features"], 0.0
    t0 = time.perf_counter()
    mix = channel_matrix(parse_channels(probe.channels))
    torch.manual_seed(SEED)
    net = create_model(
        probe.backbone, 0, mix.shape[0], "imagenet" if probe.start == "imagenet" else None
    ).eval()
    ref_cache = build_cache(
        ref.images, ref.masks, list(ref.labels.ids), settings, out / "crop-cache", workers=1
    )
    mean, std = channel_stats(ref_cache, np.arange(len(ref_cache)), mix=mix, intensity=probe.intensity)
    loader = BatchLoader(
        cache.views, np.arange(len(cache)), None, 64, mean, std, cache.scale, mix=mix,
        intensity=probe.intensity, size=probe.input_size or probe.crop_size,
    )  # fmt: skip
    parts = []
    with torch.inference_mode(), autocast("cpu", "auto"):
        for x, _ in loader:
            parts.append(net(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    feats = np.concatenate(parts).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=feats)
    return cache.index, feats, time.perf_counter() - t0


def fit_head(x: np.ndarray, y: np.ndarray, seed: int = SEED, steps: int = 300) -> Any:
    """A linear head on standardised features: BCE, AdamW, full batch. Returns a predict function."""
    import torch

    # one thread: on a shared, oversubscribed CPU, OpenMP threads waiting for each other
    # made these small products many times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_head(x, y, seed, steps)
    finally:
        torch.set_num_threads(threads)


def _fit_head(x: np.ndarray, y: np.ndarray, seed: int, steps: int) -> Any:
    import torch

    mu, sd = x.mean(0), x.std(0) + 1e-6
    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy((x - mu) / sd)
    yt = torch.from_numpy(y.astype(np.float32))
    w = (torch.randn(x.shape[1], y.shape[1], generator=g) * 0.01).requires_grad_()
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.AdamW([w, b], lr=3e-3, weight_decay=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w_, b_ = w.detach(), b.detach()

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(torch.from_numpy((z - mu) / sd) @ w_ + b_).numpy()

    return predict


# ------------------------------------------------------------------- scoring ---


def fold_of(y: np.ndarray) -> np.ndarray:
    """The validation fold of every image (the split of ``hpa train-cells``)."""
    from hpa.classification.validation import split_images

    fold = np.full(len(y), -1)
    for k in range(FOLDS):
        fold[split_images(y, FOLDS, k, SEED)[1]] = k
    return fold


def cross_fitted(y: np.ndarray, scores: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Predictions of each fold's images with thresholds tuned on the other folds' OOF scores."""
    from hpa.aggregation import apply_thresholds, tune_thresholds

    pred = np.zeros_like(y)
    for k in range(FOLDS):
        other = fold != k
        tuned = tune_thresholds(y[other], scores[other], shrink=5.0)
        pred[~other] = apply_thresholds(scores[~other], tuned.thresholds)
    return pred


def judged(y: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> tuple[float, list[float]]:
    from hpa.aggregation import f1_per_class

    f1 = f1_per_class(y[:, classes], pred[:, classes])
    return float(f1.mean()), [round(float(v), 3) for v in f1]


def run_probe(row: Row, src: dict[str, Source], out: Path, classes: np.ndarray) -> dict[str, Any]:
    from hpa.classification.inference import pool_views

    assert row.probe is not None
    p = row.probe
    t0 = time.perf_counter()
    kag = src["kaggle"]
    index, feats, embed_s = embed(kag, p, out, kag)
    y = kag.labels.y
    row_of = {i: k for k, i in enumerate(kag.labels.ids)}
    kinds = {"cell"} if not p.use_tiles else {"tile"} if not p.use_cells else {"cell", "tile"}
    usable = index["kind"].isin(kinds).to_numpy()
    view_img = np.array([row_of[i] for i in index["image_id"]])
    fold = fold_of(y)
    extra_x = extra_y = None
    if p.extra:
        e = src["hpav18"]
        e_index, e_feats, e_s = embed(e, p, out, kag)
        embed_s += e_s
        keep = e_index["kind"].isin(kinds).to_numpy()
        e_row = {i: k for k, i in enumerate(e.labels.ids)}
        extra_x = e_feats[keep]
        extra_y = e.labels.y[[e_row[i] for i in e_index["image_id"][keep]]]
    scores = np.zeros(y.shape, np.float32)
    heads = []
    for k in range(FOLDS):
        train = usable & (fold[view_img] != k)
        val = usable & (fold[view_img] == k)
        x_t, y_t = feats[train], y[view_img[train]]
        if extra_x is not None:
            x_t, y_t = np.concatenate([x_t, extra_x]), np.concatenate([y_t, extra_y])
        head = fit_head(x_t, y_t, seed=SEED + k)
        heads.append(head)
        ids_k = [kag.labels.ids[i] for i in np.flatnonzero(fold == k)]
        s = pool_views(index[val], head(feats[val]), ids_k, "max", 0.5, p.use_cells, p.use_tiles)
        scores[fold == k] = s
    pred = cross_fitted(y, scores, fold)
    macro, per_class = judged(y, pred, classes)
    result: dict[str, Any] = {
        "macro_f1": macro,
        "per_class": per_class,
        "seconds": time.perf_counter() - t0,
        "embed_seconds": embed_s,
    }
    if p.external:
        result["external"] = external(p, heads, scores, y, fold, src, out)
        result["seconds"] = time.perf_counter() - t0
    return result


def external(
    p: Probe,
    heads: list[Any],
    oof: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    src: dict[str, Source],
    out: Path,
) -> dict[str, Any]:
    """One fold (its own 13 validation images' thresholds) vs the 5-fold average (OOF thresholds)."""
    from hpa.aggregation import apply_thresholds, tune_thresholds
    from hpa.classification.inference import pool_views

    ids, ys, parts = [], [], []
    for name in ("hpav18", "hpa2021"):
        s = src[name]
        index, feats, _ = embed(s, p, out, src["kaggle"])
        ids += list(s.labels.ids)
        ys.append(s.labels.y)
        parts.append((index, feats, list(s.labels.ids)))
    y_ext = np.concatenate(ys)
    classes = np.flatnonzero(y_ext.sum(0) >= 1)

    def scores_of(members: list[Any]) -> np.ndarray:
        out_s = []
        for index, feats, these in parts:
            probs = np.mean([h(feats) for h in members], axis=0)
            out_s.append(pool_views(index, probs, these, "max", 0.5, p.use_cells, p.use_tiles))
        return np.concatenate(out_s)

    one = tune_thresholds(y[fold == 0], oof[fold == 0], shrink=5.0).thresholds
    every = tune_thresholds(y, oof, shrink=5.0).thresholds
    f_one = judged(y_ext, apply_thresholds(scores_of(heads[:1]), one), classes)
    f_all = judged(y_ext, apply_thresholds(scores_of(heads), every), classes)
    return {
        "n_images": len(ids),
        "classes": classes.tolist(),
        "one_fold": f_one[0],
        "one_fold_per_class": f_one[1],
        "five_folds": f_all[0],
        "five_folds_per_class": f_all[1],
    }


def external_train(
    model_dir: Path, src: dict[str, Source], out: Path, keys: tuple[str, ...] = ("one_fold", "five_folds")
) -> dict[str, Any]:
    """``hpa predict`` of the 15 external images with fold 0 alone and with the 5-fold average.

    Fold 0 applies the thresholds tuned on its own validation images; the folder of
    folds averages the folds and applies the thresholds tuned on every training image's
    out-of-fold score. Macro F1 over the classes with a positive among the 15 images.
    """
    from hpa.aggregation.submission import read_submission
    from hpa.api import predict_folder

    result: dict[str, Any] = {}
    models = {"one_fold": model_dir / "fold-0", "five_folds": model_dir}
    for key, model in ((k, models[k]) for k in keys):
        preds, truth = [], []
        for name in ("hpav18", "hpa2021"):
            s = src[name]
            pred = out / "external" / f"{model_dir.name}-{key}-{name}"
            predict_folder(s.images, model, pred, masks=s.masks, ids=list(s.labels.ids), progress=False)
            sub_ids, y_pred = read_submission(pred / "submission.csv", "2018")
            assert sub_ids == list(s.labels.ids)
            preds.append(y_pred)
            truth.append(s.labels.y)
        y_ext, p_ext = np.concatenate(truth), np.concatenate(preds)
        ext_classes = np.flatnonzero(y_ext.sum(0) >= 1)
        macro, per_class = judged(y_ext, p_ext, ext_classes)
        result.update({key: macro, f"{key}_per_class": per_class, "classes": ext_classes.tolist()})
        result["n_images"] = len(y_ext)
    return result


def run_train(row: Row, src: dict[str, Source], out: Path, classes: np.ndarray) -> dict[str, Any]:
    """``hpa train-cells --folds 5`` with the CPU defaults (and the row's overrides)."""
    from hpa.classification.train import TrainConfig
    from hpa.pipelines.folds import train_folds

    kag = src["kaggle"]
    settings = {"workers": 1, "folds": FOLDS, "seed": SEED, **row.train}
    if settings.get("pretrained") == RANDOM:
        settings["pretrained"] = str(random_weights(out, settings["backbone"]))
    cfg = TrainConfig.for_device("cpu", source=row.name, **settings)
    t0 = time.perf_counter()
    model_dir = out / "models" / (row.name if SEED == 0 else f"{row.name}-seed{SEED}")
    images, labels, masks = kag.images, kag.labels, kag.masks
    if row.extra_train:  # the HPAv18 samples join the pool: they train in four folds of five
        from hpa.pipelines.train import combine_sources

        ext = src["hpav18"]
        images, labels, masks = combine_sources(  # type: ignore[assignment]
            [kag.images, ext.images], [kag.labels, ext.labels], [kag.masks, ext.masks]
        )
    metrics = train_folds(
        images, labels, masks, model_dir, cfg, cache_root=out / "crop-cache", progress=False
    )
    oof = read_csv_table(model_dir / "oof_image_scores.csv").set_index("image_id").loc[list(kag.labels.ids)]
    y = kag.labels.y
    pred = cross_fitted(y, oof.to_numpy(np.float32), fold_of(y))
    seconds = time.perf_counter() - t0  # training the five folds (the external check is not timed)
    external = external_train(model_dir, src, out) if row.name == "train-default" else None
    macro, per_class = judged(y, pred, classes)
    return {
        "macro_f1": macro,
        "per_class": per_class,
        "seconds": seconds,
        "oof_macro_f1_own_thresholds": metrics["oof_macro_f1"],
        **({"external": external} if external is not None else {}),
        "settings": {k: v for k, v in cfg.__dict__.items() if k in ("backbone", "pretrained", "crop_size",
                                                                     "epochs", "freeze_epochs", "lr", "channels",
                                                                     "intensity", "input_size", "use_cells",
                                                                     "use_tiles")},
    }  # fmt: skip


def run_blend(row: Row, src: dict[str, Source], out: Path, classes: np.ndarray) -> dict[str, Any]:
    """Two train rows blended as ``hpa train-cells`` blends a model and its companion.

    For each fold, :func:`hpa.pipelines.blend.choose_blend_weight` picks the main row's
    share on the other four folds' out-of-fold scores, and the thresholds are tuned there
    on the blended scores: no image is judged with a weight or thresholds fitted on itself.
    """
    from hpa.aggregation import apply_thresholds, tune_thresholds
    from hpa.pipelines.blend import choose_blend_weight

    assert row.blend is not None
    t0 = time.perf_counter()
    kag = src["kaggle"]
    by_name = {r.name: r for r in ROWS}
    scores = []
    for name in row.blend:
        model_dir = out / "models" / (name if SEED == 0 else f"{name}-seed{SEED}")
        if not (model_dir / "oof_image_scores.csv").is_file():
            run_train(by_name[name], src, out, classes)
        oof = read_csv_table(model_dir / "oof_image_scores.csv").set_index("image_id")
        scores.append(oof.loc[list(kag.labels.ids)].to_numpy(np.float64))
    y, fold = kag.labels.y, fold_of(kag.labels.y)
    pred = np.zeros_like(y)
    weights = []
    for k in range(FOLDS):
        other = fold != k
        w, _, _ = choose_blend_weight(y[other], scores[0][other], scores[1][other], seed=SEED)
        blended = (w * scores[0] + (1 - w) * scores[1]).astype(np.float32)
        tuned = tune_thresholds(y[other], blended[other], shrink=5.0)
        pred[~other] = apply_thresholds(blended[~other], tuned.thresholds)
        weights.append(w)
    macro, per_class = judged(y, pred, classes)
    seconds = time.perf_counter() - t0  # the blend itself; the rows' training is in theirs
    ext = external_blend(row, src, out) if SEED == 0 else None
    return {
        "macro_f1": macro,
        "per_class": per_class,
        "seconds": seconds,
        "main_share_per_fold": weights,
        **({"external": ext} if ext is not None else {}),
    }


def external_blend(row: Row, src: dict[str, Source], out: Path) -> dict[str, Any]:
    """The blend folder ``hpa train-cells --folds 5`` writes (its members are the rows' fold
    folders, linked), run through ``hpa predict`` on the 15 external images."""
    from hpa.classification.ensemble import MAIN
    from hpa.classification.train import TrainConfig
    from hpa.pipelines.blend import train_blend

    assert row.blend is not None
    folder = out / "models" / f"{row.name}-product"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.for_device("cpu", source=row.name, workers=1, folds=FOLDS, seed=SEED)
    for member, name in zip((MAIN, cfg.companion), row.blend):
        link = folder / str(member)
        if not link.exists():
            link.symlink_to((out / "models" / name).resolve())
    kag = src["kaggle"]
    metrics = train_blend(kag.images, kag.labels, kag.masks, folder, cfg, all_folds=True, progress=False)
    result = external_train(folder, src, out, keys=("five_folds",))
    result["main_share"] = metrics["blend"]["weights"][MAIN]
    return result


def random_weights(out: Path, backbone: str) -> Path:
    """A randomly initialised ``backbone`` (seed 0) saved as a checkpoint file under ``out``."""
    import timm
    import torch
    from safetensors.torch import save_file

    path = out / f"random-{backbone}.safetensors"
    if not path.is_file():
        torch.manual_seed(SEED)
        net = timm.create_model(backbone, pretrained=False)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def run_baseline(src: dict[str, Source], classes: np.ndarray) -> dict[str, Any]:
    y = src["kaggle"].labels.y
    macro, per_class = judged(y, np.ones_like(y), classes)
    return {"macro_f1": macro, "per_class": per_class, "seconds": 0.0}


# -------------------------------------------------------------------- report ---


def report(rows: list[tuple[Row, dict[str, Any]]], names: list[str], command: str) -> str:
    base = next((r for row, r in rows if row.name == "baseline"), None)
    lines = [
        "## Real images: 5-fold cross-validation on 67 Kaggle 2018 samples (`benchmarks/real_bench.py`)",
        "",
        f"Command: `{command}`.  ",
        f"Machine: {machine()}, shared with six other engineers' runs (load average 10-20 on 2 cores "
        "during these runs, so every time below is several times what an idle machine takes).",
        "",
        "Out-of-fold macro F1 over the 9 classes with >= 5 positives, thresholds cross-fitted "
        "(tuned on the other four folds' out-of-fold scores). Time: the row's own work "
        "(features embedded once per start/channels/crop size and reused by later rows).",
        "",
        "| row | what | macro F1 | vs chance | time (s) | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for row, r in rows:
        gain = "" if base is None else f"{r['macro_f1'] - base['macro_f1']:+.3f}"
        lines.append(
            f"| {row.name} | {row.what} | {r['macro_f1']:.3f} | {gain} | {r['seconds']:.0f} | "
            + " | ".join(f"{v:.2f}" for v in r["per_class"])
            + " |"
        )
    for row, r in rows:
        if "external" in r and "one_fold" not in r["external"]:  # a blend folder
            e = r["external"]
            lines += [
                "",
                f"{row.name} as `hpa train-cells --folds 5` writes it (main model's share {e['main_share']}), "
                f"through `hpa predict` on {e['n_images']} external real images (macro F1 over their "
                f"{len(e['classes'])} classes with a positive): {e['five_folds']:.3f}.",
            ]
        elif "external" in r:
            e = r["external"]
            lines += [
                "",
                f"One fold vs the 5-fold average ({row.name} features), on {e['n_images']} external real "
                f"images (11 HPAv18 + 4 hpa-2021-samples; macro F1 over their {len(e['classes'])} classes "
                f"with a positive, {e['classes']}): one fold (thresholds from its 13 validation images) "
                f"{e['one_fold']:.3f}, the 5-fold average (out-of-fold thresholds) {e['five_folds']:.3f}.",
            ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/out/real")
    p.add_argument("--data", default=os.environ.get("HPA_SHARED_DATA", "../shared/data"))
    p.add_argument("--rows", default=None, help="comma-separated row names (default: all, in order)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the fold split and of training (rows of seed K > 0 go to OUT/rows-seed<K>)",
    )
    args = p.parse_args()
    global SEED
    SEED = args.seed
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    out = Path(args.out)
    rows_dir = out / ("rows" if SEED == 0 else f"rows-seed{SEED}")
    rows_dir.mkdir(parents=True, exist_ok=True)
    src = sources(Path(args.data), out)
    y = src["kaggle"].labels.y
    classes = np.flatnonzero(y.sum(0) >= MIN_POSITIVES)
    names = [src["kaggle"].labels.class_names[c] for c in classes]
    wanted = args.rows.split(",") if args.rows else [r.name for r in ROWS]
    done: list[tuple[Row, dict[str, Any]]] = []
    for row in ROWS:
        path = rows_dir / f"{row.name}.json"
        if row.name in wanted and not path.is_file():
            log.info("row %s: %s", row.name, row.what)
            if row.name == "baseline":
                result = run_baseline(src, classes)
            elif row.probe is not None:
                result = run_probe(row, src, out, classes)
            elif row.blend is not None:
                result = run_blend(row, src, out, classes)
            else:
                result = run_train(row, src, out, classes)
            path.write_text(json.dumps(result, indent=2))
            log.info("row %s: macro F1 %.3f in %.0f s", row.name, result["macro_f1"], result["seconds"])
        if path.is_file():
            done.append((row, json.loads(path.read_text())))
    command = " ".join(["python", "benchmarks/real_bench.py", *sys.argv[1:]])
    text = report(done, names, command)
    (out / "RESULTS-real.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
