"""train-cells with several --images/--labels/--masks sources; HPAv18 tinted JPEGs read as grey planes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa.constants import CHANNELS
from hpa.errors import HPAConfigError
from hpa.io import Labels, read_labels, read_sample, write_labels
from hpa.pipelines.train import combine_sources


def _split_source(tiny_dataset, root, ids):
    """A second source: the files, masks and labels of ``ids`` in their own folders."""
    labels = read_labels(tiny_dataset["labels"]).subset(ids)
    for i in ids:
        for c in CHANNELS:
            (root / "images").mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_dataset["images"] / f"{i}_{c}.png", root / "images")
        for kind in ("cells", "nuclei"):
            (root / "seg" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_dataset["masks"] / kind / f"{i}.png", root / "seg" / kind)
    write_labels(root / "train.csv", labels)
    return root / "images", root / "train.csv", root / "seg"


def test_two_sources_train_one_model(tiny_dataset, tmp_path):
    all_ids = list(read_labels(tiny_dataset["labels"]).ids)
    a = _split_source(tiny_dataset, tmp_path / "a", all_ids[:12])
    b = _split_source(tiny_dataset, tmp_path / "b", all_ids[12:])
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "hpa", "train-cells",
           "--images", str(a[0]), "--labels", str(a[1]), "--masks", str(a[2]),
           "--images", str(b[0]), "--labels", str(b[1]), "--masks", str(b[2]),
           "--out", str(out), "--cache", str(tmp_path / "cache"), "--backbone", "test_resnet",
           "--crop-size", "32", "--folds", "3", "--fold", "0", "--epochs", "1", "--max-steps", "2",
           "--batch-size", "16", "--device", "cpu", "--workers", "1", "--precision", "fp32"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "18 images from 2 sources" in res.stderr
    split = pd.read_csv(out / "split.csv")
    assert sorted(split["image_id"]) == sorted(all_ids)  # both sources, every image once
    bad = subprocess.run(
        cmd[:14] + cmd[16:], capture_output=True, text=True, timeout=300
    )  # b without --masks
    assert bad.returncode == 1 and "give one of each per source" in bad.stderr


def test_combine_sources_refuses_a_shared_id_and_mixed_label_sets(tiny_dataset):
    labels = read_labels(tiny_dataset["labels"])
    with pytest.raises(HPAConfigError, match="labelled in two sources"):
        combine_sources(["a", "b"], [labels, labels.subset(labels.ids[:2])], ["sa", "sb"])
    other = Labels(("x",), np.zeros((1, 19), np.uint8), "2021")
    with pytest.raises(HPAConfigError, match="different label sets"):
        combine_sources(["a", "b"], [labels, other], ["sa", "sb"])


@pytest.mark.realdata
def test_real_hpav18_tinted_jpegs_give_the_right_plane(shared_data):
    folder = shared_data / "hpa-real" / "hpav18" / "images"
    image_id = "10580_1610_C1_1"
    img = read_sample(folder, image_id)
    planes = {
        c: cv2.imread(str(folder / f"{image_id}_{c}.jpg"), cv2.IMREAD_COLOR).astype(np.float32)
        for c in CHANNELS
    }
    # OpenCV decodes BGR: red sits in plane 2, green in 1, blue in 0, yellow in red and green alike
    expected = {
        "red": planes["red"][..., 2],
        "green": planes["green"][..., 1],
        "blue": planes["blue"][..., 0],
        "yellow": planes["yellow"][..., 1:].mean(-1),
    }
    assert img.shape == (*expected["red"].shape, 4) and img.dtype == np.uint8
    for k, c in enumerate(CHANNELS):
        assert np.abs(img[..., k] - expected[c]).mean() < 1.0, c
        assert img[..., k].mean() > 1.0, c  # a signal, not a blank plane
