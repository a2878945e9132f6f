"""Helpers of the reliability tests (tests/reliability): data, a model folder, processes."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from tiny_data import draw_image

from hpa.constants import CHANNELS, CLASS_NAMES_2018
from hpa.io import write_png

REPO = Path(__file__).resolve().parents[1]


def hpa_env(tmpdir: Path | None = None) -> dict[str, str]:
    """Environment of an ``hpa`` subprocess: this checkout first, no progress bars.

    With ``tmpdir``, the subprocess (and its workers) make their temporary folders
    (``pymp-*``) there, so a test can see what they leave behind.
    """
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    return env


def cli_refusal(argv: list[str], caplog: Any, capsys: Any) -> str:
    """``hpa ARGV`` run in this process refuses (argparse's exit 2, or exit 1 with an error
    line); its message (stderr and the logged errors). ``caplog``, ``capsys``: the test's
    pytest fixtures."""
    from hpa.cli import main as hpa_main

    caplog.clear()
    capsys.readouterr()
    try:
        rc = hpa_main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc != 0, argv
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    return capsys.readouterr().err + " ".join(errors)


def hpa_cmd(*args: str | Path) -> list[str]:
    """The command line of ``python -m hpa ARGS``."""
    return [sys.executable, "-m", "hpa", *map(str, args)]


def run_hpa(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``hpa ARGS`` to its end; stdout and stderr captured as text."""
    return subprocess.run(
        hpa_cmd(*args), capture_output=True, text=True, cwd=cwd, env=env or hpa_env(), timeout=600
    )


def dead_pid() -> int:
    """The pid of a process that has ended (a child run to its end)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def write_images(folder: Path, n: int, scale: int = 1, seed: int = 0) -> list[str]:
    """``n`` drawn 4-cell samples (``tiny_data``), ``96 * scale`` px, as channel PNGs."""
    rng = np.random.default_rng(seed)
    combos = [[0], [25], [21], [0, 25]]
    ids = []
    for k in range(n):
        img, _, _ = draw_image(rng, combos[k % len(combos)])
        if scale > 1:
            img = np.kron(img, np.ones((scale, scale, 1), np.uint8))
        image_id = f"s{k:02d}"
        for c, name in enumerate(CHANNELS):
            write_png(folder / f"{image_id}_{name}.png", img[..., c])
        ids.append(image_id)
    return ids


def write_untrained_model(folder: Path, crop_size: int = 32) -> Path:
    """A complete model folder (timm ``test_resnet``, random weights, thresholds 0.5).

    Its predictions mean nothing, but ``hpa predict`` runs on it exactly as on a
    trained one, without a training run.
    """
    import torch

    from hpa.aggregation import save_thresholds
    from hpa.classification.crops import CropSettings
    from hpa.classification.model import THRESHOLDS_FILE, ModelConfig, create_model, save_model_folder

    torch.manual_seed(0)
    config = ModelConfig("test_resnet", CLASS_NAMES_2018, "2018", crop=CropSettings(crop_size=crop_size))
    save_model_folder(folder, config, create_model(config.backbone, config.num_classes))
    save_thresholds(folder / THRESHOLDS_FILE, np.full(len(CLASS_NAMES_2018), 0.5), CLASS_NAMES_2018)
    return folder


def digests(folder: Path, ignore: Collection[str] = ()) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path, but the ``ignore`` names."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ignore
    }


def temporaries(folder: Path) -> list[Path]:
    """Every hpa temporary (``.hpa-tmp-*``) under ``folder``."""
    return sorted(folder.rglob(".hpa-tmp-*"))


def descendants(pid: int) -> set[int]:
    """Pids of every live process below ``pid``."""
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def survivors(pids: Collection[int]) -> list[str]:
    """Command lines of the processes of ``pids`` still running (zombies are ended)."""
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid}: {' '.join(proc.cmdline()[:4])}")
        except psutil.NoSuchProcess:
            continue
    return alive


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def settle(pids: Collection[int], timeout: float = 10.0) -> list[str]:
    """Wait up to ``timeout`` s for ``pids`` to end; the command lines of those that did not."""
    wait_until(lambda: not survivors(pids), timeout, poll=0.1)
    return survivors(pids)
