"""``hpa export``: GeoJSON for QuPath and OME-Zarr, round trips against the masks and images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import shapely
from scipy import ndimage as ndi
from shapely.geometry import box, shape
from skimage.draw import polygon2mask

from hpa.interop.geojson import outer_contour
from hpa.io import read_label_image, read_sample
from hpa.pipelines.export import export_run
from hpa.visualization.classes import class_palette
from hpa.visualization.preddir import load_prediction_run

from .runs import CLASSES, TOP, export_cli

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def rasterise(ring: list[list[float]], shape_hw: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside a polygon given in pixel-corner (x, y) coordinates."""
    xy = np.asarray(ring, dtype=np.float64)
    return polygon2mask(shape_hw, np.c_[xy[:, 1] - 0.5, xy[:, 0] - 0.5])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def check_collection(collection: dict, cells: np.ndarray) -> dict[int, dict]:
    """Polygon count = cell count; every polygon valid, inside the image, IoU > 0.95 with its cell."""
    assert collection["type"] == "FeatureCollection"
    ids = [int(i) for i in np.unique(cells) if i]
    features = {f["properties"]["measurements"]["cell_id"]: f for f in collection["features"]}
    assert sorted(features) == ids and len(collection["features"]) == len(ids)
    h, w = cells.shape
    frame = box(0, 0, w, h)
    for cid, feature in features.items():
        geom = shape(feature["geometry"])
        assert geom.geom_type == "Polygon" and geom.is_valid, (cid, shapely.is_valid_reason(geom))
        assert frame.contains(geom)
        x0, y0, x1, y1 = (int(v) for v in np.round(geom.bounds))  # pixel corners: the cell's box
        mask = ndi.binary_fill_holes(cells[y0:y1, x0:x1] == cid)  # the outer contour leaves holes in
        ring = np.asarray(feature["geometry"]["coordinates"][0]) - (x0, y0)
        assert iou(rasterise(ring.tolist(), mask.shape), mask) > 0.95, cid
        assert (cells[y0:y1, x0:x1] == cid).sum() == (cells == cid).sum()  # the box holds the whole cell
        assert feature["properties"]["measurements"]["Area px^2"] == (cells == cid).sum()
    return features


def test_outer_contour_of_known_shapes():
    square = np.zeros((6, 6), bool)
    square[1:5, 1:5] = True
    ring = outer_contour(square)
    assert shapely.Polygon(ring).is_valid and shapely.Polygon(ring).exterior.is_ccw
    assert abs(shapely.Polygon(ring).area - (16 - 4 * 0.125)) < 1e-9  # corners cut by half a pixel
    np.testing.assert_array_equal(rasterise(ring.tolist(), square.shape), square)
    two_parts = np.zeros((8, 12), bool)
    two_parts[1:7, 1:7] = True
    two_parts[2:4, 9:11] = True
    assert shapely.Polygon(outer_contour(two_parts)).bounds == (1.0, 1.0, 7.0, 7.0)  # the largest part
    assert outer_contour(np.zeros((3, 3), bool)).shape == (0, 2)


def test_geojson_synthetic_truth(synthetic_run, tmp_path):
    written, failed = export_run(synthetic_run, "geojson", tmp_path)
    assert not failed and written == [tmp_path / "syn.geojson"]
    cells = read_label_image(synthetic_run.parent / "seg" / "cells" / "syn.png")
    features = check_collection(json.loads(written[0].read_text()), cells)
    table = pd.read_parquet(synthetic_run / "cell_predictions.parquet").set_index("cell_id")
    palette = class_palette(len(CLASSES))
    for cid, top in TOP.items():
        props = features[cid]["properties"]
        if top is None:
            assert "classification" not in props
        else:
            assert props["classification"] == {"name": CLASSES[top], "color": palette[top].tolist()}
        for name in CLASSES:
            assert props["measurements"][f"{name}: probability"] == pytest.approx(table.loc[cid, name])
        assert props["objectType"] == ("detection" if cid == 4 else "cell")  # cell 4 has no nucleus
        assert ("nucleusGeometry" in features[cid]) == (cid != 4)
    nucleus = shape(features[3]["nucleusGeometry"])
    assert nucleus.is_valid and shape(features[3]["geometry"]).contains(nucleus)


def test_geojson_real_samples_through_the_cli(real_run, tmp_path):
    export_cli(real_run, "geojson", tmp_path)
    run = load_prediction_run(real_run)
    for image_id in run.ids:
        cells = read_label_image(run.mask_path(image_id))
        assert cells.max() >= 5
        features = check_collection(json.loads((tmp_path / f"{image_id}.geojson").read_text()), cells)
        called = [f for f in features.values() if "classification" in f["properties"]]
        assert len(called) == len(features)  # every real cell was given a class over threshold


def test_ome_zarr_round_trip(synthetic_run, real_run, tmp_path):
    zarr = pytest.importorskip("zarr")
    for run_dir in (synthetic_run, real_run):
        run = load_prediction_run(run_dir)
        written, failed = export_run(run_dir, "ome-zarr", tmp_path / run_dir.parent.name)
        assert not failed and len(written) == len(run.ids)
        for path, image_id in zip(written, run.ids):
            assert path.name == f"{image_id}.ome.zarr"
            root = zarr.open_group(str(path), mode="r")
            image = read_sample(run.images_dir, image_id)
            np.testing.assert_array_equal(np.moveaxis(root["0"][...], 0, -1), image)
            cells = read_label_image(run.mask_path(image_id))
            np.testing.assert_array_equal(root["labels/cells/0"][...], cells)
            meta = root.attrs["multiscales"][0]
            assert meta["version"] == "0.4" and [a["name"] for a in meta["axes"]] == ["c", "y", "x"]
            assert [c["color"] for c in root.attrs["omero"]["channels"]] == [
                "FF0000",
                "00FF00",
                "0000FF",
                "FFFF00",
            ]
            assert root["labels"].attrs["labels"] == ["cells"]
            label = root["labels/cells"].attrs["image-label"]
            assert [c["label-value"] for c in label["colors"]] == [int(i) for i in np.unique(cells) if i]
    # a second export replaces the first, leaving no temporary folder behind
    export_run(synthetic_run, "ome-zarr", tmp_path / "again")
    export_run(synthetic_run, "ome-zarr", tmp_path / "again")
    from hpa.outputs import WRITTEN_RECORD

    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(
        [WRITTEN_RECORD, "provenance.json", "syn.ome.zarr"]
    )


