"""``hpa export --to imagej-roi|csv|ome-tiff``, GeoJSON holes and the OME-Zarr pyramid, read
back with the clients' own libraries (roifile, pandas, tifffile, ome-types, zarr)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import roifile
import shapely
import tifffile
from scipy import ndimage as ndi
from shapely.geometry import shape
from skimage.draw import disk, polygon

from hpa.interop.geojson import cell_features
from hpa.interop.pyramid import halve_mean, level_count
from hpa.io import read_label_image, read_sample
from hpa.pipelines.export import export_run
from hpa.visualization.preddir import load_prediction_run

from .runs import CLASSES, TOP, export_cli
from .test_export import iou

OME_NS = {"ome": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}


def roi_mask(roi: roifile.ImagejRoi, shape_hw: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside an ImageJ polygon or composite ROI (image pixel-corner
    coordinates; a composite's paths filled even-odd, as ImageJ's ShapeRoi)."""
    mask = np.zeros(shape_hw, bool)
    for xy in roi.coordinates(multi=True):
        ring = np.zeros(shape_hw, bool)
        ring[polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=shape_hw)] = True
        mask ^= ring
    return mask


def test_imagej_rois_of_real_samples_cover_their_cells(real_run, tmp_path):
    export_cli(real_run, "imagej-roi", tmp_path)
    run = load_prediction_run(real_run)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        [f"{i}_rois.zip" for i in run.ids] + ["provenance.json"]
    )
    composites = 0
    for image_id in run.ids:
        cells = read_label_image(run.mask_path(image_id))
        rois = roifile.roiread(tmp_path / f"{image_id}_rois.zip")
        ids = [int(i) for i in np.unique(cells) if i]
        assert len(rois) == len(ids) >= 5
        for cid, roi in zip(ids, rois):
            assert roi.name.startswith(f"cell-{cid}_")
            mask = cells == cid
            holes = ndi.binary_fill_holes(mask) & ~mask
            # a cell with holes (cell 9 of the first sample encloses 1,702 px) is composite
            assert roi.composite == bool(holes.any()), (image_id, cid)
            if not roi.composite:
                assert roi.roitype == roifile.ROI_TYPE.POLYGON
            assert iou(roi_mask(roi, cells.shape), mask) > 0.9, (image_id, cid)
            composites += roi.composite
    assert composites >= 2


def test_imagej_roi_names_carry_the_top_class(synthetic_run, tmp_path):
    (path,), failed = export_run(synthetic_run, "imagej-roi", tmp_path)
    assert not failed and path.name == "syn_rois.zip"
    rois = roifile.roiread(path)
    expected = [
        f"cell-{cid}_{CLASSES[k].replace(' ', '-') if k is not None else 'none'}" for cid, k in TOP.items()
    ]
    assert [roi.name for roi in rois] == expected
    cells = read_label_image(synthetic_run.parent / "seg" / "cells" / "syn.png")
    for cid, roi in zip(TOP, rois):  # cell 3 has a hole (a vacuole): its ROI leaves it out
        assert roi.composite == (cid == 3)
        assert iou(roi_mask(roi, cells.shape), cells == cid) > 0.95, cid


def test_csv_equals_the_parquet(real_run, tmp_path):
    (path,), failed = export_run(real_run, "csv", tmp_path)
    assert not failed and path == tmp_path / "cell_predictions.csv"
    parquet = pd.read_parquet(real_run / "cell_predictions.parquet")
    back = pd.read_csv(path, dtype={"image_id": str, "predicted": str}, keep_default_na=False)
    pd.testing.assert_frame_equal(back.astype(parquet.dtypes.to_dict()), parquet)
    one = load_prediction_run(real_run).ids[1]
    (path,), _ = export_run(real_run, "csv", tmp_path / "one", ids=[one])
    assert pd.read_csv(path)["image_id"].unique().tolist() == [one]


def check_ome_xml(xml: str) -> None:
    """Channel names (colour and stain) and colours as QuPath reads them; schema-valid when
    ome-types and a schema validator are installed."""
    image = ET.fromstring(xml).find("ome:Image", OME_NS)
    assert image is not None
    channels = image.findall("ome:Pixels/ome:Channel", OME_NS)
    assert [c.get("Name") for c in channels] == [
        "red (microtubules)",
        "green (protein of interest)",
        "blue (nucleus)",
        "yellow (endoplasmic reticulum)",
    ]
    rgba = [int(c.get("Color", "0")) & 0xFFFFFFFF for c in channels]
    assert rgba == [0xFF0000FF, 0x00FF00FF, 0x0000FFFF, 0xFFFF00FF]


