"""Inference engines: what runs a network's forward pass over a batch of views.

Two places push views through a network: prediction
(:func:`hpa.classification.inference.score_views`: the classifier, one model or an
ensemble/blend of them) and the frozen probe's embedding of the training views
(:func:`hpa.classification.probe.embed_views`: the backbone up to its pooled features).
Both call an :class:`Engine` on a ``(B, C, S, S)`` float batch and get the network's
``(B, D)`` output back as a float tensor.

* ``torch``: the module itself (autocast and channels-last as the caller sets them); the
  only engine on a GPU.
* ``onnxruntime``: the module exported once with :func:`torch.onnx.export` (batch axis
  dynamic) and run by an ONNX Runtime CPU session in fp32. The export is cached as a
  file named by the digest of the network's weights and structure and of the input
  shape (:func:`network_digest`), beside the model folder's weights for prediction
  (``MODEL_DIR/engine-cache/``) and in the features cache for the probe's embedding. A
  sidecar JSON written after the graph records that digest and the graph file's own
  sha256: a file is used only when both match, so a cache of other weights, a partial
  or a corrupted file is rebuilt, never trusted.
* ``openvino``: the same cached ONNX export compiled by OpenVINO's CPU plugin in fp32
  (the optional ``openvino`` extra).

``auto`` picks openvino on the CPU when it is installed, else onnxruntime (when the run
is fp32), torch on CUDA; see :func:`resolve_engine`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from hpa.constants import ENGINES
from hpa.errors import HPAConfigError
from hpa.io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "Engine",
    "OnnxEngine",
    "OpenVinoEngine",
    "TorchEngine",
    "make_engine",
    "resolve_engine",
    "training_engine",
]
#: The ONNX opset of the exported graphs (part of the cache key).
OPSET = 17
_INPUT, _OUTPUT = "views", "outputs"
_SIDECAR_SUFFIX = ".json"


class Engine(Protocol):
    """A network's forward pass over a batch: ``(B, C, S, S)`` float -> ``(B, D)`` float."""

    #: ``torch``, ``onnxruntime`` or ``openvino``.
    name: str
    #: Output width (the classifier's classes; 0 when unknown).
    num_classes: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


#: The ONNX engines ``auto`` picks from on the CPU, the first installed: OpenVINO ran the
#: default backbone's ``hpa predict`` 1.15-1.3x faster than ONNX Runtime end to end on an
#: AVX2 CPU (benchmarks/predict_bench.py --engines, benchmarks/RESULTS.md); it is an
#: optional extra, ONNX Runtime a dependency.
AUTO_ORDER = ("openvino", "onnxruntime")

#: The package each engine that runs the ONNX export needs, with what installs it.
_PACKAGES = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install 'hpa-cells[openvino]'"}


def installed(engine: str) -> bool:
    """Whether the package of ``engine`` (``onnxruntime`` or ``openvino``) imports."""
    try:
        importlib.import_module(engine)
    except ImportError:
        return False
    return True


