"""Issue 23, the "Unclear or low" list: each case fails on the code before the fix."""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import pathlib
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask
from reliability_helpers import cli_refusal, digests, run_hpa, write_images

from hpa.aggregation.rle import encode_cells, encode_mask
from hpa.aggregation.submission_2021 import read_submission_2021, write_submission_2021
from hpa.cli import main as hpa_main
from hpa.constants import CLASS_NAMES_2018
from hpa.errors import HPAConfigError, HPADataError
from hpa.io import write_label_image
from hpa.pipelines.predict import predict_folder


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------- 1. RLE bytes equal the competition's ---


def _reference(mask: np.ndarray) -> str:
    """The competition encoder: pycocotools on a Fortran-order uint8 mask, zlib 9, base64."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return base64.b64encode(zlib.compress(rle["counts"], zlib.Z_BEST_COMPRESSION)).decode("ascii")


def _edge_masks() -> dict[str, np.ndarray]:
    h, w = 6, 5
    masks = {"empty": np.zeros((h, w), bool), "full": np.ones((h, w), bool)}
    for name, (y, x) in {"last": (h - 1, w - 1), "first": (0, 0), "first-col-end": (h - 1, 0)}.items():
        m = np.zeros((h, w), bool)
        m[y, x] = True
        masks[name] = m
    m = np.zeros((h, w), bool)
    m[:, -2:] = True  # the last two columns: one run to the end of the image
    masks["last-columns"] = m
    m = np.zeros((h, w), bool)
    m[3:, -1] = True
    masks["last-column-tail"] = m
    m = np.ones((h, w), bool)
    m[0, 0] = False
    masks["all-but-first"] = m
    return masks


@pytest.mark.parametrize("name", sorted(_edge_masks()))
def test_rle_bytes_match_the_competition_encoder_on_edge_masks(name):
    mask = _edge_masks()[name]
    assert encode_mask(mask) == _reference(mask)
    if mask.any():
        labels = mask.astype(np.int32) * 3
        assert encode_cells(labels)[3] == _reference(mask)


# ---------------------------------------------- 2. NaN confidences in a 2021 file ---

MASK = encode_mask(np.ones((2, 2), bool))


def _truth(tmp_path: Path) -> Path:
    """A 2021 truth folder of two 2x2 images ``a`` and ``b``, one cell each (classes 0 and 3)."""
    truth = tmp_path / "truth"
    for image_id in "ab":
        write_label_image(truth / "cells" / f"{image_id}.png", np.ones((2, 2), np.int32))
    (truth / "cell_labels_2021.csv").write_text("image_id,cell_id,Label\na,1,0\nb,1,3\n")
    return truth


@pytest.mark.parametrize("conf", ["nan", "NaN", "inf", "-inf"])
def test_nan_confidence_is_refused_by_the_reader_naming_file_and_line(tmp_path, caplog, conf):
    sub = tmp_path / "submission_2021.csv"
    sub.write_text(f"ID,ImageWidth,ImageHeight,PredictionString\na,2,2,0 0.5 {MASK}\nb,2,2,3 {conf} {MASK}\n")
    with pytest.raises(HPADataError, match=rf"submission_2021.csv, line 3: class 3 has confidence '{conf}'"):
        read_submission_2021(sub)
    truth = _truth(tmp_path)
    caplog.clear()
    assert hpa_main(["evaluate", str(sub), "--truth", str(truth)]) == 1
    (line,) = _errors(caplog)
    assert str(sub) in line and "line 3" in line and "finite" in line


def test_nan_confidence_is_refused_by_the_writers(run, tmp_path):
    out = tmp_path / "sub.csv"
    with pytest.raises(HPADataError, match=r"sub.csv: Id b: class 0 has confidence 'nan'"):
        write_submission_2021(out, [("a", 2, 2, f"0 0.5 {MASK}"), ("b", 2, 2, f"0 nan {MASK}")])
    assert not out.exists()

    from hpa.pipelines.single_cell import write_single_cell

    pred = tmp_path / "pred"
    shutil.copytree(run, pred)
    cells_path = pred / "cell_predictions.parquet"
    cells = pd.read_parquet(cells_path)
    cells.loc[2, CLASS_NAMES_2018[5]] = np.nan
    cells.to_parquet(cells_path)
    with pytest.raises(HPADataError, match=r"cell_predictions.parquet: row 3 \(image_id \w+, cell_id \d+\)"):
        write_single_cell(pred, progress=False)
    assert not (pred / "submission_2021.csv").exists()


# ------------------------------- 3. evaluate a 2021 submission: CLI and API agree ---


def test_evaluate_2021_submission_with_image_labels_says_what_scores_it(tmp_path, caplog, capsys):
    import hpa

    sub = tmp_path / "submission_2021.csv"
    sub.write_text(f"ID,ImageWidth,ImageHeight,PredictionString\na,2,2,0 0.9 {MASK}\nb,2,2,3 0.8 {MASK}\n")
    labels = tmp_path / "labels_2021.csv"
    labels.write_text("ID,Label\na,0\nb,3\n")
    caplog.clear()
    assert hpa_main(["evaluate", str(sub), "--labels", str(labels)]) == 1
    (line,) = _errors(caplog)
    assert "--truth TRUTH_DIR" in line and str(labels) in line and "expected 'Id,Predicted'" not in line, line
    with pytest.raises(HPAConfigError, match=r"^hpa\.evaluate: .*truth=TRUTH_DIR") as raised:
        hpa.evaluate(sub, labels)
    assert "--" not in str(raised.value).split("'hpa predict")[0]  # API names, not flags
    caplog.clear()
    assert hpa_main(["evaluate", str(sub), "--format", "2018", "--labels", str(labels)]) == 1
    assert "--truth TRUTH_DIR" in _errors(caplog)[0]

    # the API's 2021 mode gives what the CLI prints with --json
    truth = _truth(tmp_path)
    capsys.readouterr()
    assert hpa_main(["evaluate", str(sub), "--truth", str(truth), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = hpa.evaluate(sub, truth=truth)
    assert result == printed and result["map"] == 1.0
    assert hpa.evaluate(sub, format="2021", truth=truth) == result
    with pytest.raises(HPAConfigError, match=r"hpa\.evaluate: format='2019'"):
        hpa.evaluate(sub, format="2019")


# ------------------------------------------ 4. a full disk: the path, and ENOSPC ---


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on a full disk: a 64 KiB tmpfs where one can be mounted (root), else a folder
    where ``Path.write_bytes`` fails as ``write()`` does on a full disk (ENOSPC, no file name)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)]
    mounted = os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0
    if not mounted:
        real = pathlib.Path.write_bytes

        def write_bytes(self: Path, data: bytes) -> int:  # type: ignore[override]
            if folder in self.parents:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, data)

        monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_names_the_file_and_says_the_disk_is_full(full_disk, model, caplog):
    from hpa.classification.model import load_model, save_model_folder
    from hpa.errors import user_message
    from hpa.io import write_text_atomic

    target = full_disk / "pred" / "submission.csv"
    with pytest.raises(OSError) as raised:
        write_text_atomic(target, "Id,Predicted\n" + "x,0 1 2\n" * 20_000)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert user_message(raised.value) == f"{target}: cannot write: the disk is full (No space left on device)"
    assert not list(target.parent.iterdir())  # no temporary left

    net, config = load_model(model)
    weights = full_disk / "model" / "weights.safetensors"
    with pytest.raises(OSError) as raised:
        save_model_folder(full_disk / "model", config, net)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(weights)

    # through the command: one line naming the file
    caplog.clear()
    assert (
        hpa_main(["synth", str(full_disk / "synth"), "--n-train", "4", "--n-test", "1", "--size", "96"]) == 1
    )
    (line,) = _errors(caplog)
    assert str(full_disk / "synth") in line and "cannot write: the disk is full" in line and "?" not in line


# ---------------------------------------------- 8. file modes, warnings, limits ---


def test_weights_have_the_mode_of_the_other_files(model):
    modes = {p.name: p.stat().st_mode & 0o777 for p in model.iterdir() if p.is_file()}
    assert modes["weights.safetensors"] == modes["config.json"], modes


# ------------------------------------------- 5. train-cells checks inputs up front ---

TINY = ("--backbone", "resnet10t", "--crop-size", "32", "--epochs", "1", "--device", "cpu", "--workers", "1")


def test_train_cells_checks_images_and_labels_before_cropping(tiny_dataset, tmp_path, caplog):
    cache = tmp_path / "cache"

    def train(images: Path, labels: Path) -> str:
        caplog.clear()
        argv = ["train-cells", "--images", str(images), "--labels", str(labels), "--masks",
                str(tiny_dataset["masks"]), "--out", str(tmp_path / "model"), "--cache", str(cache), *TINY]  # fmt: skip
        assert hpa_main(argv) == 1
        (line,) = _errors(caplog)
        assert not cache.exists() and not (tmp_path / "model").exists()
        return line

    line = train(tmp_path / "nope", tiny_dataset["labels"])
    assert str(tmp_path / "nope") in line and "not found" in line
    (tmp_path / "other").mkdir()
    line = train(tmp_path / "other", tiny_dataset["labels"])
    assert str(tmp_path / "other") in line and "none of the 18 labelled Id(s)" in line
    header_only = tmp_path / "train.csv"
    header_only.write_text("Id,Target\n")
    line = train(tiny_dataset["images"], header_only)
    assert str(header_only) in line and "no rows" in line


# ------------------- 6. --channel-map indexes, --model-weights 0, predict --ids header ---


def test_negative_channel_map_index_is_refused_not_taken_for_a_name(caplog, tmp_path):
    from hpa.io_tiff import ChannelMap

    with pytest.raises(HPAConfigError, match=r"protein=-1: a channel index counts from 0"):
        ChannelMap.parse("microtubules=0,protein=-1,nucleus=2,er=3")
    assert ChannelMap.parse("microtubules=0,protein=+1,nucleus=2").sources == (0, 1, 2, None)
    caplog.clear()
    argv = ["segment", str(tmp_path), "--out", str(tmp_path / "seg"), "--channel-map", "protein=-1,microtubules=0,nucleus=2"]  # fmt: skip
    assert hpa_main(argv) == 1
    assert "a channel index counts from 0" in _errors(caplog)[0]


def test_model_weights_zero_refused_by_the_settings_check_and_the_loader_alike(model):
    from hpa.classification.ensemble import load_predictor
    from hpa.pipelines.predict_config import PredictConfig

    for weights in [(0.0, 1.0), (float("nan"), 1.0), (-1.0, 2.0)]:
        with pytest.raises(ValueError, match=r"each weight must be a number > 0") as first:
            PredictConfig(model_weights=weights)
        with pytest.raises(HPAConfigError, match=r"each weight must be a number > 0") as second:
            load_predictor([model, model], list(weights))
        assert "positive" not in str(first.value) + str(second.value)


def test_predict_ids_header_only_is_refused_before_touching_pred_dir(
    tiny_dataset, model, run, tmp_path, caplog
):
    pred = tmp_path / "pred"
    shutil.copytree(run, pred)
    before = digests(pred)
    ids = tmp_path / "ids.csv"
    ids.write_text("Id\n")
    caplog.clear()
    argv = ["predict", str(tiny_dataset["images"]), "--model", str(model), "--masks", str(tiny_dataset["masks"]),
            "--out", str(pred), "--ids", str(ids), "--workers", "1"]  # fmt: skip
    assert hpa_main(argv) == 1
    (line,) = _errors(caplog)
    assert str(ids) in line and "no rows" in line
    assert digests(pred) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.csv", "pred"]  # no staging folder


# ------------------------------------------ 7. the API validates as the CLI does ---


# every predict setting's CLI refusal, refused by the API too: tests/pipelines/test_predict_refusals.py


def test_api_argument_types_are_checked_as_the_cli_reads_them(tiny_dataset, model, tmp_path, caplog, capsys):
    import hpa

    images, masks, out = tiny_dataset["images"], tiny_dataset["masks"], tmp_path / "pred"
    for ids, problem in [("x", "not a single string"), ([], "empty"), ([3], "strings")]:
        with pytest.raises(HPAConfigError, match=rf"^hpa\.predict_folder: ids=.*{problem}"):
            hpa.predict_folder(images, model, out, masks=masks, ids=ids, progress=False)
    header_only = tmp_path / "ids.csv"
    header_only.write_text("Id\n")
    assert "no rows" in cli_refusal(["predict", str(images), "--model", str(model), "--out", str(out),
                                      "--ids", str(header_only)], caplog, capsys)  # fmt: skip
    assert not out.exists()
    with pytest.raises(
        HPAConfigError, match=r"^hpa\.Classifier\.from_folder: folder=5: expected a model folder"
    ):
        hpa.Classifier.from_folder(5)
    with pytest.raises(HPAConfigError, match=r"^hpa\.Classifier\.from_folder: weights=\[0, 1\]: each weight"):
        hpa.Classifier.from_folder([model, model], weights=[0, 1])
    with pytest.raises(HPAConfigError, match=r"^hpa\.train: channels must be text"):
        hpa.train(images, tiny_dataset["labels"], masks, tmp_path / "model", channels=["g"], device="cpu")
    assert not (tmp_path / "model").exists()
    # the CLI's own refusals of train settings, and the API's
    for flags, arguments in [(["--epochs", "0"], {"epochs": 0}), (["--crop-size", "4"], {"crop_size": 4}),
                             (["--lr", "-1"], {"lr": -1.0})]:  # fmt: skip
        argv = ["train-cells", "--images", str(images), "--labels", str(tiny_dataset["labels"]), "--masks",
                str(masks), "--out", str(tmp_path / "model"), *flags]  # fmt: skip
        assert flags[0] in cli_refusal(argv, caplog, capsys)
        with pytest.raises(HPAConfigError, match=rf"^hpa\.train: {next(iter(arguments))}"):
            hpa.train(images, tiny_dataset["labels"], masks, tmp_path / "model", device="cpu", **arguments)


def test_help_shows_each_default_once():
    import re

    from hpa.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():  # type: ignore[union-attr]
        text = " ".join(command.format_help().split())
        assert "(default: None)" not in text, name
        assert not re.search(r"\(default: [^)]*\) \(default:", text), name
    demo = " ".join(sub.choices["demo"].format_help().split())  # type: ignore[union-attr]
    assert "synthetic training images (default: 240) " in demo and "output folder (default: hpa-demo)" in demo


def test_synth_n_test_zero_writes_training_data_only(tmp_path):
    assert hpa_main(["synth", str(tmp_path / "syn"), "--n-train", "2", "--n-test", "0", "--size", "64"]) == 0
    names = {p.name for p in (tmp_path / "syn").iterdir()}
    assert {"train", "train.csv", "train_2021.csv", "truth"} <= names
    assert not names & {"test", "test_labels.csv", "test_labels_2021.csv", "sample_submission.csv"}


def test_folds_more_than_images_refused_before_the_crop_cache(tiny_dataset, tmp_path, caplog):
    cache, out = tmp_path / "cache", tmp_path / "model"
    caplog.clear()
    argv = ["train-cells", "--images", str(tiny_dataset["images"]), "--labels", str(tiny_dataset["labels"]),
            "--masks", str(tiny_dataset["masks"]), "--out", str(out), "--cache", str(cache), "--folds", "20", *TINY]  # fmt: skip
    assert hpa_main(argv) == 1
    (line,) = _errors(caplog)
    assert "18 labelled images cannot be split into 20 folds" in line
    assert not cache.exists() and not out.exists()


def test_single_cell_flags_with_format_2018_are_refused(tiny_dataset, model, tmp_path, caplog, capsys):
    import hpa

    images, masks, out = tiny_dataset["images"], tiny_dataset["masks"], tmp_path / "pred"
    for flags, arguments in [(["--min-cell-score", "0.2"], {"min_cell_score": 0.2}),
                             (["--cell-score", "cell"], {"cell_score": "cell"})]:  # fmt: skip
        argv = ["predict", str(images), "--model", str(model), "--masks", str(masks), "--out", str(out),
                "--format", "2018", *flags]  # fmt: skip
        assert f"{flags[0]} {flags[1]}: applies to the 2021 output only" in cli_refusal(argv, caplog, capsys)
        with pytest.raises(HPAConfigError, match=r"^hpa\.predict_folder: .*applies to the 2021 output only"):
            hpa.predict_folder(images, model, out, masks=masks, fmt="2018", progress=False, **arguments)
        assert not out.exists()
    # the model's own format is 2018: warned of, then ignored
    caplog.clear()
    hpa.predict_folder(
        images, model, out, masks=masks, ids=["img000"], min_cell_score=0.2, workers=1, progress=False
    )
    assert any("min_cell_score ignored" in w for w in _warnings(caplog))


def test_images_without_a_cell_are_named_in_a_warning(tiny_dataset, model, tmp_path, caplog):
    masks = tmp_path / "seg"
    shutil.copytree(tiny_dataset["masks"], masks, ignore=shutil.ignore_patterns("crop-cache"))
    write_label_image(masks / "cells" / "img001.png", np.zeros((96, 96), np.int32))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predict_folder(tiny_dataset["images"], model, tmp_path / "pred", masks=masks,
                       ids=["img000", "img001"], workers=1, progress=False)  # fmt: skip
    (warning,) = [w for w in _warnings(caplog) if "without a cell" in w]
    assert "img001" in warning and "img000" not in warning and "tiles alone" in warning


def test_unreachable_scheduler_fails_fast_with_a_clear_message(tmp_path):
    pytest.importorskip("distributed")
    import socket
    import time

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    images = tmp_path / "images"
    write_images(images, 1)
    t0 = time.monotonic()
    done = run_hpa(
        "-q", "segment", images, "--out", tmp_path / "seg", "--scheduler", f"tcp://127.0.0.1:{port}"
    )
    elapsed = time.monotonic() - t0
    assert done.returncode == 1 and elapsed < 40, (elapsed, done.stderr)
    (line,) = [x for x in done.stderr.splitlines() if "ERROR" in x]
    assert f"--scheduler tcp://127.0.0.1:{port}: no Dask scheduler answered within 10 s" in line


def test_ome_channels_named_as_known_stains_are_mapped_by_name_else_warned_of(tmp_path, caplog):
    import tifffile

    from hpa.io import read_sample

    rng = np.random.default_rng(0)
    planes = rng.integers(0, 255, (4, 16, 24), endpoint=True).astype(np.uint8)  # red, green, blue, yellow
    order = (2, 3, 1, 0)  # stored as nucleus, ER, protein, microtubules
    stored = np.stack([planes[k] for k in order])
    names = ("DAPI", "Calreticulin", "GFP", "Tubulin")
    meta = {"axes": "CYX", "Channel": {"Name": list(names)}}
    tifffile.imwrite(tmp_path / "a.ome.tif", stored, photometric="minisblack", metadata=meta)
    np.testing.assert_array_equal(np.moveaxis(read_sample(tmp_path, "a"), -1, 0), planes)

    other = {"axes": "CYX", "Channel": {"Name": ["C1", "C2", "C3", "C4"]}}
    tifffile.imwrite(tmp_path / "b.ome.tif", stored, photometric="minisblack", metadata=other)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        img = read_sample(tmp_path, "b")
    np.testing.assert_array_equal(np.moveaxis(img, -1, 0), stored)  # file order, as before
    (warning,) = _warnings(caplog)
    assert "b.ome.tif" in warning and "C1, C2, C3, C4" in warning and "--channel-map" in warning


def test_messages_name_a_path_once(tmp_path, caplog):
    from hpa.artefacts.tables import read_parquet_table

    broken = tmp_path / "cell_predictions.parquet"
    broken.write_bytes(b"garbage")
    with pytest.raises(HPADataError) as raised:
        read_parquet_table(broken)
    assert str(raised.value).count(str(broken)) == 1, raised.value
    caplog.clear()
    missing = tmp_path / "nomodel"
    (tmp_path / "images").mkdir()
    argv = ["predict", str(tmp_path / "images"), "--model", str(missing), "--out", str(tmp_path / "pred")]
    assert hpa_main(argv) == 1
    (line,) = _errors(caplog)
    assert line.count(str(missing)) == 1 and line.count("config.json") == 1, line
