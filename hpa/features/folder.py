"""Localisation features of a folder of images, cached as one Parquet table per image.

The cache root is ``--cache``, else ``$HPA_FEATURE_CACHE_DIR``, else
``SEG_DIR/feature-cache``. It holds one folder per :meth:`FeatureSettings.key` (the
settings and :data:`FEATURES_VERSION`), and in it ``<Id>+<signature>.parquet`` per image,
where the signature hashes the sizes and modification times of the image's channel files
and masks: change the feature code, a setting, an image or a mask and that table is
recomputed. Tables are written through a temporary file and renamed into place.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from hpa.artefacts.provenance import check_masks_images
from hpa.artefacts.segdir import SegDir
from hpa.artefacts.tables import FAILURES_FILE, ID_COLUMN, read_parquet_table, write_failures, write_parquet
from hpa.errors import HPADataError
from hpa.features.cells import cell_features, feature_names, image_features
from hpa.features.settings import FeatureSettings
from hpa.io import list_image_ids, read_label_image, read_sample, remove_stale_temporaries, sample_paths
from hpa.io_tiff import ChannelMap
from hpa.outputs import claim_entries
from hpa.parallel import process_pool

log = logging.getLogger(__name__)

#: The cache root's environment override and its default folder name in a SEG_DIR.
CACHE_ENV = "HPA_FEATURE_CACHE_DIR"
CACHE_NAME = "feature-cache"
CELL_TABLE = "cell_features.parquet"
IMAGE_TABLE = "image_features.parquet"


def cache_root(explicit: str | Path | None, seg_dir: str | Path) -> Path:
    """``explicit``, else ``$HPA_FEATURE_CACHE_DIR``, else ``SEG_DIR/feature-cache``."""
    return Path(explicit or os.environ.get(CACHE_ENV) or Path(seg_dir) / CACHE_NAME)


def input_signature(images_dir: str | Path, seg_dir: str | Path, image_id: str) -> str:
    """A hash of the sizes and modification times of an image's files and both masks."""
    seg = SegDir(seg_dir)
    h = hashlib.sha256()
    for path in [*sample_paths(images_dir, image_id), seg.cell_mask(image_id), seg.nucleus_mask(image_id)]:
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def image_cell_features(
    images_dir: str | Path,
    seg_dir: str | Path,
    image_id: str,
    cache: str | Path,
    settings: FeatureSettings,
    channel_map: ChannelMap | None = None,
) -> pd.DataFrame:
    """The cell features of one image: read from ``cache`` (a key folder), else computed and cached.

    Raises:
        HPADataError: a channel file or a mask is missing or unreadable.
    """
    seg = SegDir(seg_dir)
    for mask in (seg.cell_mask(image_id), seg.nucleus_mask(image_id)):
        if not mask.is_file():
            raise HPADataError(f"{mask}: no mask for Id {image_id}; run hpa segment first")
    path = Path(cache) / f"{image_id}+{input_signature(images_dir, seg_dir, image_id)}.parquet"
    if path.is_file():
        return read_parquet_table(path)
    image = read_sample(images_dir, image_id, channel_map)
    cells = seg.read_cells(image_id)
    nuclei = read_label_image(seg.nucleus_mask(image_id))
    if cells.shape != image.shape[:2] or nuclei.shape != image.shape[:2]:
        raise HPADataError(f"{seg.cell_mask(image_id)}: masks do not match the image's {image.shape[:2]}")
    table = cell_features(image, cells, nuclei, image_id, settings)
    for old in glob.glob(os.path.join(glob.escape(str(cache)), f"{glob.escape(image_id)}+*.parquet")):
        Path(old).unlink(missing_ok=True)  # the table of older inputs
    write_parquet(path, table)
    return table


def _work(
    task: tuple[str, str, str, str, dict[str, Any], ChannelMap | None],
) -> pd.DataFrame | tuple[str, str]:
    images_dir, seg_dir, image_id, cache, settings, channel_map = task
    try:
        return image_cell_features(
            images_dir, seg_dir, image_id, cache, FeatureSettings(**settings), channel_map
        )
    except (HPADataError, OSError, ValueError) as exc:
        return task[2], str(exc)


def folder_features(
    images_dir: str | Path,
    seg_dir: str | Path,
    ids: Sequence[str] | None = None,
    cache: str | Path | None = None,
    settings: FeatureSettings | None = None,
    workers: int = 1,
    channel_map: ChannelMap | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The cell features of a folder of images, cached per image.

    Args:
        images_dir: folder of channel files (or multi-channel TIFFs, see ``channel_map``).
        seg_dir: the SEG_DIR written by ``hpa segment`` (``cells/`` and ``nuclei/`` masks).
        ids: image Ids (default: every image of ``images_dir``).
        cache: cache root (default: :func:`cache_root`).
        settings: measurement settings; ``FeatureSettings()`` if None.
        workers: worker processes.
        channel_map: which channel of a multi-channel TIFF is which (:mod:`hpa.io_tiff`).
        progress: show a progress bar.

    Returns:
        ``(cells, failures)``: the :func:`~hpa.features.cell_features` rows of every image
        in ``ids`` order, and ``{image_id: error}`` for images that could not be measured.
    """
    settings = settings or FeatureSettings()
    ids = list(ids) if ids is not None else list_image_ids(images_dir)
    root = cache_root(cache, seg_dir)
    folder = root / settings.key()
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    # settings travel as a dict: a class object re-imported under another identity (pytest's
    # importlib doctest collection) would not pickle
    fields = asdict(settings)
    tasks = [(str(images_dir), str(seg_dir), i, str(folder), fields, channel_map) for i in ids]
    tables: list[pd.DataFrame] = []
    failures: dict[str, str] = {}
    with process_pool(workers, len(tasks)) if workers > 1 and len(tasks) > 1 else _Serial() as pool:
        results = pool.map(_work, tasks)
        for item in tqdm(results, total=len(tasks), desc="features", unit="img", disable=not progress):
            if isinstance(item, tuple):
                log.warning("skipping %s: %s", item[0], item[1])
                failures[item[0]] = item[1]
            else:
                tables.append(item)
    columns = [ID_COLUMN, "cell_id", *feature_names(settings)]
    cells = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    return cells, failures


class _Serial:
    """A stand-in for a process pool that maps in this process."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, tasks):  # type: ignore[no-untyped-def]
        return map(fn, tasks)


#: The failures table ``hpa features`` writes beside its tables (the same name every hpa folder uses).
FAILURES = FAILURES_FILE


def main(args: argparse.Namespace) -> int:
    """``hpa features IMAGES --masks SEG_DIR --out DIR``: write the cell and image feature tables."""
    SegDir(args.masks).check()
    check_masks_images(args.masks, args.images)  # masks of these images, not of another folder
    out = Path(args.out)
    claim_entries(out, [CELL_TABLE, IMAGE_TABLE, FAILURES], "hpa features")  # never a user's file
    cells, failures = folder_features(
        args.images,
        args.masks,
        cache=args.cache,
        workers=args.workers,
        channel_map=getattr(args, "channel_map", None),
        progress=True,
    )
    write_parquet(out / CELL_TABLE, cells)
    write_parquet(out / IMAGE_TABLE, image_features(cells))
    if failures:
        write_failures(out / FAILURES, failures)
    else:  # an earlier run's list (hpa's own: claimed above) would name images that now succeed
        (out / FAILURES).unlink(missing_ok=True)
    log.info(
        "%d cells of %d images -> %s (%d failed)", len(cells), cells[ID_COLUMN].nunique(), out, len(failures)
    )
    return 1 if failures and cells.empty else 0
