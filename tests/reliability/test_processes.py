"""Issue 12, processes (items 13, 14): workers die with their command; one capped pool.

The killed commands run with their own ``TMPDIR``, so the ``pymp-*`` folders of their
fork servers are seen; their process trees are sampled with psutil while they run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from reliability_helpers import (
    descendants,
    hpa_cmd,
    hpa_env,
    settle,
    temporaries,
    wait_until,
    write_images,
    write_untrained_model,
)

from hpa.pipelines.predict import predict_folder


def _pool_workers(pid: int) -> set[int]:
    """Descendants of ``pid`` that are pool workers (not the fork server nor the resource tracker).

    The fork server and the resource tracker are children of ``pid``; the workers are
    the fork server's children (with its command line) or, spawned, ``pid``'s own.
    """
    workers = set()
    for child in descendants(pid):
        try:
            proc = psutil.Process(child)
            line, parent = " ".join(proc.cmdline()), proc.ppid()
        except psutil.NoSuchProcess:
            continue
        if parent != pid or not _is_helper(line):
            workers.add(child)
    return workers


def _is_helper(cmdline: str) -> bool:
    return "forkserver" in cmdline or "resource_tracker" in cmdline


def _still_helpers(pids: set[int], parent: int) -> set[int]:
    """Those of ``pids`` that are, by now, the fork server or resource tracker of ``parent``.

    A helper sampled between its fork and its exec still shows its parent's command line;
    once exec'd it shows its own, so it is judged again at the end.
    """
    helpers = set()
    for child in pids:
        try:
            proc = psutil.Process(child)
            if proc.ppid() == parent and _is_helper(" ".join(proc.cmdline())):
                helpers.add(child)
        except psutil.NoSuchProcess:
            continue
    return helpers


# ------------------------------------------------------------------ 14. one pool ---


def test_process_pool_is_capped_and_never_plain_fork() -> None:
    from hpa.parallel import process_pool

    with process_pool(1000, 3) as pool:
        pids = {f.result() for f in [pool.submit(os.getpid) for _ in range(6)]}
        assert pool._max_workers <= 3  # type: ignore[attr-defined]
        assert pool._mp_context.get_start_method() in ("forkserver", "spawn")  # type: ignore[attr-defined]
    assert 1 <= len(pids) <= 3


def test_predict_workers_capped_by_the_number_of_images(
    tiny_dataset: dict[str, Path], tmp_path: Path
) -> None:
    model = write_untrained_model(tmp_path / "model")
    peak: set[int] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.update(_pool_workers(os.getpid()))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        summary = predict_folder(
            tiny_dataset["images"],
            model,
            tmp_path / "pred",
            ids=["img000", "img001", "img002"],
            workers=12,
            progress=False,
        )  # fmt: skip  (segments on the fly: the pool does the heavy part)
    finally:
        stop.set()
        sampler.join()
    assert summary.n_failed == 0
    peak -= _still_helpers(peak, os.getpid())  # a fork server caught before its exec
    assert 1 <= len(peak) <= 3, f"{len(peak)} worker processes for 3 images"


# --------------------------------------------------------- 13. killed main process ---


def _kill_case(tmp_path: Path, kind: str) -> tuple[list[str], Path]:
    images = tmp_path / "images"
    write_images(images, 16, scale=6)  # 576 px: a few seconds of work for two workers
    out = tmp_path / "out"
    if kind == "segment":
        return hpa_cmd("segment", images, "--out", out, "--workers", "2"), out
    if kind == "predict":
        model = write_untrained_model(tmp_path / "model")
        return hpa_cmd("predict", images, "--model", model, "--out", out, "--workers", "2"), out
    # the crop-cache build of train-cells (its first step): masks from a segment run
    seg = tmp_path / "seg"
    done = subprocess.run(
        hpa_cmd("segment", images, "--out", seg, "--workers", "1"), env=hpa_env(), timeout=600
    )
    assert done.returncode == 0
    labels = tmp_path / "train.csv"
    labels.write_text("Id,Target\n" + "".join(f"s{k:02d},{k % 3}\n" for k in range(16)))
    cmd = hpa_cmd(
        "train-cells", "--images", images, "--labels", labels, "--masks", seg, "--out", out,
        "--cache", tmp_path / "cache", "--backbone", "test_resnet", "--crop-size", "32", "--epochs", "1",
        "--folds", "2", "--fold", "0", "--workers", "2", "--device", "cpu",
    )  # fmt: skip
    return cmd, tmp_path / "cache"


def _import_as_fork_server(main_pid: int, folder: Path) -> None:
    """Import ``hpa._forkserver`` as a fork server of ``main_pid`` would, then exit."""
    env = {**hpa_env(), "HPA_MP_TEMPDIR": f"{main_pid}:{folder}"}
    done = subprocess.run([sys.executable, "-c", "import hpa._forkserver"], env=env, timeout=120)
    assert done.returncode == 0


def test_fork_server_removes_the_folder_of_a_main_killed_while_it_started(tmp_path: Path) -> None:
    # killed between forking its fork server and that server's import of hpa._forkserver:
    # the server is re-parented by then, so its parent is not the main process any more
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    folder = tmp_path / "pymp-ended"
    folder.mkdir()
    (folder / "listener-socket").write_text("")
    _import_as_fork_server(ended.pid, folder)
    assert not folder.exists()
    # a main process that is alive and not the server's parent keeps its folder
    alive = subprocess.Popen(["sleep", "60"])
    try:
        kept = tmp_path / "pymp-alive"
        kept.mkdir()
        _import_as_fork_server(alive.pid, kept)
        assert kept.is_dir()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize(
    ("kind", "sig"),
    [
        ("segment", signal.SIGKILL),
        ("segment", signal.SIGTERM),
        ("predict", signal.SIGKILL),
        ("predict", signal.SIGTERM),
        ("cache", signal.SIGKILL),
    ],
)
def test_killed_command_leaves_no_process_nor_folder(kind: str, sig: int, tmp_path: Path) -> None:
    cmd, out = _kill_case(tmp_path, kind)
    tmpdir = tmp_path / "tmp"
    log = tmp_path / "stderr.txt"  # a file, not a pipe: a surviving worker would hold a pipe open
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=hpa_env(tmpdir), stdout=subprocess.DEVNULL, stderr=err)
    seen: set[int] = set()
    try:

        def working() -> bool:
            seen.update(descendants(proc.pid))
            return bool(_pool_workers(proc.pid)) or proc.poll() is not None

        assert wait_until(working, 300) and proc.poll() is None, "no worker started"
        for _ in range(10):  # let the pool get going
            seen.update(descendants(proc.pid))
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen, "no child process was seen"
    assert not settle(seen), f"alive after the main process ended: {settle(seen)}"
    assert not list(tmpdir.glob("pymp-*"))
    if sig == signal.SIGTERM:
        stderr = log.read_text()
        assert proc.returncode == 143, stderr[-2000:]
        assert "stopped by SIGTERM" in stderr
        assert not temporaries(out)


_STOPPED_INSIDE_AN_EXTENSION = """
import os, signal, sys, time
import hpa.pipelines.evaluate as evaluate_module
from hpa.cli import main

def stopped_inside_an_extension(args):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises Terminated here
    except BaseException:
        raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None
    return 0

evaluate_module.main = stopped_inside_an_extension if sys.argv[2] == "stop" else (lambda args: int("x"))
sys.exit(main(["evaluate", sys.argv[1]]))
"""


def test_sigterm_replaced_by_an_extension_error_still_ends_as_stopped(tmp_path: Path) -> None:
    """SIGTERM's ``Terminated`` raised inside a C extension comes out as that extension's error
    (torch: "could not determine the shape of object type ..."): still exit status 143. Run in
    a process of its own: a real signal, not sent to the test runner."""
    submission = tmp_path / "submission.csv"
    submission.write_text("Id,Predicted\n")
    script = [sys.executable, "-c", _STOPPED_INSIDE_AN_EXTENSION, str(submission)]
    stopped = subprocess.run([*script, "stop"], env=hpa_env(), capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "stopped by SIGTERM (ValueError" in stopped.stderr
    # an error without SIGTERM is still reported as an error
    failed = subprocess.run([*script, "fail"], env=hpa_env(), capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "stopped by SIGTERM" not in failed.stderr
