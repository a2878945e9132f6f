"""The ``hpa`` command: one entry point, one subcommand per stage.

The parser lives here alone and imports nothing heavy: torch, timm and cellpose are
imported inside the subcommand that needs them, so ``hpa --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from hpa import __version__

log = logging.getLogger("hpa")

# subcommand -> "module:function" called with the parsed arguments
_HANDLERS = {
    "synth": "hpa.synthetic.dataset:main",
    "segment": "hpa.pipelines.segment:main",
    "train-cells": "hpa.pipelines.train:main",
    "predict": "hpa.pipelines.predict:main",
    "evaluate": "hpa.pipelines.evaluate:main",
    "show": "hpa.pipelines.visualize:show_main",
    "report": "hpa.pipelines.visualize:report_main",
    "demo": "hpa.pipelines.demo:main",
}

_FMT = argparse.ArgumentDefaultsHelpFormatter

_PRECISIONS = ("auto", "bf16", "fp32")
_PRECISION_HELP = (
    "autocast precision; auto = bf16 where the device computes it natively (CUDA, AVX512-BF16 CPUs)"
)
_SCHEDULER_HELP = (
    "dask.distributed scheduler address (tcp://host:8786), or local:N for a LocalCluster "
    "of N worker processes; default: no Dask"
)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic HPA-like dataset with ground-truth masks and labels",
        formatter_class=_FMT,
    )
    p.add_argument("out", help="output folder (train/, test/, train.csv, truth/, ...)")
    p.add_argument("--n-train", type=int, default=40, help="training images")
    p.add_argument("--n-test", type=int, default=10, help="test images")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="PNG bit depth")
    p.add_argument("--workers", type=int, default=1, help="worker processes")


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="find cells and nuclei from the reference channels (never green)",
        formatter_class=_FMT,
    )
    p.add_argument("images", help="folder of <Id>_<color>.png channel files")
    p.add_argument("--out", required=True, help="output folder SEG_DIR")
    p.add_argument(
        "--backend",
        choices=("watershed", "cellpose"),
        default=None,
        help="segmentation backend (default: the --config file's, else watershed)",
    )
    p.add_argument("--ids", help="CSV whose first column lists the Ids to segment (default: all)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None, help=_SCHEDULER_HELP)
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None, help="cellpose device (default: auto)"
    )
    p.add_argument("--config", help="YAML file of segmentation settings (see SEG_DIR/config.yaml)")
    p.add_argument(
        "--cellpose-model",
        default=None,
        help="cellpose cytoplasm model name or weights file (default: cyto3)",
    )
    p.add_argument(
        "--cellpose-nuclei-model",
        default=None,
        help="cellpose nuclei model name or weights file (default: nuclei)",
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-cells",
        help="train the cell-crop + tile classifier from image-level labels",
        formatter_class=_FMT,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--images",
        required=True,
        action="append",
        help="folder of training channel files; repeat with --labels and --masks to add sources "
        "(e.g. Kaggle 2018 and HPAv18 JPEGs)",
    )
    g.add_argument(
        "--labels", required=True, action="append", help="train.csv (2018 Id,Target or 2021 ID,Label)"
    )
    g.add_argument("--masks", required=True, action="append", help="SEG_DIR written by 'hpa segment'")
    g.add_argument("--out", required=True, help="model folder to write")
    g.add_argument("--cache", default=None, help="crop cache folder (default: MASKS/crop-cache)")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default=None, help="timm model name (default: by device)")
    m.add_argument(
        "--pretrained",
        default=None,
        help="imagenet (packaged EfficientNet-Lite0 weights, offline), a local checkpoint, "
        "'hub' to download, or none (random start, the default)",
    )
    m.add_argument("--crop-size", type=int, default=None, help="crop side in pixels (default: by device)")
    m.add_argument(
        "--channels",
        default=None,
        help="input channels: rgby, rgb, gby, or merges such as g,b,r+y (r+y = their mean); default rgby",
    )
    m.add_argument(
        "--crop-scale",
        choices=("box", "image"),
        default=None,
        help="box: each crop fits its cell; image: one window per image, structures keep their size",
    )
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default: by device)")
    t.add_argument("--batch-size", type=int, default=None, help="batch size (default: by device)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate")
    t.add_argument("--loss", choices=("bce", "focal", "softf1", "focal+softf1"), default=None)
    t.add_argument(
        "--folds",
        type=int,
        default=None,
        help="number of folds of the image split (default 5); without --fold, trains every fold "
        "into OUT/fold-<k>/ and tunes thresholds on the out-of-fold scores",
    )
    t.add_argument("--fold", type=int, default=None, help="train this fold only (default 0 without --folds)")
    t.add_argument("--no-tiles", action="store_true", help="train on cell crops only")
    t.add_argument("--no-cells", action="store_true", help="train on whole-image tiles only")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--precision", choices=_PRECISIONS, default=None, help=_PRECISION_HELP)
    t.add_argument("--workers", type=int, default=None, help="data-loading worker processes")
    t.add_argument("--config", help="YAML file of training settings; flags override it")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score every cell, pool to image labels, write the submission",
        formatter_class=_FMT,
    )
    p.add_argument("images", help="folder of channel files to predict")
    p.add_argument(
        "--model",
        required=True,
        action="append",
        help="model folder written by 'hpa train-cells' (a --folds folder averages its folds); "
        "repeat to average several",
    )
    p.add_argument(
        "--model-weights",
        type=float,
        nargs="+",
        default=None,
        help="weight of each --model in the average (default: equal)",
    )
    p.add_argument("--out", required=True, help="output folder PRED_DIR")
    p.add_argument("--masks", help="SEG_DIR from 'hpa segment' (default: segment on the fly)")
    p.add_argument("--ids", help="sample_submission.csv: Ids and their order (default: all, sorted)")
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=1, help="dihedral TTA views")
    p.add_argument("--pooling", choices=("max", "topk", "mean", "noisy-or"), default=None)
    p.add_argument("--no-fill-top", action="store_true", help="allow empty predictions")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=_PRECISIONS, default="auto", help=_PRECISION_HELP)
    p.add_argument("--workers", type=int, default=None, help="CPU worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None, help=_SCHEDULER_HELP)
    p.add_argument(
        "--backend",
        choices=("watershed", "cellpose"),
        default="watershed",
        help="segmentation backend when --masks is not given",
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="macro F1 of a submission against labels", formatter_class=_FMT)
    p.add_argument("submission", help="submission.csv (Id,Predicted)")
    p.add_argument("--labels", required=True, help="label CSV with the truth")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw per-cell predictions over images", formatter_class=_FMT)
    p.add_argument("images", help="folder of channel files")
    p.add_argument("--pred", required=True, help="PRED_DIR written by 'hpa predict'")
    p.add_argument("--id", nargs="*", default=None, help="Ids to draw (default: all predicted)")
    p.add_argument("--out", default=None, help="output folder (default: PRED_DIR/overlays)")
    p.add_argument("--channels", default="rgby", help="channels of the composite, e.g. rgby or g")
    p.add_argument("--labels", default=None, help="label CSV: show the truth in the title")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a browsable HTML report of a prediction run", formatter_class=_FMT
    )
    p.add_argument("pred", help="PRED_DIR written by 'hpa predict'")
    p.add_argument("--images", default=None, help="folder of channel files (default: from PRED_DIR)")
    p.add_argument("--labels", default=None, help="label CSV: add F1 charts and the truth")
    p.add_argument("--out", default=None, help="report folder (default: PRED_DIR/report)")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on built-in data", formatter_class=_FMT)
    p.add_argument("--out", default="hpa-demo", help="output folder")
    p.add_argument("--n-train", type=int, default=240, help="synthetic training images")
    p.add_argument("--n-test", type=int, default=60, help="synthetic test images")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: by device)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def build_parser() -> argparse.ArgumentParser:
    """The full ``hpa`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="hpa",
        description="Protein localisation from Human Protein Atlas images: "
        "segment cells, train a cell-crop classifier, predict image labels.",
        formatter_class=_FMT,
    )
    parser.add_argument("--version", action="version", version=f"hpa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_synth,
        _add_segment,
        _add_train,
        _add_predict,
        _add_evaluate,
        _add_show,
        _add_report,
        _add_demo,
    ):
        add(sub)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("hpa").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hpa`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    module_name, func_name = _HANDLERS[args.command].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    from hpa.errors import HPAError

    try:
        result = handler(args)
    except (HPAError, FileNotFoundError, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    # A handler returns its exit status, or (status, text) where text is the command's
    # result for standard output; diagnostics go to the log (stderr) meanwhile.
    code, text = result if isinstance(result, tuple) else (result, "")
    if text:
        print(text)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
