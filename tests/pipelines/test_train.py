"""train-cells: a tiny backbone trained for real for a few steps on a drawn dataset."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from hpa.classification.train import TrainConfig
from hpa.classification.validation import split_images
from hpa.io import read_labels
from hpa.pipelines.train import train_model

TINY = TrainConfig(
    backbone="test_resnet",
    crop_size=32,
    epochs=2,
    batch_size=16,
    folds=3,
    fold=0,
    workers=1,
    lr=3e-3,
    warmup_epochs=0.2,
)


def test_split_is_stratified_and_disjoint():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 5)) < [0.5, 0.3, 0.2, 0.1, 0.1]).astype(np.uint8)
    seen = np.zeros(60, int)
    for fold in range(3):
        train, val = split_images(y, 3, fold, seed=1)
        assert not set(train) & set(val) and len(train) + len(val) == 60
        seen[val] += 1
        # every class with >= 3 positives has one on the validation side
        assert (y[val].sum(0) >= 1)[y.sum(0) >= 3].all()
    assert (seen == 1).all()
    with pytest.raises(ValueError, match="fold"):
        split_images(y, 3, 3, seed=1)


def test_train_writes_a_complete_model_folder(tiny_dataset, tmp_path):
    labels = read_labels(tiny_dataset["labels"])
    out = tmp_path / "model"
    metrics = train_model(
        tiny_dataset["images"],
        labels,
        tiny_dataset["masks"],
        out,
        TINY,
        cache_root=tmp_path / "cache",
        progress=False,
    )
    for name in (
        "config.json",
        "weights.safetensors",
        "thresholds.json",
        "metrics.json",
        "history.csv",
        "val_image_scores.csv",
        "val_cell_scores.parquet",
        "val_tile_scores.parquet",
        "train_config.yaml",
        "split.csv",
        "last.ckpt",
    ):
        assert (out / name).is_file(), name
    split = pd.read_csv(out / "split.csv")
    assert split["image_id"].is_unique and set(split["side"]) == {"train", "val"}
    val_ids = set(split.loc[split.side == "val", "image_id"])
    scores = pd.read_csv(out / "val_image_scores.csv")
    assert sorted(scores["image_id"]) == sorted(val_ids)  # every validation image exactly once
    cells = pd.read_parquet(out / "val_cell_scores.parquet")
    tiles = pd.read_parquet(out / "val_tile_scores.parquet")
    assert set(cells["image_id"]) == set(tiles["image_id"]) == val_ids
    # the tables of predict: cells with their boxes, tiles by number
    assert "kind" not in cells.columns and {"cell_id", "bbox_y0"} <= set(cells.columns)
    assert list(tiles.columns[:2]) == ["image_id", "tile"]
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and np.isfinite(history["loss"]).all()
    # the three drawn patterns are separable: validation scores rank them far above chance
    truth = pd.DataFrame(labels.y, index=list(labels.ids)).loc[scores["image_id"]]
    present = [c for c in (0, 21, 25) if truth[c].any()]
    ap = [average_precision_score(truth[c], scores.iloc[:, 1 + c]) for c in present]
    chance = [truth[c].mean() for c in present]
    assert np.mean(ap) >= np.mean(chance) + 0.3, (ap, chance)
    assert metrics["val_macro_f1"] > 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["in_chans"] == 4 and cfg["channels"] == ["red", "green", "blue", "yellow"]
    assert len(cfg["class_names"]) == 28 and len(cfg["mean"]) == 4
    thr = json.loads((out / "thresholds.json").read_text())
    assert len(thr["thresholds"]) == 28


def test_resume_continues_an_interrupted_run(tiny_dataset, tmp_path, monkeypatch):
    import hpa.classification.train as trainer

    labels = read_labels(tiny_dataset["labels"])
    args = (tiny_dataset["images"], labels, tiny_dataset["masks"])
    full = tmp_path / "full"
    train_model(*args, full, TINY, cache_root=tmp_path / "cache", progress=False)

    real_evaluate = trainer.evaluate_views
    calls = []

    def interrupt_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    part = tmp_path / "part"
    monkeypatch.setattr(trainer, "evaluate_views", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_model(*args, part, TINY, cache_root=tmp_path / "cache", progress=False)
    monkeypatch.setattr(trainer, "evaluate_views", real_evaluate)
    assert (part / "last.ckpt").is_file() and not (part / "history.csv").exists()
    train_model(*args, part, TINY, cache_root=tmp_path / "cache", resume=True, progress=False)
    h_full = pd.read_csv(full / "history.csv")
    h_part = pd.read_csv(part / "history.csv")
    assert h_part["epoch"].tolist() == [1, 2]
    # the resumed run repeats the uninterrupted one: same shuffles, schedule and weights
    assert np.allclose(h_full["loss"], h_part["loss"], rtol=1e-4)
    assert np.allclose(h_full["val_macro_f1"], h_part["val_macro_f1"])


def _train(tiny_dataset, labels, out, cfg, tmp_path):
    return train_model(
        tiny_dataset["images"],
        labels,
        tiny_dataset["masks"],
        out,
        cfg,
        cache_root=tmp_path / "cache",
        progress=False,
    )


def test_ema_weights_are_the_ones_validated_and_saved(tiny_dataset, tmp_path):
    import torch
    from safetensors.torch import load_file

    labels = read_labels(tiny_dataset["labels"])
    out = tmp_path / "ema"
    cfg = replace(TINY, ema=0.9)
    _train(tiny_dataset, labels, out, cfg, tmp_path)
    state = torch.load(out / "last.ckpt", weights_only=True)
    saved = load_file(str(out / "weights.safetensors"))
    raw, ema = state["model"], state["ema"]
    weights = [k for k in raw if raw[k].is_floating_point() and "running" not in k]
    assert any(not torch.equal(raw[k], ema[k]) for k in weights)  # the average is not the raw model
    assert all(torch.equal(saved[k], state["best_model"][k]) for k in saved)
    history = pd.read_csv(out / "history.csv")
    if history["val_macro_f1"].idxmax() == len(history) - 1:  # best = last epoch: saved = EMA
        assert all(torch.equal(saved[k], ema[k]) for k in saved)
    with pytest.raises(ValueError, match="ema must be a decay"):
        _train(tiny_dataset, labels, tmp_path / "bad", replace(TINY, ema=1.0), tmp_path)


def _train_cells_args(tiny_dataset, out, cache):
    """train-cells arguments shared by the command-line tests: tiny backbone, fold 0 of 3, one worker, CPU."""
    return [
        "train-cells",
        "--images", str(tiny_dataset["images"]),
        "--labels", str(tiny_dataset["labels"]),
        "--masks", str(tiny_dataset["masks"]),
        "--out", str(out),
        "--cache", str(cache),
        "--backbone", "test_resnet",
        "--crop-size", "32",
        "--folds", "3",
        "--fold", "0",
        "--device", "cpu",
        "--workers", "1",
    ]  # fmt: skip


def test_cli_train_cells_smoke(tiny_dataset, tmp_path):
    out = tmp_path / "cli-model"
    cmd = [sys.executable, "-m", "hpa", *_train_cells_args(tiny_dataset, out, tmp_path / "cache")]
    cmd += [
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-steps",
        "2",
        "--loss",
        "focal+softf1",
        "--precision",
        "fp32",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "validation macro F1" in res.stdout
    assert "backbone: test_resnet" in res.stderr  # every choice is logged
    assert "precision: fp32" in res.stderr
    assert (out / "weights.safetensors").is_file()


def test_two_rank_gloo_ddp_run(tiny_dataset, tmp_path):
    """torchrun with 2 CPU ranks: one model folder, every validation image scored once."""
    out = tmp_path / "ddp-model"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    cmd += ["-m", "hpa", *_train_cells_args(tiny_dataset, out, tmp_path / "cache")]
    cmd += ["--epochs", "2", "--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("model written to") == 1  # rank 0 alone reports
    assert "2 ranks, backend gloo" in res.stderr
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the crop cache was built once
    split = pd.read_csv(out / "split.csv")
    val_ids = sorted(split.loc[split.side == "val", "image_id"])
    scores = pd.read_csv(out / "val_image_scores.csv")
    assert sorted(scores["image_id"]) == val_ids
    cells = pd.read_parquet(out / "val_cell_scores.parquet")
    tiles = pd.read_parquet(out / "val_tile_scores.parquet")
    # every validation view exactly once, although each rank scored only half of them
    assert (
        not cells.duplicated(["image_id", "cell_id"]).any()
        and not tiles.duplicated(["image_id", "tile"]).any()
    )
    assert sorted(cells["image_id"].unique()) == val_ids
    assert len(cells) == len(val_ids) * 4 and len(tiles) == len(val_ids) * 5
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert not any(p.name.startswith(".hpa-tmp") for p in out.iterdir())  # no temporary leftovers


def test_automatic_epochs_follow_the_data_size(tiny_dataset, tmp_path):
    from hpa.classification.train import auto_epochs

    assert auto_epochs(8_000) == 12 and auto_epochs(32_000) == 4 and auto_epochs(10**7) == 3
    labels = read_labels(tiny_dataset["labels"])
    out = tmp_path / "auto"
    cfg = replace(TINY, epochs=None, max_steps=2)
    _train(tiny_dataset, labels, out, cfg, tmp_path)
    saved = (out / "train_config.yaml").read_text()
    assert "epochs: 12" in saved  # a tiny set gets the most epochs, and the file says how many


def test_freeze_all_trains_the_head_alone(tiny_dataset, tmp_path):
    """freeze_epochs -2 with a pretrained start: backbone weights and BatchNorm statistics stay as loaded."""
    import timm
    import torch
    from safetensors.torch import load_file, save_file
    from timm.models import adapt_input_conv

    from hpa.classification.train import FREEZE_ALL

    start = timm.create_model("test_resnet", num_classes=1000, in_chans=3)
    ckpt = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(ckpt))
    out = tmp_path / "frozen"
    cfg = replace(TINY, pretrained=str(ckpt), freeze_epochs=FREEZE_ALL, ema=0.0)
    _train(tiny_dataset, read_labels(tiny_dataset["labels"]), out, cfg, tmp_path)
    saved = load_file(str(out / "weights.safetensors"))
    loaded = start.state_dict()
    head = {k for k in saved if k.startswith(start.default_cfg["classifier"])}
    body = [k for k in saved if k not in head and "num_batches_tracked" not in k and k != "conv1.0.weight"]
    assert body and all(torch.equal(saved[k], loaded[k]) for k in body)  # includes running_mean/var
    torch.testing.assert_close(saved["conv1.0.weight"], adapt_input_conv(4, loaded["conv1.0.weight"]))
    assert all(saved[k].shape[0] == 28 for k in head if saved[k].ndim)  # a new 28-class head was trained
