"""Classification quality and speed on the synthetic benchmark (CPU).

Quality: ``hpa synth`` (2,000 train / 300 test images at 512 px, fixed seed) segmented
with the watershed backend; two trainings with the CPU defaults: on tiles only, and on
cells + tiles. Each predicts the test split. "Cells only" scores the cells + tiles model
from its cell crops alone (tile weight 0, thresholds re-tuned on its validation images).
Image-level macro F1 and per-class F1 side by side; from the same runs, tuned thresholds
against one global 0.5 threshold, and max against mean pooling (thresholds re-tuned on
the validation images for each pooling). The quality part must finish in under 20
minutes on a 2-core CPU; its wall time is reported on its own.

Speed: training crops/s of the default backbone at 64 and 128 px through the real data
pipeline (crop cache, augmentation), against the backbone's bare forward + backward
throughput on random tensors (same precision and memory format), measured in the same run.

Usage::

    python benchmarks/train_bench.py --out benchmarks/out/train [--n-train 2000 --n-test 300]
        [--epochs E] [--config '{"ema": 0}'] [--skip-quality] [--skip-speed]

A run whose model and predictions are complete in OUT is reused (times from OUT/timings.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

log = logging.getLogger("train_bench")


def rescore(
    model_dir: Path,
    pred_dir: Path,
    truth_csv: Path,
    train_csv: Path,
    pooling: str = "max",
    use_tiles: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test predictions re-pooled from a run's saved view scores.

    Thresholds are re-tuned on the run's validation views pooled the same way, so each
    variant is judged as ``hpa train-cells`` would have tuned it.

    Args:
        pooling: cell-to-image pooling.
        use_tiles: False = cell scores only (tile weight 0); None = as trained.

    Returns:
        ``(y_true, predicted with tuned thresholds, predicted with one 0.5 threshold)``,
        multi-hot ``(M, C)`` arrays in the order of ``truth_csv``.
    """
    from hpa.aggregation import apply_thresholds, tune_thresholds
    from hpa.artefacts import ModelDir, PredDir, read_parquet_table
    from hpa.artefacts.tables import join_views
    from hpa.classification.inference import pool_views
    from hpa.classification.model import load_model_config
    from hpa.io import read_labels

    cfg = load_model_config(model_dir)
    names = list(cfg.class_names)
    tiles_on = cfg.use_tiles if use_tiles is None else use_tiles
    weight = cfg.tile_weight if tiles_on else 0.0
    split = pd.read_csv(model_dir / "split.csv")
    val_ids = split.loc[split.side == "val", "image_id"].tolist()
    val = ModelDir(model_dir).read_val_views(names)
    val_scores = pool_views(val, val[names].to_numpy(), val_ids, pooling, weight, cfg.use_cells, tiles_on)
    import yaml

    train_cfg = yaml.safe_load((model_dir / "train_config.yaml").read_text())
    shrink = float(train_cfg.get("threshold_shrink", 0.0))
    tuned = tune_thresholds(read_labels(train_csv).subset(val_ids).y, val_scores, shrink=shrink)
    truth = read_labels(truth_csv)
    pred = PredDir(pred_dir)
    views = join_views(
        read_parquet_table(pred.path(pred.CELLS)), read_parquet_table(pred.path(pred.TILES)), names
    )
    scores = pool_views(
        views, views[names].to_numpy(), list(truth.ids), pooling, weight, cfg.use_cells, tiles_on
    )
    return (
        truth.y,
        apply_thresholds(scores, tuned.thresholds),
        apply_thresholds(scores, np.full(len(names), 0.5)),
    )


