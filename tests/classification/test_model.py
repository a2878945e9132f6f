import pytest
import timm
import torch
from safetensors.torch import save_file

from hpa.classification.crops import CropSettings
from hpa.classification.model import ModelConfig, create_model, load_model, save_model_folder
from hpa.constants import CLASS_NAMES_2021


def test_local_3_channel_checkpoint_is_adapted_to_4_channels(tmp_path):
    ref = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = create_model("test_resnet", num_classes=19, in_chans=4, pretrained=str(path))
    w_ref = ref.state_dict()
    w = model.state_dict()
    first = next(k for k in w_ref if k.endswith("weight") and w_ref[k].ndim == 4)
    assert w[first].shape[1] == 4 and w_ref[first].shape[1] == 3
    # timm repeats the RGB filters and rescales by 3 / in_chans
    assert torch.allclose(w[first][:, :3], w_ref[first] * 3 / 4)
    assert model.get_classifier().out_features == 19
    # the rest of the backbone is the checkpoint's
    other = [
        k for k in w_ref if k != first and w_ref[k].shape == w[k].shape and "fc" not in k and "head" not in k
    ]
    assert other and all(torch.equal(w[k], w_ref[k]) for k in other)


def test_missing_checkpoint_and_offline_hub_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not found"):
        create_model("test_resnet", 28, pretrained=str(tmp_path / "nope.pth"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="--pretrained PATH"):
        create_model("resnet18", 28, pretrained="hub")
    with pytest.raises(ValueError, match="unknown timm backbone"):
        create_model("no_such_net", 28)


def test_model_folder_round_trip(tmp_path):
    cfg = ModelConfig(
        backbone="test_resnet",
        class_names=CLASS_NAMES_2021,
        label_set="2021",
        crop=CropSettings(crop_size=32, tile_grids=(1, 3)),
    )
    model = create_model(cfg.backbone, cfg.num_classes)
    save_model_folder(tmp_path, cfg, model)
    loaded, cfg2 = load_model(tmp_path)
    assert cfg2 == cfg
    x = torch.randn(2, 4, 32, 32)
    model.eval()
    assert torch.allclose(loaded(x), model(x))
    assert not any(p.suffix == ".tmp" for p in tmp_path.iterdir())
