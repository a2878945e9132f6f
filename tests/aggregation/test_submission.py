"""Writing, reading and aligning Kaggle submissions."""

from __future__ import annotations

import numpy as np
import pytest

from hpa.aggregation import align_submission, read_submission, write_submission
from hpa.io import HPADataError, Labels


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"id{i:03d}" for i in range(30)][::-1]
    y = (rng.random((30, 28)) < 0.1).astype(np.uint8)
    y[0] = 0
    y[1] = 0
    y[1, [27, 3, 10]] = 1
    path = tmp_path / "out" / "submission.csv"
    write_submission(path, ids, y)
    lines = path.read_text().splitlines()
    assert lines[0] == "Id,Predicted"
    assert lines[1] == "id029," and lines[2] == "id028,3 10 27"  # ascending, space-separated
    read_ids, read_y = read_submission(path, "2018")
    assert read_ids == ids
    np.testing.assert_array_equal(read_y, y)
    assert read_y.dtype == np.uint8
    ids_n, _ = read_submission(path, n_classes=28)
    assert ids_n == ids
    with pytest.raises(ValueError, match="duplicated"):
        write_submission(path, ["a", "a"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        write_submission(path, ["a"], np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "empty submission file"),
        ("Id,Target\na,1\n", "expected 'Id,Predicted'"),
        ("Id,Predicted\na,1,2\n", "line 2: malformed row"),
        ("Id,Predicted\na,1\nb,one\n", "line 3: 'one' in 'one' is not a class number"),
        ("Id,Predicted\na,1 19\n", "line 2: unknown class 19"),
        ("Id,Predicted\na,-1\n", "unknown class -1"),
        ("Id,Predicted\n../x,1\n", "invalid image Id"),
        ("Id,Predicted\na,1\nb,2\na,3\nb,\n", "2 duplicated Id"),
    ],
)
def test_read_submission_errors(tmp_path, body, message):
    path = tmp_path / "submission.csv"
    path.write_text(body)
    with pytest.raises(HPADataError, match=message) as info:
        read_submission(path, "2021")
    assert str(path) in str(info.value)


def test_duplicate_message_gives_lines(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_text("Id,Predicted\na,1\nb,2\na,3\n")
    with pytest.raises(HPADataError, match=r"a \(lines 2, 4\)"):
        read_submission(path, "2018")
    with pytest.raises(HPADataError, match="not found"):
        read_submission(tmp_path / "absent.csv", "2018")


def test_align_submission():
    truth = Labels(("a", "b", "c"), np.eye(3, dtype=np.uint8), "2018")
    y_true, y_pred = align_submission(["c", "a", "b"], np.array([[0, 0, 1], [1, 0, 0], [0, 1, 1]]), truth)
    np.testing.assert_array_equal(y_true, np.eye(3))
    assert y_pred.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_align_submission_lists_every_problem():
    truth = Labels(tuple(f"t{i}" for i in range(10)), np.zeros((10, 2), dtype=np.uint8), "2018")
    sub_ids = ["t0", "t0", "x1", "x2"]
    with pytest.raises(HPADataError) as info:
        align_submission(sub_ids, np.zeros((4, 2)), truth)
    msg = str(info.value)
    assert "9 labelled Id(s) missing from the submission: t1, t2, t3, t4, t5, ..." in msg
    assert "1 Id(s) duplicated in the submission: t0" in msg
    assert "2 submission Id(s) not in the labels: x1, x2" in msg
    with pytest.raises(HPADataError, match="3 classes"):
        align_submission(["t0"], np.zeros((1, 3)), truth)
