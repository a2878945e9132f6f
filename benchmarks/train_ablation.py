"""Ablations behind the CPU training defaults: data size, EMA, crop size and scale, thresholds.

Each variant trains the cells + tiles classifier (CPU defaults plus the variant's
settings) and is scored on two synthetic test sets: the 150 test images of the old
400 / 150 benchmark (``hpa synth`` seed 7) and 400 independent "dev" images (seed 8).
Reported: image-level macro F1 (thresholds tuned on the run's validation images) and
macro average precision (threshold-free, so less noisy with a few positives per class).

Training sets: the 400 training images of seed 7, plus 400 (seed 9) and 800 (seed 10)
more for the 800- and 1600-image sets (their Ids renamed ``synth-train-1*`` and
``synth-train-2*``). Every set is drawn and segmented (watershed) on first use.

Usage::

    python benchmarks/train_ablation.py --out benchmarks/out/ablation NAME [--n-train 400|800|1600]
        [--config '{"ema": 0.998}'] [--tta 1]
    python benchmarks/train_ablation.py --out benchmarks/out/ablation --thresholds NAME

The first form appends one JSON line per run to ``OUT/results.jsonl``; the second prints
test macro F1 of run NAME's model with per-class thresholds shrunk toward the global one
by k = 0, 3, 5, 10, 20, 40 pseudo-positives.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.artefacts import read_csv_table

log = logging.getLogger("train_ablation")

#: (seed, training images, Id prefix digit) of the training parts, in order.
PARTS = ((7, 400, "0"), (9, 400, "1"), (10, 800, "2"))


def _truth(ids: list[str], csv: Path) -> np.ndarray:
    from hpa.io import read_labels

    return read_labels(csv).subset(ids).y


def prepare(out: Path, n_train: int) -> tuple[Path, Path, Path]:
    """The training folder, its labels and masks for ``n_train`` images (built once)."""
    from hpa.pipelines.segment import segment_folder
    from hpa.synthetic import write_dataset

    base = out / "base"
    if not (base / "test_labels.csv").is_file():
        write_dataset(base, 400, 150, seed=7, workers=2)
        segment_folder(base / "test", out / "seg-test", workers=2, progress=False)
    dev = out / "dev"
    if not (dev / "test_labels.csv").is_file():
        write_dataset(dev, 0, 400, seed=8, workers=2)
        segment_folder(dev / "test", out / "seg-dev", workers=2, progress=False)
    train = out / f"train-{n_train}"
    if (train / "train.csv").is_file():
        return train / "images", train / "train.csv", train / "seg"
    (train / "images").mkdir(parents=True, exist_ok=True)
    rows, have = [], 0
    for seed, n, digit in PARTS:
        if have >= n_train:
            break
        part = base if seed == 7 else out / f"part-{seed}"
        if not (part / "train.csv").is_file():
            write_dataset(part, n, 0, seed=seed, workers=2)
        labels = pd.read_csv(part / "train.csv")
        for f in sorted((part / "train").glob("*.png")):
            name = f.name.replace("synth-train-0", f"synth-train-{digit}", 1)
            (train / "images" / name).symlink_to(f.resolve())
        labels["Id"] = labels["Id"].str.replace("synth-train-0", f"synth-train-{digit}", n=1, regex=False)
        rows.append(labels)
        have += n
    pd.concat(rows).to_csv(train / "train.csv", index=False)
    segment_folder(train / "images", train / "seg", workers=2, progress=False)
    return train / "images", train / "train.csv", train / "seg"


def score(pred: Path, labels_csv: Path) -> dict[str, float]:
    """Macro F1 of ``pred``'s submission and macro AP of its image scores."""
    from sklearn.metrics import average_precision_score

    from hpa.pipelines.evaluate import evaluate

    s = read_csv_table(pred / "image_scores.csv").set_index("image_id")
    y = _truth(list(s.index), labels_csv)
    ap = [average_precision_score(y[:, c], s.to_numpy()[:, c]) for c in range(y.shape[1]) if y[:, c].any()]
    return {
        "f1": round(evaluate(pred / "submission.csv", labels_csv)["macro_f1"], 4),
        "mAP": round(float(np.mean(ap)), 4),
    }


