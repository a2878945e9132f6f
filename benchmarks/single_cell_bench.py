"""Single-cell (2021) output on the synthetic benchmark: cell-level mAP and its cost.

1. ``hpa synth`` (300 train / 100 test at 512 px by default), ``hpa segment`` of both
   splits (watershed), two ``hpa train-cells`` runs with the CPU defaults: one on the 2018
   labels (``train.csv``), one on the 2021 labels (``train_2021.csv``).
2. ``hpa predict`` of the test split with each model; for each ``--cell-score`` rule the
   2021 outputs are rewritten from the same run (:func:`write_single_cell`) and scored by
   ``hpa evaluate --format 2021 --truth`` against the synthetic truth (cell mAP, IoU >= 0.6,
   our segmentation against the drawn cells).
3. Cost: seconds per image to write the 2021 submission at 512 px, and at 2048 px
   (``--n-big`` images of 2048 px, segmented first) against ``hpa predict``'s own time on
   the same images with the same masks.

Usage::

    python benchmarks/single_cell_bench.py --out benchmarks/out/single_cell [--n-train 300
        --n-test 100 --n-big 6 --epochs E]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

log = logging.getLogger("single_cell_bench")
REPO = Path(__file__).resolve().parents[1]


def hpa(*args: str) -> float:
    """Run ``python -m hpa ARGS`` (this checkout's code); returns its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hpa", "-q", *args], check=True, env=env)
    return time.perf_counter() - t0


def score_rules(pred: Path, truth: Path) -> dict[str, dict]:
    """Cell mAP and the time per image of writing the 2021 outputs, for every rule."""
    from hpa.aggregation.single_cell import CELL_SCORES
    from hpa.pipelines.single_cell import evaluate_2021, write_single_cell

    rows = {}
    for rule in CELL_SCORES:
        t0 = time.perf_counter()
        sub = write_single_cell(pred, rule, progress=False)
        seconds = time.perf_counter() - t0
        result = evaluate_2021(sub, truth)
        rows[rule] = {"map": result["map"], "write_s": seconds, "per_class": result["per_class"]}
        log.info("%s %s: cell mAP %.4f, written in %.1f s", pred.name, rule, result["map"], seconds)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/single_cell")
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-big", type=int, default=6, help="2048 px images for the overhead figure")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: CPU defaults)")
    ap.add_argument("--train-images", type=int, default=None,
                    help="train on the first N training images only (default: all)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--train-args", default="",
                    help="more hpa train-cells flags, e.g. '--intensity image' (models get their own folders)")  # fmt: skip
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    data, t_start = out / "data", time.perf_counter()
    times: dict[str, float] = {}
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    if not (data / "test_labels_2021.csv").is_file():
        times["synth"] = hpa("synth", str(data), "--n-train", str(args.n_train), "--n-test",
                             str(args.n_test), "--seed", str(args.seed), "--workers", "2")  # fmt: skip
    for split in ("train", "test"):
        if not (out / f"seg-{split}" / "cells.parquet").is_file():
            times[f"segment {split}"] = hpa("segment", str(data / split), "--out", str(out / f"seg-{split}"))
    models = {"2018": data / "train.csv", "2021": data / "train_2021.csv"}
    tag = ""
    extra = shlex.split(args.train_args)
    if extra:
        tag = "-" + "".join(a.strip("-") for a in extra)
    if args.train_images:
        from hpa.io import read_labels, write_labels

        tag += f"-first{args.train_images}"
        for scheme, path in list(models.items()):
            table = read_labels(path)
            models[scheme] = path.with_name(f"{path.stem}{tag}.csv")
            write_labels(models[scheme], table.subset(table.ids[: args.train_images]))
    results: dict[str, dict] = {}
    for scheme, labels in models.items():
        model = out / f"model-{scheme}{tag}"
        if not (model / "thresholds.json").is_file():
            times[f"train {scheme}"] = hpa("train-cells", "--images", str(data / "train"), "--labels",
                                           str(labels), "--masks", str(out / "seg-train"), "--out",
                                           str(model), *epochs, *extra)  # fmt: skip
        pred = out / f"pred-{scheme}{tag}"
        times[f"predict {scheme}"] = hpa("predict", str(data / "test"), "--model", str(model), "--masks",
                                         str(out / "seg-test"), "--out", str(pred), "--format", "both")  # fmt: skip
        results[scheme] = score_rules(pred, data / "truth")

    big: dict[str, float] = {}
    if args.n_big:
        big_data = out / "big"
        if not (big_data / "test_labels.csv").is_file():
            # hpa synth needs one training image; only the test split is used
            hpa("synth", str(big_data), "--n-train", "1", "--n-test", str(args.n_big), "--size", "2048",
                "--seed", str(args.seed + 1), "--workers", "2")  # fmt: skip
        if not (out / "seg-big" / "cells.parquet").is_file():
            big["segment_s"] = hpa("segment", str(big_data / "test"), "--out", str(out / "seg-big"))
        from hpa.pipelines.predict import predict_folder
        from hpa.pipelines.single_cell import write_single_cell

        pred = out / "pred-big"
        # in this process, so that predict's time is its own (no interpreter start or imports)
        summary = predict_folder(big_data / "test", out / f"model-2018{tag}", pred, masks=out / "seg-big",
                                 progress=False, fmt="2018")  # fmt: skip
        big["predict_s"] = summary.seconds
        t0 = time.perf_counter()
        write_single_cell(pred, progress=False)
        big["write_2021_s"] = time.perf_counter() - t0
        big["n"] = args.n_big
    record = {"results": results, "times": times, "big": big, "machine": machine(),
               "wall_s": time.perf_counter() - t_start, "args": vars(args)}  # fmt: skip
    (out / f"single_cell_bench{tag}.json").write_text(json.dumps(record, indent=2))
    print(report(record))


