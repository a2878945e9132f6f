"""``hpa synth``: write a Kaggle-2018-style synthetic dataset with its ground truth.

Layout of ``OUT``::

    train/<Id>_{red,green,blue,yellow}.png   test/<Id>_{...}.png
    train.csv            Id,Target (space-separated ascending 2018 class numbers)
    test_labels.csv      Id,Target of the test images
    sample_submission.csv  Id,Predicted ("0"), test Ids in shuffled order (none with --n-test 0)
    truth/cells/<Id>.png   truth/nuclei/<Id>.png  (uint16 instance labels, train and test)
    truth/cell_labels.csv  image_id,cell_id,Target
    truth/cell_labels_2021.csv  image_id,cell_id,Label (2021 classes, '|'-separated)
    train_2021.csv  test_labels_2021.csv  ID,Label (image labels in the 2021 scheme)

The 2021 labels map the 2018 ones by :data:`hpa.aggregation.single_cell.MAP_2018_TO_2021`:
a cell without any mapped pattern (none of the image's patterns, or only dropped ones) is
Negative; an image is Negative when none of its cells carries a mapped pattern.

Every image has its own seed, spawned from ``np.random.SeedSequence(seed)``, so the files
are the same whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hpa.aggregation.single_cell import map_labels_2018_to_2021
from hpa.artefacts import SegDir
from hpa.artefacts.provenance import RECORD_FILE, Provenance, claim_record
from hpa.constants import CHANNELS
from hpa.io import Labels, format_target, write_label_image, write_labels, write_png, write_text_atomic
from hpa.outputs import claim_entries
from hpa.parallel import process_pool
from hpa.synthetic.sample import N_CLASSES, generate_sample

log = logging.getLogger(__name__)

# (split, Id, seed sequence, size, bit depth, output folder)
_Job = tuple[str, str, np.random.SeedSequence, int, int, str]


def image_id(split: str, index: int) -> str:
    """The Id of the ``index``-th synthetic image of a split.

    >>> image_id("train", 7)
    'synth-train-00007'
    """
    return f"synth-{split}-{index:05d}"


# (Id, image labels, cell id -> labels), 2018 class numbers
_Result = tuple[str, tuple[int, ...], dict[int, tuple[int, ...]]]


def _write_one(job: _Job) -> _Result:
    split, iid, seq, size, bit_depth, out = job
    sample = generate_sample(np.random.default_rng(seq), size=size, bit_depth=bit_depth)
    root = Path(out)
    for c, colour in enumerate(CHANNELS):
        write_png(root / split / f"{iid}_{colour}.png", np.ascontiguousarray(sample.image[..., c]))
    truth = SegDir(root / "truth")  # the layout of a SEG_DIR: hpa evaluate and train-segmenter read it
    write_label_image(truth.cell_mask(iid), sample.cells)
    write_label_image(truth.nucleus_mask(iid), sample.nuclei)
    return iid, sample.labels, sample.cell_labels


#: Every name :func:`write_dataset` writes in its folder (:func:`hpa.outputs.claim_entries`).
DATASET_ENTRIES = (
    "train", "test", "truth", "train.csv", "test_labels.csv", "sample_submission.csv",
    "train_2021.csv", "test_labels_2021.csv",
)  # fmt: skip


#: The way out of a folder that holds a draw of other settings.
SYNTH_WAY_OUT = "use another OUT (or delete that folder to draw there anew)"


def synth_record(n_train: int, n_test: int, seed: int, size: int = 512, bit_depth: int = 8) -> Provenance:
    """The record of a synthetic dataset: its settings (it has no inputs)."""
    settings = {"n_train": n_train, "n_test": n_test, "seed": seed, "size": size, "bit_depth": bit_depth}
    return Provenance("synth", "hpa synth", settings)


def _multi_hot(rows: list[tuple[int, ...]]) -> np.ndarray:
    y = np.zeros((len(rows), N_CLASSES), np.uint8)
    for i, labels in enumerate(rows):
        y[i, list(labels)] = 1
    return y


def write_dataset(
    out: str | Path,
    n_train: int,
    n_test: int,
    *,
    seed: int = 0,
    size: int = 512,
    bit_depth: int = 8,
    workers: int = 1,
) -> None:
    """Write a synthetic dataset (see the module docstring for the files).

    Args:
        out: output folder (created).
        n_train: training images.
        n_test: test images.
        seed: random seed; the same seed writes the same files.
        size: image side in pixels.
        bit_depth: 8 or 16 bits per pixel.
        workers: processes drawing images (1 = in this process).
    """
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    out = Path(out)
    claim_entries(out, [*DATASET_ENTRIES, RECORD_FILE], "hpa synth", out_flag="OUT")
    # the same settings draw the same files again; others would leave this draw's extra images
    claim_record(out, synth_record(n_train, n_test, seed, size, bit_depth), way_out=SYNTH_WAY_OUT)
    root = np.random.SeedSequence(seed)
    seqs = root.spawn(n_train + n_test + 1)
    jobs: list[_Job] = [
        ("train", image_id("train", i), seqs[i], size, bit_depth, str(out)) for i in range(n_train)
    ] + [("test", image_id("test", i), seqs[n_train + i], size, bit_depth, str(out)) for i in range(n_test)]
    log.info(
        "drawing %d train + %d test images of %d px, %d-bit, seed %d", n_train, n_test, size, bit_depth, seed
    )
    bar = dict(total=len(jobs), desc="synth", unit="img")
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers, len(jobs)) as pool:
            results = list(tqdm(pool.map(_write_one, jobs, chunksize=4), **bar))
    else:
        results = [_write_one(j) for j in tqdm(jobs, **bar)]
    train, test = results[:n_train], results[n_train:]
    write_labels(
        out / "train.csv", Labels(tuple(r[0] for r in train), _multi_hot([r[1] for r in train]), "2018")
    )
    if test:  # n_test 0: training data only, no test files (a header alone lists nothing)
        write_labels(
            out / "test_labels.csv",
            Labels(tuple(r[0] for r in test), _multi_hot([r[1] for r in test]), "2018"),
        )
        order = np.random.default_rng(seqs[-1]).permutation(len(test))
        write_text_atomic(
            out / "sample_submission.csv", "Id,Predicted\n" + "".join(f"{test[i][0]},0\n" for i in order)
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "cell_id", "Target"])
    for iid, _, cell_labels in results:
        for cell_id in sorted(cell_labels):
            writer.writerow([iid, cell_id, " ".join(map(str, cell_labels[cell_id]))])
    write_text_atomic(out / "truth" / "cell_labels.csv", buf.getvalue())
    _write_2021_labels(out, train, test)
    log.info("wrote %d images and their truth to %s", len(results), out)


def _write_2021_labels(out: Path, train: list[_Result], test: list[_Result]) -> None:
    """The 2021-scheme truth: per-cell labels and image labels of each split."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "cell_id", "Label"])
    for iid, _, cell_labels in train + test:
        ids = sorted(cell_labels)
        y = map_labels_2018_to_2021(_multi_hot([cell_labels[k] for k in ids]))
        for cell_id, row in zip(ids, y, strict=True):
            writer.writerow([iid, cell_id, format_target(row, "|")])
    write_text_atomic(out / "truth" / "cell_labels_2021.csv", buf.getvalue())
    for name, results in (("train_2021.csv", train), ("test_labels_2021.csv", test)):
        if not results:
            continue
        y = map_labels_2018_to_2021(_multi_hot([r[1] for r in results]))
        write_labels(out / name, Labels(tuple(r[0] for r in results), y, "2021"))


def main(args: argparse.Namespace) -> int:
    """``hpa synth`` entry point."""
    write_dataset(args.out, args.n_train, args.n_test, seed=args.seed, size=args.size,
                  bit_depth=args.bit_depth, workers=args.workers)  # fmt: skip
    return 0
