"""Imported by the multiprocessing fork server only (:func:`hpa.parallel.process_pool` preloads it).

The fork server outlives the pools of a run and exits when its main process closes
the pipe between them, which happens only as that process ends: after a clean exit
has removed the main process's ``pymp-*`` folder (which holds the fork server's
socket), or on a kill, which leaves it behind. The fork server removes it on its way
out in both cases.
"""

from __future__ import annotations

import atexit
import os
import shutil

#: Set by :func:`hpa.parallel.process_pool`: ``"<main pid>:<its multiprocessing folder>"``.
TEMPDIR_ENV = "HPA_MP_TEMPDIR"


def _folder_of_parent() -> str | None:
    """The folder named by the environment when this process's parent set it, else None."""
    pid, _, folder = os.environ.get(TEMPDIR_ENV, "").partition(":")
    return folder if pid.isdigit() and int(pid) == os.getppid() and folder else None


_FOLDER = _folder_of_parent()
if _FOLDER is not None:
    atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
