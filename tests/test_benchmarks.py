"""The benchmarks still import and parse their arguments, and the cheapest one runs.

The benchmarks are scripts (``python benchmarks/x.py``) that need real data or minutes;
no test ran them, so a renamed hpa function broke them silently. Here each one is
imported as its script would be (``benchmarks/`` on ``sys.path``, as when it runs) and
its ``--help`` parsed; ``aggregation_bench.py`` runs whole on a tiny input. mypy checks
them too (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
#: Modules the scripts import, with no command of their own.
HELPERS = {"model_throughput"}


@pytest.fixture
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/`` first on ``sys.path`` for the test (some scripts add it themselves)."""
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_imports_and_parses_help(name: str, bench_path: None, monkeypatch: pytest.MonkeyPatch):
    module = importlib.import_module(name)
    if name in HELPERS:
        assert not hasattr(module, "main"), f"{name} has a main: take it out of HELPERS"
        return
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 0
    assert out.getvalue().startswith(f"usage: {name}.py")


def test_aggregation_bench_runs_on_a_tiny_input():
    tiny = ["--cells", "3000", "--images", "40", "--classes", "5", "--tune-images", "200", "--repeat", "1"]
    res = subprocess.run(
        [sys.executable, str(BENCHMARKS / "aggregation_bench.py"), *tiny],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert "pool_cells: 3,000 cells x 5 classes -> 40 images" in lines
    timed = [
        line.split()[0] for line in lines if re.search(r"shuffled cells +[\d.]+ s +grouped by image", line)
    ]
    assert timed == ["max", "mean", "noisy-or", "topk"]
    assert "tune_thresholds: 200 images x 5 classes" in lines
    assert any(re.fullmatch(r"apply_thresholds: [\d.]+ s", line) for line in lines)