def run(args: argparse.Namespace) -> dict:
    from hpa.classification.train import TrainConfig
    from hpa.io import read_id_list, read_labels
    from hpa.pipelines.predict import predict_folder
    from hpa.pipelines.train import train_model

    out = Path(args.out)
    images, labels, seg = prepare(out, args.n_train)
    overrides = json.loads(args.config) if args.config else {}
    cfg = TrainConfig.for_device("cpu", source="ablation", **{"workers": 2, "seed": 7, **overrides})
    run_dir = out / "runs" / args.name
    shutil.rmtree(run_dir, ignore_errors=True)
    t = time.perf_counter()
    metrics = train_model(images, read_labels(labels), seg, run_dir / "model", cfg, cache_root=out / "cache",
                          progress=False)  # fmt: skip
    train_s = time.perf_counter() - t
    base, dev = out / "base", out / "dev"
    predict_folder(base / "test", run_dir / "model", run_dir / "pred", masks=out / "seg-test",
                   ids=read_id_list(base / "sample_submission.csv"), workers=2, progress=False, tta=args.tta)  # fmt: skip
    predict_folder(dev / "test", run_dir / "model", run_dir / "dev", masks=out / "seg-dev", workers=2,
                   progress=False, tta=args.tta)  # fmt: skip
    result = {
        "name": args.name,
        "n_train": args.n_train,
        "settings": overrides,
        "tta": args.tta,
        "val_f1": round(metrics["val_macro_f1"], 4),
        "train_s": round(train_s),
        **score(run_dir / "pred", base / "test_labels.csv"),
        **{f"dev_{k}": v for k, v in score(run_dir / "dev", dev / "test_labels.csv").items()},
    }
    (run_dir / "ablation.json").write_text(json.dumps(result, indent=2))
    with (out / "results.jsonl").open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    return result


def shrink_table(args: argparse.Namespace) -> dict:
    """Test and dev macro F1 of one run with thresholds shrunk by k pseudo-positives."""
    from hpa.aggregation import apply_thresholds, macro_f1, tune_thresholds

    out = Path(args.out)
    run_dir = out / "runs" / args.thresholds
    n_train = json.loads((run_dir / "ablation.json").read_text())["n_train"]
    labels = out / f"train-{n_train}" / "train.csv"
    val = read_csv_table(run_dir / "model" / "val_image_scores.csv").set_index("image_id")
    y_val = _truth(list(val.index), labels)
    table = {}
    for name, pred, truth in (("test", run_dir / "pred", out / "base" / "test_labels.csv"),
                              ("dev", run_dir / "dev", out / "dev" / "test_labels.csv")):  # fmt: skip
        s = read_csv_table(pred / "image_scores.csv").set_index("image_id")
        y = _truth(list(s.index), truth)
        table[name] = {
            k: round(macro_f1(y, apply_thresholds(s.to_numpy(), tune_thresholds(y_val, val.to_numpy(), shrink=k).thresholds)), 4)
            for k in (0, 3, 5, 10, 20, 40)
        }  # fmt: skip
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="run name (a folder under OUT/runs)")
    p.add_argument("--out", default="benchmarks/out/ablation")
    p.add_argument("--n-train", type=int, choices=(400, 800, 1600), default=400)
    p.add_argument("--config", default=None, help="JSON of TrainConfig overrides")
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("--thresholds", metavar="NAME", help="threshold shrinkage table of run NAME")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.thresholds:
        print(json.dumps(shrink_table(args)))
    elif args.name:
        print(json.dumps(run(args)))
    else:
        p.error("give a run NAME or --thresholds NAME")


if __name__ == "__main__":
    main()
