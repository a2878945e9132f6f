"""``hpa train-segmenter``: train a cellpose model into a SEGMODEL folder.

``hpa segment --backend cellpose --cellpose-model SEGMODEL`` (cells) or
``--cellpose-nuclei-model SEGMODEL`` (nuclei) then uses it.
"""

from __future__ import annotations

import argparse
import logging

from hpa.segmentation.training import SegTrainConfig, load_pairs, train_segmenter

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``hpa train-segmenter``; returns the exit status."""
    config = SegTrainConfig(
        kind=args.kind,
        init=args.init,
        epochs=args.epochs,
        images_per_epoch=args.images_per_epoch,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        crop=args.crop,
        seed=args.seed,
        device=args.device,
    )
    pairs = load_pairs(args.images, args.masks, config.kind)
    train_segmenter(pairs, args.out, config, sources=[f"images {args.images}, masks {args.masks}"])
    return 0
