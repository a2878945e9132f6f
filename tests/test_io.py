"""Tests of hpa.io: every sample/label reader, the writers, and every bad-input case.

Synthetic files are written by the tests themselves in ``tmp_path``; the real data in
../shared/data is used behind the ``realdata`` marker, and the two real samples shipped
in the repository's ``data/`` folder are always tested.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from hpa.constants import CHANNELS, CLASS_FREQUENCIES_2018, CLASS_NAMES_2018, CLASS_NAMES_2021
from hpa.errors import HPADataError
from hpa.io import (
    Labels,
    atomic_path,
    channel_path,
    check_image_id,
    list_image_ids,
    percentile_stretch,
    read_grey,
    read_id_list,
    read_label_image,
    read_labels,
    read_sample,
    to_float,
    to_uint8,
    write_label_image,
    write_labels,
    write_png,
    write_text_atomic,
)

ID = "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0"
HPAV18_ID = "10580_1610_C1_1"
#: One distinct constant per channel, in CHANNELS order, to check the output order.
LEVELS_8 = (10, 60, 120, 200)
LEVELS_16 = (1000, 20000, 40000, 65535)


def names_file(exc: pytest.ExceptionInfo[HPADataError], path: Path) -> bool:
    return str(path) in str(exc.value)


def write_constant_sample(
    folder: Path, image_id: str, levels=LEVELS_8, shape=(512, 512), ext=".png", dtype=np.uint8
) -> list[Path]:
    """Write one grey file per channel, channel k filled with ``levels[k]``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for color, level in zip(CHANNELS, levels, strict=True):
        path = folder / f"{image_id}_{color}{ext}"
        img = np.full(shape, level, dtype=dtype)
        if ext in (".tif", ".tiff"):
            tifffile.imwrite(path, img)
        else:
            assert cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def texture(shape=(128, 160), seed=0) -> np.ndarray:
    """A smooth, cell-like uint8 texture (JPEG-friendly, not constant)."""
    rng = np.random.default_rng(seed)
    noise = rng.random(shape).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), 4)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * 220 + 20).astype(np.uint8)


def valid_png_bytes(shape=(64, 64)) -> bytes:
    ok, buf = cv2.imencode(".png", texture(shape))
    assert ok
    return buf.tobytes()


# ------------------------------------------------------------------ read_sample ---


def test_read_sample_kaggle_2018_layout(tmp_path):
    write_constant_sample(tmp_path, ID)
    img = read_sample(tmp_path, ID)
    assert img.shape == (512, 512, 4)
    assert img.dtype == np.uint8
    assert [int(img[..., k].mean()) for k in range(4)] == list(LEVELS_8)
    assert img.flags.c_contiguous


def test_read_sample_2021_layout_16bit_keeps_dtype(tmp_path):
    # Non-square, to check (H, W) is not swapped.
    for color, level in zip(CHANNELS, LEVELS_16, strict=True):
        write_png(tmp_path / f"{ID}_{color}.png", np.full((48, 80), level, dtype=np.uint16))
    img = read_sample(tmp_path, ID)
    assert img.shape == (48, 80, 4)
    assert img.dtype == np.uint16
    assert [int(img[..., k].max()) for k in range(4)] == list(LEVELS_16)


@pytest.mark.parametrize("ext", [".tif", ".tiff"])
def test_read_sample_tiff(tmp_path, ext):
    write_constant_sample(tmp_path, ID, LEVELS_16, (32, 40), ext, np.uint16)
    img = read_sample(tmp_path, ID)
    assert img.shape == (32, 40, 4)
    assert img.dtype == np.uint16
    assert [int(img[..., k].min()) for k in range(4)] == list(LEVELS_16)


