"""hpa export-model --to bioimageio: a trained model as a bioimage.io resource, checked by bioimageio.core.

Tiny models are trained on the drawn dataset (``tiny_dataset``); the export's test tensors
are cells of the real sample shipped in data/. ``bioimageio.core``'s own model test runs
on each export with every network connection refused, so it passes offline.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hpa.classification.channels import channel_matrix, is_identity
from hpa.classification.inference import score_views
from hpa.classification.model import load_model
from hpa.classification.train import TrainConfig
from hpa.cli import main as cli_main
from hpa.errors import HPAConfigError
from hpa.io import read_labels
from hpa.pipelines.train import train_model

pytest.importorskip("bioimageio.core")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from hpa.interop import bioimageio as bio


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every network connection (a test that needs one fails)."""

    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(f"network use in an offline test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


#: The two tiny models: hpa's default intensity, and per-view intensity with three merged
#: input channels and crops upsampled to the network side (the CPU default recipe's shape).
RECIPES = {
    "dataset": dict(intensity="dataset"),
    "view": dict(intensity="view", channels="green,red+yellow,blue", input_size=40),
}


@pytest.fixture(scope="module")
def models(tiny_dataset: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bio-models")
    out = {}
    for name, extra in RECIPES.items():
        cfg = TrainConfig(
            backbone="test_resnet", crop_size=32, epochs=1, batch_size=16, folds=3, workers=1, **extra
        )
        train_model(
            tiny_dataset["images"],
            read_labels(tiny_dataset["labels"]),
            tiny_dataset["masks"],
            root / name,
            cfg,
            cache_root=root / "cache",
            progress=False,
        )
        out[name] = root / name
    return out


def hpa_scores(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """hpa's own scores of every cell of the shipped sample, and the export's input of the same cells."""
    from hpa.classification.cache import image_views
    from hpa.io import read_label_image, read_sample

    net, cfg = load_model(folder)
    image = read_sample(bio.SAMPLES / "images", bio.SAMPLE_ID)
    cells = read_label_image(bio.SAMPLES / "reference-masks" / f"{bio.SAMPLE_ID}_cellmask.png")
    crops = image_views(image, cells, bio.SAMPLE_ID, cfg.crop).crops
    mix = None if is_identity(cfg.channels) else channel_matrix(cfg.channels)
    probs = score_views(
        net, crops, cfg.mean, cfg.std, 255.0, mix=mix, intensity=cfg.intensity, size=cfg.input_size,
        precision="fp32",
    )  # fmt: skip
    return probs, bio.sample_views(cfg, None)[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_export_passes_bioimageio_model_test_and_scores_as_hpa(
    models: dict[str, Path], recipe: str, tmp_path: Path, offline: None
) -> None:
    folder = models[recipe]
    out = tmp_path / "export"
    rdf = bio.export_bioimageio(folder, out, authors=["A. Tester"], package=True)
    assert rdf == out / "rdf.yaml"
    # the zoo's own checks: the description validates and the model test passes
    summary = bio.run_model_test(rdf)
    assert summary.status == "passed", summary.format()
    assert bio.run_model_test(out / bio.PACKAGE).status == "passed"  # the zipped package too
    descr = yaml.safe_load(rdf.read_text())  # export_bioimageio loaded it with bioimageio.spec
    assert str(descr["format_version"]).startswith("0.5") and descr["type"] == "model"
    cfg = json.loads((folder / "config.json").read_text())
    (inp,), (outp,) = descr["inputs"], descr["outputs"]
    size = cfg["crop"]["crop_size"]  # 32: the 'view' model upsamples to 40 px inside the network
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert [a.get("id") for a in inp["axes"][2:]] == ["y", "x"]
    assert inp["axes"][1]["channel_names"] == ["red", "green", "blue", "yellow"]
    assert inp["axes"][2]["size"] == size and inp["axes"][3]["size"] == size
    steps = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]  # the spec adds float32 casts
    assert steps == [{"id": "scale_linear", "kwargs": {"gain": 1 / 255, "offset": 0.0}}]
    assert outp["axes"][1]["channel_names"] == cfg["class_names"]
    assert descr["license"] == "MIT" and descr["cite"][0]["doi"] == bio.CITATIONS["2018"][1]
    assert [a["name"] for a in descr["authors"]] == ["A. Tester"]
    attached = sorted(a["source"] for a in descr["attachments"])
    assert attached == sorted([bio.THRESHOLDS, bio.HPA_CONFIG, "provenance.json"])
    assert set(descr["weights"]) == {"onnx", "torchscript"}
    assert json.loads((out / bio.THRESHOLDS).read_text()) == json.loads(
        (folder / "thresholds.json").read_text()
    )
    assert json.loads((out / bio.HPA_CONFIG).read_text())["pooling"] == cfg["pooling"]
    assert (out / bio.COVER).stat().st_size > 0 and (out / bio.DOCUMENTATION).read_text().startswith("# ")
    record = json.loads((out / "provenance.json").read_text())
    assert record["kind"] == "bioimageio" and record["inputs"]["model"][0]["path"] == str(folder.resolve())

    # the exported networks score the shipped sample's cells as hpa does
    import onnxruntime

    want, views = hpa_scores(folder)
    x = (views / 255.0).astype(np.float32)
    session = onnxruntime.InferenceSession(str(out / bio.ONNX))
    onnx_probs = session.run(None, {bio.INPUT_ID: x})[0]
    with pytest.warns(FutureWarning):  # torch.jit.load is deprecated in torch 2.14
        traced = torch.jit.load(str(out / bio.TORCHSCRIPT))
    with torch.no_grad():
        ts_probs = traced(torch.from_numpy(x)).numpy()
    assert onnx_probs.shape == want.shape == (19, 28)
    np.testing.assert_allclose(onnx_probs, want, atol=1e-4)
    np.testing.assert_allclose(ts_probs, want, atol=1e-4)
    np.testing.assert_array_equal(np.load(out / bio.TEST_INPUT), views[: bio.TEST_CELLS])

    # a second export replaces the first; a folder hpa did not write is refused
    bio.export_bioimageio(folder, out, test=False)
    assert not (out / bio.PACKAGE).exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(HPAConfigError, match="did not write"):
        bio.export_bioimageio(folder, mine, test=False)
    assert (mine / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_blend_and_folds_folders_export_their_main_member_and_say_so(
    models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the layout hpa.pipelines.blend writes: members side by side and ensemble.json
    blend = tmp_path / "blend"
    shutil.copytree(models["view"], blend / "main")
    shutil.copytree(models["dataset"], blend / "scratch")
    spec = {"combine": "image", "members": ["main", "scratch"], "weights": [0.7, 0.3]}
    (blend / "ensemble.json").write_text(json.dumps(spec))
    shutil.copyfile(models["view"] / "thresholds.json", blend / "thresholds.json")

    with caplog.at_level(logging.INFO, logger="hpa.interop.bioimageio"):
        rdf = bio.export_bioimageio(blend, tmp_path / "out", test=False)
    assert "member main (the default)" in caplog.text and "main, scratch" in caplog.text
    descr = yaml.safe_load(rdf.read_text())
    assert "member main" in descr["description"] and "blend" in descr["description"]
    exported = json.loads((tmp_path / "out" / bio.HPA_CONFIG).read_text())
    assert exported == json.loads((models["view"] / "config.json").read_text())

    other = bio.export_bioimageio(blend, tmp_path / "out2", member="scratch", test=False)
    assert "member scratch (chosen with --member)" in yaml.safe_load(other.read_text())["description"]
    with pytest.raises(HPAConfigError, match="its models are main, scratch"):
        bio.resolve_member(blend, "nope")

    # a --folds folder (ensemble.json without "combine"): its first fold, or the one asked for
    folds = tmp_path / "folds"
    for k, name in enumerate(("view", "dataset")):
        shutil.copytree(models[name], folds / f"fold-{k}")
    (folds / "ensemble.json").write_text(json.dumps({"members": ["fold-0", "fold-1"], "weights": [1, 1]}))
    first = bio.resolve_member(folds)
    assert (first.name, first.kind) == ("fold-0", "model-folds") and "--folds" in first.description
    assert bio.resolve_member(folds, "fold-1").folder == folds / "fold-1"
    # a blend whose main member is a --folds folder: that folder's first fold
    (blend / "main").rename(tmp_path / "old-main")
    shutil.copytree(folds, blend / "main")
    assert bio.resolve_member(blend).name == "main/fold-0"
    assert bio.resolve_member(blend, "main").name == "main/fold-0"
    assert bio.plain_members(blend) == ["main/fold-0", "main/fold-1", "scratch"]


@pytest.mark.slow
def test_member_all_exports_every_network_of_a_blend_and_says_which(
    models: dict[str, Path], tmp_path: Path, offline: None
) -> None:
    """A blend whose main member is a --folds folder and whose companion is a feature head:
    ``--member all`` writes one resource per network, nested as the members are."""
    blend = tmp_path / "blend"
    for k, name in enumerate(("view", "dataset")):
        shutil.copytree(models[name], blend / "main" / f"fold-{k}")
    (blend / "main" / "ensemble.json").write_text(
        json.dumps({"members": ["fold-0", "fold-1"], "weights": [1, 1]})
    )
    shutil.copytree(models["dataset"], blend / "scratch")
    (blend / "features").mkdir()
    (blend / "features" / "feature_head.json").write_text("{}")  # no network: skipped
    spec = {"combine": "image", "members": ["main", "scratch", "features"], "weights": [0.5, 0.3, 0.2]}
    (blend / "ensemble.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    argv = [
        "export-model",
        str(blend),
        "--to",
        "bioimageio",
        "--out",
        str(out),
        "--member",
        "all",
        "--no-test",
    ]
    assert cli_main(argv) == 0
    networks = ["main/fold-0", "main/fold-1", "scratch"]
    index = json.loads((out / bio.INDEX).read_text())
    assert index["exported"] == {m: f"{m}/rdf.yaml" for m in networks}
    assert list(index["skipped"]) == ["features"] and index["kind"] == "blend"
    assert sorted(p.name for p in out.iterdir()) == sorted([bio.MARKER, bio.INDEX, "main", "scratch"])
    for member, source in zip(networks, ("view", "dataset", "dataset")):
        descr = yaml.safe_load((out / member / "rdf.yaml").read_text())
        assert f"member {member} (chosen with --member)" in descr["description"]
        assert f"({member.replace('/', '-')})" in descr["name"]  # names differ in the zoo
        assert json.loads((out / member / bio.HPA_CONFIG).read_text()) == json.loads(
            (models[source] / "config.json").read_text()
        )
    assert bio.run_model_test(out / "main" / "fold-1" / "rdf.yaml").status == "passed"
    # a rerun replaces it; a single export may replace it too (and the other way round)
    assert cli_main([*argv[:-3], "--no-test"]) == 0
    assert (out / "rdf.yaml").is_file() and not (out / "main").exists()
    with pytest.raises(HPAConfigError, match="a feature head"):
        bio.resolve_member(blend, "features")


def test_member_all_of_a_single_network_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(HPAConfigError, match="is one network, not a blend or --folds folder"):
        bio.export_members(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_model_folder_is_refused_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(HPAConfigError, match="not found"):
        bio.resolve_member(tmp_path / "missing")
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "submission.csv").write_text("Id,Predicted\n")
    with pytest.raises(HPAConfigError, match=r"pred: not a model folder \(no config.json or ensemble.json\)"):
        bio.export_bioimageio(tmp_path / "pred", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # the command line says it in one line and exits 1
    argv = ["export-model", str(tmp_path / "pred"), "--to", "bioimageio", "--out", str(tmp_path / "out")]
    with caplog.at_level(logging.ERROR):
        assert cli_main(argv) == 1
    assert "not a model folder" in caplog.text


def test_a_missing_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "bioimageio.core", None)  # import fails as when not installed
    with pytest.raises(
        HPAConfigError, match=r"needs bioimageio.core .*pip install 'hpa-cells\[bioimageio\]'"
    ):
        bio.require_bioimageio()
