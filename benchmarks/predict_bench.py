"""Prediction throughput on the CPU: end to end against the bare classifier.

``hpa predict`` over the synthetic test images at 512 px (TTA off), with the masks of
``hpa segment`` given and with segmentation on the fly, beside the classifier's bare
inference on the same number of views (random tensors of the same shape, same batch
size) in the same run. Pipeline efficiency = bare model time / end-to-end time.

Usage (after ``benchmarks/train_bench.py``, whose model and data it reuses)::

    python benchmarks/predict_bench.py --bench benchmarks/out/train
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def bare_inference_seconds(model_dir: Path, n_views: int, batch_size: int) -> float:
    """Seconds the model alone takes to score ``n_views`` random views."""
    import torch

    from hpa.classification.inference import score_views
    from hpa.classification.model import load_model

    model, cfg = load_model(model_dir)
    size = cfg.crop.crop_size
    views = np.random.default_rng(0).integers(0, 255, (n_views, size, size, 4), dtype=np.uint8)
    torch.set_num_threads(os.cpu_count() or 1)
    score_views(model, views[:batch_size], cfg.mean, cfg.std, 255.0, batch_size=batch_size)  # warm-up
    t = time.perf_counter()
    score_views(model, views, cfg.mean, cfg.std, 255.0, batch_size=batch_size)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default="benchmarks/out/train", help="output folder of train_bench.py")
    p.add_argument("--model", default=None, help="model folder (default: BENCH/model-cells-tiles)")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    import pandas as pd

    from hpa.pipelines.predict import predict_folder

    bench = Path(args.bench)
    model = Path(args.model) if args.model else bench / "model-cells-tiles"
    images, masks = bench / "data" / "test", bench / "seg-test"
    out = bench / "predict-bench"
    rows = []
    cases: tuple[tuple[str, dict[str, Any]], ...] = (
        ("masks given", {"masks": masks}),
        ("segmenting on the fly", {}),
    )
    for label, kwargs in cases:
        summary = predict_folder(
            images,
            model,
            out / label.replace(" ", "-"),
            workers=2,
            batch_size=args.batch_size,
            device="cpu",
            progress=False,
            **kwargs,
        )
        cells = pd.read_parquet(out / label.replace(" ", "-") / "cell_predictions.parquet")
        tiles = pd.read_parquet(out / label.replace(" ", "-") / "tile_predictions.parquet")
        n_views = len(cells) + len(tiles)
        bare = bare_inference_seconds(model, n_views, args.batch_size)
        rows.append(
            (
                label,
                summary.n_images,
                n_views,
                summary.images_per_s,
                summary.seconds,
                bare,
                bare / summary.seconds,
            )
        )
    from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

    lines = [
        f"Command: `python benchmarks/predict_bench.py --bench {args.bench}`. Machine: {machine()}. Model: {model.name} (CPU defaults), TTA 1, default workers and threads, batch {args.batch_size}.",
        "",
        "| predict | images | views scored | images/s end to end | end-to-end s | bare model s | efficiency |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, n, v, ips, e2e, bare, eff in rows:
        lines.append(f"| {label} | {n} | {v} | {ips:.1f} | {e2e:.1f} | {bare:.1f} | **{eff:.2f}** |")
    text = "\n".join(lines)
    print(text)
    (bench / "RESULTS-predict.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
