"""A tiny drawn dataset: images, masks and labels in a temporary folder, and a tiny model trained on it (fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpa.constants import CHANNELS, CLASS_NAMES_2018
from hpa.io import Labels, read_labels, write_label_image, write_labels, write_png

SIZE = 96
# three classes drawn in green: a filled nucleus, a cytoplasm fill, a cell rim
PATTERNS = {0: "nucleus", 25: "cytosol", 21: "rim"}


def draw_image(rng: np.random.Generator, classes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 96 px image with four round cells; each expresses all of ``classes``."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cells = np.zeros((SIZE, SIZE), np.int32)
    nuclei = np.zeros((SIZE, SIZE), np.int32)
    img = rng.integers(0, 12, (SIZE, SIZE, 4)).astype(np.float32)
    for k, (cy, cx) in enumerate([(24, 24), (24, 72), (72, 24), (72, 72)], start=1):
        d = np.hypot(yy - cy - rng.integers(-2, 3), xx - cx - rng.integers(-2, 3))
        cell, nuc = d < 20, d < 9
        cells[cell], nuclei[nuc] = k, k
        img[cell, 0] += 60  # red
        img[cell, 3] += 50  # yellow
        img[nuc, 2] += 150  # blue
        for c in classes:
            if PATTERNS[c] == "nucleus":
                img[nuc, 1] += 150
            elif PATTERNS[c] == "cytosol":
                img[cell & ~nuc, 1] += 90
            else:
                img[cell & (d > 16), 1] += 160
    return np.clip(img, 0, 255).astype(np.uint8), cells, nuclei


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """18 images of three single-class and mixed patterns, with masks and train.csv."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    combos = [[0], [25], [21], [0, 25], [0], [25], [21], [0, 21], [25, 21]] * 2
    ids, y = [], np.zeros((len(combos), len(CLASS_NAMES_2018)), np.uint8)
    for n, classes in enumerate(combos):
        image_id = f"img{n:03d}"
        img, cells, nuclei = draw_image(rng, classes)
        for c, name in enumerate(CHANNELS):
            write_png(root / "images" / f"{image_id}_{name}.png", img[..., c])
        write_label_image(root / "seg" / "cells" / f"{image_id}.png", cells)
        write_label_image(root / "seg" / "nuclei" / f"{image_id}.png", nuclei)
        ids.append(image_id)
        y[n, classes] = 1
    write_labels(root / "train.csv", Labels(tuple(ids), y, "2018"))
    return {"root": root, "images": root / "images", "masks": root / "seg", "labels": root / "train.csv"}


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder trained once per session on :func:`tiny_dataset` (its crop cache in
    ``cache/`` inside), for every module that needs a trained tiny model: copy it before
    changing anything in it."""
    from hpa.classification.train import TrainConfig
    from hpa.pipelines.train import train_model

    out = tmp_path_factory.mktemp("tiny-model")
    cfg = TrainConfig(backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1)
    labels = read_labels(tiny_dataset["labels"])
    train_model(tiny_dataset["images"], labels, tiny_dataset["masks"], out, cfg, cache_root=out / "cache",
                progress=False)  # fmt: skip
    return out
