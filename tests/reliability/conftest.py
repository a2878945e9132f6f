"""Fixtures shared by the reliability tests: an untrained model folder and a finished run."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_helpers import write_untrained_model

from hpa.pipelines.predict import predict_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with untrained weights (no training: these tests judge files, not scores)."""
    return write_untrained_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def run(tiny_dataset: dict[str, Path], model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished prediction folder of the tiny dataset (with its masks)."""
    out = tmp_path_factory.mktemp("run") / "pred"
    predict_folder(tiny_dataset["images"], model, out, masks=tiny_dataset["masks"], workers=1, progress=False)
    return out
