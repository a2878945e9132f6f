"""The aggregation package: doctests run, and importing it never pulls in torch."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest

MODULES = [
    "hpa.aggregation.pooling",
    "hpa.aggregation.thresholds",
    "hpa.aggregation.metrics",
    "hpa.aggregation.submission",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no doctest examples"
    assert result.failed == 0


def test_import_does_not_load_torch():
    code = (
        "import sys, hpa.aggregation, hpa.pipelines.evaluate\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
