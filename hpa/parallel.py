"""Worker process pools that are safe to start from a process that has imported torch."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one image per process: OpenCV's own threads would only compete


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started by a fork server (spawn where there is none).

    Never plain fork: a parent that has imported torch (training, prediction) can
    deadlock children forked while its thread pools are running.
    """
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
