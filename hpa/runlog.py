"""``<out>/run.log``: the log of a command, written with its outputs.

The ``hpa`` command starts a :class:`RunLog` on the ``hpa`` logger before it runs a
subcommand (segment, train-cells, predict, demo, report). Records are held in memory
until the pipeline names the folder its outputs are built in (:func:`write_into`): a
staged folder that is swapped into place at the end, so the log lands with the outputs
in one step. There the held records and every later one go to ``run.log``, appended to
the log of an interrupted run that is being resumed. The first folder named wins: a
command that runs others (``hpa demo``, ``train-cells --folds``) keeps one log.

Used as a library (no :func:`start`), :func:`write_into` does nothing.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

#: The log file of a run, in its output folder.
RUN_LOG = "run.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)


class RunLog(logging.Handler):
    """A handler that holds records until it is told its file, then writes them there."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None
        self.path: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is None:
            self._held.append(record)
        else:
            self._file.emit(record)

    def open(self, path: Path) -> None:
        """Write to ``path`` (appending), starting with the records held so far."""
        self._file = logging.FileHandler(path, mode="a", encoding="utf-8")
        self._file.setFormatter(self.formatter)
        self.path = path
        for record in self._held:
            self._file.emit(record)
        self._held.clear()
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


_active: RunLog | None = None


def start(level: int = logging.INFO) -> RunLog:
    """Start holding the ``hpa`` logger's records for a run's ``run.log`` (the CLI calls this)."""
    global _active
    stop()
    _active = RunLog(level)
    logging.getLogger("hpa").addHandler(_active)
    return _active


def stop() -> None:
    """Close the run's log file and detach it."""
    global _active
    if _active is not None:
        logging.getLogger("hpa").removeHandler(_active)
        _active.close()
        _active = None


def write_into(folder: str | Path, previous: str | Path | None = None) -> Path | None:
    """Send the run's log to ``folder/run.log`` from now on (the first folder named wins).

    Args:
        folder: the (staged) output folder of the run; it must exist.
        previous: a folder whose ``run.log`` continues here (the output of the
            interrupted run being resumed); copied first when ``folder`` has none.

    Returns:
        The log file, or None when no run log was started or another folder was named.
    """
    if _active is None or _active.path is not None:
        return None
    path = Path(folder) / RUN_LOG
    if previous is not None and not path.exists() and (Path(previous) / RUN_LOG).is_file():
        shutil.copyfile(Path(previous) / RUN_LOG, path)
    _active.open(path)
    log.debug("logging to %s", path)
    return path