def test_ome_tiff_pyramid_of_real_samples(real_run, tmp_path):
    export_cli(real_run, "ome-tiff", tmp_path)
    run = load_prediction_run(real_run)
    for image_id in run.ids:
        image = read_sample(run.images_dir, image_id)
        with tifffile.TiffFile(tmp_path / f"{image_id}.ome.tif") as tif:
            assert tif.is_ome and len(tif.series) == 1
            series = tif.series[0]
            assert series.axes == "CYX" and series.dtype == image.dtype
            n = level_count(image.shape)
            assert n == len(series.levels) == 4  # 512 px: 512, 256, 128, 64
            np.testing.assert_array_equal(series.levels[0].asarray(), np.moveaxis(image, -1, 0))
            level = image
            for k in range(1, n):
                level = halve_mean(level)
                np.testing.assert_array_equal(series.levels[k].asarray(), np.moveaxis(level, -1, 0))
            assert series.levels[-1].shape == (4, 64, 64)
            check_ome_xml(tif.ome_metadata)
            xml = tif.ome_metadata
    ome_types = pytest.importorskip("ome_types")
    if not any(_importable(m) for m in ("lxml", "xmlschema")):
        pytest.skip("ome-types validates with lxml or xmlschema, neither installed")
    ome = ome_types.from_xml(xml, validate=True)  # against the OME 2016-06 schema
    assert [c.color.as_rgb_tuple() for c in ome.images[0].pixels.channels][3] == (255, 255, 0)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def ring_cells() -> np.ndarray:
    """A ring-shaped cell 1 around cell 2, with cell 3 beside them and a hole in cell 1."""
    cells = np.zeros((80, 80), np.int32)
    cells[disk((35, 35), 28, shape=cells.shape)] = 1
    cells[disk((35, 35), 14, shape=cells.shape)] = 2  # enclosed by cell 1
    cells[disk((35, 35), 3, shape=cells.shape)] = 0  # a hole in cell 2
    cells[50:54, 20:24] = 0  # a hole in cell 1
    cells[66:78, 60:78] = 3
    return cells


def test_geojson_polygons_keep_their_holes():
    cells = ring_cells()
    table = pd.DataFrame({"cell_id": [1, 2, 3], **{n: [0.7, 0.1, 0.2] for n in CLASSES}})
    collection = cell_features(cells, table, CLASSES, np.full(len(CLASSES), 0.5))
    geoms = {f["properties"]["measurements"]["cell_id"]: shape(f["geometry"]) for f in collection["features"]}
    assert [len(g.interiors) for g in geoms.values()] == [2, 1, 0]
    for cid, geom in geoms.items():
        assert geom.is_valid, (cid, shapely.is_valid_reason(geom))
        assert geom.exterior.is_ccw and not any(r.is_ccw for r in geom.interiors)  # RFC 7946
        # pixel-corner polygons: the area is the mask's, corners cut by half a pixel
        assert abs(geom.area - (cells == cid).sum()) < 0.1 * (cells == cid).sum()
    assert geoms[1].intersection(geoms[2]).area < 1e-6  # the enclosing cell leaves its neighbour out
    assert geoms[1].intersection(geoms[3]).area < 1e-6
    # every probability is a measurement (QuPath shows them per cell)
    measured = collection["features"][0]["properties"]["measurements"]
    assert {f"{n}: probability" for n in CLASSES} <= set(measured)


def test_ome_zarr_pyramid_levels(synthetic_run, real_run, tmp_path):
    zarr = pytest.importorskip("zarr")
    for run_dir in (synthetic_run, real_run):
        run = load_prediction_run(run_dir)
        written, failed = export_run(run_dir, "ome-zarr", tmp_path / run_dir.parent.name)
        assert not failed
        for path, image_id in zip(written, run.ids):
            image = read_sample(run.images_dir, image_id)
            cells = read_label_image(run.mask_path(image_id))
            root = zarr.open_group(str(path), mode="r")
            n = level_count(cells.shape)
            assert n == (2 if cells.shape == (128, 128) else 4)
            for group, kind in ((root, "image"), (root["labels/cells"], "labels")):
                meta = group.attrs["multiscales"][0]
                assert meta["type"] and meta["metadata"]["method"]
                assert [d["path"] for d in meta["datasets"]] == [str(k) for k in range(n)]
                for k, dataset in enumerate(meta["datasets"]):
                    (scale,) = dataset["coordinateTransformations"]
                    assert scale["type"] == "scale"
                    assert scale["scale"][-2:] == [2.0**k, 2.0**k]
                    assert len(scale["scale"]) == (3 if kind == "image" else 2)
            level = image
            for k in range(n):
                np.testing.assert_array_equal(root[f"labels/cells/{k}"][...], cells[:: 2**k, :: 2**k])
                np.testing.assert_array_equal(np.moveaxis(root[str(k)][...], 0, -1), level)
                level = halve_mean(level)


def test_geojson_cells_of_real_samples_never_overlap(real_run, tmp_path):
    """With their holes kept, no cell polygon covers another (one real cell encloses another)."""
    written, failed = export_run(real_run, "geojson", tmp_path)
    assert not failed
    holed = 0
    for path in written:
        features = json.loads(path.read_text())["features"]
        geoms = [shape(f["geometry"]) for f in features]
        holed += sum(len(g.interiors) > 0 for g in geoms)
        tree = shapely.STRtree(geoms)
        pairs = tree.query(geoms, predicate="intersects").T
        overlap = sum(geoms[i].intersection(geoms[j]).area for i, j in pairs if i < j)
        assert overlap < 1e-6, path.name
    assert holed >= 2
