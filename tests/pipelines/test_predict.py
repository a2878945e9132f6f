"""predict: a tiny trained model scores a folder; every output checked."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hpa.aggregation import read_submission
from hpa.errors import HPAConfigError
from hpa.io import list_image_ids
from hpa.pipelines.predict import predict_folder


def test_predict_with_masks_writes_every_output(tiny_dataset, tiny_model, tmp_path):
    ids = [*list_image_ids(tiny_dataset["images"])[::-1], "not-there"]  # a custom order, one missing Id
    out = tmp_path / "pred"
    summary = predict_folder(
        tiny_dataset["images"],
        tiny_model,
        out,
        masks=tiny_dataset["masks"],
        ids=ids,
        workers=1,
        progress=False,
    )
    assert summary.n_images == len(ids) and summary.n_failed == 1
    sub = pd.read_csv(out / "submission.csv", keep_default_na=False)
    assert sub["Id"].tolist() == ids  # every Id once, in the requested order
    assert sub["Predicted"].iloc[-1] == ""  # the failed image: empty prediction
    assert (sub["Predicted"].iloc[:-1] != "").all()  # fill_top: never empty otherwise
    sub_ids, y = read_submission(out / "submission.csv", label_set="2018")
    assert sub_ids == ids and y.shape == (len(ids), 28)
    failures = pd.read_csv(out / "failures.csv")
    assert failures["image_id"].tolist() == ["not-there"]
    cells = pd.read_parquet(out / "cell_predictions.parquet")
    assert len(cells) == 4 * (len(ids) - 1)  # four cells per drawn image
    assert {
        "image_id",
        "cell_id",
        "bbox_y0",
        "bbox_x0",
        "bbox_y1",
        "bbox_x1",
        "Nucleoplasm",
        "predicted",
    } <= set(cells.columns)
    assert ((cells["Nucleoplasm"] >= 0) & (cells["Nucleoplasm"] <= 1)).all()
    scores = pd.read_csv(out / "image_scores.csv")
    assert scores["image_id"].tolist() == ids and scores.shape[1] == 29
    # image scores are the weighted mean of the max over cells and the max over tiles
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["pooling"] == "max"
    w = config["tile_weight"]
    tiles = pd.read_parquet(out / "tile_predictions.parquet")
    cell_max = cells.groupby("image_id")["Nucleoplasm"].max()
    tile_max = tiles.groupby("image_id")["Nucleoplasm"].max()
    expected = (1 - w) * cell_max + w * tile_max
    got = scores.set_index("image_id")["Nucleoplasm"].loc[expected.index]
    assert np.allclose(got.to_numpy(), expected.to_numpy(), atol=1e-6)
    thr = json.loads((out / "thresholds.json").read_text())
    model_thr = json.loads((tiny_model / "thresholds.json").read_text())
    assert (
        np.allclose(thr["thresholds"], model_thr["thresholds"])
        and thr["class_names"] == model_thr["class_names"]
    )
    import yaml

    settings = yaml.safe_load((out / "config.yaml").read_text())
    assert settings["masks"] == str(tiny_dataset["masks"].resolve()) and settings["tta"] == 1


def test_tta_and_workers_agree(tiny_dataset, tiny_model, tmp_path):
    a = predict_folder(
        tiny_dataset["images"],
        tiny_model,
        tmp_path / "a",
        masks=tiny_dataset["masks"],
        workers=1,
        progress=False,
    )
    b = predict_folder(
        tiny_dataset["images"],
        tiny_model,
        tmp_path / "b",
        masks=tiny_dataset["masks"],
        workers=2,
        progress=False,
    )
    ca = pd.read_parquet(a.out / "cell_predictions.parquet")
    cb = pd.read_parquet(b.out / "cell_predictions.parquet")
    pd.testing.assert_frame_equal(ca, cb)
    c = predict_folder(
        tiny_dataset["images"],
        tiny_model,
        tmp_path / "c",
        masks=tiny_dataset["masks"],
        workers=1,
        tta=8,
        progress=False,
    )
    cc = pd.read_parquet(c.out / "cell_predictions.parquet")
    assert np.abs(cc["Nucleoplasm"] - ca["Nucleoplasm"]).max() > 0  # TTA changes the scores ...
    assert np.corrcoef(cc["Nucleoplasm"], ca["Nucleoplasm"])[0, 1] > 0.5  # ... but not their meaning


def test_predict_segments_on_the_fly_without_masks(tiny_dataset, tiny_model, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(tiny_dataset["images"], images)
    (images / "img000_green.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cmd = [
        sys.executable,
        "-m",
        "hpa",
        "predict",
        str(images),
        "--model",
        str(tiny_model),
        "--out",
        str(tmp_path / "pred"),
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = tmp_path / "pred"
    assert (out / "masks" / "cells" / "img001.png").is_file()
    assert (out / "masks" / "cells.parquet").is_file()
    # OUT/masks is a complete, resumable SEG_DIR, as hpa segment writes it
    assert (out / "masks" / "nuclei" / "img001.png").is_file()
    assert (out / "masks" / "tables" / "img001.parquet").is_file()
    failures = pd.read_csv(out / "failures.csv")
    assert failures["image_id"].tolist() == ["img000"] and "img000_green.png" in failures["error"].iloc[0]
    sub = pd.read_csv(out / "submission.csv", keep_default_na=False)
    assert sub["Id"].tolist() == list_image_ids(images)


def test_views_are_prepared_ahead_in_order_and_bounded(monkeypatch):
    import threading
    import time

    import hpa.pipelines.predict_views as predict

    started: list[int] = []
    lock = threading.Lock()

    def fake_prepare(task):
        with lock:
            started.append(task)
        time.sleep(0.001 * (task % 3))  # uneven work
        return task

    monkeypatch.setattr(predict, "_prepare", fake_prepare)
    out = []
    for item in predict._prepared(list(range(40)), workers=1):
        time.sleep(0.002)  # a slow classifier
        assert len(started) <= len(out) + 1 + 8  # never more than 8 waiting beyond the consumer
        out.append(item)
    assert out == list(range(40))  # submission order, whatever finishes first


def test_pooling_option_changes_the_cell_pooling(tiny_dataset, tiny_model, tmp_path):
    """--pooling mean: image score = (1 - w) * mean over cells + w * max over tiles."""
    out = tmp_path / "pred"
    predict_folder(
        tiny_dataset["images"], tiny_model, out, masks=tiny_dataset["masks"], pooling="mean", progress=False
    )
    w = json.loads((tiny_model / "config.json").read_text())["tile_weight"]
    cells = pd.read_parquet(out / "cell_predictions.parquet")
    tiles = pd.read_parquet(out / "tile_predictions.parquet")
    scores = pd.read_csv(out / "image_scores.csv").set_index("image_id")
    for name in ("Nucleoplasm", "Cytosol", "Plasma membrane"):
        expected = (1 - w) * cells.groupby("image_id")[name].mean() + w * tiles.groupby("image_id")[
            name
        ].max()
        got = scores[name].loc[expected.index]
        assert np.allclose(got.to_numpy(), expected.to_numpy(), atol=1e-6), name
        assert not np.allclose(cells.groupby("image_id")[name].mean(), cells.groupby("image_id")[name].max())
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["pooling"] == "mean"


def test_no_fill_top_leaves_images_under_every_threshold_empty(tiny_dataset, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("cache"))
    thr = json.loads((model / "thresholds.json").read_text())
    thr["thresholds"] = [0.999999] * len(thr["thresholds"])  # nothing passes
    (model / "thresholds.json").write_text(json.dumps(thr))
    kwargs = {"masks": tiny_dataset["masks"], "progress": False}
    predict_folder(tiny_dataset["images"], model, tmp_path / "filled", **kwargs)
    predict_folder(tiny_dataset["images"], model, tmp_path / "empty", fill_top=False, **kwargs)
    filled = pd.read_csv(tmp_path / "filled" / "submission.csv", keep_default_na=False, dtype=str)
    empty = pd.read_csv(tmp_path / "empty" / "submission.csv", keep_default_na=False)
    assert (filled["Predicted"] != "").all() and (empty["Predicted"] == "").all()
    # the filled class is the one relatively closest to its threshold: here the top score
    scores = pd.read_csv(tmp_path / "filled" / "image_scores.csv").set_index("image_id")
    top = scores.to_numpy().argmax(1)
    assert filled["Predicted"].tolist() == [str(k) for k in top]


def test_the_engine_reaches_the_saved_record_and_both_engines_agree(tiny_dataset, tiny_model, tmp_path):
    """``engine`` is resolved, logged and saved in config.yaml and the provenance record; the
    onnxruntime export is cached in the model folder; its probabilities are torch's within 1e-4."""
    import yaml

    from hpa.artefacts.provenance import read_record
    from hpa.classification.engine import installed

    pytest.importorskip("onnxruntime")
    runs = {}
    for engine in ("torch", "onnxruntime", "auto"):
        out = tmp_path / engine
        predict_folder(
            tiny_dataset["images"],
            tiny_model,
            out,
            masks=tiny_dataset["masks"],
            engine=engine,
            precision="fp32" if engine == "torch" else "auto",  # auto is bf16 on a CPU with native bf16
            progress=False,
        )
        settings = yaml.safe_load((out / "config.yaml").read_text())
        runs[engine] = pd.read_parquet(out / "cell_predictions.parquet"), settings
        assert read_record(out).settings["engine"] == settings["engine"]
    assert runs["torch"][1]["engine"] == "torch"
    assert runs["onnxruntime"][1]["engine"] == "onnxruntime"
    assert runs["auto"][1]["engine"] == ("openvino" if installed("openvino") else "onnxruntime")
    assert runs["onnxruntime"][1]["precision"] == "fp32"
    assert len(list((tiny_model / "engine-cache").glob("*.onnx"))) == 1  # exported once, reused
    torch_cells, onnx_cells = runs["torch"][0], runs["onnxruntime"][0]
    classes = [
        c
        for c in torch_cells.columns
        if c in json.loads((tiny_model / "config.json").read_text())["class_names"]
    ]
    diff = np.abs(torch_cells[classes].to_numpy() - onnx_cells[classes].to_numpy()).max()
    assert diff < 1e-4
    assert (tmp_path / "torch" / "submission.csv").read_text() == (
        tmp_path / "onnxruntime" / "submission.csv"
    ).read_text()


