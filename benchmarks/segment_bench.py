"""Segmentation accuracy and speed; prints a markdown table and writes it into RESULTS.md.

    python benchmarks/segment_bench.py [--data ../shared/data] [--no-write]

Accuracy: matched-object F1 at IoU 0.5 (greedy one-to-one matching,
:func:`hpa.segmentation.match_labels`) of the ``watershed`` backend and of a naive
baseline (Otsu + seeded watershed, no scale estimation) on
(1) the real HPA 2021 samples against the HPA Cell Segmentation tool's cell masks, at
native size and downscaled to 512 px; (2) hand-annotated nuclei (DSB 2018 fluorescence
and the stardist sample) fed as the blue channel; (3) synthetic samples with exact truth
(``hpa.synthetic``, when present). Speed: images/s of ``hpa.pipelines.segment.segment_folder``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from hpa.io import read_grey, read_sample
from hpa.pipelines.segment import segment_folder
from hpa.segmentation import SegmentConfig, f1_at, segment

log = logging.getLogger("segment_bench")
REPO = Path(__file__).resolve().parents[1]


def naive_segment(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: Otsu nuclei (connected components), watershed of -cytoplasm in an Otsu mask."""
    blue = cv2.GaussianBlur(image[..., 2].astype(np.float32), (0, 0), 2)
    nuclei = ndi.label(blue > threshold_otsu(blue))[0]
    cyto = cv2.GaussianBlur((image[..., 0].astype(np.float32) + image[..., 3]), (0, 0), 2)
    mask = (cyto > threshold_otsu(cyto)) | (nuclei > 0)
    return watershed(-cyto, nuclei, mask=mask).astype(np.int32), nuclei.astype(np.int32)


def _shrink(a: np.ndarray, side: int, labels: bool = False) -> np.ndarray:
    interp = cv2.INTER_NEAREST if labels else cv2.INTER_AREA
    if a.ndim == 3:
        return np.stack(
            [cv2.resize(a[..., c], (side, side), interpolation=interp) for c in range(a.shape[-1])], -1
        )
    return cv2.resize(a, (side, side), interpolation=interp)


def hpa_accuracy(data: Path) -> dict[str, float]:
    folder = data / "hpa-2021-samples"
    scores: dict[str, list[float]] = {"ws_native": [], "ws_512": [], "naive_native": [], "naive_512": []}
    for mask_path in sorted((folder / "reference-masks").glob("*_cellmask.png")):
        image_id = mask_path.name.replace("_cellmask.png", "")
        image = read_sample(folder / "images", image_id)
        ref = read_grey(mask_path).astype(np.int32)
        small, ref_small = _shrink(image, 512), _shrink(ref, 512, labels=True)
        scores["ws_native"].append(f1_at(ref, segment(image)[0]))
        scores["ws_512"].append(f1_at(ref_small, segment(small)[0]))
        scores["naive_native"].append(f1_at(ref, naive_segment(image)[0]))
        scores["naive_512"].append(f1_at(ref_small, naive_segment(small)[0]))
        log.info("%s: %s", image_id[:8], {k: round(v[-1], 3) for k, v in scores.items()})
    return {k: float(np.mean(v)) for k, v in scores.items()} | {"n": len(scores["ws_native"])}


def nuclei_accuracy(data: Path) -> dict[str, float]:
    import tifffile

    folder = data / "nuclei-groundtruth"
    pairs = []
    for p in sorted((folder / "dsb2018-fluo" / "images").glob("*.png")):
        pairs.append((read_grey(p), read_grey(folder / "dsb2018-fluo" / "labels" / p.name)))
    star = folder / "stardist-sample"
    pairs.append((tifffile.imread(star / "img2d.tif"), tifffile.imread(star / "mask2d.tif")))
    ws, naive = [], []
    for grey, truth in pairs:
        image = np.zeros((*grey.shape, 4), grey.dtype)
        image[..., 2] = grey
        truth = truth.astype(np.int32)
        ws.append(f1_at(truth, segment(image)[1]))
        naive.append(f1_at(truth, naive_segment(image)[1]))
    return {"ws": float(np.mean(ws)), "naive": float(np.mean(naive)), "n": len(pairs), "ws_stardist": ws[-1]}


def synthetic_accuracy(n: int = 8, size: int = 512) -> dict[str, float] | None:
    try:
        from hpa.synthetic import generate_sample
    except ImportError:
        return None
    rng = np.random.default_rng(123)
    cells, nuclei, naive = [], [], []
    for _ in range(n):
        s = generate_sample(rng, size)
        c, nu = segment(s.image)
        cells.append(f1_at(s.cells, c))
        nuclei.append(f1_at(s.nuclei, nu))
        naive.append(f1_at(s.cells, naive_segment(s.image)[0]))
    return {
        "cells": float(np.mean(cells)),
        "nuclei": float(np.mean(nuclei)),
        "naive": float(np.mean(naive)),
        "n": n,
    }


