"""Exceptions shared by every stage (kept free of heavy imports).

Every error meant for the user derives from :class:`HPAError`; the ``hpa`` command
prints such an error as one line naming the file or flag at fault and exits non-zero
(the traceback only with ``-v``).
"""


class HPAError(Exception):
    """Base class of every error ``hpa`` reports to its user."""


class HPADataError(HPAError, ValueError):
    """An input file is missing, unreadable or not what HPA data looks like."""


class HPAConfigError(HPAError, ValueError):
    """A flag, a settings file or a model/output folder is invalid or inconsistent."""


class HPAClusterError(HPAError, RuntimeError):
    """The Dask cluster cannot run the job (dask missing, no workers, no shared folder)."""


#: errno values of a disk the user must free, unlock or get access to.
_DISK_ERRNOS = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is exceeded",
                "EROFS": "the filesystem is read-only", "EACCES": "permission denied",
                "EPERM": "operation not permitted"}  # fmt: skip


def user_message(exc: BaseException) -> str | None:
    """One line telling the user what went wrong, or None for an unexpected error (a bug).

    Covers every :class:`HPAError`, a missing file or folder, a full, read-only or
    forbidden disk (the message names the path), and a worker process that died.

    >>> import errno
    >>> user_message(OSError(errno.ENOSPC, "No space left on device", "/out/a.png"))
    '/out/a.png: cannot write: the disk is full (No space left on device)'
    """
    import errno
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, HPAError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return (
            "a worker process died abruptly (killed, e.g. by the out-of-memory killer, or crashed); "
            "rerun the command (finished work is kept), with fewer --workers if memory is short"
        )
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, "")
        path = exc.filename or "?"
        if name in _DISK_ERRNOS:
            action = "cannot write" if name in ("ENOSPC", "EDQUOT", "EROFS") else "cannot access"
            where = f"{exc.filename}: " if exc.filename else ""
            return f"{where}{action}: {_DISK_ERRNOS[name]} ({exc.strerror})"
        if name in ("ENOENT", "ENOTDIR", "EISDIR", "EEXIST", "ENOTEMPTY") and exc.filename:
            return f"{path}: {exc.strerror}"
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return str(exc)
    return None


def detail(exc: BaseException, path: object) -> str:
    """A library's error text for a message that names ``path`` already: without the path.

    >>> detail(OSError("Could not open '/a/b.parquet': too small"), "/a/b.parquet")
    'Could not open the file: too small'
    """
    text = str(exc)
    name = str(path)
    for quoted in (f"'{name}'", f'"{name}"', name):
        text = text.replace(quoted, "the file")
    return text


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (``hpa`` CLI only).

    It takes the path of Ctrl-C: ``finally`` blocks remove temporary files, worker pools
    stop their workers, and the command exits with status 143 (128 + SIGTERM).
    """
