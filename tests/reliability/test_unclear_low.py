"""Issue 23, the "Unclear or low" list: each case fails on the code before the fix."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from hpa.aggregation.rle import encode_cells, encode_mask

# ------------------------------------------- 1. RLE bytes equal the competition's ---


def _reference(mask: np.ndarray) -> str:
    """The competition encoder: pycocotools on a Fortran-order uint8 mask, zlib 9, base64."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return base64.b64encode(zlib.compress(rle["counts"], zlib.Z_BEST_COMPRESSION)).decode("ascii")


def _edge_masks() -> dict[str, np.ndarray]:
    h, w = 6, 5
    masks = {"empty": np.zeros((h, w), bool), "full": np.ones((h, w), bool)}
    for name, (y, x) in {"last": (h - 1, w - 1), "first": (0, 0), "first-col-end": (h - 1, 0)}.items():
        m = np.zeros((h, w), bool)
        m[y, x] = True
        masks[name] = m
    m = np.zeros((h, w), bool)
    m[:, -2:] = True  # the last two columns: one run to the end of the image
    masks["last-columns"] = m
    m = np.zeros((h, w), bool)
    m[3:, -1] = True
    masks["last-column-tail"] = m
    m = np.ones((h, w), bool)
    m[0, 0] = False
    masks["all-but-first"] = m
    return masks


@pytest.mark.parametrize("name", sorted(_edge_masks()))
def test_rle_bytes_match_the_competition_encoder_on_edge_masks(name):
    mask = _edge_masks()[name]
    assert encode_mask(mask) == _reference(mask)
    if mask.any():
        labels = mask.astype(np.int32) * 3
        assert encode_cells(labels)[3] == _reference(mask)
