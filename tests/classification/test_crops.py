import numpy as np
import pytest

from hpa.classification.crops import CropSettings, cell_boxes, crop_cells, image_tiles


def test_cell_boxes_skip_missing_ids():
    cells = np.zeros((10, 10), np.int32)
    cells[1:3, 2:5] = 1
    cells[6:9, 6:10] = 3
    ids, boxes = cell_boxes(cells)
    assert ids.tolist() == [1, 3]
    assert boxes.tolist() == [[1, 2, 3, 5], [6, 6, 9, 10]]


def test_crop_is_centred_square_and_padded_at_border():
    img = np.zeros((40, 40, 4), np.uint8)
    img[0:10, 0:10] = 200  # a cell in the corner
    cells = np.zeros((40, 40), np.int32)
    cells[0:10, 0:10] = 1
    ids, boxes = cell_boxes(cells)
    crops = crop_cells(img, cells, ids, boxes, CropSettings(crop_size=12, margin=0.1))
    assert crops.shape == (1, 12, 12, 4) and crops.dtype == np.uint8
    # margin of 1 px each side: the outer ring is padding (0), the inside is the cell
    assert crops[0, 0, 0, 0] == 0 and crops[0, 6, 6, 0] == 200


def test_mask_outside_blanks_neighbours():
    img = np.full((20, 20, 4), 100, np.uint16)
    cells = np.zeros((20, 20), np.int32)
    cells[5:15, 5:10] = 1
    cells[5:15, 10:15] = 2
    ids, boxes = cell_boxes(cells)
    plain = crop_cells(img, cells, ids, boxes, CropSettings(crop_size=10, margin=0.0))
    masked = crop_cells(img, cells, ids, boxes, CropSettings(crop_size=10, margin=0.0, mask_outside=True))
    assert plain.dtype == np.uint16
    assert (plain[0] == 100).all()
    # cell 1 (5 px wide) sits in columns 3-7 of its 10 px square window, which also
    # covers background (columns 0-2) and part of cell 2 (columns 8-9): both blanked
    assert masked[0, :, 3:8].min() == 100
    assert masked[0, :, :3].max() == 0 and masked[0, :, 8:].max() == 0


def test_tiles_cover_grids():
    img = np.zeros((64, 64, 4), np.uint8)
    img[:32, :32] = 255
    tiles = image_tiles(img, CropSettings(crop_size=16, tile_grids=(1, 2)))
    assert tiles.shape == (5, 16, 16, 4)
    assert tiles[1].min() == 255 and tiles[2].max() == 0  # top-left quadrant, then top-right
    assert 0 < tiles[0].mean() < 255


def test_image_scale_keeps_structures_at_one_size():
    cells = np.zeros((80, 80), np.int32)
    cells[5:15, 5:15] = 1  # small cell, 10 px
    cells[30:50, 30:50] = 2  # two large cells, 20 px
    cells[55:75, 55:75] = 3
    img = (cells > 0)[..., None].repeat(4, axis=2).astype(np.uint8) * 255
    ids, boxes = cell_boxes(cells)

    def extent(crop):  # rows of the crop the cell covers
        return int((crop[:, crop.shape[1] // 2, 0] > 127).sum())

    box = crop_cells(img, cells, ids, boxes, CropSettings(crop_size=20, margin=0.0))
    assert extent(box[0]) == extent(box[1]) == 20  # each cell fills its own crop
    fixed = crop_cells(img, cells, ids, boxes, CropSettings(crop_size=20, margin=0.0, scale="image"))
    assert extent(fixed[1]) == 20 and extent(fixed[0]) == 10  # one window side: 20 px
    with pytest.raises(ValueError, match="crop scale"):
        CropSettings(scale="cell")