def test_with_masks_given_the_onnx_engine_gets_every_core(tiny_dataset, tiny_model, tmp_path, monkeypatch):
    """Reading masks and cutting crops is light: the network keeps every core, as torch's
    threads do; segmenting on the fly it gets the cores the segmenting workers leave."""
    from hpa.classification.predictor import Predictor
    from hpa.config import default_workers

    asked = []

    def load(*args, **kwargs):
        asked.append(kwargs["threads"])
        raise HPAConfigError("stop here")

    monkeypatch.setattr(Predictor, "load", load)
    for masks in (tiny_dataset["masks"], None):
        with pytest.raises(HPAConfigError, match="stop here"):
            predict_folder(
                tiny_dataset["images"], tiny_model, tmp_path / str(len(asked)), masks=masks, workers=1,
                engine="onnxruntime", progress=False,
            )  # fmt: skip
    cores = default_workers()
    assert asked == [cores, max(1, cores - 1)]


def test_the_cli_refuses_an_unknown_engine_and_a_missing_onnxruntime(
    tiny_dataset, tiny_model, tmp_path, capsys, caplog, monkeypatch
):
    from hpa.cli import main

    base = [
        "predict",
        str(tiny_dataset["images"]),
        "--model",
        str(tiny_model),
        "--masks",
        str(tiny_dataset["masks"]),
    ]
    with pytest.raises(SystemExit) as stop:
        main([*base, "--out", str(tmp_path / "a"), "--engine", "tensorrt"])
    assert stop.value.code == 2 and "--engine: invalid choice: 'tensorrt'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    assert main([*base, "--out", str(tmp_path / "b"), "--engine", "onnxruntime"]) == 1
    assert (
        "--engine onnxruntime: the package onnxruntime is not installed (pip install onnxruntime)"
        in caplog.text
    )
    assert not (tmp_path / "b").exists()


def test_the_api_checks_the_engine_as_the_cli_does(tiny_model):
    import hpa

    with pytest.raises(HPAConfigError, match="engine"):
        hpa.Classifier.from_folder(tiny_model, engine="tensorrt")
    assert hpa.Classifier.from_folder(tiny_model, engine="torch").engine == "torch"
