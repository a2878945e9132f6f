"""Provenance: a folder is reused only for the inputs and settings it was made from (issue 23).

Each test reproduces one "silent wrong answer" of the issue (and the on-the-fly masks
path): on the code before provenance records it passed silently or recorded the wrong
path; now the reuse is refused with one line naming the folder, what differs and the
way out, and ``--overwrite`` rebuilds. Tiny data: 96 px drawn images, ``test_resnet``
models, two training steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from reliability_helpers import digests, write_images, write_untrained_model

import hpa.classification.train as train_mod
from hpa.artefacts.provenance import (
    RECORD_FILE,
    Fingerprint,
    Provenance,
    check_reuse,
    differences,
    images_fingerprint,
    labels_digest,
    mismatch_message,
    read_record,
)
from hpa.classification.ensemble import MAIN, read_ensemble
from hpa.classification.train import TrainConfig
from hpa.errors import HPAConfigError
from hpa.interop.napari import read_run
from hpa.io import Labels, read_labels, write_labels
from hpa.pipelines.blend import train_blend
from hpa.pipelines.export import export_run
from hpa.pipelines.folds import train_folds
from hpa.pipelines.predict import predict_folder
from hpa.pipelines.segment import segment_folder
from hpa.pipelines.train import check_resume, train_model
from hpa.pipelines.train_command import train_cells
from hpa.pipelines.visualize import make_report, show_main

TINY = TrainConfig(
    backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=2, workers=1, warmup_epochs=0.2,
    max_steps=2, device="cpu", precision="fp32",
)  # fmt: skip


def _one_line(exc: pytest.ExceptionInfo[HPAConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``A/test`` and ``B/test``: the same three Ids, other images; A segmented; an untrained model."""
    root = tmp_path_factory.mktemp("prov")
    write_images(root / "A" / "test", 3, seed=0)
    write_images(root / "B" / "test", 3, seed=1)
    segment_folder(root / "A" / "test", root / "segA", workers=1, progress=False)
    segment_folder(root / "B" / "test", root / "segB", workers=1, progress=False)
    return {
        "root": root,
        "A": root / "A" / "test",
        "B": root / "B" / "test",
        "segA": root / "segA",
        "segB": root / "segB",
        "model": write_untrained_model(root / "model"),
    }


def _masks(folder: Path) -> dict[str, str]:
    return digests(folder / "cells")


# ------------------------------------------------------------ the record ---


def test_record_round_trip_differences_and_one_line_message(tmp_path: Path) -> None:
    a = Provenance(
        "segdir", "hpa segment", {"backend": "watershed"}, {"images": (Fingerprint("/a/test", "1"),)}
    )
    b = replace(a, inputs={"images": (Fingerprint("/b/test", "2"),)}, settings={"backend": "cellpose"})
    assert Provenance.from_json(a.to_json()) == a
    assert differences(a, a) == {}
    assert differences(a, b) == {"images": "/a/test vs /b/test", "settings.backend": "watershed vs cellpose"}
    assert (
        differences(a, replace(a, kind="preddir"))["kind"] == "a segmentation folder vs a prediction folder"
    )
    message = mismatch_message("S", differences(a, b))
    assert message.startswith("S: ") and "images differ: /a/test vs /b/test" in message
    assert message.endswith("use another --out, or --overwrite to rebuild it") and "\n" not in message
    (tmp_path / RECORD_FILE).write_text(a.to_json())
    assert check_reuse(tmp_path, a) and not check_reuse(tmp_path, b, overwrite=True)
    with pytest.raises(HPAConfigError, match="images differ") as exc:
        check_reuse(tmp_path, b)
    _one_line(exc)
    (tmp_path / RECORD_FILE).write_text('{"version": 99, "kind": "segdir", "command": "x"}')
    with pytest.raises(HPAConfigError, match=f"{RECORD_FILE}: provenance record of version 99"):
        read_record(tmp_path)


