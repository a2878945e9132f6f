"""Prediction throughput on the CPU: end to end against the bare classifier, per engine.

Two modes:

* ``--bench DIR`` (after ``benchmarks/train_bench.py``, whose model and data it reuses):
  ``hpa predict`` over the synthetic test images at 512 px (TTA off), with the masks of
  ``hpa segment`` given and with segmentation on the fly, beside the classifier's bare
  inference on the same number of views (random tensors of the same shape, same batch
  size) in the same run. Pipeline efficiency = bare model time / end-to-end time.
* ``--engines N``: the inference engines (:mod:`hpa.classification.engine`) on the
  default backbone. ``N`` synthetic 512 px images (``hpa synth``, their true masks
  given) and a model folder of the CPU default's main network (frozen ImageNet
  EfficientNet-Lite0 on the protein channel at 224 px, mean pooling; its head and
  thresholds untrained: the speed and the agreement are what is measured, not the
  F1). In one run: ``hpa predict`` with each engine (images/s end to end), each
  engine's views/s on the views those runs scored, the ratio of each end-to-end time
  to a bare eager fp32 torch forward pass over the same views (the issue's measure;
  lower is better, target 0.25x), and whether the submissions agree.

Usage::

    python benchmarks/predict_bench.py --bench benchmarks/out/train
    python benchmarks/predict_bench.py --engines 40 --bench benchmarks/out/engines
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def bare_inference_seconds(model_dir: Path, n_views: int, batch_size: int) -> float:
    """Seconds the model alone takes to score ``n_views`` random views."""
    import torch

    from hpa.classification.inference import score_views
    from hpa.classification.model import load_model

    model, cfg = load_model(model_dir)
    size = cfg.crop.crop_size
    views = np.random.default_rng(0).integers(0, 255, (n_views, size, size, 4), dtype=np.uint8)
    torch.set_num_threads(os.cpu_count() or 1)
    score_views(model, views[:batch_size], cfg.mean, cfg.std, 255.0, batch_size=batch_size)  # warm-up
    t = time.perf_counter()
    score_views(model, views, cfg.mean, cfg.std, 255.0, batch_size=batch_size)
    return time.perf_counter() - t


def pipeline_bench(args: argparse.Namespace) -> str:
    """The ``--bench`` mode: masks given and segmenting on the fly, against the bare model."""
    import pandas as pd

    from hpa.pipelines.predict import predict_folder

    bench = Path(args.bench)
    model = Path(args.model) if args.model else bench / "model-cells-tiles"
    images, masks = bench / "data" / "test", bench / "seg-test"
    out = bench / "predict-bench"
    rows = []
    cases: tuple[tuple[str, dict[str, Any]], ...] = (
        ("masks given", {"masks": masks}),
        ("segmenting on the fly", {}),
    )
    for label, kwargs in cases:
        summary = predict_folder(
            images,
            model,
            out / label.replace(" ", "-"),
            workers=2,
            batch_size=args.batch_size,
            device="cpu",
            progress=False,
            **kwargs,
        )
        cells = pd.read_parquet(out / label.replace(" ", "-") / "cell_predictions.parquet")
        tiles = pd.read_parquet(out / label.replace(" ", "-") / "tile_predictions.parquet")
        n_views = len(cells) + len(tiles)
        bare = bare_inference_seconds(model, n_views, args.batch_size)
        rows.append(
            (
                label,
                summary.n_images,
                n_views,
                summary.images_per_s,
                summary.seconds,
                bare,
                bare / summary.seconds,
            )
        )
    from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

    lines = [
        f"Command: `python benchmarks/predict_bench.py --bench {args.bench}`. Machine: {machine()}. Model: {model.name} (CPU defaults), TTA 1, default workers and threads, batch {args.batch_size}.",
        "",
        "| predict | images | views scored | images/s end to end | end-to-end s | bare model s | efficiency |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, n, v, ips, e2e, bare, eff in rows:
        lines.append(f"| {label} | {n} | {v} | {ips:.1f} | {e2e:.1f} | {bare:.1f} | **{eff:.2f}** |")
    return "\n".join(lines)


# ------------------------------------------------------------------ --engines ---


def default_backbone_folder(folder: Path) -> Path:
    """A model folder of the CPU default's main network: ImageNet Lite0 on green at 224 px."""
    from hpa.aggregation import save_thresholds
    from hpa.artefacts import ModelDir
    from hpa.classification.crops import CropSettings
    from hpa.classification.model import ModelConfig, create_model, save_model_folder
    from hpa.constants import CLASS_NAMES_2018

    if ModelDir(folder).path(ModelDir.WEIGHTS).is_file():
        return folder
    import torch

    torch.manual_seed(0)
    net = create_model("tf_efficientnet_lite0", len(CLASS_NAMES_2018), 1, pretrained="imagenet").eval()
    config = ModelConfig(
        backbone="tf_efficientnet_lite0",
        class_names=CLASS_NAMES_2018,
        label_set="2018",
        in_chans=1,
        channels=("green",),
        mean=(0.2,),
        std=(0.25,),
        crop=CropSettings(crop_size=64),
        pooling="mean",
        intensity="view",
        input_size=224,
    )
    save_model_folder(folder, config, net)
    save_thresholds(
        ModelDir(folder).path(ModelDir.THRESHOLDS), np.full(len(CLASS_NAMES_2018), 0.5), CLASS_NAMES_2018
    )
    return folder


