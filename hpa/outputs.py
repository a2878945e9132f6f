"""Output folders that never cost the user data.

Four rules every command follows (docs/reliability.md):

* :func:`check_apart`: an output folder is never an input folder of the same command,
  nor inside one, nor around one (symlinks resolved).
* :func:`check_replaceable`: a folder a command replaces as a whole (a report, a
  prediction run) is one it wrote itself: it carries the command's marker file and
  holds nothing the command does not write. Anything else is refused, never deleted.
* :func:`swap_in`: a folder built beside its target is put in place in one step (an
  atomic exchange of the two names where the kernel offers it), so the target is
  always one run's complete output.
* :func:`claim_entries`: a command that writes into a folder it does not replace whole
  (``hpa export``, ``show``, ``train-cells``, ``segment``, ``synth``) first claims the
  names it will write there. A name is hpa's when the folder's record of what hpa
  wrote (:data:`WRITTEN_RECORD`) lists it; an entry of that name that the record does
  not list is the user's, and the command is refused before it writes anything.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

from hpa.errors import HPAConfigError
from hpa.io import remove_stale_temporaries, temp_name, write_text_atomic
from hpa.runlog import RUN_LOG

log = logging.getLogger(__name__)


def _resolved(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def check_apart(
    out: str | Path,
    inputs: Mapping[str, str | Path | None],
    *,
    out_flag: str = "--out",
    may_sit_inside: Collection[str] = (),
) -> None:
    """Refuse an output folder that is, contains or sits inside an input of the command.

    Paths are compared after resolving symlinks, so a link to an input is the input.

    Args:
        out: the output folder (it need not exist yet).
        inputs: flag or argument name -> input file or folder (None entries are skipped).
        out_flag: how the output is named in the message.
        may_sit_inside: names of inputs that ``out`` may sit inside (a report folder in
            its prediction folder); ``out`` still may not be or contain them.

    Raises:
        HPAConfigError: one line naming both paths.

    >>> check_apart("/data/pred", {"IMAGES": "/data/test"})
    >>> check_apart("/data/test/pred", {"IMAGES": "/data/test"})
    Traceback (most recent call last):
    ...
    hpa.errors.HPAConfigError: --out /data/test/pred sits inside the input IMAGES /data/test; choose an output folder apart from the inputs
    """
    target = _resolved(out)
    for name, path in inputs.items():
        if path is None:
            continue
        source = _resolved(path)
        if target == source:
            how = "is"
        elif target in source.parents:
            how = "contains"
        elif source in target.parents and name not in may_sit_inside:
            how = "sits inside"
        else:
            continue
        raise HPAConfigError(
            f"{out_flag} {out} {how} the input {name} {path}; choose an output folder apart from the inputs"
        )


def write_marker(folder: str | Path, marker: str, command: str) -> None:
    """Write the marker file that says ``command`` wrote ``folder``."""
    write_text_atomic(Path(folder) / marker, json.dumps({"written_by": command}) + "\n")


def check_replaceable(
    out: str | Path, marker: str, known: Collection[str], what: str, *, out_flag: str = "--out"
) -> None:
    """Refuse to replace ``out`` unless it is absent, empty, or ``what`` wrote it.

    A folder is ``what``'s when it carries ``marker`` and every entry in it is one of
    ``known`` (the names ``what`` writes); a file, the current directory (or a folder
    holding it) and a folder holding anything else are refused.

    Raises:
        HPAConfigError: naming ``out`` and what is in the way.
    """
    path = Path(out)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise HPAConfigError(
            f"{out_flag} {out}: exists and is not a folder; {what} replaces only its own folder"
        )
    cwd = _resolved(Path.cwd())
    if _resolved(path) == cwd or _resolved(path) in cwd.parents:
        raise HPAConfigError(f"{out_flag} {out}: is or holds the current directory; choose another folder")
    entries = sorted(os.listdir(path))
    if not entries:
        return
    if marker not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise HPAConfigError(
            f"{out_flag} {out}: the folder holds files {what} did not write ({shown}); "
            "choose a new or empty folder"
        )
    foreign = [e for e in entries if e not in known and e != marker]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise HPAConfigError(
            f"{out_flag} {out}: {what}'s folder also holds files it did not write ({shown}); "
            "move them away or choose another folder"
        )


#: The record, in a folder hpa writes into, of the entries hpa wrote there (JSON).
WRITTEN_RECORD = ".hpa-written"


def written_entries(folder: str | Path) -> set[str]:
    """The names the folder's :data:`WRITTEN_RECORD` lists (empty when absent or unreadable)."""
    try:
        data = json.loads((Path(folder) / WRITTEN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    entries = data.get("entries") if isinstance(data, dict) else None
    return {e for e in entries if isinstance(e, str)} if isinstance(entries, list) else set()


def claim_entries(folder: str | Path, names: Collection[str], what: str, *, out_flag: str = "--out") -> None:
    """Let ``what`` write the entries ``names`` into ``folder``, unless one is the user's.

    An entry of ``names`` that exists in ``folder`` (a file, a folder or a link) and is
    not listed in the folder's :data:`WRITTEN_RECORD` was not written by hpa: the call is
    refused and nothing is written. Otherwise ``folder`` is created if need be and
    ``names`` are added to the record before the command writes them, so a run killed
    halfway leaves entries its rerun knows as its own.

    Args:
        folder: the folder the command writes into (it need not exist yet).
        names: the names of the files and folders it will write directly in ``folder``.
        what: the command, for the message (``"hpa export"``).
        out_flag: how the folder is given on the command line, for the message.

    Raises:
        HPAConfigError: one line naming the first such entry and the way out.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> claim_entries(d, ["a.png"], "hpa show"); claim_entries(d, ["a.png"], "hpa show")
    >>> _ = (d / "b.png").write_text("mine")
    >>> claim_entries(d, ["a.png", "b.png"], "hpa show")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hpa.errors.HPAConfigError: --out ...: b.png was not written by hpa and hpa show would replace it; move it away or choose another --out
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise HPAConfigError(f"{out_flag} {folder}: exists and is not a folder; choose another {out_flag}")
    record = written_entries(path) if path.is_dir() else set()
    if path.is_dir() and not (path / WRITTEN_RECORD).is_file() and _written_by_earlier_hpa(path):
        record = {name for name in names if os.path.lexists(path / name)}
        log.info(
            "%s: written by an earlier hpa (no %s); its entries are taken as hpa's", path, WRITTEN_RECORD
        )
    for name in sorted(set(names)):
        if name not in record and os.path.lexists(path / name):
            raise HPAConfigError(
                f"{out_flag} {folder}: {name} was not written by hpa and {what} would replace it; "
                f"move it away or choose another {out_flag}"
            )
    if set(names) <= record and (path / WRITTEN_RECORD).is_file():
        return
    record_entries(path, names)


#: Files every hpa command of an earlier version left in the folders it wrote (the log of
#: segment, train-cells, predict and demo; the provenance record): a folder holding one and
#: no :data:`WRITTEN_RECORD` predates that record and is adopted rather than refused.
_EARLIER_HPA_MARKERS = ("run.log", "provenance.json")


def _written_by_earlier_hpa(path: Path) -> bool:
    """``path`` holds a file that only hpa writes, from before the written-entries record."""
    return any((path / name).is_file() for name in _EARLIER_HPA_MARKERS)


def record_entries(folder: str | Path, names: Collection[str]) -> None:
    """Add ``names`` to the record of what hpa wrote in ``folder`` (created if need be),
    unchecked: for entries hpa has just made itself (a copy of its own masks)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    entries = sorted(written_entries(path) | set(names))
    write_text_atomic(
        path / WRITTEN_RECORD, json.dumps({"written_by": "hpa", "entries": entries}, indent=1) + "\n"
    )


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one step (Linux renameat2); False where unsupported."""
    try:  # the C library already loaded in this process (find_library would start ldconfig)
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_in(built: str | Path, out: str | Path) -> None:
    """Put the folder ``built`` in the place of ``out`` and remove the old ``out``.

    Both must be on one filesystem (``built`` is made beside ``out``). Where the
    kernel can exchange two names atomically, ``out`` is at every moment either the old
    or the new folder; elsewhere the old folder is first renamed to a temporary name,
    so a kill in between leaves no ``out`` and the old one under that name (removed by
    the next run, :func:`hpa.io.remove_stale_temporaries`), never a mix.
    """
    built, out = Path(built), Path(out)
    if not out.exists():
        os.replace(built, out)
        return
    if _exchange(built, out):
        old = built
    else:
        old = out.with_name(temp_name(out.name))
        os.replace(out, old)
        os.replace(built, out)
    shutil.rmtree(old, ignore_errors=True)
    remove_stale_temporaries(out.parent)


#: Prefix of the folder a staged run is built in, beside its target. Unlike a
#: :func:`hpa.io.temp_name`, the name is the same for every run into one target, so a
#: killed run's resumable parts (on-the-fly masks) are found by the next run.
PARTIAL_PREFIX = ".hpa-partial-"


class StagedFolder:
    """Build a command's output folder beside it, then swap it in as a whole.

    ``with StagedFolder(out, ...) as stage:`` checks that ``out`` may be replaced
    (:func:`check_replaceable`), opens (or reuses) the folder
    ``<parent>/.hpa-partial-<name>``, locks it against a second run into the same
    target, and empties it but for the ``keep`` entries (resumable work of a killed
    run). Write everything into ``stage.path``; :meth:`commit` marks it and swaps it
    into place (:func:`swap_in`). Left without a commit (an error, a kill), ``out`` is
    untouched and the partial folder waits for the next run.
    """

    def __init__(
        self, out: str | Path, marker: str, known: Collection[str], what: str, keep: Collection[str] = ()
    ) -> None:
        self.out = Path(out)
        self.marker, self.known, self.what, self.keep = marker, known, what, keep
        self.path = self.out.parent / f"{PARTIAL_PREFIX}{self.out.name}"
        self._lock: int | None = None

    def __enter__(self) -> StagedFolder:
        import fcntl

        check_replaceable(self.out, self.marker, self.known, self.what)
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / self.marker, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HPAConfigError(
                f"--out {self.out}: another {self.what} is writing this folder now ({self.path} is locked)"
            ) from None
        self._lock = fd
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps({"written_by": self.what}) + "\n").encode())
        for entry in os.scandir(self.path):
            if entry.name in (self.marker, *self.keep):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        return self

    def commit(self) -> None:
        """Swap the finished folder into the place of ``out``."""
        swap_in(self.path, self.out)

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._lock is None:
            return
        if (
            exc_type is not None
            and self.path.is_dir()
            and set(os.listdir(self.path)) <= {self.marker, RUN_LOG}
        ):
            shutil.rmtree(self.path, ignore_errors=True)  # failed before any work: leave nothing
        os.close(self._lock)
        self._lock = None


# ---------------------------------------------------- a model folder, built beside ---

_STAGING = ".{}.hpa-staging"
_OLD = ".{}.hpa-old"


def staging_dir(target: str | Path) -> Path:
    """The folder ``hpa train-cells`` builds the model folder ``target`` in (a hidden sibling)."""
    target = Path(target)
    return target.parent / _STAGING.format(target.name)


def prepare_staging(target: str | Path, rescue: Collection[str] = ()) -> Path:
    """An empty staging folder for ``target``, after tidying up an interrupted run.

    Unlike :class:`StagedFolder`, a model folder may hold the user's own files (notes,
    an exported copy): :func:`swap_in_keeping` carries them over. A run killed during
    an older two-step swap may have left the old folder renamed away (it is put back if
    ``target`` is missing); files named in ``rescue`` (the resume checkpoint) that the
    staging folder holds and ``target`` lacks are moved into ``target`` before the
    staging folder is removed.

    Returns:
        The staging folder, created empty.
    """
    target = Path(target)
    staging, old = staging_dir(target), target.parent / _OLD.format(target.name)
    if old.is_dir():
        if target.exists():
            shutil.rmtree(old)
        else:
            log.warning("%s: restoring the previous folder left by an interrupted run", target)
            os.replace(old, target)
    if staging.is_dir():
        for name in rescue:
            if (staging / name).is_file() and not (target / name).exists():
                target.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, target / name)
        log.info("%s: removing the unfinished folder of an interrupted run", staging)
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def swap_in_keeping(staging: str | Path, target: str | Path) -> None:
    """Replace ``target`` by the finished ``staging`` folder, keeping what only ``target`` had.

    Entries of ``target`` that ``staging`` lacks (``last.ckpt``, a user's notes) are
    moved into ``staging`` first; then the two are swapped by :func:`swap_in`.
    """
    staging, target = Path(staging), Path(target)
    if target.is_dir():
        for entry in os.scandir(target):
            if not (staging / entry.name).exists():
                os.replace(entry.path, staging / entry.name)
    swap_in(staging, target)
