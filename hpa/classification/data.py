"""Batches from the crop cache: read, normalise and augment whole batches at once.

An epoch is a permutation of cache rows; a batch is one sorted fancy-index read of the
memory map (a memcpy, no PNG decoding), so one background thread keeps the network fed
without worker processes. Augmentation works on the whole batch tensor: the eight
dihedral transforms (applied group-wise) and per-sample, per-channel intensity jitter.

With ``bags`` (the image of each row), a batch is instead a few whole images: the views
of each drawn image (at most ``max_bag`` of its cell crops, chosen at random, and its
tiles), so that a loss can pool the cells of an image as the prediction does (multiple-
instance learning, :func:`hpa.classification.losses.mil_loss`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from hpa.classification.distributed import World, shard_order
from hpa.classification.model import normalise


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 dihedral transforms of a ``(..., H, W)`` tensor.

    ``k`` in 0-3 rotates by ``k * 90`` degrees; 4-7 also flip left-right.

    >>> dihedral(torch.arange(4).view(2, 2), 4).tolist()
    [[1, 0], [3, 2]]
    """
    out = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


def augment(x: torch.Tensor, generator: torch.Generator, jitter: float = 0.2) -> torch.Tensor:
    """Random dihedral transform and intensity jitter of a ``(B, C, S, S)`` batch.

    Each sample gets one of the 8 dihedral transforms, and each of its channels is
    scaled by ``1 + u`` and shifted by ``u / 4`` (``u`` uniform in ``[-jitter, jitter]``).
    """
    b, c = x.shape[:2]
    ks = torch.randint(0, 8, (b,), generator=generator)
    out = torch.empty_like(x)
    for k in range(8):
        sel = (ks == k).nonzero().flatten().to(x.device)
        if len(sel):
            out[sel] = dihedral(x[sel], k)
    if jitter > 0:
        gain = 1 + (torch.rand((b, c, 1, 1), generator=generator) * 2 - 1) * jitter
        bias = (torch.rand((b, c, 1, 1), generator=generator) * 2 - 1) * jitter / 4
        out = out * gain.to(x.device) + bias.to(x.device)
    return out


