"""The napari reader, called as napari would, without a display (napari need not be installed)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import tomllib
from npe2 import PluginManifest

from hpa.constants import CHANNELS
from hpa.errors import HPADataError
from hpa.interop.napari import get_reader, image_ids, read_image, read_run
from hpa.io import list_image_ids, read_label_image, read_sample
from hpa.io_tiff import ChannelMap
from hpa.pipelines.segment import segment_folder
from hpa.visualization.classes import DIM_COLOUR, class_palette

from .runs import CLASSES, TOP

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT / "hpa" / "interop" / "napari.yaml"


def test_manifest_is_valid_and_registered():
    manifest = PluginManifest.from_file(MANIFEST)  # validates against npe2's schema
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert manifest.name == project["project"]["name"]
    assert project["project"]["entry-points"]["napari.manifest"] == {manifest.name: "hpa.interop:napari.yaml"}
    assert "interop/napari.yaml" in project["tool"]["setuptools"]["package-data"]["hpa"]
    assert "napari" in project["project"]["optional-dependencies"]
    (reader,) = manifest.contributions.readers
    (command,) = [c for c in manifest.contributions.commands if c.id == reader.command]
    module, func = command.python_name.split(":")
    assert getattr(importlib.import_module(module), func) is get_reader
    assert reader.accepts_directories
    assert reader.filename_patterns == []  # napari never offers it for a PNG
    (widget,) = manifest.contributions.widgets
    (command,) = [c for c in manifest.contributions.commands if c.id == widget.command]
    assert command.python_name == "hpa.interop.napari_widget:RunImages"  # imported in the widget tests


def test_napari_offers_the_reader_for_hpa_folders_only(synthetic_run, tmp_path):
    """npe2's own matching: folders only; and of folders, get_reader takes hpa's only."""
    from npe2 import PluginManager

    pm = PluginManager()
    pm.register(PluginManifest.from_file(MANIFEST))
    png = tmp_path / "some_image.png"
    png.write_bytes(b"")
    assert [r.command for r in pm.iter_compatible_readers(str(png))] == []
    mask = synthetic_run.parent / "seg" / "cells" / "syn.png"
    assert [r.command for r in pm.iter_compatible_readers(str(mask))] == []
    assert [r.command for r in pm.iter_compatible_readers(str(synthetic_run))] == ["hpa-cells.read_run"]
    # a folder shaped like a SEG_DIR but without a file hpa segment writes is not ours
    lookalike = tmp_path / "lookalike"
    (lookalike / "cells").mkdir(parents=True)
    (lookalike / "nuclei").mkdir()
    (lookalike / "cells" / "a.png").write_bytes(mask.read_bytes())
    assert get_reader(str(lookalike)) is None
    (lookalike / "config.yaml").write_text("{}\n")
    assert get_reader(str(lookalike)) is read_run


def check_channels(layers, image: np.ndarray) -> None:
    assert [t for _, _, t in layers] == ["image"] * 4 + ["labels"]
    for k, (data, kwargs, _) in enumerate(layers[:4]):
        np.testing.assert_array_equal(data, image[..., k])
        assert kwargs["colormap"] == CHANNELS[k] and kwargs["blending"] == "additive"
        lo, hi = kwargs["contrast_limits"]
        assert 0 <= lo < hi


def test_pred_dir_layers(synthetic_run, tmp_path):
    assert get_reader(str(synthetic_run)) is read_run
    assert get_reader(str(tmp_path)) is None  # an empty folder is not ours
    assert get_reader(str(synthetic_run / "submission.csv")) is None
    layers = read_run(str(synthetic_run))
    images = synthetic_run.parent / "images"
    check_channels(layers, read_sample(images, "syn"))
    cells, kwargs, _ = layers[-1]
    np.testing.assert_array_equal(cells, read_label_image(synthetic_run.parent / "seg" / "cells" / "syn.png"))
    features = kwargs["features"]
    assert features["index"].tolist() == [int(i) for i in np.unique(cells) if i]
    expected = pd.read_parquet(synthetic_run / "cell_predictions.parquet").set_index("cell_id")
    by_cell = features.set_index("index")
    palette, grey = class_palette(len(CLASSES)), [v / 255 for v in DIM_COLOUR] + [1.0]
    colours = kwargs["colormap"]
    assert colours[0][3] == 0 and set(colours) == {None, 0, *TOP}
    for cid, top in TOP.items():
        assert by_cell.loc[cid, "top_class"] == (CLASSES[top] if top is not None else "")
        expected_rgba = [v / 255 for v in palette[top]] + [1.0] if top is not None else grey
        np.testing.assert_allclose(colours[cid], expected_rgba)  # the report's class colour
        np.testing.assert_allclose(
            by_cell.loc[cid, list(CLASSES)].to_numpy(float), expected.loc[cid, list(CLASSES)]
        )
    # a mask file of a SEG_DIR opens that image; this SEG_DIR names no images (no inputs.yaml)
    mask = synthetic_run.parent / "seg" / "cells" / "syn.png"
    assert get_reader([str(mask)]) is read_run
    (only,) = read_run([str(mask)])
    np.testing.assert_array_equal(only[0], cells)


def test_seg_dir_of_real_samples(real_run):
    seg = real_run.parent / "seg"
    images = read_run(str(seg))[0][0]
    ids = list_image_ids(REPO_ROOT / "data" / "hpa-samples" / "images")
    second = seg / "cells" / f"{ids[1]}.png"
    layers = read_run(str(second))
    check_channels(layers, read_sample(REPO_ROOT / "data" / "hpa-samples" / "images", ids[1]))
    assert images.shape == layers[0][0].shape
    features = layers[-1][1]["features"]
    table = pd.read_parquet(seg / "cells.parquet")
    table = table[table["image_id"] == ids[1]]
    assert features["index"].tolist() == table["cell_id"].tolist()
    assert features["area"].tolist() == table["area"].tolist()


def ome_tiff_of_a_real_sample(repo_data: Path, stacks: Path, order: list[int], **metadata) -> np.ndarray:
    """Write the first shipped sample as ``stacks/<Id>.ome.tif``, channels ``order`` of RGBY;
    returns the sample as read from its PNGs."""
    folder = repo_data / "hpa-samples" / "images"
    image_id = list_image_ids(folder)[0]
    png = read_sample(folder, image_id)
    stacks.mkdir()
    planes = np.stack([png[..., k] for k in order])
    tifffile.imwrite(
        stacks / f"{image_id}.ome.tif", planes, photometric="minisblack", metadata={"axes": "CYX", **metadata}
    )
    return png


def test_seg_dir_of_ome_tiffs_uses_its_channel_map(repo_data, tmp_path):
    names = {"Channel": {"Name": ["DAPI", "GFP", "Tubulin", "ER"]}}
    png = ome_tiff_of_a_real_sample(repo_data, tmp_path / "stacks", [2, 1, 0, 3], **names)
    cmap = ChannelMap.parse("microtubules=Tubulin,protein=GFP,nucleus=DAPI,er=ER")
    segment_folder(tmp_path / "stacks", tmp_path / "seg", workers=1, progress=False, channel_map=cmap)
    check_channels(read_run(str(tmp_path / "seg")), png)


def test_seg_dir_without_images_opens_the_cells_only(tmp_path, real_run):
    seg = real_run.parent / "seg"
    copy = tmp_path / "seg"
    (copy / "cells").mkdir(parents=True)
    (copy / "nuclei").mkdir()
    (copy / "config.yaml").write_bytes((seg / "config.yaml").read_bytes())  # its settings: hpa's
    name = sorted((seg / "cells").glob("*.png"))[0].name
    (copy / "cells" / name).write_bytes((seg / "cells" / name).read_bytes())
    layers = read_run(str(copy))
    assert [t for _, _, t in layers] == ["labels"]
    assert layers[0][1]["features"].empty


def test_every_image_of_a_run_opens_by_its_id(real_run):
    """A PRED_DIR and its SEG_DIR list the same images; each opens by Id, in pixel units (PNGs)."""
    seg = real_run.parent / "seg"
    ids = list_image_ids(REPO_ROOT / "data" / "hpa-samples" / "images")
    assert image_ids(real_run) == ids and image_ids(seg) == sorted(ids) and len(ids) == 2
    assert image_ids(seg / "cells" / f"{ids[1]}.png") == image_ids(seg)
    for run in (real_run, seg):
        for image_id in ids:
            layers = read_image(run, image_id)
            assert layers[0][1]["name"].startswith(image_id) and layers[-1][1]["name"] == f"{image_id} cells"
            roles = [kw["metadata"]["hpa"]["role"] for _, kw, _ in layers]
            assert roles == [*CHANNELS, "cells"]
            for _, kwargs, _ in layers:
                meta = kwargs["metadata"]["hpa"]
                assert (meta["run"], meta["image_id"]) == (str(run.resolve()), image_id)
                assert meta["pixel_size"] is None and "scale" not in kwargs  # PNGs carry no pixel size
            np.testing.assert_array_equal(layers[-1][0], read_label_image(seg / "cells" / f"{image_id}.png"))
        with pytest.raises(HPADataError, match=r"no image nope in this run \(2 images: "):
            read_image(run, "nope")
    with pytest.raises(HPADataError, match="not a SEG_DIR or PRED_DIR"):
        image_ids(REPO_ROOT / "docs")


def test_ome_tiff_pixel_size_sets_the_layers_scale(repo_data, tmp_path):
    """An OME-TIFF input's PhysicalSizeX/Y reach every layer as scale and units."""
    size = {"PhysicalSizeX": 0.08, "PhysicalSizeY": 0.1, "PhysicalSizeXUnit": "µm"}
    png = ome_tiff_of_a_real_sample(repo_data, tmp_path / "stacks", [0, 1, 2, 3], **size)
    segment_folder(tmp_path / "stacks", tmp_path / "seg", workers=1, progress=False)
    layers = read_run(str(tmp_path / "seg"))
    check_channels(layers, png)
    for _, kwargs, _ in layers:
        assert kwargs["scale"] == [0.1, 0.08] and kwargs["units"] == ["µm", "µm"]
        assert kwargs["metadata"]["hpa"]["pixel_size"] == [0.1, 0.08, "µm"]
    if importlib.util.find_spec("napari") is not None:  # napari takes them (units: napari >= 0.6)
        from napari.layers import Layer

        cells = Layer.create(*layers[-1])
        assert tuple(cells.scale) == (0.1, 0.08) and str(cells.units[0]) == "micrometer"


