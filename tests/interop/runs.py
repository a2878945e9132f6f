"""Prediction runs (PRED_DIR, docs/artefacts.md) for the interoperability tests.

``synthetic_run``: one 128 px image whose cells have known shapes (round, concave, with
a hole, cut by the image border, without a nucleus) and known probabilities: the truth.
``real_run``: the two real HPA samples shipped in data/, segmented by ``hpa segment``;
their cell probabilities are drawn by a seeded generator (the geometry is under test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from skimage.draw import disk, rectangle

from hpa.constants import CHANNELS, CLASS_NAMES_2018
from hpa.io import list_image_ids, read_label_image, write_label_image, write_png

CLASSES = CLASS_NAMES_2018
THRESHOLD = 0.5
SIZE = 128
#: cell id -> top class over threshold (None: no call)
TOP = {1: 0, 2: 7, 3: 25, 4: None, 5: 14}


def synthetic_cells() -> tuple[np.ndarray, np.ndarray]:
    """``(cells, nuclei)`` uint16 labels of :data:`SIZE` px with five known cells."""
    cells = np.zeros((SIZE, SIZE), np.uint16)
    cells[disk((30, 30), 20, shape=cells.shape)] = 1  # round
    rr, cc = rectangle((10, 70), extent=(40, 15), shape=cells.shape)
    cells[rr, cc] = 2
    rr, cc = rectangle((35, 70), extent=(15, 45), shape=cells.shape)
    cells[rr, cc] = 2  # an L: concave
    cells[disk((90, 40), 25, shape=cells.shape)] = 3
    cells[disk((90, 40), 5, shape=cells.shape)] = 0  # a hole (a vacuole)
    rr, cc = rectangle((100, 100), end=(SIZE - 1, SIZE - 1), shape=cells.shape)
    cells[rr, cc] = 4  # cut by the bottom-right border
    cells[disk((75, 100), 10, shape=cells.shape)] = 5
    nuclei = np.zeros_like(cells)
    for cid, (r, c) in {1: (30, 30), 2: (20, 77), 3: (90, 40), 5: (75, 100)}.items():
        nuc = disk((r, c), 4, shape=cells.shape)
        nuclei[nuc] = np.where(cells[nuc] == cid, cid, 0)
    nuclei[disk((90, 40), 9, shape=cells.shape)] = 0
    nuclei[disk((90, 25), 4, shape=cells.shape)] = 3  # cell 3's nucleus beside its hole
    return cells, nuclei  # cell 4 has no nucleus


def cell_probabilities(
    cells: np.ndarray, seed: int, top: dict[int, int | None] | None = None
) -> pd.DataFrame:
    """Rows of ``cell_predictions`` for every cell: low random scores, the top class at 0.6-0.95."""
    rng = np.random.default_rng(seed)
    rows = []
    for cid in (int(i) for i in np.unique(cells) if i):
        probs = rng.uniform(0.0, 0.4, len(CLASSES))
        k = top.get(cid) if top is not None else int(rng.integers(len(CLASSES)))
        if k is not None:
            probs[k] = rng.uniform(0.6, 0.95)
        ys, xs = np.nonzero(cells == cid)
        row: dict[str, object] = {
            "image_id": "",
            "cell_id": cid,
            "bbox_y0": int(ys.min()),
            "bbox_x0": int(xs.min()),
            "bbox_y1": int(ys.max()) + 1,
            "bbox_x1": int(xs.max()) + 1,
        }
        row.update(zip(CLASSES, probs.tolist()))
        row["predicted"] = " ".join(str(j) for j in np.flatnonzero(probs >= THRESHOLD))
        rows.append(row)
    return pd.DataFrame(rows)


def write_run(pred: Path, images: Path, seg: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """The files of ``hpa predict`` around existing images and SEG_DIR, from cell tables."""
    pred.mkdir(parents=True, exist_ok=True)
    frames = []
    subs = []
    for image_id, table in tables.items():
        table = table.assign(image_id=image_id)
        frames.append(table)
        pooled = table[list(CLASSES)].to_numpy().max(axis=0)
        subs.append({"Id": image_id, "Predicted": " ".join(map(str, np.flatnonzero(pooled >= THRESHOLD)))})
    pd.concat(frames, ignore_index=True).to_parquet(pred / "cell_predictions.parquet")
    pd.DataFrame(subs).to_csv(pred / "submission.csv", index=False)
    spec = {"class_names": list(CLASSES), "thresholds": [THRESHOLD] * len(CLASSES), "method": "fixed"}
    (pred / "thresholds.json").write_text(json.dumps(spec))
    config = {"images": str(images.resolve()), "masks": str(seg.resolve())}
    (pred / "config.yaml").write_text(yaml.safe_dump(config))
    return pred


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PRED_DIR of one synthetic image ``syn`` (see :func:`synthetic_cells`)."""
    root = tmp_path_factory.mktemp("syn-run")
    cells, nuclei = synthetic_cells()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 40, (SIZE, SIZE, 4)).astype(np.uint16) * 1000
    for c, name in enumerate(CHANNELS):
        write_png(root / "images" / f"syn_{name}.png", image[..., c])
    write_label_image(root / "seg" / "cells" / "syn.png", cells)
    write_label_image(root / "seg" / "nuclei" / "syn.png", nuclei)
    (root / "seg" / "config.yaml").write_text("backend: watershed\n")  # hpa segment's settings
    table = cell_probabilities(cells, 0, TOP)
    return write_run(root / "pred", root / "images", root / "seg", {"syn": table})


@pytest.fixture(scope="session")
def real_run(repo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PRED_DIR of the two real samples shipped in data/, segmented by hpa segment."""
    from hpa.pipelines.segment import segment_folder

    root = tmp_path_factory.mktemp("real-run")
    images = repo_data / "hpa-samples" / "images"
    segment_folder(images, root / "seg", workers=1, progress=False)
    tables = {}
    for n, image_id in enumerate(list_image_ids(images)):
        cells = read_label_image(root / "seg" / "cells" / f"{image_id}.png")
        tables[image_id] = cell_probabilities(cells, n)
    return write_run(root / "pred", images, root / "seg", tables)


def export_cli(run: Path, to: str, out: Path) -> None:
    """``hpa export RUN --to TO --out OUT`` in a subprocess, as a user types it; asserts it succeeds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "hpa", "export", str(run), "--to", to, "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