def report(s: dict) -> str:
    """The RESULTS.md section of a benchmark summary."""
    from hpa.aggregation.single_cell import CELL_SCORES

    a = s["args"]
    lines = [
        "## Single-cell output, 2021 format (`benchmarks/single_cell_bench.py`)",
        "",
        f"Command: `python benchmarks/single_cell_bench.py --n-train {a['n_train']} --n-test {a['n_test']} "
        f"--n-big {a['n_big']}{' --epochs ' + str(a['epochs']) if a['epochs'] else ''}"
        f"{' --train-images ' + str(a['train_images']) if a['train_images'] else ''}"
        f"{' --train-args ' + repr(a['train_args']) if a.get('train_args') else ''}` (one run, every "
        "figure below).  ",
        f"Machine: {s['machine']}, shared with other jobs while it ran (timings are noisy). "
        f"Bench wall time {s['wall_s']:.0f} s.",
        "",
        f"Synthetic benchmark: {a['train_images'] or a['n_train']} train / {a['n_test']} test images at "
        f"512 px (hpa synth seed {a['seed']}), watershed masks, CPU training defaults"
        f"{', ' + str(a['epochs']) + ' epochs' if a['epochs'] else ''}. Cell mAP: IoU >= 0.6 between our "
        "segmentation and the drawn cells, 19 classes, against `truth/cell_labels_2021.csv` (a cell "
        "without its image's pattern is Negative).",
        "",
        "| model | " + " | ".join(f"`{r}`" for r in CELL_SCORES) + " | write 2021 s/image |",
        "|---|" + "---|" * (len(CELL_SCORES) + 1),
    ]
    names = {"2018": "2018 labels, mapped to 2021", "2021": "2021 labels (19 classes)"}
    for scheme, rows in s["results"].items():
        cells = " | ".join(f"{rows[r]['map']:.4f}" for r in CELL_SCORES)
        per_image = sum(rows[r]["write_s"] for r in CELL_SCORES) / len(CELL_SCORES) / a["n_test"]
        lines.append(f"| {names[scheme]} | {cells} | {per_image:.3f} |")
    b = s["big"]
    if b:
        ratio = b["write_2021_s"] / b["predict_s"]
        lines += [
            "",
            f"At 2048 px ({b['n']} synthetic images, masks given, 2018 model): `hpa predict` "
            f"{b['predict_s']:.1f} s ({b['predict_s'] / b['n']:.2f} s/image, model loading included); "
            f"writing the 2021 outputs {b['write_2021_s']:.1f} s ({b['write_2021_s'] / b['n']:.2f} s/image): "
            f"**+{100 * ratio:.1f} %** of predict's time (target < 20 %).",
        ]
    lines.append("")
    lines.append("Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["times"].items()) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
