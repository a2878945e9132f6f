"""Tests of the synthetic HPA-like data generator (``hpa synth``)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpa.constants import CHANNELS, CLASS_NAMES_2018
from hpa.io import read_grey, read_label_image, read_labels, read_sample
from hpa.synthetic import generate_sample, write_dataset
from hpa.synthetic.layout import make_layout
from hpa.synthetic.sample import eligible_cells

SIZE = 256


def _check_geometry(sample) -> None:
    cells, nuclei = sample.cells, sample.nuclei
    assert cells.dtype == np.int32 and nuclei.dtype == np.int32
    cell_ids = set(np.unique(cells[cells > 0]).tolist())
    nucleus_ids = set(np.unique(nuclei[nuclei > 0]).tolist())
    assert cell_ids == nucleus_ids, "every cell has a nucleus and every nucleus a cell"
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0]), "a nucleus lies inside its own cell"
    assert set(sample.cell_labels) == cell_ids, "cell_labels lists exactly the cells of the mask"
    union = sorted({c for v in sample.cell_labels.values() for c in v})
    assert list(sample.labels) == union


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_geometry_and_labels(seed: int) -> None:
    s = generate_sample(np.random.default_rng(seed), size=SIZE)
    assert s.image.shape == (SIZE, SIZE, 4) and s.image.dtype == np.uint8
    assert 1 <= len(s.labels) <= 4
    _check_geometry(s)


def test_every_class_is_drawable_in_green() -> None:
    for cls in range(len(CLASS_NAMES_2018)):
        s = generate_sample(np.random.default_rng(100 + cls), size=SIZE, classes=[cls])
        assert s.labels == (cls,), CLASS_NAMES_2018[cls]
        _check_geometry(s)
        carrying = [i for i, v in s.cell_labels.items() if cls in v]
        green = s.image[..., 1].astype(float)
        inside = np.isin(s.cells, carrying)
        assert green[inside].max() > 4 * max(1.0, np.median(green[s.cells == 0])), CLASS_NAMES_2018[cls]


def test_cell_cycle_classes_sit_in_dividing_or_mitotic_cells() -> None:
    layout = make_layout(np.random.default_rng(3), SIZE, mitosis=True, division=True)
    assert len(eligible_cells(layout, 16)) == 2
    assert len(eligible_cells(layout, 17)) == 1


def test_reference_channels_do_not_depend_on_green() -> None:
    a = generate_sample(np.random.default_rng(7), size=SIZE, classes=[0])
    b = generate_sample(np.random.default_rng(7), size=SIZE, classes=[25, 7, 23, 11])
    np.testing.assert_array_equal(a.cells, b.cells)
    for c in (0, 2, 3):  # red, blue, yellow
        np.testing.assert_array_equal(a.image[..., c], b.image[..., c])
    assert not np.array_equal(a.image[..., 1], b.image[..., 1])


def test_same_seed_same_sample_other_seed_other() -> None:
    a = generate_sample(np.random.default_rng(5), size=SIZE)
    b = generate_sample(np.random.default_rng(5), size=SIZE)
    c = generate_sample(np.random.default_rng(6), size=SIZE)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.cell_labels == b.cell_labels
    assert not np.array_equal(a.image, c.image)


def test_sixteen_bit_uses_about_twelve_bits() -> None:
    s = generate_sample(np.random.default_rng(0), size=SIZE, bit_depth=16)
    assert s.image.dtype == np.uint16
    top = int(s.image.max())
    assert 1500 < top <= 65535 and np.percentile(s.image, 99) < 4096
    assert np.median(s.image) > 50  # camera offset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "one"
    write_dataset(out, n_train=4, n_test=2, seed=11, size=SIZE, workers=1)
    return out


def test_dataset_labels_match_cell_truth(dataset: Path) -> None:
    train = read_labels(dataset / "train.csv")
    test = read_labels(dataset / "test_labels.csv")
    assert train.ids == tuple(f"synth-train-{i:05d}" for i in range(4))
    per_image: dict[str, set[int]] = {}
    cells_listed: dict[str, set[int]] = {}
    with (dataset / "truth" / "cell_labels.csv").open() as fh:
        for row in csv.DictReader(fh):
            per_image.setdefault(row["image_id"], set()).update(int(c) for c in row["Target"].split())
            cells_listed.setdefault(row["image_id"], set()).add(int(row["cell_id"]))
    for labels, split in ((train, "train"), (test, "test")):
        for iid, y in zip(labels.ids, labels.y, strict=True):
            assert set(np.flatnonzero(y).tolist()) == per_image[iid]
            cells = read_label_image(dataset / "truth" / "cells" / f"{iid}.png")
            nuclei = read_label_image(dataset / "truth" / "nuclei" / f"{iid}.png")
            assert set(np.unique(cells[cells > 0]).tolist()) == cells_listed[iid]
            assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])
            assert read_sample(dataset / split, iid).shape == (SIZE, SIZE, 4)
    with (dataset / "sample_submission.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["Id"] for r in rows) == list(test.ids) and {r["Predicted"] for r in rows} == {"0"}


def test_dataset_deterministic_across_workers_and_seeds(dataset: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "two", n_train=4, n_test=2, seed=11, size=SIZE, workers=2)
    assert _files(dataset) == _files(tmp_path / "two")
    write_dataset(tmp_path / "other", n_train=1, n_test=0, seed=12, size=SIZE)
    name = "train/synth-train-00000_green.png"
    assert (tmp_path / "other" / name).read_bytes() != (dataset / name).read_bytes()


def test_cli_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "hpa", "synth", str(out), "--n-train", "3", "--n-test", "2", "--seed", "1",
           "--size", "256"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            iid = f"synth-{split}-{i:05d}"
            for colour in CHANNELS:
                assert read_grey(out / split / f"{iid}_{colour}.png").shape == (256, 256)
            assert (out / "truth" / "cells" / f"{iid}.png").is_file()
            assert (out / "truth" / "nuclei" / f"{iid}.png").is_file()
    for name in ("train.csv", "test_labels.csv", "sample_submission.csv", "truth/cell_labels.csv"):
        assert (out / name).is_file(), name
