"""The offline ImageNet start: efficientnet_pytorch weights converted onto timm's layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from skimage import data as skdata
from timm.models import adapt_input_conv

from hpa.classification.model import ModelConfig, create_model, load_model, save_model_folder
from hpa.classification.pretrained import (
    IMAGENET_BACKBONE,
    LEGACY_IMAGENET_BACKBONE,
    convert_efficientnet_pytorch,
    imagenet_weights_file,
    read_state_dict,
    timm_state_from_efficientnet_pytorch,
)
from hpa.classification.train import DEVICE_DEFAULTS, TrainConfig
from hpa.constants import CLASS_NAMES_2018
from hpa.errors import HPAConfigError
from hpa.io import list_image_ids, read_sample, to_float

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return torch.from_numpy((x - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)[None]


def _hpa_crops(folder: Path, per_image: int = 2) -> torch.Tensor:
    """ImageNet-normalised 224 px RGB crops (microtubules, protein, nucleus) of real samples."""
    crops = []
    for image_id in list_image_ids(folder):
        rgb = to_float(read_sample(folder, image_id))[..., :3]
        rgb = rgb / max(float(rgb.max()), 1e-6)
        side = min(rgb.shape[:2]) // 2
        for y, x in [(0, 0), (rgb.shape[0] - side, rgb.shape[1] - side)][:per_image]:
            crop = cv2.resize(rgb[y : y + side, x : x + side], (224, 224), interpolation=cv2.INTER_AREA)
            crops.append(torch.from_numpy((crop - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1))
    return torch.stack(crops)


def _imagenet_logits(backbone: str, x: torch.Tensor) -> torch.Tensor:
    model = timm.create_model(backbone, num_classes=1000)
    model.load_state_dict(timm_state_from_efficientnet_pytorch(backbone, imagenet_weights_file()))
    with torch.no_grad():
        return model.eval()(x)


def test_converted_network_computes_the_checkpoints_own_function(repo_data):
    """The logits of the converted network equal those of the checkpoint's own implementation."""
    reference_package = pytest.importorskip(
        "efficientnet_lite_pytorch",
        reason="the reference implementation of the checkpoint (pip install efficientnet-lite-pytorch) is absent",
    )
    x = _hpa_crops(repo_data / "hpa-samples" / "images")
    assert len(x) >= 4
    reference = reference_package.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(imagenet_weights_file())
    )
    with torch.no_grad():
        expected = reference.eval()(x)
    logits = _imagenet_logits(IMAGENET_BACKBONE, x)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    # the earlier target takes the same tensors but computes another function
    legacy = _imagenet_logits(LEGACY_IMAGENET_BACKBONE, x)
    assert float((legacy - expected).abs().max()) > 0.5


def test_converted_imagenet_weights_see_a_cat_and_an_espresso():
    state = timm_state_from_efficientnet_pytorch(IMAGENET_BACKBONE, imagenet_weights_file())
    model = timm.create_model(IMAGENET_BACKBONE, num_classes=1000)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        cat = int(model(_imagenet_input(skdata.chelsea())).argmax())
        coffee = int(model(_imagenet_input(skdata.coffee())).argmax())
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee == 967  # espresso


def test_imagenet_start_adapts_the_first_layer_to_the_channels():
    reference = timm_state_from_efficientnet_pytorch(IMAGENET_BACKBONE, imagenet_weights_file())
    stem = reference["conv_stem.weight"]  # (32, 3, 3, 3)
    four = create_model(IMAGENET_BACKBONE, 28, in_chans=4, pretrained="imagenet")
    two = create_model(IMAGENET_BACKBONE, 5, in_chans=2, pretrained="imagenet")
    assert four.conv_stem.weight.shape == (32, 4, 3, 3) and two.conv_stem.weight.shape == (32, 2, 3, 3)
    assert four.get_classifier().out_features == 28
    # timm's own adaptation (filters cycled over the channels, rescaled by 3 / in_chans)
    torch.testing.assert_close(four.conv_stem.weight, adapt_input_conv(4, stem))
    torch.testing.assert_close(two.conv_stem.weight, adapt_input_conv(2, stem))
    assert not torch.equal(four.conv_stem.weight[:, :3], stem)
    torch.testing.assert_close(four.blocks[3][0].conv_pw.weight, reference["blocks.3.0.conv_pw.weight"])


def test_imagenet_needs_its_own_backbone():
    with pytest.raises(HPAConfigError, match="--backbone tf_efficientnet_lite0"):
        create_model("resnet18", 28, pretrained="imagenet")


def test_the_defaults_start_from_the_checkpoints_own_architecture():
    assert IMAGENET_BACKBONE == "tf_efficientnet_lite0"
    for device in ("cpu", "cuda"):
        assert DEVICE_DEFAULTS[device]["backbone"] == IMAGENET_BACKBONE
        assert DEVICE_DEFAULTS[device]["pretrained"] == "imagenet"
    cfg = TrainConfig.for_device("cpu")
    assert (cfg.backbone, cfg.pretrained, cfg.companion) == (IMAGENET_BACKBONE, "imagenet", "scratch")
    # the earlier target, chosen by name, still starts from the packaged weights (a chosen
    # backbone has no companion unless asked for)
    legacy = TrainConfig.for_device("cpu", backbone=LEGACY_IMAGENET_BACKBONE)
    assert (legacy.pretrained, legacy.companion) == ("imagenet", None)
    assert TrainConfig.for_device("cpu", backbone="resnet10t").pretrained is None


def test_a_model_folder_of_the_earlier_backbone_predicts_as_before(tmp_path, caplog):
    """Folders trained on ``efficientnet_lite0`` keep their network: same logits after loading."""
    with caplog.at_level("WARNING", logger="hpa.classification.pretrained"):
        model = create_model(LEGACY_IMAGENET_BACKBONE, 28, in_chans=4, pretrained="imagenet").eval()
    assert "tf_efficientnet_lite0" in caplog.text
    config = ModelConfig(backbone=LEGACY_IMAGENET_BACKBONE, class_names=CLASS_NAMES_2018, label_set="2018")
    save_model_folder(tmp_path / "old", config, model)
    loaded, loaded_config = load_model(tmp_path / "old")
    assert loaded_config.backbone == LEGACY_IMAGENET_BACKBONE
    x = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    model = model.to(memory_format=torch.channels_last)  # as load_model hands it out
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
        # the corrected architecture with the same tensors computes another function
        other = timm.create_model(IMAGENET_BACKBONE, num_classes=28, in_chans=4)
        other.load_state_dict(model.state_dict())
        assert float((other.eval()(x) - model(x)).abs().max()) > 1e-3


def test_a_mismatch_names_the_first_tensor(tmp_path):
    source = read_state_dict(imagenet_weights_file())
    target = timm.create_model("efficientnet_b0", num_classes=1000).state_dict()
    with pytest.raises(HPAConfigError, match=r"tensor \d+ _blocks\.\S+ .* does not fit"):
        convert_efficientnet_pytorch(source, target, "lite0.pth")
    # an efficientnet_pytorch file given as --pretrained PATH goes through the converter too
    path = tmp_path / "lite0.pth"
    torch.save(source, path)
    model = create_model(IMAGENET_BACKBONE, 3, in_chans=4, pretrained=str(path))
    assert model.conv_stem.weight.shape[1] == 4
    with pytest.raises(HPAConfigError, match=r"lite0\.pth"):
        create_model("efficientnet_b0", 3, in_chans=4, pretrained=str(path))