def test_real_napari_viewer_steps_through_a_run(real_run):
    """show_image in napari's viewer model: one image's layers replace the other's, in place."""
    pytest.importorskip("napari")
    from napari.components import ViewerModel

    from hpa.interop.napari import show_image

    viewer = ViewerModel()
    viewer.add_points([[1, 1]], name="my points")  # not the run's: stays
    first, second = image_ids(real_run)
    show_image(viewer, real_run, first)
    assert [layer.name for layer in viewer.layers][-1] == f"{first} cells"
    viewer.layers[f"{first} cells"].visible = False
    viewer.layers.move(0, len(viewer.layers))  # the points on top
    added = show_image(viewer, real_run, second)
    names = [layer.name for layer in viewer.layers]
    assert names == [layer.name for layer in added] + ["my points"]
    assert all(second in name for name in names[:5]) and not any(first in name for name in names)
    cells = viewer.layers[f"{second} cells"]
    assert not cells.visible  # the user's choice carried over
    np.testing.assert_array_equal(
        cells.data, read_label_image(real_run.parent / "seg" / "cells" / f"{second}.png")
    )
    assert list(cells.features.columns[:3]) == ["index", "top_class", "top_probability"]
    assert tuple(cells.scale) == (1.0, 1.0)
    with pytest.raises(HPADataError):
        show_image(viewer, real_run, "nope")
    assert [layer.name for layer in viewer.layers] == names  # a failure leaves the viewer as it was


