"""Issue 12, part B: no silently wrong answer (items 5, 6, 7, 8, 12 and 16).

Each test failed on the code before the fix: a mixed 8/16-bit folder scored 8-bit
images by 65535, a crash left new weights beside old thresholds, a header-less Id list
lost its first Id, a tampered model folder was trusted, a failed image shifted the
fold split, and badly named channel files were found late or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.aggregation import load_thresholds, save_thresholds
from hpa.classification.model import ModelConfig, create_model, load_model_config, save_model_folder
from hpa.classification.train import TrainConfig
from hpa.classification.validation import split_images
from hpa.constants import CHANNELS, LABEL_SETS
from hpa.errors import HPAConfigError, HPADataError
from hpa.io import Labels, list_image_ids, read_id_list, read_labels, read_sample, write_labels, write_png
from hpa.pipelines.predict import predict_folder
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
    ema=0.0,
)


def _random_model(folder: Path, **overrides: object) -> Path:
    """A real (randomly initialised) test_resnet model folder with mid-range thresholds."""
    torch.manual_seed(0)
    cfg = ModelConfig("test_resnet", LABEL_SETS["2018"], "2018", **overrides)  # type: ignore[arg-type]
    model = create_model(cfg.backbone, cfg.num_classes, cfg.in_chans)
    save_model_folder(folder, cfg, model)
    save_thresholds(folder / "thresholds.json", np.full(cfg.num_classes, 0.5), cfg.class_names)
    return folder


def _copy_sample(src: Path, dst: Path, image_id: str, new_id: str, bits: int = 8, swap: bool = False) -> None:
    image = read_sample(src, image_id)
    if bits == 16:
        image = image.astype(np.uint16) * 257  # the same picture on the 16-bit scale
    for c, name in enumerate(CHANNELS):
        k = {"red": 1, "green": 0}.get(name, c) if swap else c
        write_png(dst / f"{new_id}_{name}.png", image[..., k])


def _predict_scores(images: Path, model: Path, masks: Path, out: Path) -> pd.DataFrame:
    predict_folder(images, model, out, masks=masks, workers=1, device="cpu", progress=False, precision="fp32")
    return pd.read_csv(out / "image_scores.csv").set_index("image_id")


# ------------------------------------------------------------- item 5: bit depths ---


def test_mixed_8_and_16_bit_folder_scores_each_image_as_alone(tiny_dataset, tmp_path):
    model = _random_model(tmp_path / "model")
    mixed, masks = tmp_path / "mixed", tmp_path / "seg"
    (masks / "cells").mkdir(parents=True)
    plan = {"a8": ("img000", 8), "b16": ("img001", 16), "c16": ("img000", 16)}
    for new_id, (src_id, bits) in plan.items():
        _copy_sample(tiny_dataset["images"], mixed, src_id, new_id, bits)
        shutil.copy(tiny_dataset["masks"] / "cells" / f"{src_id}.png", masks / "cells" / f"{new_id}.png")
    together = _predict_scores(mixed, model, masks, tmp_path / "pred-mixed")
    for new_id in plan:
        alone_dir = tmp_path / f"alone-{new_id}"
        for path in mixed.glob(f"{new_id}_*.png"):
            alone_dir.mkdir(exist_ok=True)
            shutil.copy(path, alone_dir / path.name)
        alone = _predict_scores(alone_dir, model, masks, tmp_path / f"pred-{new_id}")
        np.testing.assert_allclose(together.loc[new_id], alone.loc[new_id], atol=1e-5)
    # and the 16-bit copy of an 8-bit image gets that image's scores, up to the rounding
    # of resizing at the two bit depths (an 8-bit image scaled by 65535 is far off)
    np.testing.assert_allclose(together.loc["a8"], together.loc["c16"], atol=2e-3)


# ---------------------------------------------- item 5 (and 8): channel order honoured ---


def test_model_channel_order_is_honoured(tiny_dataset, tmp_path):
    plain = _random_model(tmp_path / "plain")
    swapped = _random_model(tmp_path / "swapped", channels=("green", "red", "blue", "yellow"))
    images, swapped_images = tmp_path / "images", tmp_path / "images-swapped"
    for image_id in ("img000", "img003"):
        _copy_sample(tiny_dataset["images"], images, image_id, image_id)
        _copy_sample(tiny_dataset["images"], swapped_images, image_id, image_id, swap=True)
    masks = tiny_dataset["masks"]
    reference = _predict_scores(images, plain, masks, tmp_path / "p1")
    # red and green files swapped, read by a model whose config says green comes first:
    # the network sees what the plain model sees
    honoured = _predict_scores(swapped_images, swapped, masks, tmp_path / "p2")
    np.testing.assert_allclose(reference.to_numpy(), honoured.to_numpy(), atol=1e-6)


# ------------------------------------------------- item 6: model folder as a whole ---


def _model_files(folder: Path) -> dict[str, bytes]:
    names = ("config.json", "weights.safetensors", "thresholds.json", "metrics.json", "split.csv")
    return {n: (folder / n).read_bytes() for n in names}


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A finished tiny model folder (and the crop cache it used)."""
    root = tmp_path_factory.mktemp("trained")
    labels = read_labels(tiny_dataset["labels"])
    args = (tiny_dataset["images"], labels, tiny_dataset["masks"])
    train_model(*args, root / "model", TINY, cache_root=root / "cache", progress=False)
    return root


