"""Draw ``docs/synthetic_vs_real.png``: a real HPA image beside a synthetic one, and the
green pattern of every 2018 class in one synthetic cell.

Usage::

    python docs/make_synthetic_figure.py [--real-dir ../shared/data/hpa-2021-samples/images]

The real sample is Human Protein Atlas data (proteinatlas.org, CC BY-SA 3.0), downscaled
from 2048 to 512 px (the Kaggle 2018 scale).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from hpa.constants import CLASS_NAMES_2018
from hpa.io import percentile_stretch, read_sample
from hpa.synthetic import generate_sample

log = logging.getLogger("make_synthetic_figure")

HERE = Path(__file__).resolve().parent
REAL_ID = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"


def composite(image: np.ndarray) -> np.ndarray:
    """HPA RGB composite of an ``(H, W, 4)`` image: yellow added to red and green.

    Returns:
        ``(H, W, 3)`` float32 in [0, 1].
    """
    x = image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    r, g, b, y = (x[..., i] for i in range(4))
    rgb = np.stack([r + 0.5 * y, g + 0.5 * y, b], axis=-1)
    return np.clip(rgb * 1.3, 0.0, 1.0)


def class_crop(cls: int, side: int = 128, seed: int = 0) -> np.ndarray:
    """Green channel of one synthetic cell expressing ``cls``, ``(side, side)`` float32."""
    for attempt in range(20):  # cell junctions need touching cells: redraw until some touch
        s = generate_sample(np.random.default_rng(1000 + 31 * cls + seed + attempt), size=512, classes=[cls])
        carrying = [i for i, v in s.cell_labels.items() if cls in v]
        if carrying:
            break
    areas = {i: int((s.cells == i).sum()) for i in carrying}
    cell = max(areas, key=lambda i: areas[i])
    ys, xs = np.nonzero(s.cells == cell)
    if cls == 16:  # show the whole dividing pair
        ys, xs = np.nonzero(np.isin(s.cells, carrying))
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) // 2 + 6
    green = np.pad(s.image[..., 1], half)[cy : cy + 2 * half, cx : cx + 2 * half]
    return cv2.resize(percentile_stretch(green, 1, 99.9), (side, side), interpolation=cv2.INTER_AREA)


def make_figure(real_dir: Path, out: Path) -> None:
    """Write the comparison figure to ``out``."""
    real = cv2.resize(read_sample(real_dir, REAL_ID), (512, 512), interpolation=cv2.INTER_AREA)
    synth = generate_sample(np.random.default_rng(4), size=512, classes=[0, 7])
    fig = plt.figure(figsize=(14, 13.5), dpi=72)
    grid = fig.add_gridspec(6, 7, height_ratios=[3.5, 3.5, 1, 1, 1, 1], hspace=0.25, wspace=0.05)
    panels = (
        (real, f"real HPA {REAL_ID[:8]} (2048 px → 512), labels 0 1 2 7"),
        (synth.image, f"synthetic (hpa synth, 512 px), labels {' '.join(map(str, synth.labels))}"),
    )
    for col, (img, title) in enumerate(panels):
        ax = fig.add_subplot(grid[0:2, 0:3] if col == 0 else grid[0:2, 4:7])
        ax.imshow(composite(img))
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    for cls, name in enumerate(CLASS_NAMES_2018):
        ax = fig.add_subplot(grid[2 + cls // 7, cls % 7])
        ax.imshow(class_crop(cls), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{cls} {name}", fontsize=7)
        ax.axis("off")
    fig.savefig(out, dpi=72, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    log.info("wrote %s (%.0f kB)", out, out.stat().st_size / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--real-dir", type=Path, default=HERE.parents[1] / "shared/data/hpa-2021-samples/images"
    )
    parser.add_argument("--out", type=Path, default=HERE / "synthetic_vs_real.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    make_figure(args.real_dir, args.out)


if __name__ == "__main__":
    main()
