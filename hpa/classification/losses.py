"""Multi-label losses: BCE, focal, soft-F1 and focal + soft-F1, and the bag (MIL) loss.

All take ``(B, C)`` logits and ``(B, C)`` float targets in {0, 1} and return a scalar;
:func:`mil_loss` also takes the image (bag) of each view.
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


def mil_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    bag: torch.Tensor,
    weight: float = 1.0,
    sharpness: float = 5.0,
) -> torch.Tensor:
    """BCE in which an image's positive labels are learnt by its cells as a bag.

    A cell crop inherits its image's labels, but a label carried by one cell makes the
    image's other cells false positives. Here, for a class the image has, the crops'
    own positive terms are scaled by ``1 - weight`` and replaced by one term on the
    image's pooled cell logit: the log-mean-exp of its cells' logits (a smooth maximum
    with ``sharpness`` r, ``m + log(mean(exp(r (z - m)))) / r``), counted once per cell
    so the bag weighs as much as its crops did. Negative labels stay per-crop: a cell of
    an image without the class is a true negative. Tiles keep plain BCE. ``weight`` 0
    is plain BCE.

    Args:
        logits, targets: ``(B, C)`` per-view logits and inherited image labels.
        bag: ``(B,)`` long, the batch-local image (0..n-1) of each cell crop; -1 for
            views outside any bag (tiles).

    Returns:
        The mean over the batch's ``B * C`` terms.

    >>> z = torch.tensor([[4.0], [-4.0]])  # one positive cell, one negative cell
    >>> y, bag = torch.ones(2, 1), torch.tensor([0, 0])
    >>> float(mil_loss(z, y, bag)) < float(mil_loss(z, y, bag, weight=0.0))
    True
    """
    logits = logits.float()
    is_cell = bag >= 0
    per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pos_cell = (targets > 0) & is_cell[:, None]
    total = (per * torch.where(pos_cell, 1.0 - weight, 1.0)).sum()
    if weight > 0 and bool(is_cell.any()):
        z, b, y = logits[is_cell], bag[is_cell], targets[is_cell]
        n_bags = int(b.max()) + 1
        index = b[:, None].expand_as(z)
        m = torch.full((n_bags, z.shape[1]), -torch.inf, device=z.device).scatter_reduce(
            0, index, z.detach(), "amax"
        )
        e = torch.zeros_like(m).index_add(0, b, torch.exp(sharpness * (z - m[b])))
        count = torch.zeros(n_bags, device=z.device).index_add(0, b, torch.ones_like(b, dtype=z.dtype))
        pooled = m + torch.log(e / count[:, None]) / sharpness
        bag_y = torch.zeros_like(m).scatter_reduce(0, index, y, "amax")
        bag_loss = F.binary_cross_entropy_with_logits(pooled, torch.ones_like(pooled), reduction="none")
        total = total + weight * (bag_loss * bag_y * count[:, None]).sum()
    return total / per.numel()
