"""The offline ImageNet start: efficientnet_pytorch weights converted onto timm's layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import timm
import torch
from skimage import data as skdata
from timm.models import adapt_input_conv

from hpa.classification.model import create_model
from hpa.classification.pretrained import (
    convert_efficientnet_pytorch,
    imagenet_weights_file,
    read_state_dict,
    timm_state_from_efficientnet_pytorch,
)
from hpa.errors import HPAConfigError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return torch.from_numpy((x - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)[None]


def test_converted_imagenet_weights_see_a_cat_and_an_espresso():
    state = timm_state_from_efficientnet_pytorch("efficientnet_lite0", imagenet_weights_file())
    model = timm.create_model("efficientnet_lite0", num_classes=1000)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        cat = int(model(_imagenet_input(skdata.chelsea())).argmax())
        coffee = int(model(_imagenet_input(skdata.coffee())).argmax())
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee == 967  # espresso


def test_imagenet_start_adapts_the_first_layer_to_the_channels():
    reference = timm_state_from_efficientnet_pytorch("efficientnet_lite0", imagenet_weights_file())
    stem = reference["conv_stem.weight"]  # (32, 3, 3, 3)
    four = create_model("efficientnet_lite0", 28, in_chans=4, pretrained="imagenet")
    two = create_model("efficientnet_lite0", 5, in_chans=2, pretrained="imagenet")
    assert four.conv_stem.weight.shape == (32, 4, 3, 3) and two.conv_stem.weight.shape == (32, 2, 3, 3)
    assert four.get_classifier().out_features == 28
    # timm's own adaptation (filters cycled over the channels, rescaled by 3 / in_chans)
    torch.testing.assert_close(four.conv_stem.weight, adapt_input_conv(4, stem))
    torch.testing.assert_close(two.conv_stem.weight, adapt_input_conv(2, stem))
    assert not torch.equal(four.conv_stem.weight[:, :3], stem)
    torch.testing.assert_close(four.blocks[3][0].conv_pw.weight, reference["blocks.3.0.conv_pw.weight"])


def test_imagenet_needs_its_own_backbone():
    with pytest.raises(HPAConfigError, match="efficientnet_lite0"):
        create_model("resnet18", 28, pretrained="imagenet")


def test_a_mismatch_names_the_first_tensor(tmp_path):
    source = read_state_dict(imagenet_weights_file())
    target = timm.create_model("efficientnet_b0", num_classes=1000).state_dict()
    with pytest.raises(HPAConfigError, match=r"tensor \d+ _blocks\.\S+ .* does not fit"):
        convert_efficientnet_pytorch(source, target, "lite0.pth")
    # an efficientnet_pytorch file given as --pretrained PATH goes through the converter too
    path = tmp_path / "lite0.pth"
    torch.save(source, path)
    model = create_model("efficientnet_lite0", 3, in_chans=4, pretrained=str(path))
    assert model.conv_stem.weight.shape[1] == 4
    with pytest.raises(HPAConfigError, match=r"lite0\.pth"):
        create_model("efficientnet_b0", 3, in_chans=4, pretrained=str(path))