def test_read_sample_hpav18_grey_jpegs(tmp_path):
    write_constant_sample(tmp_path, HPAV18_ID, shape=(64, 64), ext=".jpg")
    img = read_sample(tmp_path, HPAV18_ID)
    assert img.shape == (64, 64, 4)
    assert img.dtype == np.uint8
    np.testing.assert_allclose(img.reshape(-1, 4).mean(0), LEVELS_8, atol=1)


def test_read_sample_hpav18_colour_jpegs(tmp_path):
    # HPAv18 downloads are colour JPEGs: red, green and blue in their own plane, yellow
    # in the red and green planes alike. JPEG leaks a little of each plane into the
    # others, so the planes are never exactly blank or exactly equal after decoding.
    src = {c: texture(seed=k) // (k + 1) + 10 * k for k, c in enumerate(CHANNELS)}
    z = np.zeros_like(src["red"])
    bgr = {
        "red": (z, z, src["red"]),
        "green": (z, src["green"], z),
        "blue": (src["blue"], z, z),
        "yellow": (z, src["yellow"], src["yellow"]),
    }
    for color, planes in bgr.items():
        path = tmp_path / f"{HPAV18_ID}_{color}.jpg"
        assert cv2.imwrite(str(path), np.dstack(planes), [cv2.IMWRITE_JPEG_QUALITY, 90])
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert decoded.ndim == 3  # really a colour JPEG
    img = read_sample(tmp_path, HPAV18_ID)
    assert img.shape == (*src["red"].shape, 4)
    assert img.dtype == np.uint8
    for k, color in enumerate(CHANNELS):
        err = np.abs(img[..., k].astype(np.float32) - src[color]).mean()
        assert err < 2.0, (color, err)


def test_read_grey_jpeg_two_different_planes_is_an_error(tmp_path):
    # A composite (e.g. red microtubules + green protein in one JPEG) is not one channel.
    path = tmp_path / "composite.jpg"
    a, b = texture(seed=1), texture(seed=2)
    cv2.imwrite(str(path), np.dstack([np.zeros_like(a), a, b]))
    with pytest.raises(HPADataError, match="colour planes differ") as exc:
        read_grey(path)
    assert names_file(exc, path)


def test_read_grey_colour_png_with_equal_or_single_planes(tmp_path):
    g = texture()
    z = np.zeros_like(g)
    for name, planes in {"grey_as_rgb": (g, g, g), "red_only": (z, z, g), "yellow": (z, g, g)}.items():
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), np.dstack(planes))
        np.testing.assert_array_equal(read_grey(path), g)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((8, 8, 3), np.uint8))
    assert read_grey(blank).shape == (8, 8)


def test_channel_path_and_list_image_ids(tmp_path):
    write_constant_sample(tmp_path, "b", shape=(4, 4))
    write_constant_sample(tmp_path, HPAV18_ID, shape=(4, 4), ext=".jpg")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a_green.png").write_bytes(valid_png_bytes())  # one channel is enough to list
    assert list_image_ids(tmp_path) == [HPAV18_ID, "a", "b"]
    assert channel_path(tmp_path, HPAV18_ID, "blue") == tmp_path / f"{HPAV18_ID}_blue.jpg"


# ---------------------------------------------------------------- conversions ---


def test_to_float_8_and_16_bit():
    out = to_float(np.array([[0, 51, 255]], dtype=np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)
    out = to_float(np.array([[0, 13107, 65535]], dtype=np.uint16))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)
    np.testing.assert_array_equal(to_float(np.array([-0.5, 0.5, 2.0])), np.float32([0.0, 0.5, 1.0]))
    with pytest.raises(TypeError, match="int32"):
        to_float(np.zeros(3, np.int32))


def test_to_uint8():
    a = np.array([0, 7, 255], dtype=np.uint8)
    assert to_uint8(a) is a
    out = to_uint8(np.array([0, 255, 256, 65535], dtype=np.uint16))
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 1, 255]
    assert to_uint8(np.array([0.0, 0.5, 1.0, 3.0], dtype=np.float32)).tolist() == [0, 128, 255, 255]


