"""Bare training throughput of a model on random tensors: the ceiling for the data pipeline.

The training benchmarks (``train_bench.py``, ``gpu_bench.py``) print the crops/s of
:func:`hpa.classification.train.fit` through the real data pipeline beside this
figure, measured in the same process.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from hpa.classification.inference import autocast, resolve_precision


def throughput(
    model: nn.Module,
    batch_size: int,
    size: int,
    steps: int = 5,
    device: str = "cpu",
    num_classes: int = 28,
    warmup: int = 1,
    precision: str = "auto",
) -> float:
    """Bare forward+backward+step crops/s of ``model`` on random tensors (benchmarks).

    Same memory format and autocast as :func:`hpa.classification.train.fit` for ``precision``.
    """
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 4, size, size, device=device)
    y = (torch.rand(batch_size, num_classes, device=device) > 0.9).float()
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    precision = resolve_precision(precision, device)

    def one() -> None:
        with autocast(device, precision):
            out = model(x)
        loss = F.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - t0)