def check_engine(engine: str, flag: str = "--engine") -> str:
    """``engine`` when it is one of :data:`ENGINES`.

    Raises:
        HPAConfigError: another value, naming ``flag`` and the choices.
    """
    if engine not in ENGINES:
        raise HPAConfigError(f"{flag} must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def resolve_engine(engine: str, device: str, precision: str = "auto", flag: str = "--engine") -> str:
    """``torch``, ``onnxruntime`` or ``openvino`` for ``engine`` on ``device`` with ``precision`` as asked.

    ``precision`` is the setting as given (``auto``, ``bf16`` or ``fp32``), not resolved:
    ``auto`` means bf16 only where it is free, and the ONNX engines beat torch's bf16 on
    the CPU (OpenVINO in fp32 1.6x torch's native bf16 on an AVX512-BF16 CPU,
    benchmarks/RESULTS.md), so it does not bind the engine.

    ``auto``: torch on CUDA, and on the CPU when bf16 is asked for (both ONNX engines run
    the export in fp32); otherwise the first installed of :data:`AUTO_ORDER` (openvino,
    then onnxruntime), torch when neither is.

    >>> resolve_engine("auto", "cuda")
    'torch'

    Raises:
        HPAConfigError: an unknown engine; onnxruntime or openvino asked for on CUDA,
            with bf16, or without its package installed (with what to do instead).
    """
    check_engine(engine, flag)
    if engine == "torch":
        return "torch"
    on_gpu = device.startswith("cuda")
    if engine == "auto":
        if on_gpu or precision == "bf16":
            return "torch"
        return next((e for e in AUTO_ORDER if installed(e)), "torch")
    if on_gpu:
        raise HPAConfigError(f"{flag} {engine} runs on the CPU; on {device} use {flag} torch (or auto)")
    if precision == "bf16":
        raise HPAConfigError(
            f"{flag} {engine} runs in fp32; give --precision fp32 (or auto), or {flag} torch"
        )
    if not installed(engine):
        raise HPAConfigError(
            f"{flag} {engine}: the package {engine} is not installed "
            f"({_PACKAGES[engine]}), or use {flag} torch"
        )
    return engine


def training_engine(engine: str, device: str, precision: str = "auto") -> str:
    """The engine of a training run's frozen-backbone embedding (:func:`resolve_engine`).

    Training itself is torch's, in ``precision``: an ONNX engine given by name embeds in
    fp32 beside bf16 training, so only ``auto`` looks at the precision.

    >>> training_engine("torch", "cpu", "bf16")
    'torch'
    """
    return resolve_engine(engine, device, precision if engine == "auto" else "auto")


def engine_threads(workers: int, cores: int | None = None) -> int:
    """Engine threads beside ``workers`` decoding workers: together at most the cores."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores - max(0, workers))


def make_engine(
    module: nn.Module,
    engine: str,
    *,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    skip: tuple[str, ...] = (),
) -> Engine:
    """The :class:`Engine` ``engine`` (``torch``, ``onnxruntime`` or ``openvino``, resolved) of ``module``.

    Args:
        module: the network, in eval mode, on the CPU for onnxruntime and openvino.
        cache_dir: where the ONNX engines keep the exported graph (None: a temporary
            folder, exported again by every process).
        threads: the ONNX engine's threads (ONNX Runtime's intra-op threads, OpenVINO's
            inference threads; default: the cores).
        skip: parameter name prefixes left out of the digest (weights the forward pass
            does not use, such as an unused classifier).
    """
    if engine == "torch":
        return TorchEngine(module)
    if engine in _ONNX_ENGINES:
        kind = _ONNX_ENGINES[engine]
        if getattr(module, "export_members_apart", False):  # an EnsembleNet
            return _EnsembleEngine(module, cache_dir, threads or engine_threads(0), kind)
        return kind(module, cache_dir, threads or engine_threads(0), skip)
    raise ValueError(f"engine must be resolved to torch, onnxruntime or openvino, got {engine!r}")


class TorchEngine:
    """The module's own forward pass (today's path; the caller's autocast applies)."""

    name = "torch"

    def __init__(self, module: nn.Module):
        self.module = module
        self.num_classes = int(getattr(module, "num_classes", 0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class _MemberEngine(nn.Module):
    """An engine in a module's place (an ensemble member run by onnxruntime)."""

    def __init__(self, engine: OnnxEngine):
        super().__init__()
        self.engine = engine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine(x)


class _EnsembleEngine(TorchEngine):
    """An ensemble or blend (:class:`hpa.classification.ensemble.EnsembleNet`) whose members'
    networks run on an ONNX engine, each exported on its own (``cache_dir/member-<k>/``): the
    ensemble's own input scaling (a per-view quantile, which ONNX has no operator for),
    channel mixing, resizing and averaging stay torch's."""

    def __init__(self, module: nn.Module, cache_dir: str | Path | None, threads: int, kind: type[OnnxEngine]):
        members = list(module.nets)  # type: ignore[arg-type]
        clone = copy.copy(module)
        clone._modules = dict(module._modules)  # the original keeps its own members
        folders = [
            None if cache_dir is None else Path(cache_dir) / f"member-{k}" for k in range(len(members))
        ]
        clone.nets = nn.ModuleList(
            [_MemberEngine(kind(net, folder, threads)) for net, folder in zip(members, folders)]
        )
        super().__init__(clone)
        self.name = kind.name


def network_digest(module: nn.Module, shape: tuple[int, ...], skip: tuple[str, ...] = ()) -> str:
    """sha256 of what an exported graph computes: weights, structure, input shape, exporter.

    Every parameter and buffer (persistent or not: name, dtype, shape and bytes), each
    submodule's plain settings (numbers, strings and their lists: an ensemble's
    weights and sizes, a layer's stride), the ``(C, S, S)`` input shape, torch's
    version and the opset. Parameters under a ``skip`` prefix are left out.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"shape": list(shape), "torch": torch.__version__, "opset": OPSET}).encode())
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        if name.startswith(skip):
            continue
        data = t.detach().cpu().contiguous()
        h.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    for name, sub in module.named_modules():
        plain = {k: v for k, v in vars(sub).items() if not k.startswith("_") and _is_plain(v)}
        h.update(f"{name}:{type(sub).__name__}:{json.dumps(plain, sort_keys=True, default=str)}".encode())
    return h.hexdigest()


def _is_plain(v: Any) -> bool:
    if isinstance(v, bool | int | float | str) or v is None:
        return True
    return isinstance(v, list | tuple) and all(_is_plain(x) for x in v)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxEngine:
    """The module's ONNX export run by an ONNX Runtime CPU session (fp32), exported on first use.

    The graph's views side and channels are fixed by the first batch; its batch axis is
    dynamic. A batch of another shape gets its own export (another cache file).
    """

    name = "onnxruntime"

    def __init__(
        self, module: nn.Module, cache_dir: str | Path | None, threads: int, skip: tuple[str, ...] = ()
    ):
        self.module = module.eval()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads
        self.skip = skip
        self.num_classes = int(getattr(module, "num_classes", 0))
        self._sessions: dict[tuple[int, ...], Callable[[np.ndarray], np.ndarray]] = {}
        self._tmp: Path | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(int(s) for s in x.shape[1:])
        run = self._sessions.get(shape)
        if run is None:
            run = self._sessions[shape] = self._session(shape)
        return torch.from_numpy(run(np.ascontiguousarray(x.detach().float().cpu().numpy())))

    def graph_path(self, shape: tuple[int, ...]) -> Path:
        """The cache file of the export for inputs of ``shape`` (its name holds the digest)."""
        return self._path(network_digest(self.module, shape, self.skip))

    def _path(self, digest: str) -> Path:
        folder = self.cache_dir
        if folder is None:
            if self._tmp is None:  # removed with the engine (no ResourceWarning, unlike TemporaryDirectory)
                self._tmp = Path(tempfile.mkdtemp(prefix="hpa-onnx-"))
                weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
            folder = self._tmp
        return folder / f"{digest[:24]}.onnx"

    def _session(self, shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
        """The forward pass over ``(B, *shape)`` arrays: the cached export (made first if need be), loaded."""
        digest = network_digest(self.module, shape, self.skip)
        path = self._path(digest)
        if _trusted(path, digest):
            log.info("engine %s: the export in %s (its digest matches)", self.name, path)
        else:
            path = self._export(path, digest, shape)
        return self._load(path)

    def _load(self, path: Path) -> Callable[[np.ndarray], np.ndarray]:
        """An ONNX Runtime CPU session of the graph at ``path``, as a function of the input array."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        log.info("engine onnxruntime: %d intra-op thread(s)", self.threads)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda arr: session.run([_OUTPUT], {_INPUT: arr})[0]

    def _export(self, path: Path, digest: str, shape: tuple[int, ...]) -> Path:
        """Export the module to ``path`` (atomically), then its sidecar; drop stale exports beside it.

        Returns the file written: ``path``, or one in a temporary folder when the cache
        folder is not writable.
        """
        example = torch.zeros((2, *shape), dtype=torch.float32)
        size = "x".join(map(str, shape))
        log.info("engine %s: exporting the network for %s inputs to %s", self.name, size, path)
        try:
            with atomic_path(path) as tmp:
                _onnx_export(self.module, example, tmp)
            record = {"digest": digest, "shape": list(shape), "onnx_sha256": _file_sha256(path)}
            with atomic_path(_sidecar(path)) as tmp:
                tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        except PermissionError as exc:
            if self.cache_dir is None:
                raise
            log.warning("%s: engine cache not writable (%s); exporting into a temporary folder", path, exc)
            self.cache_dir = None
            return self._export(self._path(digest), digest, shape)
        for stale in path.parent.glob("*.onnx"):  # earlier weights' exports for the same inputs
            if stale != path and _sidecar_shape(stale) in (None, list(shape)):
                stale.unlink(missing_ok=True)
                _sidecar(stale).unlink(missing_ok=True)
        return path


class OpenVinoEngine(OnnxEngine):
    """The module's ONNX export (the same cached file as :class:`OnnxEngine`'s) compiled by
    OpenVINO for the CPU: fp32 inference precision, one stream of ``threads`` threads, not
    pinned to cores (the decoding workers share them), the batch axis left dynamic."""

    name = "openvino"

    def _load(self, path: Path) -> Callable[[np.ndarray], np.ndarray]:
        import openvino as ov

        compiled = ov.Core().compile_model(
            str(path),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False,
            },
        )
        log.info("engine openvino %s: %d thread(s)", ov.__version__, self.threads)
        request = compiled.create_infer_request()
        return lambda arr: request.infer({0: arr})[0]  # a copy: the request's buffers are reused


#: The engines that run the cached ONNX export, by name.
_ONNX_ENGINES: dict[str, type[OnnxEngine]] = {"onnxruntime": OnnxEngine, "openvino": OpenVinoEngine}


def _sidecar(path: Path) -> Path:
    return path.with_suffix(_SIDECAR_SUFFIX)


def _sidecar_shape(path: Path) -> list[int] | None:
    """The input shape the export at ``path`` records (None: no readable record)."""
    try:
        return list(json.loads(_sidecar(path).read_text(encoding="utf-8"))["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _trusted(path: Path, digest: str) -> bool:
    """Whether ``path`` is a finished export of the network of ``digest``, byte for byte."""
    if not path.is_file():
        return False
    try:
        record = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.info("%s: no readable record of the export; exporting again", path)
        return False
    if record.get("digest") != digest:
        log.info("%s: exported from other weights; exporting again", path)
        return False
    if record.get("onnx_sha256") != _file_sha256(path):
        log.warning(
            "%s: the file differs from the export recorded (partial or corrupted); exporting again", path
        )
        return False
    return True


def _onnx_export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``torch.onnx.export`` of ``module`` at ``example``'s shape, the batch axis dynamic, in fp32
    (a caller's bf16 autocast would trace a graph of mixed types that the engines refuse)."""
    no_autocast = torch.autocast("cpu", enabled=False)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), no_autocast:
        # the TorchScript exporter: no onnxscript needed; torch>=2.9 warns that it is the older one
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[_INPUT],
            output_names=[_OUTPUT],
            dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
