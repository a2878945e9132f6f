"""Draw what the napari reader hands napari for one image of a run: docs/napari_layers.png.

napari's own screenshot needs an OpenGL context (this machine has none), so the layers
the reader returns (:func:`hpa.interop.napari.read_image`) are drawn here with matplotlib
the way napari shows them: each channel layer scaled to its ``contrast_limits`` in its
colormap and added (``blending: additive``), then the Labels layer filled in its
``colormap`` (each cell's top class, in the report's colours) at its ``opacity``; the
cells' outlines are added so neighbours of one class part. Left: the channels alone;
right: with the cells::

    python docs/make_napari_figure.py PRED_DIR [--id ID] [--out docs/napari_layers.png]

docs/napari_layers.png came from the shipped real samples and a tiny model (its classes
show the reader's colours, not a classifier's accuracy)::

    hpa synth D/syn --n-train 120 --n-test 0 --size 256 --seed 0
    hpa segment D/syn/train --out D/seg-train
    hpa train-cells --images D/syn/train --labels D/syn/train.csv --masks D/seg-train --out D/model \
        --backbone resnet10t --crop-size 48 --epochs 1 --max-steps 40 --batch-size 32 --device cpu
    hpa segment data/hpa-samples/images --out D/seg-real
    hpa predict data/hpa-samples/images --model D/model --masks D/seg-real --out D/pred-real --device cpu
    python docs/make_napari_figure.py D/pred-real
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from skimage.segmentation import find_boundaries

from hpa.interop.napari import image_ids, read_image

DOCS = Path(__file__).resolve().parent
#: The RGB of napari's colormaps the reader names.
COLORMAPS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}


def channels_rgb(layers: list) -> np.ndarray:
    """``(H, W, 3)`` floats: the image layers in their colormaps, added as napari blends them."""
    rgb = None
    for data, kwargs, kind in layers:
        if kind != "image":
            continue
        lo, hi = kwargs["contrast_limits"]
        value = np.clip((data.astype(np.float32) - lo) / (hi - lo), 0, 1)
        part = value[..., None] * np.array(COLORMAPS[kwargs["colormap"]], np.float32)
        rgb = part if rgb is None else rgb + part
    if rgb is None:
        raise SystemExit("the run names no readable images folder: the reader gave the cells only")
    return np.clip(rgb, 0, 1)


def with_labels(rgb: np.ndarray, cells: np.ndarray, kwargs: dict) -> np.ndarray:
    """The Labels layer over ``rgb``: each label in its colormap colour at the layer's opacity."""
    colours = kwargs["colormap"]
    lut = np.array([colours.get(i, colours[None]) for i in range(int(cells.max()) + 1)], np.float32)
    rgba = lut[cells]
    alpha = rgba[..., 3:] * kwargs["opacity"]
    out = rgb * (1 - alpha) + rgba[..., :3] * alpha
    edges = find_boundaries(cells, mode="inner")
    out[edges] = rgba[edges, :3]
    return out


def draw(layers: list, image_id: str, out: Path) -> None:
    """Save the two panels with a legend of the top classes present."""
    cells, kwargs, _ = layers[-1]
    rgb = channels_rgb(layers)
    features = kwargs["features"]
    legend = {}
    for cid, top in zip(features["index"], features["top_class"]):
        legend[top or "no class over threshold"] = kwargs["colormap"].get(int(cid), kwargs["colormap"][None])
    meta = kwargs["metadata"]["hpa"]
    size = meta["pixel_size"]
    scale = f"pixel {size[1]:g} {size[2]}" if size else "pixel units (the PNGs record no pixel size)"
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.6), dpi=100)
    axes[0].imshow(rgb, interpolation="antialiased")
    axes[0].set_title("4 image layers (red, green, blue, yellow; additive)", fontsize=9)
    axes[1].imshow(with_labels(rgb, cells, kwargs), interpolation="antialiased")
    axes[1].set_title(
        f"+ the '{image_id[:8]}… cells' Labels layer: {len(features)} cells, top class", fontsize=9
    )
    for ax in axes:
        ax.set_axis_off()
    handles = [plt.Line2D([], [], color=c[:3], lw=6, label=n) for n, c in sorted(legend.items())]
    axes[1].legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.8)
    fig.suptitle(f"hpa-cells napari reader, {image_id}: the layers it hands napari; {scale}", fontsize=10)
    fig.tight_layout(pad=0.4)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> int:
    """Parse the arguments and write the figure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred", help="PRED_DIR written by 'hpa predict' (or a SEG_DIR: no class colours)")
    p.add_argument("--id", help="image Id (default: the run's first)")
    p.add_argument("--out", default=str(DOCS / "napari_layers.png"), help="PNG to write")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    image_id = args.id or image_ids(args.pred)[0]
    draw(read_image(args.pred, image_id), image_id, Path(args.out))
    logging.getLogger("make_napari_figure").info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
