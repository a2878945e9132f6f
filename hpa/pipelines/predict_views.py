"""The views of a folder of images, prepared by workers and scored in batches.

Worker processes read each image, segment it (or load its masks) and cut its crops and
tiles while the calling process runs the classifier on the views the workers have
already prepared, so both stay busy; views of several images are scored together to
fill batches. Used by ``hpa predict`` on this machine (:mod:`hpa.pipelines.predict`) and
by each shard of a cluster run (:mod:`hpa.pipelines.predict_dask`).
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.artefacts import SegDir
from hpa.io import HPADataError
from hpa.parallel import process_pool

if TYPE_CHECKING:
    from typing import TypeAlias

    from hpa.classification.cache import ImageViews
    from hpa.classification.crops import CropSettings
    from hpa.classification.predictor import Predictor
    from hpa.io_tiff import ChannelMap
    from hpa.segmentation import SegmentConfig

    #: What a worker gets: images folder, SEG_DIR, Id, crop settings, segmentation
    #: settings (None = read the mask), channel map.
    _Task: TypeAlias = tuple[str, str, str, CropSettings, SegmentConfig | None, ChannelMap | None]
    #: What it returns: the views and the segmentation table (None when the mask was
    #: read), or ``(Id, error)``.
    _Prepared: TypeAlias = tuple[ImageViews, pd.DataFrame | None] | tuple[str, str]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ worker side ---


def _prepare(task: _Task) -> _Prepared:
    """Read, segment (or load masks) and cut the views of one image, in a worker."""
    from hpa.artefacts.segdir import source_signature
    from hpa.classification.cache import image_views
    from hpa.io import read_sample
    from hpa.segmentation.write import load_or_segment

    images_dir, masks_dir, image_id, crop, seg_config, channel_map = task
    try:
        image = read_sample(images_dir, image_id, channel_map)
        if seg_config is None:
            cells, table = SegDir(masks_dir).read_cells(image_id), None
        else:  # the same files as hpa segment (resuming an interrupted run): OUT/masks is a SEG_DIR
            source = source_signature(images_dir, image_id)
            cells, table = load_or_segment(image, masks_dir, image_id, seg_config, source)
        return image_views(image, cells, image_id, crop), table
    except (HPADataError, OSError, ValueError, TypeError) as exc:
        return image_id, f"{type(exc).__name__}: {exc}"


def _prepared(tasks: list[_Task], workers: int) -> Iterator[_Prepared]:
    """Prepared views of ``tasks`` in order, made ahead of the classifier.

    One worker is a thread (reading, decoding and resizing release the GIL, so it
    overlaps the model's forward passes without a process to start); more are processes.
    At most ``8 * workers`` images wait, so memory stays bounded however long the run.
    """
    pool: Executor = ThreadPoolExecutor(1) if workers <= 1 else process_pool(workers, len(tasks))
    with pool:
        pending: deque[Future] = deque()
        queue = iter(tasks)
        for task in itertools.islice(queue, 8 * max(workers, 1)):
            pending.append(pool.submit(_prepare, task))
        while pending:
            result = pending.popleft().result()
            for task in itertools.islice(queue, 1):
                pending.append(pool.submit(_prepare, task))
            yield result


# -------------------------------------------------------------------- main side ---


@dataclass
class ScoredViews:
    """Class probabilities of every view of a set of images.

    Attributes:
        index: one row per view (:func:`hpa.classification.cache.views_index`).
        probs: ``(len(index), K)`` float32 probabilities.
        failures: ``image_id -> error`` for images that could not be read or segmented.
        seg_tables: per-cell segmentation tables of images segmented on the fly.
    """

    index: pd.DataFrame
    probs: np.ndarray
    failures: dict[str, str]
    seg_tables: list[pd.DataFrame]

    @classmethod
    def empty(cls, n_classes: int, failures: dict[str, str], seg_tables: list[pd.DataFrame]) -> ScoredViews:
        """No view scored (every image failed, or none was asked for)."""
        index = pd.DataFrame({"image_id": [], "kind": [], "cell_id": []})
        return cls(index, np.zeros((0, n_classes), np.float32), failures, seg_tables)


def score_folder_views(
    predictor: Predictor,
    images: str | Path,
    ids: Sequence[str],
    masks_dir: Path,
    *,
    seg_config: SegmentConfig | None = None,
    workers: int = 1,
    batch_size: int = 128,
    tta: int = 1,
    progress: bool = True,
    channel_map: ChannelMap | None = None,
) -> ScoredViews:
    """Score every cell and tile of the images ``ids`` of a folder.

    Workers read each image, load its mask from ``masks_dir`` (or segment it into
    ``masks_dir`` with ``seg_config``) and cut its views, while this process runs the
    predictor on full batches of the views of several images.

    Args:
        predictor: the model that scores (:meth:`hpa.classification.predictor.Predictor.score`).
        images: folder of channel files; ``ids`` the images to score, in order.
        masks_dir: SEG_DIR to read, or to write with ``seg_config``.
        seg_config: segment on the fly with these settings; None = read the masks.
        workers: processes preparing the views (1 = a thread).
        batch_size, tta: views per forward pass, dihedral views averaged.
        progress: show a tqdm progress bar.
        channel_map: which channel of a multi-channel TIFF is which.

    Returns:
        The :class:`ScoredViews` of the images that could be read, and the failures.
    """
    from hpa.classification.cache import views_index

    crop = predictor.config.crop
    tasks = [(str(images), str(masks_dir), i, crop, seg_config, channel_map) for i in ids]
    failures: dict[str, str] = {}
    seg_tables: list[pd.DataFrame] = []
    index_parts: list[pd.DataFrame] = []
    prob_parts: list[np.ndarray] = []
    bar = tqdm(
        _prepared(tasks, workers), total=len(tasks), desc="predicting", unit="img", disable=not progress
    )
    for batch in _batches(bar, batch_size * 4, failures, seg_tables):
        prob_parts.append(predictor.score(batch, batch_size=batch_size, tta=tta))
        index_parts.extend(views_index(v) for v in batch)
    if not index_parts:
        return ScoredViews.empty(predictor.config.output_width, failures, seg_tables)
    return ScoredViews(
        pd.concat(index_parts, ignore_index=True), np.concatenate(prob_parts), failures, seg_tables
    )


def _batches(
    prepared: Iterable[_Prepared], min_views: int, failures: dict[str, str], seg_tables: list[pd.DataFrame]
) -> Iterator[list[ImageViews]]:
    """The views of consecutive images, grouped until a group holds ``min_views`` views.

    Failed images are recorded in ``failures`` (and logged), the segmentation tables of
    images segmented on the fly added to ``seg_tables``; the last group may be smaller.
    """
    pending: list[ImageViews] = []
    n_pending = 0
    for item in prepared:
        if isinstance(item[0], str):
            image_id, error = item
            log.warning("Id %s failed: %s", image_id, error)
            failures[image_id] = error
            continue
        views, table = item
        if table is not None:
            seg_tables.append(table)
        pending.append(views)
        n_pending += len(views.cell_ids) + len(views.tiles)
        if n_pending >= min_views:
            yield pending
            pending, n_pending = [], 0
    if pending:
        yield pending
