"""Issue 12, data loss (items 1-4) and outputs as a set (items 10, 11): never lose a user's file.

Each test reproduces one defect of the hostile-user campaign; each failed before the fix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from reliability_helpers import (
    dead_pid,
    digests,
    hpa_cmd,
    hpa_env,
    temporaries,
    wait_until,
)

from hpa.artefacts import SegDir
from hpa.cli import main as hpa_main
from hpa.errors import HPAConfigError
from hpa.outputs import check_apart, claim_entries
from hpa.pipelines.predict import predict_folder
from hpa.pipelines.segment import segment_folder
from hpa.segmentation import SegmentConfig


def _user_folder(path: Path) -> dict[str, str]:
    """A folder of a user's files (one hidden, one in a subfolder); returns its digests."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / ".hidden").write_text("keep me\n")
    (path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return digests(path)


def _refused(argv: list[str], caplog: pytest.LogCaptureFixture, *words: str) -> None:
    """``hpa ARGV`` exits 1 with one error line that holds every word."""
    caplog.clear()
    assert hpa_main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for word in words:
        assert word in errors[0], errors[0]


# ---------------------------------------------------------------- 1. hpa report --out ---


def test_report_never_replaces_a_folder_it_did_not_write(
    run: Path, tiny_dataset: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    user = tmp_path / "user"
    before = _user_folder(user)
    _refused(["report", str(run), "--out", str(user)], caplog, str(user), "did not write")
    assert digests(user) == before
    a_file = tmp_path / "results.txt"
    a_file.write_text("precious\n")
    _refused(["report", str(run), "--out", str(a_file)], caplog, "not a folder")
    assert a_file.read_text() == "precious\n"
    monkeypatch.chdir(user)  # --out . in a folder of the user's
    _refused(["report", str(run), "--out", "."], caplog, "current directory")
    assert digests(user) == before
    pred_before = digests(run)
    _refused(["report", str(run), "--out", str(run)], caplog, "PRED_DIR")
    images_before = digests(tiny_dataset["images"])
    _refused(["report", str(run), "--out", str(tiny_dataset["images"])], caplog, "--images")
    assert digests(run) == pred_before and digests(tiny_dataset["images"]) == images_before


def test_report_replaces_its_own_report_only(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "report"
    assert hpa_main(["report", str(run), "--out", str(out)]) == 0
    assert (out / "index.html").is_file() and (out / ".hpa-report").is_file()
    assert hpa_main(["report", str(run), "--out", str(out)]) == 0  # its own report: replaced
    (out / "my-notes.txt").write_text("added by hand\n")
    _refused(["report", str(run), "--out", str(out)], caplog, "my-notes.txt")
    assert (out / "my-notes.txt").read_text() == "added by hand\n"
    assert not temporaries(tmp_path)


# ---------------------------------------------------------- 2. segment temporaries ---


def test_segment_removes_only_its_own_dead_temporaries(tiny_dataset: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "seg"
    claim_entries(out, SegDir.ENTRIES, "hpa segment")  # the SEG_DIR of a killed run
    (out / "cells").mkdir(parents=True)
    users = [out / ".notes.tmpl", out / "cells" / ".draft.tmp.png", out / ".hpa-tmp-notes"]
    for path in users:
        path.write_text("the user's\n")
    stale = out / "cells" / f".hpa-tmp-{dead_pid()}-0a1b2c3d-s00.png"  # a killed run's
    stale.write_bytes(b"half")
    live = out / f".hpa-tmp-{os.getpid()}-0a1b2c3d-cells.parquet"  # a live process's
    live.write_bytes(b"in progress")
    segment_folder(tiny_dataset["images"], out, ids=["img000"], workers=1, progress=False)
    assert all(p.read_text() == "the user's\n" for p in users)
    assert not stale.exists() and live.exists()


# ------------------------------------------------------- 3. predict --scheduler parts ---


def test_predict_on_a_cluster_keeps_a_parts_folder_it_did_not_make(
    run: Path, tiny_dataset: dict[str, Path], model: Path, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "pred"
    shutil.copytree(run, out)
    (out / "parts").mkdir()
    (out / "parts" / "keep.txt").write_text("mine\n")
    before = digests(out)
    with pytest.raises(HPAConfigError, match="parts"):
        predict_folder(
            tiny_dataset["images"],
            model,
            out,
            masks=tiny_dataset["masks"],
            scheduler="local:1",
            progress=False,
        )
    assert digests(out) == before


# ------------------------------------------------------- 4. outputs apart from inputs ---


def test_check_apart_is_contains_inside_and_symlinks(tmp_path: Path) -> None:
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(images)
    for out, how in [
        (images, "is"),
        (tmp_path / "data", "contains"),
        (images / "o", "sits inside"),
        (link, "is"),
    ]:
        with pytest.raises(HPAConfigError, match=f"--out {out} {how} the input IMAGES {images}"):
            check_apart(out, {"IMAGES": images})
    check_apart(tmp_path / "out", {"IMAGES": images, "--masks": None})
    check_apart(images / "report", {"PRED": images}, may_sit_inside=("PRED",))
    with pytest.raises(HPAConfigError, match="contains"):
        check_apart(tmp_path, {"PRED": images}, may_sit_inside=("PRED",))


def test_no_command_writes_into_its_inputs(
    run: Path, tiny_dataset: dict[str, Path], model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, seg = tiny_dataset["images"], tmp_path / "seg"
    shutil.copytree(tiny_dataset["masks"], seg)
    (seg / "config.yaml").write_text("backend: watershed\n")
    guarded = {p: digests(p) for p in (images, seg, model)}
    base = ["predict", str(images), "--model", str(model), "--workers", "1"]
    _refused([*base, "--masks", str(seg), "--out", str(seg)], caplog, "--masks", str(seg))
    _refused([*base, "--masks", str(seg), "--out", str(model)], caplog, "--model", str(model))
    _refused([*base, "--out", str(images / "pred")], caplog, "IMAGES", "sits inside")
    _refused(["segment", str(images), "--out", str(images / "seg")], caplog, "IMAGES")
    _refused(
        ["train-cells", "--images", str(images), "--labels", str(tiny_dataset["labels"]), "--masks", str(seg),
         "--out", str(seg)],
        caplog, "--masks",
    )  # fmt: skip
    _refused(["show", str(images), "--pred", str(run), "--out", str(images)], caplog, "IMAGES")
    assert {p: digests(p) for p in guarded} == guarded


# --------------------------------------------------- 10. segment settings per SEG_DIR ---


def test_segment_rerun_with_other_settings_is_refused(tiny_dataset: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "seg"
    ids = ["img000", "img001"]
    segment_folder(tiny_dataset["images"], out, ids=ids[:1], workers=1, progress=False)
    recorded = (out / "config.yaml").read_text()
    other = SegmentConfig(min_cell_area=0.8, nucleus_smooth=0.1)
    with pytest.raises(
        HPAConfigError, match=r"nucleus_smooth: 0\.04 -> 0\.1.*min_cell_area: 0\.5 -> 0\.8"
    ) as err:
        segment_folder(tiny_dataset["images"], out, ids=ids, config=other, workers=1, progress=False)
    assert str(out) in str(err.value)
    assert (out / "config.yaml").read_text() == recorded and not (out / "tables" / "img001.parquet").exists()
    summary = segment_folder(tiny_dataset["images"], out, ids=ids, workers=1, progress=False)  # same: resumes
    assert (summary.n_done, summary.n_skipped) == (1, 1)
    assert yaml.safe_load(recorded)["min_cell_area"] == 0.5


# ------------------------------------------------------------ 11. outputs as a set ---


def test_killed_predict_leaves_the_previous_complete_output(
    run: Path, tiny_dataset: dict[str, Path], model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    shutil.copytree(run, out)
    before = digests(out)
    stage = tmp_path / ".hpa-partial-pred"
    cmd = hpa_cmd(
        "predict", tiny_dataset["images"], "--model", model, "--masks", tiny_dataset["masks"], "--out", out,
        "--tta", "8", "--workers", "1",
    )  # fmt: skip
    proc = subprocess.Popen(cmd, env=hpa_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill once the new run has begun writing
        began = wait_until(
            lambda: (stage / "config.yaml").is_file() or digests(out) != before or proc.poll() is not None,
            120,
        )
        assert began and proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert digests(out) == before  # the previous run, whole: no new config.yaml beside old scores
    done = subprocess.run(cmd, env=hpa_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["tta"] == 8 and not stage.exists() and not temporaries(tmp_path)
    assert (out / "submission.csv").read_bytes() != b""


def test_staged_folder_has_one_writer_and_swaps_in_whole(tmp_path: Path) -> None:
    from hpa.outputs import StagedFolder

    out = tmp_path / "run"

    def stage() -> StagedFolder:
        return StagedFolder(out, ".hpa-test", ("result.txt",), "the test")

    with stage() as first:
        with pytest.raises(HPAConfigError, match="another the test is writing"), stage():
            pass
        (first.path / "result.txt").write_text("one\n")
        assert not out.exists()  # nothing in place before the commit
        first.commit()
    assert (out / "result.txt").read_text() == "one\n" and (out / ".hpa-test").is_file()
    with pytest.raises(RuntimeError), stage():
        raise RuntimeError("failed before any work")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no empty staging folder left
    with stage() as second:
        (second.path / "result.txt").write_text("two\n")
        second.commit()
    assert (out / "result.txt").read_text() == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