def gui_backend() -> None:
    """Skip unless napari, magicgui and a Qt binding are installed (run offscreen, no display)."""
    pytest.importorskip("napari")
    pytest.importorskip("magicgui")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from magicgui.application import use_app

        use_app()
    except Exception as exc:  # no Qt binding: magicgui cannot make widgets
        pytest.skip(f"magicgui has no GUI backend here ({type(exc).__name__}: {exc})")


def test_widget_steps_through_the_images_of_a_run(real_run, repo_data, tmp_path):
    """The dock widget, on napari's viewer model: it adopts the run the reader opened and steps."""
    gui_backend()
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    from hpa.interop.napari_widget import RunImages

    _initialize_plugins()
    viewer = ViewerModel()
    viewer.open(str(real_run), plugin="hpa-cells")
    first, second = image_ids(real_run)
    widget = RunImages(viewer)
    assert widget.ids == [first, second] and widget.image.value == first
    assert widget.status.value == "1 of 2; pixel units (no pixel size recorded)"
    widget.next.clicked()
    assert widget.image.value == second and widget.status.value.startswith("2 of 2")
    assert [layer.name for layer in viewer.layers][-1] == f"{second} cells" and len(viewer.layers) == 5
    widget.next.clicked()  # the last image: stays
    assert widget.image.value == second
    widget.previous.clicked()
    assert viewer.layers[-1].name == f"{first} cells" and len(viewer.layers) == 5
    # another folder: its SEG_DIR; a folder hpa did not write is said so and changes nothing
    widget.folder.value = tmp_path
    assert "not a SEG_DIR or PRED_DIR" in widget.status.value and len(viewer.layers) == 5
    widget.folder.value = real_run.parent / "seg"
    assert len(viewer.layers) == 10 and widget.status.value.startswith("1 of 2")  # beside the PRED_DIR's


def test_real_napari_viewer_opens_a_run_in_class_colours(synthetic_run):
    """napari's own viewer model (no display) opens a PRED_DIR through the registered plugin."""
    pytest.importorskip("napari")
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()  # what napari.Viewer does: discover the installed plugins
    viewer = ViewerModel()
    layers = viewer.open(str(synthetic_run), plugin="hpa-cells")
    assert [type(layer).__name__ for layer in layers] == ["Image"] * 4 + ["Labels"]
    palette = class_palette(len(CLASSES))
    for cid, top in TOP.items():
        rgb = palette[top] / 255 if top is not None else np.array(DIM_COLOUR) / 255
        np.testing.assert_allclose(layers[-1].colormap.map(cid)[:3], rgb, atol=1e-6)
    assert layers[-1].colormap.map(0)[3] == 0  # background transparent
