"""The ``hpa`` command: one entry point, one subcommand per stage.

The parser lives here alone and imports nothing heavy: torch, timm and cellpose are
imported inside the subcommand that needs them, so ``hpa --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from hpa import __version__
from hpa.constants import ENGINES

log = logging.getLogger("hpa")

# subcommand -> "module:function" called with the parsed arguments
_HANDLERS = {
    "synth": "hpa.synthetic.dataset:main",
    "segment": "hpa.pipelines.segment:main",
    "train-segmenter": "hpa.pipelines.train_segmenter:main",
    "train-cells": "hpa.pipelines.train_command:main",
    "predict": "hpa.pipelines.predict:main",
    "evaluate": "hpa.pipelines.evaluate:main",
    "show": "hpa.pipelines.visualize:show_main",
    "report": "hpa.pipelines.visualize:report_main",
    "demo": "hpa.pipelines.demo:main",
    "export": "hpa.pipelines.export:main",
}


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to a flag's help only where the help does not say it already
    and there is a default to show (None means "decided at run time", said in the help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default is None or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


_FMT = _DefaultsFormatter

#: Commands whose log also goes to ``<out>/run.log`` (:mod:`hpa.runlog`).
_RUN_LOG_COMMANDS = ("segment", "train-cells", "predict", "demo", "report")

_PRECISIONS = ("auto", "bf16", "fp32")
_PRECISION_HELP = (
    "autocast precision; auto = bf16 where the device computes it natively (CUDA, AVX512-BF16 CPUs)"
)
_ENGINE_HELP = (
    "what runs the network: auto = openvino, else onnxruntime, on the CPU when installed "
    "(fp32; torch with --precision bf16), torch on CUDA (default: auto)"
)
_SCHEDULER_HELP = (
    "dask.distributed scheduler address (tcp://host:8786), or local:N for a LocalCluster "
    "of N worker processes; default: no Dask"
)


# ----------------------------------------------------- argument value checks ---
# A bad value stops the command at parsing, with one line naming the flag.

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer (ASCII digits) no smaller than ``minimum``."""

    def parse(text: str) -> int:
        if not _INTEGER.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
        value = int(text)
        if value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


_POSITIVE = _at_least(1)


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with flags that depend on each other (None: nothing), right after parsing."""
    if args.command == "train-cells":
        if args.no_cells and args.no_tiles:
            return "--no-cells and --no-tiles together leave nothing to train on"
        if args.fold is not None and args.folds is not None and args.fold >= args.folds:
            return f"--fold must be in 0..{args.folds - 1} for --folds {args.folds}, got {args.fold}"
    text = getattr(args, "scheduler", None)
    if text is not None:
        forms = (r"local:[0-9]+", r"[a-z][a-z0-9+]*://\S+", r"[A-Za-z0-9_.\-]+:[0-9]+")
        if not any(re.fullmatch(form, text) for form in forms):
            return f"--scheduler {text!r}: expected a scheduler address (tcp://host:8786) or local:N"
        if text.startswith("local:") and int(text[6:]) < 1:
            return f"--scheduler {text!r}: local:N needs N >= 1 worker processes"
    return None


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic HPA-like dataset with ground-truth masks and labels",
        formatter_class=_FMT,
    )
    p.add_argument("out", help="output folder (train/, test/, train.csv, truth/, ...)")
    p.add_argument("--n-train", type=_POSITIVE, default=40, help="training images")
    p.add_argument(
        "--n-test", type=_at_least(0), default=10, help="test images (0: training data only, no test files)"
    )
    p.add_argument("--seed", type=_at_least(0), default=0, help="random seed (same seed, same files)")
    p.add_argument("--size", type=_at_least(64), default=512, help="image side in pixels (>= 64)")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="PNG bit depth")
    p.add_argument("--workers", type=_POSITIVE, default=1, help="worker processes")


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="find cells and nuclei from the reference channels (never green)",
        formatter_class=_FMT,
    )
    p.add_argument("images", help="folder of <Id>_<color>.png channel files")
    p.add_argument("--out", required=True, help="output folder SEG_DIR")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild SEG_DIR when it holds masks of other images or settings (default: refuse)",
    )
    p.add_argument(
        "--backend",
        choices=("watershed", "cellpose"),
        default=None,
        help="segmentation backend (default: the --config file's, else watershed)",
    )
    p.add_argument("--ids", help="CSV whose first column lists the Ids to segment (default: all)")
    p.add_argument("--workers", type=_POSITIVE, default=None, help="worker processes (default: CPU cores)")
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


def _add_train_segmenter(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-segmenter",
        help="train a cellpose model for 'hpa segment --backend cellpose'",
        formatter_class=_FMT,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--images", required=True, help="folder of <Id>_<color>.png samples or grey nucleus images"
    )
    g.add_argument(
        "--masks",
        required=True,
        help="label images: SEG_DIR or 'hpa synth' truth/ (<kind>/<Id>.png), <Id>_cellmask.png, <name>.png",
    )
    g.add_argument("--out", required=True, help="SEGMODEL folder to write (weights + segmodel.json)")
    m = p.add_argument_group("model")
    m.add_argument("--kind", choices=("cells", "nuclei"), default="cells", help="what the model segments")
    m.add_argument(
        "--from",
        dest="init",
        default="random",
        help="initial weights: random, a local cellpose model (cyto3, nuclei), a weights file or SEGMODEL",
    )
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=100, help="epochs (the first 10 warm the learning rate up)")
    t.add_argument(
        "--images-per-epoch", type=int, default=0, help="random crops per epoch; 0 = one per image"
    )
    t.add_argument("--lr", type=float, default=0.005, help="AdamW learning rate")
    t.add_argument("--batch-size", type=int, default=8, help="crops per step")
    t.add_argument("--crop", type=int, default=224, help="training crop side, pixels")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-cells",
        help="train the cell-crop + tile classifier from image-level labels",
        formatter_class=_FMT,
    )
    _add_train_data(p.add_argument_group("data"))
    _add_train_model(p.add_argument_group("model"))
    training = p.add_argument_group("training")
    _add_train_schedule(training)
    _add_train_run(training)


def _add_train_data(g: argparse._ArgumentGroup) -> None:
    """train-cells' inputs and outputs: images, labels and masks of each source, OUT, the cache."""
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


