"""The classifier and its self-describing model folder.

A model folder holds everything ``hpa predict --model DIR`` needs:

* ``config.json``: :class:`ModelConfig` (backbone, ``in_chans``, channel order,
  normalisation, crop settings, class names, label set, pooling);
* ``weights.safetensors``: the state dict (never a pickled module);
* ``thresholds.json``: per-class thresholds tuned on validation images.

The network is any timm backbone created with one input per chosen channel (the four
stains by default, see :mod:`hpa.classification.channels`). Cell crops and
whole-image tiles go through the same network and head: they are the same kind of
input (4-channel squares of one size) seen at different scales, so sharing the
weights doubles the data each feature is learnt from and costs one forward pass per
view at prediction time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hpa.artefacts.modeldir import ModelDir
from hpa.classification.channels import parse_channels
from hpa.classification.crops import CropSettings
from hpa.config import from_dict
from hpa.constants import CHANNELS, LABEL_SETS
from hpa.errors import HPAConfigError
from hpa.io import write_text_atomic

log = logging.getLogger(__name__)

CONFIG_FILE = ModelDir.CONFIG
WEIGHTS_FILE = ModelDir.WEIGHTS
THRESHOLDS_FILE = ModelDir.THRESHOLDS


@dataclass(frozen=True)
class Group:
    """One model of a blend: its share of the image scores and how it pools its views.

    Attributes:
        weight: share of the blended image scores (the groups' weights sum to 1).
        pooling: cell-to-image pooling of this model's cell scores.
        tile_weight: weight of its tile scores beside its pooled cell scores.
    """

    weight: float
    pooling: str
    tile_weight: float


@dataclass(frozen=True)
class ModelConfig:
    """What a trained classifier is and how its inputs are made.

    Attributes:
        backbone: timm model name.
        class_names: output classes, in order.
        label_set: ``"2018"`` or ``"2021"``.
        in_chans: input channels, ``len(channels)``.
        channels: the input channels, each a stain or a merge of stains (``"red+yellow"``
            is their mean; :mod:`hpa.classification.channels`); default the four stains.
        mean, std: per-channel normalisation of inputs scaled to [0, 1].
        crop: how cell crops and tiles are cut.
        pooling: cell-to-image pooling used when tuning the thresholds.
        tile_weight: weight of the tile scores when combined with pooled cell scores.
        use_cells, use_tiles: which views the model was trained on (and predicts with).
        intensity: how views are scaled to [0, 1] (:func:`unit_views`): ``"dataset"`` (by
            the dtype's maximum), ``"view"`` (by each view's own bright end) or ``"image"``
            (by its image's bright end, applied when the views are cut:
            ``crop.image_scale``). Folders written before this field existed are
            ``"dataset"``.
        input_size: the network's input side; views are cut at ``crop.crop_size`` and
            resized to it. None = the crop size.
        groups: several models blended image by image (set by
            :func:`hpa.classification.ensemble.load_predictor`, never saved): the
            network's outputs are ``len(groups)`` blocks of ``K`` probabilities, each
            pooled with its group's pooling and tile weight before the weighted mean
            (:func:`hpa.classification.inference.image_scores`). Empty for one model.
    """

    backbone: str
    class_names: tuple[str, ...]
    label_set: str
    in_chans: int = 4
    channels: tuple[str, ...] = CHANNELS
    mean: tuple[float, ...] = (0.08, 0.05, 0.05, 0.08)
    std: tuple[float, ...] = (0.12, 0.1, 0.12, 0.12)
    crop: CropSettings = field(default_factory=CropSettings)
    pooling: str = "max"
    tile_weight: float = 0.5
    use_cells: bool = True
    use_tiles: bool = True
    intensity: str = "dataset"
    input_size: int | None = None
    groups: tuple[Group, ...] = ()

    def __post_init__(self) -> None:
        check_model_config(self)

    @property
    def network_size(self) -> int:
        """The side of the network's inputs: ``input_size``, else the crop size."""
        return self.input_size or self.crop.crop_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def output_width(self) -> int:
        """Columns of the network's output: ``K`` per blended group (``K`` for one model)."""
        return self.num_classes * max(1, len(self.groups))

    @property
    def output_columns(self) -> list[str]:
        """Names of the output columns: the classes, or ``class@group`` for a blend."""
        if not self.groups:
            return list(self.class_names)
        return [f"{name}@{g}" for g in range(len(self.groups)) for name in self.class_names]

    def to_json(self) -> dict[str, Any]:
        data = {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}
        data["crop"]["tile_grids"] = list(self.crop.tile_grids)
        if not self.groups:  # a model folder's config.json; blends are never saved
            del data["groups"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = CONFIG_FILE) -> ModelConfig:
        """Build from ``config.json``'s content; every problem names ``source`` and the field.

        Raises:
            HPAConfigError: an unknown ``format_version``, a missing, unknown or mistyped
                field, or inconsistent values (:func:`check_model_config`).
        """
        if not isinstance(data, dict):
            raise HPAConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)  # folders of hpa < 0.2 have none
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise HPAConfigError(
                f"{source}: format_version {version!r} is not one this hpa reads ({FORMAT_VERSION}); "
                "use the hpa version that wrote the model, or retrain"
            )
        missing = [f for f in ("backbone", "class_names", "label_set") if f not in data]
        if missing:
            raise HPAConfigError(f"{source}: missing field(s) {missing}")
        crop = data.get("crop", {})
        if not isinstance(crop, dict):
            raise HPAConfigError(f"{source}: field 'crop' must be an object, got {type(crop).__name__}")
        data["crop"] = from_dict(CropSettings, crop, source=f"{source}: crop")
        return from_dict(cls, data, source=source)


