"""The inference engines: onnxruntime and openvino compute torch's function, the export is cached by digest."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import numpy as np
import pytest
import torch

from hpa.classification import inference
from hpa.classification.cache import image_views
from hpa.classification.crops import CropSettings
from hpa.classification.engine import (
    OnnxEngine,
    OpenVinoEngine,
    make_engine,
    network_digest,
    resolve_engine,
    training_engine,
)
from hpa.classification.inference import score_views
from hpa.classification.model import create_model
from hpa.classification.probe import PooledFeatures
from hpa.errors import HPAConfigError
from hpa.io import list_image_ids, read_grey, read_sample

pytest.importorskip("onnxruntime")

MEAN, STD = (0.08, 0.06, 0.05, 0.08), (0.1, 0.08, 0.09, 0.1)


@pytest.fixture(scope="module")
def real_views(repo_data):
    """Cell crops and tiles of the first shipped sample, cut with its reference mask (uint8)."""
    folder = repo_data / "hpa-samples"
    image_id = list_image_ids(folder / "images")[0]
    image = read_sample(folder / "images", image_id)
    cells = read_grey(folder / "reference-masks" / f"{image_id}_cellmask.png").astype(np.int32)
    views = image_views(image, cells, image_id, CropSettings(crop_size=64))
    stacked = np.concatenate([views.crops[:5], views.tiles[:1]])
    assert stacked.dtype == np.uint8 and len(stacked) == 6
    return stacked


@pytest.fixture()
def tiny_net():
    torch.manual_seed(0)
    return create_model("test_resnet", 5, 4).eval()


def _score(net, views, size=None):
    return score_views(net, views, MEAN, STD, 255.0, precision="fp32", size=size, batch_size=4)


@pytest.mark.slow
def test_onnxruntime_matches_torch_on_a_real_sample_with_the_imagenet_backbone(real_views, tmp_path):
    """The default backbone, ImageNet weights, 224 px views of a real sample: probabilities
    within 1e-4 of torch's fp32, and the frozen probe's features too."""
    model = create_model("tf_efficientnet_lite0", 19, 4, pretrained="imagenet").eval()
    expected = _score(model, real_views, size=224)
    got = _score(make_engine(model, "onnxruntime", cache_dir=tmp_path / "cache"), real_views, size=224)
    assert got.shape == expected.shape == (6, 19)
    assert float(np.abs(got - expected).max()) < 1e-4
    pooled = PooledFeatures(model).eval()
    x = torch.from_numpy(real_views[:2]).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=224, mode="bilinear")
    with torch.no_grad():
        features = pooled(x)
    engine = make_engine(pooled, "onnxruntime", cache_dir=tmp_path / "features", skip=pooled.unused())
    assert float((engine(x) - features).abs().max()) < 1e-4


@pytest.mark.slow
def test_openvino_matches_torch_on_a_real_sample_with_the_imagenet_backbone(real_views, tmp_path):
    """The default backbone, ImageNet weights, 224 px views of a real sample: OpenVINO's
    probabilities within 1e-4 of torch's fp32, from the export onnxruntime shares."""
    pytest.importorskip("openvino")
    model = create_model("tf_efficientnet_lite0", 19, 4, pretrained="imagenet").eval()
    expected = _score(model, real_views, size=224)
    engine = make_engine(model, "openvino", cache_dir=tmp_path)
    got = _score(engine, real_views, size=224)
    assert isinstance(engine, OpenVinoEngine) and engine.name == "openvino"
    assert got.shape == expected.shape == (6, 19)
    assert float(np.abs(got - expected).max()) < 1e-4
    (graph,) = tmp_path.glob("*.onnx")  # one export, the file onnxruntime reads too
    stamp = graph.stat().st_mtime_ns
    again = _score(make_engine(model, "onnxruntime", cache_dir=tmp_path), real_views, size=224)
    assert graph.stat().st_mtime_ns == stamp and float(np.abs(again - expected).max()) < 1e-4


def test_openvino_matches_torch_on_real_views_and_with_tta(real_views, tiny_net, tmp_path):
    pytest.importorskip("openvino")
    engine = make_engine(tiny_net, "openvino", cache_dir=tmp_path, threads=1)
    for tta in (1, 8):
        expected = score_views(tiny_net, real_views, MEAN, STD, 255.0, precision="fp32", tta=tta)
        got = score_views(engine, real_views, MEAN, STD, 255.0, precision="fp32", tta=tta)
        assert float(np.abs(got - expected).max()) < 1e-4


def test_onnxruntime_matches_torch_on_real_views_and_with_tta(real_views, tiny_net, tmp_path):
    engine = make_engine(tiny_net, "onnxruntime", cache_dir=tmp_path)
    for tta in (1, 8):
        expected = score_views(tiny_net, real_views, MEAN, STD, 255.0, precision="fp32", tta=tta)
        got = score_views(engine, real_views, MEAN, STD, 255.0, precision="fp32", tta=tta)
        assert float(np.abs(got - expected).max()) < 1e-4
    assert make_engine(tiny_net, "torch").name == "torch"


