"""Issue 23, "Broken features" (items 2-5): features that failed for a user as documented.

Each test reproduces one defect of the hostile-user campaign; each failed before the fix.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import hpa_env, run_hpa, write_images

from hpa.constants import CLASS_NAMES_2018

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
    images, seg = tmp_path / "images", tmp_path / "seg"
    for image_id in ("img000", "img001"):  # two images are enough
        for path in tiny_dataset["images"].glob(f"{image_id}_*.png"):
            _copy(path, images / path.name)
        for kind in ("cells", "nuclei"):
            _copy(tiny_dataset["masks"] / kind / f"{image_id}.png", seg / kind / f"{image_id}.png")
    out = tmp_path / "pred"
    done = run_hpa(
        "predict", images, "--model", a, "--model", b, "--masks", seg, "--out", out, "--workers", "1"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "submission.csv").read_text().count("\n") == 1 + 2


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

