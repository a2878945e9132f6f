"""Watershed speed of the current defaults against the previous ones, alternated in one run.

``python benchmarks/segment_speed_ab.py [--data ../shared/data]``: 120 real samples at
512 px and 16 at 2048 px (the HPA 2021 samples, repeated), ``hpa segment`` with 2 workers,
each configuration twice. The two configurations are named, not taken from the defaults:
"new" is issue 16's ``cell_threshold_scale 1.0``, ``max_cell_radius 3``; "old" is
``cell_threshold_scale 0.5``, ``max_cell_radius 2`` (the defaults before issue 16, and
again since ``benchmarks/seg_defaults_bench.py``).
"""

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from hpa.pipelines.segment import segment_folder
from hpa.segmentation import SegmentConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import segment_bench as sb


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    data = parser.parse_args().data
    tmp = Path(tempfile.mkdtemp())
    folder = data / "hpa-2021-samples"
    real = [
        sb.read_sample(folder / "images", p.name.split("_")[0])
        for p in sorted((folder / "reference-masks").glob("*"))
    ]
    sb._write_images(tmp / "img512", [sb._shrink(r, 512) for r in real] * 30)
    sb._write_images(tmp / "img2048", [sb._shrink(r, 2048) for r in real] * 4)
    new = replace(SegmentConfig(), cell_threshold_scale=1.0, max_cell_radius=3.0)
    old = replace(SegmentConfig(), cell_threshold_scale=0.5, max_cell_radius=2.0)
    for rep in range(2):
        for name, cfg in (("new", new), ("old", old)):
            for side in (512, 2048):
                s = segment_folder(
                    tmp / f"img{side}",
                    tmp / f"seg-{name}-{side}-{rep}",
                    config=cfg,
                    workers=2,
                    progress=False,
                )
                print(
                    f"{name} {side}px 2 workers: {s.n_done / s.seconds:.2f} images/s ({s.n_done} images)",
                    flush=True,
                )
    print(sb.machine())


if __name__ == "__main__":
    main()