def _add_train_model(m: argparse._ArgumentGroup) -> None:
    """train-cells' network: backbone, start, crops, channels, input scaling, companion."""
    m.add_argument("--backbone", default=None, help="timm model name (default: by device)")
    m.add_argument(
        "--pretrained",
        default=None,
        help="imagenet (packaged EfficientNet-Lite0 weights, offline), a local checkpoint, "
        "'hub' to download, or none (random start); default: imagenet on the device defaults' "
        "tf_efficientnet_lite0, none for another --backbone",
    )
    m.add_argument(
        "--crop-size", type=_at_least(8), default=None, help="crop side in pixels, >= 8 (default: by device)"
    )
    m.add_argument(
        "--channels",
        default=None,
        help="input channels: rgby, rgb, gby, or merges such as g,b,r+y (r+y = their mean); default rgby",
    )
    m.add_argument(
        "--input-size",
        type=_at_least(8),
        default=None,
        help="network input side: crops are cut at --crop-size and resized to it (default: by device)",
    )
    m.add_argument(
        "--intensity",
        choices=("dataset", "view", "image"),
        default=None,
        help="scale views to [0, 1] by the dtype's maximum (dataset), by each view's own bright "
        "end (view: the pattern, not the exposure) or by their image's bright end (image: cells "
        "of one image stay comparable; default: by device)",
    )
    m.add_argument(
        "--companion",
        choices=("scratch", "features", "none"),
        default=None,
        help="also train a companion model on the same split and blend the two image by image, "
        "the weight chosen on the validation images: scratch = resnet10t from random weights on "
        "the four stains; features = a logistic regression on each image's localisation features "
        "(hpa features) (default: scratch with the device defaults, none with --backbone)",
    )
    m.add_argument(
        "--crop-scale",
        choices=("box", "image"),
        default=None,
        help="box: each crop fits its cell; image: one window per image, structures keep their size",
    )


def _add_train_schedule(t: argparse._ArgumentGroup) -> None:
    """train-cells' training run: epochs, batches, loss, freezing, folds, views, steps."""
    t.add_argument("--epochs", type=_POSITIVE, default=None, help="epochs (default: by device)")
    t.add_argument("--batch-size", type=_POSITIVE, default=None, help="batch size (default: by device)")
    t.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate")
    t.add_argument("--loss", choices=("bce", "focal", "softf1", "focal+softf1"), default=None)
    t.add_argument(
        "--freeze-epochs",
        type=int,
        default=None,
        help="epochs with the pretrained backbone frozen; -2 = all (the head is fitted on features "
        "computed once), -1 = 1 with pretrained weights (default: by device)",
    )
    t.add_argument(
        "--folds",
        type=_at_least(2),
        default=None,
        help="number of folds of the image split (default 5); without --fold, trains every fold "
        "into OUT/fold-<k>/ and tunes thresholds on the out-of-fold scores",
    )
    t.add_argument(
        "--fold", type=_at_least(0), default=None, help="train this fold only (default 0 without --folds)"
    )
    t.add_argument("--no-tiles", action="store_true", help="train on cell crops only")
    t.add_argument("--no-cells", action="store_true", help="train on whole-image tiles only")
    t.add_argument(
        "--max-steps", type=_POSITIVE, default=None, help="stop after this many steps (smoke tests)"
    )


