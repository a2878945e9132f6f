"""The small-set default against one split: ``hpa train-cells`` as a user runs it, scored on unseen images.

Two plans of the device defaults, each run with hpa's own commands:

* ``new``: the defaults below 100 labelled images (``hpa train-cells`` with no flags):
  every fold of 5, thresholds from all images' out-of-fold scores, no companion;
* ``old``: one split (``--fold 0``): fold 0's model, thresholds from its validation fold,
  the scratch companion blended on those validation images.

Real: fitted on the 67 labelled Kaggle 2018 images, scored on the 11 labelled HPAv18
images (macro AP and macro F1 over the classes with a positive there and among the 67),
for each ``--seed`` (the split, the initialisation and the shuffling change with it).
Synthetic: ``hpa synth --n-train 80 --n-test 100`` for each ``--synth-seeds`` seed,
segmented, both plans trained (``--seed 7``), test macro F1 by ``hpa evaluate``.

Usage::

    hpa segment ../shared/data/hpa-real/kaggle-2018/images --out /tmp/seg-real
    hpa segment ../shared/data/hpa-real/hpav18/images --out /tmp/seg-hpav18
    python benchmarks/small_set_bench.py --masks /tmp/seg-real --outside-masks /tmp/seg-hpav18 \\
        --out benchmarks/out/small-set [--seeds 0 1 2] [--synth-seeds 41 42]

A run whose outputs are in ``OUT`` already is not repeated; the table goes to
``OUT/RESULTS-small-set.md`` and ``OUT/small_set.json``, with every command's seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nested_bench import judge
from segment_bench import machine

from hpa.aggregation.submission import align_submission, read_submission
from hpa.io import read_labels

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hpa-real"
PLANS = {"new": [], "old": ["--fold", "0"]}


def hpa(*args: Any, log: Path) -> float:
    """Run ``python -m hpa ARGS`` (output to ``log``); its seconds."""
    start = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "hpa", *map(str, args)], stdout=fh, stderr=subprocess.STDOUT
        )
    if done.returncode:
        raise SystemExit(f"hpa {' '.join(map(str, args))} failed ({done.returncode}): see {log}")
    return time.perf_counter() - start


def outside_scores(pred: Path, ext_labels: Path, train_labels: Path) -> dict[str, Any]:
    """Macro AP / F1 of a prediction folder on the labelled outside images."""
    ext, train = read_labels(ext_labels), read_labels(train_labels)
    y = ext.y.astype(int)
    classes = np.flatnonzero((y.sum(0) >= 1) & (train.y.sum(0) >= 1))
    scores = pd.read_csv(pred / "image_scores.csv").set_index("image_id").loc[list(ext.ids)]
    _, called = align_submission(*read_submission(pred / "submission.csv", ext.label_set), ext)
    result = judge(y, called.astype(int), scores[list(ext.class_names)].to_numpy(), classes)
    return {
        **result,
        "classes": [ext.class_names[c] for c in classes],
        "positives": y.sum(0)[classes].tolist(),
    }


def real_runs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    real = Path(args.data)
    rows: dict[str, Any] = {}
    for seed in args.seeds:
        for plan, flags in PLANS.items():
            model, pred = out / f"real-{plan}-s{seed}", out / f"pred-hpav18-{plan}-s{seed}"
            seconds = {}
            if not (model / "thresholds.json").is_file():
                seconds["train"] = hpa(
                    "train-cells", "--images", real / "kaggle-2018" / "images", "--labels",
                    real / "kaggle-2018" / "train.csv", "--masks", args.masks, "--out", model,
                    "--cache", out / "cache-real", "--seed", seed, *flags, log=out / f"{model.name}.log",
                )  # fmt: skip
            if not (pred / "submission.csv").is_file():
                seconds["predict"] = hpa(
                    "predict", real / "hpav18" / "images", "--model", model, "--masks", args.outside_masks,
                    "--out", pred, log=out / f"{pred.name}.log",
                )  # fmt: skip
            scored = outside_scores(pred, real / "hpav18" / "labels.csv", real / "kaggle-2018" / "train.csv")
            rows[f"{plan}-s{seed}"] = {**scored, "seconds": seconds}
    return rows


def synthetic_runs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for seed in args.synth_seeds:
        data = out / f"syn{seed}"
        if not (data / "test_labels.csv").is_file():
            hpa(
                "synth",
                data,
                "--n-train",
                80,
                "--n-test",
                100,
                "--seed",
                seed,
                "--workers",
                2,
                log=out / "synth.log",
            )
        for part in ("train", "test"):
            if not (data / f"seg-{part}" / "cells.parquet").is_file():
                hpa(
                    "segment",
                    data / part,
                    "--out",
                    data / f"seg-{part}",
                    "--workers",
                    2,
                    log=out / "segment.log",
                )
        for plan, flags in PLANS.items():
            model, pred, seconds = data / f"model-{plan}", data / f"pred-{plan}", {}
            if not (model / "thresholds.json").is_file():
                seconds["train"] = hpa(
                    "train-cells", "--images", data / "train", "--labels", data / "train.csv", "--masks",
                    data / "seg-train", "--out", model, "--seed", 7, *flags, log=data / f"train-{plan}.log",
                )  # fmt: skip
            if not (pred / "submission.csv").is_file():
                seconds["predict"] = hpa(
                    "predict", data / "test", "--model", model, "--masks", data / "seg-test", "--out", pred,
                    log=data / f"pred-{plan}.log",
                )  # fmt: skip
            evaluated = subprocess.run(
                [sys.executable, "-m", "hpa", "evaluate", str(pred / "submission.csv"), "--labels",
                 str(data / "test_labels.csv"), "--json"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows[f"{plan}-syn{seed}"] = {
                "macro_f1": json.loads(evaluated.stdout)["macro_f1"],
                "seconds": seconds,
            }
    return rows


def report(result: dict[str, Any]) -> str:
    real, syn = result["real"], result["synthetic"]
    lines = [
        f"Command: `{result['command']}`.  ",
        f"Machine: {result['machine']}; load average at the end {result['load_average'][0]:.1f}.",
        "",
    ]
    if real:
        first = next(iter(real.values()))
        lines += [
            "Outside check (fitted on the 67, the 11 HPAv18 images; classes: "
            + ", ".join(f"{c} ({p})" for c, p in zip(first["classes"], first["positives"]))
            + ")",
            "",
            "| split seed | new AP | old AP | new - old | new F1 | old F1 | new - old |",
            "|---|---|---|---|---|---|---|",
        ]
        seeds = sorted({k.split("-s")[1] for k in real}, key=int)
        ap_diff, f1_diff = [], []
        for s in seeds:
            n, o = real[f"new-s{s}"], real[f"old-s{s}"]
            ap_diff.append(n["macro_ap"] - o["macro_ap"])
            f1_diff.append(n["macro_f1"] - o["macro_f1"])
            lines.append(
                f"| {s} | {n['macro_ap']:.3f} | {o['macro_ap']:.3f} | {ap_diff[-1]:+.3f} | "
                f"{n['macro_f1']:.3f} | {o['macro_f1']:.3f} | {f1_diff[-1]:+.3f} |"
            )
        mean = {p: [real[f"{p}-s{s}"] for s in seeds] for p in PLANS}
        lines.append(
            f"| mean | {np.mean([r['macro_ap'] for r in mean['new']]):.3f} | "
            f"{np.mean([r['macro_ap'] for r in mean['old']]):.3f} | {np.mean(ap_diff):+.3f} "
            f"(spread {np.ptp(ap_diff):.3f}) | {np.mean([r['macro_f1'] for r in mean['new']]):.3f} | "
            f"{np.mean([r['macro_f1'] for r in mean['old']]):.3f} | {np.mean(f1_diff):+.3f} (spread {np.ptp(f1_diff):.3f}) |"
        )
        lines += ["", "Per class (AP / F1), each run:", "", "| run | " + " | ".join(first["classes"]) + " |"]
        lines.append("|---" * (len(first["classes"]) + 1) + "|")
        for name, r in real.items():
            cells = " | ".join(f"{a:.2f} / {f:.2f}" for a, f in zip(r["ap_per_class"], r["f1_per_class"]))
            lines.append(f"| {name} | {cells} |")
        lines.append("")
    if syn:
        lines += [
            "Synthetic small sets (80 train / 100 test images), test macro F1:",
            "",
            "| seed | new | old |",
        ]
        lines.append("|---|---|---|")
        for s in sorted({k.split("-syn")[1] for k in syn}, key=int):
            lines.append(
                f"| {s} | {syn[f'new-syn{s}']['macro_f1']:.3f} | {syn[f'old-syn{s}']['macro_f1']:.3f} |"
            )
        lines.append("")
    timed = {k: v["seconds"] for part in (real, syn) for k, v in part.items() if v["seconds"]}
    if timed:
        lines += ["Seconds of the commands run by this invocation: " + json.dumps(timed), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DATA), help="the hpa-real folder of the shared data")
    parser.add_argument("--masks", required=True, help="SEG_DIR of 'hpa segment' on the 67 Kaggle images")
    parser.add_argument(
        "--outside-masks", required=True, help="SEG_DIR of 'hpa segment' on the 11 HPAv18 images"
    )
    parser.add_argument("--out", default="benchmarks/out/small-set")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--synth-seeds", type=int, nargs="*", default=[41, 42])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "real": real_runs(args, out),
        "synthetic": synthetic_runs(args, out),
        "command": " ".join(["python", "benchmarks/small_set_bench.py", *sys.argv[1:]]),
        "machine": machine(),
        "load_average": os.getloadavg(),
    }
    (out / "small_set.json").write_text(json.dumps(result, indent=2))
    text = report(result)
    (out / "RESULTS-small-set.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
