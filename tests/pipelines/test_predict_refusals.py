"""Every refusal of a predict setting by ``hpa predict`` is a refusal by the API too.

One table, :data:`REFUSALS`: a bad value of each setting, as the command gets it (flags,
or a ``--config`` YAML file where no flag can carry it) and as the API does
(:func:`hpa.predict_folder` and, for the settings it takes, :class:`hpa.Classifier`).
The command must refuse it naming the flag (or the file); the API must refuse it with
an :class:`HPAConfigError` naming its own argument, not the flag, before writing
anything. :func:`test_every_predict_setting_has_a_refusal` fails when
:class:`PredictConfig` gains a setting the table does not cover.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from reliability_helpers import cli_refusal

import hpa
from hpa.errors import HPAConfigError
from hpa.pipelines.predict_config import PredictConfig

#: The API arguments whose names differ from the setting's.
API_NAMES = {"predict_folder": {"format": "fmt"}, "from_folder": {"model_weights": "weights"}}


@dataclass(frozen=True)
class Refusal:
    """A refused value of one setting, as the command and the API get it.

    Attributes:
        setting: the :class:`PredictConfig` field (or the run input) refused.
        api: the ``hpa.predict_folder`` arguments; the command's flags are made from them
            (``fmt`` -> ``--format``), unless ``yaml`` is given.
        yaml: settings the command gets from a ``--config`` file instead of flags.
        classifier: the :class:`hpa.Classifier` method (``from_folder`` or ``predict``)
            that takes the setting, with these arguments; None where it takes none.
        models: how many times the model folder is given.
    """

    setting: str
    api: dict[str, Any]
    yaml: dict[str, Any] | None = None
    classifier: tuple[str, dict[str, Any]] | None = None
    models: int = 1

    @property
    def id(self) -> str:
        return f"{self.setting}=" + ",".join(f"{v}" for v in self.api.values())

    def argv(self, yaml_file: Path) -> list[str]:
        if self.yaml is not None:
            yaml_file.write_text(yaml.safe_dump(self.yaml))
            return ["--config", str(yaml_file)]
        argv = []
        for name, value in self.api.items():
            flag = "--" + {"fmt": "format"}.get(name, name).replace("_", "-")
            argv += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
        return argv


REFUSALS = [
    Refusal("tta", {"tta": 3}, classifier=("predict", {"tta": 3})),
    Refusal("tta", {"tta": "2"}, yaml={"tta": "2"}, classifier=("predict", {"tta": "2"})),
    Refusal("pooling", {"pooling": "median"}),
    Refusal("fill_top", {"fill_top": "yes"}, yaml={"fill_top": "yes"}),
    Refusal("batch_size", {"batch_size": 0}),
    Refusal("batch_size", {"batch_size": -4}),
    Refusal("device", {"device": "tpu"}, classifier=("from_folder", {"device": "tpu"})),
    Refusal("precision", {"precision": "fp16"}, classifier=("from_folder", {"precision": "fp16"})),
    Refusal("engine", {"engine": "tensorrt"}, classifier=("from_folder", {"engine": "tensorrt"})),
    Refusal("workers", {"workers": 0}),
    Refusal("workers", {"workers": 1.5}, yaml={"workers": 1.5}),
    Refusal("backend", {"backend": "stardist"}),
    Refusal("format", {"fmt": "2019"}),
    Refusal("cell_score", {"cell_score": "best"}),
    Refusal("min_cell_score", {"min_cell_score": 7.5}),
    Refusal("min_cell_score", {"min_cell_score": -0.1}),
    Refusal("min_cell_score", {"fmt": "2018", "min_cell_score": 0.2}),
    Refusal("cell_score", {"fmt": "2018", "cell_score": "cell"}),
    Refusal("model_weights", {"model_weights": [0]}, classifier=("from_folder", {"weights": [0]})),
    Refusal(
        "model_weights",
        {"model_weights": [-1, 2]},
        classifier=("from_folder", {"weights": [-1, 2]}),
        models=2,
    ),
    Refusal(
        "model_weights", {"model_weights": [0.5, 0.5]}, classifier=("from_folder", {"weights": [0.5, 0.5]})
    ),
    Refusal("scheduler", {"scheduler": "local:0"}),
    Refusal("scheduler", {"scheduler": "local:1"}, models=2),
]


def test_every_predict_setting_has_a_refusal() -> None:
    covered = {r.setting for r in REFUSALS}
    missing = {f.name for f in dataclasses.fields(PredictConfig)} - covered
    assert not missing, f"add a row to REFUSALS for each new predict setting: {sorted(missing)}"


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.id for r in REFUSALS])
def test_the_api_refuses_what_the_cli_refuses(
    refusal: Refusal,
    tiny_dataset: dict[str, Path],
    tiny_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
) -> None:
    if refusal.setting == "scheduler":
        pytest.importorskip("distributed")
    images, masks, out = tiny_dataset["images"], tiny_dataset["masks"], tmp_path / "pred"
    models = [str(tiny_model)] * refusal.models
    argv = ["predict", str(images), *(a for m in models for a in ("--model", m)), "--masks", str(masks)]
    message = cli_refusal(
        [*argv, "--out", str(out), *refusal.argv(tmp_path / "settings.yaml")], caplog, capsys
    )
    named = str(tmp_path / "settings.yaml") if refusal.yaml else "--" + refusal.setting.replace("_", "-")
    assert named in message, message
    assert not out.exists()

    api_name = API_NAMES["predict_folder"].get(refusal.setting, refusal.setting)
    with pytest.raises(HPAConfigError) as raised:
        hpa.predict_folder(
            images, models, out, masks=masks, **{"workers": 1, "progress": False, **refusal.api}
        )
    text = str(raised.value)
    assert text.startswith("hpa.predict_folder: ") and f"{api_name}=" in text and "--" not in text, text
    assert not out.exists()

    if refusal.classifier is not None:
        method, arguments = refusal.classifier
        with pytest.raises(HPAConfigError) as raised:
            if method == "from_folder":
                folder = models if len(models) > 1 else tiny_model
                hpa.Classifier.from_folder(folder, **{"device": "cpu", **arguments})
            else:
                classifier = hpa.Classifier.from_folder(tiny_model, device="cpu")
                classifier.predict(np.zeros((64, 64, 4), np.uint8), **arguments)
        text = str(raised.value)
        (argument,) = arguments
        assert text.startswith(f"hpa.Classifier.{method}: {argument}="), text
        assert "--" not in text, text