def _interrupt_in_epoch_2(monkeypatch):
    import hpa.classification.train as trainer

    real_evaluate = trainer.evaluate_views
    calls = []

    def evaluate(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(trainer, "evaluate_views", evaluate)


def test_crash_while_retraining_leaves_the_previous_model_intact(
    tiny_dataset, trained, tmp_path, monkeypatch
):
    out = tmp_path / "model"
    shutil.copytree(trained / "model", out)
    (out / "notes.txt").write_text("mine")
    before = _model_files(out)
    labels = read_labels(tiny_dataset["labels"])
    _interrupt_in_epoch_2(monkeypatch)  # epoch 1 was the best so far: weights were written
    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_dataset["images"], labels, tiny_dataset["masks"], out, replace(TINY, seed=1),
                    cache_root=trained / "cache", progress=False)  # fmt: skip
    assert _model_files(out) == before  # no new weights beside the old thresholds
    assert (out / "last.ckpt").is_file()  # where --resume finds it
    monkeypatch.undo()
    train_model(tiny_dataset["images"], labels, tiny_dataset["masks"], out, replace(TINY, seed=1),
                cache_root=trained / "cache", resume=True, progress=False)  # fmt: skip
    after = _model_files(out)
    assert after["weights.safetensors"] != before["weights.safetensors"]
    assert (out / "notes.txt").read_text() == "mine"  # the user's file survives the swap
    assert not any(p.name.startswith(".model.hpa-") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"crop_size": 40}, "crop_size 32 -> 40"),
        ({"epochs": 3}, "epochs 2 -> 3"),
        ({"backbone": "resnet10t"}, "backbone 'test_resnet' -> 'resnet10t'"),
        ({}, "the labels"),
    ],
)
def test_resume_refuses_changed_settings(tiny_dataset, trained, tmp_path, monkeypatch, change, named):
    out = tmp_path / "model"
    labels = read_labels(tiny_dataset["labels"])
    _interrupt_in_epoch_2(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_dataset["images"], labels, tiny_dataset["masks"], out, TINY,
                    cache_root=trained / "cache", progress=False)  # fmt: skip
    monkeypatch.undo()
    if not change:  # one label flipped: the same file name, other content
        y = labels.y.copy()
        y[0, 5] = 1
        labels = Labels(labels.ids, y, labels.label_set)
    with pytest.raises(HPAConfigError, match="--resume") as info:
        train_model(tiny_dataset["images"], labels, tiny_dataset["masks"], out, replace(TINY, **change),
                    cache_root=trained / "cache", resume=True, progress=False)  # fmt: skip
    assert named in str(info.value) and str(out / "last.ckpt") in str(info.value)


def test_swap_in_and_recovery_from_a_kill_during_the_swap(tmp_path):
    from hpa.outputs import prepare_staging, staging_dir
    from hpa.outputs import swap_in_keeping as swap_in

    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.safetensors").write_text("old")
    (target / "last.ckpt").write_text("ckpt")
    staging = prepare_staging(target)
    assert staging == staging_dir(target) and staging.is_dir() and not any(staging.iterdir())
    (staging / "weights.safetensors").write_text("new")
    swap_in(staging, target)
    assert (target / "weights.safetensors").read_text() == "new"
    assert (target / "last.ckpt").read_text() == "ckpt"  # carried over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # a kill between the two renames of a swap: the old folder is put back
    staging = prepare_staging(target)
    (staging / "last.ckpt").write_text("moved")
    (target / "last.ckpt").unlink()
    os.replace(target, tmp_path / ".model.hpa-old")
    staging = prepare_staging(target, rescue=("last.ckpt",))
    assert (target / "weights.safetensors").read_text() == "new"
    assert (target / "last.ckpt").read_text() == "moved"  # rescued for --resume
    assert not any(staging.iterdir())