def _add_train_run(t: argparse._ArgumentGroup) -> None:
    """train-cells' run settings: seed, device, precision, engine, workers, config file, resume."""
    t.add_argument("--seed", type=_at_least(0), default=None)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: auto")
    t.add_argument("--precision", choices=_PRECISIONS, default=None, help=_PRECISION_HELP)
    t.add_argument(
        "--engine", choices=ENGINES, default=None, help=_ENGINE_HELP + "; the frozen backbone's embedding"
    )
    t.add_argument("--workers", type=_POSITIVE, default=None, help="data-loading worker processes")
    t.add_argument("--config", help="YAML file of training settings; flags override it")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain what OUT holds from other inputs or settings, or of another kind (default: refuse)",
    )


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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="segment anew when PRED_DIR holds masks of other images (default: refuse)",
    )
    p.add_argument("--masks", help="SEG_DIR from 'hpa segment' (default: segment on the fly)")
    p.add_argument("--ids", help="sample_submission.csv: Ids and their order (default: all, sorted)")
    p.add_argument(
        "--tta", type=int, choices=(1, 2, 4, 8), default=None, help="dihedral TTA views (default: 1)"
    )
    p.add_argument("--pooling", choices=("max", "topk", "mean", "noisy-or"), default=None)
    p.add_argument("--no-fill-top", action="store_true", help="allow empty predictions")
    p.add_argument("--batch-size", type=_POSITIVE, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: auto")
    p.add_argument(
        "--precision", choices=_PRECISIONS, default=None, help=_PRECISION_HELP + " (default: auto)"
    )
    p.add_argument("--engine", choices=ENGINES, default=None, help=_ENGINE_HELP)
    p.add_argument("--workers", type=_POSITIVE, default=None, help="CPU worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None, help=_SCHEDULER_HELP)
    p.add_argument(
        "--backend",
        choices=("watershed", "cellpose"),
        default=None,
        help="segmentation backend when --masks is not given (default: the one the model's "
        "training masks were made with, and their other settings)",
    )
    p.add_argument(
        "--config", help="YAML file of predict settings (see PRED_DIR/config.yaml); flags override it"
    )
    _add_single_cell_output(p)


def _add_single_cell_output(p: argparse.ArgumentParser) -> None:
    """``hpa predict``'s 2021 single-cell output flags (hpa.pipelines.single_cell)."""
    g = p.add_argument_group("single-cell output (2021 format)")
    g.add_argument(
        "--format",
        choices=("2018", "2021", "both"),
        default=None,
        help="2018: submission.csv; 2021: submission_2021.csv (every cell, RLE masks); both "
        "(default: the model's label set)",
    )
    g.add_argument(
        "--cell-score",
        choices=("cell", "image", "product", "geometric", "image-then-cell"),
        default=None,
        help="a cell's 2021 confidence: its own probability, its image's, their product or "
        "geometric mean, or its image's with ties inside the image broken by its own "
        "(default: image-then-cell, chosen by benchmarks/single_cell_bench.py)",
    )
    g.add_argument(
        "--min-cell-score",
        type=float,
        default=None,
        help="lowest confidence listed in submission_2021.csv (default: 0.01)",
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="macro F1 of a submission against labels, or cell-level mAP of a 2021 submission",
        formatter_class=_FMT,
    )
    p.add_argument("submission", help="submission.csv (Id,Predicted) or submission_2021.csv")
    p.add_argument(
        "--labels", default=None, help="image labels of a submission.csv (2018 Id,Target or 2021 ID,Label)"
    )
    p.add_argument(
        "--format",
        choices=("2018", "2021"),
        default=None,
        help="2018: image labels, macro F1; 2021: cells, mAP at IoU >= 0.6 (default: 2021 with "
        "--truth or a submission_2021.csv)",
    )
    p.add_argument("--truth", default=None, help="2021: folder of cells/<Id>.png and cell_labels_2021.csv")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw per-cell predictions over images", formatter_class=_FMT)
    p.add_argument("images", help="folder of channel files")
    p.add_argument("--pred", required=True, help="PRED_DIR written by 'hpa predict'")
    p.add_argument("--id", nargs="*", default=None, help="Ids to draw (default: all predicted)")
    p.add_argument("--out", default=None, help="output folder (default: PRED_DIR/overlays)")
    p.add_argument("--channels", default="rgby", help="channels of the composite, e.g. rgby or g")
    p.add_argument("--labels", default=None, help="label CSV: show the truth in the title")
    _add_scheme(p)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a browsable HTML report of a prediction run", formatter_class=_FMT
    )
    p.add_argument("pred", help="PRED_DIR written by 'hpa predict'")
    p.add_argument("--images", default=None, help="folder of channel files (default: from PRED_DIR)")
    p.add_argument("--labels", default=None, help="label CSV: add F1 charts and the truth")
    p.add_argument("--out", default=None, help="report folder (default: PRED_DIR/report)")
    _add_scheme(p)


def _add_scheme(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheme",
        choices=("2018", "2021"),
        default="2018",
        help="2018: the model's own cell predictions; 2021: the run's 2021 per-cell labels "
        "(hpa predict --format 2021|both)",
    )


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on built-in data", formatter_class=_FMT)
    p.add_argument("--out", default="hpa-demo", help="output folder")
    p.add_argument("--n-train", type=_POSITIVE, default=None, help="synthetic training images (default: 240)")
    p.add_argument("--n-test", type=_POSITIVE, default=None, help="synthetic test images (default: 60)")
    p.add_argument("--epochs", type=_POSITIVE, default=None, help="training epochs (default: by device)")
    p.add_argument("--seed", type=_at_least(0), default=None, help="default: 0")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: auto")
    p.add_argument("--config", help="YAML file of demo settings (n_train, n_test, epochs, seed, device)")


# ----------------------------------- bioimage interoperability (issue 15) ---

_CHANNEL_MAP_COMMANDS = ("segment", "train-cells", "predict", "show", "report", "export")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a prediction run for QuPath (GeoJSON, OME-TIFF), napari/Fiji (OME-Zarr, ImageJ ROIs) "
        "or CellProfiler/R (CSV)",
        formatter_class=_FMT,
    )
    p.add_argument("pred", help="PRED_DIR written by 'hpa predict'")
    p.add_argument(
        "--to",
        required=True,
        choices=("geojson", "ome-zarr", "imagej-roi", "csv", "ome-tiff"),
        help="output format",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder: <Id>.geojson, <Id>.ome.zarr, <Id>_rois.zip or <Id>.ome.tif per image; "
        "cell_predictions.csv for csv",
    )
    p.add_argument("--id", nargs="*", default=None, help="Ids to export (default: all predicted)")
    p.add_argument(
        "--images",
        default=None,
        help="folder of the images, ome-zarr and ome-tiff only (default: from PRED_DIR)",
    )
    p.add_argument(
        "--scheme",
        choices=("2018", "2021"),
        default=argparse.SUPPRESS,  # chosen by the run (export_run)
        help="2018: the model's own cell predictions; 2021: the run's 2021 per-cell labels "
        "(default: 2018, or 2021 for a run written with --format 2021 only)",
    )


