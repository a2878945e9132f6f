"""Draw ``hpa export --to geojson`` polygons over their image: docs/geojson_overlay.png.

Reads the GeoJSON back as QuPath would (each Feature's Polygon, ``classification`` name
and colour, ``nucleusGeometry``) and draws it over the RGBY composite, so the picture
shows what QuPath imports::

    hpa export PRED_DIR --to geojson --out GEOJSON_DIR
    python docs/make_geojson_figure.py PRED_DIR GEOJSON_DIR [--id ID] [--out docs/geojson_overlay.png]

docs/geojson_overlay.png came from (D: a folder of ``hpa synth``/``hpa segment`` output,
120 training images, as ``hpa demo`` writes it)::

    hpa train-cells --images D/data/train --labels D/data/train.csv --masks D/seg/train --out D/model \
        --backbone resnet10t --crop-size 48 --epochs 1 --max-steps 40 --batch-size 32 --device cpu
    hpa predict data/hpa-samples/images --model D/model --out D/pred-real --device cpu
    hpa export D/pred-real --to geojson --out D/pred-real/geojson
    python docs/make_geojson_figure.py D/pred-real D/pred-real/geojson
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Polygon

from hpa.visualization.composite import composite
from hpa.visualization.preddir import load_prediction_run

DOCS = Path(__file__).resolve().parent


def draw(image_rgb, collection: dict, title: str, out: Path) -> None:
    """Save the composite with every cell polygon (class colour) and nucleus (white)."""
    h, w = image_rgb.shape[:2]
    fig, ax = plt.subplots(figsize=(w / 100 + 0.2, h / 100 + 0.6), dpi=100)
    ax.imshow(image_rgb, extent=(0, w, h, 0))  # pixel corners, as the GeoJSON coordinates
    names: dict[str, tuple[float, ...]] = {}
    for feature in collection["features"]:
        props = feature["properties"]
        cls = props.get("classification")
        colour = tuple(c / 255 for c in cls["color"]) if cls else (0.6, 0.6, 0.6)
        if cls:
            names[cls["name"]] = colour
        ring = feature["geometry"]["coordinates"][0]
        ax.add_patch(Polygon(ring, closed=True, fill=False, edgecolor=colour, linewidth=1.6))
        if "nucleusGeometry" in feature:
            nuc = feature["nucleusGeometry"]["coordinates"][0]
            ax.add_patch(Polygon(nuc, closed=True, fill=False, edgecolor="white", linewidth=0.6, alpha=0.7))
    handles = [plt.Line2D([], [], color=c, lw=2, label=n) for n, c in sorted(names.items())]
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.7)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout(pad=0.2)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> int:
    """Parse the arguments and write the figure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred", help="PRED_DIR written by 'hpa predict'")
    p.add_argument("geojson", help="folder written by 'hpa export --to geojson'")
    p.add_argument("--id", help="image Id (default: the run's first)")
    p.add_argument("--out", default=str(DOCS / "geojson_overlay.png"), help="PNG to write")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run = load_prediction_run(args.pred)
    image_id = args.id or run.ids[0]
    image, _ = run.load(image_id)
    collection = json.loads((Path(args.geojson) / f"{image_id}.geojson").read_text())
    n = len(collection["features"])
    title = f"{image_id[:8]}…: {n} cells read back from its .geojson (class colour; white: nucleus)"
    draw(composite(image), collection, title, Path(args.out))
    logging.getLogger("make_geojson_figure").info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
