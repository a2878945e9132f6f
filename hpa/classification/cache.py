"""An on-disk cache of cell crops and tiles, so a training epoch reads no PNG.

The views of every image are cut once, in worker processes, and appended to one raw
array file that is then memory-mapped: ``views.bin`` holds ``(N, S, S, 4)`` uint8 or
uint16 views, ``index.parquet`` says which image, cell or tile each row is, and
``meta.json`` records shape, dtype and the key the cache was built for. The key hashes
the crop settings and, per image, the sizes and modification times of its channel and
mask files: change any of them and a new cache is built beside the old one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.artefacts.cachedir import CacheDir
from hpa.artefacts.segdir import SegDir
from hpa.classification.crops import CropSettings, cell_boxes, crop_cells, image_tiles, scale_image
from hpa.constants import CHANNELS
from hpa.io import (
    HPADataError,
    read_sample,
    remove_stale_temporaries,
    sample_paths,
    temp_name,
    write_errors_name,
)
from hpa.io_tiff import ChannelMap
from hpa.parallel import process_pool

log = logging.getLogger(__name__)

CELL, TILE = "cell", "tile"


@dataclass(frozen=True)
class ImageViews:
    """The views of one image.

    Attributes:
        image_id: the sample's Id.
        cell_ids: ``(N,)`` cell ids, ascending.
        boxes: ``(N, 4)`` cell boxes ``(y0, x0, y1, x1)``.
        crops: ``(N, S, S, 4)`` cell crops.
        tiles: ``(T, S, S, 4)`` tiles.
    """

    image_id: str
    cell_ids: np.ndarray
    boxes: np.ndarray
    crops: np.ndarray
    tiles: np.ndarray


def image_views(image: np.ndarray, cells: np.ndarray, image_id: str, settings: CropSettings) -> ImageViews:
    """Cut the cell crops and tiles of one ``(H, W, 4)`` image with its ``(H, W)`` cell labels."""
    if cells.shape != image.shape[:2]:
        raise HPADataError(
            f"Id {image_id}: mask is {cells.shape[1]}x{cells.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    if settings.image_scale:
        image = scale_image(image)
    ids, boxes = cell_boxes(cells)
    crops = crop_cells(image, cells, ids, boxes, settings)
    tiles = image_tiles(image, settings)
    return ImageViews(image_id, ids, boxes, crops, tiles)


def views_index(views: ImageViews) -> pd.DataFrame:
    """One row per view of an image, cells then tiles.

    Columns: ``image_id``, ``kind`` (``"cell"``/``"tile"``), ``cell_id`` (the tile
    number for tiles) and the cell box ``bbox_y0, bbox_x0, bbox_y1, bbox_x1`` (-1 for tiles).
    """
    n_cells, n_tiles = len(views.cell_ids), len(views.tiles)
    boxes = np.concatenate([views.boxes.reshape(-1, 4), np.full((n_tiles, 4), -1, dtype=np.int64)])
    return pd.DataFrame(
        {
            "image_id": views.image_id,
            "kind": [CELL] * n_cells + [TILE] * n_tiles,
            "cell_id": np.concatenate([views.cell_ids, np.arange(n_tiles)]).astype(np.int64),
            "bbox_y0": boxes[:, 0],
            "bbox_x0": boxes[:, 1],
            "bbox_y1": boxes[:, 2],
            "bbox_x1": boxes[:, 3],
        }
    )


#: A folder, or ``{image_id: folder}`` when the images come from several folders
#: (``hpa train-cells`` with several ``--images``/``--masks`` pairs).
Folders = str | Path | Mapping[str, str | Path]


def folder_of(where: Folders, image_id: str) -> Path:
    """The folder holding ``image_id``: ``where`` itself, or its entry for the Id."""
    return Path(where[image_id]) if isinstance(where, Mapping) else Path(where)


def load_views(
    images_dir: str | Path,
    seg_dir: str | Path,
    image_id: str,
    settings: CropSettings,
    channel_map: ChannelMap | None = None,
) -> ImageViews:
    """Read an image (``channel_map``: see :mod:`hpa.io_tiff`) and its cell mask and cut its views."""
    image = read_sample(images_dir, image_id, channel_map)
    return image_views(image, SegDir(seg_dir).read_cells(image_id), image_id, settings)


def _files_signature(images_dir: Path, seg_dir: Path, image_id: str) -> list[int]:
    sig = []
    paths = [*sample_paths(images_dir, image_id), SegDir(seg_dir).cell_mask(image_id)]
    for p in paths:
        st = p.stat()
        sig += [st.st_size, st.st_mtime_ns]
    return sig


def cache_key(
    images_dir: Folders,
    seg_dir: Folders,
    ids: Sequence[str],
    settings: CropSettings,
    channel_map: ChannelMap | None = None,
) -> str:
    """A hash of the settings, the channel map and every input file's size and modification time.

    ``image_scale`` enters the hash only when set, so the caches cut before it existed
    (the same views) keep their key.
    """
    fields = asdict(settings)
    if not fields.get("image_scale"):
        fields.pop("image_scale", None)
    h = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    if channel_map is not None:
        h.update(repr(channel_map.sources).encode())
    for image_id in ids:
        h.update(image_id.encode())
        try:
            sig = _files_signature(folder_of(images_dir, image_id), folder_of(seg_dir, image_id), image_id)
            h.update(repr(sig).encode())
        except (HPADataError, OSError):
            h.update(b"missing")
    return h.hexdigest()[:16]


class CropCache:
    """A built cache: a memory-mapped view array and its index table.

    Attributes:
        views: ``(N, S, S, 4)`` memory-mapped uint8/uint16 array.
        index: one row per view: ``image_id, kind ('cell'|'tile'), cell_id`` (the tile
            number for tiles) and the cell box ``bbox_y0, bbox_x0, bbox_y1, bbox_x1``.
        failures: ``image_id -> error`` for images that could not be cut.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = json.loads(CacheDir(self.folder).path(CacheDir.META).read_text())
        self.meta = meta
        self.index = pd.read_parquet(CacheDir(self.folder).path(CacheDir.INDEX))
        shape = tuple(meta["shape"])
        self.views: np.ndarray
        if shape[0]:
            self.views = np.memmap(
                CacheDir(self.folder).path(CacheDir.VIEWS), dtype=meta["dtype"], mode="r", shape=shape
            )
        else:
            self.views = np.zeros(shape, dtype=meta["dtype"])
        self.failures: dict[str, str] = meta.get("failures", {})

    @property
    def scale(self) -> float:
        """The maximum of the cached dtype (255 or 65535)."""
        return float(np.iinfo(self.views.dtype).max)

    def __len__(self) -> int:
        return len(self.index)