#: Version of the ``config.json`` layout; a reader refuses other versions.
FORMAT_VERSION = 1


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_model_config(cfg: ModelConfig) -> None:
    """Check types, lengths and ranges of a model config (fields are named in the error).

    Raises:
        HPAConfigError: e.g. a class list that is not the label set's, a ``mean`` or
            ``std`` whose length is not ``in_chans``, unknown channels, a non-positive
            ``std``, ``use_cells`` and ``use_tiles`` both false.
    """
    from hpa.aggregation import POOLING_METHODS

    def bad(field_name: str, problem: str) -> HPAConfigError:
        return HPAConfigError(f"field {field_name!r}: {problem}")

    if not isinstance(cfg.backbone, str) or not cfg.backbone:
        raise bad("backbone", f"expected a timm model name, got {cfg.backbone!r}")
    if cfg.label_set not in LABEL_SETS:
        raise bad("label_set", f"expected one of {sorted(LABEL_SETS)}, got {cfg.label_set!r}")
    if tuple(cfg.class_names) != LABEL_SETS[cfg.label_set]:
        raise bad(
            "class_names",
            f"{len(cfg.class_names)} names that are not the {cfg.label_set} label set's "
            f"{len(LABEL_SETS[cfg.label_set])} classes in order",
        )
    try:
        valid = parse_channels(",".join(cfg.channels)) == tuple(cfg.channels)
    except (HPAConfigError, TypeError):
        valid = False
    if not valid:
        raise bad(
            "channels",
            f"expected stains of {list(CHANNELS)} or '+'-joined merges, each once, got {list(cfg.channels)}",
        )
    if isinstance(cfg.in_chans, bool) or cfg.in_chans != len(cfg.channels):
        raise bad("in_chans", f"expected {len(cfg.channels)} (one per channel), got {cfg.in_chans!r}")
    for name in ("mean", "std"):
        values = getattr(cfg, name)
        if len(values) != cfg.in_chans or not all(_is_number(v) for v in values):
            raise bad(name, f"expected {cfg.in_chans} finite numbers (one per channel), got {list(values)}")
    if not all(v > 0 for v in cfg.std):
        raise bad("std", f"every value must be > 0, got {list(cfg.std)}")
    if cfg.pooling not in POOLING_METHODS:
        raise bad("pooling", f"expected one of {POOLING_METHODS}, got {cfg.pooling!r}")
    if not (_is_number(cfg.tile_weight) and 0.0 <= cfg.tile_weight <= 1.0):
        raise bad("tile_weight", f"expected a number in [0, 1], got {cfg.tile_weight!r}")
    for name in ("use_cells", "use_tiles"):
        if not isinstance(getattr(cfg, name), bool):
            raise bad(name, f"expected true or false, got {getattr(cfg, name)!r}")
    if not (cfg.use_cells or cfg.use_tiles):
        raise bad("use_cells", "use_cells and use_tiles are both false: the model would predict nothing")
    crop = cfg.crop
    if isinstance(crop.crop_size, bool) or not isinstance(crop.crop_size, int) or crop.crop_size < 8:
        raise bad("crop.crop_size", f"expected an integer >= 8, got {crop.crop_size!r}")
    if not (_is_number(crop.margin) and crop.margin >= 0):
        raise bad("crop.margin", f"expected a number >= 0, got {crop.margin!r}")
    if not crop.tile_grids or not all(
        isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in crop.tile_grids
    ):
        raise bad("crop.tile_grids", f"expected positive integers, got {list(crop.tile_grids)}")
    if cfg.intensity not in INTENSITIES:
        raise bad("intensity", f"expected one of {list(INTENSITIES)}, got {cfg.intensity!r}")
    if (cfg.intensity == "image") != bool(crop.image_scale):
        raise bad("crop.image_scale", f"{crop.image_scale!r} does not match intensity {cfg.intensity!r}")
    size = cfg.input_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise bad("input_size", f"expected an integer >= 8 or null, got {size!r}")
    for g in cfg.groups:
        if not isinstance(g, Group) or g.pooling not in POOLING_METHODS or not _is_number(g.weight):
            raise bad("groups", f"expected blended groups with a known pooling, got {g!r}")


