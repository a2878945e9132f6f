"""The one worker-process pool of every command: safe to start after torch, dies with its parent.

:func:`process_pool` is the only place ``hpa`` starts local worker processes (segment,
predict, the crop cache, synth). Its rules:

* Workers start from a fork server (spawn where there is none), never by plain fork:
  a parent that has imported torch can deadlock children forked while its thread
  pools run.
* The pool never has more workers than tasks, nor more than the cores this process may
  use: ``--workers 1000`` on 3 images starts 3 processes.
* Workers die with the main process, however it ends. On Linux each worker asks the
  kernel for a signal when its parent (the fork server) dies, and every worker also
  watches the main process itself; an orphaned worker removes the main process's
  ``pymp-*`` folder (the fork server's socket) and exits. The fork server, which
  outlives the pools and exits with the main process, removes that folder too
  (:mod:`hpa._forkserver`), so a ``kill -9`` of the main process, during or after its
  pools, leaves no worker, fork server, resource tracker nor temporary folder behind.
* Leaving the pool's ``with`` block by an exception (Ctrl-C, SIGTERM, an error) stops
  the workers at once instead of waiting for their running tasks.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.util
import os
import select
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import Any

from hpa.io import pid_alive

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_TEMPDIR_ENV = "HPA_MP_TEMPDIR"  # read by hpa._forkserver in the fork server
_MAIN_SCRIPT_ENV = "HPA_MP_MAIN_SCRIPT"  # likewise
_ORPHAN_EXIT = 1


def _ended(pid: int) -> bool:
    """True when process ``pid`` is gone or has ended and waits to be reaped (a zombie)."""
    if not pid_alive(pid):
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"Z", b"X")


def _orphaned(main_pid: int, main_tempdir: str) -> None:
    """This worker is to stop: if its main process has ended, remove that one's folder too."""
    if _ended(main_pid):
        shutil.rmtree(main_tempdir, ignore_errors=True)
    os._exit(_ORPHAN_EXIT)


def _watch(main_pid: int, main_tempdir: str) -> None:
    """Thread body: wait for the main process to end (a pidfd where there is one), then go."""
    try:
        fd = os.pidfd_open(main_pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])  # readable once the process has ended
    else:
        while not _ended(main_pid):
            time.sleep(0.5)
    _orphaned(main_pid, main_tempdir)


def _init_worker(main_pid: int, main_tempdir: str, forkserver: bool) -> None:
    """Initialiser of every pool worker: one OpenCV thread, die with the main process."""
    import cv2

    cv2.setNumThreads(1)  # one image per process: OpenCV's own threads would only compete
    if sys.platform.startswith("linux") and forkserver:
        # the parent is the fork server, which exits as soon as the main process dies
        signal.signal(signal.SIGTERM, lambda *_: _orphaned(main_pid, main_tempdir))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if _ended(main_pid):  # died before the watch began
        _orphaned(main_pid, main_tempdir)
    threading.Thread(target=_watch, args=(main_pid, main_tempdir), daemon=True, name="hpa-watchdog").start()


class _Pool(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose ``with`` block, left by an exception, stops its workers now."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if exc_type is not None:
            self.terminate()
        return super().__exit__(exc_type, exc, tb)

    def terminate(self) -> None:
        """Cancel the pending tasks and kill the workers (running tasks are lost)."""
        self.shutdown(wait=False, cancel_futures=True)
        # Python 3.14 has ProcessPoolExecutor.terminate_workers(); before it, the map
        # of worker processes is the executor's own attribute
        processes: dict[int, Any] = dict(getattr(self, "_processes", None) or {})
        for process in processes.values():
            if process.ispid_alive():
                process.kill()
        for process in processes.values():
            process.join(timeout=5)


def _main_script() -> str | None:
    """The path of the main module when it is a plain script (``python script.py``), else None.

    Such a script is the one a worker would import again (as ``__mp_main__``) before it
    runs a task: a script without ``if __name__ == "__main__":`` would run once more in
    every worker. Workers run only hpa's own functions, so :mod:`hpa._forkserver` tells
    them the script is already imported (``python -m hpa``, ``python -c`` and an
    interactive session have no such path).
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return None
    path = getattr(main, "__file__", None)
    return os.path.normpath(path) if isinstance(path, str) else None


def pool_size(workers: int, n_tasks: int) -> int:
    """Workers worth starting: at most one per task and one per usable core (at least 1).

    >>> pool_size(1000, 3) <= 3
    True
    """
    from hpa.config import default_workers

    return max(1, min(workers, n_tasks, default_workers()))


def process_pool(workers: int, n_tasks: int) -> ProcessPoolExecutor:
    """A pool of at most ``workers`` processes for ``n_tasks`` tasks (see the module notes).

    Args:
        workers: processes asked for (``--workers``).
        n_tasks: tasks the pool will run; the pool never holds more workers than this.

    Returns:
        A :class:`concurrent.futures.ProcessPoolExecutor`; use it in a ``with`` block.
    """
    size = pool_size(workers, n_tasks)
    if size < workers:
        log.debug("%d worker processes for %d tasks (asked for %d)", size, n_tasks, workers)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    tempdir = multiprocessing.util.get_temp_dir()  # the fork server's socket lives here
    if method == "forkserver":  # takes effect when the fork server starts (the first pool)
        os.environ[_TEMPDIR_ENV] = f"{os.getpid()}:{tempdir}"
        script = _main_script()
        if script is not None:
            os.environ[_MAIN_SCRIPT_ENV] = script
        ctx.set_forkserver_preload(["hpa._forkserver"] if script else ["__main__", "hpa._forkserver"])
    return _Pool(
        max_workers=size,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(os.getpid(), tempdir, method == "forkserver"),
    )