# ------------------------------------- item 12: a failed image does not shift the split ---


def test_unreadable_training_image_does_not_shift_the_split(tiny_dataset, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_dataset["images"], images)
    broken = "img004"
    data = (images / f"{broken}_green.png").read_bytes()
    (images / f"{broken}_green.png").write_bytes(data[: len(data) // 2])  # truncated
    labels = read_labels(tiny_dataset["labels"])
    out = tmp_path / "model"
    train_model(images, labels, tiny_dataset["masks"], out, replace(TINY, epochs=1),
                cache_root=tmp_path / "cache", progress=False)  # fmt: skip
    split = pd.read_csv(out / "split.csv")
    assert broken not in set(split["image_id"])
    usable = labels.subset([i for i in labels.ids if i != broken])
    train, val = split_images(usable.y, TINY.folds, TINY.fold, TINY.seed)
    expected = {usable.ids[k]: "train" for k in train} | {usable.ids[k]: "val" for k in val}
    assert dict(zip(split["image_id"], split["side"], strict=True)) == expected
    scored = pd.read_csv(out / "val_image_scores.csv")
    assert sorted(scored["image_id"]) == sorted(i for i, s in expected.items() if s == "val")


# ----------------------------------------------- item 7: Id lists, label sets, digits ---


def test_id_list_without_header_is_refused(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("img000\nimg001\nimg002\n")
    with pytest.raises(HPADataError, match="line 1: expected a header") as info:
        read_id_list(path)
    assert str(path) in str(info.value) and "'img000'" in str(info.value)
    path.write_text("image_id\nimg000\nimg001\n")
    assert read_id_list(path) == ["img000", "img001"]


@pytest.mark.parametrize("token", ["1_2", "\u0661\u0662", "+3", "\uff11"])
def test_class_numbers_are_ascii_digits_only(tmp_path, token):
    from hpa.aggregation import read_submission

    labels = tmp_path / "train.csv"
    labels.write_text(f"Id,Target\na,0\nb,{token}\n", encoding="utf-8")
    with pytest.raises(HPADataError, match=f"{labels}, line 3: .* is not a class number"):
        read_labels(labels)
    sub = tmp_path / "submission.csv"
    sub.write_text(f"Id,Predicted\na,0 {token}\n", encoding="utf-8")
    with pytest.raises(HPADataError, match=f"{sub}, line 2: .* is not a class number"):
        read_submission(sub, "2018")


def test_evaluate_refuses_a_submission_of_the_other_label_set(tmp_path):
    from hpa.pipelines.evaluate import evaluate

    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "submission.csv").write_text("Id,Predicted\na,0 3\nb,18\n")
    save_thresholds(pred / "thresholds.json", np.full(19, 0.5), LABEL_SETS["2021"])
    labels = tmp_path / "labels.csv"
    write_labels(labels, Labels(("a", "b"), np.eye(2, 28, dtype=np.uint8), "2018"))
    with pytest.raises(HPAConfigError, match="predicted with the 2021 classes") as info:
        evaluate(pred / "submission.csv", labels)
    assert str(labels) in str(info.value)
    labels21 = tmp_path / "labels21.csv"
    write_labels(labels21, Labels(("a", "b"), np.eye(2, 19, dtype=np.uint8), "2021"))
    # a: 0 and 3 predicted, 0 true; b: 18 predicted, 1 true -> only class 0 scores (F1 1 of 19)
    assert evaluate(pred / "submission.csv", labels21)["macro_f1"] == pytest.approx(1 / 19, abs=1e-12)


# ------------------------------------------------- item 8: model folders are checked ---


def _tamper(folder: Path, name: str, edit) -> Path:
    data = json.loads((folder / name).read_text())
    edit(data)
    (folder / name).write_text(json.dumps(data))
    return folder / name


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(use_cells=False, use_tiles=False), "use_cells"),
        (lambda d: d.update(mean=[0.1]), "mean"),
        (lambda d: d.update(std=[0.1, 0.1, 0.0, 0.1]), "std"),
        (lambda d: d.update(channels=["red", "green", "blue", "alpha"]), "channels"),
        (lambda d: d.update(label_set="2019"), "label_set"),
        (lambda d: d.update(class_names=d["class_names"][:19]), "class_names"),
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d.update(tile_weight=1.5), "tile_weight"),
        (lambda d: d.update(use_tiles="no"), "use_tiles"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d.pop("backbone"), "backbone"),
        (lambda d: d["crop"].update(crop_size=0), "crop.crop_size"),
    ],
)
def test_tampered_config_json_is_refused(tmp_path, edit, field):
    folder = _random_model(tmp_path / "model")
    path = _tamper(folder, "config.json", edit)
    with pytest.raises(HPAConfigError, match=field) as info:
        load_model_config(folder)
    assert str(path) in str(info.value)