@pytest.mark.parametrize("engine_name", ["onnxruntime", "openvino"])
def test_an_export_made_under_bf16_autocast_is_fp32(real_views, tiny_net, tmp_path, engine_name):
    """bf16 training embeds with an ONNX engine inside its autocast: the graph is still fp32
    (a traced bf16 graph mixed types, which OpenVINO refused)."""
    pytest.importorskip(engine_name)
    engine = make_engine(tiny_net, engine_name, cache_dir=tmp_path, threads=1)
    expected = score_views(tiny_net, real_views, MEAN, STD, 255.0, precision="fp32")
    got = score_views(engine, real_views, MEAN, STD, 255.0, precision="bf16")  # the export happens here
    assert float(np.abs(got - expected).max()) < 1e-4


def test_the_export_is_reused_when_the_digest_matches_and_rebuilt_when_the_weights_change(
    real_views, tiny_net, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="hpa.classification.engine")
    first = _score(make_engine(tiny_net, "onnxruntime", cache_dir=tmp_path), real_views)
    (graph,) = tmp_path.glob("*.onnx")
    stamp = graph.stat().st_mtime_ns
    caplog.clear()
    again = _score(make_engine(tiny_net, "onnxruntime", cache_dir=tmp_path), real_views)
    assert "exporting" not in caplog.text and "digest matches" in caplog.text
    assert graph.stat().st_mtime_ns == stamp and np.array_equal(first, again)

    with torch.no_grad():
        tiny_net.get_classifier().bias.add_(0.5)  # other weights: another digest, another export
    retrained = _score(make_engine(tiny_net, "onnxruntime", cache_dir=tmp_path), real_views)
    (rebuilt,) = tmp_path.glob("*.onnx")  # the stale export is gone
    assert rebuilt != graph
    assert float(np.abs(retrained - _score(tiny_net, real_views)).max()) < 1e-4
    assert float(np.abs(retrained - first).max()) > 1e-3


@pytest.mark.parametrize("damage", ["corrupted", "partial", "no record", "other record"])
def test_a_damaged_export_is_rebuilt_not_trusted(real_views, tiny_net, tmp_path, caplog, damage):
    expected = _score(tiny_net, real_views)
    _score(make_engine(tiny_net, "onnxruntime", cache_dir=tmp_path), real_views)
    (graph,) = tmp_path.glob("*.onnx")
    sidecar = graph.with_suffix(".json")
    data = bytearray(graph.read_bytes())
    if damage == "corrupted":  # a flipped byte deep in the weights: still a loadable graph
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    elif damage == "partial":
        graph.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "no record":
        sidecar.unlink()
    else:
        sidecar.write_text(sidecar.read_text().replace('"digest": "', '"digest": "0'))
    caplog.set_level(logging.INFO, logger="hpa.classification.engine")
    got = _score(make_engine(tiny_net, "onnxruntime", cache_dir=tmp_path), real_views)
    assert "exporting the network" in caplog.text
    assert float(np.abs(got - expected).max()) < 1e-4
    assert sidecar.is_file() and len(list(tmp_path.glob("*.onnx"))) == 1


def test_the_digest_covers_weights_settings_and_input_shape(tiny_net):
    base = network_digest(tiny_net, (4, 32, 32))
    assert network_digest(tiny_net, (4, 32, 32)) == base
    assert network_digest(tiny_net, (4, 64, 64)) != base
    pooled = PooledFeatures(tiny_net)
    skip = pooled.unused()
    before = network_digest(pooled, (4, 32, 32), skip)
    with torch.no_grad():
        tiny_net.get_classifier().weight.mul_(2)  # the head: not part of the features
    assert network_digest(pooled, (4, 32, 32), skip) == before
    assert network_digest(tiny_net, (4, 32, 32)) != base