def test_images_fingerprint_follows_content_not_path_or_time(
    two_folders: dict[str, Path], tmp_path: Path
) -> None:
    a = images_fingerprint(two_folders["A"])
    copy = shutil.copytree(two_folders["A"], tmp_path / "copy")  # new mtimes, another path
    (copy / "notes.txt").write_text("not an image")
    assert images_fingerprint(copy).sha256 == a.sha256 and images_fingerprint(copy).path != a.path
    assert images_fingerprint(two_folders["B"]).sha256 != a.sha256  # same Ids and names, other sizes


# ------------------------------------------------------------ segment ---


def test_segment_refuses_a_seg_dir_of_other_images_and_overwrite_rebuilds(
    two_folders: dict[str, Path], tmp_path: Path
) -> None:
    seg = shutil.copytree(two_folders["segA"], tmp_path / "S")
    with pytest.raises(HPAConfigError, match=r"images differ: .*A/test vs .*B/test.*--overwrite") as exc:
        segment_folder(two_folders["B"], seg, workers=1, progress=False)
    assert str(seg) in _one_line(exc)
    assert yaml.safe_load((seg / "inputs.yaml").read_text())["images"] == str(two_folders["A"].resolve())
    summary = segment_folder(two_folders["B"], seg, workers=1, progress=False, overwrite=True)
    assert summary.n_done == 3 and summary.n_skipped == 0
    assert _masks(seg) == _masks(two_folders["segB"])
    assert read_record(seg) == read_record(two_folders["segB"])


def test_segment_resumes_a_moved_copy_and_a_folder_without_record(
    two_folders: dict[str, Path], tmp_path: Path
) -> None:
    moved = shutil.copytree(two_folders["A"], tmp_path / "moved")
    seg = shutil.copytree(two_folders["segA"], tmp_path / "S")
    assert segment_folder(moved, seg, workers=1, progress=False).n_skipped == 3
    old = shutil.copytree(two_folders["segA"], tmp_path / "old")
    (old / RECORD_FILE).unlink()  # a SEG_DIR written before records
    assert segment_folder(two_folders["A"], old, workers=1, progress=False).n_skipped == 3
    assert read_record(old) == read_record(two_folders["segA"])


def test_segment_resegments_an_image_replaced_in_place(two_folders: dict[str, Path], tmp_path: Path) -> None:
    """An image replaced under the same Id in the same folder is segmented again, not skipped
    with the masks of the image it replaced; the other images are kept."""
    images = shutil.copytree(two_folders["A"], tmp_path / "images")
    seg = tmp_path / "S"
    segment_folder(images, seg, workers=1, progress=False)
    kept = _masks(seg)
    for path in two_folders["B"].glob("s01_*.png"):  # s01 becomes B's image of that Id
        shutil.copy(path, images / path.name)
    summary = segment_folder(images, seg, workers=1, progress=False)
    assert summary.n_skipped == 2
    masks = _masks(seg)
    assert masks["s01.png"] == _masks(two_folders["segB"])["s01.png"] != kept["s01.png"]
    assert {k: v for k, v in masks.items() if k != "s01.png"} == {
        k: v for k, v in kept.items() if k != "s01.png"
    }


def test_predict_resegments_an_image_replaced_in_place(two_folders: dict[str, Path], tmp_path: Path) -> None:
    """Masks a prediction made on the fly are not reused for an image replaced in place."""
    images = shutil.copytree(two_folders["A"], tmp_path / "images")
    out = tmp_path / "R"
    predict_folder(images, two_folders["model"], out, workers=1, progress=False)
    for path in two_folders["B"].glob("s01_*.png"):
        shutil.copy(path, images / path.name)
    predict_folder(images, two_folders["model"], out, workers=1, progress=False)
    assert _masks(out / "masks")["s01.png"] == _masks(two_folders["segB"])["s01.png"]


# ------------------------------------------------------------ predict ---


