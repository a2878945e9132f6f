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
  lower is better, target 0.25x), and whether the submissions agree. Every time is
  given as wall seconds and CPU seconds (the ratios of both): the CPU time depends less
  on other work sharing the machine. The engines: torch, onnxruntime and openvino
  (each installed one; ``--engine-list`` picks). ``--demo`` also times ``hpa demo``.

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


class Clock:
    """Wall seconds and CPU seconds (this process and its finished children) of a block.

    On a machine shared with other work the wall time of a block depends on the load at
    that moment; its CPU time much less (it is the work done, not the wait for a core).
    """

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, self._cpu() - self.cpu

    @staticmethod
    def _cpu() -> float:
        import resource

        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bare_eager_seconds(model_dir: Path, views: np.ndarray, batch_size: int) -> Clock:
    """A bare eager fp32 torch forward pass (NCHW, no autocast, no channels-last, every
    core) over ``views``, the inputs prepared beforehand and not timed."""
    import torch

    from hpa.classification.data import BatchLoader
    from hpa.classification.model import load_model

    model, cfg = load_model(model_dir)
    model = model.to(memory_format=torch.contiguous_format).eval()
    torch.set_num_threads(os.cpu_count() or 1)
    loader = BatchLoader(
        views, np.arange(len(views)), None, batch_size, np.asarray(cfg.mean), np.asarray(cfg.std), 255.0,
        mix=_mix(cfg), intensity=cfg.intensity, size=cfg.network_size,
    )  # fmt: skip
    batches = [x.contiguous() for x, _ in loader]
    clock = Clock()
    clock.wall = clock.cpu = 0.0
    with torch.inference_mode():
        model(batches[0][:8])  # warm-up
        for x in batches:
            with Clock() as one:
                model(x)
            clock.wall += one.wall
            clock.cpu += one.cpu
    return clock


def _mix(cfg):
    from hpa.classification.channels import channel_matrix, is_identity

    return None if is_identity(cfg.channels) else channel_matrix(cfg.channels)


def engine_seconds(model_dir: Path, engine: str, views: np.ndarray, batch_size: int, threads: int) -> Clock:
    """:func:`score_views` with ``engine`` over ``views`` (export cached beforehand): normalising
    and resizing the views included."""
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
    with Clock() as clock:
        score_views(net, views, cfg.mean, cfg.std, 255.0, precision=precision, **common)
    return clock


def available_engines() -> list[str]:
    """torch, and each ONNX engine whose package is installed."""
    from hpa.classification.engine import installed

    return ["torch", *(e for e in ("onnxruntime", "openvino") if installed(e))]


