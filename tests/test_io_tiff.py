"""Multi-channel TIFF / OME-TIFF input (hpa.io_tiff) through hpa.io.read_sample.

Files are written by tifffile, as microscopes and Fiji write them: channels first or
last, 8 and 16 bit, 3 and 4 channels, with and without OME channel names. The truth is
the array written; the real samples shipped in data/ are stacked into OME-TIFFs and must
read back equal to their per-channel PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from hpa.errors import HPAConfigError, HPADataError
from hpa.io import list_image_ids, read_sample, sample_paths, write_png
from hpa.io_tiff import ChannelMap, check_channel_map, pixel_size, read_stack, stack_id

NAMES = ("Tubulin", "GFP", "DAPI", "Calreticulin")
BY_NAME = "microtubules=Tubulin,protein=GFP,nucleus=DAPI,er=Calreticulin"


def random_planes(n: int, dtype: type, shape: tuple[int, int] = (40, 56), seed: int = 0) -> np.ndarray:
    """``(n, H, W)`` distinct random planes of ``dtype``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, (n, *shape), endpoint=True).astype(dtype)


def write_stack(
    path: Path, planes: np.ndarray, channels_last: bool = False, names: tuple[str, ...] | None = None
) -> Path:
    """Write ``(C, H, W)`` planes as a TIFF (OME with channel names when ``names`` is given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.moveaxis(planes, 0, -1) if channels_last else planes
    kwargs = {"photometric": "minisblack", "planarconfig": "contig" if channels_last else None}
    if names is None:
        tifffile.imwrite(path, data, **kwargs)
    else:  # tifffile keeps one name per channel for channels first only (interleaved: one OME Channel)
        axes = "YXC" if channels_last else "CYX"
        tifffile.imwrite(path, data, metadata={"axes": axes, "Channel": {"Name": list(names)}}, **kwargs)
    return path


# ------------------------------------------------------------- round trips ---


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("ome", [False, True])
def test_four_channels_read_in_rgby_order(tmp_path, dtype, channels_last, ome):
    planes = random_planes(4, dtype)
    suffix = ".ome.tif" if ome else ".tif"
    write_stack(tmp_path / f"s1{suffix}", planes, channels_last, NAMES if ome else None)
    img = read_sample(tmp_path, "s1")
    assert img.shape == (40, 56, 4) and img.dtype == dtype
    np.testing.assert_array_equal(np.moveaxis(img, -1, 0), planes)


@pytest.mark.parametrize("channels_last", [False, True])
def test_map_by_index_permutes_channels(tmp_path, channels_last):
    planes = random_planes(4, np.uint16)  # stored as nucleus, ER, protein, microtubules
    write_stack(tmp_path / "s.tiff", planes, channels_last)
    img = read_sample(tmp_path, "s", ChannelMap.parse("nucleus=0,yellow=1,protein=2,microtubules=3"))
    for k, source in enumerate((3, 2, 0, 1)):
        np.testing.assert_array_equal(img[..., k], planes[source])


def test_map_by_ome_name(tmp_path):
    planes = random_planes(4, np.uint8)
    stored = ("DAPI", "calreticulin", "GFP", "tubulin")  # names matched without regard to case
    write_stack(tmp_path / "s.ome.tif", planes, names=stored)
    img = read_sample(tmp_path, "s", ChannelMap.parse(BY_NAME))
    for k, source in enumerate((3, 2, 0, 1)):
        np.testing.assert_array_equal(img[..., k], planes[source])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_three_channels_have_no_er(tmp_path, dtype):
    planes = random_planes(3, dtype)
    write_stack(tmp_path / "rgb.tif", planes, channels_last=True)
    img = read_sample(tmp_path, "rgb")
    np.testing.assert_array_equal(np.moveaxis(img[..., :3], -1, 0), planes)
    assert img.dtype == dtype and not img[..., 3].any()
    mapped = read_sample(tmp_path, "rgb", ChannelMap.parse("protein=0,nucleus=1,microtubules=2"))
    np.testing.assert_array_equal(mapped[..., 0], planes[2])
    assert not mapped[..., 3].any()


def test_extra_channels_need_a_map_and_are_ignored_with_one(tmp_path):
    planes = random_planes(6, np.uint16)
    write_stack(tmp_path / "six.tif", planes)
    with pytest.raises(HPADataError, match="6 channel"):
        read_sample(tmp_path, "six")
    img = read_sample(tmp_path, "six", ChannelMap.parse("microtubules=5,protein=1,nucleus=0,er=none"))
    np.testing.assert_array_equal(img[..., 0], planes[5])
    assert not img[..., 3].any()


def test_singleton_z_and_t_are_squeezed(tmp_path):
    planes = random_planes(4, np.uint8)
    tifffile.imwrite(
        tmp_path / "zt.ome.tif",
        planes[None, :, None],
        metadata={"axes": "TCZYX", "Channel": {"Name": list(NAMES)}},
    )
    img = read_sample(tmp_path, "zt", ChannelMap.parse(BY_NAME))
    np.testing.assert_array_equal(np.moveaxis(img, -1, 0), planes)


def test_real_shipped_sample_as_ome_tiff(repo_data, tmp_path):
    """The shipped PNG samples, stacked in a shuffled order with names, read back equal."""
    folder = repo_data / "hpa-samples" / "images"
    for image_id in list_image_ids(folder):
        png = read_sample(folder, image_id)
        order = (2, 3, 1, 0)  # nucleus, ER, protein, microtubules
        names = tuple(NAMES[k] for k in order)
        write_stack(tmp_path / f"{image_id}.ome.tif", np.stack([png[..., k] for k in order]), names=names)
        np.testing.assert_array_equal(read_sample(tmp_path, image_id, ChannelMap.parse(BY_NAME)), png)
    assert list_image_ids(tmp_path) == list_image_ids(folder)


# ------------------------------------------------------------------ folders ---


def test_folder_listing(tmp_path):
    planes = random_planes(4, np.uint8)
    write_stack(tmp_path / "a.ome.tiff", planes, names=NAMES)
    write_stack(tmp_path / "b.TIF", planes)
    for c, color in enumerate(("red", "green", "blue", "yellow")):
        tifffile.imwrite(tmp_path / f"c_{color}.tif", planes[c])  # per-channel TIFFs
    (tmp_path / "notes.txt").write_text("x")
    assert list_image_ids(tmp_path) == ["a", "b", "c"]
    assert sample_paths(tmp_path, "a") == [tmp_path / "a.ome.tiff"]
    assert len(sample_paths(tmp_path, "c")) == 4
    assert stack_id("x.ome.tif") == "x" and stack_id("x_blue.tiff") is None and stack_id(".tif") is None


def test_both_kinds_for_one_id_is_an_error(tmp_path):
    planes = random_planes(4, np.uint8)
    write_stack(tmp_path / "a.tif", planes)
    write_png(tmp_path / "a_red.png", planes[0])
    with pytest.raises(HPADataError, match=r"both a\.tif and per-channel"):
        read_sample(tmp_path, "a")


# ------------------------------------------------------------------- errors ---


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("microtubules=0,protein=1", "no channel given for nucleus"),
        ("microtubules=0,protein=1,nucleus=2,golgi=3", "unknown key 'golgi'"),
        ("red=0,microtubules=1,protein=2,nucleus=3", "both set the red channel"),
        ("microtubules=0,protein=0,nucleus=2", "ambiguous, channel 0 is mapped to microtubules and protein"),
        ("microtubules=DAPI,protein=GFP,nucleus=dapi", "ambiguous, channel 'dapi'"),
        ("microtubules=0,protein=1,nucleus", "expected KEY=CHANNEL"),
        ("microtubules=none,protein=1,nucleus=2", "only er may be 'none'"),
    ],
)
def test_bad_maps_are_refused(spec, message):
    with pytest.raises(HPAConfigError, match=message):
        ChannelMap.parse(spec)


def test_map_that_does_not_fit_the_file(tmp_path):
    write_stack(tmp_path / "plain.tif", random_planes(4, np.uint8))
    write_stack(tmp_path / "ome.ome.tif", random_planes(4, np.uint8), names=("DAPI", "GFP", "DAPI", "ER"))
    cases = [
        ("plain", "microtubules=0,protein=1,nucleus=4", "uses channel 4, the file has 4"),
        ("plain", BY_NAME, "has no OME name for each channel"),
        (
            "ome",
            "microtubules=ER,protein=1,nucleus=GFP",
            "ambiguous, channel 1 is mapped to protein and nucleus",
        ),
        ("ome", "microtubules=ER,protein=GFP,nucleus=Hoechst", "no channel named 'Hoechst'"),
        ("ome", "microtubules=ER,protein=GFP,nucleus=DAPI", "'DAPI' is ambiguous"),
    ]
    for image_id, spec, message in cases:
        with pytest.raises(HPADataError, match=message) as exc:
            read_sample(tmp_path, image_id, ChannelMap.parse(spec))
        assert str(tmp_path) in str(exc.value)  # names the file


def test_bad_files(tmp_path):
    write_stack(tmp_path / "two.tif", random_planes(2, np.uint8))
    with pytest.raises(HPADataError, match="2 channel"):
        read_sample(tmp_path, "two")
    tifffile.imwrite(
        tmp_path / "z.ome.tif", random_planes(12, np.uint8).reshape(4, 3, 40, 56), metadata={"axes": "CZYX"}
    )
    with pytest.raises(HPADataError, match="no Z stack"):
        read_sample(tmp_path, "z")
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((4, 8, 8), np.float32), photometric="minisblack")
    with pytest.raises(HPADataError, match="float32"):
        read_sample(tmp_path, "f")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(HPADataError, match="cannot read TIFF"):
        read_stack(tmp_path / "broken.tif")


def test_map_given_for_per_channel_files(tmp_path):
    planes = random_planes(4, np.uint8)
    for c, color in enumerate(("red", "green", "blue", "yellow")):
        write_png(tmp_path / f"p_{color}.png", planes[c])
    cmap = ChannelMap.parse("microtubules=0,protein=1,nucleus=2,er=3")
    with pytest.raises(HPAConfigError, match="holds no multi-channel TIFF"):
        check_channel_map(tmp_path, cmap)
    with pytest.raises(HPADataError, match="applies to multi-channel TIFFs only"):
        read_sample(tmp_path, "p", cmap)
    check_channel_map(tmp_path, None)  # no map: fine


def test_pixel_size_comes_from_ome_tiffs_only(tmp_path):
    planes = np.zeros((4, 8, 8), np.uint8)

    def ome(name: str, **sizes: object) -> None:
        tifffile.imwrite(tmp_path / name, planes, photometric="minisblack", metadata={"axes": "CYX", **sizes})

    ome(
        "sized.ome.tif", PhysicalSizeX=0.08, PhysicalSizeY=0.1, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"
    )
    ome("default_unit.ome.tif", PhysicalSizeX=0.2)  # OME's default unit; Y as X
    ome("nm.ome.tif", PhysicalSizeX=80, PhysicalSizeY=80, PhysicalSizeXUnit="nm", PhysicalSizeYUnit="nm")
    ome("pixels.ome.tif", PhysicalSizeX=1, PhysicalSizeXUnit="pixel")  # not a length
    ome("mixed.ome.tif", PhysicalSizeX=1, PhysicalSizeY=1, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="nm")
    ome("unsized.ome.tif")
    tifffile.imwrite(tmp_path / "plain.tif", planes, photometric="minisblack")
    (tmp_path / "broken.ome.tif").write_bytes(b"not a tiff")
    write_png(tmp_path / "png_red.png", planes[0])
    assert pixel_size(tmp_path, "sized") == (0.1, 0.08, "µm")
    assert pixel_size(tmp_path, "default_unit") == (0.2, 0.2, "µm")
    assert pixel_size(tmp_path, "nm") == (80.0, 80.0, "nm")
    for image_id in ("pixels", "mixed", "unsized", "plain", "broken", "png", "missing"):
        assert pixel_size(tmp_path, image_id) is None, image_id
