"""The public API on synthetic discs: shapes, ids, bit depth, scale, green ignored."""

from __future__ import annotations

import doctest
import importlib

import cv2
import numpy as np
import pytest

from hpa.segmentation import TABLE_COLUMNS, SegmentConfig, cell_table, estimate_nucleus_diameter, segment

from .helpers import disc_sample


def test_shapes_dtypes_and_ids() -> None:
    image = disc_sample(256)
    cells, nuclei = segment(image)
    assert cells.shape == nuclei.shape == (256, 256)
    assert cells.dtype == nuclei.dtype == np.int32
    ids = np.unique(cells[cells > 0])
    assert ids.tolist() == list(range(1, 10))  # 9 cells, numbered 1..N
    assert np.unique(nuclei[nuclei > 0]).tolist() == ids.tolist()  # every cell has its nucleus
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])  # a nucleus lies in its own cell
    assert (nuclei > 0).sum() < (cells > 0).sum()


def test_8_and_16_bit_give_the_same_masks() -> None:
    a = segment(disc_sample(256, dtype=np.uint8))
    b = segment(disc_sample(256, dtype=np.uint16))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_scale_independence() -> None:
    small = disc_sample(256, grid=4)
    big = np.stack(
        [cv2.resize(small[..., c], (1024, 1024), interpolation=cv2.INTER_LINEAR) for c in range(4)], -1
    )
    d_small, d_big = estimate_nucleus_diameter(small), estimate_nucleus_diameter(big)
    assert d_big == pytest.approx(4 * d_small, rel=0.15)
    assert segment(small)[0].max() == segment(big)[0].max() == 16


def test_green_is_ignored() -> None:
    image = disc_sample(256)
    other = image.copy()
    other[..., 1] = np.random.default_rng(1).integers(0, 256, other.shape[:2], dtype=np.uint8)
    for a, b in zip(segment(image), segment(other)):
        np.testing.assert_array_equal(a, b)


def test_cells_without_nucleus_dropped_or_kept() -> None:
    image = disc_sample(256)
    image[: 256 // 3, : 256 // 3, 2] = 10  # erase the top-left nucleus
    dropped, _ = segment(image)
    kept, kept_nuclei = segment(image, SegmentConfig(keep_cells_without_nucleus=True))
    assert dropped.max() == 8
    # without a seed the watershed backend cannot grow that cell: same count either way
    assert kept.max() == 8 and set(np.unique(kept_nuclei)) <= set(np.unique(kept))


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 4\)"):
        segment(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8 or uint16"):
        segment(np.zeros((64, 64, 4), np.float32))
    with pytest.raises(ValueError, match="backend"):
        SegmentConfig(backend="magic")


def test_blank_image_gives_no_cells() -> None:
    cells, nuclei = segment(np.zeros((128, 128, 4), np.uint8))
    assert cells.max() == nuclei.max() == 0


def test_cell_table() -> None:
    image = disc_sample(256)
    cells, nuclei = segment(image)
    table = cell_table("img1", image, cells, nuclei)
    assert tuple(table.columns) == TABLE_COLUMNS
    assert len(table) == 9 and table["cell_id"].tolist() == list(range(1, 10))
    assert (table["nucleus_area"] > 0).all() and (table["nucleus_area"] < table["area"]).all()
    assert not table["touches_border"].any()
    row = table.iloc[0]
    y0, x0, y1, x1 = (int(row[k]) for k in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"))
    assert (cells[y0:y1, x0:x1] == 1).sum() == row["area"]
    assert row["mean_red"] == pytest.approx(image[..., 0][cells == 1].mean())
    assert (table["image_height"] == 256).all() and (table["image_width"] == 256).all()
    empty = cell_table("img2", image, np.zeros_like(cells), np.zeros_like(cells))
    assert len(empty) == 0 and tuple(empty.columns) == TABLE_COLUMNS


@pytest.mark.parametrize("name", ["metrics", "postprocess", "watershed"])
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"hpa.segmentation.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0


def _nuclei_on_a_bed(dtype: type = np.uint8) -> tuple[np.ndarray, int, float]:
    """Small nuclei packed on a bright elliptical bed (like an embryo): sample, count, diameter."""
    rng = np.random.default_rng(3)
    h, w, d = 300, 640, 12.0
    yy, xx = np.mgrid[:h, :w]
    blue = np.zeros((h, w), np.float64)
    bed = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.42 * w)) ** 2 <= 1
    blue[bed] = 70
    step, n = d + 3, 0
    for row, cy in enumerate(np.arange(step, h - step, step * 0.87)):
        for cx in np.arange(step + (row % 2) * step / 2, w - step, step):
            if bed[int(cy), int(cx)]:
                blue[(yy - cy) ** 2 + (xx - cx) ** 2 <= (d / 2) ** 2] = 200
                n += 1
    blue = np.clip(blue + rng.normal(0, 5, blue.shape) + 10, 0, 255).astype(np.uint8)
    image = np.zeros((h, w, 4), np.uint8)
    image[..., 2] = blue
    return (image.astype(np.uint16) * 257 if dtype == np.uint16 else image), n, d


def test_nuclei_on_a_bright_bed_are_measured_and_split() -> None:
    image, n, d = _nuclei_on_a_bed()
    assert estimate_nucleus_diameter(image) == pytest.approx(d, rel=0.3)  # not the bed's size
    nuclei = segment(image)[1]
    assert 0.85 * n <= nuclei.max() <= 1.1 * n
    wide = np.stack([cv2.resize(image[..., c], None, fx=2, fy=2) for c in range(4)], -1)
    assert estimate_nucleus_diameter(wide) == pytest.approx(2 * estimate_nucleus_diameter(image), rel=0.15)


def test_nuclei_on_a_bright_bed_8_and_16_bit_agree() -> None:
    a, b = _nuclei_on_a_bed(np.uint8)[0], _nuclei_on_a_bed(np.uint16)[0]
    np.testing.assert_array_equal(segment(a)[1], segment(b)[1])