def create_model(
    backbone: str,
    num_classes: int,
    in_chans: int = 4,
    pretrained: str | None = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """A timm classifier with ``in_chans`` inputs.

    Args:
        backbone: timm model name, e.g. ``"resnet18"`` or ``"efficientnet_b0"``.
        num_classes: outputs of the new head.
        in_chans: input channels; timm adapts a 3-channel first layer itself.
        pretrained: ``None`` for random initialisation; ``"imagenet"`` for the ImageNet
            weights of EfficientNet-Lite0 shipped in a package (offline; ``backbone``
            must be ``tf_efficientnet_lite0``, or the legacy ``efficientnet_lite0``); a local checkpoint file (``.safetensors``,
            ``.pth``, ``.bin``) in timm's layout, or in efficientnet_pytorch's for a
            timm EfficientNet, loaded and adapted offline by timm (head dropped when the
            class count differs); ``"hub"`` for timm's default pretrained weights,
            downloaded by timm.

    Raises:
        ValueError: unknown backbone.
        HPAConfigError: ``"imagenet"`` with another backbone, or a checkpoint whose
            tensors do not fit the backbone (the first mismatch is named).
        FileNotFoundError: the local checkpoint does not exist.
        RuntimeError: hub weights asked for but not reachable, with what to do instead.
    """
    import timm

    if not timm.is_model(backbone):
        raise ValueError(f"unknown timm backbone {backbone!r}; see timm.list_models()")
    kwargs: dict[str, Any] = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
    if pretrained is None or pretrained == "none":
        return timm.create_model(backbone, pretrained=False, **kwargs)
    if pretrained == "hub":
        try:
            return timm.create_model(backbone, pretrained=True, **kwargs)
        except Exception as exc:  # network, hub or cache errors come in many types
            cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
            raise RuntimeError(
                f"could not download pretrained weights for {backbone!r} ({type(exc).__name__}: {exc}). "
                f"Without a network, download the checkpoint elsewhere (timm's pretrained_cfg for "
                f"{backbone} names its Hugging Face repository) and pass the file with "
                f"--pretrained PATH, or copy the Hugging Face cache to {cache}."
            ) from exc
    from hpa.classification import pretrained as weights

    if pretrained == weights.IMAGENET:
        weights.check_imagenet_backbone(backbone)
        state = weights.timm_state_from_efficientnet_pytorch(backbone, weights.imagenet_weights_file())
        return weights.create_from_state(backbone, state, num_classes, in_chans, drop_rate)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: pretrained checkpoint not found (give a file, 'imagenet', 'hub' or 'none')"
        )
    if weights.is_efficientnet_pytorch(weights.read_state_dict(path)):
        state = weights.timm_state_from_efficientnet_pytorch(backbone, path)
        return weights.create_from_state(backbone, state, num_classes, in_chans, drop_rate)
    log.info(
        "loading %s weights from %s and adapting the first layer to %d channels", backbone, path, in_chans
    )
    return timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


def save_model_folder(folder: str | Path, config: ModelConfig, model: nn.Module) -> None:
    """Write ``config.json`` and ``weights.safetensors`` into ``folder`` (atomically).

    The weights are serialised in memory and written as every other file is
    (:func:`hpa.io.write_bytes_atomic`): the same file mode, and a full disk reported
    as ``OSError(ENOSPC)`` naming the file (safetensors' own writer gives 0600 files and
    a ``SafetensorError``).
    """
    from safetensors.torch import save

    from hpa.io import write_bytes_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(folder / WEIGHTS_FILE, save(state, metadata={"backbone": config.backbone}))
    write_text_atomic(folder / CONFIG_FILE, json.dumps(config.to_json(), indent=2) + "\n")


