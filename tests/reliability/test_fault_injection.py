"""Fault injection: kill segment, train-cells and predict at random points, rerun, compare.

Each stage runs once cleanly as the reference. Then, per trial, the same command is
started and killed (SIGKILL, then SIGTERM) after a random delay drawn from a seeded
generator between 0.3 s and the clean run's wall time, so kills land anywhere from the
imports to the last write; then it is run to its end (train-cells with ``--resume``).
The outputs must be byte-identical to the clean run's, with no temporary file, no
surviving process and no ``pymp-*`` folder left.

Files that legitimately differ between two runs and are not compared:

* ``metrics.json``'s ``train_seconds`` and ``history.csv`` (wall times), and
  ``last.ckpt`` (the checkpoint holds that history): the rest of metrics.json is compared.
* ``config.yaml`` of a prediction names its own ``masks`` folder (the two runs write
  different folders): every other setting is compared.
* ``run.log``: the log of the runs (times; the killed run's lines come first).
* ``README.md``, the model card, names its own folder: compared with the name taken out.

The default runs one trial per stage (a few minutes on two cores); ``--run-slow`` adds
three more seeds per stage.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from reliability_helpers import (
    descendants,
    digests,
    hpa_cmd,
    hpa_env,
    settle,
    temporaries,
    write_images,
)

TRIALS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]

TRAIN_FLAGS = (
    "--backbone", "test_resnet", "--crop-size", "32", "--epochs", "2", "--batch-size", "16", "--folds", "2", "--fold", "0",
    "--workers", "2", "--device", "cpu", "--seed", "0", "--lr", "0.001",
)  # fmt: skip


def _segment(data: Path, out: Path) -> list[str]:
    return hpa_cmd("segment", data / "images", "--out", out, "--workers", "2")


def _train(data: Path, out: Path) -> list[str]:
    return hpa_cmd(
        "train-cells", "--images", data / "images", "--labels", data / "train.csv", "--masks", data / "seg",
        "--out", out, "--cache", out.parent / f"{out.name}-cache", *TRAIN_FLAGS,
    )  # fmt: skip


def _predict(data: Path, out: Path) -> list[str]:
    return hpa_cmd("predict", data / "images", "--model", data / "model", "--out", out, "--workers", "2")


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - t0


def _kill_after(cmd: list[str], env: dict[str, str], delay: float, sig: int) -> set[int]:
    """Start ``cmd``, send ``sig`` after ``delay`` s (if it still runs); its processes seen."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    end = time.monotonic() + delay
    try:
        while time.monotonic() < end and proc.poll() is None:
            seen |= descendants(proc.pid)
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Images, labels, a clean SEG_DIR, model and prediction, and each clean run's seconds."""
    root = tmp_path_factory.mktemp("faults")
    ids = write_images(root / "images", 12, scale=3)  # 288 px
    (root / "train.csv").write_text(
        "Id,Target\n" + "".join(f"{i},{(0, 25, 21)[k % 3]}\n" for k, i in enumerate(ids))
    )
    env = hpa_env(root / "tmp")
    seconds = {
        "segment": _run(_segment(root, root / "seg"), env),
        "train": _run(_train(root, root / "model"), env),
        "predict": _run(_predict(root, root / "pred"), env),
    }
    return {"root": root, "seconds": seconds}


def _segment_files(folder: Path) -> dict[str, str]:
    return digests(folder, ignore={"run.log"})


def _model_files(folder: Path) -> dict[str, object]:
    files = digests(folder, ignore={"metrics.json", "history.csv", "last.ckpt", "run.log", "README.md"})
    # the clean model's engine-cache/ is predict's (the predict stage ran on it), not training's
    files = {name: digest for name, digest in files.items() if not name.startswith("engine-cache/")}
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("train_seconds")
    card = (folder / "README.md").read_text()
    for named in ("# Model card: {}\n", "--model {} ", 'from_folder("{}")'):
        card = card.replace(named.format(folder.name), named.format("MODEL_DIR"))
    return {"files": files, "metrics": metrics, "card": card}


def _prediction_files(folder: Path) -> dict[str, object]:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config.pop("masks")
    return {"files": digests(folder, ignore={"config.yaml", "run.log"}), "config": config}


STAGES = {
    "segment": (_segment, _segment_files),
    "train": (_train, _model_files),
    "predict": (_predict, _prediction_files),
}


@pytest.mark.parametrize("trial", TRIALS)
@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_and_rerun_equals_a_clean_run(stage: str, trial: int, data: dict[str, object]) -> None:
    root = data["root"]
    assert isinstance(root, Path)
    command, outputs = STAGES[stage]
    clean = {"segment": root / "seg", "train": root / "model", "predict": root / "pred"}[stage]
    out = root / f"{stage}-{trial}"
    tmpdir = root / f"tmp-{stage}-{trial}"
    env = hpa_env(tmpdir)
    rng = random.Random(f"{stage}-{trial}")
    span = float(data["seconds"][stage])  # type: ignore[index]
    seen: set[int] = set()
    for sig in (signal.SIGKILL, signal.SIGTERM):
        seen |= _kill_after(command(root, out), env, rng.uniform(0.3, span), sig)
    rerun = command(root, out) + (["--resume"] if stage == "train" else [])
    _run(rerun, env)
    assert outputs(out) == outputs(clean)
    assert not temporaries(root), temporaries(root)
    assert not list(root.glob(".hpa-partial-*"))
    assert not settle(seen), settle(seen)
    assert not list(tmpdir.glob("pymp-*"))
