"""Issue 12, part B: errors people can read (items 9 and 15, and 16's messages).

Every case runs the real ``hpa`` command in a subprocess and checks that it exits
non-zero with one line on stderr naming the flag or file, and no traceback. Before the
fix each of these reached the user as a traceback, or (``--epochs 0``) as success.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpa.aggregation import save_thresholds
from hpa.classification.model import ModelConfig, create_model, save_model_folder
from hpa.cli import main as hpa_main
from hpa.constants import LABEL_SETS

REPO = Path(__file__).resolve().parents[2]


def hpa_cmd(*args: str | Path, quiet: bool = True) -> tuple[int, str]:
    """Run ``python -m hpa [-q] ARGS``; its exit status and stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "hpa", *(["-q"] if quiet else []), *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return res.returncode, res.stderr


def assert_one_line(rc: int, stderr: str, *names: str | Path) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


TRAIN = ("train-cells", "--images", "i", "--labels", "l.csv", "--masks", "m", "--out", "o")


# ------------------------------------------------------- item 9 and bad flag values ---


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ((*TRAIN, "--epochs", "0"), "--epochs"),
        ((*TRAIN, "--epochs", "-1"), "--epochs"),
        ((*TRAIN, "--max-steps", "0"), "--max-steps"),
        ((*TRAIN, "--crop-size", "0"), "--crop-size"),
        ((*TRAIN, "--batch-size", "0"), "--batch-size"),
        ((*TRAIN, "--folds", "1"), "--folds"),
        ((*TRAIN, "--fold", "-1"), "--fold"),
        ((*TRAIN, "--folds", "3", "--fold", "3"), "--fold"),
        ((*TRAIN, "--no-cells", "--no-tiles"), "--no-tiles"),
        ((*TRAIN, "--workers", "0"), "--workers"),
        ((*TRAIN, "--lr", "nan"), "--lr"),
        (("predict", "i", "--model", "m", "--out", "o", "--batch-size", "0"), "--batch-size"),
        (("predict", "i", "--model", "m", "--out", "o", "--scheduler", "nonsense"), "--scheduler"),
        (("segment", "i", "--out", "o", "--scheduler", "local:0"), "--scheduler"),
        (("synth", "o", "--size", "16"), "--size"),
        (("synth", "o", "--n-train", "0"), "--n-train"),
        (("demo", "--epochs", "0"), "--epochs"),
    ],
)
def test_bad_flag_values_are_one_line(args, flag):
    rc, err = hpa_cmd(*args)
    assert rc == 2
    assert_one_line(rc, err, flag)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("epochs: 0\n", "epochs must be an integer >= 1"),
        ("max_steps: -5\n", "max_steps"),
        ("tile_weight: 2\n", "tile_weight"),
        ("pooling: median\n", "pooling"),
        ("epochs: [unclosed\n", "not a valid UTF-8 YAML"),
    ],
)
def test_bad_values_in_a_settings_file(tmp_path, text, named):
    settings = tmp_path / "settings.yaml"
    settings.write_text(text)
    assert_one_line(*hpa_cmd(*TRAIN, "--config", settings), settings, named)


def test_unknown_backbone_names_timm(tmp_path):
    line = assert_one_line(*hpa_cmd(*TRAIN, "--backbone", "resnet_18"), "--backbone", "resnet_18")
    assert "timm" in line and "resnet18" in line  # a close match is suggested


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu():
    assert_one_line(*hpa_cmd(*TRAIN, "--device", "cuda"), "--device cuda")


# ------------------------------------------------------------- broken model folders ---


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    torch.manual_seed(0)
    cfg = ModelConfig("test_resnet", LABEL_SETS["2018"], "2018")
    save_model_folder(folder, cfg, create_model(cfg.backbone, cfg.num_classes))
    save_thresholds(folder / "thresholds.json", np.full(cfg.num_classes, 0.5), cfg.class_names)
    return folder


def test_broken_weights_file(tiny_dataset, model_dir, tmp_path):
    weights = model_dir / "weights.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    rc, err = hpa_cmd("predict", tiny_dataset["images"], "--model", model_dir, "--out", tmp_path / "p",
                      "--masks", tiny_dataset["masks"])  # fmt: skip
    assert "safetensors" in assert_one_line(rc, err, weights)


def test_weights_of_another_class_count(tiny_dataset, model_dir, tmp_path):
    other = create_model("test_resnet", 19)
    save_model_folder(tmp_path / "m19", ModelConfig("test_resnet", LABEL_SETS["2021"], "2021"), other)
    os.replace(tmp_path / "m19" / "weights.safetensors", model_dir / "weights.safetensors")
    rc, err = hpa_cmd("predict", tiny_dataset["images"], "--model", model_dir, "--out", tmp_path / "p",
                      "--masks", tiny_dataset["masks"])  # fmt: skip
    assert "28 classes" in assert_one_line(rc, err, model_dir / "weights.safetensors")


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(class_names=d["class_names"][:5]), "class_names"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d.update(mean="0.1"), "mean"),
    ],
)
def test_config_json_with_wrong_fields(tiny_dataset, model_dir, tmp_path, edit, field):
    path = model_dir / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    rc, err = hpa_cmd("predict", tiny_dataset["images"], "--model", model_dir, "--out", tmp_path / "p",
                      "--masks", tiny_dataset["masks"])  # fmt: skip
    assert_one_line(rc, err, path, field)


