"""A model and its companion blended image by image: weight choice, folders, predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.aggregation import apply_thresholds, load_thresholds, macro_f1
from hpa.aggregation.metrics import macro_average_precision
from hpa.classification import train as train_mod
from hpa.classification.ensemble import MAIN, EnsembleNet, expand_groups
from hpa.classification.inference import image_scores, pool_views
from hpa.classification.model import Group, ModelConfig, create_model
from hpa.classification.train import TrainConfig, companion_config
from hpa.constants import LABEL_SETS
from hpa.errors import HPAConfigError
from hpa.io import read_labels
from hpa.pipelines.blend import BLEND_WEIGHTS, choose_blend_weight, train_blend
from hpa.pipelines.predict import predict_folder

TINY = TrainConfig(
    backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1, warmup_epochs=0.2
)
#: A companion recipe as small as the tests' main model, with the scratch recipe's other choices.
TINY_COMPANION = {**train_mod.COMPANIONS["scratch"], "backbone": "test_resnet"}


@pytest.fixture()
def tiny_companion(monkeypatch):
    monkeypatch.setitem(train_mod.COMPANIONS, "tiny", TINY_COMPANION)
    return replace(TINY, companion="tiny")


# ------------------------------------------------------------- the weight ---


def test_the_weight_goes_where_the_validation_images_say():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 3)) < 0.4).astype(np.int64)
    good = y * 0.5 + rng.random(y.shape) * 0.6  # informative, overlapping classes
    noise = rng.random(y.shape)
    assert choose_blend_weight(y, good, noise)[0] == 1.0  # the companion adds nothing
    assert choose_blend_weight(y, noise, good)[0] <= 0.2  # the main model adds (next to) nothing
    # each knows different classes and is flat on the others: a mix beats either alone
    half = good.copy()
    half[:, 1:] = 0.5
    other = good.copy()
    other[:, :1] = 0.5
    w, ap, se = choose_blend_weight(y, half, other)
    assert 0.0 < w < 1.0 and ap[w] > max(ap[1.0], ap[0.0]) + se[1.0]
    assert list(ap) == list(BLEND_WEIGHTS) and ap[w] == pytest.approx(
        macro_average_precision(y, w * half + (1 - w) * other)
    )
    # the one-standard-error rule: the largest main share within one error of the best
    assert all(max(ap.values()) - ap[v] > se[v] for v in BLEND_WEIGHTS if v > w)
    assert choose_blend_weight(y, half, other) == choose_blend_weight(y, half, other)  # seeded
    # without resampling the rule is the plain best; the errors only move it toward the main model
    plain = choose_blend_weight(y, half, other, resamples=1)
    assert plain[0] == max(BLEND_WEIGHTS, key=lambda v: plain[1][v]) and w >= plain[0]
    # equal figures: the larger main share
    assert choose_blend_weight(y, good, good)[0] == 1.0


def test_average_precision_is_scikit_learns():
    from sklearn.metrics import average_precision_score

    from hpa.aggregation.metrics import class_average_precision

    rng = np.random.default_rng(1)
    for i in range(300):
        n = int(rng.integers(2, 40))
        y = (rng.random(n) < 0.4).astype(np.int64)
        y[0] = 1
        scores = rng.integers(0, 5, n) / 4.0 if i % 2 else rng.random(n)  # with and without ties
        assert class_average_precision(y, scores) == pytest.approx(
            average_precision_score(y, scores), abs=1e-12
        )


# --------------------------------------------------- pooling of a blend ---


def test_each_blended_model_pools_its_own_way():
    index = pd.DataFrame(
        {"image_id": ["a", "a", "a", "b", "b"], "kind": ["cell", "cell", "tile", "cell", "tile"]}
    )
    base = ModelConfig(backbone="x", class_names=LABEL_SETS["2018"], label_set="2018")
    k = base.num_classes
    cfg = replace(base, groups=(Group(0.7, "mean", 0.0), Group(0.3, "max", 0.5)))
    assert cfg.output_width == 2 * k and "groups" not in base.to_json()
    probs = np.random.default_rng(1).random((5, 2 * k)).astype(np.float32)
    scores, views = image_scores(index, probs, ["a", "b"], cfg)
    first = pool_views(index, probs[:, :k], ["a", "b"], "mean", 0.0)
    second = pool_views(index, probs[:, k:], ["a", "b"], "max", 0.5)
    np.testing.assert_allclose(scores, 0.7 * first + 0.3 * second, rtol=1e-6)
    np.testing.assert_allclose(views, 0.7 * probs[:, :k] + 0.3 * probs[:, k:], rtol=1e-6)
    # --pooling overrides every model's own
    forced, _ = image_scores(index, probs, ["a", "b"], cfg, pooling="max")
    expected = 0.7 * pool_views(index, probs[:, :k], ["a", "b"], "max", 0.0) + 0.3 * second
    np.testing.assert_allclose(forced, expected, rtol=1e-6)
    # one model: its own pooling, views untouched
    alone, same = image_scores(index, probs[:, :k], ["a", "b"], base)
    np.testing.assert_allclose(
        alone, pool_views(index, probs[:, :k], ["a", "b"], base.pooling, base.tile_weight)
    )
    assert same is not None and same.shape == (5, k)


def test_ensemble_net_returns_one_block_per_group():
    cfg = ModelConfig(backbone="test_resnet", class_names=LABEL_SETS["2018"], label_set="2018")
    torch.manual_seed(0)
    nets = [create_model("test_resnet", 28).eval() for _ in range(3)]
    x = torch.rand(2, 4, 32, 32)
    ens = EnsembleNet(nets, [cfg] * 3, [0.2, 0.2, 0.6], groups=[0, 0, 1]).eval()
    with torch.no_grad():
        out = torch.sigmoid(ens(x))
        alone = [torch.sigmoid(ens.nets[k](_prepared(ens, k, x))) for k in range(3)]
    assert out.shape == (2, 56) and ens.num_classes == 56
    np.testing.assert_allclose(out[:, :28], 0.5 * alone[0] + 0.5 * alone[1], atol=1e-5)  # within a group
    np.testing.assert_allclose(out[:, 28:], alone[2], atol=1e-5)


def _prepared(ens: EnsembleNet, k: int, x: torch.Tensor) -> torch.Tensor:
    from hpa.classification.model import resize_views, unit_views

    v = unit_views(x.float(), 1.0, ens.intensities[k])
    v = torch.einsum("oc,bchw->bohw", getattr(ens, f"mix{k}"), v)
    return resize_views((v - getattr(ens, f"mean{k}")) / getattr(ens, f"std{k}"), ens.sizes[k])


# ------------------------------------------------------------ settings ---


def test_cpu_defaults_train_a_companion_and_a_chosen_backbone_drops_it():
    assert TrainConfig.for_device("cpu").companion == "scratch"
    assert TrainConfig.for_device("cpu", backbone="resnet18").companion is None
    assert TrainConfig.for_device("cpu", backbone="resnet18", companion="scratch").companion == "scratch"
    assert TrainConfig.for_device("cpu", companion="none").companion is None
    with pytest.raises(HPAConfigError, match="companion must be one of scratch"):
        TrainConfig.for_device("cpu", companion="bigger")
    comp = companion_config(TrainConfig.for_device("cpu", seed=3, folds=4))
    assert (comp.backbone, comp.pretrained, comp.channels, comp.pooling, comp.input_size) == (
        "resnet10t", None, "rgby", "max", None,
    )  # fmt: skip
    assert (comp.seed, comp.folds, comp.companion) == (3, 4, None)  # the same split, no companion of its own
    assert train_mod.DEVICE_DEFAULTS["cuda"]["companion"] == "scratch"
    larger = companion_config(TrainConfig.for_device("cpu", crop_size=128))  # as on the GPU
    assert (larger.crop_size, larger.input_size) == (
        128,
        None,
    )  # the same crops (one cache), at their own size
    image = companion_config(TrainConfig.for_device("cpu", intensity="image"))
    assert image.intensity == "image"  # views are cut once for both: the same scaling


# ---------------------------------------------------------- whole runs ---


def test_blend_folder_trains_both_blends_them_and_predicts(
    tiny_dataset, tiny_companion, tmp_path, monkeypatch
):
    labels = read_labels(tiny_dataset["labels"])
    out = tmp_path / "blend"
    metrics = train_blend(
        tiny_dataset["images"], labels, tiny_dataset["masks"], out, tiny_companion,
        cache_root=tmp_path / "cache", progress=False,
    )  # fmt: skip
    for name in (MAIN, "tiny"):
        assert (out / name / "weights.safetensors").is_file() and (out / name / "thresholds.json").is_file()
    spec = json.loads((out / "ensemble.json").read_text())
    shares = metrics["blend"]["weights"]
    assert spec["combine"] == "image" and sum(shares.values()) == pytest.approx(1.0)
    assert spec["members"] == [n for n in (MAIN, "tiny") if shares[n] > 0]
    selection = {float(w): f for w, f in metrics["blend"]["macro_ap_by_weight"].items()}
    assert selection[shares[MAIN]] == max(selection.values())
    blended = pd.read_csv(out / "blend_scores.csv").set_index("image_id")
    val = labels.subset(list(blended.index))
    thresholds = load_thresholds(out / "thresholds.json")[0]
    y_pred = apply_thresholds(blended[list(labels.class_names)].to_numpy(), thresholds)
    assert metrics["val_macro_f1"] == pytest.approx(
        macro_f1(val.y, y_pred)
    )  # the figure is the saved blend's
    assert (out / "README.md").is_file()
    assert (out / "segmentation.yaml").is_file() == (out / MAIN / "segmentation.yaml").is_file()

    # predict: each model pooled its own way, image scores blended with the chosen weight
    def run(model, name):
        predict_folder(
            tiny_dataset["images"],
            model,
            tmp_path / name,
            masks=tiny_dataset["masks"],
            workers=1,
            progress=False,
        )
        return pd.read_csv(tmp_path / name / "image_scores.csv").set_index("image_id")

    blend = run(out, "p-blend")
    main, comp = run(out / MAIN, "p-main"), run(out / "tiny", "p-tiny")
    w = shares[MAIN]
    np.testing.assert_allclose(blend.to_numpy(), (w * main + (1 - w) * comp).to_numpy(), atol=1e-5)
    np.testing.assert_allclose(
        load_thresholds(tmp_path / "p-blend" / "thresholds.json")[0],
        load_thresholds(out / "thresholds.json")[0],
    )
    # whatever the tiny run chose, a two-model blend pools each member its own way
    (out / "ensemble.json").write_text(json.dumps({**spec, "members": [MAIN, "tiny"], "weights": [0.6, 0.4]}))
    mixed = run(out, "p-mixed")
    np.testing.assert_allclose(mixed.to_numpy(), (0.6 * main + 0.4 * comp).to_numpy(), atol=2e-3)  # bf16
    cells = pd.read_parquet(tmp_path / "p-mixed" / "cell_predictions.parquet")
    assert list(labels.class_names) == [c for c in cells.columns if c in labels.class_names]
    main_cells = pd.read_parquet(tmp_path / "p-main" / "cell_predictions.parquet")
    comp_cells = pd.read_parquet(tmp_path / "p-tiny" / "cell_predictions.parquet")
    cols = list(labels.class_names)
    np.testing.assert_allclose(
        cells[cols].to_numpy(),
        0.6 * main_cells[cols].to_numpy() + 0.4 * comp_cells[cols].to_numpy(),
        atol=2e-3,
    )
    (out / "ensemble.json").write_text(json.dumps(spec))

    # a rerun keeps both finished members
    stamp = {n: os.stat(out / n / "weights.safetensors").st_mtime_ns for n in (MAIN, "tiny")}
    again = train_blend(
        tiny_dataset["images"], labels, tiny_dataset["masks"], out, tiny_companion,
        cache_root=tmp_path / "cache", progress=False,
    )  # fmt: skip
    assert again["val_macro_f1"] == pytest.approx(metrics["val_macro_f1"])
    assert stamp == {n: os.stat(out / n / "weights.safetensors").st_mtime_ns for n in (MAIN, "tiny")}

    # killed while rewriting the blend files: without ensemble.json predict refuses the folder
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("hpa.aggregation.save_thresholds", killed)
    with pytest.raises(KeyboardInterrupt):
        train_blend(
            tiny_dataset["images"], labels, tiny_dataset["masks"], out, tiny_companion,
            cache_root=tmp_path / "cache", progress=False,
        )  # fmt: skip
    assert not (out / "ensemble.json").exists()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        run(out, "p-unfinished")


def test_blend_of_every_fold_writes_out_of_fold_scores(tiny_dataset, tiny_companion, tmp_path):
    labels = read_labels(tiny_dataset["labels"])
    out = tmp_path / "blend"
    metrics = train_blend(
        tiny_dataset["images"], labels, tiny_dataset["masks"], out, tiny_companion, all_folds=True,
        cache_root=tmp_path / "cache", progress=False,
    )  # fmt: skip
    assert (out / MAIN / "fold-2" / "weights.safetensors").is_file()
    assert (out / "tiny" / "oof_image_scores.csv").is_file()
    oof = pd.read_csv(out / "oof_image_scores.csv")
    assert sorted(oof["image_id"]) == sorted(labels.ids) and metrics["n_images"] == 18
    members, groups = expand_groups([out])
    assert len(groups) == sum(1 for w in metrics["blend"]["weights"].values() if w > 0)
    assert sum(m.weight for m in members) == pytest.approx(1.0)
    assert {g.pooling for g in groups} <= {TINY.pooling, TINY_COMPANION["pooling"]}


def test_cli_companion_flag(tiny_dataset, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "hpa", "train-cells", "--images", str(tiny_dataset["images"]),
           "--labels", str(tiny_dataset["labels"]), "--masks", str(tiny_dataset["masks"]), "--out", str(out),
           "--cache", str(tmp_path / "cache"), "--backbone", "test_resnet", "--crop-size", "32",
           "--companion", "scratch", "--epochs", "1", "--max-steps", "2", "--batch-size", "16",
           "--device", "cpu", "--workers", "1", "--precision", "fp32"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "blend written to" in res.stdout and "main model's share" in res.stdout
    assert (out / "scratch" / "config.json").is_file()
    assert json.loads((out / "scratch" / "config.json").read_text())["backbone"] == "resnet10t"


def test_a_blend_and_a_single_model_do_not_share_a_folder(tmp_path):
    from hpa.pipelines.train import check_model_kind

    plain, blend = tmp_path / "plain", tmp_path / "blend"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    blend.mkdir()
    (blend / "ensemble.json").write_text(
        json.dumps({"members": ["main"], "weights": [1.0], "combine": "image"})
    )
    check_model_kind(tmp_path / "new", blend=True)  # a new folder takes either
    check_model_kind(blend, blend=True)  # a rerun of the blend
    check_model_kind(plain, blend=False)
    with pytest.raises(HPAConfigError, match=r"without a companion.*--companion none"):
        check_model_kind(plain, blend=True)
    with pytest.raises(HPAConfigError, match="blended with a companion"):
        check_model_kind(blend, blend=False)
    folds = tmp_path / "folds"
    folds.mkdir()
    (folds / "ensemble.json").write_text(json.dumps({"members": ["fold-0"], "weights": [1.0]}))
    with pytest.raises(HPAConfigError, match="without a companion"):
        check_model_kind(folds, blend=True)


def test_the_cli_offers_every_companion():
    import argparse

    from hpa.cli import _add_train

    parser = argparse.ArgumentParser()
    _add_train(parser.add_subparsers())
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "train-cells"
    ]
    choices = next(a.choices for a in train._actions if a.dest == "companion")
    assert tuple(choices) == (*train_mod.COMPANIONS, train_mod.FEATURE_COMPANION, "none")


# one split: as cheap as the scratch blend test above; every fold: three trainings
@pytest.mark.parametrize("all_folds", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_features_companion_trains_blends_and_predicts(tiny_dataset, tmp_path, all_folds):
    from hpa.classification.feature_head import HEAD_FILE, feature_table, read_feature_head

    labels = read_labels(tiny_dataset["labels"])
    out = tmp_path / "blend"
    cfg = replace(TINY, companion="features", max_steps=2)
    metrics = train_blend(
        tiny_dataset["images"], labels, tiny_dataset["masks"], out, cfg, all_folds=all_folds,
        cache_root=tmp_path / "cache", progress=False,
    )  # fmt: skip
    head = read_feature_head(out / "features" / HEAD_FILE)
    assert len(head.heads) == (TINY.folds if all_folds else 1) and head.classes == labels.class_names
    assert metrics["blend"]["feature_head_C"] == [h.c for h in head.heads]
    own = "oof_image_scores.csv" if all_folds else "val_image_scores.csv"
    comp = pd.read_csv(out / "features" / own).set_index("image_id").sort_index()
    main = pd.read_csv(out / MAIN / own).set_index("image_id").sort_index()
    assert list(comp.index) == list(main.index)
    # the blend's scores are the chosen mix of the two members' held-out scores
    w = metrics["blend"]["weights"][MAIN]
    blended = pd.read_csv(out / "blend_scores.csv").set_index("image_id").sort_index()
    np.testing.assert_allclose(blended.to_numpy(), (w * main + (1 - w) * comp).to_numpy(), atol=1e-6)
    card = (out / "README.md").read_text()
    assert "features companion" in card and "feature_head.json" in card
    if all_folds:
        return
    # hpa predict: the main model's image scores blended with the head's, the blend's thresholds
    # (the weights are set here so that both members count whatever the tiny run chose)
    spec = json.loads((out / "ensemble.json").read_text())
    (out / "ensemble.json").write_text(
        json.dumps({**spec, "members": [MAIN, "features"], "weights": [0.7, 0.3]})
    )
    kw = {"masks": tiny_dataset["masks"], "workers": 1, "progress": False}
    predict_folder(tiny_dataset["images"], out, tmp_path / "p-blend", **kw)
    predict_folder(tiny_dataset["images"], out / MAIN, tmp_path / "p-main", **kw)
    got = pd.read_csv(tmp_path / "p-blend" / "image_scores.csv").set_index("image_id")
    alone = pd.read_csv(tmp_path / "p-main" / "image_scores.csv").set_index("image_id")
    ids = list(got.index)
    feats = head.scores(feature_table(tiny_dataset["images"], tiny_dataset["masks"], ids))
    np.testing.assert_allclose(got.to_numpy(), 0.7 * alone.to_numpy() + 0.3 * feats, atol=1e-5)
    np.testing.assert_allclose(
        load_thresholds(tmp_path / "p-blend" / "thresholds.json")[0],
        load_thresholds(out / "thresholds.json")[0],
    )
    # a broken head is named, not half-used
    (out / "features" / HEAD_FILE).write_text("{")
    with pytest.raises(HPAConfigError, match=r"features/feature_head.json: not valid JSON"):
        predict_folder(tiny_dataset["images"], out, tmp_path / "p-broken", **kw)
    with pytest.raises(HPAConfigError, match="predicted on its own"):
        predict_folder(tiny_dataset["images"], [out, out / MAIN], tmp_path / "p-two", **kw)
    with pytest.raises(HPAConfigError, match="blended with the features companion"):
        expand_groups([out])  # hpa.Classifier and the other users of the networks alone


def test_members_that_differ_in_their_classifier_alone_share_one_trunk(tmp_path):
    """The folds of a frozen-backbone run: the views are embedded once, each head applied to the
    features; a member with other backbone weights runs whole; the probabilities are unchanged."""
    import copy

    from hpa.classification.engine import make_engine
    from hpa.classification.ensemble import SharedTrunk

    cfg = ModelConfig(backbone="test_resnet", class_names=LABEL_SETS["2018"], label_set="2018")
    torch.manual_seed(0)
    base = create_model("test_resnet", 28).eval()
    nets = [copy.deepcopy(base) for _ in range(3)]
    for k, net in enumerate(nets):
        torch.nn.init.normal_(
            net.get_classifier().weight, std=0.5, generator=torch.Generator().manual_seed(k)
        )
    other = copy.deepcopy(base)
    with torch.no_grad():
        next(other.parameters()).add_(0.1)  # another backbone: not shared
    nets.append(other)
    ens = EnsembleNet(nets, [cfg] * 4, [0.3, 0.3, 0.2, 0.2], groups=[0, 0, 0, 1]).eval()
    assert ens.unit_members == [[0, 1, 2], [3]] and isinstance(ens.nets[0], SharedTrunk)
    x = torch.rand(3, 4, 32, 32)
    with torch.no_grad():
        alone = [torch.sigmoid(net(_prepared(ens, k, x))) for k, net in enumerate(nets)]
        out = torch.sigmoid(ens(x))
        engine = make_engine(ens, "onnxruntime", cache_dir=tmp_path)
        exported = torch.sigmoid(engine(x))
    expected = torch.cat([(0.3 * alone[0] + 0.3 * alone[1] + 0.2 * alone[2]) / 0.8, alone[3]], dim=1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(exported, expected, atol=1e-4)
    exports = sorted(p.parent.name for p in tmp_path.rglob("*.onnx"))
    assert exports == ["member-0", "member-1"]  # one export for the shared trunk
