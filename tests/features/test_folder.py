"""Features of a folder of images: the per-image cache, failures, ``hpa features`` and a real sample."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.artefacts.segdir import SegDir
from hpa.cli import main
from hpa.constants import CHANNELS
from hpa.features import feature_names, folder_features
from hpa.features.cells import IMAGE_STATS, cell_features
from hpa.features.settings import FeatureSettings
from hpa.io import read_sample, write_label_image, write_png

from .helpers import round_cell

log = logging.getLogger(__name__)


def _write_sample(images: Path, seg: Path, image_id: str, seed: int) -> None:
    image, cells, nuclei = round_cell(seed)
    image[..., 1] = np.where(nuclei > 0, 3000, 100)
    for i, colour in enumerate(CHANNELS):
        write_png(images / f"{image_id}_{colour}.png", image[..., i])
    SegDir(seg).create()
    write_label_image(SegDir(seg).cell_mask(image_id), cells)
    write_label_image(SegDir(seg).nucleus_mask(image_id), nuclei)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Path]:
    images, seg = tmp_path / "images", tmp_path / "seg"
    images.mkdir()
    for seed, image_id in enumerate(("a", "b")):
        _write_sample(images, seg, image_id, seed)
    return images, seg


def _cached(cache: Path, image_id: str) -> list[Path]:
    return sorted((cache / FeatureSettings().key()).glob(f"{image_id}+*.parquet"))


def test_folder_features_are_cached_per_image_and_recomputed_when_a_mask_changes(
    folder: tuple[Path, Path], tmp_path: Path
) -> None:
    images, seg = folder
    cache = tmp_path / "cache"
    cells, failures = folder_features(images, seg, cache=cache)
    assert failures == {} and cells.image_id.tolist() == ["a", "b"]
    assert cells.frac_nucleus.gt(0.5).all()
    [path] = _cached(cache, "a")
    marked = pd.read_parquet(path).assign(frac_nucleus=-1.0)
    marked.to_parquet(path, index=False)  # a later call must read this very file
    again, _ = folder_features(images, seg, ids=["a"], cache=cache)
    assert again.frac_nucleus.tolist() == [-1.0]
    mask = SegDir(seg).nucleus_mask("a")
    os.utime(mask, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mask: recomputed
    fresh, _ = folder_features(images, seg, ids=["a"], cache=cache)
    assert fresh.frac_nucleus.gt(0.5).all()
    assert _cached(cache, "a") != [path] and len(_cached(cache, "a")) == 1
    assert [p.name for p in (cache / FeatureSettings().key()).iterdir() if p.name.startswith(".")] == []


def test_folder_features_lists_an_image_without_masks_as_a_failure(
    folder: tuple[Path, Path], tmp_path: Path
) -> None:
    images, seg = folder
    SegDir(seg).nucleus_mask("b").unlink()
    cells, failures = folder_features(images, seg, cache=tmp_path / "cache")
    assert cells.image_id.unique().tolist() == ["a"]
    assert list(failures) == ["b"] and "hpa segment" in failures["b"]


def test_folder_features_default_cache_is_in_the_seg_dir(folder: tuple[Path, Path], monkeypatch) -> None:
    images, seg = folder
    monkeypatch.delenv("HPA_FEATURE_CACHE_DIR", raising=False)
    folder_features(images, seg, ids=["a"])
    assert len(_cached(seg / "feature-cache", "a")) == 1


def test_hpa_features_writes_the_cell_and_image_tables(folder: tuple[Path, Path], tmp_path: Path) -> None:
    images, seg = folder
    out = tmp_path / "out"
    assert main(["features", str(images), "--masks", str(seg), "--out", str(out), "--workers", "2"]) == 0
    cells = pd.read_parquet(out / "cell_features.parquet")
    image = pd.read_parquet(out / "image_features.parquet")
    assert list(cells.columns) == ["image_id", "cell_id", *feature_names()]
    assert image.image_id.tolist() == ["a", "b"]
    assert image.shape[1] == 2 + len(IMAGE_STATS) * len(feature_names())


def test_hpa_features_refuses_a_folder_that_is_no_seg_dir(folder: tuple[Path, Path], tmp_path: Path) -> None:
    images, _ = folder
    assert main(["features", str(images), "--masks", str(tmp_path), "--out", str(tmp_path / "o")]) == 1


def test_a_real_sample_segmented_by_hpa(repo_data: Path) -> None:
    from hpa.segmentation import segment

    folder = repo_data / "hpa-samples" / "images"
    image = read_sample(folder, "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0")
    cells, nuclei = segment(image)
    start = time.perf_counter()
    table = cell_features(image, cells, nuclei, image_id="real")
    seconds = time.perf_counter() - start
    log.info("%d cells of a %s image in %.2f s", len(table), image.shape, seconds)
    n_cells = len(np.unique(cells)) - 1
    assert table.shape == (n_cells, 2 + len(feature_names())) and n_cells >= 5
    values = table[feature_names()].to_numpy()
    assert not np.isinf(values).any()
    assert np.isfinite(table.frac_nucleus).all() and np.isfinite(table.pearson_er).all()
    # a nuclear protein (this image's labels: nucleoplasm, nucleoli, nuclear membrane)
    assert table.frac_nucleus.median() > 0.5


def test_hpa_features_refuses_masks_of_other_images_and_a_users_file(
    folder: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer checks its producer: masks recorded as made from another images folder are
    refused; and the output folder's files that hpa did not write are never replaced."""
    from hpa.artefacts.provenance import write_record

    images, seg = folder
    other = tmp_path / "other-images"
    other.mkdir()
    _write_sample(other, tmp_path / "other-seg", "z", 7)
    write_record(seg, SegDir.record(other, {}, None, "hpa segment"))
    out = tmp_path / "out"
    assert main(["features", str(images), "--masks", str(seg), "--out", str(out)]) == 1
    assert "other-images" in caplog.text and not out.exists()

    write_record(seg, SegDir.record(images, {}, None, "hpa segment"))
    out.mkdir()
    (out / "cell_features.parquet").write_text("a user's file\n")
    assert main(["features", str(images), "--masks", str(seg), "--out", str(out)]) == 1
    assert (out / "cell_features.parquet").read_text() == "a user's file\n"
