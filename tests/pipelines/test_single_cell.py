"""2021 output of hpa predict, its cell-level evaluation, synth's 2021 truth, drawing it."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hpa.aggregation.rle import decode_mask
from hpa.aggregation.single_cell import CELL_SCORES, map_labels_2018_to_2021
from hpa.aggregation.submission_2021 import read_submission_2021
from hpa.classification.train import TrainConfig
from hpa.constants import CLASS_NAMES_2021
from hpa.errors import HPADataError
from hpa.io import Labels, list_image_ids, read_label_image, read_labels, write_labels
from hpa.pipelines.predict import predict_folder
from hpa.pipelines.single_cell import evaluate_2021, write_single_cell
from hpa.pipelines.train import train_model
from hpa.visualization.preddir import load_prediction_run


def _train(tiny_dataset, labels, out):
    cfg = TrainConfig(backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1)
    train_model(tiny_dataset["images"], labels, tiny_dataset["masks"], out, cfg, cache_root=out / "cache",
                progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def models(tiny_dataset, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("sc-models")
    y2018 = read_labels(tiny_dataset["labels"])
    y2021 = Labels(y2018.ids, map_labels_2018_to_2021(y2018.y), "2021")
    write_labels(root / "train_2021.csv", y2021)
    return {
        "2018": tiny_model,
        "2021": _train(tiny_dataset, y2021, root / "m2021"),
    }


@pytest.fixture(scope="module")
def truth_dir(tiny_dataset, tmp_path_factory):
    """The tiny dataset's masks as annotated cells: each cell carries its image's 2021 labels."""
    root = tmp_path_factory.mktemp("sc-truth")
    labels = read_labels(tiny_dataset["labels"])
    rows = []
    for image_id, y in zip(labels.ids, map_labels_2018_to_2021(labels.y)):
        src = tiny_dataset["masks"] / "cells" / f"{image_id}.png"
        (root / "cells").mkdir(exist_ok=True)
        (root / "cells" / src.name).write_bytes(src.read_bytes())
        for k in np.unique(read_label_image(src)):
            if k:
                rows.append(f"{image_id},{k},{'|'.join(map(str, np.flatnonzero(y)))}")
    (root / "cell_labels_2021.csv").write_text("image_id,cell_id,Label\n" + "\n".join(rows) + "\n")
    return root


def test_2021_model_writes_the_2021_format_by_default(tiny_dataset, models, tmp_path):
    ids = [*list_image_ids(tiny_dataset["images"])[::-1], "not-there"]
    out = tmp_path / "pred"
    predict_folder(tiny_dataset["images"], models["2021"], out, masks=tiny_dataset["masks"], ids=ids,
                   workers=1, progress=False)  # fmt: skip
    assert not (out / "submission.csv").exists()
    rows = read_submission_2021(out / "submission_2021.csv")
    assert [r.image_id for r in rows] == ids  # every Id once, in the requested order
    assert rows[-1].predictions == [] and rows[-1].width is None  # the failed image
    cells = pd.read_parquet(out / "cell_predictions_2021.parquet")
    assert list(cells.columns[-20:]) == [*CLASS_NAMES_2021, "predicted"]
    for row in rows[:-1]:
        labels = read_label_image(tiny_dataset["masks"] / "cells" / f"{row.image_id}.png")
        assert (row.width, row.height) == (labels.shape[1], labels.shape[0])
        decoded = {}
        for cls, conf, text in row.predictions:
            assert 0 <= cls < 19 and conf >= 0.01**2  # the floor, at most squared by the rule
            decoded.setdefault(text, decode_mask(text, row.height, row.width))
        # every cell of the SEG_DIR decodes back from the submission with IoU 1.0
        found = {int(np.unique(labels[m])[0]) for m in decoded.values() if len(np.unique(labels[m])) == 1}
        assert found == set(np.unique(labels).tolist()) - {0}
        for m in decoded.values():
            k = int(np.bincount(labels[m]).argmax())
            assert np.array_equal(m, labels == k)


def test_2018_model_both_formats_every_rule_and_evaluation(tiny_dataset, models, truth_dir, tmp_path):
    out = tmp_path / "pred"
    predict_folder(tiny_dataset["images"], models["2018"], out, masks=tiny_dataset["masks"], workers=1,
                   progress=False, fmt="both", cell_score="cell")  # fmt: skip
    assert (out / "submission.csv").is_file() and (out / "submission_2021.csv").is_file()
    scores = {}
    for rule in CELL_SCORES:
        write_single_cell(out, rule, min_score=0.0, progress=False)
        result = evaluate_2021(out / "submission_2021.csv", truth_dir)
        # the mean over the classes with annotated cells, each AP from matched predictions
        aps = [c["ap"] for c in result["per_class"] if c["truth_cells"]]
        assert aps and all(c["ap"] is None for c in result["per_class"] if not c["truth_cells"])
        assert result["map"] == pytest.approx(float(np.mean(aps)), abs=1e-12)
        assert all(
            c["true_positives"] <= min(c["predictions"], c["truth_cells"]) for c in result["per_class"]
        )
        scores[rule] = result["map"]
        # with every class listed, the image rule gives all cells of an image one confidence
        if rule == "image":
            table = pd.read_parquet(out / "cell_predictions_2021.parquet")
            spread = table.groupby("image_id")[list(CLASS_NAMES_2021)].std().fillna(0).to_numpy()
            assert spread.max() < 1e-6
    assert len(set(scores.values())) > 1  # the rules rank cells differently
    assert scores["product"] == pytest.approx(scores["geometric"], abs=1e-12)  # same ranking
    # the CLI reports the same mAP as JSON (of the last rule's submission)
    cmd = [sys.executable, "-m", "hpa", "evaluate", str(out / "submission_2021.csv"), "--format", "2021",
           "--truth", str(truth_dir), "--json"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["map"] == pytest.approx(scores[CELL_SCORES[-1]], abs=1e-12)
    # the listing floor goes through the rule too: product and geometric list the same pairs
    listed = {}
    for rule in ("product", "geometric"):
        write_single_cell(out, rule, min_score=0.3, progress=False)
        rows = read_submission_2021(out / "submission_2021.csv")
        listed[rule] = [(r.image_id, c, m) for r in rows for c, _, m in r.predictions]
    assert listed["product"] == listed["geometric"] and len(listed["product"]) > 0


def test_evaluate_2021_needs_truth_and_checks_sizes(tiny_dataset, truth_dir, tmp_path):
    sub = tmp_path / "sub.csv"
    ids = list_image_ids(tiny_dataset["images"])
    sub.write_text("ID,ImageWidth,ImageHeight,PredictionString\n" + "".join(f"{i},50,50,\n" for i in ids))
    done = subprocess.run([sys.executable, "-m", "hpa", "evaluate", str(sub), "--format", "2021"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "--truth" in done.stderr
    done = subprocess.run([sys.executable, "-m", "hpa", "evaluate", str(sub), "--truth", str(truth_dir)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "50x50" in done.stderr and "Traceback" not in done.stderr
    # a truth folder annotating more images than were predicted: the predicted ones count
    sub.write_text("ID,ImageWidth,ImageHeight,PredictionString\n" + "".join(f"{i},96,96,\n" for i in ids[:2]))
    result = evaluate_2021(sub, truth_dir)
    assert result["n_images"] == 2 and result["n_annotated_not_submitted"] == len(ids) - 2
    assert result["map"] == 0.0  # no prediction: AP 0 for every class with truth cells
    sub.write_text("ID,ImageWidth,ImageHeight,PredictionString\nother,96,96,\n")
    with pytest.raises(HPADataError, match="none of its 1 Ids has annotated cells"):
        evaluate_2021(sub, truth_dir)


def test_run_2021_labels_load_for_show_and_report(tiny_dataset, models, tmp_path):
    out = tmp_path / "pred"
    predict_folder(tiny_dataset["images"], models["2021"], out, masks=tiny_dataset["masks"], workers=1,
                   progress=False)  # fmt: skip
    run = load_prediction_run(out, "2021")
    assert run.class_names == CLASS_NAMES_2021 and len(run.thresholds) == 19
    for image_id, classes in run.predicted.items():
        called = set()
        for text in run.cells_of(image_id)["predicted"]:
            called.update(int(k) for k in text.split())
        assert set(classes) == (called - {18} or called)
    done = subprocess.run([sys.executable, "-m", "hpa", "show", str(tiny_dataset["images"]), "--pred", str(out),
                           "--scheme", "2021", "--out", str(tmp_path / "ov")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "ov").glob("*.png"))) == len(run.ids)
    (out / "thresholds_2021.json").unlink()
    with pytest.raises(HPADataError, match=r"missing thresholds_2021\.json"):
        load_prediction_run(out, "2021")


def test_synth_writes_2021_cell_labels(tmp_path):
    from hpa.synthetic.dataset import write_dataset

    write_dataset(tmp_path, 6, 3, seed=4, size=256)
    old = pd.read_csv(tmp_path / "truth" / "cell_labels.csv", keep_default_na=False)
    new = pd.read_csv(
        tmp_path / "truth" / "cell_labels_2021.csv", keep_default_na=False, dtype={"Label": str}
    )
    assert old[["image_id", "cell_id"]].equals(new[["image_id", "cell_id"]])
    for target, label in zip(old["Target"], new["Label"]):
        y = np.zeros((1, 28), np.uint8)
        y[0, [int(t) for t in str(target).split()]] = 1
        assert label == "|".join(map(str, np.flatnonzero(map_labels_2018_to_2021(y)[0])))
    assert (new["Label"] == "18").any()  # cells without the image's pattern are Negative
    train = read_labels(tmp_path / "train_2021.csv")
    assert train.label_set == "2021" and len(train) == 6
    assert read_labels(tmp_path / "test_labels_2021.csv").ids == read_labels(tmp_path / "test_labels.csv").ids
