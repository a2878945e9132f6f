"""``hpa demo``: the whole pipeline on built-in data, in minutes on a laptop CPU.

1. ``hpa synth``: a small synthetic dataset with known per-cell truth;
2. ``hpa segment``: cells and nuclei of its training and test images;
3. ``hpa train-cells``: a small classifier (the device's default configuration, fewer
   epochs on CPU);
4. ``hpa predict`` on the test images, then ``hpa evaluate`` against their truth;
5. ``hpa report``: the browsable report of the test predictions;
6. the same model applied to the real HPA samples shipped in ``data/`` (trained on
   synthetic images only, so these calls show the pipeline on real pixels; they are
   not a measure of accuracy).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from hpa import runlog
from hpa.artefacts import PredDir
from hpa.artefacts.folder import SETTINGS_FILE
from hpa.config import check_count, log_settings, resolve, resolve_device, save_yaml, to_dict

log = logging.getLogger(__name__)

#: The real samples that ship with the package (2 HPA images at 512 px).
SHIPPED_SAMPLES = Path(__file__).resolve().parents[2] / "data" / "hpa-samples"
#: Epochs of the demo's CPU run: enough to learn the common classes in a few minutes.
CPU_DEMO_EPOCHS = 10
#: The demo's resolved settings, saved in its output folder.
DEMO_CONFIG = SETTINGS_FILE


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``hpa demo`` (``--config`` YAML, then flags).

    Attributes:
        n_train, n_test: synthetic training and test images.
        epochs: training epochs; None = :data:`CPU_DEMO_EPOCHS` on CPU, the device default on GPU.
        seed: the synthetic data's seed and the training seed.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    n_train: int = 240
    n_test: int = 60
    epochs: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_count(self.n_train, "n_train")
        check_count(self.n_test, "n_test")
        check_count(self.epochs, "epochs", optional=True)
        check_count(self.seed, "seed", minimum=0)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")


def run_demo(
    out: str | Path,
    n_train: int = 240,
    n_test: int = 60,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Path | float]:
    """Run every stage and return where the outputs are, plus the test macro F1."""
    from hpa.artefacts.provenance import differences, read_record
    from hpa.classification.train import TrainConfig
    from hpa.config import default_workers
    from hpa.io import read_id_list, read_labels
    from hpa.outputs import check_apart
    from hpa.pipelines.evaluate import evaluate
    from hpa.pipelines.predict import predict_folder
    from hpa.pipelines.segment import segment_folder
    from hpa.pipelines.train import masked_ids
    from hpa.pipelines.train_command import plan_for_size, train_cells
    from hpa.synthetic import write_dataset
    from hpa.synthetic.dataset import synth_record

    t0 = time.perf_counter()
    check_apart(out, {"(the shipped samples)": SHIPPED_SAMPLES})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runlog.write_into(out)
    save_yaml(out / DEMO_CONFIG, to_dict(DemoConfig(n_train, n_test, epochs, seed, device)))
    device = resolve_device(device)
    data = out / "data"
    log.info("[1/6] synthesising %d training and %d test images in %s", n_train, n_test, data)
    # an earlier demo's data is reused only when drawn with these settings; write_dataset
    # refuses data of other settings and draws again where a run stopped before its labels
    recorded = read_record(data) if (data / "test_labels.csv").is_file() else None
    if recorded is None or differences(recorded, synth_record(n_train, n_test, seed)):
        write_dataset(data, n_train, n_test, seed=seed, workers=default_workers())
    log.info("[2/6] segmenting cells and nuclei")
    segment_folder(data / "train", out / "seg" / "train")
    segment_folder(data / "test", out / "seg" / "test")
    log.info("[3/6] training the classifier on %s", device)
    epochs = epochs or (CPU_DEMO_EPOCHS if device == "cpu" else None)
    cfg = TrainConfig.for_device(device, source="demo", seed=seed, **({"epochs": epochs} if epochs else {}))
    model = out / "model"
    train_labels = read_labels(data / "train.csv")
    n_masked = len(masked_ids(train_labels, out / "seg" / "train"))
    cfg, every_fold = plan_for_size(cfg, n_masked, all_folds=False, given=())
    train_cells(data / "train", train_labels, out / "seg" / "train", model, cfg, all_folds=every_fold)
    log.info("[4/6] predicting the test images")
    pred = out / "pred"
    predict_folder(
        data / "test",
        model,
        pred,
        masks=out / "seg" / "test",
        ids=read_id_list(data / "sample_submission.csv"),
        device=device,
    )
    result = evaluate(pred / PredDir.SUBMISSION, data / "test_labels.csv")
    from hpa.config import save_json

    save_json(out / "evaluation.json", result)
    log.info("[5/6] writing the report")
    report = _report(pred, data / "test", data / "test_labels.csv")
    real_pred = out / "pred-real"
    if (SHIPPED_SAMPLES / "images").is_dir():
        log.info("[6/6] the same model on the real HPA samples in %s", SHIPPED_SAMPLES)
        predict_folder(SHIPPED_SAMPLES / "images", model, real_pred, device=device)
    else:
        log.info("[6/6] no shipped real samples found at %s; skipped", SHIPPED_SAMPLES)
    labels = read_labels(data / "test_labels.csv")
    return {
        "out": out,
        "model": model,
        "pred": pred,
        "report": report,
        "pred_real": real_pred,
        "macro_f1": float(result["macro_f1"]),
        "n_test": len(labels),
        "seconds": time.perf_counter() - t0,
    }


def _report(pred: Path, images: Path, labels: Path) -> Path:
    from hpa.pipelines.visualize import make_report

    return make_report(pred, images, labels)


def resolve_demo_config(args: argparse.Namespace) -> DemoConfig:
    """The run's :class:`DemoConfig`: defaults, then ``--config`` YAML, then explicit flags."""
    flags = {k: getattr(args, k) for k in ("n_train", "n_test", "epochs", "seed", "device")}
    return resolve(DemoConfig, args.config, **flags)


def main(args: argparse.Namespace) -> tuple[int, str]:
    """Entry point of ``hpa demo``: status and the summary of where the outputs are."""
    cfg = resolve_demo_config(args)
    log_settings("demo settings", to_dict(cfg))
    res = run_demo(args.out, cfg.n_train, cfg.n_test, cfg.epochs, cfg.seed, cfg.device)
    lines = [
        f"\nhpa demo finished in {res['seconds']:.0f} s. Outputs in {res['out']}/:",
        "  data/           synthetic dataset (train/, test/, train.csv, test_labels.csv, truth/)",
        "  seg/            cell and nucleus masks (hpa segment)",
        "  model/          trained classifier (hpa train-cells)",
        "  pred/           submission.csv, cell_predictions.parquet, image_scores.csv (hpa predict)",
        "  pred-real/      predictions on the real HPA samples shipped in data/",
        f"  report:         {res['report']}",
        f"test macro F1 over {res['n_test']} images: {res['macro_f1']:.3f} (evaluation.json)",
    ]
    return 0, "\n".join(lines)