def test_percentile_stretch_12_bit_in_16_bit_reaches_full_range():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4096, size=(64, 64, 4), dtype=np.uint16)  # 12 bits used
    img[..., 2] //= 8  # a dim channel is stretched on its own
    out = percentile_stretch(img)
    assert out.shape == img.shape
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(-1, 4).min(0), 0.0)
    np.testing.assert_allclose(out.reshape(-1, 4).max(0), 1.0)
    assert np.isclose(np.median(out[..., 2]), 0.5, atol=0.05)
    # 8-bit and 16-bit views of the same picture stretch alike; (H, W) stays (H, W).
    grey8 = texture()
    a, b = percentile_stretch(grey8), percentile_stretch(grey8.astype(np.uint16) * 16)
    assert a.shape == grey8.shape
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert percentile_stretch(np.full((4, 4), 9, np.uint8)).max() == 0.0  # constant: no divide by 0


# ------------------------------------------------------------------ bad images ---


def test_missing_channel_file(tmp_path):
    paths = write_constant_sample(tmp_path, ID, shape=(8, 8))
    paths[3].unlink()
    with pytest.raises(HPADataError, match="missing yellow channel") as exc:
        read_sample(tmp_path, ID)
    assert ID in str(exc.value)
    assert names_file(exc, tmp_path)


def test_channels_of_different_sizes(tmp_path):
    write_constant_sample(tmp_path, ID, shape=(8, 8))
    cv2.imwrite(str(tmp_path / f"{ID}_blue.png"), np.zeros((8, 9), np.uint8))
    with pytest.raises(HPADataError, match="differ in size") as exc:
        read_sample(tmp_path, ID)
    assert ID in str(exc.value)
    assert f"{ID}_blue.png 9x8" in str(exc.value)


def test_channels_of_different_bit_depths(tmp_path):
    write_constant_sample(tmp_path, ID, shape=(8, 8))
    write_png(tmp_path / f"{ID}_green.png", np.zeros((8, 8), np.uint16))
    with pytest.raises(HPADataError, match="differ in bit depth") as exc:
        read_sample(tmp_path, ID)
    assert ID in str(exc.value)
    assert f"{ID}_green.png uint16" in str(exc.value)


def test_rgb_png_with_different_planes(tmp_path):
    write_constant_sample(tmp_path, ID, shape=(32, 32))
    path = tmp_path / f"{ID}_red.png"
    write_png(path, np.dstack([texture((32, 32), 1), texture((32, 32), 2), texture((32, 32), 3)]))
    with pytest.raises(HPADataError, match="colour planes differ") as exc:
        read_sample(tmp_path, ID)
    assert names_file(exc, path)


def test_truncated_png(tmp_path):
    write_constant_sample(tmp_path, ID, shape=(8, 8))
    data = valid_png_bytes()
    path = tmp_path / f"{ID}_green.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HPADataError, match="truncated or corrupt PNG") as exc:
        read_sample(tmp_path, ID)
    assert names_file(exc, path)


