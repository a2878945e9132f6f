"""Batches from the crop cache: read, normalise and augment whole batches at once.

An epoch is a permutation of cache rows; a batch is one sorted fancy-index read of the
memory map (a memcpy, no PNG decoding), so one background thread keeps the network fed
without worker processes. Augmentation works on the whole batch tensor: the eight
dihedral transforms (applied group-wise) and per-sample, per-channel intensity jitter.
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


def read_batch(views: np.ndarray, rows: np.ndarray, stains: np.ndarray | None = None) -> torch.Tensor:
    """Rows of the view array as a ``(B, S, S, C)`` integer tensor (uint16 widened to int32).

    ``stains``: the channels to keep, in order (None: all of them).

    >>> read_batch(np.arange(16, dtype=np.uint8).reshape(2, 1, 2, 4), np.array([1]), np.array([1])).tolist()
    [[[[9], [13]]]]
    """
    order = np.argsort(rows)
    batch = np.empty((len(rows), *views.shape[1:]), dtype=views.dtype)
    batch[order] = views[rows[order]]  # sorted reads are sequential on disk
    if stains is not None:
        batch = np.ascontiguousarray(batch[..., stains])
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
            rows with replacement in proportion to them (rare classes oversampled).
        mix: ``(C, 4)`` channel mixing matrix (:func:`hpa.classification.channels.channel_matrix`);
            None = the four stains as they are. ``mean`` and ``std`` are then ``(C,)``.
            The stains it does not use (its zero columns) are dropped as the batch is
            read, before any scaling (which is per stain): the same inputs, less work.
        intensity: how views are scaled to [0, 1] (:func:`hpa.classification.model.unit_views`).
        size: the network's input side (views are resized to it); None = as cut.
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
        mix: np.ndarray | None = None,
        intensity: str = "dataset",
        size: int | None = None,
    ):
        self.views, self.rows, self.targets = views, np.asarray(rows), targets
        self.batch_size, self.scale, self.device = batch_size, scale, device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device)
        self.shuffle, self.augment, self.jitter, self.seed = shuffle, augment, jitter, seed
        self.drop_last = drop_last
        self.world = world or World()
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.mix = None if mix is None else torch.as_tensor(mix, dtype=torch.float32, device=device)
        #: the stains ``mix`` uses (None: all); :attr:`mix` keeps their columns only
        self.stains: np.ndarray | None = None
        if mix is not None:
            used = np.flatnonzero(np.any(np.asarray(mix) != 0, axis=0))
            if 0 < len(used) < np.asarray(mix).shape[1]:
                self.stains = used
                assert self.mix is not None
                self.mix = self.mix[:, torch.from_numpy(used).to(device)].contiguous()
        self.intensity, self.size = intensity, size
        self.epoch = 0

    def __len__(self) -> int:
        n = -(-len(self.rows) // self.world.size)  # this rank's share
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

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

    def _produce(self, order: np.ndarray, out: queue.Queue) -> None:
        pin = self.device.startswith("cuda")
        try:
            for b in range(len(self)):
                sel = order[b * self.batch_size : (b + 1) * self.batch_size]
                x = read_batch(self.views, self.rows[sel], self.stains)
                if pin:
                    x = x.pin_memory()
                y = None if self.targets is None else torch.from_numpy(self.targets[sel])
                out.put((x, y))
        except Exception as exc:  # surface errors in the consumer
            out.put(exc)
        out.put(None)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        order = self._order()
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        q: queue.Queue = queue.Queue(maxsize=3)
        thread = threading.Thread(target=self._produce, args=(order, q), daemon=True)
        thread.start()
        while (item := q.get()) is not None:
            if isinstance(item, Exception):
                raise item
            x, y = item
            x = normalise(
                x.to(self.device, non_blocking=True),
                self.mean,
                self.std,
                self.scale,
                self.mix,
                self.intensity,
                self.size,
            )
            if self.augment:
                x = augment(x, gen, self.jitter)
            yield x, (None if y is None else y.to(self.device, non_blocking=True))
        thread.join()
        self.epoch += 1


def balance_weights(targets: np.ndarray, power: float) -> np.ndarray:
    """Sampling weight of each view: ``max over its labels of (1 / frequency) ** power``.

    Frequencies are the fraction of views carrying each class; a view without any
    label gets the weight of the commonest class.

    >>> balance_weights(np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32), 1.0).round(2).tolist()
    [1.33, 1.33, 1.33, 4.0]
    """
    targets = targets.astype(np.float64)
    freq = targets.mean(axis=0)
    inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0) ** power
    w = (targets * inv[None, :]).max(axis=1)
    floor = inv[freq > 0].min() if (freq > 0).any() else 1.0
    return np.where(w > 0, w, floor)
