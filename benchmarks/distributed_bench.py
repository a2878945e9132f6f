"""``hpa segment`` on a Dask cluster vs local processes, and a projection to a cluster.

    python benchmarks/distributed_bench.py [--data ../shared/data] [--no-write]

1. Speed: images/s of :func:`hpa.pipelines.segment.segment_folder` over the 120 real HPA
   samples at 512 px that ``benchmarks/segment_bench.py`` uses, with ``workers=2``
   (a process pool) and on a Dask ``LocalCluster`` of 1 and 2 worker processes. The
   cluster's start-up is timed apart; each configuration runs twice (run 1: workers
   import the segmentation code; run 2: a Dask worker is warm, a process pool is not).
2. Per-image costs on one core: reading a 2048 px sample, segmenting it, cutting its
   crops, and classifying one cell crop (``resnet10t`` at 64 px, the CPU default, and
   ``efficientnet_b0`` at 128 px, the GPU default, both on this CPU).
3. A projection of ``hpa predict`` (segmenting on the fly) over 75,000 2048 px samples on
   8 and 32 nodes, from the costs of (2) and the stated assumptions.

The markdown section is printed and, unless ``--no-write``, written as the
``## Distributed`` section of ``benchmarks/RESULTS.md`` (appended the first time).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment_bench import _shrink, _write_images, machine

from hpa.io import read_sample
from hpa.pipelines.cluster import start_local_cluster
from hpa.pipelines.segment import segment_folder

log = logging.getLogger("distributed_bench")
REPO = Path(__file__).resolve().parents[1]
TITLE = "## Distributed (benchmarks/distributed_bench.py)"

# Projection assumptions (not measured here; stated in the report).
CORES_PER_NODE = 16
GPU_CELLS_PER_S = 10_000  # efficientnet_b0 at 128 px, bf16 inference on one H100 (assumed)
FS_BYTES_PER_S = {"NFS, 1 GB/s aggregate": 1e9, "parallel FS, 10 GB/s aggregate": 10e9}
N_SAMPLES = 75_000


def _real_images(data: Path) -> list[np.ndarray]:
    folder = data / "hpa-2021-samples"
    return [
        read_sample(folder / "images", p.name.split("_")[0])
        for p in sorted((folder / "reference-masks").glob("*"))
    ]


def speed(real: list[np.ndarray], tmp: Path) -> tuple[list[tuple[str, int, float, float]], dict[str, float]]:
    """Rows ``(how, run, seconds, images/s)`` and the Dask clusters' start-up seconds."""
    from distributed import Client, LocalCluster

    images = tmp / "img512"
    _write_images(images, [_shrink(r, 512) for r in real] * 30)  # 120 images, as segment_bench
    n = len(list(images.glob("*_red.png")))
    rows: list[tuple[str, int, float, float]] = []
    startup: dict[str, float] = {}

    def timed(how: str, run: int, **kwargs: Any) -> None:
        out = tmp / "seg"
        shutil.rmtree(out, ignore_errors=True)
        summary = segment_folder(images, out, progress=False, **kwargs)
        assert summary.n_done == n, summary
        rows.append((how, run, summary.seconds, n / summary.seconds))
        log.info("%s run %d: %.2f images/s", how, run, n / summary.seconds)

    for run in (1, 2):
        timed("`--workers 2` (process pool)", run, workers=2)
    for n_workers in (1, 2):
        t0 = time.perf_counter()
        cluster = start_local_cluster(n_workers)  # what `--scheduler local:N` starts
        with cluster, Client(cluster) as client:
            client.wait_for_workers(n_workers)
            startup[f"local:{n_workers}"] = time.perf_counter() - t0
            for run in (1, 2):
                timed(f"Dask `local:{n_workers}`", run, scheduler=cluster.scheduler_address)
    # for comparison: dask's default worker environment (MALLOC_TRIM_THRESHOLD_=65536)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        timed(f"Dask, 2 workers, dask's default `MALLOC_TRIM_THRESHOLD_={_trim()}`", 1,
              scheduler=cluster.scheduler_address)  # fmt: skip
    return rows, startup


def _trim() -> Any:
    import dask

    return dask.config.get("distributed.nanny.pre-spawn-environ").get("MALLOC_TRIM_THRESHOLD_")


