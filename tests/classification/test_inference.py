import numpy as np
import pytest
import torch

import hpa.classification.inference as inference
from hpa.classification.inference import resolve_precision, score_views
from hpa.classification.model import create_model


def test_resolve_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # an explicit choice is kept
    assert resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_bf16_scores_agree_with_fp32():
    torch.manual_seed(0)
    model = create_model("test_resnet", 28, 4).eval()
    views = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 4), dtype=np.uint8)
    args = (model, views, np.full(4, 0.2), np.full(4, 0.1), 255.0)
    fp32 = score_views(*args, precision="fp32")
    bf16 = score_views(*args, precision="bf16")
    assert fp32.shape == bf16.shape == (10, 28) and bf16.dtype == np.float32
    assert np.abs(fp32 - bf16).max() < 0.05  # bf16 keeps ~3 significant digits
    assert not np.array_equal(fp32, bf16)  # autocast did run in bf16