def test_predict_records_final_masks_and_refuses_masks_of_other_images(
    two_folders: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "R"
    predict_folder(two_folders["A"], two_folders["model"], out, workers=1, progress=False)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["masks"] == str((out / "masks").resolve())  # not the staging folder .hpa-partial-R
    assert sorted(p.name for p in (Path(config["masks"]) / "cells").iterdir()) == [
        "s00.png",
        "s01.png",
        "s02.png",
    ]
    assert read_record(out).inputs["masks"][0].sha256 == read_record(out / "masks").digest()
    before = digests(out)
    with pytest.raises(HPAConfigError, match=r"images differ: .*A/test vs .*B/test.*--overwrite") as exc:
        predict_folder(two_folders["B"], two_folders["model"], out, workers=1, progress=False)
    assert str(out) in _one_line(exc)
    assert digests(out) == before  # the previous run is untouched
    predict_folder(two_folders["B"], two_folders["model"], out, workers=1, progress=False, overwrite=True)
    assert _masks(out / "masks") == _masks(two_folders["segB"])


def test_masks_of_other_images_are_refused_by_their_consumers(
    two_folders: dict[str, Path], tmp_path: Path
) -> None:
    model, seg_a = two_folders["model"], two_folders["segA"]
    with pytest.raises(HPAConfigError, match=r"--masks .*segA: masks of another images folder") as exc:
        predict_folder(two_folders["B"], model, tmp_path / "p", masks=seg_a, workers=1, progress=False)
    _one_line(exc)
    labels = Labels(("s00", "s01", "s02"), np.eye(3, 28, dtype=np.uint8), "2018")
    with pytest.raises(HPAConfigError, match="masks of another images folder"):
        train_model(
            two_folders["B"], labels, seg_a, tmp_path / "m", TINY, cache_root=tmp_path / "c", progress=False
        )
    assert not (tmp_path / "m").exists()
    moved = shutil.copytree(two_folders["A"], tmp_path / "moved")  # same files, another path: accepted
    predict_folder(moved, model, tmp_path / "pa", masks=seg_a, workers=1, progress=False)
    args = argparse.Namespace(
        images=str(two_folders["B"]), pred=str(tmp_path / "pa"), id=None, out=str(tmp_path / "ov"),
        channels="rgby", labels=None, scheme="2018", channel_map=None,
    )  # fmt: skip
    with pytest.raises(HPAConfigError, match="masks of another images folder"):
        show_main(args)
    assert show_main(replace_ns(args, images=str(moved)))[0] == 0


def test_report_export_and_napari_refuse_masks_remade_for_other_images(
    two_folders: dict[str, Path], tmp_path: Path
) -> None:
    """A SEG_DIR segmented again from other images after a prediction used it: the run's
    consumers refuse to draw or export those masks over the run's images."""
    seg = shutil.copytree(two_folders["segA"], tmp_path / "seg")
    run = tmp_path / "pred"
    predict_folder(two_folders["A"], two_folders["model"], run, masks=seg, workers=1, progress=False)
    export_run(run, "geojson", tmp_path / "ok")  # the masks still match: accepted
    make_report(run, out=tmp_path / "report-ok")
    with pytest.raises(HPAConfigError, match="masks of another images folder"):
        export_run(run, "geojson", tmp_path / "other", images_dir=two_folders["B"])
    shutil.rmtree(seg)
    shutil.copytree(two_folders["segB"], seg)  # the same SEG_DIR, now the masks of B
    with pytest.raises(HPAConfigError, match=r"PRED_DIR .*pred: masks .*masks of another images folder"):
        export_run(run, "geojson", tmp_path / "geo")
    with pytest.raises(HPAConfigError, match="masks of another images folder"):
        make_report(run, out=tmp_path / "report")
    with pytest.raises(HPAConfigError, match="masks of another images folder"):
        read_run(str(run))
    assert not (tmp_path / "geo").exists() and not (tmp_path / "report").exists()


def test_an_export_folder_holds_one_runs_exports(two_folders: dict[str, Path], tmp_path: Path) -> None:
    """Exports of one run share a folder (every format, any Ids, again); another run's
    export is refused there, and a user's file of an export's name is never replaced."""
    run_a, run_b, out = tmp_path / "predA", tmp_path / "predB", tmp_path / "export"
    for images, run, seg in ((two_folders["A"], run_a, "segA"), (two_folders["B"], run_b, "segB")):
        predict_folder(images, two_folders["model"], run, masks=two_folders[seg], workers=1, progress=False)
    assert read_record(run_a) is not None  # the export's fingerprint digests the run's record
    export_run(run_a, "geojson", out)
    export_run(run_a, "imagej-roi", out)  # another format of the same run beside it
    export_run(run_a, "geojson", out)  # and again
    before = digests(out)
    with pytest.raises(HPAConfigError) as refused:
        export_run(run_b, "geojson", out)
    assert "pred differ" in _one_line(refused) and "use another --out" in _one_line(refused)
    assert digests(out) == before  # nothing of B written
    mine = tmp_path / "mine"
    mine.mkdir()
    name = sorted(p.name for p in out.glob("*_rois.zip"))[0]  # the ROI set of one image
    (mine / name).write_text("my ROIs")
    with pytest.raises(HPAConfigError, match=f"{name} was not written by hpa"):
        export_run(run_a, "imagej-roi", mine)
    assert (mine / name).read_text() == "my ROIs"


def test_synth_refuses_a_folder_drawn_with_other_settings(tmp_path: Path) -> None:
    """A second draw of other settings would leave the first draw's extra images beside
    the new labels: refused; the same settings draw the same files again."""
    from hpa.synthetic import write_dataset

    out = tmp_path / "data"
    write_dataset(out, 3, 1, seed=5, size=128)
    before = digests(out)
    write_dataset(out, 3, 1, seed=5, size=128)
    assert digests(out) == before
    with pytest.raises(HPAConfigError) as refused:
        write_dataset(out, 2, 1, seed=5, size=128)
    assert "settings.n_train: 3 vs 2" in _one_line(refused) and "use another OUT" in _one_line(refused)
    assert digests(out) == before


def replace_ns(ns: argparse.Namespace, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(ns), **changes})


