"""Segmentation accuracy on tuning and left-out images, and speed; writes RESULTS.md.

    python benchmarks/segment_bench.py [--data ../shared/data] [--no-write] [--no-speed]

Accuracy: matched-object F1 at IoU 0.5, 0.6, 0.7, 0.8, 0.9 and its mean over 0.5:0.95
(:func:`hpa.segmentation.f1_curve`, whose counts equal cellpose's ``average_precision``)
of the ``watershed`` backend and of a naive baseline (Otsu + seeded watershed, no scale
estimation) on (1) the real HPA 2021 samples against the HPA Cell Segmentation tool's
cell masks, native and downscaled to 512 px, leave-one-image-out; (2) hand-annotated
nuclei (DSB 2018 fluorescence, a fixed half/half split, and the stardist sample) fed as
the blue channel; (3) synthetic samples with exact truth (``hpa.synthetic``). Settings
are chosen on tuning parts only and scored on the left-out ones. Speed: images/s of
``hpa.pipelines.segment.segment_folder``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import logging
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from hpa.io import read_grey, read_sample
from hpa.pipelines.segment import segment_folder
from hpa.segmentation import COCO_IOUS, REPORT_IOUS, SegmentConfig, f1_curve, segment

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


Case = tuple[str, np.ndarray, np.ndarray]  # name, (H, W, 4) sample, (H, W) true labels
Segmenter = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: seed of the fixed half/half split of the DSB 2018 images into tuning and left-out parts
DSB_SPLIT_SEED = 2018
#: settings searched on the tuning parts only (each grid crosses its values)
CELL_GRID: dict[str, tuple[float, ...]] = {
    "cell_threshold_scale": (0.7, 1.0, 1.4),
    "max_cell_radius": (1.5, 2.0, 3.0),
}
NUCLEI_GRID: dict[str, tuple[float, ...]] = {
    "nucleus_split_h": (0.03, 0.04, 0.06),
    "nucleus_background": (0.0, 1.5),
}
COLUMNS = [f"F1@{t:.1f}" for t in REPORT_IOUS] + ["mean 0.5:0.95"]
_REPORT_INDEX = [COCO_IOUS.index(t) for t in REPORT_IOUS]


def scores(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """F1 at :data:`REPORT_IOUS` and the mean over 0.5:0.95: ``(len(COLUMNS),)`` float64."""
    curve = f1_curve(truth, pred, COCO_IOUS)
    return np.append(curve[_REPORT_INDEX], curve.mean())


def score_cases(cases: list[Case], segmenter: Segmenter, which: int) -> np.ndarray:
    """``(len(cases), len(COLUMNS))`` scores of ``segmenter``'s cells (0) or nuclei (1)."""
    return np.array([scores(truth, segmenter(image)[which]) for _name, image, truth in cases])


def grid(base: SegmentConfig, axes: dict[str, tuple[float, ...]]) -> list[SegmentConfig]:
    """Every combination of ``axes`` values applied to ``base``."""
    keys = list(axes)
    changes: list[dict[str, Any]] = [dict(zip(keys, vals)) for vals in itertools.product(*axes.values())]
    return [dataclasses.replace(base, **change) for change in changes]


def describe(config: SegmentConfig, axes: dict[str, tuple[float, ...]]) -> str:
    return ", ".join(f"{k}={getattr(config, k):g}" for k in axes)


def hpa_cases(data: Path, side: int | None) -> list[Case]:
    """The HPA 2021 samples with the HPA Cell Segmentation masks, native or shrunk to ``side``."""
    folder = data / "hpa-2021-samples"
    cases = []
    for mask_path in sorted((folder / "reference-masks").glob("*_cellmask.png")):
        image_id = mask_path.name.replace("_cellmask.png", "")
        image = read_sample(folder / "images", image_id)
        ref = read_grey(mask_path).astype(np.int32)
        if side is not None:
            image, ref = _shrink(image, side), _shrink(ref, side, labels=True)
        cases.append((image_id[:8], image, ref))
    return cases


def _as_blue(grey: np.ndarray) -> np.ndarray:
    image = np.zeros((*grey.shape, 4), grey.dtype)
    image[..., 2] = grey
    return image


def dsb_split(data: Path) -> tuple[list[Path], list[Path]]:
    """(tuning half, left-out half) of the DSB 2018 image files, fixed by :data:`DSB_SPLIT_SEED`.

    The halves are a permutation of the sorted file names, so they never change between runs.
    """
    files = sorted((data / "nuclei-groundtruth" / "dsb2018-fluo" / "images").glob("*.png"))
    order = np.random.default_rng(DSB_SPLIT_SEED).permutation(len(files))
    half = len(files) // 2
    return [files[k] for k in sorted(order[:half])], [files[k] for k in sorted(order[half:])]