def test_export_errors(synthetic_run, tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpa",
            "export",
            str(tmp_path / "nope"),
            "--to",
            "geojson",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert (
        res.returncode == 1 and "prediction folder not found" in res.stderr and "Traceback" not in res.stderr
    )
    written, failed = export_run(synthetic_run, "geojson", tmp_path, ids=["missing-id"])
    assert not written and "no cell mask for Id missing-id" in failed["missing-id"]


def test_label_png_opens_as_objects_in_cellprofiler_and_fiji(real_run, tmp_path):
    """CellProfiler (NamesAndTypes 'objects', via bioformats/imageio) and Fiji read the
    SEG_DIR label PNG as 16-bit integers whose values are the cell ids, as skimage and
    tifffile (after saving it as TIFF, as Fiji would) see them."""
    import tifffile
    from skimage import io as skio

    run = load_prediction_run(real_run)
    path = run.mask_path(run.ids[0])
    ours = read_label_image(path)
    seen = skio.imread(path)
    assert seen.dtype == np.uint16 and seen.ndim == 2
    np.testing.assert_array_equal(seen, ours)
    table = pd.read_parquet(real_run.parent / "seg" / "cells.parquet")
    ids = table.loc[table["image_id"] == run.ids[0], "cell_id"].to_numpy()
    assert sorted(int(i) for i in np.unique(seen) if i) == sorted(ids.tolist())
    tif = tmp_path / "cells.tif"  # Fiji's File > Save As > Tiff keeps the 16-bit ids
    tifffile.imwrite(tif, seen)
    np.testing.assert_array_equal(tifffile.imread(tif), ours)


@pytest.mark.realdata
def test_geojson_on_real_2048px_reference_cells(shared_data):
    """HPA Cell Segmentation reference masks (2048 px, uint8 and uint16): every cell kept."""
    from hpa.interop.geojson import cell_features

    paths = [
        sorted((shared_data / "hpa-2021-samples" / "reference-masks").glob("*_cellmask.png"))[0],
        shared_data / "hpa-16bit-sample" / "1000_A12_2_cellmask.png",
    ]
    for path in paths:
        cells = read_label_image(path)
        ids = [int(i) for i in np.unique(cells) if i]
        table = pd.DataFrame({"cell_id": ids, **{n: np.full(len(ids), 0.9) for n in CLASSES}})
        features = check_collection(cell_features(cells, table, CLASSES, np.full(len(CLASSES), 0.5)), cells)
        assert all(f["properties"]["classification"]["name"] == CLASSES[0] for f in features.values())


def test_channel_map_flag_overrides_the_run(synthetic_run, tmp_path):
    """export and report read another folder of OME-TIFFs with the map they are given."""
    import cv2
    import tifffile

    from hpa.io_tiff import ChannelMap
    from hpa.pipelines.visualize import make_report

    pngs = synthetic_run.parent / "images"
    image = read_sample(pngs, "syn")
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    tifffile.imwrite(
        stacks / "syn.ome.tif",
        np.stack([image[..., k] for k in (3, 2, 1, 0)]),
        photometric="minisblack",
        metadata={"axes": "CYX", "Channel": {"Name": ["ER", "DNA", "Target", "MT"]}},
    )
    cmap = ChannelMap.parse("microtubules=MT,protein=Target,nucleus=DNA,er=ER")
    written, failed = export_run(
        synthetic_run, "ome-zarr", tmp_path / "z", images_dir=stacks, channel_map=cmap
    )
    assert not failed
    zarr = pytest.importorskip("zarr")
    np.testing.assert_array_equal(
        np.moveaxis(zarr.open_group(str(written[0]), mode="r")["0"][...], 0, -1), image
    )
    make_report(synthetic_run, images=stacks, out=tmp_path / "r-tif", channel_map=cmap)
    make_report(synthetic_run, images=pngs, out=tmp_path / "r-png")
    drawn = [cv2.imread(str(tmp_path / r / "overlays" / "syn.png")) for r in ("r-tif", "r-png")]
    assert drawn[0] is not None
    np.testing.assert_array_equal(drawn[0], drawn[1])


def test_export_never_writes_into_the_run_or_its_images(synthetic_run, tmp_path):
    from hpa.errors import HPAConfigError
    from hpa.visualization.preddir import load_prediction_run

    images = load_prediction_run(synthetic_run).images_dir
    assert images is not None
    before = sorted(p.name for p in images.iterdir())
    masks = load_prediction_run(synthetic_run).masks_dir
    assert masks is not None
    for out in (synthetic_run, images, images / "zarr", masks / "cells", masks / "export"):
        with pytest.raises(HPAConfigError, match="--out"):
            export_run(synthetic_run, "ome-zarr", out)
    assert sorted(p.name for p in images.iterdir()) == before
    assert not (masks / "export").exists()
