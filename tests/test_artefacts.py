"""hpa.artefacts: one home per on-disk layout; a model folder that describes itself."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.artefacts import ModelDir, PredDir, SegDir, read_csv_table, read_failures, write_failures
from hpa.artefacts.tables import join_views, split_views
from hpa.classification.train import TrainConfig
from hpa.config import save_yaml, to_dict
from hpa.errors import HPADataError
from hpa.io import read_labels
from hpa.pipelines.predict import predict_folder
from hpa.pipelines.train import train_model
from hpa.segmentation import SegmentConfig

# --------------------------------------------------------------------- tables ---


def test_an_old_table_with_an_Id_column_is_read_with_image_id(tmp_path):
    path = tmp_path / "image_scores.csv"
    path.write_text("Id,Nucleoplasm\n007,0.5\n")
    table = read_csv_table(path)
    assert list(table.columns) == ["image_id", "Nucleoplasm"] and table["image_id"].tolist() == ["007"]
    (tmp_path / "bad.csv").write_text("name,x\na,1\n")
    with pytest.raises(HPADataError, match=r"bad\.csv: no image_id column"):
        read_csv_table(tmp_path / "bad.csv")


def test_failures_round_trip_with_commas_and_quotes(tmp_path):
    failures = {"b": 'HPADataError: x.png: "broken", truncated', "a": "OSError: gone"}
    write_failures(tmp_path / "failures.csv", failures)
    assert (tmp_path / "failures.csv").read_text().splitlines()[0] == "image_id,error"
    assert read_failures(tmp_path / "failures.csv") == failures
    assert read_failures(tmp_path / "absent.csv") == {}


def test_split_views_and_join_views_invert_each_other():
    index = pd.DataFrame(
        {
            "image_id": ["a", "a", "a", "b", "b"],
            "kind": ["cell", "cell", "tile", "cell", "tile"],
            "cell_id": [1, 2, 0, 5, 0],
            "bbox_y0": [0, 4, -1, 1, -1],
            "bbox_x0": [0, 4, -1, 1, -1],
            "bbox_y1": [3, 9, -1, 6, -1],
            "bbox_x1": [3, 9, -1, 6, -1],
        }
    )
    probs = np.arange(10, dtype=np.float32).reshape(5, 2) / 10
    cells, tiles = split_views(index, probs, ["x", "y"])
    assert len(cells) == 3 and list(tiles.columns) == ["image_id", "tile", "x", "y"]
    views = join_views(cells, tiles, ["x", "y"])
    pd.testing.assert_frame_equal(views.drop(columns=["x", "y"]), index, check_dtype=False)
    assert np.allclose(views[["x", "y"]].to_numpy(), probs)


def test_a_prediction_folder_with_thresholds_the_parser_rejects_is_refused(tmp_path):
    """load_prediction_run reads thresholds.json through the one parser: what it rejects, the run does too."""
    from hpa.aggregation import load_thresholds
    from hpa.errors import HPAConfigError
    from hpa.visualization.preddir import load_prediction_run

    pd.DataFrame({"Id": ["a"], "Predicted": ["0"]}).to_csv(tmp_path / PredDir.SUBMISSION, index=False)
    pd.DataFrame({"image_id": ["a"], "cell_id": [1], "x": [0.9], "y": [0.1]}).to_parquet(
        tmp_path / PredDir.CELLS
    )
    path = tmp_path / PredDir.THRESHOLDS
    path.write_text(json.dumps({"class_names": ["x", "y"], "thresholds": [0.5, 0.5]}))
    assert load_prediction_run(tmp_path).predicted == {"a": (0,)}
    for bad in ([0.5, 1.5], [0.5], [0.5, "high"]):
        path.write_text(json.dumps({"class_names": ["x", "y"], "thresholds": bad}))
        with pytest.raises(HPAConfigError) as parser:
            load_thresholds(path)
        with pytest.raises(HPAConfigError) as run:
            load_prediction_run(tmp_path)
        assert str(run.value) == str(parser.value)


def test_one_definition_per_file_name():
    """Every file name of the three layouts is defined once, in hpa/artefacts (or hpa/runlog)."""
    from pathlib import Path

    import hpa

    root = Path(hpa.__file__).parent
    names = [
        *(getattr(SegDir, n) for n in ("CELLS_TABLE", "CONFIG", "INPUTS", "FAILURES")),
        *(getattr(ModelDir, n) for n in ("CONFIG", "WEIGHTS", "THRESHOLDS", "VAL_CELLS", "SEGMENTATION")),
        *(getattr(PredDir, n) for n in ("SUBMISSION", "IMAGE_SCORES", "CELLS", "TILES", "RUN_LOG")),
    ]
    for name in names:
        homes = [
            p.relative_to(root).as_posix()
            for p in root.rglob("*.py")
            if re.search(rf"^\s*[A-Z_0-9]+(: [^=]+)? = \"{re.escape(name)}\"", p.read_text(), re.M)
        ]
        assert len(homes) == 1 and homes[0].startswith(("artefacts/", "runlog.py")), (name, homes)


# ------------------------------------------------- a model folder, end to end ---

#: A segmentation setting the model is trained with that is not the default.
CELL_SMOOTH = SegmentConfig().cell_smooth * 1.5


@pytest.fixture(scope="module")
def recorded_model(tiny_dataset, tmp_path_factory):
    """A tiny model trained on masks whose SEG_DIR records a non-default setting."""
    root = tmp_path_factory.mktemp("recorded")
    seg = root / "seg"
    shutil.copytree(tiny_dataset["masks"], seg, ignore=shutil.ignore_patterns("crop-cache"))
    save_yaml(seg / SegDir.CONFIG, to_dict(SegmentConfig(cell_smooth=CELL_SMOOTH)))
    cfg = TrainConfig(backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1)
    out = root / "model"
    labels = read_labels(tiny_dataset["labels"])
    train_model(tiny_dataset["images"], labels, seg, out, cfg, cache_root=root / "cache", progress=False)
    return out


def test_the_model_folder_records_its_segmentation(recorded_model):
    recorded = yaml.safe_load((recorded_model / ModelDir.SEGMENTATION).read_text())
    assert recorded["settings"] == to_dict(SegmentConfig(cell_smooth=CELL_SMOOTH))
    assert ModelDir(recorded_model).read_segmentation()["cell_smooth"] == CELL_SMOOTH


def test_on_the_fly_predict_segments_as_the_training_masks_were(tiny_dataset, recorded_model, tmp_path):
    ids = ["img000", "img001"]
    predict_folder(
        tiny_dataset["images"], recorded_model, tmp_path / "pred", ids=ids, workers=1, progress=False
    )
    used = yaml.safe_load((tmp_path / "pred" / "masks" / SegDir.CONFIG).read_text())
    assert used["cell_smooth"] == CELL_SMOOTH != SegmentConfig().cell_smooth
    assert used == to_dict(SegmentConfig(cell_smooth=CELL_SMOOTH))
    # an explicit backend overrides only the backend (cellpose needs weights: watershed again)
    predict_folder(
        tiny_dataset["images"],
        recorded_model,
        tmp_path / "p2",
        ids=ids,
        workers=1,
        progress=False,
        backend="watershed",
    )
    assert (
        yaml.safe_load((tmp_path / "p2" / "masks" / SegDir.CONFIG).read_text())["cell_smooth"] == CELL_SMOOTH
    )


def test_the_python_classifier_segments_as_predict_does(recorded_model):
    import hpa

    clf = hpa.Classifier.from_folder(recorded_model, device="cpu")
    assert clf.segment_config == SegmentConfig(cell_smooth=CELL_SMOOTH)


def test_a_model_without_recorded_segmentation_predicts_with_the_defaults(
    tiny_dataset, recorded_model, tmp_path
):
    model = tmp_path / "old-model"
    shutil.copytree(recorded_model, model)
    (model / ModelDir.SEGMENTATION).unlink()
    predict_folder(
        tiny_dataset["images"], model, tmp_path / "pred", ids=["img002"], workers=1, progress=False
    )
    assert yaml.safe_load((tmp_path / "pred" / "masks" / SegDir.CONFIG).read_text()) == to_dict(
        SegmentConfig()
    )


def _card_rows(card: str) -> dict[str, list[str]]:
    rows = {}
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            rows.setdefault(cells[1], []).append(" ".join(cells))
    return rows


def test_the_model_card_agrees_with_metrics_thresholds_and_labels(tiny_dataset, recorded_model):
    card = (recorded_model / ModelDir.CARD).read_text()
    metrics = json.loads((recorded_model / ModelDir.METRICS).read_text())
    thresholds = json.loads((recorded_model / ModelDir.THRESHOLDS).read_text())["thresholds"]
    labels = read_labels(tiny_dataset["labels"])
    assert card.startswith("# Model card: model")
    assert f"validation macro F1 (tuned thresholds): {metrics['val_macro_f1']:.4f}" in card
    assert f"split: {metrics['n_train_images']} training, {metrics['n_val_images']} validation images" in card
    assert f"labelled images: {len(labels)} (label set 2018, 28 classes)" in card
    rows = _card_rows(card)
    for record, threshold in zip(metrics["per_class"], thresholds, strict=True):
        k, name = record["class"], record["name"]
        positives = int(labels.y[:, k].sum())
        metric_row = f"{k} {name} {record['precision']:.4f} {record['recall']:.4f} {record['f1']:.4f} {record['support']} {threshold:.4f}"
        assert rows[name] == [f"{k} {name} {positives}", metric_row]
    assert f"cell_smooth: {CELL_SMOOTH}" in card  # the recorded segmentation
    assert 'hpa.Classifier.from_folder("model")' in card and "hpa predict IMAGES --model model" in card


def test_val_tables_of_an_older_folder_are_still_read(recorded_model, tmp_path):
    """A folder written before the split: cells and tiles in one table, ``Id`` in the image table."""
    new = ModelDir(recorded_model)
    names = list(json.loads((recorded_model / ModelDir.THRESHOLDS).read_text())["class_names"])
    views = new.read_val_views(names)
    assert set(views["kind"]) == {"cell", "tile"}
    old = ModelDir(tmp_path)
    views.to_parquet(old.path(ModelDir.VAL_CELLS), index=False)
    scores = pd.read_csv(new.path(ModelDir.VAL_IMAGES)).rename(columns={"image_id": "Id"})
    scores.to_csv(old.path(ModelDir.VAL_IMAGES), index=False)
    pd.testing.assert_frame_equal(old.read_val_views(names), views)
    assert old.read_val_image_ids() == new.read_val_image_ids() == scores["Id"].astype(str).tolist()