def cut_views(images: Path, masks: Path, ids: list[str], crop) -> np.ndarray:
    """The crops then tiles of every image, as ``hpa predict`` cuts them."""
    from hpa.artefacts import SegDir
    from hpa.classification.cache import image_views
    from hpa.io import read_sample

    parts = []
    for image_id in ids:
        views = image_views(read_sample(images, image_id), SegDir(masks).read_cells(image_id), image_id, crop)
        parts.append(np.concatenate([views.crops, views.tiles]))
    return np.concatenate(parts)


def bare_eager_seconds(model_dir: Path, views: np.ndarray, batch_size: int) -> float:
    """A bare eager fp32 torch forward pass (NCHW, no autocast, no channels-last) over ``views``,
    the inputs prepared beforehand and not timed."""
    import torch

    from hpa.classification.data import BatchLoader
    from hpa.classification.model import load_model

    model, cfg = load_model(model_dir)
    model = model.to(memory_format=torch.contiguous_format).eval()
    loader = BatchLoader(
        views, np.arange(len(views)), None, batch_size, np.asarray(cfg.mean), np.asarray(cfg.std), 255.0,
        mix=_mix(cfg), intensity=cfg.intensity, size=cfg.network_size,
    )  # fmt: skip
    batches = [x.contiguous() for x, _ in loader]
    seconds = 0.0
    with torch.inference_mode():
        model(batches[0][:8])  # warm-up
        for x in batches:
            t = time.perf_counter()
            model(x)
            seconds += time.perf_counter() - t
    return seconds


def _mix(cfg):
    from hpa.classification.channels import channel_matrix, is_identity

    return None if is_identity(cfg.channels) else channel_matrix(cfg.channels)


def engine_seconds(model_dir: Path, engine: str, views: np.ndarray, batch_size: int, threads: int) -> float:
    """Seconds :func:`score_views` takes with ``engine`` over ``views`` (export cached beforehand)."""
    import torch

    from hpa.artefacts import ModelDir
    from hpa.classification.engine import make_engine
    from hpa.classification.inference import resolve_precision, score_views
    from hpa.classification.model import load_model

    model, cfg = load_model(model_dir)
    torch.set_num_threads(threads)
    net = make_engine(
        model, engine, cache_dir=ModelDir(model_dir).path(ModelDir.ENGINE_CACHE), threads=threads
    )
    common = dict(mix=_mix(cfg), intensity=cfg.intensity, size=cfg.network_size, batch_size=batch_size)
    precision = resolve_precision("auto", "cpu") if engine == "torch" else "fp32"
    score_views(net, views[:8], cfg.mean, cfg.std, 255.0, precision=precision, **common)  # warm-up, export
    t = time.perf_counter()
    score_views(net, views, cfg.mean, cfg.std, 255.0, precision=precision, **common)
    return time.perf_counter() - t


