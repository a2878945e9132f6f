"""--channels: input channels picked or merged from the four stains, saved and followed by predict."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.classification.channels import channel_matrix, parse_channels
from hpa.classification.model import normalise
from hpa.classification.train import TrainConfig
from hpa.errors import HPAConfigError
from hpa.io import read_labels
from hpa.pipelines.predict import predict_folder
from hpa.pipelines.train import train_model


def test_parse_channels_letters_names_and_merges():
    assert parse_channels("rgby") == ("red", "green", "blue", "yellow")
    assert parse_channels("gby") == ("green", "blue", "yellow")
    assert parse_channels("g,b,r+y") == ("green", "blue", "red+yellow")
    assert parse_channels("Green, blue, red+yellow") == ("green", "blue", "red+yellow")
    with pytest.raises(HPAConfigError, match="unknown channel 'x'"):
        parse_channels("rgx")
    with pytest.raises(HPAConfigError, match="red used more than once"):
        parse_channels("r,g,r+y")


def test_merged_channel_is_the_mean_of_its_stains():
    views = torch.tensor([[[[10, 20, 30, 50]]]], dtype=torch.uint8)  # (1, 1, 1, 4)
    mix = torch.from_numpy(channel_matrix(parse_channels("g,b,r+y")))
    x = normalise(views, torch.zeros(3), torch.ones(3), 255.0, mix)
    assert x.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(x.flatten().numpy(), np.array([20, 30, 30]) / 255.0, rtol=1e-6)


def test_train_and_predict_follow_the_channels(tiny_dataset, tmp_path):
    cfg = TrainConfig(
        backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1, channels="g,b,r+y"
    )
    out = tmp_path / "model"
    train_model(
        tiny_dataset["images"],
        read_labels(tiny_dataset["labels"]),
        tiny_dataset["masks"],
        out,
        cfg,
        cache_root=tmp_path / "cache",
        progress=False,
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["channels"] == ["green", "blue", "red+yellow"] and saved["in_chans"] == 3
    assert len(saved["mean"]) == 3 and len(saved["std"]) == 3
    summary = predict_folder(
        tiny_dataset["images"], out, tmp_path / "pred", masks=tiny_dataset["masks"], workers=1, progress=False
    )
    assert summary.n_failed == 0
    scores = pd.read_csv(tmp_path / "pred" / "image_scores.csv")
    assert len(scores) == 18 and np.isfinite(scores.drop(columns="image_id").to_numpy()).all()
    with pytest.raises(HPAConfigError, match="unknown channel"):
        train_model(
            tiny_dataset["images"],
            read_labels(tiny_dataset["labels"]),
            tiny_dataset["masks"],
            tmp_path / "bad",
            replace(cfg, channels="rgq"),
            cache_root=tmp_path / "cache",
            progress=False,
        )
