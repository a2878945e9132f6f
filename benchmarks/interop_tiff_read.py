"""Reading one real 2048 px sample: four per-channel PNGs vs one multi-channel (OME-)TIFF.

Takes a real sample of ``../shared/data/hpa-2021-samples``, writes it as an OME-TIFF
(channels first, with names; uncompressed and zlib) and a plain channels-last TIFF in a
temporary folder, checks every file reads back equal through
:func:`hpa.io.read_sample`, and prints the median read time of each::

    python benchmarks/interop_tiff_read.py [--data ../shared/data] [--repeats 7]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from hpa.io import list_image_ids, read_sample
from hpa.io_tiff import ChannelMap

REPO = Path(__file__).resolve().parents[1]
NAMES = ["Tubulin", "Protein", "DAPI", "Calreticulin"]


def median_seconds(fn: Callable[[], np.ndarray], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    """Write the files, check them, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.environ.get("HPA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    p.add_argument("--data", default=default, help="the shared real data folder")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    folder = Path(args.data) / "hpa-2021-samples" / "images"
    image_id = list_image_ids(folder)[0]
    image = read_sample(folder, image_id)
    cmap = ChannelMap.parse("microtubules=Tubulin,protein=Protein,nucleus=DAPI,er=Calreticulin")
    planes = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        meta = {"axes": "CYX", "Channel": {"Name": NAMES}}
        (root / "ome").mkdir()
        tifffile.imwrite(
            root / "ome" / f"{image_id}.ome.tif", planes, photometric="minisblack", metadata=meta
        )
        (root / "zlib").mkdir()
        tifffile.imwrite(
            root / "zlib" / f"{image_id}.ome.tif",
            planes,
            photometric="minisblack",
            metadata=meta,
            compression="zlib",
        )
        (root / "last").mkdir()
        tifffile.imwrite(
            root / "last" / f"{image_id}.tif", image, photometric="minisblack", planarconfig="contig"
        )
        cases = {
            "4 PNGs (as shipped)": (folder, None),
            "OME-TIFF, channels first, uncompressed, mapped by name": (root / "ome", cmap),
            "OME-TIFF, channels first, zlib, mapped by name": (root / "zlib", cmap),
            "TIFF, channels last, uncompressed, default order": (root / "last", None),
        }
        print(f"Id {image_id}, {image.shape[1]}x{image.shape[0]} px, {image.dtype}\n")
        print("| files | MiB | read_sample, median s |")
        print("|---|---|---|")
        for name, (where, channel_map) in cases.items():
            np.testing.assert_array_equal(read_sample(where, image_id, channel_map), image)
            mib = sum(f.stat().st_size for f in where.iterdir() if f.name.startswith(image_id)) / 2**20
            seconds = median_seconds(
                functools.partial(read_sample, where, image_id, channel_map), args.repeats
            )
            print(f"| {name} | {mib:.1f} | {seconds:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
