"""--folds K without --fold: every fold, out-of-fold thresholds; predict averages folds and folders."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from hpa.aggregation import apply_thresholds, load_thresholds, macro_f1, tune_thresholds
from hpa.classification.ensemble import expand_members, tune_on_views
from hpa.classification.train import TrainConfig
from hpa.errors import HPAConfigError
from hpa.io import read_labels
from hpa.pipelines.folds import train_folds
from hpa.pipelines.predict import predict_folder
from hpa.pipelines.train import train_model

TINY = TrainConfig(
    backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1, warmup_epochs=0.2
)


@pytest.fixture(scope="module")
def folds_model(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("folds")
    labels = read_labels(tiny_dataset["labels"])
    metrics = train_folds(
        tiny_dataset["images"],
        labels,
        tiny_dataset["masks"],
        out,
        TINY,
        cache_root=out / "cache",
        progress=False,
    )
    return out, metrics


def _predict(tiny_dataset, model, out, **kw):
    predict_folder(
        tiny_dataset["images"], model, out, masks=tiny_dataset["masks"], workers=1, progress=False, **kw
    )
    return pd.read_parquet(out / "cell_predictions.parquet"), load_thresholds(out / "thresholds.json")[0]


def test_every_fold_is_a_model_folder_and_thresholds_come_from_all_images(tiny_dataset, folds_model):
    out, metrics = folds_model
    labels = read_labels(tiny_dataset["labels"])
    for k in range(3):
        assert {"config.json", "weights.safetensors", "thresholds.json", "metrics.json"} <= {
            p.name for p in (out / f"fold-{k}").iterdir()
        }
    oof = pd.read_csv(out / "oof_image_scores.csv")
    assert sorted(oof["image_id"]) == sorted(labels.ids)  # every training image exactly once
    views = pd.read_parquet(out / "oof_view_scores.parquet")
    assert sorted(views["image_id"].unique()) == sorted(labels.ids)
    # the saved thresholds are those tuned on the out-of-fold scores of all 18 images
    ids = oof["image_id"].tolist()
    y = labels.subset(ids).y
    spec = json.loads((out / "ensemble.json").read_text())
    expected = tune_thresholds(y, oof.drop(columns="image_id").to_numpy(), shrink=TINY.threshold_shrink)
    np.testing.assert_allclose(load_thresholds(out / "thresholds.json")[0], expected.thresholds)
    cols = list(labels.class_names)
    w, _, _, _ = tune_on_views(views, views[cols].to_numpy(np.float32), ids, y, "max", True, True, None, 5.0)
    assert spec["tile_weight"] == w and spec["members"] == ["fold-0", "fold-1", "fold-2"]
    assert metrics["n_images"] == 18
    # the reported figure is the macro F1 of the saved out-of-fold scores under the saved thresholds
    y_pred = apply_thresholds(
        oof.drop(columns="image_id").to_numpy(), load_thresholds(out / "thresholds.json")[0]
    )
    assert metrics["oof_macro_f1"] == pytest.approx(macro_f1(y, y_pred), abs=1e-9)


def test_the_folds_model_card_reports_the_out_of_fold_metrics(folds_model):
    out, metrics = folds_model
    card = (out / "README.md").read_text()
    assert f"out-of-fold macro F1 (tuned thresholds, all 18 images): {metrics['oof_macro_f1']:.4f}" in card
    folds = ", ".join(f"{v:.4f}" for v in metrics["fold_val_macro_f1"])
    assert f"each fold's validation macro F1: {folds}" in card
    thresholds = json.loads((out / "thresholds.json").read_text())["thresholds"]
    for record, threshold in zip(metrics["per_class"], thresholds, strict=True):
        assert f"| {record['f1']:.4f} | {record['support']} | {threshold:.4f} |" in card
    # the drawn masks carry no config.yaml: nothing recorded, and the card says so
    assert not (out / "segmentation.yaml").exists() and "recorded no settings" in card
    assert all((out / f"fold-{k}" / "README.md").is_file() for k in range(3))


def test_rerun_keeps_finished_folds_and_refuses_other_settings(tiny_dataset, folds_model, tmp_path):
    out, _ = folds_model
    labels = read_labels(tiny_dataset["labels"])
    args = (tiny_dataset["images"], labels, tiny_dataset["masks"], out)
    stamp = {k: (out / f"fold-{k}" / "weights.safetensors").stat().st_mtime_ns for k in range(3)}
    train_folds(*args, TINY, cache_root=out / "cache", progress=False)
    assert stamp == {k: (out / f"fold-{k}" / "weights.safetensors").stat().st_mtime_ns for k in range(3)}
    with pytest.raises(HPAConfigError, match=r"fold-0/train_config.yaml: .*crop_size=32"):
        train_folds(*args, replace(TINY, crop_size=24), cache_root=out / "cache", progress=False)


def test_predict_averages_the_folds_with_out_of_fold_thresholds(tiny_dataset, folds_model, tmp_path):
    out, _ = folds_model
    cells, thresholds = _predict(tiny_dataset, out, tmp_path / "ens")
    np.testing.assert_allclose(thresholds, load_thresholds(out / "thresholds.json")[0])
    cols = list(read_labels(tiny_dataset["labels"]).class_names)
    per_fold = [
        _predict(tiny_dataset, out / f"fold-{k}", tmp_path / f"f{k}")[0][cols].to_numpy() for k in range(3)
    ]
    np.testing.assert_allclose(cells[cols].to_numpy(), np.mean(per_fold, axis=0), atol=2e-3)


def test_weighted_folders_and_retuned_thresholds(tiny_dataset, folds_model, tmp_path, caplog):
    out, _ = folds_model
    labels = read_labels(tiny_dataset["labels"])
    cols = list(labels.class_names)
    small = tmp_path / "small"  # a plain model folder with another crop size
    train_model(
        tiny_dataset["images"], labels, tiny_dataset["masks"], small, replace(TINY, crop_size=24),
        cache_root=tmp_path / "cache", progress=False,
    )  # fmt: skip
    members = expand_members([out, small], [0.75, 0.25])
    assert [round(m.weight, 4) for m in members] == [0.25, 0.25, 0.25, 0.25]
    ens, _ = _predict(tiny_dataset, out, tmp_path / "a")
    alone, _ = _predict(tiny_dataset, small, tmp_path / "b")
    with caplog.at_level(logging.WARNING):
        mixed, thr = _predict(tiny_dataset, [out, small], tmp_path / "ab", model_weights=[0.75, 0.25])
    assert "not every --model folder has out-of-fold scores" in caplog.text
    expected = 0.75 * ens[cols].to_numpy() + 0.25 * alone[cols].to_numpy()
    np.testing.assert_allclose(mixed[cols].to_numpy(), expected, atol=0.03)  # small crops: resized 32 -> 24
    mean_thr = (
        0.75 * load_thresholds(out / "thresholds.json")[0]
        + 0.25 * load_thresholds(small / "thresholds.json")[0]
    )
    np.testing.assert_allclose(thr, mean_thr)
    # two folders with out-of-fold scores: re-tuned on their combined scores (here the same run twice)
    _, twice = _predict(tiny_dataset, [out, out], tmp_path / "aa")
    np.testing.assert_allclose(twice, load_thresholds(out / "thresholds.json")[0], atol=1e-6)
    with pytest.raises(HPAConfigError, match="2 weights for 1"):
        expand_members([out], [0.5, 0.5])


def test_cli_trains_every_fold(tiny_dataset, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "hpa", "train-cells", "--images", str(tiny_dataset["images"]),
           "--labels", str(tiny_dataset["labels"]), "--masks", str(tiny_dataset["masks"]), "--out", str(out),
           "--cache", str(tmp_path / "cache"), "--backbone", "test_resnet", "--crop-size", "32",
           "--folds", "2", "--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--device", "cpu",
           "--workers", "1", "--precision", "fp32"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 fold models written to" in res.stdout and "out-of-fold macro F1" in res.stdout
    assert (out / "fold-0" / "weights.safetensors").is_file() and (
        out / "fold-1" / "weights.safetensors"
    ).is_file()
    pred = subprocess.run(
        [sys.executable, "-m", "hpa", "predict", str(tiny_dataset["images"]), "--model", str(out), "--model",
         str(out / "fold-0"), "--model-weights", "2", "1", "--masks", str(tiny_dataset["masks"]),
         "--out", str(tmp_path / "pred"), "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "pred" / "submission.csv")) == 18


def test_the_defaults_train_every_fold_of_a_small_set(tiny_dataset, tmp_path, caplog):
    """Fewer than ``SMALL_SET`` labelled images with masks and no recipe flags: every fold, no
    companion. Label rows of images without a mask do not count (they are left out)."""
    from hpa.cli import main as cli_main
    from hpa.pipelines.train_command import SMALL_SET

    table = pd.read_csv(tiny_dataset["labels"])
    extra = pd.DataFrame({"Id": [f"unsegmented-{k}" for k in range(SMALL_SET)], "Target": "0"})
    labels = tmp_path / "labels.csv"
    pd.concat([table, extra]).to_csv(labels, index=False)
    out = tmp_path / "model"
    argv = [
        "train-cells", "--images", str(tiny_dataset["images"]), "--labels", str(labels),
        "--masks", str(tiny_dataset["masks"]), "--out", str(out), "--cache", str(tmp_path / "cache"),
        "--epochs", "1", "--device", "cpu", "--workers", "1",
    ]  # fmt: skip
    assert len(read_labels(tiny_dataset["labels"])) < SMALL_SET <= len(read_labels(labels))
    with caplog.at_level(logging.INFO, logger="hpa.pipelines.train_command"):
        assert cli_main(argv) == 0
    assert "every fold of 5 is trained" in caplog.text and "companion: none" in caplog.text
    assert sorted(p.name for p in out.glob("fold-*")) == [f"fold-{k}" for k in range(5)]
    assert not (out / "scratch").exists() and (out / "oof_image_scores.csv").is_file()
    config = json.loads((out / "fold-0" / "config.json").read_text())
    assert config["backbone"] == "tf_efficientnet_lite0"  # the device defaults' recipe, not a smaller one
