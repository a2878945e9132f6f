"""Writing an output folder as a whole: build it beside the target, then swap it in.

A run writes into ``.<name>.hpa-staging`` beside the target folder ``<name>``; at the
end :func:`swap_in` moves into it whatever the old folder holds that the run did not
write (a resume checkpoint, the user's own files), renames the old folder away, renames
the new one into place and removes the old one. A reader of ``<name>`` therefore sees
either the previous run's complete folder or the new one, never a mix; a killed run
leaves the previous folder as it was, and :func:`prepare_staging` tidies up after it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_STAGING = ".{}.hpa-staging"
_OLD = ".{}.hpa-old"


def staging_dir(target: str | Path) -> Path:
    """The folder a run builds ``target`` in (a hidden sibling with a name of ours)."""
    target = Path(target)
    return target.parent / _STAGING.format(target.name)


def prepare_staging(target: str | Path, rescue: Sequence[str] = ()) -> Path:
    """An empty staging folder for ``target``, after tidying up an interrupted run.

    A run killed during :func:`swap_in` may have left the old folder renamed away (it
    is put back if ``target`` is missing) and a staging folder; files named in
    ``rescue`` (a resume checkpoint) that the staging folder holds and ``target`` lacks
    are moved back into ``target`` before the staging folder is removed.

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


def swap_in(staging: str | Path, target: str | Path) -> None:
    """Replace ``target`` by the finished ``staging`` folder, keeping what only ``target`` had.

    Entries of ``target`` that ``staging`` lacks (e.g. ``last.ckpt``, a user's notes)
    are moved into ``staging`` first; then ``target`` is renamed away, ``staging``
    renamed to ``target``, and the old folder removed.
    """
    staging, target = Path(staging), Path(target)
    old = target.parent / _OLD.format(target.name)
    if target.is_dir():
        for entry in os.scandir(target):
            if not (staging / entry.name).exists():
                os.replace(entry.path, staging / entry.name)
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)