def test_corrupt_png(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(HPADataError, match="corrupt") as exc:
        read_grey(path)
    assert names_file(exc, path)
    # Garbage that even ends in an IEND marker is still not decodable.
    path.write_bytes(b"not a png at all" * 10 + b"IEND\xaeB`\x82")
    with pytest.raises(HPADataError, match="cannot decode") as exc:
        read_grey(path)
    assert names_file(exc, path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_empty_file(tmp_path, ext):
    path = tmp_path / f"empty{ext}"
    path.write_bytes(b"")
    with pytest.raises(HPADataError) as exc:
        read_grey(path)
    assert names_file(exc, path)


def test_read_grey_missing_file_and_unsupported_pixel_types(tmp_path):
    with pytest.raises(HPADataError, match="file not found") as exc:
        read_grey(tmp_path / "nope.png")
    assert names_file(exc, tmp_path / "nope.png")
    for name, arr, msg in [
        ("float.tif", np.zeros((4, 4), np.float32), "floating-point"),
        ("int32.tif", np.zeros((4, 4), np.int32), "unsupported pixel type"),
        ("stack.tif", np.zeros((5, 16, 16), np.uint8), "expected a grey image"),
    ]:
        path = tmp_path / name
        tifffile.imwrite(path, arr)
        with pytest.raises(HPADataError, match=msg) as exc:
            read_grey(path)
        assert names_file(exc, path)


BAD_IDS = ["../x", "a/b", "/tmp/x", "..", "x..y", "a\\b", ".hidden", "", "a\n", "a b"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_id_escaping_the_folder_via_read_sample(tmp_path, bad_id):
    # A sample one level up exists: without the check, "../x" would read it.
    write_constant_sample(tmp_path, "x", shape=(4, 4))
    (tmp_path / "images").mkdir()
    with pytest.raises(HPADataError, match="invalid image Id") as exc:
        read_sample(tmp_path / "images", bad_id)
    assert repr(bad_id) in str(exc.value)


def test_check_image_id_accepts_real_ids():
    for ok in (ID, HPAV18_ID, "1000_A12_2", "a.b-c_d"):
        assert check_image_id(ok) == ok
    with pytest.raises(HPADataError):
        check_image_id(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "/etc/passwd"])
def test_id_escaping_the_folder_via_label_csv(tmp_path, bad_id):
    path = tmp_path / "train.csv"
    path.write_text(f"Id,Target\n{ID},0\n{bad_id},1\n")
    with pytest.raises(HPADataError, match="line 3: invalid image Id") as exc:
        read_labels(path)
    assert names_file(exc, path)
    with pytest.raises(HPADataError, match="line 3: invalid image Id") as exc:
        read_id_list(path)
    assert names_file(exc, path)


def test_list_image_ids_on_a_non_folder(tmp_path):
    f = tmp_path / "file.png"
    f.write_bytes(valid_png_bytes())
    for path in (f, tmp_path / "missing"):
        with pytest.raises(HPADataError, match="not a folder") as exc:
            list_image_ids(path)
        assert names_file(exc, path)


# ----------------------------------------------------------------------- labels ---


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_read_labels_2018(tmp_path):
    path = write_csv(tmp_path / "train.csv", f"Id,Target\n{ID},7 1 2 0\nb,27\nc,\n\n")
    labels = read_labels(path)
    assert labels.label_set == "2018"
    assert labels.ids == (ID, "b", "c")
    assert len(labels) == 3
    assert labels.y.shape == (3, 28)
    assert labels.y.dtype == np.uint8
    assert np.flatnonzero(labels.y[0]).tolist() == [0, 1, 2, 7]
    assert np.flatnonzero(labels.y[1]).tolist() == [27]
    assert labels.y[2].sum() == 0  # empty target: no label
    assert labels.class_names == CLASS_NAMES_2018


def test_read_labels_2021(tmp_path):
    path = write_csv(tmp_path / "train.csv", "ID,Label\nx,8|5|0\ny,18\n")
    labels = read_labels(path)
    assert labels.label_set == "2021"
    assert labels.y.shape == (2, 19)
    assert np.flatnonzero(labels.y[0]).tolist() == [0, 5, 8]
    assert labels.class_names == CLASS_NAMES_2021
    assert labels.class_names[18] == "Negative"


def test_read_labels_hpav18_ids_extra_columns_and_bom(tmp_path):
    text = f"Id,Target,Source\n{HPAV18_ID},13 25 0 2 21,HPAv18\n10580_1610_C1_2, 0 ,HPAv18\n"
    path = write_csv(tmp_path / "external.csv", text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    labels = read_labels(path)
    assert labels.ids == (HPAV18_ID, "10580_1610_C1_2")
    assert np.flatnonzero(labels.y[0]).tolist() == [0, 2, 13, 21, 25]
    assert np.flatnonzero(labels.y[1]).tolist() == [0]


def test_read_labels_label_set_override(tmp_path):
    path = write_csv(tmp_path / "train.csv", "Id,Target\na,18 3\n")
    labels = read_labels(path, label_set="2021")
    assert labels.label_set == "2021"
    assert labels.y.shape == (1, 19)
    path = write_csv(tmp_path / "t.csv", "Id,Target\na,27\n")
    with pytest.raises(HPADataError, match="unknown class 27 for Id a") as exc:
        read_labels(path, label_set="2021")
    assert names_file(exc, path)
    with pytest.raises(HPADataError, match="unknown label set"):
        read_labels(path, label_set="2019")


def test_read_labels_unknown_class_names_line_and_id(tmp_path):
    path = write_csv(tmp_path / "train.csv", f"Id,Target\na,0\n{ID},1 28\n")
    with pytest.raises(HPADataError, match=rf"line 3: unknown class 28 for Id {ID}") as exc:
        read_labels(path)
    assert names_file(exc, path)
    path = write_csv(tmp_path / "t2.csv", "ID,Label\na,19\n")
    with pytest.raises(HPADataError, match="line 2: unknown class 19 for Id a"):
        read_labels(path)
    path = write_csv(tmp_path / "t3.csv", "Id,Target\na,-1\n")
    with pytest.raises(HPADataError, match="unknown class -1"):
        read_labels(path)


@pytest.mark.parametrize("target", ["1 x", "1.5", "1,2", "0|1"])
def test_read_labels_non_numeric_token(tmp_path, target):
    path = write_csv(tmp_path / "train.csv", f'Id,Target\na,"{target}"\n')
    with pytest.raises(HPADataError, match=r"line 2: .* is not a class number") as exc:
        read_labels(path)
    assert names_file(exc, path)


def test_read_labels_duplicate_ids(tmp_path):
    path = write_csv(tmp_path / "train.csv", "Id,Target\na,0\nb,1\na,2\n")
    with pytest.raises(HPADataError, match=r"line 4: duplicate Id a \(first on line 2\)") as exc:
        read_labels(path)
    assert names_file(exc, path)


@pytest.mark.parametrize("header", ["Image,Target", "Id", "Id;Target", "Target,Id", "ID,Predicted"])
def test_read_labels_unknown_header(tmp_path, header):
    path = write_csv(tmp_path / "train.csv", f"{header}\na,0\n")
    with pytest.raises(HPADataError, match="unknown label format") as exc:
        read_labels(path)
    assert names_file(exc, path)


def test_read_labels_empty_or_missing_file(tmp_path):
    path = write_csv(tmp_path / "train.csv", "")
    with pytest.raises(HPADataError, match="empty label file") as exc:
        read_labels(path)
    assert names_file(exc, path)
    with pytest.raises(HPADataError, match="label file not found") as exc:
        read_labels(tmp_path / "missing.csv")
    assert names_file(exc, tmp_path / "missing.csv")
    header_only = read_labels(write_csv(tmp_path / "h.csv", "ID,Label\n"))
    assert len(header_only) == 0
    assert header_only.y.shape == (0, 19)


@pytest.mark.parametrize("label_set", ["2018", "2021"])
def test_write_labels_round_trip(tmp_path, label_set):
    n_classes = 28 if label_set == "2018" else 19
    rng = np.random.default_rng(1)
    y = (rng.random((20, n_classes)) < 0.15).astype(np.uint8)
    y[3] = 0  # an image without a label
    ids = tuple([f"{k:04d}-{label_set}" for k in range(19)] + [HPAV18_ID])
    labels = Labels(ids, y, label_set)
    path = tmp_path / "labels.csv"
    write_labels(path, labels)
    header = path.read_text().splitlines()[0]
    assert header == ("Id,Target" if label_set == "2018" else "ID,Label")
    back = read_labels(path)
    assert back.label_set == label_set
    assert back.ids == ids
    np.testing.assert_array_equal(back.y, y)


def test_read_id_list_keeps_order_and_rejects_duplicates(tmp_path):
    path = write_csv(tmp_path / "sub.csv", "Id,Predicted\nz,0\na,1 2\n\nm,\n", encoding="utf-8-sig")
    assert read_id_list(path) == ["z", "a", "m"]
    path = write_csv(tmp_path / "dup.csv", "Id,Predicted\nz,0\na,1\nz,2\n")
    with pytest.raises(HPADataError, match="line 4: duplicate Id z") as exc:
        read_id_list(path)
    assert names_file(exc, path)
    path = write_csv(tmp_path / "empty.csv", "")
    with pytest.raises(HPADataError, match="empty file") as exc:
        read_id_list(path)
    assert names_file(exc, path)
    with pytest.raises(HPADataError, match="not found"):
        read_id_list(tmp_path / "missing.csv")


def test_labels_subset_keeps_requested_order():
    y = np.eye(3, 28, dtype=np.uint8)
    labels = Labels(("a", "b", "c"), y, "2018")
    sub = labels.subset(["c", "a"])
    assert sub.ids == ("c", "a")
    np.testing.assert_array_equal(sub.y, y[[2, 0]])
    assert sub.label_set == "2018"
    with pytest.raises(KeyError, match="zz"):
        labels.subset(["a", "zz"])


# ---------------------------------------------------------------- atomic output ---


def test_atomic_path_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "out" / "scores.csv"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        tmp.write_text("half-written")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.csv"]  # no temp left


def test_atomic_path_replaces_on_success_with_usual_file_mode(tmp_path):
    target = tmp_path / "new" / "mask.png"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.png"]
    umask = os.umask(0)
    os.umask(umask)
    # Like a plain open(): not mkstemp's private 0600.
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_write_label_image_rejects_too_many_labels(tmp_path):
    path = tmp_path / "mask.png"
    labels = np.zeros((4, 4), np.int32)
    labels[0, 0] = 65536
    with pytest.raises(ValueError, match="65536 labels do not fit") as exc:
        write_label_image(path, labels)
    assert str(path) in str(exc.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_label_image_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 300, size=(40, 50)).astype(np.int64)
    labels[0, 0] = 65535
    path = tmp_path / "masks" / "a_cellmask.png"
    write_label_image(path, labels)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    back = read_label_image(path)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)
    empty = tmp_path / "empty.png"
    write_label_image(empty, np.zeros((3, 5), np.int32))
    np.testing.assert_array_equal(read_label_image(empty), np.zeros((3, 5)))


def test_write_png_rgb_and_bad_dtype(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    write_png(tmp_path / "rgb.png", rgb)
    assert cv2.imread(str(tmp_path / "rgb.png"))[0, 0].tolist() == [0, 0, 200]  # BGR on disk
    with pytest.raises(TypeError, match="float64"):
        write_png(tmp_path / "f.png", np.zeros((4, 4)))


# -------------------------------------------------------------------- real data ---

REAL_SAMPLES = {
    "000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0": 2048,
    "5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0": 2048,
    "a7faf0b4-bb99-11e8-b2b9-ac1f6b6435d0": 3072,
    "b6a469d8-bbad-11e8-b2ba-ac1f6b6435d0": 2048,
}


@pytest.mark.realdata
def test_real_2021_samples_load(shared_data):
    images = shared_data / "hpa-2021-samples" / "images"
    assert list_image_ids(images) == sorted(REAL_SAMPLES)
    for image_id, side in REAL_SAMPLES.items():
        img = read_sample(images, image_id)
        assert img.shape == (side, side, 4)
        assert img.dtype == np.uint8
        assert all(img[..., k].max() > 0 for k in range(4))
    labels = read_labels(shared_data / "hpa-2021-samples" / "labels_2018.csv")
    assert set(labels.ids) == set(REAL_SAMPLES)
    assert read_labels(shared_data / "hpa-2021-samples" / "labels_2021.csv").label_set == "2021"


@pytest.mark.realdata
def test_real_16bit_channel(shared_data):
    folder = shared_data / "hpa-16bit-sample"
    green = read_grey(folder / "1000_A12_2_green.png")
    assert green.shape == (2048, 2048)
    assert green.dtype == np.uint16
    assert green.max() > 255  # really uses more than 8 bits
    mask = read_label_image(folder / "1000_A12_2_cellmask.png")
    assert len(np.unique(mask)) - 1 == 21


@pytest.mark.realdata
def test_real_kaggle_2018_labels(shared_data):
    labels = read_labels(shared_data / "kaggle-2018" / "train.csv")
    assert labels.label_set == "2018"
    assert labels.y.shape == (31072, 28)
    np.testing.assert_array_equal(np.round(labels.y.mean(0), 4), np.round(CLASS_FREQUENCIES_2018, 4))
    assert labels.y.sum(1).min() >= 1  # every 2018 image has a label


@pytest.mark.realdata
def test_real_hpav18_labels(shared_data):
    labels = read_labels(shared_data / "kaggle-2018" / "HPAv18RBGY_wodpl.csv")
    assert labels.y.shape == (74606, 28)
    assert labels.ids[0] == HPAV18_ID


@pytest.mark.realdata
def test_real_kaggle_2021_labels(shared_data):
    labels = read_labels(shared_data / "kaggle-2021" / "train.csv")
    assert labels.label_set == "2021"
    assert labels.y.shape == (21806, 19)


@pytest.mark.realdata
def test_real_sample_submission_order(shared_data):
    path = shared_data / "kaggle-2018" / "sample_submission.csv"
    ids = read_id_list(path)
    assert len(ids) == 11702
    lines = path.read_text().splitlines()
    assert ids[0] == lines[1].split(",")[0]
    assert ids[-1] == lines[-1].split(",")[0]


@pytest.mark.realdata
def test_real_2018_single_channel_images(shared_data):
    folder = shared_data / "hpa-2018-single-channel" / "train"
    files = sorted(folder.glob("*.png"))
    assert len(files) == 200
    for path in files[::10]:  # 20 of them keeps it fast
        img = read_grey(path)
        assert img.shape == (512, 512)
        assert img.dtype == np.uint8
    train = read_labels(shared_data / "kaggle-2018" / "train.csv")
    assert {re.sub(r"_(red|green|blue|yellow)\.png$", "", f.name) for f in files} <= set(train.ids)


# -------------------------------------------------- samples shipped in data/ ---


def test_shipped_samples_load(repo_data):
    folder = repo_data / "hpa-samples"
    labels = read_labels(folder / "train.csv")
    labels21 = read_labels(folder / "labels_2021.csv")
    assert labels.label_set == "2018"
    assert labels21.label_set == "2021"
    assert len(labels) == 2
    assert labels21.ids == labels.ids
    assert list_image_ids(folder / "images") == sorted(labels.ids)
    assert not np.array_equal(labels.y[0], labels.y[1])  # two different label sets
    for image_id in labels.ids:
        img = read_sample(folder / "images", image_id)
        assert img.shape == (512, 512, 4)
        assert img.dtype == np.uint8
        assert all(img[..., k].max() > 0 for k in range(4))
        mask = read_label_image(folder / "reference-masks" / f"{image_id}_cellmask.png")
        assert mask.shape == (512, 512)
        n_cells = len(np.unique(mask)) - 1
        assert n_cells >= 5
        assert mask.max() == n_cells  # instances 1..n, none lost in downsizing
    assert (repo_data / "README.md").is_file()
    assert "CC BY-SA 3.0" in (repo_data / "README.md").read_text()