def test_config_json_has_a_format_version(tmp_path):
    folder = _random_model(tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["thresholds"].__setitem__(3, 1.5), "must lie in \\[0, 1\\]; class 3"),
        (lambda d: d["thresholds"].__setitem__(0, -0.2), "must lie in \\[0, 1\\]; class 0"),
        (lambda d: d.update(method=3), "'method'"),
        (lambda d: d.update(thresholds=d["thresholds"][:1]), "1 thresholds for 28 class names"),
    ],
)
def test_tampered_thresholds_json_is_refused(tmp_path, edit, message):
    folder = _random_model(tmp_path / "model")
    path = _tamper(folder, "thresholds.json", edit)
    with pytest.raises(HPAConfigError, match=message) as info:
        load_thresholds(path)
    assert str(path) in str(info.value)


def test_prediction_folder_reader_uses_the_checked_thresholds(tmp_path):
    from hpa.visualization.preddir import load_prediction_run

    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "submission.csv").write_text("Id,Predicted\na,0\n")
    pd.DataFrame({"image_id": ["a"], "cell_id": [1], "A": [0.5]}).to_parquet(
        pred / "cell_predictions.parquet"
    )
    (pred / "thresholds.json").write_text(json.dumps({"class_names": ["A"], "thresholds": [7.0]}))
    with pytest.raises(HPAConfigError, match="must lie in"):
        load_prediction_run(pred)


# --------------------------------------------------- item 16: a folder's file names ---


def test_predict_checks_the_folder_ids_before_any_work(tiny_dataset, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_dataset["images"], images)
    for name in CHANNELS:
        shutil.copy(images / f"img000_{name}.png", images / f"bad id_{name}.png")
    out = tmp_path / "pred"
    with pytest.raises(HPADataError, match="bad id_") as info:
        predict_folder(images, _random_model(tmp_path / "model"), out, masks=tiny_dataset["masks"], workers=1,
                       device="cpu", progress=False)  # fmt: skip
    assert "invalid image Id 'bad id'" in str(info.value)
    assert not out.exists()  # refused before writing or scoring anything


def test_upper_case_channel_names_are_read(tiny_dataset, tmp_path):
    for name in CHANNELS:
        shutil.copy(tiny_dataset["images"] / f"img000_{name}.png", tmp_path / f"IMG_{name.upper()}.PNG")
    assert list_image_ids(tmp_path) == ["IMG"]
    np.testing.assert_array_equal(read_sample(tmp_path, "IMG"), read_sample(tiny_dataset["images"], "img000"))


def test_jpeg_named_png_is_reported_as_such(tiny_dataset, tmp_path):
    import cv2

    for name in CHANNELS:
        shutil.copy(tiny_dataset["images"] / f"img000_{name}.png", tmp_path / f"x_{name}.png")
    _, jpeg = cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))
    (tmp_path / "x_green.png").write_bytes(jpeg.tobytes())
    with pytest.raises(HPADataError, match=r"a JPEG file named \.png; rename it to \.jpg") as info:
        read_sample(tmp_path, "x")
    assert str(tmp_path / "x_green.png") in str(info.value)


def test_id_with_png_and_tif_channel_files_is_ambiguous(tiny_dataset, tmp_path):
    import tifffile

    from hpa.io import read_grey

    for name in CHANNELS:
        shutil.copy(tiny_dataset["images"] / f"img000_{name}.png", tmp_path / f"x_{name}.png")
    tifffile.imwrite(tmp_path / "x_blue.tif", read_grey(tmp_path / "x_blue.png"))
    with pytest.raises(HPADataError, match="ambiguous") as info:
        read_sample(tmp_path, "x")
    assert "x_blue.png" in str(info.value) and "x_blue.tif" in str(info.value)
    with pytest.raises(HPADataError, match=r"x_blue\.png, x_blue\.tif"):
        predict_folder(tmp_path, _random_model(tmp_path.parent / "m16"), tmp_path.parent / "p16",
                       masks=tmp_path, workers=1, device="cpu", progress=False)  # fmt: skip