def quality(args: argparse.Namespace) -> tuple[str, dict]:
    from hpa.aggregation import macro_f1, per_class_report
    from hpa.classification.model import load_model_config
    from hpa.classification.train import TrainConfig
    from hpa.constants import CLASS_NAMES_2018
    from hpa.io import read_id_list, read_labels, write_text_atomic
    from hpa.pipelines.evaluate import evaluate
    from hpa.pipelines.predict import predict_folder
    from hpa.pipelines.segment import segment_folder
    from hpa.pipelines.train_command import train_cells
    from hpa.synthetic import write_dataset

    out = Path(args.out)
    data = out / "data"
    timings = {}
    t = time.perf_counter()
    if not (data / "test_labels.csv").is_file():
        write_dataset(data, args.n_train, args.n_test, seed=args.seed, workers=2)
    have = (len(read_labels(data / "train.csv")), len(read_labels(data / "test_labels.csv")))
    if have != (args.n_train, args.n_test):
        raise SystemExit(f"{data} holds {have[0]} train / {have[1]} test images, not {args.n_train} / "
                         f"{args.n_test}: use another --out")  # fmt: skip
    timings["synth"] = time.perf_counter() - t  # 0 when the dataset was already there
    t = time.perf_counter()
    segment_folder(data / "train", out / "seg-train", workers=2)
    segment_folder(data / "test", out / "seg-test", workers=2)
    timings["segment"] = time.perf_counter() - t
    overrides = {k: v for k, v in json.loads(args.config).items()} if args.config else {}
    if args.epochs:
        overrides["epochs"] = args.epochs
    # the CPU defaults and the overrides, resolved as hpa train-cells resolves its flags
    # (another backbone drops the ImageNet start and the companion unless they are named)
    base = TrainConfig.for_device("cpu", source="bench", workers=2, seed=args.seed, **overrides)
    # two trainings: tiles only, and cells + tiles; "cells only" scores the cells + tiles
    # model's cell crops alone (tile weight 0, thresholds re-tuned on its validation views)
    trained = {"tiles only": replace(base, use_cells=False), "cells + tiles": base}
    results, per_class, runs = {}, {}, {}
    truth = data / "test_labels.csv"
    train_csv = data / "train.csv"
    # a run whose model and predictions are complete is reused (its times from timings.json)
    timings_file = out / "timings.json"
    done = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    for name, cfg in trained.items():
        slug = name.replace(" + ", "-").replace(" ", "-")
        model, pred = out / f"model-{slug}", out / f"pred-{slug}"
        if name in done and (model / "metrics.json").is_file() and (pred / "submission.csv").is_file():
            log.info("%s: reusing %s and %s", name, model, pred)
            metrics = json.loads((model / "metrics.json").read_text())
            runs[name] = (model, pred, metrics, done[name]["train_s"], done[name]["predict_s"])
            continue
        t = time.perf_counter()
        # what hpa train-cells runs: with a companion (the defaults), a blend folder
        metrics = train_cells(data / "train", read_labels(train_csv), out / "seg-train", model, cfg,
                              cache_root=out / "cache")  # fmt: skip
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        predict_folder(data / "test", model, pred, masks=out / "seg-test",
                       ids=read_id_list(data / "sample_submission.csv"), workers=2)  # fmt: skip
        pred_s = time.perf_counter() - t
        runs[name] = (model, pred, metrics, train_s, pred_s)
        done[name] = {"train_s": train_s, "predict_s": pred_s}
        write_text_atomic(timings_file, json.dumps(done, indent=2))  # a killed run leaves the old record
    views = {
        "tiles only": ("tiles only", None),
        "cells only": ("cells + tiles", False),
        "cells + tiles": ("cells + tiles", None),
    }
    if base.companion is not None:  # blends: the submissions as hpa predict wrote them
        views = {name: (name, None) for name in trained}
    for name, (run, use_tiles) in views.items():
        model, pred, metrics, train_s, pred_s = runs[run]
        if base.companion is not None:
            ev = evaluate(pred / "submission.csv", truth)
            results[name] = {
                "model": model.name,
                "pooling": "each member its own",
                "test_macro_f1": ev["macro_f1"],
                "val_macro_f1": metrics["val_macro_f1"],
                "train_s": train_s,
                "predict_s": pred_s,
                "blend": metrics["blend"]["weights"],
                "members_val_macro_f1": metrics["blend"]["members_macro_f1"],
                "tile_weight": metrics.get("tile_weight"),
            }
            per_class[name] = {r["name"]: r["f1"] for r in ev["per_class"]}
            support = {r["name"]: r["support"] for r in ev["per_class"]}
            log.info("%s: %s", name, results[name])
            continue
        y, max_tuned, max_half = rescore(model, pred, truth, train_csv, "max", use_tiles)
        _, mean_tuned, mean_half = rescore(model, pred, truth, train_csv, "mean", use_tiles)
        own = load_model_config(model).pooling  # what hpa predict applies
        tuned = {"max": max_tuned, "mean": mean_tuned}[own]
        results[name] = {
            "model": model.name,
            "pooling": own,
            "test_macro_f1": macro_f1(y, tuned),
            "f1_max_tuned": macro_f1(y, max_tuned),
            "f1_max_at_0.5": macro_f1(y, max_half),
            "val_macro_f1": metrics["val_macro_f1"],
            "f1_mean_tuned": macro_f1(y, mean_tuned),
            "f1_mean_at_0.5": macro_f1(y, mean_half),
            "train_s": train_s,
            "predict_s": pred_s,
            "best_epoch": metrics["best_epoch"],
            "tile_weight": metrics.get("tile_weight"),
        }
        if use_tiles is None:  # the submission hpa predict wrote scores the same
            ev = evaluate(pred / "submission.csv", truth)
            assert abs(ev["macro_f1"] - results[name]["test_macro_f1"]) < 1e-9, (ev["macro_f1"], name)
        report = per_class_report(y, tuned, CLASS_NAMES_2018)
        per_class[name] = dict(zip(report["name"], report["f1"], strict=True))
        support = dict(zip(report["name"], report["support"], strict=True))
        log.info("%s: %s", name, results[name])
    import yaml

    def settings_of(folder: Path) -> dict:  # a blend's main model describes the recipe
        folder = folder / "main" if (folder / "main" / "train_config.yaml").is_file() else folder
        return yaml.safe_load((folder / "train_config.yaml").read_text())

    resolved = {n: settings_of(m) for n, (m, *_) in runs.items()}
    main = resolved["cells + tiles"]
    lines = [
        f"Synthetic benchmark: {args.n_train} train / {args.n_test} test images at 512 px (hpa synth seed "
        f"{args.seed}), watershed masks; {main['backbone']} (start: {main['pretrained']}, freeze_epochs "
        f"{main['freeze_epochs']}), channels {main['channels']}, {main['crop_size']} px crops at "
        f"{main.get('input_size') or main['crop_size']} px, intensity {main.get('intensity', 'dataset')}, "
        f"{main['pooling']} pooling, batch "
        f"{main['batch_size']}, precision {main['precision']}, EMA {main['ema']}, threshold shrink "
        f"{main['threshold_shrink']}; epochs {main['epochs']} for cells + tiles, "
        f"{resolved['tiles only']['epochs']} for tiles only{'' if 'epochs' in overrides else ' (automatic)'}"
        + (f"; settings {json.dumps(overrides)}" if overrides else "")
        + (
            f"; blended image by image with a companion model ({base.companion}), main model's share "
            + ", ".join(f"{n} {r['blend']['main']}" for n, r in results.items())
            + ", chosen on the validation images"
            if base.companion is not None
            else ""
        )
        + f". Synthesis {timings['synth']:.0f} s, segmentation {timings['segment']:.0f} s. Tile weight chosen "
        f"on the validation images for cells + tiles: {results['cells + tiles']['tile_weight']}.",
        "",
        "| views | model trained on | test macro F1 (the model's pooling) | val macro F1 | train s | predict s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {views[name][0]} | **{r['test_macro_f1']:.3f}** | {r['val_macro_f1']:.3f} "
            f"| {r['train_s']:.0f} | {r['predict_s']:.0f} |"
        )
    if base.companion is not None:
        lines += [
            "",
            "Validation macro F1 of each member alone: "
            + "; ".join(
                f"{n}: " + ", ".join(f"{m} {f:.3f}" for m, f in r["members_val_macro_f1"].items())
                for n, r in results.items()
            )
            + ".",
        ]
    if any("f1_max_tuned" in r for r in results.values()):  # not for blends
        lines += [
            "",
            "Thresholds and pooling (test macro F1; thresholds tuned on the validation images of each run "
            "for each pooling):",
            "",
            "| views | max, tuned | max, 0.5 | mean, tuned | mean, 0.5 |",
            "|---|---|---|---|---|",
        ]
        for name, r in results.items():
            if "f1_max_tuned" not in r:  # a blend: each member pools its own way
                continue
            lines.append(
                f"| {name} | {r['f1_max_tuned']:.3f} | {r['f1_max_at_0.5']:.3f} | {r['f1_mean_tuned']:.3f} "
                f"| {r['f1_mean_at_0.5']:.3f} |"
            )
    table = pd.DataFrame(per_class)
    lines += [
        "",
        "Per-class test F1 (n = test images with the class):",
        "",
        "| class | n | " + " | ".join(table.columns) + " |",
        "|---|---|" + "---|" * len(table.columns),
    ]
    for cls, row in table.iterrows():
        lines.append(f"| {cls} | {support[cls]} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines), results


def speed(args: argparse.Namespace) -> str:
    """Training crops/s through the data pipeline against bare model throughput."""
    import torch
    from model_throughput import throughput  # benchmarks/ is on sys.path when run as a script

    from hpa.classification.cache import build_cache
    from hpa.classification.crops import CropSettings
    from hpa.classification.model import create_model
    from hpa.classification.train import DEVICE_DEFAULTS, TrainConfig, TrainData, fit
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
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--config", default=None, help="JSON of TrainConfig overrides, e.g. '{\"ema\": 0.998}'")
    p.add_argument("--speed-steps", type=int, default=30)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    command = " ".join(["python", "benchmarks/train_bench.py", *sys.argv[1:]])
    parts = [f"Machine: {machine()}. Command: `{command}`."]
    if not args.skip_quality:
        table, results = quality(args)
        parts.append(table)
        parts.append(f"Quality part (synthesis to the last prediction): {time.perf_counter() - t0:.0f} s.")
        (Path(args.out) / "quality.json").write_text(json.dumps(results, indent=2))
    if not args.skip_speed:
        parts.append("Training speed (default CPU backbone, batch 64):\n\n" + speed(args))
    parts.append(f"Whole benchmark: {time.perf_counter() - t0:.0f} s.")
    text = "\n\n".join(parts)
    print(text)
    (Path(args.out) / "RESULTS-train.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