def engines_bench(args: argparse.Namespace) -> str:
    """The ``--engines N`` mode (see the module docstring)."""
    import pandas as pd

    from hpa.artefacts import PredDir
    from hpa.classification.engine import engine_threads
    from hpa.classification.inference import resolve_precision
    from hpa.classification.model import load_model_config
    from hpa.io import list_image_ids
    from hpa.pipelines.predict import predict_folder
    from hpa.synthetic.dataset import write_dataset

    bench = Path(args.bench)
    data = bench / f"synth-{args.engines}"
    if not (data / "test").is_dir():
        write_dataset(data, 0, args.engines, seed=0, size=512, workers=2)
    images, masks = data / "test", data / "truth"
    model = default_backbone_folder(bench / "model-lite0")
    ids = list_image_ids(images)
    engines = ["torch", "onnxruntime"]
    # the export is made once per model folder; the end-to-end runs find it cached
    views = cut_views(images, masks, ids[:1], load_model_config(model).crop)
    engine_seconds(model, "onnxruntime", views[:8], 8, 1)
    runs = {}
    for engine in engines:
        out = bench / f"predict-{engine}"
        summary = predict_folder(
            images,
            model,
            out,
            masks=masks,
            engine=engine,
            device="cpu",
            batch_size=args.batch_size,
            progress=False,
        )
        runs[engine] = summary
    views = cut_views(images, masks, ids, load_model_config(model).crop)
    workers = max(1, (os.cpu_count() or 1) // 4)  # hpa predict's own with masks given
    bare = bare_eager_seconds(model, views, args.batch_size)
    engine_s = {
        "torch": engine_seconds(model, "torch", views, args.batch_size, os.cpu_count() or 1),
        "onnxruntime": engine_seconds(model, "onnxruntime", views, args.batch_size, engine_threads(workers)),
    }
    cells = {e: pd.read_parquet(bench / f"predict-{e}" / PredDir.CELLS) for e in engines}
    classes = [c for c in cells["torch"].columns if c in load_model_config(model).class_names]
    diff = float(np.abs(cells["torch"][classes].to_numpy() - cells["onnxruntime"][classes].to_numpy()).max())
    subs = {e: (bench / f"predict-{e}" / PredDir.SUBMISSION).read_text() for e in engines}
    same = subs["torch"] == subs["onnxruntime"]

    from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

    torch_precision = resolve_precision("auto", "cpu")
    lines = [
        f"Command: `python benchmarks/predict_bench.py --engines {args.engines} --bench {args.bench}`. "
        f"Machine: {machine()}. Load average (1 min) at the end: {os.getloadavg()[0]:.1f}. {len(ids)} synthetic 512 px images, "
        f"true masks given, {len(views)} views; the CPU default's main network (frozen ImageNet "
        f"EfficientNet-Lite0, green at 224 px), batch {args.batch_size}, TTA 1. torch runs {torch_precision} "
        "(auto) with channels-last on every core; onnxruntime fp32 on the cores the decoding worker leaves.",
        "",
        "| engine | images/s end to end | end-to-end s | engine views/s | engine x bare | end to end x bare |",
        "|---|---|---|---|---|---|",
    ]
    lines.append(f"| bare eager fp32 torch forward | - | - | {len(views) / bare:.1f} | 1.00 | - |")
    for engine in engines:
        s = runs[engine]
        lines.append(
            f"| {engine} | {s.images_per_s:.2f} | {s.seconds:.1f} | {len(views) / engine_s[engine]:.1f} | "
            f"{engine_s[engine] / bare:.2f} | **{s.seconds / bare:.2f}** |"
        )
    lines += [
        "",
        f"Agreement (onnxruntime against torch): submissions {'identical' if same else 'DIFFERENT'}, "
        f"max cell probability difference {diff:.2e}.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default="benchmarks/out/train", help="output folder of train_bench.py")
    p.add_argument("--model", default=None, help="model folder (default: BENCH/model-cells-tiles)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--engines", type=int, default=None, metavar="N", help="compare the engines on N synthetic images"
    )
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    text = engines_bench(args) if args.engines else pipeline_bench(args)
    print(text)
    name = "RESULTS-engines.md" if args.engines else "RESULTS-predict.md"
    Path(args.bench).mkdir(parents=True, exist_ok=True)
    (Path(args.bench) / name).write_text(text + "\n")


if __name__ == "__main__":
    main()
