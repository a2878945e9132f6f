"""Train a cellpose nuclei model with ``hpa train-segmenter`` on CPU; score it beside the watershed.

    python benchmarks/segmenter_train_bench.py [--data ../shared/data] [--epochs 60]
        [--images-per-epoch 16] [--crop 160] [--lr 0.02] [--no-write]

The model is trained from random weights (no weights are downloaded) on the DSB 2018
tuning half of ``segment_bench``'s fixed split and scored on the left-out half and the
stardist sample, beside the watershed (defaults) on the same images, with the speed of
each (images/s over the left-out half, one process). Writes its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from segment_bench import COLUMNS, Case, Segmenter, _watershed, dsb_split, machine, nuclei_cases, scores

from hpa.segmentation import SegmentConfig, estimate_nucleus_diameter
from hpa.segmentation.cellpose_backend import load_model, model_input, resolve_weights, run_model

log = logging.getLogger("segmenter_train_bench")
REPO = Path(__file__).resolve().parents[1]
SECTION = "## Trained cellpose segmenter (`benchmarks/segmenter_train_bench.py`)"


def cellpose_nuclei(segmodel: Path) -> Segmenter:
    """A segmenter whose nuclei (index 1) are the trained model's, as the cellpose backend runs it."""
    model = load_model(str(resolve_weights(str(segmodel), "nuclei")), "cpu")
    config = SegmentConfig(backend="cellpose")

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nuclei = run_model(
            model, model_input(image, "nuclei"), [0, 0], estimate_nucleus_diameter(image), config
        )
        return nuclei, nuclei

    return run


def timed_scores(cases: list[Case], segmenter: Segmenter) -> tuple[np.ndarray, float]:
    """Mean scores of the nuclei over ``cases`` and images/s."""
    segmenter(cases[0][1])  # warm-up (model load, first call)
    start = time.perf_counter()
    preds = [segmenter(image)[1] for _name, image, _truth in cases]
    rate = len(cases) / (time.perf_counter() - start)
    return np.mean([scores(t, p) for (_n, _i, t), p in zip(cases, preds)], axis=0), rate


def train(data: Path, out: Path, args: argparse.Namespace) -> float:
    """Run ``hpa train-segmenter`` on the DSB tuning half; returns its wall time in seconds."""
    tune, _test = dsb_split(data)
    folder = out / "dsb-tune"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
        for p in tune:
            (folder / sub / p.name).symlink_to(p.parent.parent / sub / p.name)
    command = [sys.executable, "-m", "hpa", "train-segmenter", "--kind", "nuclei", "--device", "cpu",
               "--images", str(folder / "images"), "--masks", str(folder / "labels"), "--out", str(out / "segmodel"),
               "--epochs", str(args.epochs), "--images-per-epoch", str(args.images_per_epoch),
               "--crop", str(args.crop), "--lr", str(args.lr)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def report(
    rows: list[tuple[str, str, int, np.ndarray, float]], args: argparse.Namespace, seconds: float
) -> str:
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/segmenter_train_bench.py --epochs {args.epochs} --images-per-epoch "
        f"{args.images_per_epoch} --crop {args.crop} --lr {args.lr}`.  ",
        f"Machine: {machine()}, shared with other work (load average well above the 2 cores while it ran).",
        "",
        f"`hpa train-segmenter --kind nuclei` from random weights on the DSB tuning half (64 images) "
        f"on CPU: {args.epochs} epochs x {args.images_per_epoch} random {args.crop} px crops, "
        f"{seconds / 60:.1f} min wall. Scored on images it never saw; speed is images/s of one process "
        "over the left-out half (their sizes vary, 256-1388 px).",
        "",
        "| nuclei data | method | n | " + " | ".join(COLUMNS) + " | images/s |",
        "|---|---|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    lines += [
        f"| {d} | {m} | {n} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {rate:.2f} |"
        for d, m, n, vals, rate in rows
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section of RESULTS.md, or append it at the end."""
    text = path.read_text()
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=os.environ.get("HPA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--images-per-epoch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    data = Path(args.data)
    _tune, test, stardist = nuclei_cases(data)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = train(data, Path(tmp), args)
        trained = cellpose_nuclei(Path(tmp) / "segmodel")
        watershed = _watershed(SegmentConfig())
        rows = []
        for label, cases in (("DSB 2018 left-out half", test), ("stardist sample (left-out)", stardist)):
            for method, segmenter in (("watershed defaults", watershed), ("cellpose, trained here", trained)):
                vals, rate = timed_scores(cases, segmenter)
                rows.append((label, method, len(cases), vals, rate))
                log.info("%s | %s | %s | %.2f images/s", label, method, np.round(vals, 3).tolist(), rate)
    section = report(rows, args, seconds)
    sys.stdout.write(section)
    if not args.no_write:
        write_section(REPO / "benchmarks" / "RESULTS.md", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
