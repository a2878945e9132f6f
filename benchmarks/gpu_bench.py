"""GPU check in one script: training and prediction throughput, no network needed.

1. Training: ``hpa synth`` images (truth masks, so no segmentation time), crop cache at
   ``--crop-size``, then ``--steps`` real training steps of ``--backbone`` with bf16
   autocast and channels-last through the real data pipeline; printed beside the bare
   model's forward + backward throughput on random tensors in the same process.
   Target on one H100: >= 3,000 crops/s at 128 px for resnet18 / efficientnet_b0,
   pipeline / bare >= 0.8.
2. Prediction: ``hpa predict`` end to end at 512 px, segmentation on CPU workers and
   classification on the GPU. Target on one H100: >= 20 images/s.

Usage (on the GPU machine)::

    python benchmarks/gpu_bench.py --out /tmp/gpu-bench [--device cuda]

It also runs on a CPU (``--device cpu --steps 5 --n-images 16``) as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/hpa-gpu-bench")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbones", default="resnet18,efficientnet_b0")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--n-images", type=int, default=200)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    from model_throughput import throughput  # benchmarks/ is on sys.path when run as a script

    from hpa.classification.cache import build_cache
    from hpa.classification.crops import CropSettings
    from hpa.classification.model import create_model
    from hpa.classification.train import TrainConfig, TrainData, fit
    from hpa.io import list_image_ids
    from hpa.synthetic import write_dataset

    out = Path(args.out)
    data = out / "data"
    if not (data / "test_labels.csv").is_file():
        write_dataset(data, args.n_images, args.n_images // 2, seed=1, workers=args.workers)
    seg = out / "truth-seg"
    seg.mkdir(parents=True, exist_ok=True)
    for kind in ("cells", "nuclei"):
        if not (seg / kind).exists():
            (seg / kind).symlink_to((data / "truth" / kind).resolve())
    device = args.device
    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    results: dict = {"device": card, "torch": torch.__version__, "train": {}}
    ids = list_image_ids(data / "train")
    crop = CropSettings(crop_size=args.crop_size)
    cache = build_cache(data / "train", seg, ids, crop, out / "cache", workers=args.workers, progress=False)
    n = len(cache)
    for backbone in args.backbones.split(","):
        cfg = TrainConfig(
            backbone=backbone,
            crop_size=args.crop_size,
            batch_size=args.batch_size,
            epochs=1000,
            max_steps=args.steps,
            device=device,
            workers=args.workers,
        )
        td = TrainData(
            cache.views,
            cache.scale,
            cache.index,
            np.arange(n),
            np.arange(min(n, 512)),
            np.zeros((n, 28), np.float32),
            [ids[0]],
            np.zeros((1, 28), np.uint8),
            np.full(4, 0.1),
            np.full(4, 0.1),
        )
        bare = throughput(
            create_model(backbone, 28),
            args.batch_size,
            args.crop_size,
            steps=min(args.steps, 50),
            device=device,
        )
        t = time.perf_counter()
        _, hist = fit(create_model(backbone, 28), td, cfg, out / f"{backbone}.ckpt")
        # the first epoch includes start-up (cuDNN autotuning, page faults of the cache)
        pipe = float(np.median([h["crops_per_s"] for h in (hist[1:] or hist)]))
        results["train"][backbone] = {
            "pipeline_crops_per_s": pipe,
            "bare_crops_per_s": bare,
            "ratio": pipe / bare,
            "seconds": time.perf_counter() - t,
        }
        print(
            f"[train] {backbone} {args.crop_size}px on {card}: pipeline {pipe:.0f} crops/s, bare {bare:.0f} "
            f"crops/s, ratio {pipe / bare:.2f}",
            flush=True,
        )

    # prediction end to end: a model folder from a few real steps, then predict with on-the-fly segmentation
    from hpa.io import read_labels
    from hpa.pipelines.predict import predict_folder
    from hpa.pipelines.train import train_model

    model_dir = out / "model"
    cfg = TrainConfig(
        backbone=args.backbones.split(",")[0],
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        epochs=1,
        max_steps=5,
        device=device,
        workers=args.workers,
    )
    train_model(
        data / "train",
        read_labels(data / "train.csv"),
        seg,
        model_dir,
        cfg,
        cache_root=out / "cache",
        progress=False,
    )
    summary = predict_folder(
        data / "test", model_dir, out / "pred", device=device, workers=args.workers, progress=False
    )
    results["predict_images_per_s"] = summary.images_per_s
    results["predict_images"] = summary.n_images
    print(
        f"[predict] {summary.n_images} images at 512 px, segmentation on {args.workers} CPU workers, "
        f"classifier on {card}: {summary.images_per_s:.1f} images/s",
        flush=True,
    )
    (out / "gpu_bench.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