# -------------------------------------------------------------------- odd CSV files ---


def test_csv_field_over_the_csv_module_limit(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\na," + "0 " * 70_000 + "\n")
    sub = tmp_path / "submission.csv"
    sub.write_text("Id,Predicted\na,0\n")
    line = assert_one_line(*hpa_cmd("evaluate", sub, "--labels", labels), labels)
    assert "line 2" in line and "field limit" in line


def test_latin1_csv(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_bytes("Id\ncaf\xe9\n".encode("latin-1"))
    line = assert_one_line(*hpa_cmd("segment", tmp_path, "--out", tmp_path / "seg", "--ids", ids), ids)
    assert "not UTF-8" in line


def test_id_list_without_header_on_the_command_line(tiny_dataset, model_dir, tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("img000\nimg001\n")
    rc, err = hpa_cmd("predict", tiny_dataset["images"], "--model", model_dir, "--out", tmp_path / "p",
                      "--masks", tiny_dataset["masks"], "--ids", ids)  # fmt: skip
    assert "header" in assert_one_line(rc, err, ids)


# ----------------------------------------------------------------- a pickled model ---


def test_pickled_cellpose_model(tiny_dataset, tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module, not weights
    rc, err = hpa_cmd("segment", tiny_dataset["images"], "--out", tmp_path / "seg", "--backend", "cellpose",
                      "--cellpose-model", pickled, "--cellpose-nuclei-model", pickled, "--device", "cpu")  # fmt: skip
    assert "not a cellpose weights file" in assert_one_line(rc, err, pickled)
    assert not (tmp_path / "seg" / "cells").exists() or not any((tmp_path / "seg" / "cells").iterdir())


# ------------------------------------------------------- disks, workers, and the rest ---


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/out/pred/submission.csv"), "the disk is full"),
        (OSError(errno.EROFS, "Read-only file system", "/out/pred/submission.csv"), "read-only"),
        (PermissionError(errno.EACCES, "Permission denied", "/out/pred/submission.csv"), "permission denied"),
    ],
)
def test_disk_errors_are_one_line_naming_the_path(monkeypatch, caplog, exc, expected):
    import hpa.pipelines.evaluate

    def fail(args):
        raise exc

    monkeypatch.setattr(hpa.pipelines.evaluate, "main", fail)
    with caplog.at_level(logging.INFO, logger="hpa"):
        assert hpa_main(["evaluate", "s.csv", "--labels", "l.csv"]) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "/out/pred/submission.csv" in errors[0].getMessage() and expected in errors[0].getMessage()


def test_dead_worker_and_unexpected_errors(monkeypatch, caplog):
    from concurrent.futures.process import BrokenProcessPool

    import hpa.pipelines.evaluate

    raised: list[BaseException] = [
        BrokenProcessPool("A child process terminated abruptly"),
        ZeroDivisionError("x"),
    ]

    def fail(args):
        raise raised.pop(0)

    monkeypatch.setattr(hpa.pipelines.evaluate, "main", fail)
    with caplog.at_level(logging.INFO, logger="hpa"):
        assert hpa_main(["evaluate", "s.csv", "--labels", "l.csv"]) == 1
        assert hpa_main(["evaluate", "s.csv", "--labels", "l.csv"]) == 1
    first, second = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "worker process died" in first.getMessage() and "--workers" in first.getMessage()
    assert "ZeroDivisionError" in second.getMessage() and "-v" in second.getMessage()
    assert first.exc_info is None and second.exc_info is None


def test_traceback_only_with_verbose(tmp_path):
    sub = tmp_path / "missing.csv"
    rc, err = hpa_cmd("evaluate", sub, "--labels", sub, quiet=False)
    assert_one_line(rc, err, sub)
    rc, err = hpa_cmd("-v", "evaluate", sub, "--labels", sub, quiet=False)
    assert rc == 1 and "Traceback" in err and str(sub) in err


def test_jpeg_named_png_on_the_command_line(tiny_dataset, tmp_path):
    import shutil

    import cv2

    from hpa.constants import CHANNELS

    images = tmp_path / "images"
    images.mkdir()
    for name in CHANNELS:
        shutil.copy(tiny_dataset["images"] / f"img000_{name}.png", images / f"x_{name}.png")
    _, jpeg = cv2.imencode(".jpg", np.zeros((96, 96), np.uint8))
    (images / "x_red.png").write_bytes(jpeg.tobytes())
    rc, err = hpa_cmd("segment", images, "--out", tmp_path / "seg", "--workers", "1")
    assert rc == 1 and "a JPEG file named .png" in err and "truncated" not in err
