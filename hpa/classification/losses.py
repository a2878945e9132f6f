"""Multi-label losses: BCE, focal, soft-F1 and focal + soft-F1.

All take ``(B, C)`` logits and ``(B, C)`` float targets in {0, 1} and return a scalar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

LOSSES = ("bce", "focal", "softf1", "focal+softf1")


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) without class weighting, averaged."""
    return sigmoid_focal_loss(logits, targets, alpha=-1, gamma=gamma, reduction="mean")


def soft_f1_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - mean over classes of the soft F1`` computed over the batch.

    Probabilities stand in for hard predictions, so the loss is differentiable and
    directly targets the competition's macro F1; it is noisy for rare classes in small
    batches, hence usually combined with a focal term.

    >>> t = torch.tensor([[1.0, 0.0]])
    >>> round(float(soft_f1_loss(torch.tensor([[20.0, -20.0]]), t)), 3)
    0.5
    """
    p = torch.sigmoid(logits.float())
    tp = (p * targets).sum(0)
    fp = (p * (1 - targets)).sum(0)
    fn = ((1 - p) * targets).sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn + eps)
    return 1 - f1.mean()


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called ``name`` (one of :data:`LOSSES`)."""
    if name == "bce":
        return lambda lg, t: F.binary_cross_entropy_with_logits(lg.float(), t)
    if name == "focal":
        return lambda lg, t: focal_loss(lg.float(), t)
    if name == "softf1":
        return soft_f1_loss
    if name == "focal+softf1":
        return lambda lg, t: focal_loss(lg.float(), t) + soft_f1_loss(lg, t)
    raise ValueError(f"unknown loss {name!r}; choose from {LOSSES}")
