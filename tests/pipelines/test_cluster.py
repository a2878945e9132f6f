"""``--scheduler``: segment and predict on a real dask.distributed cluster over loopback."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from hpa.io import list_image_ids  # noqa: E402
from hpa.pipelines.cluster import (  # noqa: E402
    MISSING_DASK,
    ClusterError,
    check_shared_folders,
    split_shards,
    start_local_cluster,
)
from hpa.pipelines.predict import predict_folder  # noqa: E402
from hpa.pipelines.segment import segment_folder  # noqa: E402
from hpa.synthetic import write_dataset  # noqa: E402

N_IMAGES = 16  # synthetic; plus one truncated image that must land in failures.csv


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cluster() -> Any:
    """Two single-threaded worker processes, each behind a nanny that restarts it."""
    with start_local_cluster(2, silence_logs=logging.WARNING) as local:  # as `--scheduler local:2`
        yield local


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, n_train=N_IMAGES, n_test=0, seed=1, size=320)
    folder = root / "train"
    for color in ("red", "green", "blue", "yellow"):
        data = (folder / f"synth-train-00000_{color}.png").read_bytes()
        (folder / f"broken_{color}.png").write_bytes(data)
    data = (folder / "broken_blue.png").read_bytes()
    (folder / "broken_blue.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    return folder


@pytest.fixture(scope="module")
def reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every file of a single-process run."""
    out = tmp_path_factory.mktemp("reference")
    summary = segment_folder(images, out, workers=1, progress=False)
    assert (summary.n_done, summary.n_failed) == (N_IMAGES, 1)
    return _files(out)


def test_local_cluster_segments_byte_for_byte_and_resumes(
    images: Path, reference: dict[str, bytes], cluster: Any, tmp_path: Path
) -> None:
    out = tmp_path / "seg"
    summary = segment_folder(images, out, scheduler="local:2", progress=False)
    assert (summary.n_done, summary.n_skipped, summary.n_failed) == (N_IMAGES, 0, 1)
    files = _files(out)
    assert sorted(files) == sorted(reference)
    assert any(name.startswith("cells/") for name in files) and "cells.parquet" in files
    assert files == reference  # masks, tables, cells.parquet, failures.csv, config.yaml
    # resumable through a running scheduler: only unfinished images (and the failed one) are sent
    (out / "tables" / "synth-train-00003.parquet").unlink()
    again = segment_folder(images, out, scheduler=cluster.scheduler_address, progress=False)
    assert (again.n_done, again.n_skipped, again.n_failed) == (1, N_IMAGES - 1, 1)
    assert _files(out) == reference


def test_worker_killed_mid_run_leaves_complete_output(
    images: Path, reference: dict[str, bytes], cluster: Any, tmp_path: Path
) -> None:
    out = tmp_path / "seg"
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        victim = sorted(pids)[0]
        result: dict[str, Any] = {}

        def run() -> None:
            result["summary"] = segment_folder(
                images, out, scheduler=cluster.scheduler_address, progress=False
            )

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((out / "tables").glob("*.parquet")):
            time.sleep(0.005)
        finished_at_kill = len(list((out / "tables").glob("*.parquet")))
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert 0 < finished_at_kill < N_IMAGES  # the kill landed mid-run
        summary = result["summary"]
        assert (summary.n_done, summary.n_failed) == (N_IMAGES, 1)
        assert _files(out) == reference  # complete, and no half-written or temporary file
        client.wait_for_workers(2, timeout=30)  # the nanny restarted the worker
        assert victim not in client.run(os.getpid)