# ------------------------------------------------------------ models ---


def test_a_plain_model_is_refused_over_a_folds_folder(tiny_dataset: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "model"
    for k in range(2):
        write_untrained_model(out / f"fold-{k}")
    (out / "ensemble.json").write_text(json.dumps({"members": ["fold-0", "fold-1"], "weights": [1.0, 1.0]}))
    labels = read_labels(tiny_dataset["labels"])
    args = (tiny_dataset["images"], labels, tiny_dataset["masks"], out, replace(TINY, fold=0))
    with pytest.raises(
        HPAConfigError, match=r"holds a --folds ensemble, this run trains a plain model.*--overwrite"
    ):
        train_cells(*args, cache_root=tmp_path / "cache", progress=False)
    (out / "notes.txt").write_text("the user's")
    train_cells(*args, cache_root=tmp_path / "cache", progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []  # no old fold left to average
    assert not (out / "ensemble.json").exists() and (out / "notes.txt").read_text() == "the user's"
    assert read_record(out).kind == "model"
    with pytest.raises(HPAConfigError, match="holds a plain model, this run trains a --folds ensemble"):
        train_cells(*args, all_folds=True, cache_root=tmp_path / "cache", progress=False)


@pytest.fixture(scope="module")
def other_labels(tiny_dataset: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Labels:
    labels = read_labels(tiny_dataset["labels"])
    shuffled = Labels(labels.ids, labels.y[np.roll(np.arange(len(labels)), 1)], labels.label_set)
    write_labels(tmp_path_factory.mktemp("labels") / "other.csv", shuffled)
    return shuffled


def test_folds_rerun_keeps_only_folds_of_the_same_inputs(
    tiny_dataset: dict[str, Path], other_labels: Labels, tmp_path: Path
) -> None:
    out, labels = tmp_path / "folds", read_labels(tiny_dataset["labels"])

    def run(images: Path, lab: Labels, **kw: object) -> dict[str, object]:
        return train_folds(
            images, lab, tiny_dataset["masks"], out, TINY, cache_root=tmp_path / "c", progress=False, **kw
        )  # type: ignore[arg-type]

    run(tiny_dataset["images"], labels)
    stamps = {k: os.stat(out / f"fold-{k}" / "weights.safetensors").st_mtime_ns for k in range(2)}
    run(tiny_dataset["images"], labels)  # the same inputs: both folds kept
    assert stamps == {k: os.stat(out / f"fold-{k}" / "weights.safetensors").st_mtime_ns for k in range(2)}
    assert read_record(out).kind == "model-folds"
    with pytest.raises(
        HPAConfigError, match=r"fold-0: holds the output of other inputs.*labels differ"
    ) as exc:
        run(tiny_dataset["images"], other_labels)
    _one_line(exc)
    run(tiny_dataset["images"], other_labels, overwrite=True)  # rebuilt: both folds retrained
    assert all(os.stat(out / f"fold-{k}" / "weights.safetensors").st_mtime_ns != stamps[k] for k in range(2))
    for folder in (out, out / "fold-0", out / "fold-1"):
        assert read_record(folder).inputs["labels"][0].sha256 == labels_digest(other_labels)
    images = shutil.copytree(tiny_dataset["images"], tmp_path / "images")
    (images / "img000_green.png").write_bytes((images / "img001_green.png").read_bytes())  # another image
    with pytest.raises(HPAConfigError, match=r"fold-0: .*images differ: .*tiny\w*/images vs .*images"):
        run(images, other_labels)


@pytest.fixture()
def tiny_companion(monkeypatch: pytest.MonkeyPatch) -> TrainConfig:
    monkeypatch.setitem(
        train_mod.COMPANIONS, "tiny", {**train_mod.COMPANIONS["scratch"], "backbone": "test_resnet"}
    )
    return replace(TINY, companion="tiny")


def test_blend_rerun_with_other_labels_refuses_to_keep_its_members(
    tiny_dataset: dict[str, Path], other_labels: Labels, tiny_companion: TrainConfig, tmp_path: Path
) -> None:
    out, labels = tmp_path / "blend", read_labels(tiny_dataset["labels"])

    def run(lab: Labels, **kw: object) -> dict[str, object]:
        return train_blend(
            tiny_dataset["images"], lab, tiny_dataset["masks"], out, tiny_companion, cache_root=tmp_path / "c",
            progress=False, **kw,  # type: ignore[arg-type]
        )  # fmt: skip

    run(labels)
    stamp = os.stat(out / MAIN / "weights.safetensors").st_mtime_ns
    with pytest.raises(
        HPAConfigError, match=rf"{MAIN}: holds the output of other inputs.*labels differ"
    ) as exc:
        run(other_labels)
    _one_line(exc)
    assert os.stat(out / MAIN / "weights.safetensors").st_mtime_ns == stamp
    for folder in (out / MAIN, out / "tiny"):
        assert read_record(folder).inputs["labels"][0].sha256 == labels_digest(labels)
    assert read_record(out).kind == "blend" and read_record(out).settings["all_folds"] is False


def test_resume_refuses_a_checkpoint_of_other_inputs(tmp_path: Path) -> None:
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"settings": {"lr": 0.1, "inputs_sha256": "a"}}, checkpoint)
    check_resume(checkpoint, {"lr": 0.1, "inputs_sha256": "a"})
    with pytest.raises(HPAConfigError, match="other settings: the images, labels or masks"):
        check_resume(checkpoint, {"lr": 0.1, "inputs_sha256": "b"})
    torch.save({"settings": {"lr": 0.1}}, checkpoint)  # written before checkpoints recorded their inputs
    check_resume(checkpoint, {"lr": 0.1, "inputs_sha256": "b"})


# ------------------------------------------------------------ ensemble.json ---


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"members": ["fold-0", "fold-1"], "weights": [1.0, -0.5]}, "weights must be finite numbers >= 0"),
        ({"members": ["fold-0", "fold-1"], "weights": [0, 0]}, "not all zero"),
        ({"members": ["fold-0", "fold-1"], "weights": [math.nan, 1.0]}, "weights must be finite"),
        ({"members": ["fold-0", "fold-1"], "weights": [1.0]}, "one weight per member"),
        ({"members": ["."], "weights": [1.0]}, "member '.' is not a folder inside"),
        ({"members": ["fold-0/.."], "weights": [1.0]}, "is not a folder inside"),
        ({"members": ["../outside"], "weights": [1.0]}, "is not a folder inside"),
    ],
)
def test_a_hand_edited_ensemble_json_is_refused_naming_the_file(
    spec: dict[str, object], match: str, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    for name in ("fold-0", "fold-1"):
        (folder / name).mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (folder / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(HPAConfigError, match=match) as exc:
        read_ensemble(folder)
    assert _one_line(exc).startswith(f"{folder / 'ensemble.json'}: ")