def unit_costs(real: list[np.ndarray], tmp: Path) -> dict[str, float]:
    """Seconds per 2048 px image (read, segment, crop) and per cell crop, on one core."""
    import cv2
    import torch

    from hpa.classification.cache import image_views
    from hpa.classification.crops import CropSettings
    from hpa.classification.model import create_model
    from hpa.segmentation import segment

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    folder = tmp / "img2048"
    _write_images(folder, [_shrink(r, 2048) for r in real])
    ids = sorted({p.name.split("_")[0] for p in folder.glob("*_red.png")})
    nbytes = sum(p.stat().st_size for p in folder.iterdir()) / len(ids)
    t_read, t_seg, t_crop, n_cells, n_tiles = [], [], [], [], []
    for image_id in ids:
        t0 = time.perf_counter()
        image = read_sample(folder, image_id)
        t1 = time.perf_counter()
        cells, _ = segment(image)
        t2 = time.perf_counter()
        views = image_views(image, cells, image_id, CropSettings(crop_size=128))
        t3 = time.perf_counter()
        t_read.append(t1 - t0)
        t_seg.append(t2 - t1)
        t_crop.append(t3 - t2)
        n_cells.append(len(views.cell_ids))
        n_tiles.append(len(views.tiles))
    costs = {
        "bytes": nbytes,
        "read": float(np.mean(t_read)),
        "segment": float(np.mean(t_seg)),
        "crop": float(np.mean(t_crop)),
        "cells": float(np.mean(n_cells)),
        "tiles": float(np.mean(n_tiles)),
    }
    for backbone, side in (("resnet10t", 64), ("efficientnet_b0", 128)):
        model = create_model(backbone, 19, 4).eval()
        x = torch.randn(64, 4, side, side)
        with torch.inference_mode():
            model(x[:8])  # warm-up
            t0 = time.perf_counter()
            model(x)
            costs[f"cell_{backbone}"] = (time.perf_counter() - t0) / len(x)
    log.info("unit costs: %s", costs)
    return costs


def projection(c: dict[str, float], efficiency: float) -> list[str]:
    """Markdown lines: wall time of predict (segmenting on the fly) over 75,000 samples."""
    views = c["cells"] + c["tiles"]
    cpu_s = c["read"] + c["segment"] + c["crop"]  # per image, one core
    node_cpu = CORES_PER_NODE * efficiency / cpu_s  # images/s of one node's cores
    node_gpu = GPU_CELLS_PER_S / views  # images/s of one node's GPU
    node_cpu_only = CORES_PER_NODE * efficiency / (cpu_s + views * c["cell_efficientnet_b0"])
    lines = [
        f"Per 2048 px sample, one core of this CPU: read {c['read']:.2f} s ({c['bytes'] / 1e6:.1f} MB of PNG), "
        f"segment {c['segment']:.2f} s, cut crops {c['crop']:.2f} s; {c['cells']:.0f} cells + "
        f"{c['tiles']:.0f} tiles. Classifying one view on this CPU: {1e3 * c['cell_resnet10t']:.1f} ms "
        f"(resnet10t, 64 px), {1e3 * c['cell_efficientnet_b0']:.1f} ms (efficientnet_b0, 128 px).",
        "",
        f"Node assumed: {CORES_PER_NODE} cores like this one + 1 H100; parallel efficiency "
        f"{efficiency:.2f} (measured local:2 vs local:1 above, applied to {CORES_PER_NODE} workers); GPU "
        f"{GPU_CELLS_PER_S:,} views/s (efficientnet_b0 128 px bf16 inference: an assumption, no GPU here). "
        f"One node: CPU stages {node_cpu:.1f} images/s, GPU {node_gpu:.0f} images/s, "
        f"CPU-only classification {node_cpu_only:.2f} images/s.",
        "",
        "| 75,000 samples at 2048 px | 8 nodes | 32 nodes | bound by |",
        "|---|---|---|---|",
    ]
    for fs_name, fs in FS_BYTES_PER_S.items():
        fs_rate = fs / c["bytes"]
        cells = []
        for nodes in (8, 32):
            rate = min(nodes * node_cpu, nodes * node_gpu, fs_rate)
            cells.append(f"{N_SAMPLES / rate / 60:.0f} min ({rate:.0f} img/s)")
        bound = ["segmentation CPU" if min(n * node_cpu, fs_rate) == n * node_cpu else "shared FS reads"
                 for n in (8, 32)]  # fmt: skip
        lines.append(f"| CPU segment + GPU classify, {fs_name} (cap {fs_rate:.0f} img/s) "
                     f"| {cells[0]} | {cells[1]} | {bound[0]} / {bound[1]} |")  # fmt: skip
    cpu_only = [
        f"{N_SAMPLES / (n * node_cpu_only) / 60:.0f} min ({n * node_cpu_only:.0f} img/s)" for n in (8, 32)
    ]
    lines.append(f"| no GPU: efficientnet_b0 on the CPU workers | {cpu_only[0]} | {cpu_only[1]} | CPU |")
    nfs = min(FS_BYTES_PER_S.values()) / c["bytes"]
    lines += [
        "",
        f"Where the bottleneck moves: within a node, segmentation on the CPU is the slow stage "
        f"(the GPU could classify {node_gpu / node_cpu:.0f}x more images per second than {CORES_PER_NODE} "
        f"cores segment), so wall time falls linearly with nodes until the shared filesystem's "
        f"aggregate read bandwidth caps it: at 1 GB/s that is {nfs:.0f} images/s, reached at "
        f"{nfs / node_cpu:.0f} nodes; at 10 GB/s 32 nodes stay CPU-bound. The GPU becomes the "
        f"bottleneck only when the CPU work per image shrinks about {node_gpu / node_cpu:.0f}-fold "
        f"(precomputed masks via `--masks`), and without a GPU, classifying an image's "
        f"{views:.0f} views on the CPU costs {views * c['cell_efficientnet_b0'] / cpu_s:.1f}x its reading "
        f"+ segmentation. Dask adds one task per ~50-image shard (predict) or per image (segment), "
        f"small beside {cpu_s:.2f} s of work per image; cluster start-up and the workers' first "
        f"imports are paid once per run, not per image.",
    ]
    return lines