def engines_bench(args: argparse.Namespace) -> str:
    """The ``--engines N`` mode (see the module docstring)."""
    import pandas as pd

    from hpa.artefacts import PredDir
    from hpa.classification.inference import resolve_precision
    from hpa.classification.model import load_model_config
    from hpa.config import default_workers
    from hpa.io import list_image_ids
    from hpa.pipelines.predict import predict_folder
    from hpa.synthetic.dataset import write_dataset

    load_before = os.getloadavg()[0]
    bench = Path(args.bench)
    data = bench / f"synth-{args.engines}"
    if not (data / "test").is_dir():
        write_dataset(data, 0, args.engines, seed=0, size=512, workers=2)
    images, masks = data / "test", data / "truth"
    model = default_backbone_folder(bench / "model-lite0")
    crop = load_model_config(model).crop
    ids = list_image_ids(images)
    engines = args.engine_list.split(",") if args.engine_list else available_engines()
    # the export is made once per model folder; the end-to-end runs find it cached
    for engine in engines:
        if engine != "torch":
            engine_seconds(model, engine, cut_views(images, masks, ids[:1], crop)[:8], 8, 1)
    runs, clocks = {}, {}
    for engine in engines:
        with Clock() as clocks[engine]:
            runs[engine] = predict_folder(
                images, model, bench / f"predict-{engine}", masks=masks, engine=engine, device="cpu",
                batch_size=args.batch_size, progress=False,
            )  # fmt: skip
    with Clock() as cutting:
        views = cut_views(images, masks, ids, crop)
    bare = bare_eager_seconds(model, views, args.batch_size)
    cores = default_workers()  # with masks given, hpa predict gives the network every core
    engine_s = {e: engine_seconds(model, e, views, args.batch_size, cores) for e in engines}
    classes = list(load_model_config(model).class_names)
    cells = {e: pd.read_parquet(bench / f"predict-{e}" / PredDir.CELLS)[classes].to_numpy() for e in engines}
    subs = {e: (bench / f"predict-{e}" / PredDir.SUBMISSION).read_text() for e in engines}

    from segment_bench import machine  # benchmarks/ is on sys.path when run as a script

    torch_precision = resolve_precision("auto", "cpu")
    lines = [
        f"Command: `python benchmarks/predict_bench.py --engines {args.engines} --bench {args.bench}`. "
        f"Machine: {machine()}. Load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after. "
        f"{len(ids)} synthetic 512 px images, true masks given, {len(views)} views; the CPU default's main "
        f"network (frozen ImageNet EfficientNet-Lite0, green at 224 px), batch {args.batch_size}, TTA 1. "
        f"torch runs {torch_precision} (`--engine torch`, precision auto) with channels-last, the ONNX engines "
        f"fp32, each on the {cores} core(s) (hpa predict's own with masks given). Wall seconds, and in brackets "
        "CPU seconds (this process and its workers): the CPU time depends less on the load of other work.",
        "",
        "| engine | images/s end to end | end-to-end s | engine views/s | engine x bare | end to end x bare |",
        "|---|---|---|---|---|---|",
        f"| bare eager fp32 torch forward | - | - | {len(views) / bare.wall:.1f} | 1.00 | - |",
    ]
    for e in engines:
        s, c, g = runs[e], clocks[e], engine_s[e]
        lines.append(
            f"| {e} | {s.images_per_s:.2f} | {c.wall:.1f} ({c.cpu:.1f}) | {len(views) / g.wall:.1f} | "
            f"{g.wall / bare.wall:.2f} ({g.cpu / bare.cpu:.2f}) | **{c.wall / bare.wall:.2f}** ({c.cpu / bare.cpu:.2f}) |"
        )
    lines += [
        "",
        f"Bare forward pass: {bare.wall:.1f} s ({bare.cpu:.1f} CPU s). Reading the images and masks and cutting "
        f"the views alone (one process): {cutting.wall:.1f} s ({cutting.cpu:.1f} CPU s).",
        "",
        f"Agreement between the engines (torch in {torch_precision}; the ONNX engines in fp32): "
        + "; ".join(
            f"{a} vs {b}: submission {'identical' if subs[a] == subs[b] else 'DIFFERENT'}, "
            f"max cell probability difference {float(np.abs(cells[a] - cells[b]).max()):.2e}"
            for k, a in enumerate(engines)
            for b in engines[k + 1 :]
        )
        + ".",
    ]
    if args.demo:
        lines += ["", demo_seconds(bench / "demo")]
    return "\n".join(lines)


def demo_seconds(out: Path) -> str:
    """``hpa demo`` at its defaults, timed in a fresh process (a line of the report)."""
    import shutil
    import subprocess
    import sys

    shutil.rmtree(out, ignore_errors=True)
    with Clock() as clock:
        done = subprocess.run([sys.executable, "-m", "hpa", "demo", "--out", str(out)], check=False)
    state = "" if done.returncode == 0 else f", FAILED (exit {done.returncode})"
    return f"`hpa demo` (defaults, --out {out}): {clock.wall:.0f} s ({clock.cpu:.0f} CPU s){state}."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", default="benchmarks/out/train", help="output folder of train_bench.py")
    p.add_argument("--model", default=None, help="model folder (default: BENCH/model-cells-tiles)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--engines", type=int, default=None, metavar="N", help="compare the engines on N synthetic images"
    )
    p.add_argument(
        "--engine-list",
        default=None,
        help="with --engines: which, comma-separated (default: every installed)",
    )
    p.add_argument("--demo", action="store_true", help="with --engines: also time `hpa demo` (minutes)")
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