def _work(task: tuple[str, str, str, CropSettings, ChannelMap | None]) -> ImageViews | tuple[str, str]:
    try:
        return load_views(*task)
    except (HPADataError, OSError, ValueError) as exc:
        return task[2], str(exc)


def iter_views(
    images_dir: Folders,
    seg_dir: Folders,
    ids: Sequence[str],
    settings: CropSettings,
    workers: int = 1,
    channel_map: ChannelMap | None = None,
) -> Iterator[ImageViews | tuple[str, str]]:
    """Views of each Id, in order, cut in ``workers`` processes; ``(Id, error)`` on failure."""
    tasks = [
        (str(folder_of(images_dir, i)), str(folder_of(seg_dir, i)), i, settings, channel_map) for i in ids
    ]
    if workers <= 1:
        yield from map(_work, tasks)
        return
    with process_pool(workers, len(tasks)) as pool:
        yield from pool.map(_work, tasks, chunksize=4)


def _convert(views: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if views.dtype == dtype:
        return views
    if dtype == np.uint16:
        return views.astype(np.uint16) * 257
    return (views >> 8).astype(np.uint8)


def build_cache(
    images_dir: Folders,
    seg_dir: Folders,
    ids: Sequence[str],
    settings: CropSettings,
    cache_root: str | Path,
    workers: int = 1,
    progress: bool = True,
    channel_map: ChannelMap | None = None,
) -> CropCache:
    """Build (or reuse) the crop cache of ``ids``.

    Args:
        images_dir: folder of channel files (or ``{image_id: folder}``).
        seg_dir: the SEG_DIR of ``hpa segment`` (``cells/<Id>.png``; or ``{image_id: folder}``).
        ids: image Ids to cut.
        settings: crop settings.
        cache_root: folder holding caches, one subfolder per key.
        workers: processes cutting views.
        progress: show a progress bar.
        channel_map: which channel of a multi-channel TIFF is which (:mod:`hpa.io_tiff`).

    Returns:
        The cache. Images that cannot be read are logged and listed in ``failures``.
    """
    key = cache_key(images_dir, seg_dir, ids, settings, channel_map)
    folder = Path(cache_root) / key
    if CacheDir(folder).is_complete():
        log.info("reusing crop cache %s", folder)
        return CropCache(folder)
    remove_stale_temporaries(cache_root)  # the builds of killed runs
    tmp = Path(cache_root) / temp_name(key)
    tmp.mkdir(parents=True)
    try:
        return _build(tmp, folder, key, images_dir, seg_dir, ids, settings, workers, progress, channel_map)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # an interrupted build leaves nothing behind
        raise


def _build(
    tmp: Path,
    folder: Path,
    key: str,
    images_dir: Folders,
    seg_dir: Folders,
    ids: Sequence[str],
    settings: CropSettings,
    workers: int,
    progress: bool,
    channel_map: ChannelMap | None = None,
) -> CropCache:
    rows: list[pd.DataFrame] = []
    failures: dict[str, str] = {}
    dtype: np.dtype | None = None
    n = 0
    size = settings.crop_size
    views_path = CacheDir(tmp).path(CacheDir.VIEWS)
    with write_errors_name(views_path), views_path.open("wb") as fh:
        bar = tqdm(
            iter_views(images_dir, seg_dir, ids, settings, workers, channel_map),
            total=len(ids),
            desc="cutting crops",
            unit="img",
            disable=not progress,
        )
        for item in bar:
            if isinstance(item, tuple):
                image_id, error = item
                log.warning("skipping %s: %s", image_id, error)
                failures[image_id] = error
                continue
            dtype = dtype or item.crops.dtype
            block = np.concatenate([item.crops, item.tiles]) if len(item.crops) else item.tiles
            fh.write(np.ascontiguousarray(_convert(block, dtype)).tobytes())
            rows.append(views_index(item))
            n += len(block)
    index = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["image_id", "kind", "cell_id", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"])
    )
    index.to_parquet(CacheDir(tmp).path(CacheDir.INDEX), index=False)
    meta = {
        "key": key,
        "shape": [n, size, size, len(CHANNELS)],
        "dtype": str(np.dtype(dtype or np.uint8)),
        "settings": asdict(settings),
        "n_images": len(ids) - len(failures),
        "failures": failures,
    }
    CacheDir(tmp).path(CacheDir.META).write_text(json.dumps(meta, indent=2))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built the same cache meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("crop cache %s: %d views of %d images (%d failed)", folder, n, meta["n_images"], len(failures))
    return CropCache(folder)


def channel_stats(
    cache: CropCache,
    rows: np.ndarray,
    max_views: int = 2000,
    seed: int = 0,
    mix: np.ndarray | None = None,
    intensity: str = "dataset",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the [0, 1]-scaled views in ``rows`` (a random subset).

    Args:
        mix: ``(C, 4)`` channel mixing matrix; the statistics are those of the mixed inputs.
        intensity: how views are scaled to [0, 1] (:func:`hpa.classification.model.unit_views`).

    Returns:
        ``(mean, std)``, each ``(C,)`` float64 (``(4,)`` without ``mix``).
    """
    import torch

    from hpa.classification.model import unit_views

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(rows, size=min(max_views, len(rows)), replace=False))
    raw = torch.from_numpy(np.asarray(cache.views[pick], dtype=np.float32)).permute(0, 3, 1, 2)
    x = unit_views(raw, cache.scale, intensity).permute(0, 2, 3, 1).numpy().astype(np.float64)
    if mix is not None:
        x = x @ np.asarray(mix, dtype=np.float64).T
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2))
    return mean, np.maximum(std, 1e-3)
