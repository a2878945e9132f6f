"""2021 mask encoding: the competition's real strings decode, our masks round-trip exactly."""

import base64
import csv
import zlib

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from hpa.aggregation.rle import decode_mask, encode_cells, encode_mask
from hpa.errors import HPADataError
from hpa.io import read_label_image


def test_empty_mask_is_the_competition_string():
    text = encode_mask(np.zeros((2048, 2048), bool))
    assert text == "eNoLCAgIMAEABJkBdQ=="
    assert zlib.decompress(base64.b64decode(text)) == b"PPPP4"


@pytest.mark.realdata
def test_real_sample_submission_strings_decode(shared_data):
    path = shared_data / "kaggle-2021" / "sample_submission.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 559
    seen = set()
    for row in rows:
        w, h = int(row["ImageWidth"]), int(row["ImageHeight"])
        tokens = row["PredictionString"].split()
        assert len(tokens) % 3 == 0
        for text in tokens[2::3]:
            mask = decode_mask(text, h, w)
            assert mask.shape == (h, w) and not mask.any()  # the sample file lists empty masks
            assert encode_mask(mask) == text  # and we write exactly the same bytes
            seen.add((w, h))
    assert {(2048, 2048), (3072, 3072), (1728, 1728)} <= seen


def _random_labels(rng, h, w, n):
    from skimage.segmentation import expand_labels

    labels = np.zeros((h, w), np.int32)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    labels[ys, xs] = np.arange(1, n + 1)
    return expand_labels(labels, max(h, w) // 4)


@pytest.mark.parametrize("seed", range(5))
def test_every_cell_round_trips_with_iou_one(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 120, 2)
    labels = _random_labels(rng, h, w, int(rng.integers(1, 12)))
    strings = encode_cells(labels)
    assert sorted(strings) == sorted(set(np.unique(labels).tolist()) - {0})
    for k, text in strings.items():
        decoded = decode_mask(text, h, w)
        assert np.array_equal(decoded, labels == k)
        # the same bytes as pycocotools encoding the whole mask, then zlib level 9 + base64
        rle = coco_mask.encode(np.asfortranarray((labels == k).astype(np.uint8)))
        assert text == base64.b64encode(zlib.compress(rle["counts"], 9)).decode()


def test_full_height_and_edge_cells_round_trip():
    labels = np.zeros((6, 5), np.int32)
    labels[:, 1:3] = 1  # full height: one run over two columns
    labels[0, 4] = labels[5, 4] = 2  # corners of the last column
    labels[5, 0] = 3
    labels[0, 0] = 4
    for k, text in encode_cells(labels).items():
        assert np.array_equal(decode_mask(text, 6, 5), labels == k)
    full = np.ones((4, 3), bool)
    assert np.array_equal(decode_mask(encode_mask(full), 4, 3), full)


def test_requested_absent_cell_is_empty():
    labels = np.array([[0, 1], [1, 1]])
    strings = encode_cells(labels, [1, 7])
    assert not decode_mask(strings[7], 2, 2).any()


@pytest.mark.realdata
def test_real_reference_masks_round_trip(shared_data):
    folder = shared_data / "hpa-2021-samples" / "reference-masks"
    paths = sorted(folder.glob("*_cellmask.png"))
    if not paths:
        pytest.skip(f"no reference masks in {folder}")
    labels = read_label_image(paths[0])
    strings = encode_cells(labels)
    assert len(strings) > 5
    for k, text in strings.items():
        assert np.array_equal(decode_mask(text, *labels.shape), labels == k)


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"plain").decode(), "eNozsDQAAAE1AJo="])
def test_bad_strings_are_clear_errors(text):
    with pytest.raises(HPADataError, match="mask"):
        decode_mask(text, 2, 2)  # the last one is a 3x3 mask
