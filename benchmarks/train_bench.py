"""Classification quality and speed on the synthetic benchmark (CPU).

Quality: ``hpa synth`` (400 train / 150 test at 512 px, fixed seed) segmented with the
watershed backend; three models with the CPU defaults, trained on tiles only, cells
only, and cells + tiles; each predicts the test split; image-level macro F1 and
per-class F1 side by side. From the same runs: tuned per-class thresholds against one
global 0.5 threshold, and max against mean pooling (thresholds re-tuned on the
validation images for each pooling).

Speed: training crops/s of the default backbone at 64 and 128 px through the real data
pipeline (crop cache, augmentation), against the backbone's bare forward + backward
throughput on random tensors, measured in the same run.

Usage::

    python benchmarks/train_bench.py --out benchmarks/out/train [--n-train 400 --n-test 150]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

log = logging.getLogger("train_bench")


def repool_f1(model_dir: Path, pred_dir: Path, truth_csv: Path, pooling: str) -> tuple[float, float]:
    """Test macro F1 with ``pooling``, thresholds re-tuned on the validation views.

    Returns ``(f1 with tuned thresholds, f1 with one global 0.5 threshold)``.
    """
    from hpa.aggregation import apply_thresholds, macro_f1, tune_thresholds
    from hpa.classification.inference import pool_views
    from hpa.classification.model import load_model_config
    from hpa.io import read_labels

    cfg = load_model_config(model_dir)
    names = list(cfg.class_names)
    split = pd.read_csv(model_dir / "split.csv")
    train_labels = read_labels(model_dir.parent / "data" / "train.csv")
    val_ids = split.loc[split.side == "val", "image_id"].tolist()
    val = pd.read_parquet(model_dir / "val_cell_scores.parquet")
    val_scores = pool_views(
        val, val[names].to_numpy(), val_ids, pooling, cfg.tile_weight, cfg.use_cells, cfg.use_tiles
    )
    tuned = tune_thresholds(train_labels.subset(val_ids).y, val_scores)
    truth = read_labels(truth_csv)
    test_ids = list(truth.ids)
    cells = pd.read_parquet(pred_dir / "cell_predictions.parquet")
    cells["kind"] = "cell"
    tiles = pd.read_parquet(pred_dir / "tile_predictions.parquet").rename(columns={"tile": "cell_id"})
    tiles["kind"] = "tile"
    views = pd.concat([cells, tiles], ignore_index=True)
    test_scores = pool_views(
        views, views[names].to_numpy(), test_ids, pooling, cfg.tile_weight, cfg.use_cells, cfg.use_tiles
    )
    f1_tuned = macro_f1(truth.y, apply_thresholds(test_scores, tuned.thresholds))
    f1_half = macro_f1(truth.y, apply_thresholds(test_scores, np.full(len(names), 0.5)))
    return f1_tuned, f1_half


def quality(args: argparse.Namespace) -> tuple[str, dict]:
    from hpa.classification.train import DEVICE_DEFAULTS, TrainConfig
    from hpa.config import from_dict
    from hpa.io import read_id_list, read_labels
    from hpa.pipelines.evaluate import evaluate
    from hpa.pipelines.predict import predict_folder
    from hpa.pipelines.segment import segment_folder
    from hpa.pipelines.train import train_model
    from hpa.synthetic import write_dataset

    out = Path(args.out)
    data = out / "data"
    timings = {}
    t = time.perf_counter()
    if not (data / "test_labels.csv").is_file():
        write_dataset(data, args.n_train, args.n_test, seed=args.seed, workers=2)
    timings["synth"] = time.perf_counter() - t  # 0 when the dataset was already there
    t = time.perf_counter()
    segment_folder(data / "train", out / "seg-train", workers=2)
    segment_folder(data / "test", out / "seg-test", workers=2)
    timings["segment"] = time.perf_counter() - t
    base = from_dict(
        TrainConfig,
        {**DEVICE_DEFAULTS["cpu"], "device": "cpu", "workers": 2, "seed": args.seed},
        source="bench",
    )
    if args.epochs:
        base = replace(base, epochs=args.epochs)
    variants = {
        "tiles only": replace(base, use_cells=False),
        "cells only": replace(base, use_tiles=False),
        "cells + tiles": base,
    }
    results, per_class = {}, {}
    truth = data / "test_labels.csv"
    for name, cfg in variants.items():
        slug = name.replace(" + ", "-").replace(" ", "-")
        model = out / f"model-{slug}"
        t = time.perf_counter()
        metrics = train_model(
            data / "train",
            read_labels(data / "train.csv"),
            out / "seg-train",
            model,
            cfg,
            cache_root=out / "cache",
        )
        train_s = time.perf_counter() - t
        pred = out / f"pred-{slug}"
        t = time.perf_counter()
        predict_folder(
            data / "test",
            model,
            pred,
            masks=out / "seg-test",
            ids=read_id_list(data / "sample_submission.csv"),
            workers=2,
        )
        pred_s = time.perf_counter() - t
        ev = evaluate(pred / "submission.csv", truth)
        f1_max, f1_max_half = repool_f1(model, pred, truth, "max")
        f1_mean, f1_mean_half = repool_f1(model, pred, truth, "mean")
        results[name] = {
            "test_macro_f1": ev["macro_f1"],
            "val_macro_f1": metrics["val_macro_f1"],
            "f1_max_tuned": f1_max,
            "f1_max_at_0.5": f1_max_half,
            "f1_mean_tuned": f1_mean,
            "f1_mean_at_0.5": f1_mean_half,
            "train_s": train_s,
            "predict_s": pred_s,
            "best_epoch": metrics["best_epoch"],
        }
        per_class[name] = {r["name"]: r["f1"] for r in ev["per_class"]}
        log.info("%s: %s", name, results[name])
    lines = [
        f"Synthetic benchmark: {args.n_train} train / {args.n_test} test images at 512 px (hpa synth seed "
        f"{args.seed}), watershed masks, CPU defaults ({base.backbone}, {base.crop_size} px crops, "
        f"{base.epochs} epochs, batch {base.batch_size}). Synthesis {timings['synth']:.0f} s, "
        f"segmentation {timings['segment']:.0f} s.",
        "",
        "| views trained on | test macro F1 | val macro F1 | train s | predict s |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | **{r['test_macro_f1']:.3f}** | {r['val_macro_f1']:.3f} | {r['train_s']:.0f} "
            f"| {r['predict_s']:.0f} |"
        )
    lines += [
        "",
        "Thresholds and pooling (test macro F1; thresholds tuned on the validation images of each run "
        "for each pooling):",
        "",
        "| views | max, tuned | max, 0.5 | mean, tuned | mean, 0.5 |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['f1_max_tuned']:.3f} | {r['f1_max_at_0.5']:.3f} | {r['f1_mean_tuned']:.3f} "
            f"| {r['f1_mean_at_0.5']:.3f} |"
        )
    table = pd.DataFrame(per_class)
    lines += [
        "",
        "Per-class test F1:",
        "",
        "| class | " + " | ".join(table.columns) + " |",
        "|---|" + "---|" * len(table.columns),
    ]
    for cls, row in table.iterrows():
        lines.append(f"| {cls} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines), results


def speed(args: argparse.Namespace) -> str:
    """Training crops/s through the data pipeline against bare model throughput."""
    import torch

    from hpa.classification.cache import build_cache
    from hpa.classification.crops import CropSettings
    from hpa.classification.model import create_model
    from hpa.classification.train import DEVICE_DEFAULTS, TrainConfig, TrainData, fit, throughput
    from hpa.config import from_dict
    from hpa.io import list_image_ids

    out = Path(args.out)
    data = out / "data"
    ids = list_image_ids(data / "train")[:60]
    rows = ["| crop px | pipeline crops/s | bare fwd+bwd crops/s | ratio |", "|---|---|---|---|"]
    torch.set_num_threads(os.cpu_count() or 1)
    for size in (64, 128):
        cfg = from_dict(
            TrainConfig,
            {
                **DEVICE_DEFAULTS["cpu"],
                "device": "cpu",
                "crop_size": size,
                "epochs": 1,
                "max_steps": args.speed_steps,
            },
            source="bench",
        )
        cache = build_cache(
            data / "train",
            out / "seg-train",
            ids,
            CropSettings(crop_size=size),
            out / "cache",
            workers=2,
            progress=False,
        )
        n = len(cache)
        targets = np.zeros((n, 28), np.float32)
        td = TrainData(
            cache.views,
            cache.scale,
            cache.index,
            np.arange(n),
            np.arange(min(n, 64)),
            targets,
            [cache.index.image_id.iloc[0]],
            np.zeros((1, 28), np.uint8),
            np.full(4, 0.1),
            np.full(4, 0.1),
        )
        model = create_model(cfg.backbone, 28)
        bare = throughput(
            create_model(cfg.backbone, 28), cfg.batch_size, size, steps=args.speed_steps, warmup=3
        )
        _, hist = fit(model, td, cfg, out / f"speed-{size}.ckpt")
        pipe = hist[0]["crops_per_s"]
        rows.append(f"| {size} | {pipe:.0f} | {bare:.0f} | {pipe / bare:.2f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/out/train")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=150)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--speed-steps", type=int, default=30)
    p.add_argument("--skip-quality", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    parts = [f"Machine: {machine()}. Command: `python benchmarks/train_bench.py --out {args.out}`."]
    if not args.skip_quality:
        table, results = quality(args)
        parts.append(table)
        (Path(args.out) / "quality.json").write_text(json.dumps(results, indent=2))
    parts.append("Training speed (default CPU backbone, batch 64):\n\n" + speed(args))
    parts.append(f"Whole benchmark: {time.perf_counter() - t0:.0f} s.")
    text = "\n\n".join(parts)
    print(text)
    (Path(args.out) / "RESULTS-train.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
