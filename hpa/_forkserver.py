"""Imported by the multiprocessing fork server only (:func:`hpa.parallel.process_pool` preloads it).

The fork server outlives the pools of a run and exits when its main process closes
the pipe between them, which happens only as that process ends: after a clean exit
has removed the main process's ``pymp-*`` folder (which holds the fork server's
socket), or on a kill, which leaves it behind. The fork server removes it on its way
out in both cases.

When the main process is a plain script (``python script.py``), the fork server gives
its own ``__main__`` that script's path, so the workers it forks take the script as
imported already and never run it again: a script without
``if __name__ == "__main__":`` calling the API works (:func:`hpa.parallel._main_script`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys

#: Set by :func:`hpa.parallel.process_pool`: ``"<main pid>:<its multiprocessing folder>"``.
TEMPDIR_ENV = "HPA_MP_TEMPDIR"
#: Set by :func:`hpa.parallel.process_pool` when the main module is a plain script: its path.
MAIN_SCRIPT_ENV = "HPA_MP_MAIN_SCRIPT"


def _folder_of_parent() -> str | None:
    """The folder named by the environment when this process's parent set it, else None.

    A main process killed while the fork server was still starting has re-parented it
    before this import runs: the folder is then taken when the process that named it
    has ended (its folder is nobody's any more), so that a kill in that window leaves
    nothing behind either.
    """
    pid, _, folder = os.environ.get(TEMPDIR_ENV, "").partition(":")
    if not (pid.isdigit() and folder):
        return None
    if int(pid) == os.getppid():
        return folder
    from hpa.parallel import _ended

    return folder if _ended(int(pid)) else None


_FOLDER = _folder_of_parent()
if _FOLDER is not None:
    atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
    _SCRIPT = os.environ.get(MAIN_SCRIPT_ENV)
    _MAIN = sys.modules.get("__main__")
    if _SCRIPT and _MAIN is not None and getattr(_MAIN, "__spec__", None) is None:
        # multiprocessing's spawn.prepare() skips the import of a main path equal to this
        _MAIN.__file__ = _SCRIPT
