"""2021 submission files: write, read back, long rows, clear errors."""

import numpy as np
import pytest

from hpa.aggregation.rle import encode_cells
from hpa.aggregation.submission_2021 import read_submission_2021, write_submission_2021
from hpa.errors import HPADataError


def test_round_trip_with_a_row_longer_than_the_csv_field_limit(tmp_path):
    labels = np.random.default_rng(0).integers(1, 401, (64, 64)).astype(np.int32)  # 400 scattered cells
    masks = encode_cells(labels)
    text = " ".join(f"{c} 0.{k:04d} {m}" for k, m in masks.items() for c in range(19))
    assert len(text) > 131072  # Python's csv module would refuse this field
    path = tmp_path / "sub.csv"
    write_submission_2021(path, [("b", 64, 64, text), ("a", None, None, "")])
    rows = read_submission_2021(path)
    assert [r.image_id for r in rows] == ["b", "a"]
    assert rows[0].width == 64 and len(rows[0].predictions) == 400 * 19
    assert rows[0].predictions[19 * 3 + 5] == (5, 0.0004, masks[4])
    assert rows[1].width is None and rows[1].predictions == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,10,10,0 0.5\n", "not triples"),
        ("a,10,10,19 0.5 eNoL\n", "unknown class 19"),
        ("a,10,10,x 0.5 eNoL\n", "not 'class confidence'"),
        ("a,ten,10,\n", "ImageWidth 'ten'"),
        ("a,10,10,\na,10,10,\n", "duplicate Id a"),
        ("a,10\n", "expected 4 fields"),
    ],
)
def test_bad_rows_name_the_line(tmp_path, body, message):
    path = tmp_path / "sub.csv"
    path.write_text("ID,ImageWidth,ImageHeight,PredictionString\n" + body)
    with pytest.raises(HPADataError, match=message) as info:
        read_submission_2021(path)
    assert "line" in str(info.value)


def test_wrong_header_and_missing_file(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text("Id,Predicted\na,0\n")
    with pytest.raises(HPADataError, match="2021 format"):
        read_submission_2021(path)
    with pytest.raises(HPADataError, match="not found"):
        read_submission_2021(tmp_path / "none.csv")