def _add_channel_map(sub: argparse._SubParsersAction) -> None:
    """``--channel-map`` on every command that reads images."""
    for name in _CHANNEL_MAP_COMMANDS:
        sub.choices[name].add_argument(
            "--channel-map",
            default=None,
            metavar="MAP",
            help="for one multi-channel TIFF/OME-TIFF per sample: which channel is which, by index "
            "or OME name, e.g. microtubules=0,protein=1,nucleus=2,er=3 (default: RGBY order; "
            "3 channels = no ER)",
        )


def _parse_channel_map(args: argparse.Namespace) -> None:
    """Replace ``args.channel_map`` text by a :class:`hpa.io_tiff.ChannelMap` (HPAConfigError if bad)."""
    if getattr(args, "channel_map", None):
        from hpa.io_tiff import ChannelMap

        args.channel_map = ChannelMap.parse(args.channel_map)


# ------------------------------------------- localisation features (issue 24) ---
_HANDLERS["features"] = "hpa.features.folder:main"


def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="measure per-cell localisation features (docs/features.md)",
        formatter_class=_FMT,
    )
    p.add_argument("images", help="folder of channel files")
    p.add_argument("--masks", required=True, help="SEG_DIR written by 'hpa segment'")
    p.add_argument(
        "--out", required=True, help="output folder: cell_features.parquet, image_features.parquet"
    )
    p.add_argument(
        "--cache", default=None, help="cache root (default: $HPA_FEATURE_CACHE_DIR, else MASKS/feature-cache)"
    )
    p.add_argument("--workers", type=_POSITIVE, default=1, help="worker processes")


