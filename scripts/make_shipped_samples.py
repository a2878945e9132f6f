"""Make the small real samples shipped in the repository's ``data/hpa-samples/`` folder.

Takes two real 2048 px HPA samples (two different label sets) from the project's shared
real data, downsizes each channel to 512x512 with ``cv2.INTER_AREA`` (as the Kaggle 2018
images were made), and writes:

- ``images/<Id>_{red,green,blue,yellow}.png``: 8-bit grey PNGs, the Kaggle 2018 layout;
- ``train.csv``: their ``Id,Target`` rows (2018, 28 classes), copied verbatim;
- ``labels_2021.csv``: their ``ID,Label`` rows (2021, 19 classes), copied verbatim;
- ``reference-masks/<Id>_cellmask.png``: the HPA Cell Segmentation reference cell masks
  downsized nearest-neighbour to 512 px, as uint16 label PNGs (every instance is kept).

Usage::

    python scripts/make_shipped_samples.py [--source ../shared/data/hpa-2021-samples] [--out data/hpa-samples]

The output is deterministic for a given input. ``data/README.md`` carries the sources and
the CC BY-SA 3.0 attribution the images require.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

import cv2
import numpy as np

from hpa.constants import CHANNELS
from hpa.errors import HPADataError
from hpa.io import read_grey, read_sample, write_label_image, write_png, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "hpa-2021-samples"
DEFAULT_OUT = REPO / "data" / "hpa-samples"
#: Two samples with different label sets: 2018 "7 1 2 0" and "11 5 0".
SAMPLE_IDS = (
    "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0",
    "5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0",
)
SIZE = 512

log = logging.getLogger("make_shipped_samples")


def select_rows(csv_path: Path, ids: tuple[str, ...]) -> str:
    """The header and the rows of ``ids`` (in ``ids`` order) of a label CSV, as CSV text."""
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], {r[0]: r for r in rows[1:] if r}
    missing = [i for i in ids if i not in body]
    if missing:
        raise HPADataError(f"{csv_path}: no row for Id(s) {', '.join(missing)}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body[i] for i in ids)
    return buf.getvalue()


def shrink_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Downsize an instance mask nearest-neighbour, checking no instance disappears.

    Returns:
        ``(size, size)`` uint16 label image.
    """
    small = cv2.resize(mask.astype(np.uint16), (size, size), interpolation=cv2.INTER_NEAREST)
    before, after = set(np.unique(mask)), set(np.unique(small))
    if before != after:
        raise HPADataError(f"instances lost when downsizing the mask: {sorted(before - after)}")
    return small


def make_samples(source: Path, out: Path, ids: tuple[str, ...] = SAMPLE_IDS, size: int = SIZE) -> None:
    """Write the downsized samples, their labels and reference masks under ``out``."""
    for image_id in ids:
        sample = read_sample(source / "images", image_id)
        if sample.dtype != np.uint8:
            raise HPADataError(f"Id {image_id}: expected 8-bit channels, got {sample.dtype}")
        for k, color in enumerate(CHANNELS):
            small = cv2.resize(sample[..., k], (size, size), interpolation=cv2.INTER_AREA)
            write_png(out / "images" / f"{image_id}_{color}.png", small)
        mask = read_grey(source / "reference-masks" / f"{image_id}_cellmask.png")
        small_mask = shrink_mask(mask, size)
        write_label_image(out / "reference-masks" / f"{image_id}_cellmask.png", small_mask)
        log.info("%s: %s -> %dx%d, %d cells", image_id, sample.shape, size, size, int(small_mask.max()))
    write_text_atomic(out / "train.csv", select_rows(source / "labels_2018.csv", ids))
    write_text_atomic(out / "labels_2021.csv", select_rows(source / "labels_2021.csv", ids))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the hpa-2021-samples folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--size", type=int, default=SIZE, help="output side in pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_samples(args.source, args.out, SAMPLE_IDS, args.size)


if __name__ == "__main__":
    main()