def report(rows: list, startup: dict[str, float], costs: dict[str, float], seconds: float) -> str:
    rate = {(how, run): r for how, run, _, r in rows}
    plain = max(rate[("`--workers 2` (process pool)", k)] for k in (1, 2))
    dask2 = max(rate[("Dask `local:2`", k)] for k in (1, 2))
    efficiency = max(rate[("Dask `local:2`", k)] for k in (1, 2)) / (
        2 * max(rate[("Dask `local:1`", k)] for k in (1, 2))
    )
    lines = [
        TITLE,
        "",
        "Command: `python benchmarks/distributed_bench.py` (one run, all figures below).  ",
        f"Machine: {machine()}. Bench wall time {seconds:.0f} s. dask/distributed {_dask_version()}.",
        "",
        "| `hpa segment`, 120 real samples at 512 px | run | seconds | images/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {how} | {run} | {s:.1f} | {r:.2f} |" for how, run, s, r in rows]
    lines += [
        "",
        "Cluster start-up (not in the timings above): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in startup.items())
        + ". Run 1 includes the workers' first import of the segmentation code; run 2 reuses "
        "warm Dask workers, while the process pool starts afresh every call. Best Dask `local:2` "
        f"/ best `--workers 2`: {dask2 / plain:.2f} (target >= 0.85).",
        "",
        "### Projection: `hpa predict --scheduler` (segmenting on the fly), 75,000 samples at 2048 px",
        "",
        *projection(costs, efficiency),
    ]
    return "\n".join(lines) + "\n"


def _dask_version() -> str:
    import distributed

    return str(distributed.__version__)


def write_section(path: Path, section: str) -> None:
    """Replace this bench's section of RESULTS.md, or append it at the end."""
    text = path.read_text()
    pattern = re.compile(re.escape(TITLE) + r"\n.*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section.rstrip("\n") + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=os.environ.get("HPA_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    real = _real_images(Path(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        rows, startup = speed(real, Path(tmp))
        costs = unit_costs(real, Path(tmp))
    section = report(rows, startup, costs, time.perf_counter() - start)
    sys.stdout.write(section)
    if not args.no_write:
        write_section(REPO / "benchmarks" / "RESULTS.md", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
