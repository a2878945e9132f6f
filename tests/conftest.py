"""Shared test fixtures: offline settings, the optional real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# timm asks the Hugging Face hub before failing; tests never use the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HPA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real HPA samples and labels); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set HPA_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """The small real samples shipped in the repository's data/ folder."""
    return REPO / "data"


# A tiny drawn dataset (images, masks, labels) for classification and pipeline tests, and
# a tiny model trained on it once per session.
from tiny_data import tiny_dataset, tiny_model  # noqa: E402, F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip slow tests unless asked for, and GPU tests where torch sees no CUDA device."""
    run_slow = config.getoption("--run-slow") or os.environ.get("HPA_RUN_SLOW") == "1"
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow or HPA_RUN_SLOW=1")
    has_gpu = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords:
            if has_gpu is None:
                import torch

                has_gpu = torch.cuda.is_available()
            if not has_gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