# ------------------------------------------------ bioimage.io model export (issue 27) ---
_HANDLERS["export-model"] = "hpa.interop.bioimageio:main"


def _add_export_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-model",
        help="write a trained model for the bioimage.io Model Zoo (deepImageJ, ilastik, napari, QuPath)",
        formatter_class=_FMT,
    )
    p.add_argument("model", help="MODEL_DIR written by 'hpa train-cells' (plain, --folds or a blend)")
    p.add_argument("--to", required=True, choices=("bioimageio",), help="export format")
    p.add_argument("--out", required=True, help="output folder: rdf.yaml and the files it names")
    p.add_argument(
        "--member",
        default=None,
        help="which network of a blend or --folds folder, by its path inside MODEL_DIR "
        "(main, scratch, fold-2, main/fold-1; default: the main member, or the first fold); "
        "'all': each network as its own resource, OUT/<member>/, listed in OUT/members.json",
    )
    p.add_argument(
        "--author",
        action="append",
        default=None,
        help="an author of the model (repeatable; default: hpa-cells users)",
    )
    p.add_argument(
        "--bit-depth", type=int, choices=(8, 16), default=8, help="bit depth of the images the model will get"
    )
    p.add_argument(
        "--zip",
        action="store_true",
        help="also write OUT/bioimageio-package.zip, the packaged resource for upload",
    )
    p.add_argument(
        "--no-test", action="store_true", help="skip bioimageio.core's model test of the written folder"
    )


def build_parser() -> argparse.ArgumentParser:
    """The full ``hpa`` argument parser."""
    parser = _Parser(
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
        _add_train_segmenter,
        _add_train,
        _add_predict,
        _add_evaluate,
        _add_show,
        _add_report,
        _add_demo,
        _add_export,
        _add_features,
        _add_export_model,
    ):
        add(sub)
    _add_channel_map(sub)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("hpa").setLevel(level)


#: Set when this command received SIGTERM: an error raised after it is part of the stop.
_SIGTERM_RECEIVED = threading.Event()


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`hpa.errors.Terminated`: a clean stop, like Ctrl-C.

    A second SIGTERM during the clean-up ends the process at once. Returns the handler
    it replaced (None outside the main thread, where none can be set). The signal is
    also recorded (:data:`_SIGTERM_RECEIVED`): where ``Terminated`` is raised inside
    a C extension that replaces it with an error of its own (torch, reading an object's
    shape, raises ``ValueError``), the command still ends as stopped, not as failed.
    """
    from hpa.errors import Terminated

    _SIGTERM_RECEIVED.clear()

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _SIGTERM_RECEIVED.set()
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hpa`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    problem = _check_args(args)
    if problem:
        prog = f"{parser.prog} {args.command}"
        parser.exit(2, f"{prog}: error: {problem} (see '{prog} --help')\n")
    setup_logging(args.verbose, args.quiet)
    from hpa.errors import Terminated

    previous = _stop_on_sigterm()
    _start_run_log(args.command, argv)
    try:
        module_name, func_name = _HANDLERS[args.command].split(":")
        handler = getattr(importlib.import_module(module_name), func_name)
        _parse_channel_map(args)
        result = handler(args)
    except Terminated:
        log.error("stopped by SIGTERM")
        return 143
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as exc:
        if _SIGTERM_RECEIVED.is_set():  # Terminated, replaced on its way out by another error
            log.error("stopped by SIGTERM (%s: %s on the way out)", type(exc).__name__, exc)
            return 143
        return _report_error(exc, args.verbose)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        from hpa import runlog

        runlog.stop()
    # A handler returns its exit status, or (status, text) where text is the command's
    # result for standard output; diagnostics go to the log (stderr) meanwhile.
    code, text = result if isinstance(result, tuple) else (result, "")
    if text:
        print(text)
    return int(code or 0)


def _start_run_log(command: str, argv: Sequence[str] | None) -> None:
    """Hold the log of a command that writes ``<out>/run.log`` until its folder is known."""
    if command not in _RUN_LOG_COMMANDS:
        return
    from hpa import runlog

    runlog.start()
    words = list(sys.argv[1:] if argv is None else argv)
    log.info("hpa %s (hpa %s)", " ".join(words), __version__)


def _report_error(exc: Exception, verbose: int) -> int:
    """Log an error as one line (the traceback too with ``-v``); the exit status, 1."""
    from hpa.errors import user_message

    message = user_message(exc)
    if message is not None:
        message = " ".join(message.splitlines())
    else:
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        if not verbose:
            message += " (rerun with -v for the traceback)"
    log.error("%s", message, exc_info=exc if verbose else None)
    return 1


if __name__ == "__main__":
    sys.exit(main())
