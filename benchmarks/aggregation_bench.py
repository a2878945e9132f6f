"""Time the aggregation stage: pool_cells on a million cells, tune_thresholds on 10,000 images.

Usage: ``python benchmarks/aggregation_bench.py [--cells N] [--images M] [--repeat R]``.
Prints the best of ``R`` wall-clock times per step (CPU only; numpy and pandas).
"""

from __future__ import annotations

import argparse
import functools
import platform
import time
from collections.abc import Callable

import numpy as np

from hpa.aggregation import apply_thresholds, combine_with_tiles, pool_cells, tune_thresholds


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=28)
    parser.add_argument("--tune-images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    image_ids = [f"{i:08x}-0000-0000" for i in range(args.images)]
    cell_image = rng.integers(0, args.images, size=args.cells)
    cell_ids = np.asarray(image_ids, dtype=object)[cell_image]
    scores = rng.random((args.cells, args.classes), dtype=np.float32)
    grouped = np.argsort(cell_image, kind="stable")
    grouped_ids, grouped_scores = cell_ids[grouped], scores[grouped]
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(f"pool_cells: {args.cells:,} cells x {args.classes} classes -> {args.images:,} images")
    for method in ("max", "mean", "noisy-or", "topk"):
        t_shuffled = best_of(args.repeat, functools.partial(pool_cells, cell_ids, scores, image_ids, method))
        t_sorted = best_of(
            args.repeat, functools.partial(pool_cells, grouped_ids, grouped_scores, image_ids, method)
        )
        print(f"  {method:9s} shuffled cells {t_shuffled:6.3f} s   grouped by image {t_sorted:6.3f} s")
    pooled = pool_cells(cell_ids, scores, image_ids)
    tiles = rng.random(pooled.shape, dtype=np.float32)
    print(
        f"combine_with_tiles (mean): {best_of(args.repeat, lambda: combine_with_tiles(pooled, tiles)):.3f} s"
    )

    m = args.tune_images
    y = (rng.random((m, args.classes)) < 0.1).astype(np.uint8)
    s = np.clip(0.3 * y + rng.random((m, args.classes)), 0, 1)
    print(f"tune_thresholds: {m:,} images x {args.classes} classes")
    for method in ("f1", "rate"):
        t = best_of(args.repeat, functools.partial(tune_thresholds, y, s, method=method))
        print(f"  {method:4s} {t:6.3f} s")
    th = tune_thresholds(y, s).thresholds
    print(f"apply_thresholds: {best_of(args.repeat, lambda: apply_thresholds(s, th)):.4f} s")


if __name__ == "__main__":
    main()
