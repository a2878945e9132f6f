"""torch.distributed plumbing for ``torchrun ... -m hpa train-cells``.

A single-process run sees a world of one and none of this does anything. Under
torchrun (``WORLD_SIZE > 1``) each rank trains on its share of every epoch's views
(:class:`torch.utils.data.DistributedSampler` semantics, reshuffled per epoch),
gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`,
validation scores are gathered from all ranks before pooling and threshold tuning, and
only rank 0 writes files, logs progress bars and builds the crop cache.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The world described by torchrun's environment variables (a world of one without them)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: str) -> tuple[World, str]:
    """Join the process group when launched by torchrun.

    Returns:
        ``(world, device)``; on CUDA each rank takes the GPU of its local rank.
    """
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device.startswith("cuda"):
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if world.is_main:
        log.info("distributed training: %d ranks, backend %s", world.size, dist.get_backend())
    return world, device


def barrier(world: World) -> None:
    """Wait for every rank (no-op in a world of one)."""
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    """Leave the process group."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard_order(n: int, world: World, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """This rank's positions of an epoch over ``n`` items, as DistributedSampler gives them.

    Every rank gets the same number of items (the permutation is padded by wrapping
    around), so ranks run the same number of steps.
    """
    from torch.utils.data import DistributedSampler

    sampler: DistributedSampler[int] = DistributedSampler(
        range(n),  # type: ignore[arg-type]  # any sized sequence serves
        num_replicas=world.size,
        rank=world.rank,
        shuffle=shuffle,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), dtype=np.int64)


def gather_rows(world: World, rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every rank's ``(rows, values)`` in rank order (identity in a world of one)."""
    if not world.distributed:
        return rows, values
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, (rows, values))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