def test_auto_picks_an_onnx_engine_on_the_cpu_and_torch_on_cuda_or_bf16(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if openvino were not installed
    assert resolve_engine("auto", "cpu", "fp32") == "onnxruntime"
    assert resolve_engine("auto", "cuda", "fp32") == "torch"
    assert resolve_engine("auto", "cpu", "bf16") == "torch"
    assert resolve_engine("torch", "cpu", "bf16") == "torch"
    with pytest.raises(HPAConfigError, match="--engine must be one of auto, torch, onnxruntime, openvino"):
        resolve_engine("tensorrt", "cpu")
    with pytest.raises(HPAConfigError, match="runs on the CPU"):
        resolve_engine("onnxruntime", "cuda")
    with pytest.raises(HPAConfigError, match="runs in fp32"):
        resolve_engine("onnxruntime", "cpu", "bf16")


def test_a_cpu_with_native_bf16_still_gets_an_onnx_engine_unless_bf16_is_asked_for(monkeypatch):
    """auto precision is bf16 on such a CPU, but it does not bind the engine: OpenVINO in fp32
    ran the default backbone 1.6x faster than torch's native bf16 there."""
    from hpa.classification.predictor import _run_mode
    from hpa.classification.train import TrainConfig

    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert resolve_engine("auto", "cpu", "auto") == "onnxruntime"
    assert _run_mode("cpu", "auto", "auto", "--engine") == ("fp32", "onnxruntime")
    assert _run_mode("cpu", "auto", "onnxruntime", "--engine") == ("fp32", "onnxruntime")  # refused before
    assert _run_mode("cpu", "bf16", "auto", "--engine") == ("bf16", "torch")
    with pytest.raises(HPAConfigError, match="runs in fp32"):
        _run_mode("cpu", "bf16", "onnxruntime", "--engine")
    cfg = TrainConfig.for_device("cpu")  # training runs bf16, the frozen embedding onnxruntime
    assert (cfg.precision, cfg.engine) == ("bf16", "onnxruntime")
    assert TrainConfig.for_device("cpu", precision="bf16").engine == "torch"
    # a named ONNX engine embeds in fp32 beside bf16 training
    assert TrainConfig.for_device("cpu", precision="bf16", engine="onnxruntime").engine == "onnxruntime"
    assert training_engine("auto", "cpu", "auto") == "onnxruntime"


def test_without_onnxruntime_auto_falls_back_and_an_explicit_choice_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert resolve_engine("auto", "cpu", "fp32") == "torch"
    with pytest.raises(HPAConfigError, match=r"onnxruntime is not installed \(pip install onnxruntime\)"):
        resolve_engine("onnxruntime", "cpu", "fp32")


def test_openvino_is_auto_on_the_cpu_in_fp32_where_installed(monkeypatch):
    if importlib.util.find_spec("openvino") is not None:
        assert resolve_engine("auto", "cpu", "fp32") == "openvino"
    assert resolve_engine("auto", "cpu", "bf16") == resolve_engine("auto", "cuda", "fp32") == "torch"
    with pytest.raises(HPAConfigError, match="runs on the CPU"):
        resolve_engine("openvino", "cuda")
    with pytest.raises(HPAConfigError, match="runs in fp32"):
        resolve_engine("openvino", "cpu", "bf16")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    with pytest.raises(
        HPAConfigError, match=r"openvino is not installed \(pip install 'hpa-cells\[openvino\]'\)"
    ):
        resolve_engine("openvino", "cpu", "fp32")
    assert resolve_engine("auto", "cpu", "fp32") == "onnxruntime"


def test_an_unwritable_cache_exports_into_a_temporary_folder(real_views, tiny_net, tmp_path, caplog):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        engine = make_engine(tiny_net, "onnxruntime", cache_dir=cache)
        assert isinstance(engine, OnnxEngine)
        got = _score(engine, real_views)
    finally:
        cache.chmod(0o700)
    assert "not writable" in caplog.text
    assert float(np.abs(got - _score(tiny_net, real_views)).max()) < 1e-4


@pytest.mark.parametrize("engine_name", ["onnxruntime", "openvino"])
def test_a_blend_runs_its_members_on_an_onnx_engine_and_keeps_its_own_scaling(tmp_path, engine_name):
    """EnsembleNet scales views by a per-view quantile (no ONNX operator): its members are
    exported one by one, the original ensemble is left as it was, and the outputs match."""
    from hpa.classification.ensemble import EnsembleNet
    from hpa.classification.model import ModelConfig
    from hpa.constants import CLASS_NAMES_2018

    if engine_name == "openvino":
        pytest.importorskip("openvino")
    torch.manual_seed(0)
    green = ModelConfig(
        backbone="test_resnet", class_names=CLASS_NAMES_2018, label_set="2018", in_chans=1, channels=("green",),
        mean=(0.2,), std=(0.25,), crop=CropSettings(crop_size=32), intensity="view", input_size=48,
    )  # fmt: skip
    stains = ModelConfig(
        backbone="test_resnet",
        class_names=CLASS_NAMES_2018,
        label_set="2018",
        crop=CropSettings(crop_size=32),
    )
    nets = [create_model("test_resnet", 28, 1).eval(), create_model("test_resnet", 28, 4).eval()]
    blend = EnsembleNet(nets, [green, stains], [0.6, 0.4], [0, 1]).eval()
    x = torch.rand(5, 4, 32, 32)
    with torch.no_grad():
        expected = torch.sigmoid(blend(x))
        engine = make_engine(blend, engine_name, cache_dir=tmp_path)
        got = torch.sigmoid(engine(x))
    assert engine.name == engine_name and got.shape == (5, 56)
    assert float((got - expected).abs().max()) < 1e-4
    assert sorted(p.parent.name for p in tmp_path.rglob("*.onnx")) == ["member-0", "member-1"]
    assert all(not isinstance(n, torch.nn.Module) or type(n).__name__ == "ResNet" for n in blend.nets)
