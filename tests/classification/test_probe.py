"""Frozen-backbone training (features computed once), per-view intensity scaling, input resizing."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.classification.cache import image_views
from hpa.classification.crops import CropSettings
from hpa.classification.model import ModelConfig, load_model, normalise, unit_views
from hpa.classification.probe import _with_head
from hpa.classification.train import FREEZE_ALL, TrainConfig
from hpa.constants import CLASS_NAMES_2018
from hpa.errors import HPAConfigError
from hpa.io import read_labels
from hpa.pipelines.train import train_model


def _train(tiny_dataset, out, cfg, tmp_path):
    labels = read_labels(tiny_dataset["labels"])
    return train_model(
        tiny_dataset["images"],
        labels,
        tiny_dataset["masks"],
        out,
        cfg,
        cache_root=tmp_path / "cache",
        progress=False,
    )


def test_view_intensity_removes_the_exposure_and_keeps_the_pattern():
    rng = np.random.default_rng(0)
    pattern = rng.random((2, 4, 16, 16)).astype(np.float32)
    dim, bright = torch.from_numpy(pattern * 20), torch.from_numpy(pattern * 200)
    a, b = unit_views(dim, 255.0, "view"), unit_views(bright, 255.0, "view")
    # same pattern at a tenth of the exposure: the same input, up to the one-level offset
    assert torch.allclose(a, b, atol=0.06)
    assert not torch.allclose(unit_views(dim, 255.0), unit_views(bright, 255.0), atol=0.06)
    assert float(b.amax()) == 1.0 and float(a.amin()) >= 0.0  # the bright end saturates
    with pytest.raises(ValueError, match="intensity"):
        unit_views(dim, 255.0, "cell")


def test_image_intensity_removes_the_exposure_and_keeps_dark_cells_dark():
    """Scaled by its image, a cell without the protein stays dark beside one with it."""
    rng = np.random.default_rng(0)
    pattern = rng.random((64, 64)).astype(np.float32)
    image = np.zeros((64, 128, 4), np.float32)
    image[:, :64, 1] = pattern  # a cell with the protein, beside one without it
    image[:, 64:, 1] = 0.02 * pattern
    image[..., 2] = 0.5
    cells = np.zeros((64, 128), np.int32)
    cells[8:56, 8:56], cells[8:56, 72:120] = 1, 2
    settings = CropSettings(crop_size=32, tile_grids=(1,), image_scale=True)
    views = [image_views((image * gain).astype(np.uint8), cells, "x", settings) for gain in (20.0, 200.0)]
    dim, bright = (torch.from_numpy(v.crops).permute(0, 3, 1, 2).float() for v in views)
    a, b = unit_views(dim, 255.0, "image"), unit_views(bright, 255.0, "image")
    assert torch.allclose(a, b, atol=0.1)  # a tenth of the exposure, nearly the same input
    green = a[:, 1].flatten(1).amax(1)
    assert green[0] > 0.6 and green[1] < 0.1  # the empty cell is not stretched to full range
    # per view, the empty cell's faint noise is stretched like the other's pattern
    raw = image_views((image * 200.0).astype(np.uint8), cells, "x", replace(settings, image_scale=False))
    assert (
        unit_views(torch.from_numpy(raw.crops).permute(0, 3, 1, 2).float(), 255.0, "view")[1, 1].amax() > 0.5
    )


def test_normalise_resizes_to_the_network_input():
    views = torch.randint(0, 255, (3, 32, 32, 4), dtype=torch.uint8)
    x = normalise(views, torch.zeros(4), torch.ones(4), 255.0, size=48)
    assert x.shape == (3, 4, 48, 48)
    assert normalise(views, torch.zeros(4), torch.ones(4), 255.0).shape == (3, 4, 32, 32)


def test_folded_head_equals_the_head_on_standardised_features():
    torch.manual_seed(0)
    feats = torch.randn(50, 7) * 3 + 2
    mu, sd = feats.mean(0).numpy(), (feats.std(0, unbiased=False) + 1e-6).numpy()
    w, b = torch.randn(3, 7), torch.randn(3)
    net = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(7, 3))
    net.get_classifier = lambda: net[1]  # type: ignore[method-assign]
    _with_head(net, net[1], w, b, mu, sd)
    expected = ((feats - torch.from_numpy(mu)) / torch.from_numpy(sd)) @ w.T + b
    torch.testing.assert_close(net(feats), expected, rtol=1e-5, atol=1e-4)


def test_model_config_checks_the_new_fields():
    base = dict(backbone="resnet18", class_names=CLASS_NAMES_2018, label_set="2018")
    assert ModelConfig(**base).network_size == 64  # folders written before these fields
    assert ModelConfig(**base, input_size=128).network_size == 128
    with pytest.raises(HPAConfigError, match="intensity"):
        ModelConfig(**base, intensity="cell")
    # image intensity is applied when the views are cut: the crop settings must say so
    with pytest.raises(HPAConfigError, match="image_scale"):
        ModelConfig(**base, intensity="image")
    with pytest.raises(HPAConfigError, match="image_scale"):
        ModelConfig(**base, crop=CropSettings(image_scale=True))
    assert ModelConfig(**base, intensity="image", crop=CropSettings(image_scale=True)).intensity == "image"
    with pytest.raises(HPAConfigError, match="input_size"):
        ModelConfig(**base, input_size=4)
    with pytest.raises(HPAConfigError, match="freeze_epochs"):
        TrainConfig(freeze_epochs=-3)


def _frozen_config(tmp_path, **overrides):
    """A frozen-backbone run of test_resnet from a saved random start."""
    import timm
    from safetensors.torch import save_file

    start = timm.create_model("test_resnet", num_classes=1000, in_chans=3)
    ckpt = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in start.state_dict().items()}, str(ckpt))
    settings = dict(
        backbone="test_resnet",
        pretrained=str(ckpt),
        freeze_epochs=FREEZE_ALL,
        crop_size=32,
        input_size=48,
        intensity="view",
        channels="g,b",
        epochs=30,
        batch_size=16,
        lr=1e-2,
        folds=3,
        fold=0,
        workers=1,
    )
    return TrainConfig(**{**settings, **overrides})


def test_frozen_run_scores_as_the_saved_model_does(tiny_dataset, tmp_path):
    """The head fitted on cached features, folded into the network, is the model saved and re-scored."""
    cfg = _frozen_config(tmp_path)
    out = tmp_path / "model"
    metrics = _train(tiny_dataset, out, cfg, tmp_path)
    history = pd.read_csv(out / "history.csv")
    best = history["val_macro_f1"].max()
    # the saved network (backbone + folded head), re-scored from scratch, gives the best epoch's F1
    assert metrics["val_macro_f1"] == pytest.approx(best, abs=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert (
        config["intensity"] == "view"
        and config["input_size"] == 48
        and config["channels"] == ["green", "blue"]
    )
    _, loaded = load_model(out)
    assert loaded.network_size == 48
    # another fold of the same split reuses the features: one file, read, not recomputed
    features = list((tmp_path / "cache").rglob("features/*.npy"))
    assert len(features) == 1
    written = features[0].stat().st_mtime_ns
    _train(tiny_dataset, tmp_path / "fold1", replace(cfg, fold=1), tmp_path)
    assert list((tmp_path / "cache").rglob("features/*.npy")) == features
    assert features[0].stat().st_mtime_ns == written
    # three drawn patterns in green, told apart by a linear head even on random features:
    # the mean F1 of the three classes present, against 0.5 for calling every class everywhere
    present = [r for r in json.loads((out / "metrics.json").read_text())["per_class"] if r["support"] > 0]
    assert len(present) == 3 and np.mean([r["f1"] for r in present]) >= 0.8


def test_frozen_run_needs_a_pretrained_start_to_take_the_fast_path(tiny_dataset, tmp_path):
    """Without pretrained weights FREEZE_ALL means no freezing: the network is fine-tuned."""
    cfg = replace(
        TrainConfig(backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1),
        freeze_epochs=FREEZE_ALL,
        max_steps=2,
    )
    out = tmp_path / "plain"
    _train(tiny_dataset, out, cfg, tmp_path)
    assert (out / "last.ckpt").is_file()  # written by the fine-tuning loop only


def test_the_embedding_engine_is_recorded_and_keeps_its_own_features(tiny_dataset, tmp_path):
    """onnxruntime embeds what torch embeds (its export cached in the crop cache), under its own
    features key; the choice is saved in train_config.yaml."""
    import yaml

    pytest.importorskip("onnxruntime")
    f1 = {}
    cfg = _frozen_config(tmp_path, epochs=3)  # one start for both
    for engine in ("torch", "onnxruntime"):
        out = tmp_path / engine
        f1[engine] = _train(tiny_dataset, out, replace(cfg, engine=engine), tmp_path)
        assert yaml.safe_load((out / "train_config.yaml").read_text())["engine"] == engine
    cache = tmp_path / "cache"
    torch_feats, onnx_feats = (
        np.load(p) for p in sorted(cache.rglob("features/*.npy"), key=lambda p: p.stat().st_mtime_ns)
    )
    assert len(list(cache.rglob("features/engine/*.onnx"))) == 1
    assert (
        float(np.abs(torch_feats.astype(np.float32) - onnx_feats.astype(np.float32)).max()) < 1e-2
    )  # float16 copies
    assert f1["torch"]["val_macro_f1"] == pytest.approx(f1["onnxruntime"]["val_macro_f1"], abs=0.05)
