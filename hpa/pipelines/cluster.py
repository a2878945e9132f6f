"""Dask plumbing for ``--scheduler``: connect, check the shared folder, run tasks.

``hpa segment`` and ``hpa predict`` take ``--scheduler ADDRESS``: a running
dask.distributed scheduler (``tcp://host:8786``) or ``local:N``, a
:class:`distributed.LocalCluster` of N single-threaded worker processes on this machine.
Workers write straight into the output folder, so it must sit on a filesystem that
every worker shares; :func:`check_shared_folders` proves that before any work is sent.

dask is optional: it is imported only inside these functions, and a missing install
raises :class:`ClusterError` with the command that installs it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from hpa.errors import HPAClusterError

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

log = logging.getLogger(__name__)

MISSING_DASK = "--scheduler needs dask.distributed: pip install 'hpa-cells[distributed]'"
LOCAL_PREFIX = "local:"


ClusterError = HPAClusterError  # the name this module has always raised


def require_distributed() -> ModuleType:
    """Import and return ``distributed``.

    Raises:
        ClusterError: dask.distributed is not installed.
    """
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(MISSING_DASK) from exc
    return distributed


def parse_local(scheduler: str) -> int | None:
    """Worker count of a ``local:N`` address, None for a scheduler address.

    >>> parse_local("local:4"), parse_local("tcp://10.0.0.1:8786")
    (4, None)

    Raises:
        ClusterError: ``local:`` not followed by a positive integer.
    """
    if not scheduler.startswith(LOCAL_PREFIX):
        return None
    text = scheduler[len(LOCAL_PREFIX) :]
    if not text.isdigit() or int(text) < 1:
        raise ClusterError(f"--scheduler {scheduler!r}: expected local:N with N >= 1 worker processes")
    return int(text)


def start_local_cluster(n_workers: int, silence_logs: int = logging.WARNING) -> LocalCluster:
    """A ``LocalCluster`` of ``n_workers`` single-threaded processes.

    Dask's scheduler always serves HTTP (its dashboard and metrics routes); it binds a
    free port here, so clusters of concurrent runs never fight over the default 8787.

    Its nannies start the workers without dask's default ``MALLOC_TRIM_THRESHOLD_=65536``:
    that setting makes glibc hand every large array back to the kernel on free, which
    doubles the time to segment an image (page faults on every new array). The other
    pre-spawn settings (one OpenMP/BLAS thread per worker) are kept.
    """
    import dask

    distributed = require_distributed()
    key = "distributed.nanny.pre-spawn-environ"
    environ = {k: v for k, v in dask.config.get(key, {}).items() if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({key: environ}):
        return distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=silence_logs,
        )


@contextmanager
def connect(
    scheduler: str, *, wait_s: float = 60.0, connect_s: float = 10.0, silence_logs: int = logging.WARNING
) -> Iterator[Client]:
    """A :class:`distributed.Client` for ``scheduler``, closed (with its cluster) on exit.

    Args:
        scheduler: ``tcp://host:port`` of a running scheduler, or ``local:N`` to start a
            ``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)`` without a
            dashboard.
        wait_s: how long to wait for the first worker of a remote scheduler.
        connect_s: how long to try reaching a remote scheduler (a running one answers
            at once: an unreachable address fails after this, not after ``wait_s``).
        silence_logs: least level of dask's own log records while connected (and of a
            local cluster's workers).

    Yields:
        The connected client.

    Raises:
        ClusterError: dask.distributed is missing, the scheduler cannot be reached, or
            no worker joined within ``wait_s``.
    """
    distributed = require_distributed()
    n_local = parse_local(scheduler)
    cluster = None
    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    dask_log.setLevel(max(silence_logs, level))  # connection chatter is not the user's business
    try:
        if n_local is not None:
            log.info("starting a local Dask cluster of %d worker processes", n_local)
            cluster = start_local_cluster(n_local, silence_logs)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(scheduler, timeout=f"{connect_s}s")
            except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
                raise ClusterError(
                    f"--scheduler {scheduler}: no Dask scheduler answered within {connect_s:.0f} s; start one "
                    "there ('dask scheduler'), check the address and port, or use --scheduler local:N"
                ) from exc
        with client:
            try:
                client.wait_for_workers(1, timeout=wait_s)
            except (TimeoutError, asyncio.TimeoutError) as exc:
                raise ClusterError(f"no Dask worker joined {scheduler} within {wait_s:.0f} s") from exc
            log.info("Dask: %d worker(s) at %s", len(worker_addresses(client)), client.scheduler.address)
            yield client
    finally:
        if cluster is not None:
            cluster.close()
        dask_log.setLevel(level)


def worker_addresses(client: Client) -> list[str]:
    """Addresses of the workers the scheduler knows now, sorted."""
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def _probe_folders(writable: str, readable: Sequence[str]) -> str | None:
    """Runs on a worker: None when the folders are usable there, else what is wrong."""
    host = socket.gethostname()
    for folder in readable:
        if not os.path.isdir(folder):
            return f"cannot see the input folder {folder} (host {host})"
    if not os.path.isdir(writable):
        return f"cannot see the output folder {writable} (host {host})"
    probe = os.path.join(writable, f".hpa-probe-{host}-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"hpa")
        os.remove(probe)
    except OSError as exc:
        return f"cannot write into the output folder {writable} (host {host}): {exc}"
    return None


def check_shared_folders(client: Client, writable: str | Path, readable: Sequence[str | Path] = ()) -> None:
    """Check on every worker that ``writable`` can be written and ``readable`` seen.

    Each worker writes and removes a probe file in ``writable``: workers write the
    outputs themselves, so the folder must be on a filesystem they all share.

    Raises:
        ClusterError: naming the folder and each worker address that failed.
    """
    writable = str(Path(writable).resolve())
    readable = [str(Path(p).resolve()) for p in readable]
    try:
        results = client.run(_probe_folders, writable, readable, on_error="return")
    except Exception as exc:  # the scheduler went away between connect and check
        raise ClusterError(f"could not check the folders on the Dask workers: {exc}") from exc
    problems = []
    for address, result in sorted(results.items()):
        if isinstance(result, BaseException):  # e.g. hpa-cells not installed on the worker
            problems.append(f"worker {address}: the folder check failed: {type(result).__name__}: {result}")
        elif result:
            problems.append(f"worker {address}: {result}")
    if problems:
        raise ClusterError(
            "the output folder must be on a filesystem shared by every Dask worker:\n  "
            + "\n  ".join(problems)
        )


def split_shards(
    items: Sequence[str], n_workers: int, per_worker: int = 8, max_size: int = 50
) -> list[list[str]]:
    """Cut ``items`` into contiguous shards, in order: about ``per_worker`` per worker.

    Shards hold at most ``max_size`` items, so a large run keeps every worker busy to
    the end and a lost worker costs little.

    >>> split_shards([str(i) for i in range(5)], n_workers=1, per_worker=2)
    [['0', '1', '2'], ['3', '4']]
    """
    size = max(1, min(max_size, math.ceil(len(items) / max(1, n_workers * per_worker))))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def as_completed_results(
    client: Client, func: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], names: Sequence[str]
) -> Generator[tuple[int, Any, BaseException | None], None, None]:
    """Submit ``func(*job)`` for every job; yield ``(job number, result, error)`` as each ends.

    A task that fails on the cluster (for instance a worker killed too often while
    running it: ``KilledWorker``) yields its exception instead of raising, so the caller
    decides what one lost task means. Tasks that are still pending when the caller stops
    iterating are cancelled.

    Args:
        client: a connected :class:`distributed.Client`.
        func: a module-level function (workers import it by name).
        jobs: positional arguments of each call.
        names: a short name per job for the task keys (image Id, shard number).
    """
    distributed = require_distributed()
    run = uuid.uuid4().hex[:8]
    futures = [
        client.submit(func, *job, key=f"hpa-{func.__name__.strip('_')}-{name}-{run}")
        for job, name in zip(jobs, names, strict=True)
    ]
    number = {f.key: k for k, f in enumerate(futures)}
    try:
        for future in distributed.as_completed(futures):
            k = number[future.key]
            try:
                yield k, future.result(), None
            except Exception as exc:  # a task lost on the cluster, reported per job
                yield k, None, exc
            future.release()
    finally:
        client.cancel([f for f in futures if not f.done()])