def _write_images(folder: Path, images: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for k, image in enumerate(images):
        for c, color in enumerate(("red", "green", "blue", "yellow")):
            cv2.imwrite(str(folder / f"s{k:03d}_{color}.png"), image[..., c])


def speed(data: Path, tmp: Path, cellpose_weights: Path | None) -> list[tuple[str, int, int, float]]:
    """(backend, side, workers, images/s) rows, measured with segment_folder."""
    folder = data / "hpa-2021-samples"
    real = [
        read_sample(folder / "images", p.name.split("_")[0])
        for p in sorted((folder / "reference-masks").glob("*"))
    ]
    # enough images that the workers' start-up (imports) is a small part of the run
    big = [_shrink(r, 2048) for r in real] * 4  # 16 real images at 2048 px
    small = [_shrink(r, 512) for r in real] * 30  # 120 real images at 512 px
    _write_images(tmp / "img512", small)
    _write_images(tmp / "img2048", big)
    rows = []
    for side in (512, 2048):
        for workers in (1, 2):
            out = tmp / f"seg{side}w{workers}"
            summary = segment_folder(tmp / f"img{side}", out, workers=workers, progress=False)
            rows.append(("watershed", side, workers, summary.n_done / summary.seconds))
    if cellpose_weights is not None:
        _write_images(tmp / "cp512", small[:2])
        config = SegmentConfig(backend="cellpose", cellpose_model=str(cellpose_weights),
                               cellpose_nuclei_model=str(cellpose_weights), cellpose_device="cpu")  # fmt: skip
        segment_folder(tmp / "cp512", tmp / "cp-warm", ids=["s000"], config=config, workers=1, progress=False)
        summary = segment_folder(tmp / "cp512", tmp / "cp", config=config, workers=1, progress=False)
        rows.append(("cellpose (random weights)", 512, 1, summary.n_done / summary.seconds))
    return rows


def _random_cellpose(path: Path) -> Path:
    import torch
    from cellpose.models import CellposeModel

    torch.manual_seed(0)
    CellposeModel(gpu=False, pretrained_model=False, device=torch.device("cpu")).net.save_model(str(path))
    return path


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, nproc {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), Python {platform.python_version()}"


def report(hpa: dict, nuc: dict, syn: dict | None, rows: list, seconds: float) -> str:
    lines = [
        "## Segmentation (`benchmarks/segment_bench.py`)",
        "",
        "Command: `python benchmarks/segment_bench.py` (one run, all figures below).  ",
        f"Machine: {machine()}. Bench wall time {seconds:.0f} s.",
        "",
        "| accuracy (F1 at IoU 0.5, greedy one-to-one) | watershed | naive Otsu + watershed | target |",
        "|---|---|---|---|",
        f"| HPA 2021 cells vs HPA Cell Segmentation masks, native 2048/3072 px (n={hpa['n']}) "
        f"| {hpa['ws_native']:.3f} | {hpa['naive_native']:.3f} | >= 0.85 |",
        f"| same, downscaled to 512 px | {hpa['ws_512']:.3f} | {hpa['naive_512']:.3f} | >= 0.85 |",
        f"| nuclei vs hand annotation, DSB 2018 fluo + stardist sample (n={nuc['n']}) "
        f"| {nuc['ws']:.3f} | {nuc['naive']:.3f} | >= 0.80 |",
    ]
    if syn is not None:
        lines.append(f"| synthetic cells, hpa.synthetic 512 px (n={syn['n']}; nuclei {syn['nuclei']:.3f}) "
                     f"| {syn['cells']:.3f} | {syn['naive']:.3f} | >= 0.95 |")  # fmt: skip
    lines += [
        "",
        "| speed (segment_folder, PNG in, SEG_DIR out) | image side | workers | images/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {b} | {s} | {w} | {r:.2f} |" for b, s, w, r in rows]
    lines += [
        "",
        "Speed inputs: the real HPA samples resized to 512 px (120 images) and 2048 px (16 images).",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text()
    pattern = re.compile(r"## Segmentation \(`benchmarks/segment_bench.py`\)\n.*?(?=\n## |\Z)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no '## Segmentation' section to replace")
    path.write_text(pattern.sub(lambda _m: section.rstrip("\n") + "\n", text, count=1))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=os.environ.get("HPA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    data = Path(args.data)
    start = time.perf_counter()
    hpa = hpa_accuracy(data)
    nuc = nuclei_accuracy(data)
    syn = synthetic_accuracy()
    with tempfile.TemporaryDirectory() as tmp:
        rows = speed(data, Path(tmp), _random_cellpose(Path(tmp) / "random_cp"))
    section = report(hpa, nuc, syn, rows, time.perf_counter() - start)
    sys.stdout.write(section)
    if not args.no_write:
        write_section(REPO / "benchmarks" / "RESULTS.md", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
