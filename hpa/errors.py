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


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (``hpa`` CLI only).

    It takes the path of Ctrl-C: ``finally`` blocks remove temporary files, worker pools
    stop their workers, and the command exits with status 143 (128 + SIGTERM).
    """
