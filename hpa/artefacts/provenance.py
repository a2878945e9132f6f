"""``provenance.json``: what an output folder was made from (docs/artefacts.md).

Every folder hpa reuses work from (a SEG_DIR, a model folder and each fold and blend
member, a PRED_DIR and its on-the-fly ``masks/``) holds one small record: the kind of
folder, the command, the resolved settings that determine the output and a
fingerprint of every input. A rerun reuses what the folder holds (finished images,
folds, members, masks) only when its record equals the run's own; otherwise it
refuses with one line naming what differs (:func:`check_reuse`).

Fingerprints:

* an images folder: its resolved path and a SHA-256 over the sorted names and sizes of
  its sample files (not their times: a copy matches); the same digest under another
  path is the same images, moved;
* a labels file: a SHA-256 of its parsed content (Ids, label set, targets);
* a SEG_DIR or a model folder: its path and the digest of its own record.

The record holds no time and not its own folder's path, so two runs of one command on
the same inputs write the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpa.errors import HPAConfigError
from hpa.io import write_text_atomic

if TYPE_CHECKING:
    from hpa.io import Labels

log = logging.getLogger(__name__)

#: The record's file name, in the folder it describes.
RECORD_FILE = "provenance.json"
#: The record format's version (a newer hpa reads older ones; an unknown one is an error).
VERSION = 1
#: The kinds of folder a record describes.
KINDS = ("segdir", "model", "model-folds", "blend", "preddir", "bioimageio", "export", "synth")
#: How each kind is named in messages.
KIND_NAMES = {
    "segdir": "a segmentation folder",
    "model": "a plain model",
    "model-folds": "a --folds ensemble",
    "blend": "a blend of a model and its companion",
    "preddir": "a prediction folder",
    "bioimageio": "a bioimage.io model export",
    "export": "an export of a prediction run",
    "synth": "a synthetic dataset",
}
#: The way out of a refused reuse.
WAY_OUT = "use another --out, or --overwrite to rebuild it"


@dataclass(frozen=True)
class Fingerprint:
    """One input of a run.

    Attributes:
        path: the input's resolved path (None: not a file, e.g. labels passed in memory).
        sha256: the digest of its content (None: not known, e.g. a SEG_DIR without a record).
    """

    path: str | None
    sha256: str | None


@dataclass(frozen=True)
class Provenance:
    """What a folder was made from.

    Attributes:
        kind: one of :data:`KINDS`.
        command: the command that wrote it (``hpa segment``, ...).
        settings: the resolved settings that determine the output (JSON values).
        inputs: input name (``images``, ``labels``, ``masks``, ``model``) -> its
            fingerprints (several for several sources), in order.
        version: the record format (:data:`VERSION`).

    >>> a = Provenance("segdir", "hpa segment", {"backend": "watershed"}, {"images": (Fingerprint("/a", "1"),)})
    >>> Provenance.from_json(a.to_json()) == a
    True
    """

    kind: str
    command: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, tuple[Fingerprint, ...]] = field(default_factory=dict)
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values."""
        return {
            "version": self.version,
            "kind": self.kind,
            "command": self.command,
            "settings": _plain(dict(self.settings)),
            "inputs": {k: [{"path": f.path, "sha256": f.sha256} for f in v] for k, v in self.inputs.items()},
        }

    def to_json(self) -> str:
        """The record as canonical JSON (sorted keys): equal records, equal bytes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def digest(self) -> str:
        """A SHA-256 of the record: how a folder made from this one fingerprints it."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def inputs_digest(self) -> str:
        """A SHA-256 of the inputs alone (what a resume checkpoint records of them)."""
        text = json.dumps(self.to_dict()["inputs"], sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @classmethod
    def from_json(cls, text: str, source: str = "provenance.json") -> Provenance:
        """Parse a record.

        Raises:
            HPAConfigError: not a record of a known version; names ``source``.
        """
        try:
            data = json.loads(text)
            version = int(data["version"])
            inputs = {
                str(k): tuple(Fingerprint(f.get("path"), f.get("sha256")) for f in v)
                for k, v in data.get("inputs", {}).items()
            }
            record = cls(
                str(data["kind"]), str(data["command"]), dict(data.get("settings", {})), inputs, version
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HPAConfigError(f"{source}: not a valid provenance record ({exc}); {WAY_OUT}") from None
        if version > VERSION or record.kind not in KINDS:
            raise HPAConfigError(
                f"{source}: provenance record of version {version}, kind {record.kind!r} "
                f"(this hpa reads version {VERSION}); {WAY_OUT}"
            )
        return record


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and paths as text (as JSON stores them)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------ fingerprints ---


def _resolved(path: str | Path) -> str:
    return os.path.realpath(Path(path).expanduser())


def images_fingerprint(images_dir: str | Path) -> Fingerprint:
    """An images folder: its resolved path, and a SHA-256 over its sample files' names and sizes.

    Sample files are the channel files (``<Id>_<colour>.<ext>``) and multi-channel
    TIFFs (:mod:`hpa.io_tiff`); other files do not count. Modification times do not
    either, so a copy of the folder has the same digest.
    """
    path = _resolved(images_dir)
    return Fingerprint(path, _images_digest(path, os.stat(path).st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _images_digest(path: str, mtime_ns: int) -> str:
    """The digest of :func:`images_fingerprint`, once per folder and listing (its mtime):
    a blend of folds fingerprints its images many times (about 0.5 s per 20,000 files)."""
    from hpa.io import _CHANNEL_FILE
    from hpa.io_tiff import stack_id

    rows = sorted(
        f"{e.name}\t{e.stat().st_size}\n"
        for e in os.scandir(path)
        if e.is_file() and (_CHANNEL_FILE.match(e.name) or stack_id(e.name) is not None)
    )
    return hashlib.sha256("".join(rows).encode("utf-8")).hexdigest()


def labels_digest(labels: Labels) -> str:
    """A SHA-256 of image labels: label set, Ids in order and targets.

    >>> import numpy as np
    >>> from hpa.io import Labels
    >>> labels_digest(Labels(("a",), np.ones((1, 28), np.uint8), "2018"))[:12]
    '407c046db35a'
    """
    import numpy as np

    digest = hashlib.sha256(labels.label_set.encode())
    digest.update("\n".join(labels.ids).encode())
    digest.update(np.ascontiguousarray(labels.y, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def labels_fingerprint(labels: Labels) -> Fingerprint:
    """The labels of a run (their content: a reformatted or moved file is the same labels)."""
    return Fingerprint(None, labels_digest(labels))


def folder_fingerprint(folder: str | Path) -> Fingerprint:
    """A SEG_DIR or model folder: its resolved path and the digest of its record (None without one)."""
    record = read_record(folder)
    return Fingerprint(_resolved(folder), record.digest() if record is not None else None)


def fingerprints(paths: Iterable[str | Path], how: Any) -> tuple[Fingerprint, ...]:
    """``how(path)`` of each distinct path, in sorted order (the sources of a combined run)."""
    return tuple(how(p) for p in sorted({str(p) for p in paths}))


# ------------------------------------------------------------ read, write ---


def read_record(folder: str | Path) -> Provenance | None:
    """The record of ``folder`` (None when it has none: written before records, or by hand).

    Raises:
        HPAConfigError: the file is there but not a record.
    """
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HPAConfigError(f"{path}: unreadable provenance record ({exc}); {WAY_OUT}") from None
    return Provenance.from_json(text, str(path))


def write_record(folder: str | Path, record: Provenance) -> None:
    """Write ``folder/provenance.json``, atomically."""
    write_text_atomic(Path(folder) / RECORD_FILE, record.to_json())


def remove_record(folder: str | Path) -> None:
    """Remove ``folder/provenance.json`` (before a folder is rebuilt in place)."""
    (Path(folder) / RECORD_FILE).unlink(missing_ok=True)


# ------------------------------------------------------------ compare ---


def _shown(prints: tuple[Fingerprint, ...]) -> str:
    return ", ".join(f.path or "(in memory)" for f in prints) or "(none)"


def _compare(name: str, old: tuple[Fingerprint, ...], new: tuple[Fingerprint, ...]) -> str:
    """How an input of a record compares with this run's.

    Returns:
        ``same``; ``moved`` (same content under another path); ``changed`` (an images
        folder at the same path whose files changed since: images added or replaced);
        ``differ`` (another input). Where a digest is unknown, the paths decide.
    """
    if len(old) != len(new):
        return "differ"
    verdicts = set()
    for a, b in zip(old, new):
        if a.sha256 is not None and b.sha256 is not None and a.sha256 == b.sha256:
            verdicts.add("same" if a.path == b.path else "moved")
        elif a.path is not None and a.path == b.path and (name == "images" or None in (a.sha256, b.sha256)):
            verdicts.add("changed" if a.sha256 != b.sha256 and name == "images" else "same")
        else:
            return "differ"
    for verdict in ("changed", "moved"):
        if verdict in verdicts:
            return verdict
    return "same"


def differences(recorded: Provenance, current: Provenance) -> dict[str, str]:
    """What differs between a folder's record and this run's, by field name.

    Inputs are compared by content: one at another path with the same digest is the
    same input (moved); an images folder at the same path whose files changed since
    (images added) is the same folder (:func:`input_notes` tells both). Settings are
    compared one by one.

    Returns:
        field name (``kind``, ``images``, ``labels``, ``masks``, ``model``,
        ``settings.<name>``) -> ``"recorded vs now"``; empty when they match.

    >>> a = Provenance("segdir", "hpa segment", {"k": 1}, {"images": (Fingerprint("/a/test", "1"),)})
    >>> b = Provenance("segdir", "hpa segment", {"k": 2}, {"images": (Fingerprint("/b/test", "2"),)})
    >>> differences(a, b)
    {'images': '/a/test vs /b/test', 'settings.k': '1 vs 2'}
    >>> differences(a, Provenance("segdir", "x", {"k": 1}, {"images": (Fingerprint("/moved", "1"),)}))
    {}
    """
    diff: dict[str, str] = {}
    if recorded.kind != current.kind:
        old_kind, new_kind = (KIND_NAMES.get(k, k) for k in (recorded.kind, current.kind))
        diff["kind"] = f"{old_kind} vs {new_kind}"
    for name in dict.fromkeys([*recorded.inputs, *current.inputs]):
        old, new = recorded.inputs.get(name, ()), current.inputs.get(name, ())
        if _compare(name, old, new) == "differ":
            same_paths = _shown(old) == _shown(new)
            diff[name] = "other content" if same_paths and old and new else f"{_shown(old)} vs {_shown(new)}"
    old_settings, new_settings = _plain(dict(recorded.settings)), _plain(dict(current.settings))
    for key in dict.fromkeys([*old_settings, *new_settings]):
        before, now = old_settings.get(key, "(unset)"), new_settings.get(key, "(unset)")
        if before != now:
            diff[f"settings.{key}"] = f"{before} vs {now}"
    return diff


def input_notes(recorded: Provenance, current: Provenance) -> list[str]:
    """The inputs accepted though not identical: moved (same content) or changed in place."""
    notes = []
    for name, new in current.inputs.items():
        old = recorded.inputs.get(name, ())
        verdict = _compare(name, old, new)
        if verdict == "moved":
            notes.append(f"{name}: the same content, moved from {_shown(old)} to {_shown(new)}")
        elif verdict == "changed":
            notes.append(f"{name}: {_shown(new)} changed since (images added or replaced)")
    return notes


def mismatch_message(folder: str | Path, diff: Mapping[str, str], way_out: str = WAY_OUT) -> str:
    """The one line that refuses a reuse: the folder, what differs, the way out.

    >>> mismatch_message("seg", {"images": "/a/test vs /b/test"})
    'seg: holds the output of other inputs or settings (images differ: /a/test vs /b/test); use another --out, or --overwrite to rebuild it'
    """
    shown = "; ".join(
        f"{k} differ: {v}" if not k.startswith("settings.") else f"{k}: {v}" for k, v in diff.items()
    )
    return f"{folder}: holds the output of other inputs or settings ({shown}); {way_out}"


def check_reuse(folder: str | Path, current: Provenance, *, overwrite: bool = False, what: str = "") -> bool:
    """May the work in ``folder`` be reused by a run described by ``current``?

    Args:
        folder: the folder holding earlier work.
        current: this run's record.
        overwrite: on a mismatch, answer False (rebuild) instead of refusing.
        what: how the folder is named in the log (default: its path).

    Returns:
        True when the records match, or the folder has no record (written before records:
        reused as before, and logged); False on a mismatch with ``overwrite``.

    Raises:
        HPAConfigError: the records differ and ``overwrite`` is False (:func:`mismatch_message`).
    """
    recorded = read_record(folder)
    if recorded is None:
        log.info(
            "%s: no provenance record (an older hpa wrote it); reused without checking its inputs",
            what or folder,
        )
        return True
    diff = differences(recorded, current)
    if not diff:
        for line in input_notes(recorded, current):
            log.warning("%s: reused; %s", what or folder, line)
        return True
    if overwrite:
        log.info(
            "%s: %s; rebuilding it (--overwrite)",
            what or folder,
            "; ".join(f"{k}: {v}" for k, v in diff.items()),
        )
        return False
    raise HPAConfigError(mismatch_message(folder, diff))


def claim_record(folder: str | Path, current: Provenance, *, way_out: str) -> None:
    """Let a run add its files to ``folder`` only when the folder holds its kind of output.

    For the folders a command adds to file by file and never rebuilds (an export, a
    synthetic dataset): an earlier record of other inputs or settings refuses the run, so
    the folder never mixes two runs' files; a matching one (or none) lets it go on, and
    this run's record is written before its files. Call it after claiming the names
    (:func:`hpa.outputs.claim_entries`, :data:`RECORD_FILE` among them).

    Raises:
        HPAConfigError: the folder's record differs (:func:`mismatch_message` with ``way_out``).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> claim_record(d, Provenance("synth", "hpa synth", {"seed": 1}), way_out="use another OUT")
    >>> claim_record(d, Provenance("synth", "hpa synth", {"seed": 2}), way_out="use another OUT")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hpa.errors.HPAConfigError: ...: holds the output of other inputs or settings (settings.seed: 1 vs 2); use another OUT
    """
    recorded = read_record(folder)
    if recorded is not None:
        diff = differences(recorded, current)
        if diff:
            raise HPAConfigError(mismatch_message(folder, diff, way_out))
        for line in input_notes(recorded, current):
            log.warning("%s: added to; %s", folder, line)
    write_record(folder, current)


def check_masks_images(seg_dir: str | Path, images_dir: str | Path, *, flag: str = "--masks") -> None:
    """Refuse the masks of another images folder (a consumer checking its producer).

    The SEG_DIR's record names the images it was made from. The same digest under
    another path is accepted (the folder moved, logged); the same path whose files
    changed since is accepted with a warning; anything else is refused. A SEG_DIR
    without a record (an older hpa, or masks made by hand) is accepted, logged.

    Raises:
        HPAConfigError: one line naming both images folders and the way out.
    """
    record = read_record(seg_dir)
    made = record.inputs.get("images", ()) if record is not None else ()
    if not made:
        log.info("%s %s: no provenance record; not checked against the images %s", flag, seg_dir, images_dir)
        return
    now = images_fingerprint(images_dir)
    verdicts = [_compare("images", (f,), (now,)) for f in made]
    if "same" in verdicts:
        return
    if "moved" in verdicts or "changed" in verdicts:
        how = "the same files, moved" if "moved" in verdicts else "the folder changed since"
        log.warning("%s %s: made from %s, used for %s (%s)", flag, seg_dir, _shown(made), now.path, how)
        return
    raise HPAConfigError(
        f"{flag} {seg_dir}: masks of another images folder (images differ: {_shown(made)} vs {now.path}); "
        f"segment {images_dir} with hpa segment and give those masks"
    )
