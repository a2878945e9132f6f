"""Fixtures of the visualization tests: a hand-made PRED_DIR with synthetic images."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpa.constants import CLASS_NAMES_2018

from .viz_fixtures import make_pred_dir


@pytest.fixture(scope="session")
def pred_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PRED_DIR of two 256 px images (8-bit ``img-a``, 16-bit ``img-b``), 2018 classes."""
    return make_pred_dir(tmp_path_factory.mktemp("run"), CLASS_NAMES_2018, {"img-a": 8, "img-b": 16})
