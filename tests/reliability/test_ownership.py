"""Issue 23, "hpa writes only what it owns": no command replaces a file it did not write.

Every command that writes into a folder it does not replace whole claims its names
first (:func:`hpa.outputs.claim_entries`): a user's file of one of those names is
refused, untouched; a rerun into hpa's own folder goes on. Each refusal test failed
before the fix (the file was replaced).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from interop.runs import cell_probabilities, synthetic_cells, write_run
from reliability_helpers import digests, write_images

from hpa.cli import main as hpa_main
from hpa.constants import CHANNELS
from hpa.io import write_label_image, write_png

TINY = ["--backbone", "resnet10t", "--crop-size", "32", "--epochs", "1", "--workers", "1"]


def _refused(argv: list[str], caplog: pytest.LogCaptureFixture, *words: str) -> None:
    """``hpa ARGV`` exits 1 with one error line that holds every word."""
    caplog.clear()
    assert hpa_main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for word in ("was not written by hpa", "choose another", *words):
        assert word in errors[0], errors[0]


def _user_file(path: Path, text: str = "my own file\n") -> dict[str, str]:
    """A user's file at ``path``; returns the digests of its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return digests(path.parent)


@pytest.fixture(scope="module")
def pred(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PRED_DIR of one synthetic image ``syn``, with its images and masks."""
    import numpy as np

    root = tmp_path_factory.mktemp("own")
    cells, nuclei = synthetic_cells()
    image = np.random.default_rng(0).integers(0, 250, (*cells.shape, 4)).astype(np.uint8)
    for c, name in enumerate(CHANNELS):
        write_png(root / "images" / f"syn_{name}.png", image[..., c])
    write_label_image(root / "seg" / "cells" / "syn.png", cells)
    write_label_image(root / "seg" / "nuclei" / "syn.png", nuclei)
    return write_run(root / "pred", root / "images", root / "seg", {"syn": cell_probabilities(cells, 0)})


@pytest.mark.parametrize(("to", "name"), [("geojson", "syn.geojson"), ("ome-zarr", "syn.ome.zarr")])
def test_export_never_replaces_a_users_file(
    pred: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, to: str, name: str
) -> None:
    out = tmp_path / "exports"
    if to == "ome-zarr":
        pytest.importorskip("zarr")
    _user_file(out / name / "notes.txt" if name.endswith(".zarr") else out / name)
    before = digests(out)
    _refused(["export", str(pred), "--to", to, "--out", str(out)], caplog, name, "hpa export")
    assert digests(out) == before
    mine = tmp_path / "mine"
    for _ in range(2):  # a rerun into its own folder replaces its own file
        assert hpa_main(["export", str(pred), "--to", to, "--out", str(mine)]) == 0
    assert (mine / name).exists()


def test_show_never_replaces_a_users_png(
    pred: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "figures"
    before = _user_file(out / "syn.png", "not a png of hpa's\n")
    images = str(pred.parent / "images")
    _refused(["show", images, "--pred", str(pred), "--out", str(out)], caplog, "syn.png", "hpa show")
    assert digests(out) == before
    for _ in range(2):
        assert hpa_main(["show", images, "--pred", str(pred), "--out", str(tmp_path / "overlays")]) == 0
    assert (tmp_path / "overlays" / "syn.png").is_file()


def test_segment_never_replaces_a_users_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path / "images", 1)
    out = tmp_path / "work"
    before = _user_file(out / "config.yaml", "my: settings\n")
    _refused(["segment", str(tmp_path / "images"), "--out", str(out)], caplog, "config.yaml", "hpa segment")
    assert digests(out) == before
    seg = tmp_path / "seg"
    for _ in range(2):  # the rerun resumes its own folder
        assert hpa_main(["segment", str(tmp_path / "images"), "--out", str(seg), "--workers", "1"]) == 0
    assert (seg / "cells" / "s00.png").is_file()


def test_synth_never_replaces_a_users_labels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "project"
    before = _user_file(out / "train.csv", "Id,Target\nmine,0\n")
    argv = ["--n-train", "2", "--n-test", "1", "--size", "64", "--workers", "1"]
    _refused(["synth", str(out), *argv], caplog, "train.csv", "hpa synth")
    assert digests(out) == before
    for _ in range(2):
        assert hpa_main(["synth", str(tmp_path / "data"), *argv]) == 0
    assert (tmp_path / "data" / "train.csv").read_text().count("\n") == 3


@pytest.mark.parametrize("kind", [[], ["--companion", "none"], ["--companion", "none", "--folds", "2"]])
def test_train_cells_never_replaces_a_users_readme(
    tiny_dataset: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: list[str]
) -> None:
    """The model card is README.md: a blend, a plain and a --folds run refuse a user's."""
    out = tmp_path / "project"
    before = _user_file(out / "README.md", "# my project\n")
    data = ["--images", str(tiny_dataset["images"]), "--labels", str(tiny_dataset["labels"])]
    argv = ["train-cells", *data, "--masks", str(tiny_dataset["masks"]), "--out", str(out), *TINY, *kind]
    _refused(argv, caplog, "README.md", "hpa train-cells")
    assert digests(out) == before


def test_train_cells_reruns_into_its_own_folder(
    tiny_dataset: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "model"
    data = ["--images", str(tiny_dataset["images"]), "--labels", str(tiny_dataset["labels"])]
    argv = ["train-cells", *data, "--masks", str(tiny_dataset["masks"]), "--out", str(out), *TINY]
    for _ in range(2):
        assert hpa_main([*argv, "--companion", "none", "--cache", str(tmp_path / "cache")]) == 0
    assert "# " in (out / "README.md").read_text()


def test_a_folder_of_an_earlier_hpa_is_adopted_not_refused(tmp_path: Path) -> None:
    """A folder written before the written-entries record (it holds hpa's run.log) keeps
    working: its entries are taken as hpa's; a folder without such a file is refused."""
    from hpa.errors import HPAConfigError
    from hpa.outputs import WRITTEN_RECORD, claim_entries, written_entries

    old = tmp_path / "old-model"
    old.mkdir()
    (old / "run.log").write_text("hpa train-cells ...\n")
    (old / "README.md").write_text("model card of an earlier hpa\n")
    claim_entries(old, ["README.md", "run.log", "config.json"], "hpa train-cells")
    assert (old / WRITTEN_RECORD).is_file()
    assert {"README.md", "run.log", "config.json"} <= written_entries(old)

    user = tmp_path / "user-folder"
    user.mkdir()
    (user / "README.md").write_text("mine\n")
    with pytest.raises(HPAConfigError, match=r"README\.md was not written by hpa"):
        claim_entries(user, ["README.md"], "hpa train-cells")
