"""Reading and writing HPA data: 4-channel samples, label CSVs, label images.

Samples are stored one grey file per channel, ``<Id>_<color>.<ext>``, as in the Kaggle
2018 (512 px, 8-bit PNG) and 2021 (1728-3072 px, 8- or 16-bit PNG) competitions, the
HPAv18 external downloads (JPEG) and TIFF exports. :func:`read_sample` returns an
``(H, W, 4)`` array in :data:`hpa.constants.CHANNELS` order with the file's dtype.

Every problem with an input raises :class:`HPADataError` whose message names the file.
Every writer here writes to a temporary file in the target folder and renames it into
place, so a killed run never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from hpa.constants import CHANNELS, IMAGE_EXTENSIONS, LABEL_SETS
from hpa.errors import HPADataError, detail

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from hpa.io_tiff import ChannelMap

# --------------------------------------------------------------------------- ids ---

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_image_id(image_id: str) -> str:
    """Return ``image_id`` if it is a plain file-name stem, else raise.

    An Id comes from a CSV and is joined to a folder: it must not contain a path
    separator, ``..`` or anything else that would escape that folder.

    >>> check_image_id("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0")
    '000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0'
    """
    if not isinstance(image_id, str) or not _SAFE_ID.fullmatch(image_id) or ".." in image_id:
        raise HPADataError(
            f"invalid image Id {image_id!r}: an Id must be a plain name (letters, digits, "
            "'-', '_', '.'), without path separators or '..'"
        )
    return image_id


_CHANNEL_FILE = re.compile(
    r"^(.+)_(" + "|".join(CHANNELS) + r")(" + "|".join(re.escape(e) for e in IMAGE_EXTENSIONS) + r")$",
    re.IGNORECASE,
)

# folder -> (its mtime, {(Id, colour): [file names]}): one listing per folder and change
_LISTINGS: dict[str, tuple[int, dict[tuple[str, str], list[str]]]] = {}


def _channel_files(images_dir: Path, fresh: bool = False) -> dict[tuple[str, str], list[str]]:
    """``(Id, lower-case colour) -> file names`` of every channel file in a folder.

    Colour and extension match in any case (``X_RED.PNG`` as some exports write it);
    the Id keeps its case. The listing is cached until the folder's mtime changes; one
    read within a second of the last change is not trusted (an mtime is coarser than a
    nanosecond, so a file added just after it could leave it unchanged), nor is any with
    ``fresh``.
    """
    key = str(images_dir.resolve())
    mtime = images_dir.stat().st_mtime_ns
    cached = _LISTINGS.get(key)
    if not fresh and cached is not None and cached[0] == mtime:
        return cached[1]
    settled = time.time_ns() - mtime > 1_000_000_000
    files: dict[tuple[str, str], list[str]] = {}
    for entry in os.scandir(images_dir):
        m = _CHANNEL_FILE.match(entry.name)
        if m:
            files.setdefault((m.group(1), m.group(2).lower()), []).append(entry.name)
    for names in files.values():
        names.sort()
    if settled:
        _LISTINGS[key] = (mtime, files)
    return files


def channel_path(images_dir: str | Path, image_id: str, color: str) -> Path:
    """Path of one channel file of a sample: ``<Id>_<color>.<ext>``, any supported extension.

    Colour and extension are matched in any case (``<Id>_RED.PNG`` too).

    Raises:
        HPADataError: no file for this channel exists, or several do (``.png`` and
            ``.tif``, say), which would make the choice arbitrary; names them.
    """
    check_image_id(image_id)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise HPADataError(f"{images_dir}: not a folder")
    names = _channel_files(images_dir).get((image_id, color.lower()), [])
    if len(names) > 1:
        raise HPADataError(
            f"{images_dir}: Id {image_id} has {len(names)} {color} channel files ({', '.join(names)}); "
            "which one to read is ambiguous: keep one"
        )
    if names:
        return images_dir / names[0]
    tried = ", ".join(f"{image_id}_{color}{ext}" for ext in IMAGE_EXTENSIONS)
    raise HPADataError(f"{images_dir}: missing {color} channel for Id {image_id} (tried {tried})")


def list_image_ids(images_dir: str | Path) -> list[str]:
    """Sorted Ids of the samples in a folder (every Id with at least one channel file).

    Multi-channel TIFF / OME-TIFF files (``<Id>.tif``, ``<Id>.ome.tif``, see
    :mod:`hpa.io_tiff`) count as samples too.
    """
    from hpa.io_tiff import list_stack_ids

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise HPADataError(f"{images_dir}: not a folder")
    ids = {image_id for image_id, _ in _channel_files(images_dir, fresh=True)}
    return sorted(ids.union(list_stack_ids(images_dir)))


def check_folder_ids(images_dir: str | Path, ids: Sequence[str]) -> None:
    """Check, before any work, that every Id of ``ids`` can be named and looked up.

    An Id that is not a plain name (:func:`check_image_id`) or that has two files for
    one channel is an error; a missing channel is not (it is that image's failure).

    Raises:
        HPADataError: names the offending file(s) and how many Ids are affected.
    """
    images_dir = Path(images_dir)
    files = _channel_files(images_dir, fresh=True)
    bad: list[str] = []
    for image_id in ids:
        try:
            check_image_id(image_id)
        except HPADataError as exc:
            names = [n for c in CHANNELS for n in files.get((image_id, c), [])]
            bad.append(f"{', '.join(names) or image_id}: {exc}")
            continue
        for color in CHANNELS:
            if len(files.get((image_id, color), [])) > 1:
                try:
                    channel_path(images_dir, image_id, color)
                except HPADataError as exc:
                    bad.append(str(exc))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise HPADataError(f"{images_dir}: {bad[0]}{more}; fix the file names before running")


# ----------------------------------------------------------------------- images ---


def read_grey(path: str | Path) -> np.ndarray:
    """Read one grey channel image, keeping its dtype (uint8 or uint16).

    A colour file is accepted only where its non-blank colour planes are identical
    (a grey image saved as RGB, or an HPAv18 download where e.g. the red channel is
    stored in the red plane alone; for a lossy JPEG "blank" and "identical" are judged
    with a tolerance and the used planes are averaged); anything else is an error.

    Returns:
        ``(H, W)`` array, uint8 or uint16.

    Raises:
        HPADataError: the file is missing, truncated, corrupt, or not grey.
    """
    path = Path(path)
    if not path.is_file():
        raise HPADataError(f"{path}: file not found")
    _check_format(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            img = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for broken files
            raise HPADataError(f"{path}: cannot read TIFF ({detail(exc, path)})") from exc
    else:
        data = np.fromfile(path, dtype=np.uint8)
        if path.suffix.lower() == ".png" and not _png_complete(data):
            raise HPADataError(f"{path}: truncated or corrupt PNG (no IEND chunk)")
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if decoded is None:
            raise HPADataError(f"{path}: cannot decode image (corrupt or not an image)")
        img = decoded
    img = np.asarray(img)
    if img.ndim == 3:
        img = _colour_to_grey(img, path)
    if img.ndim != 2:
        raise HPADataError(f"{path}: expected a 2-D grey image, got shape {img.shape}")
    if img.dtype not in (np.uint8, np.uint16):
        if img.dtype == np.float32 or img.dtype == np.float64:
            raise HPADataError(f"{path}: floating-point images are not supported (got {img.dtype})")
        raise HPADataError(f"{path}: unsupported pixel type {img.dtype} (expected 8 or 16 bit)")
    return img


# file format -> (its extensions, the signatures its files start with)
_FORMATS = {
    "PNG": ((".png",), (b"\x89PNG\r\n\x1a\n",)),
    "JPEG": ((".jpg", ".jpeg"), (b"\xff\xd8\xff",)),
    "TIFF": ((".tif", ".tiff"), (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
}


def _check_format(path: Path) -> None:
    """Raise when a file's first bytes say it is another image format than its name says."""
    with path.open("rb") as fh:
        head = fh.read(8)
    actual = next((name for name, (_, sigs) in _FORMATS.items() if head.startswith(sigs)), None)
    named = next((name for name, (exts, _) in _FORMATS.items() if path.suffix.lower() in exts), None)
    if actual is not None and named is not None and actual != named:
        ext = _FORMATS[actual][0][0]
        raise HPADataError(f"{path}: a {actual} file named {path.suffix}; rename it to {ext}")


def _png_complete(data: np.ndarray) -> bool:
    # libpng decodes a truncated file into a partly black image with a warning only.
    return data.size >= 12 and bytes(data[-12:]).find(b"IEND") >= 0


def _colour_to_grey(img: np.ndarray, path: Path) -> np.ndarray:
    if img.shape[-1] not in (3, 4):
        raise HPADataError(f"{path}: expected a grey image, got shape {img.shape}")
    planes = [img[..., i] for i in range(3)]  # alpha ignored
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return _lossy_colour_to_grey(planes, path)
    used = [p for p in planes if p.any()]
    if not used:
        return planes[0]
    if all(np.array_equal(used[0], p) for p in used[1:]):
        return used[0]
    raise HPADataError(
        f"{path}: expected a single-channel grey image, got a colour image whose colour "
        "planes differ; save each channel as its own grey file"
    )


def _lossy_colour_to_grey(planes: list[np.ndarray], path: Path) -> np.ndarray:
    # JPEG (YCbCr, subsampled chroma) leaks some of each plane into the others, so an
    # HPAv18 red-only plane never decodes with exactly blank green and blue, nor a yellow
    # one with exactly equal red and green. Judge with tolerances instead: a plane is
    # used when its mean reaches a quarter of the brightest plane's; used planes must
    # agree to a mean absolute difference of 20% of that mean (JPEG gives ~5-8%, two
    # different stains 50% and more); they are averaged.
    means = [float(p.mean()) for p in planes]
    top = max(means)
    if top == 0:
        return planes[0]
    used = [p for p, m in zip(planes, means, strict=True) if m >= 0.25 * top]
    for p in used[1:]:
        diff = float(np.abs(used[0].astype(np.float32) - p.astype(np.float32)).mean())
        if diff > max(2.0, 0.2 * top):
            raise HPADataError(
                f"{path}: expected a single-channel grey image, got a colour JPEG whose "
                f"colour planes differ (mean difference {diff:.1f}); save each channel as its own grey file"
            )
    if len(used) == 1:
        return used[0]
    mean = np.mean(np.stack(used), axis=0)
    return np.round(mean).astype(used[0].dtype)


def sample_paths(images_dir: str | Path, image_id: str) -> list[Path]:
    """The file(s) of one sample: its multi-channel TIFF, else its four channel files.

    Raises:
        HPADataError: the sample has no file, or has both kinds.
    """
    from hpa.io_tiff import stack_path

    check_image_id(image_id)
    stack = stack_path(images_dir, image_id)
    if stack is None:
        return [channel_path(images_dir, image_id, c) for c in CHANNELS]
    files = _channel_files(Path(images_dir))
    if any((image_id, c) in files for c in CHANNELS):
        raise HPADataError(
            f"{images_dir}: Id {image_id} has both {stack.name} and per-channel files; keep one"
        )
    return [stack]


def read_sample(images_dir: str | Path, image_id: str, channel_map: ChannelMap | None = None) -> np.ndarray:
    """Read the four channels of one sample.

    Args:
        images_dir: folder holding ``<Id>_{red,green,blue,yellow}.<ext>`` files, or
            one multi-channel ``<Id>.tif`` / ``<Id>.ome.tif`` per sample.
        image_id: the sample's Id.
        channel_map: which channel of a multi-channel file is which
            (:class:`hpa.io_tiff.ChannelMap`); per-channel files take none.

    Returns:
        ``(H, W, 4)`` array in red, green, blue, yellow order; uint8 or uint16 as stored.

    Raises:
        HPADataError: a channel is missing or unreadable, the channels differ in
            size or bit depth, or a channel map is given for per-channel files.
    """
    paths = sample_paths(images_dir, image_id)
    if len(paths) == 1:
        from hpa.io_tiff import read_stack

        return read_stack(paths[0], channel_map)
    if channel_map is not None:
        raise HPADataError(
            f"{images_dir}: Id {image_id} is stored as per-channel files; "
            f"--channel-map {channel_map.spec!r} applies to multi-channel TIFFs only"
        )
    planes = [read_grey(p) for p in paths]
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        detail = ", ".join(f"{p.name} {a.shape[1]}x{a.shape[0]}" for p, a in zip(paths, planes, strict=True))
        raise HPADataError(f"Id {image_id}: channels differ in size ({detail})")
    dtypes = {p.dtype for p in planes}
    if len(dtypes) != 1:
        detail = ", ".join(f"{p.name} {a.dtype}" for p, a in zip(paths, planes, strict=True))
        raise HPADataError(f"Id {image_id}: channels differ in bit depth ({detail})")
    return np.stack(planes, axis=-1)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale an integer image to float32 in [0, 1] by its dtype's range.

    uint8 is divided by 255 and uint16 by 65535; float input is clipped to [0, 1].

    >>> to_float(np.array([[0, 255]], dtype=np.uint8)).tolist()
    [[0.0, 1.0]]
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image, 0.0, 1.0).astype(np.float32)
    raise TypeError(f"unsupported dtype {image.dtype}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a uint8/uint16/float image to uint8 by its dtype's range."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return np.round(to_float(image) * 255.0).astype(np.uint8)


def percentile_stretch(image: np.ndarray, low: float = 0.5, high: float = 99.8) -> np.ndarray:
    """Contrast-stretch each channel of an image to float32 [0, 1] by percentiles.

    Works alike for 8- and 16-bit input (a 16-bit image that uses only 12 bits is
    stretched to the full range). ``image`` is ``(H, W)`` or ``(H, W, C)``.
    """
    img = image.astype(np.float32)
    if img.ndim == 2:
        img = img[..., None]
    out = np.empty_like(img)
    for c in range(img.shape[-1]):
        lo, hi = np.percentile(img[..., c], (low, high))
        out[..., c] = np.clip((img[..., c] - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return out[..., 0] if image.ndim == 2 else out


# ------------------------------------------------------------------ atomic output ---


#: Every temporary file or folder hpa writes is named ``.hpa-tmp-<pid>-<random>-<name>``:
#: the pid of the writing process tells a leftover of a killed run (pid gone) from the
#: work of a live one, and nothing a user names by hand looks like it.
TEMP_PREFIX = ".hpa-tmp-"
_TEMP_NAME = re.compile(r"^\.hpa-tmp-(\d+)-[0-9a-f]{8}-.+$")


def temp_name(name: str) -> str:
    """A unique temporary name for ``name``, owned by this process.

    >>> temp_name("cells.parquet").startswith(f".hpa-tmp-{os.getpid()}-")
    True
    """
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}"


def temp_owner(name: str) -> int | None:
    """The pid in a :func:`temp_name`, or None when ``name`` is not one of ours."""
    m = _TEMP_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists but is not ours
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the :func:`temp_name` files and folders in ``folder`` whose process is gone.

    Only names of the exact ``.hpa-tmp-<pid>-<random>-<name>`` form are touched, and only
    when no process ``<pid>`` is alive: the temporaries of a live run and every file a
    user made stay.

    Returns:
        The paths removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in os.scandir(folder):
        pid = temp_owner(entry.name)
        if pid is None or pid_alive(pid):
            continue
        path = Path(entry.path)
        log.info("removing %s, left by an interrupted run", path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary is named by :func:`temp_name`. On an exception it is removed and
    ``path`` is left untouched. A write that fails for want of space (an ``OSError``
    without a file name, as ``write()`` raises, or a library's own error on a full
    disk) is raised as ``OSError(ENOSPC)`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / temp_name(path.name)
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the usual open() mode
    os.close(fd)
    try:
        with write_errors_name(path, tmp_path):
            yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def write_errors_name(path: str | Path, written: str | Path | None = None) -> Iterator[None]:
    """Raise a failed write inside the block as an ``OSError`` that names ``path``.

    ``write()`` raises ``OSError(ENOSPC)`` without a file name, and libraries raise
    their own errors on a full disk (torch's ``RuntimeError: file write failed``,
    Arrow's ``OSError`` without errno); each becomes ``OSError(errno, ..., path)``, so
    the user reads which file could not be written and why. ``written`` is the file
    actually written (a temporary), whose filesystem is checked for free space.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        if exc.errno is None and _disk_full(Path(written or path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    except Exception as exc:
        if _disk_full(Path(written or path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def _disk_full(path: Path, margin: int = 1 << 20) -> bool:
    """Whether the filesystem of ``path`` has less than ``margin`` bytes left to write."""
    try:
        stat = os.statvfs(path.parent)
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False
    return stat.f_bavail * stat.f_frsize < margin


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8/uint16 ``(H, W)`` or ``(H, W, 3)`` (RGB) image as PNG, atomically."""
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"write_png takes uint8 or uint16, got {image.dtype}")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


def write_label_image(path: str | Path, labels: np.ndarray) -> None:
    """Write an instance label image as a uint16 PNG (0 = background), atomically."""
    if labels.size and int(labels.max()) > np.iinfo(np.uint16).max:
        raise ValueError(f"{path}: {int(labels.max())} labels do not fit in a uint16 PNG")
    write_png(path, labels.astype(np.uint16))


def read_label_image(path: str | Path) -> np.ndarray:
    """Read an instance label image written by :func:`write_label_image` (int32 array)."""
    return read_grey(path).astype(np.int32)


# ----------------------------------------------------------------------- labels ---


@dataclass(frozen=True)
class Labels:
    """Image-level labels of a dataset.

    Attributes:
        ids: image Ids, in file order.
        y: ``(N, C)`` uint8 multi-hot matrix, ``C = len(class_names)``.
        label_set: ``"2018"`` or ``"2021"``.
    """

    ids: tuple[str, ...]
    y: np.ndarray
    label_set: str

    @property
    def class_names(self) -> tuple[str, ...]:
        return LABEL_SETS[self.label_set]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Sequence[str]) -> Labels:
        """The rows of ``ids``, in that order (KeyError names a missing Id)."""
        index = {i: k for k, i in enumerate(self.ids)}
        rows = [index[i] for i in ids]
        return Labels(tuple(ids), self.y[rows], self.label_set)


def _id_rows(reader: Iterator[list[str]], path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line number, checked Id, row)`` of each non-blank CSV row after the header."""
    for line_no, row in enumerate(reader, start=2):
        if not row or not row[0].strip():
            continue
        image_id = row[0].strip()
        try:
            check_image_id(image_id)
        except HPADataError as exc:
            raise HPADataError(f"{path}, line {line_no}: {exc}") from None
        yield line_no, image_id, row


_CLASS_NUMBER = re.compile(r"-?[0-9]+", re.ASCII)


def parse_class_number(token: str, field: str, where: str) -> int:
    """A class number written in ASCII digits (``int()`` would also take ``1_2`` or ``١٢``).

    Args:
        token: one class number of ``field``.
        field: the whole field, for the message.
        where: ``"FILE, line N"``, for the message.

    Raises:
        HPADataError: ``token`` is not an integer in ASCII digits; names ``where``.

    >>> parse_class_number("12", "0 12", "x.csv, line 2")
    12
    """
    if not _CLASS_NUMBER.fullmatch(token):
        raise HPADataError(f"{where}: {token!r} in {field!r} is not a class number (ASCII digits 0-9 only)")
    return int(token)


# header (lower-cased) -> (label set, separator)
_LABEL_FORMATS = {("id", "target"): ("2018", " "), ("id", "label"): ("2021", "|")}


def read_labels(path: str | Path, label_set: str | None = None) -> Labels:
    """Read a label CSV into a multi-hot matrix.

    Formats, told apart by the header: 2018 and HPAv18 (``Id,Target``, class numbers
    separated by spaces, 28 classes) and 2021 (``ID,Label``, separated by ``|``,
    19 classes). Extra columns are ignored. An empty target means no label.

    Args:
        path: the CSV file.
        label_set: force ``"2018"`` or ``"2021"`` instead of guessing from the header.

    Raises:
        HPADataError: unknown header, unknown class number (with its row), malformed
            target, duplicate or unsafe Id.
    """
    path = Path(path)
    if not path.is_file():
        raise HPADataError(f"{path}: label file not found")
    with open_csv(path) as reader:
        try:
            header = next(reader)
        except StopIteration:
            raise HPADataError(f"{path}: empty label file") from None
        key = tuple(h.strip().lower() for h in header[:2])
        if key not in _LABEL_FORMATS:
            raise HPADataError(
                f"{path}: unknown label format, header {header!r}; expected 'Id,Target' "
                "(2018, space-separated) or 'ID,Label' (2021, '|'-separated)"
            )
        guessed, sep = _LABEL_FORMATS[key]
        label_set = label_set or guessed
        if label_set not in LABEL_SETS:
            raise HPADataError(f"unknown label set {label_set!r}; choose from {sorted(LABEL_SETS)}")
        n_classes = len(LABEL_SETS[label_set])
        ids: list[str] = []
        rows: list[list[int]] = []
        seen: dict[str, int] = {}
        for line_no, image_id, row in _id_rows(reader, path):
            if image_id in seen:
                raise HPADataError(
                    f"{path}, line {line_no}: duplicate Id {image_id} (first on line {seen[image_id]})"
                )
            seen[image_id] = line_no
            target = row[1].strip() if len(row) > 1 else ""
            classes = []
            for token in target.replace(sep, " ").split():
                k = parse_class_number(token, target, f"{path}, line {line_no}")
                if not 0 <= k < n_classes:
                    raise HPADataError(
                        f"{path}, line {line_no}: unknown class {k} for Id {image_id} "
                        f"(the {label_set} label set has classes 0-{n_classes - 1})"
                    )
                classes.append(k)
            ids.append(image_id)
            rows.append(classes)
    y = np.zeros((len(ids), n_classes), dtype=np.uint8)
    for i, classes in enumerate(rows):
        y[i, classes] = 1
    return Labels(tuple(ids), y, label_set)


def format_target(row: np.ndarray, sep: str = " ") -> str:
    """Class numbers of a multi-hot row, ascending, joined by ``sep``.

    >>> format_target(np.array([0, 1, 0, 1]))
    '1 3'
    """
    return sep.join(str(k) for k in np.flatnonzero(row))


def write_labels(path: str | Path, labels: Labels) -> None:
    """Write labels in their own set's format (2018: ``Id,Target``; 2021: ``ID,Label``)."""
    if labels.label_set == "2021":
        header, sep = "ID,Label", "|"
    else:
        header, sep = "Id,Target", " "
    lines = [header] + [f"{i},{format_target(r, sep)}" for i, r in zip(labels.ids, labels.y, strict=True)]
    write_text_atomic(path, "\n".join(lines) + "\n")


#: First-column names (lower-cased) a header line of an Id list may have.
ID_HEADERS = ("id", "image_id", "imageid")


def read_id_list(path: str | Path) -> list[str]:
    """Ids from the first column of a CSV with a header (a sample submission, a label file).

    The header is required: its first column must be named ``Id`` (any case) or
    ``image_id``. A file whose first line is anything else, such as an Id list
    without a header, is refused rather than read with its first Id taken for a header.
    Order is kept; a duplicate or unsafe Id is an error.

    Raises:
        HPADataError: missing or empty file, no header, no Id under it, a duplicate or
            unsafe Id (with its line), or a file that is not UTF-8 CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise HPADataError(f"{path}: Id list not found")
    with open_csv(path) as reader:
        header = next(reader, None)
        if header is None:
            raise HPADataError(f"{path}: empty file")
        first = header[0].strip() if header else ""
        if first.lower() not in ID_HEADERS:
            raise HPADataError(
                f"{path}, line 1: expected a header line whose first column is 'Id', got {first!r}; "
                "an Id list needs its header (without one its first Id would be lost): add a line 'Id' on top"
            )
        ids: list[str] = []
        seen: set[str] = set()
        for line_no, image_id, _row in _id_rows(reader, path):
            if image_id in seen:
                raise HPADataError(f"{path}, line {line_no}: duplicate Id {image_id}")
            seen.add(image_id)
            ids.append(image_id)
    if not ids:
        raise HPADataError(f"{path}: no rows under the header '{','.join(header)}': the file lists no Id")
    return ids


@contextlib.contextmanager
def open_csv(path: str | Path) -> Iterator[Iterator[list[str]]]:
    """A ``csv.reader`` over a UTF-8 file (a BOM is skipped) whose errors name the file.

    Raises:
        HPADataError: the file is not UTF-8 text (e.g. Latin-1), or a row is malformed
            for the csv module (e.g. a field over its 131,072-character limit), with
            the line.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            yield reader
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.start + 1].hex()
            raise HPADataError(
                f"{path}: not UTF-8 text (byte 0x{bad} cannot be decoded); save the file as UTF-8, "
                f"e.g. iconv -f latin1 -t utf-8"
            ) from None
        except csv.Error as exc:
            raise HPADataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