def _dsb_case(path: Path) -> Case:
    truth = read_grey(path.parent.parent / "labels" / path.name).astype(np.int32)
    return (path.stem[:10], _as_blue(read_grey(path)), truth)


def nuclei_cases(data: Path) -> tuple[list[Case], list[Case], list[Case]]:
    """(DSB tuning half, DSB left-out half, stardist sample): grey images fed as blue."""
    import tifffile

    tune, test = dsb_split(data)
    star = data / "nuclei-groundtruth" / "stardist-sample"
    stardist = [("stardist", _as_blue(tifffile.imread(star / "img2d.tif")),
                 tifffile.imread(star / "mask2d.tif").astype(np.int32))]  # fmt: skip
    return [_dsb_case(p) for p in tune], [_dsb_case(p) for p in test], stardist


def synthetic_cases(n: int = 8, size: int = 512, seed: int = 2026) -> tuple[list[Case], list[Case]] | None:
    """(cells, nuclei) cases of ``n`` ``hpa.synthetic`` samples with exact truth, or None."""
    try:
        from hpa.synthetic import generate_sample
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    samples = [generate_sample(rng, size) for _ in range(n)]
    return ([(f"syn{k}", s.image, s.cells) for k, s in enumerate(samples)],
            [(f"syn{k}", s.image, s.nuclei) for k, s in enumerate(samples)])  # fmt: skip


def _watershed(config: SegmentConfig) -> Segmenter:
    return functools.partial(segment, config=config)


def leave_one_out(sets: dict[str, list[Case]], configs: list[SegmentConfig], which: int) -> dict:
    """Leave-one-image-out choice among ``configs`` over parallel case lists.

    ``sets`` maps a name (e.g. native, 512 px) to the same images in the same order; for
    each left-out image the config with the best mean F1 (0.5:0.95) over the other
    images of every set is chosen and scored on the left-out image.

    Returns:
        ``{"tuning": {name: (n_cols,)}, "left-out": {name: (n_cols,)}, "chosen": [config]}``:
        means over the folds.
    """
    table = {
        name: np.stack([score_cases(cases, _watershed(c), which) for c in configs])
        for name, cases in sets.items()
    }
    n = len(next(iter(sets.values())))
    tuning: dict[str, list[np.ndarray]] = {name: [] for name in sets}
    left: dict[str, list[np.ndarray]] = {name: [] for name in sets}
    chosen = []
    for i in range(n):
        rest = [k for k in range(n) if k != i]
        objective = sum(t[:, rest, -1].mean(axis=1) for t in table.values())
        best = int(np.argmax(objective))
        chosen.append(configs[best])
        for name, t in table.items():
            tuning[name].append(t[best, rest].mean(axis=0))
            left[name].append(t[best, i])
    return {
        "tuning": {k: np.mean(v, axis=0) for k, v in tuning.items()},
        "left-out": {k: np.mean(v, axis=0) for k, v in left.items()},
        "chosen": chosen,
        "all": table,
    }


def split_choice(
    tune: list[Case], tests: dict[str, list[Case]], configs: list[SegmentConfig], which: int
) -> dict:
    """Choose among ``configs`` on ``tune`` (best mean F1 0.5:0.95), score it on each of ``tests``."""
    tune_scores = [score_cases(tune, _watershed(c), which) for c in configs]
    best = int(np.argmax([s[:, -1].mean() for s in tune_scores]))
    out = {"tuning": tune_scores[best].mean(axis=0), "chosen": configs[best]}
    for name, cases in tests.items():
        out[name] = score_cases(cases, _watershed(configs[best]), which).mean(axis=0)
    return out


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


Row = tuple[str, str, str, int, np.ndarray]  # data, method, part, n, scores (len(COLUMNS),)


