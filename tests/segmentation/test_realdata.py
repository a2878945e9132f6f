"""Accuracy floors on the real data in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hpa.io import read_grey, read_sample
from hpa.segmentation import f1_at, segment

pytestmark = pytest.mark.realdata

HPA_ID = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"


def test_real_hpa_sample_at_512_px_matches_reference(shared_data: Path) -> None:
    folder = shared_data / "hpa-2021-samples"
    image = read_sample(folder / "images", HPA_ID)
    ref = read_grey(folder / "reference-masks" / f"{HPA_ID}_cellmask.png").astype(np.int32)
    small = np.stack(
        [cv2.resize(image[..., c], (512, 512), interpolation=cv2.INTER_AREA) for c in range(4)], -1
    )
    cells, nuclei = segment(small)
    assert f1_at(cv2.resize(ref, (512, 512), interpolation=cv2.INTER_NEAREST), cells) >= 0.85
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])


def test_real_16bit_channel_reads_and_segments(shared_data: Path) -> None:
    folder = shared_data / "hpa-16bit-sample"
    green = read_grey(folder / "1000_A12_2_green.png")
    assert green.dtype == np.uint16
    nuclei_ref = read_grey(folder / "1000_A12_2_nucleimask.png").astype(np.int32)
    # only green exists: build a blue channel from the reference nuclei so the 16-bit path runs
    image = np.zeros((*green.shape, 4), np.uint16)
    image[..., 2] = np.where(nuclei_ref > 0, 40000, 2000).astype(np.uint16)
    image[..., 0] = image[..., 3] = np.where(read_grey(folder / "1000_A12_2_cellmask.png") > 0, 20000, 500)
    image[..., 1] = green
    _cells, nuclei = segment(image)
    assert f1_at(nuclei_ref, nuclei) >= 0.8


def test_stardist_sample_nuclei(shared_data: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    folder = shared_data / "nuclei-groundtruth" / "stardist-sample"
    grey = tifffile.imread(folder / "img2d.tif")
    image = np.zeros((*grey.shape, 4), grey.dtype)
    image[..., 2] = grey
    assert f1_at(tifffile.imread(folder / "mask2d.tif").astype(np.int32), segment(image)[1]) >= 0.65
