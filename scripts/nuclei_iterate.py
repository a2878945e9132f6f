"""Quick evaluation of the watershed backend while tuning it.

    python scripts/nuclei_iterate.py nuclei [--every 4] [--set nucleus_split_h=0.05 ...]
    python scripts/nuclei_iterate.py hpa | synthetic | speed | all

``nuclei`` prints the F1 at IoU 0.5 of every hand-annotated image (``--every k`` keeps
one image in k, ``--worst n`` lists the n worst) with the estimated nucleus diameter;
``hpa`` and ``synthetic`` print the benchmark's F1 columns (IoU 0.5-0.9, mean 0.5:0.95); ``speed`` times
:func:`hpa.segmentation.segment` on 20 real HPA samples resized to 512 px.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from segment_bench import COLUMNS, _shrink, _watershed, hpa_cases, score_cases, synthetic_cases  # noqa: E402

from hpa.io import read_grey, read_sample  # noqa: E402
from hpa.segmentation import SegmentConfig, estimate_nucleus_diameter, f1_at, segment  # noqa: E402

log = logging.getLogger("nuclei_iterate")


def nuclei_pairs(data: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, 4-channel sample with the grey image as blue, truth labels) of every annotated image."""
    import tifffile

    folder = data / "nuclei-groundtruth"
    pairs = []
    for p in sorted((folder / "dsb2018-fluo" / "images").glob("*.png")):
        pairs.append((p.stem[:10], read_grey(p), read_grey(folder / "dsb2018-fluo" / "labels" / p.name)))
    star = folder / "stardist-sample"
    pairs.append(("stardist", tifffile.imread(star / "img2d.tif"), tifffile.imread(star / "mask2d.tif")))
    out = []
    for name, grey, truth in pairs:
        image = np.zeros((*grey.shape, 4), grey.dtype)
        image[..., 2] = grey
        out.append((name, image, truth.astype(np.int32)))
    return out


def truth_diameter(truth: np.ndarray) -> float:
    """Median equivalent diameter of the annotated nuclei."""
    areas = np.bincount(truth.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.sqrt(4.0 * np.median(areas) / np.pi)) if areas.size else 0.0


def run_nuclei(data: Path, config: SegmentConfig, every: int, worst: int) -> float:
    """Mean nuclei F1 over one image in ``every``; logs the worst images."""
    rows = []
    for k, (name, image, truth) in enumerate(nuclei_pairs(data)):
        if k % every:
            continue
        f1 = f1_at(truth, segment(image, config)[1])
        d = estimate_nucleus_diameter(image, config)
        rows.append((f1, name, image.shape[:2], d, truth_diameter(truth), int(truth.max())))
    mean = float(np.mean([r[0] for r in rows]))
    for f1, name, shape, d, td, n in sorted(rows)[:worst]:
        log.info("%-10s %-12s F1 %.3f  diameter est %.1f true %.1f  n=%d", name, shape, f1, d, td, n)
    log.info("nuclei F1 %.4f over %d images", mean, len(rows))
    return mean


def run_speed(data: Path, config: SegmentConfig, n: int = 20) -> float:
    """Milliseconds per :func:`segment` call on ``n`` real samples resized to 512 px."""
    folder = data / "hpa-2021-samples"
    ids = sorted({p.name.split("_")[0] for p in (folder / "images").glob("*_blue.png")})
    real = [_shrink(read_sample(folder / "images", i), 512) for i in ids]
    images = [real[k % len(real)] for k in range(n)]
    segment(images[0], config)  # warm-up
    start = time.perf_counter()
    for image in images:
        segment(image, config)
    ms = 1000 * (time.perf_counter() - start) / n
    log.info("speed %.1f ms per 512 px image (n=%d)", ms, n)
    return ms


def _columns(values: np.ndarray) -> str:
    return ", ".join(f"{c} {v:.3f}" for c, v in zip(COLUMNS, values))


def parse_overrides(items: list[str]) -> SegmentConfig:
    """``SegmentConfig`` with ``key=value`` overrides (types from the defaults)."""
    base = SegmentConfig()
    changes = {}
    for item in items:
        key, value = item.split("=", 1)
        kind = type(getattr(base, key))
        changes[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return dataclasses.replace(base, **changes)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("nuclei", "hpa", "synthetic", "speed", "all"))
    parser.add_argument(
        "--data", default=os.environ.get("HPA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--every", type=int, default=1, help="evaluate one nuclei image in this many")
    parser.add_argument("--worst", type=int, default=10, help="list this many worst nuclei images")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Path(args.data)
    config = parse_overrides(args.set)
    if args.what in ("nuclei", "all"):
        run_nuclei(data, config, args.every, args.worst)
    if args.what in ("hpa", "all"):
        for side in (None, 512):
            cells = score_cases(hpa_cases(data, side), _watershed(config), 0).mean(axis=0)
            log.info("hpa cells %s: %s", side or "native", _columns(cells))
    if args.what in ("synthetic", "all"):
        syn = synthetic_cases()
        for which, kind in enumerate(("cells", "nuclei")):
            if syn is not None:
                log.info(
                    "synthetic %s: %s",
                    kind,
                    _columns(score_cases(syn[which], _watershed(config), which).mean(axis=0)),
                )
    if args.what in ("speed", "all"):
        run_speed(data, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
