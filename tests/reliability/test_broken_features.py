"""Issue 23, "Broken features" (items 2-5): features that failed for a user as documented.

Each test reproduces one defect of the hostile-user campaign; each failed before the fix.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import hpa_env, run_hpa, write_images, write_untrained_model

from hpa.constants import CLASS_NAMES_2018, CLASS_NAMES_2021
from hpa.io import write_label_image

# ------------------------------------------ 2. ensembles of --intensity image models ---


def _image_scaled_model(folder: Path, seed: int) -> Path:
    """A model folder as ``train-cells --intensity image`` writes it (random weights)."""
    import torch

    from hpa.aggregation import save_thresholds
    from hpa.classification.crops import CropSettings
    from hpa.classification.model import THRESHOLDS_FILE, ModelConfig, create_model, save_model_folder

    torch.manual_seed(seed)
    crop = CropSettings(crop_size=32, image_scale=True)
    config = ModelConfig("test_resnet", CLASS_NAMES_2018, "2018", crop=crop, intensity="image")
    save_model_folder(folder, config, create_model(config.backbone, config.num_classes))
    save_thresholds(folder / THRESHOLDS_FILE, np.full(len(CLASS_NAMES_2018), 0.5), CLASS_NAMES_2018)
    return folder


def test_an_ensemble_of_image_scaled_models_predicts(tiny_dataset: dict[str, Path], tmp_path: Path) -> None:
    """Was: "field 'crop.image_scale': True does not match intensity 'dataset'" (the same
    path serves a blend folder and a --folds folder: several members)."""
    from hpa.classification.ensemble import predictor_config

    a, b = _image_scaled_model(tmp_path / "a", 0), _image_scaled_model(tmp_path / "b", 1)
    cfg, _ = predictor_config([a, b])
    assert cfg.crop.image_scale and cfg.intensity == "image"
    images, seg = _two_images(tiny_dataset, tmp_path)
    out = tmp_path / "pred"
    done = run_hpa(
        "predict", images, "--model", a, "--model", b, "--masks", seg, "--out", out, "--workers", "1"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "submission.csv").read_text().count("\n") == 1 + 2


def _two_images(tiny_dataset: dict[str, Path], root: Path) -> tuple[Path, Path]:
    """``(images, SEG_DIR)`` of the first two images of the tiny dataset, copied under ``root``."""
    images, seg = root / "images", root / "seg"
    for image_id in ("img000", "img001"):
        for path in tiny_dataset["images"].glob(f"{image_id}_*.png"):
            _copy(path, images / path.name)
        for kind in ("cells", "nuclei"):
            _copy(tiny_dataset["masks"] / kind / f"{image_id}.png", seg / kind / f"{image_id}.png")
    return images, seg


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


# ------------------------------------------- 3. the Python API from a plain script ---

UNGUARDED = """\
import sys

import hpa

hpa.segment_folder(sys.argv[1], sys.argv[2], workers=2, progress=False)
print("segmented")
"""


def test_the_api_runs_from_a_script_without_the_main_guard(tmp_path: Path) -> None:
    """Was: every worker imported the script again (it has no ``if __name__ ==
    "__main__":``), the pool broke, and ``pymp-*`` folders were left in TMPDIR."""
    write_images(tmp_path / "images", 2)
    script = tmp_path / "example.py"
    script.write_text(UNGUARDED)
    tmpdir = tmp_path / "tmp"
    done = subprocess.run(
        [sys.executable, str(script), "images", "seg"],
        cwd=tmp_path, capture_output=True, text=True, env=hpa_env(tmpdir), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("segmented") == 1  # the script ran once, not again per worker
    assert sorted(p.name for p in (tmp_path / "seg" / "cells").iterdir()) == ["s00.png", "s01.png"]
    assert not list(tmpdir.glob("pymp-*"))


def test_the_readme_example_shows_the_main_guard() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("### Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'if __name__ == "__main__":' in example


# ------------------------------------- 4. a run in the 2021 format only; 5. pred/geojson ---


@pytest.fixture(scope="module")
def run_2021(tiny_dataset: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PRED_DIR of ``hpa predict --format 2021`` (no ``submission.csv``) of two images."""
    from hpa.pipelines.predict import predict_folder

    root = tmp_path_factory.mktemp("run2021")
    images, seg = _two_images(tiny_dataset, root)
    model = write_untrained_model(root / "model")
    out = root / "pred"
    predict_folder(images, model, out, masks=seg, workers=1, progress=False, fmt="2021")
    assert not (out / "submission.csv").exists() and (out / "submission_2021.csv").is_file()
    return out


def test_a_2021_only_run_exports_and_opens_in_napari(run_2021: Path, tmp_path: Path) -> None:
    """Was: "missing submission.csv: the run has the 2021 format only; use --scheme 2021",
    a flag ``hpa export`` did not have; napari's reader failed the same way."""
    from hpa.interop.napari import get_reader

    done = run_hpa("export", run_2021, "--to", "geojson", "--out", tmp_path / "geojson")
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads((tmp_path / "geojson" / "img000.geojson").read_text())
    assert written["features"], "no cell exported"
    assert all("classification" not in f["properties"] or f["properties"]["classification"]["name"]
               in CLASS_NAMES_2021 for f in written["features"])  # fmt: skip
    done = run_hpa("export", run_2021, "--to", "geojson", "--scheme", "2021", "--out", tmp_path / "again")
    assert done.returncode == 0, done.stderr[-2000:]
    reader = get_reader(str(run_2021))
    assert reader is not None
    layers = reader(str(run_2021))
    assert [kind for _, _, kind in layers] == ["image"] * 4 + ["labels"]
    assert set(CLASS_NAMES_2021) <= set(layers[-1][1]["features"].columns)


def test_the_readme_export_into_the_run_folder_works(tmp_path: Path) -> None:
    """Was: ``hpa export pred/ --to geojson --out pred/geojson`` refused as inside its input.
    The run itself and its masks stay refused."""
    from interop.runs import cell_probabilities, synthetic_cells, write_run

    cells, nuclei = synthetic_cells()
    write_label_image(tmp_path / "seg" / "cells" / "syn.png", cells)
    write_label_image(tmp_path / "seg" / "nuclei" / "syn.png", nuclei)
    pred = write_run(
        tmp_path / "pred", tmp_path / "images", tmp_path / "seg", {"syn": cell_probabilities(cells, 0)}
    )
    done = run_hpa("export", pred, "--to", "geojson", "--out", pred / "geojson")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (pred / "geojson" / "syn.geojson").is_file()
    for out in (pred, tmp_path / "seg" / "cells", tmp_path / "seg" / "gj"):
        done = run_hpa("export", pred, "--to", "geojson", "--out", out)
        assert done.returncode == 1 and "--out" in done.stderr and "Traceback" not in done.stderr
