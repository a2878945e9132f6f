"""Make docs/segmentation_overlay.png: `hpa segment` on a real HPA sample.

Left: the HPA composite with the watershed backend's cells (white) and nuclei (cyan).
Right: the reference masks of the HPA Cell Segmentation tool for the same image.

Usage::

    python docs/make_segmentation_figure.py [--data ../shared/data] [--out docs/segmentation_overlay.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from hpa.io import read_label_image, read_sample, write_png
from hpa.segmentation import f1_at, segment
from hpa.visualization.composite import composite, resize_image, resize_labels

SAMPLE = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"


def draw(panel: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int], thick: bool = True) -> None:
    edges = find_boundaries(labels, mode="inner" if thick else "thin")
    panel[edges] = colour


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(here.parents[1] / "shared" / "data"))
    p.add_argument("--out", default=str(here / "segmentation_overlay.png"))
    p.add_argument("--side", type=int, default=768, help="display side of each panel")
    args = p.parse_args()
    folder = Path(args.data) / "hpa-2021-samples"
    image = read_sample(folder / "images", SAMPLE)
    cells, nuclei = segment(image)
    reference = read_label_image(folder / "reference-masks" / f"{SAMPLE}_cellmask.png")
    f1 = f1_at(reference, cells)
    shape = (args.side, args.side)
    base = resize_image(composite(image), shape)
    ours, ref = base.copy(), base.copy()
    draw(ours, resize_labels(cells, shape), (255, 255, 255))
    draw(ours, resize_labels(nuclei, shape), (0, 230, 255), thick=False)
    draw(ref, resize_labels(reference, shape), (255, 255, 255))
    gap = np.full((args.side, 12, 3), 255, np.uint8)
    write_png(args.out, np.concatenate([ours, gap, ref], axis=1))
    print(f"{args.out}: {cells.max()} cells found, {reference.max()} in the reference, F1@0.5 = {f1:.3f}")


if __name__ == "__main__":
    main()