def accuracy(data: Path) -> tuple[list[Row], list[str]]:
    """Every accuracy row of the table, and notes on the settings chosen per fold."""
    rows: list[Row] = []
    notes: list[str] = []
    default = SegmentConfig()
    naive: Segmenter = naive_segment
    hpa = {"native": hpa_cases(data, None), "512 px": hpa_cases(data, 512)}
    loo = leave_one_out(hpa, grid(default, CELL_GRID), 0)
    for name, cases in hpa.items():
        label = f"HPA cells vs HPA Cell Segmentation, {name}"
        n = len(cases)
        rows.append(
            (
                label,
                "watershed defaults",
                "all (tuned on them)",
                n,
                score_cases(cases, _watershed(default), 0).mean(axis=0),
            )
        )
        rows.append((label, "watershed, leave-one-out", "tuning", n, loo["tuning"][name]))
        rows.append((label, "watershed, leave-one-out", "**left-out**", n, loo["left-out"][name]))
        rows.append(
            (
                label,
                "naive Otsu + watershed",
                "left-out (untuned)",
                n,
                score_cases(cases, naive, 0).mean(axis=0),
            )
        )
    notes.append(
        "HPA leave-one-out choices (per left-out image): "
        + "; ".join(f"{case[0]}: {describe(c, CELL_GRID)}" for case, c in zip(hpa["native"], loo["chosen"]))
    )
    tune, test, stardist = nuclei_cases(data)
    split = split_choice(tune, {"test": test, "stardist": stardist}, grid(default, NUCLEI_GRID), 1)
    label = "nuclei vs hand annotation, DSB 2018 fluo"
    rows.append(
        (
            label,
            "watershed defaults",
            "tuning half",
            len(tune),
            score_cases(tune, _watershed(default), 1).mean(axis=0),
        )
    )
    rows.append(
        (
            label,
            "watershed defaults",
            "**left-out half**",
            len(test),
            score_cases(test, _watershed(default), 1).mean(axis=0),
        )
    )
    rows.append((label, "watershed, chosen on tuning half", "tuning half", len(tune), split["tuning"]))
    rows.append((label, "watershed, chosen on tuning half", "**left-out half**", len(test), split["test"]))
    rows.append(
        (
            label,
            "naive Otsu + watershed",
            "left-out half (untuned)",
            len(test),
            score_cases(test, naive, 1).mean(axis=0),
        )
    )
    label = "nuclei vs hand annotation, stardist sample"
    rows.append((label, "watershed, chosen on DSB tuning half", "**left-out**", 1, split["stardist"]))
    rows.append(
        (
            label,
            "naive Otsu + watershed",
            "left-out (untuned)",
            1,
            score_cases(stardist, naive, 1).mean(axis=0),
        )
    )
    notes.append(f"DSB tuning-half choice: {describe(split['chosen'], NUCLEI_GRID)}")
    syn = synthetic_cases()
    if syn is not None:
        for which, (kind, cases) in enumerate(zip(("cells", "nuclei"), syn)):
            label = f"synthetic {kind} (hpa.synthetic 512 px, exact truth)"
            rows.append(
                (
                    label,
                    "watershed defaults",
                    "left-out seeds",
                    len(cases),
                    score_cases(cases, _watershed(default), which).mean(axis=0),
                )
            )
            rows.append(
                (
                    label,
                    "naive Otsu + watershed",
                    "left-out seeds",
                    len(cases),
                    score_cases(cases, naive, which).mean(axis=0),
                )
            )
    return rows, notes


def report(rows: list[Row], notes: list[str], speed_rows: list, seconds: float) -> str:
    lines = [
        "## Segmentation (`benchmarks/segment_bench.py`)",
        "",
        "Command: `python benchmarks/segment_bench.py` (one run, all figures below).  ",
        f"Machine: {machine()}, shared with other work while it ran. Bench wall time {seconds:.0f} s.",
        "",
        "Matched-object F1 (one-to-one, counts equal to `cellpose.metrics.average_precision`'s) at "
        "IoU 0.5-0.9 and its mean over IoU 0.5:0.95. *Tuning* rows score the images a setting "
        "was chosen on, *left-out* rows images it was not: leave-one-image-out over the four HPA "
        f"samples (a grid over {', '.join(CELL_GRID)} chosen on the other three, native and 512 px "
        f"together), a fixed half/half split of the DSB images (seed {DSB_SPLIT_SEED}; grid over "
        f"{', '.join(NUCLEI_GRID)} chosen on the tuning half), the stardist sample and synthetic "
        "samples (seed 2026) never used in tuning. Targets on left-out images: cells F1@0.6 >= 0.85, "
        "DSB nuclei F1@0.5 >= 0.80.",
        "",
        "| data | method | part | n | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    lines += [
        f"| {d} | {m} | {part} | {n} | " + " | ".join(f"{v:.3f}" for v in vals) + " |"
        for d, m, part, n, vals in rows
    ]
    lines += [""] + [f"{note}.  " for note in notes]
    lines += [
        "",
        "| speed (segment_folder, PNG in, SEG_DIR out) | image side | workers | images/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {b} | {s} | {w} | {r:.2f} |" for b, s, w, r in speed_rows]
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
    parser.add_argument("--no-speed", action="store_true", help="accuracy only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    data = Path(args.data)
    start = time.perf_counter()
    rows, notes = accuracy(data)
    for d, m, part, n, vals in rows:
        log.info("%s | %s | %s | n=%d | %s", d, m, part, n, np.round(vals, 3).tolist())
    speed_rows: list = []
    if not args.no_speed:
        with tempfile.TemporaryDirectory() as tmp:
            speed_rows = speed(data, Path(tmp), _random_cellpose(Path(tmp) / "random_cp"))
    section = report(rows, notes, speed_rows, time.perf_counter() - start)
    sys.stdout.write(section)
    if not args.no_write:
        write_section(REPO / "benchmarks" / "RESULTS.md", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
