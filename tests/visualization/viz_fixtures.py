"""Builders of a hand-made PRED_DIR and SEG_DIR following docs/artefacts.md."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from skimage.draw import disk

from hpa.constants import CHANNELS
from hpa.io import write_label_image, write_png

SIZE = 256
#: cell id -> (centre row, centre col, radius, class number or None, probability)
CELLS = {
    1: (64, 64, 30, 0, 0.9),
    2: (64, 185, 30, 2, 0.8),
    3: (185, 120, 35, None, 0.3),
}
THRESHOLD = 0.5


def draw_sample(seed: int, bit_depth: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A ``(SIZE, SIZE, 4)`` sample with disk cells and its uint16 cell mask."""
    rng = np.random.default_rng(seed)
    cells = np.zeros((SIZE, SIZE), np.uint16)
    image = rng.normal(10, 2, (SIZE, SIZE, 4)).clip(0, None)
    for cid, (r, c, rad, _, _) in CELLS.items():
        rr, cc = disk((r, c), rad, shape=cells.shape)
        cells[rr, cc] = cid
        image[rr, cc] += (90, 140, 40, 70)
        rn, cn = disk((r, c), rad // 2, shape=cells.shape)
        image[rn, cn, 2] += 150  # nucleus
    scale = 1.0 if bit_depth == 8 else 200.0  # 16-bit data use ~15 bits
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.clip(image * scale, 0, np.iinfo(dtype).max).astype(dtype), cells


def cell_rows(image_id: str, class_names: Sequence[str]) -> list[dict[str, object]]:
    """``cell_predictions`` rows of one image: each cell's class at its probability."""
    rows = []
    for cid, (r, c, rad, k, p) in CELLS.items():
        probs = np.full(len(class_names), 0.05)
        probs[k if k is not None else 1] = p
        row: dict[str, object] = {
            "image_id": image_id,
            "cell_id": cid,
            "bbox_y0": r - rad,
            "bbox_x0": c - rad,
            "bbox_y1": r + rad + 1,
            "bbox_x1": c + rad + 1,
        }
        row.update(zip(class_names, probs.tolist()))
        row["predicted"] = " ".join(str(j) for j in np.flatnonzero(probs >= THRESHOLD))
        rows.append(row)
    return rows


def make_pred_dir(root: Path, class_names: Sequence[str], ids: dict[str, int]) -> Path:
    """Write images/, a PRED_DIR with masks/ (a SEG_DIR) and labels.csv under ``root``.

    Args:
        root: empty folder.
        class_names: classes of the run.
        ids: image Id -> bit depth.
    """
    images, pred = root / "images", root / "pred"
    seg = pred / "masks"
    rows, scores, subs = [], [], []
    for n, (image_id, depth) in enumerate(ids.items()):
        image, cells = draw_sample(n, depth)
        for c, name in enumerate(CHANNELS):
            write_png(images / f"{image_id}_{name}.png", image[..., c])
        write_label_image(seg / "cells" / f"{image_id}.png", cells)
        write_label_image(seg / "nuclei" / f"{image_id}.png", cells)
        rows += cell_rows(image_id, class_names)
        probs = pd.DataFrame(rows[-len(CELLS) :])[list(class_names)].to_numpy()
        pooled = probs.max(axis=0)
        scores.append({"Id": image_id, **dict(zip(class_names, pooled.tolist()))})
        subs.append({"Id": image_id, "Predicted": " ".join(map(str, np.flatnonzero(pooled >= THRESHOLD)))})
    pd.DataFrame(rows).to_parquet(pred / "cell_predictions.parquet")
    pd.DataFrame(scores).to_csv(pred / "image_scores.csv", index=False)
    pd.DataFrame(subs).to_csv(pred / "submission.csv", index=False)
    (pred / "thresholds.json").write_text(
        json.dumps(
            {
                "class_names": list(class_names),
                "thresholds": [THRESHOLD] * len(class_names),
                "method": "fixed",
                "global_threshold": THRESHOLD,
            }
        )
    )
    config = {"images": str(images.resolve()), "masks": str(seg.resolve())}
    (pred / "config.yaml").write_text(yaml.safe_dump(config))
    (pred / "failures.csv").write_text("image_id,error\n")
    # truth: the first image right, the second with a missed class 5
    truth = ["Id,Target"] + [f"{i},0 2" if n == 0 else f"{i},0 5" for n, i in enumerate(ids)]
    (root / "labels.csv").write_text("\n".join(truth) + "\n")
    return pred