def test_distributed_predict_equals_local(
    tiny_dataset: dict[str, Path], tiny_model: Path, cluster: Any, tmp_path: Path
) -> None:
    ids = [*list_image_ids(tiny_dataset["images"])[::-1], "not-there"]  # custom order, one missing Id
    kwargs: dict[str, Any] = dict(masks=None, ids=ids, device="cpu", progress=False)  # segment on the fly
    local = predict_folder(tiny_dataset["images"], tiny_model, tmp_path / "local", workers=1, **kwargs)
    dist = predict_folder(
        tiny_dataset["images"], tiny_model, tmp_path / "dask", scheduler=cluster.scheduler_address, **kwargs
    )
    a, b = local.out, dist.out
    assert (dist.n_images, dist.n_failed, dist.n_cells) == (local.n_images, local.n_failed, local.n_cells)
    for name in ("submission.csv", "failures.csv", "thresholds.json"):
        assert (b / name).read_bytes() == (a / name).read_bytes(), name
    assert pd.read_csv(b / "submission.csv")["Id"].tolist() == ids
    for name in ("cell_predictions.parquet", "tile_predictions.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(b / name), pd.read_parquet(a / name), atol=1e-5, rtol=0)
    pd.testing.assert_frame_equal(pd.read_csv(b / "image_scores.csv"), pd.read_csv(a / "image_scores.csv"),
                                  atol=1e-5, rtol=0)  # fmt: skip
    assert _files(b / "masks") == _files(a / "masks")  # masks segmented on the workers
    assert not (b / "parts").exists()
    with distributed.Client(cluster) as client:  # each worker that scored loaded the model once
        cached = client.run(
            lambda: len(__import__("hpa.pipelines.predict_dask", fromlist=["_"])._MODEL_CACHE)
        )
    assert set(cached.values()) <= {0, 1} and sum(cached.values()) >= 1


def test_distributed_predict_of_a_blend_equals_local(
    tiny_dataset: dict[str, Path], tiny_model: Path, cluster: Any, tmp_path: Path
) -> None:
    import json
    import shutil

    blend = tmp_path / "blend"  # two members pooled their own ways, image scores blended
    for name, pooling in (("a", "max"), ("b", "mean")):
        shutil.copytree(tiny_model, blend / name)
        config = json.loads((blend / name / "config.json").read_text())
        (blend / name / "config.json").write_text(json.dumps({**config, "pooling": pooling}))
    shutil.copy(tiny_model / "thresholds.json", blend / "thresholds.json")
    spec = {"members": ["a", "b"], "weights": [0.6, 0.4], "combine": "image"}
    (blend / "ensemble.json").write_text(json.dumps(spec))
    kwargs: dict[str, Any] = dict(masks=tiny_dataset["masks"], device="cpu", progress=False)
    local = predict_folder(tiny_dataset["images"], blend, tmp_path / "local", workers=1, **kwargs)
    dist = predict_folder(
        tiny_dataset["images"], blend, tmp_path / "dask", scheduler=cluster.scheduler_address, **kwargs
    )
    a, b = local.out, dist.out
    assert (b / "submission.csv").read_bytes() == (a / "submission.csv").read_bytes()
    for name in ("cell_predictions.parquet", "tile_predictions.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(b / name), pd.read_parquet(a / name), atol=1e-5, rtol=0)
    pd.testing.assert_frame_equal(pd.read_csv(b / "image_scores.csv"), pd.read_csv(a / "image_scores.csv"),
                                  atol=1e-5, rtol=0)  # fmt: skip


def test_unusable_output_folder_names_folder_and_worker(cluster: Any, tmp_path: Path) -> None:
    with distributed.Client(cluster) as client:
        addresses = sorted(client.scheduler_info(n_workers=-1)["workers"])
        unseen = tmp_path / "made-on-another-machine"  # exists nowhere: as on a worker without the share
        with pytest.raises(ClusterError) as err:
            check_shared_folders(client, unseen)
        message = str(err.value)
        assert (
            f"cannot see the output folder {unseen}" in message and "shared by every Dask worker" in message
        )
        assert all(address in message for address in addresses)
        with pytest.raises(
            ClusterError, match=r"worker tcp://\S+: cannot write into the output folder /proc "
        ):
            check_shared_folders(client, "/proc")  # visible but not writable, even for root
        with pytest.raises(ClusterError, match="cannot see the input folder"):
            check_shared_folders(client, tmp_path, readable=[unseen])
        check_shared_folders(client, tmp_path, readable=[tmp_path])
        assert not list(tmp_path.iterdir())  # the probe file is gone


def test_missing_dask_is_a_clear_error(images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ClusterError, match=re.escape(MISSING_DASK)):
        segment_folder(images, tmp_path / "seg", scheduler="local:2", progress=False)
    assert not (tmp_path / "seg").exists()  # failed before writing anything
    code = (
        "import sys; sys.modules['distributed'] = None; from hpa.cli import main; "
        f"raise SystemExit(main(['segment', {str(images)!r}, '--out', {str(tmp_path / 'cli')!r}, "
        "'--scheduler', 'local:2']))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert MISSING_DASK in res.stderr and "Traceback" not in res.stderr


def test_bad_local_address_and_shards(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="local:N"):
        segment_folder(tmp_path, tmp_path / "seg", scheduler="local:0", progress=False)
    ids = [f"id{k}" for k in range(130)]
    shards = split_shards(ids, n_workers=2)
    assert [i for shard in shards for i in shard] == ids  # contiguous, in order
    assert len(shards) == 15 and max(map(len, shards)) == 9  # about 8 shards per worker
    assert max(map(len, split_shards(ids * 100, n_workers=2))) == 50