def read_batch(views: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Rows of the view array as a ``(B, S, S, C)`` integer tensor (uint16 widened to int32)."""
    order = np.argsort(rows)
    batch = np.empty((len(rows), *views.shape[1:]), dtype=views.dtype)
    batch[order] = views[rows[order]]  # sorted reads are sequential on disk
    if batch.dtype == np.uint16:
        batch = batch.astype(np.int32)
    return torch.from_numpy(batch)


class BatchLoader:
    """Iterate normalised (optionally augmented) batches over rows of a cache.

    Args:
        views: ``(N, S, S, C)`` view array (usually a memmap).
        rows: rows of ``views`` to use.
        targets: ``(len(rows), K)`` float32 targets, aligned with ``rows``, or None.
        batch_size: samples per batch.
        mean, std: ``(C,)`` normalisation statistics of [0, 1]-scaled inputs.
        scale: dtype maximum of ``views``.
        device: where batches go.
        shuffle: a new permutation each epoch, from ``seed`` and the epoch number.
        augment: apply :func:`augment`.
        drop_last: drop a last incomplete batch (training).
        world: under torchrun, each rank iterates its own share of every epoch.
        weights: ``(len(rows),)`` sampling weights; an epoch then draws ``len(rows)``
            rows with replacement in proportion to them (rare classes oversampled). With
            ``bags``, an image is drawn with the largest weight of its rows.
        bags: ``(len(rows),)`` integer image of each row: batches of whole images, and
            each batch also yields the batch-local image index of its rows.
        kinds: ``(len(rows),)`` True for cell crops (with ``bags``: only cells are capped
            at ``max_bag``).
        max_bag: most cell crops of one image in a batch.

    Iterating yields ``(x, y, bag)``: ``bag`` is None without ``bags``, else a ``(B,)``
    long tensor numbering the images of the batch's cell crops 0, 1, ... (-1 for tiles).
    """

    def __init__(
        self,
        views: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray | None,
        batch_size: int,
        mean: np.ndarray,
        std: np.ndarray,
        scale: float,
        device: str = "cpu",
        shuffle: bool = False,
        augment: bool = False,
        jitter: float = 0.2,
        seed: int = 0,
        drop_last: bool = False,
        world: World | None = None,
        weights: np.ndarray | None = None,
        bags: np.ndarray | None = None,
        kinds: np.ndarray | None = None,
        max_bag: int = 16,
    ):
        self.views, self.rows, self.targets = views, np.asarray(rows), targets
        self.batch_size, self.scale, self.device = batch_size, scale, device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device)
        self.shuffle, self.augment, self.jitter, self.seed = shuffle, augment, jitter, seed
        self.drop_last = drop_last
        self.world = world or World()
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.epoch = 0
        self.bags = None if bags is None else np.asarray(bags)
        self.max_bag = max_bag
        if self.bags is not None:
            is_cell = np.ones(len(self.rows), bool) if kinds is None else np.asarray(kinds, bool)
            order = np.argsort(self.bags, kind="stable")
            starts = np.flatnonzero(np.r_[True, self.bags[order][1:] != self.bags[order][:-1]])
            self._members = np.split(order, starts[1:])
            self._is_cell = is_cell
            per_image = np.mean([min(is_cell[m].sum(), max_bag) + (~is_cell[m]).sum() for m in self._members])
            self.images_per_batch = max(1, round(batch_size / max(per_image, 1.0)))

    def __len__(self) -> int:
        if self.bags is not None:
            n = len(self._members) // self.world.size
            return max(1, n // self.images_per_batch) if self.drop_last else -(-n // self.images_per_batch)
        n = -(-len(self.rows) // self.world.size)  # this rank's share
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _bag_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's batches: positions into ``rows`` and the batch-local image of each."""
        rng = np.random.default_rng([self.seed, self.epoch, 2])
        n_images = len(self._members)
        if self.weights is not None:
            w = np.array([self.weights[m].max() for m in self._members])
            drawn = rng.choice(n_images, size=n_images, p=w / w.sum())
        else:
            drawn = rng.permutation(n_images) if self.shuffle else np.arange(n_images)
        drawn = drawn[self.world.rank :: self.world.size][: n_images // self.world.size or None]
        batches = []
        for b in range(len(self)):
            pos, local = [], []
            for k, image in enumerate(drawn[b * self.images_per_batch : (b + 1) * self.images_per_batch]):
                members = self._members[image]
                cells = members[self._is_cell[members]]
                if len(cells) > self.max_bag:
                    cells = np.sort(rng.choice(cells, self.max_bag, replace=False))
                chosen = np.concatenate([cells, members[~self._is_cell[members]]])
                pos.append(chosen)
                local.append(np.full(len(chosen), k))
            if pos:
                batches.append((np.concatenate(pos), np.concatenate(local)))
        return batches

    def _order(self) -> np.ndarray:
        if self.weights is not None:
            # one draw shared by every rank (same seed), each rank takes its slice
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            size = -(-len(self.rows) // self.world.size) * self.world.size
            drawn = rng.choice(len(self.rows), size=size, p=self.weights)
            return drawn[self.world.rank :: self.world.size]
        if self.world.distributed:
            return shard_order(len(self.rows), self.world, self.seed, self.epoch, self.shuffle)
        if not self.shuffle:
            return np.arange(len(self.rows))
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(len(self.rows))

    def _produce(self, order: np.ndarray | list, out: queue.Queue) -> None:
        pin = self.device.startswith("cuda")
        try:
            for b in range(len(order) if self.bags is not None else len(self)):
                if self.bags is not None:
                    sel, local = order[b]
                    local = np.where(self._is_cell[sel], local, -1)  # tiles: in no bag
                    bag = torch.from_numpy(local.astype(np.int64))
                else:
                    sel, bag = order[b * self.batch_size : (b + 1) * self.batch_size], None
                x = read_batch(self.views, self.rows[sel])
                if pin:
                    x = x.pin_memory()
                y = None if self.targets is None else torch.from_numpy(self.targets[sel])
                out.put((x, y, bag))
        except Exception as exc:  # surface errors in the consumer
            out.put(exc)
        out.put(None)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        order: np.ndarray | list = self._bag_batches() if self.bags is not None else self._order()
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        q: queue.Queue = queue.Queue(maxsize=3)
        thread = threading.Thread(target=self._produce, args=(order, q), daemon=True)
        thread.start()
        while (item := q.get()) is not None:
            if isinstance(item, Exception):
                raise item
            x, y, bag = item
            x = normalise(x.to(self.device, non_blocking=True), self.mean, self.std, self.scale)
            if self.augment:
                x = augment(x, gen, self.jitter)
            yield (
                x,
                None if y is None else y.to(self.device, non_blocking=True),
                None if bag is None else bag.to(self.device, non_blocking=True),
            )
        thread.join()
        self.epoch += 1