def load_model_config(folder: str | Path) -> ModelConfig:
    """Read and check a model folder's ``config.json``.

    Raises:
        FileNotFoundError: no ``config.json``.
        HPAConfigError: not JSON, or any field missing, unknown, mistyped or out of
            range (:meth:`ModelConfig.from_json`); the message names the file and field.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder}: not a model folder (no {CONFIG_FILE}); train one with hpa train-cells"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HPAConfigError(f"{path}: not a valid JSON file ({exc})") from None
    return ModelConfig.from_json(data, source=str(path))


def load_model(folder: str | Path, device: str = "cpu") -> tuple[nn.Module, ModelConfig]:
    """Build the network of a model folder and load its weights, in eval mode.

    Raises:
        FileNotFoundError: no ``config.json`` or no weights file.
        HPAConfigError: a malformed ``config.json``, an unknown backbone, or weights that
            are not a safetensors file or do not fit the configured network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = load_model_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: model weights missing")
    import timm

    if not timm.is_model(config.backbone):
        raise HPAConfigError(
            f"{folder / CONFIG_FILE}: field 'backbone': {config.backbone!r} is not a timm model"
        )
    model = create_model(config.backbone, config.num_classes, config.in_chans)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise HPAConfigError(f"{weights}: not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise HPAConfigError(
            f"{weights}: the weights do not fit config.json's {config.backbone} with "
            f"{config.num_classes} classes ({first[0].strip()})"
        ) from None
    return model.to(device).to(memory_format=torch.channels_last).eval(), config


def normalise(
    batch: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    scale: float,
    mix: torch.Tensor | None = None,
    intensity: str = "dataset",
    size: int | None = None,
) -> torch.Tensor:
    """``(B, H, W, 4)`` integer views to normalised ``(B, C, H, W)`` float32 network inputs.

    Args:
        batch: raw views (uint8 or int32 holding uint16 values).
        mean, std: ``(C,)`` statistics of the inputs after :func:`unit_views` and ``mix``.
        scale: the dtype's maximum (255 or 65535).
        mix: ``(C, 4)`` matrix making the input channels from the stains
            (:func:`hpa.classification.channels.channel_matrix`); None = the four as they are.
        intensity: ``"dataset"`` or ``"view"`` (:func:`unit_views`).
        size: the network's input side; views of another side are resized (bilinear).
    """
    x = unit_views(batch.permute(0, 3, 1, 2).float(), scale, intensity)
    if mix is not None:
        x = torch.einsum("oc,bchw->bohw", mix, x)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return resize_views(x, size)


#: :attr:`ModelConfig.intensity` values.
INTENSITIES = ("dataset", "view", "image")

#: Quantile of a view's channel that :func:`unit_views` maps to 1 under ``"view"``.
VIEW_QUANTILE = 0.995


def unit_views(x: torch.Tensor, scale: float, intensity: str = "dataset") -> torch.Tensor:
    """``(B, C, H, W)`` float views of integer values to [0, 1].

    ``"dataset"`` divides by the dtype's maximum, so a dim image stays dim. ``"view"``
    divides every channel of every view by its own 99.5th percentile (plus one grey
    level) and clips: the pattern, not the exposure, reaches the network. HPA's green
    channel is exposed per antibody, so its brightness varies tenfold between images
    while the pattern is the label; on the 67 real Kaggle images of
    ``benchmarks/real_bench.py`` this is what lifted frozen ImageNet features above
    chance (benchmarks/RESULTS.md). ``"image"`` is ``"dataset"`` here: its views were
    already scaled by their image's bright end when they were cut
    (:func:`hpa.classification.crops.scale_image`), so a cell keeps its brightness
    relative to its neighbours.

    >>> v = torch.tensor([[[[0.0, 10.0], [20.0, 40.0]]]])
    >>> round(unit_views(v, 255.0).amax().item(), 3)  # 40 / 255
    0.157
    >>> [round(unit_views(k * v, 255.0, "view").amax().item(), 2) for k in (1, 6)]
    [0.98, 1.0]
    """
    x = x / scale
    if intensity in ("dataset", "image"):
        return x
    if intensity != "view":
        raise ValueError(f"intensity must be one of {', '.join(INTENSITIES)}, got {intensity!r}")
    top = torch.quantile(x.flatten(2), VIEW_QUANTILE, dim=2)[..., None, None]
    return (x / (top + 1.0 / 255.0)).clamp_(0.0, 1.0)


def resize_views(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """``(B, C, S, S)`` views resized to ``size`` (bilinear, antialiased); None = as they are."""
    if size is None or size == x.shape[-1]:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
