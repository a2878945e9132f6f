"""``hpa segment`` end to end through a subprocess: SEG_DIR files, failures, resumption."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.constants import CHANNELS
from hpa.pipelines.segment import segment_folder
from hpa.segmentation import TABLE_COLUMNS, SegmentConfig

IDS = ("img-a", "img-b", "img-c")


def _write_sample(folder: Path, image_id: str, seed: int, size: int = 192) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    planes = np.full((4, size, size), 10.0)
    for cy, cx in rng.uniform(40, size - 40, (3, 2)):
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        planes[0] += 110 * (d2 <= 24**2)
        planes[3] += 90 * (d2 <= 24**2)
        planes[2] += 190 * (d2 <= 10**2)
        planes[1] += 60 * (d2 <= 18**2)
    planes += rng.normal(0, 5, planes.shape)
    for plane, color in zip(np.clip(planes, 0, 255).astype(np.uint8), CHANNELS):
        cv2.imwrite(str(folder / f"{image_id}_{color}.png"), plane)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for k, image_id in enumerate(IDS):
        _write_sample(folder, image_id, k)
    _write_sample(folder, "broken", 9)
    data = (folder / "broken_blue.png").read_bytes()
    (folder / "broken_blue.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    return folder


def _hpa(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hpa", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _files(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes; not run.log, the log of the runs (times, and the killed run's lines)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "run.log")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def test_cli_writes_seg_dir_and_records_failures(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    result = _hpa("segment", str(images), "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr
    for image_id in IDS:
        cells = cv2.imread(str(out / "cells" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        nuclei = cv2.imread(str(out / "nuclei" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert cells.dtype == nuclei.dtype == np.uint16 and cells.shape == (192, 192)
        assert cells.max() == 3 and np.all(cells[nuclei > 0] == nuclei[nuclei > 0])
        assert (out / "tables" / f"{image_id}.parquet").is_file()
    table = pd.read_parquet(out / "cells.parquet")
    assert tuple(table.columns) == TABLE_COLUMNS
    assert sorted(set(table["image_id"])) == list(IDS) and len(table) == 9
    failures = pd.read_csv(out / "failures.csv")
    assert failures["image_id"].tolist() == ["broken"]
    assert "truncated" in failures["error"].iloc[0]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["backend"] == "watershed" and "min_cell_area" in config
    assert "1 failed" in result.stderr and "failures.csv" in result.stderr
    assert not list(out.rglob(".hpa-tmp-*"))


def test_ids_and_all_failed_exit_code(images: Path, tmp_path: Path) -> None:
    ids_csv = tmp_path / "ids.csv"
    ids_csv.write_text("Id,Predicted\nbroken,\n")
    result = _hpa(
        "segment", str(images), "--out", str(tmp_path / "seg"), "--ids", str(ids_csv), "--workers", "1"
    )
    assert result.returncode == 1
    assert len(pd.read_parquet(tmp_path / "seg" / "cells.parquet")) == 0


def test_rerun_skips_and_resumes_to_identical_files(images: Path, tmp_path: Path) -> None:
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    ids = list(IDS)
    first = segment_folder(images, clean, ids=ids, workers=1, progress=False)
    assert (first.n_done, first.n_skipped, first.n_failed) == (3, 0, 0)
    reference = _files(clean)
    again = segment_folder(images, clean, ids=ids, workers=1, progress=False)
    assert (again.n_done, again.n_skipped) == (0, 3)
    assert _files(clean) == reference  # a rerun rewrites identical files
    # a run killed mid-way: one image never finished (masks only), a stray temporary
    segment_folder(images, killed, ids=ids, workers=1, progress=False)
    (killed / "tables" / "img-b.parquet").unlink()
    (killed / "cells" / "img-b.png").write_bytes(b"half-written")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (killed / "cells" / f".hpa-tmp-{int(dead.stdout)}-0a1b2c3d-img-c.png").write_bytes(b"junk")
    (killed / "cells.parquet").unlink()
    resumed = segment_folder(images, killed, ids=ids, workers=2, progress=False)
    assert (resumed.n_done, resumed.n_skipped) == (1, 2)
    assert _files(killed) == reference


def test_killed_subprocess_then_rerun(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    for k in range(6):  # more work, so the kill lands mid-run
        _write_sample(images, f"more-{k}", 20 + k, size=384)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "hpa", "segment", str(images), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):
            if list((out / "tables").glob("*.parquet")) or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert _hpa("segment", str(images), "--out", str(out), "--workers", "2").returncode == 0
    clean = tmp_path / "clean"
    assert _hpa("segment", str(images), "--out", str(clean), "--workers", "1").returncode == 0
    assert _files(out) == _files(clean)
    # the resumed run appended its log to the killed run's
    assert (out / "run.log").read_text().count("segmentation settings:") == 2


def test_config_yaml_round_trip(images: Path, tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("min_cell_area: 0.8\nmax_cell_radius: 1.5\n")
    out = tmp_path / "seg"
    assert _hpa("segment", str(images), "--out", str(out), "--config", str(settings), "--ids",
                str(_id_list(tmp_path))).returncode == 0  # fmt: skip
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["min_cell_area"] == 0.8 and saved["max_cell_radius"] == 1.5
    assert SegmentConfig(**saved).max_cell_radius == 1.5


def _id_list(tmp_path: Path) -> Path:
    path = tmp_path / "one.csv"
    path.write_text("Id\nimg-a\n")
    return path


def test_temporary_of_a_worker_that_ends_during_the_rerun_is_swept(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    segment_folder(images, out, ids=list(IDS), workers=1, progress=False)
    reference = _files(out)
    # a killed run's worker still alive when the rerun starts, gone before it ends
    worker = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    stray = out / "cells" / f".hpa-tmp-{worker.pid}-0a1b2c3d-img-c.png"
    stray.write_bytes(b"junk")
    import hpa.pipelines.segment as segment_module

    merge = segment_module.SegDir.merge_tables

    def merge_then_end_the_worker(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert stray.exists()  # a live process's temporary is kept at the start
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait()
        return merge(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(segment_module.SegDir, "merge_tables", merge_then_end_the_worker)
        segment_folder(images, out, ids=list(IDS), workers=1, progress=False)
    assert not stray.exists()
    assert _files(out) == reference
