"""One settings path: defaults < --config YAML < explicit flags, for every command that takes them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from hpa.classification.train import DEVICE_DEFAULTS, TrainConfig
from hpa.cli import build_parser
from hpa.config import default_workers
from hpa.errors import HPAConfigError
from hpa.pipelines.demo import DemoConfig, resolve_demo_config
from hpa.pipelines.predict import resolve_predict_config
from hpa.pipelines.predict_config import PredictConfig
from hpa.pipelines.segment import resolve_segment_config
from hpa.pipelines.train_command import resolve_train_config
from hpa.segmentation import SegmentConfig


def _yaml(tmp_path: Path, **settings: object) -> str:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_segment_default_then_yaml_then_flag(tmp_path):
    default = SegmentConfig()
    cfg = resolve_segment_config(_args("segment", "imgs", "--out", "seg"))
    assert cfg == default
    config = _yaml(tmp_path, cell_smooth=default.cell_smooth * 2, cellpose_model="from-yaml")
    cfg = resolve_segment_config(_args("segment", "imgs", "--out", "seg", "--config", config))
    assert (cfg.cell_smooth, cfg.cellpose_model) == (default.cell_smooth * 2, "from-yaml")
    cfg = resolve_segment_config(
        _args("segment", "imgs", "--out", "seg", "--config", config, "--cellpose-model", "from-flag")
    )
    assert (cfg.cell_smooth, cfg.cellpose_model) == (default.cell_smooth * 2, "from-flag")
    assert cfg.backend == default.backend  # neither set it


def test_train_cells_device_defaults_then_yaml_then_flag(tmp_path):
    base = [
        "train-cells",
        "--images",
        "i",
        "--labels",
        "l.csv",
        "--masks",
        "m",
        "--out",
        "o",
        "--device",
        "cpu",
    ]
    cfg = resolve_train_config(_args(*base))
    assert cfg == TrainConfig.for_device("cpu")
    for key, value in DEVICE_DEFAULTS["cpu"].items():
        assert getattr(cfg, key) == value, key  # the CPU defaults, not the dataclass's
    assert cfg.workers == default_workers()
    config = _yaml(tmp_path, batch_size=7, lr=0.01, epochs=3, use_tiles=False)
    cfg = resolve_train_config(_args(*base, "--config", config))
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.use_tiles) == (7, 0.01, 3, False)
    cfg = resolve_train_config(_args(*base, "--config", config, "--batch-size", "9", "--lr", "0.5"))
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.use_tiles) == (9, 0.5, 3, False)
    assert cfg.crop_size == DEVICE_DEFAULTS["cpu"]["crop_size"] and cfg.device == "cpu"


def test_train_cells_device_may_come_from_the_yaml(tmp_path):
    base = ["train-cells", "--images", "i", "--labels", "l.csv", "--masks", "m", "--out", "o"]
    cfg = resolve_train_config(_args(*base, "--config", _yaml(tmp_path, device="cpu")))
    assert cfg.device == "cpu" and cfg.backbone == DEVICE_DEFAULTS["cpu"]["backbone"]
    assert cfg.precision in ("bf16", "fp32")  # resolved for the device


def test_for_device_replaces_the_namespace_function():
    cfg = TrainConfig.for_device("cpu", epochs=2, seed=4)
    assert (cfg.epochs, cfg.seed, cfg.device, cfg.backbone) == (
        2,
        4,
        "cpu",
        DEVICE_DEFAULTS["cpu"]["backbone"],
    )
    with pytest.raises(HPAConfigError, match="unknown setting"):
        TrainConfig.for_device("cpu", epoch=2)


def test_predict_default_then_yaml_then_flag(tmp_path):
    base = ["predict", "imgs", "--model", "m", "--out", "o"]
    assert resolve_predict_config(_args(*base)) == PredictConfig()
    config = _yaml(tmp_path, tta=4, pooling="mean", fill_top=False, batch_size=32, model_weights=[1, 3])
    cfg = resolve_predict_config(_args(*base, "--config", config))
    assert (cfg.tta, cfg.pooling, cfg.fill_top, cfg.batch_size, cfg.model_weights) == (
        4,
        "mean",
        False,
        32,
        (1, 3),
    )
    cfg = resolve_predict_config(_args(*base, "--config", config, "--tta", "2", "--pooling", "topk"))
    assert (cfg.tta, cfg.pooling, cfg.fill_top, cfg.batch_size) == (2, "topk", False, 32)
    cfg = resolve_predict_config(_args(*base, "--no-fill-top"))
    assert cfg.fill_top is False and cfg.tta == 1


def test_predict_config_rejects_bad_yaml_values_naming_the_file(tmp_path):
    config = _yaml(tmp_path, tta=3)
    with pytest.raises(HPAConfigError, match=r"settings\.yaml: tta=3: choose from 1, 2, 4, 8"):
        resolve_predict_config(_args("predict", "imgs", "--model", "m", "--out", "o", "--config", config))
    config = _yaml(tmp_path, pooling="median")
    with pytest.raises(HPAConfigError, match="pooling"):
        resolve_predict_config(_args("predict", "imgs", "--model", "m", "--out", "o", "--config", config))


def test_demo_default_then_yaml_then_flag(tmp_path):
    assert resolve_demo_config(_args("demo")) == DemoConfig()
    config = _yaml(tmp_path, n_train=30, n_test=8, epochs=2)
    cfg = resolve_demo_config(_args("demo", "--config", config))
    assert dataclasses.astuple(cfg) == (30, 8, 2, 0, "auto")
    cfg = resolve_demo_config(_args("demo", "--config", config, "--n-test", "5", "--seed", "3"))
    assert dataclasses.astuple(cfg) == (30, 5, 2, 3, "auto")
    with pytest.raises(HPAConfigError, match="unknown setting"):
        resolve_demo_config(_args("demo", "--config", _yaml(tmp_path, n_images=3)))
