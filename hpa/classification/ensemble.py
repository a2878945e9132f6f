"""Several model folders as one classifier: the folds of a run, or any weighted mix.

A folder written by ``hpa train-cells --folds K`` (without ``--fold``) holds one
complete model folder per fold (``fold-<k>/``), an ``ensemble.json`` naming them, the
out-of-fold view scores of every training image (``oof_view_scores.parquet``), their
labels (``oof_labels.csv``) and thresholds tuned on them. ``hpa predict --model DIR``
averages the folds' probabilities; ``--model A --model B --model-weights 0.6 0.4``
averages several folders (a fold folder counts as one member, its folds sharing its
weight).

Each member keeps its own input channels, normalisation and crop size: views are cut
once at the largest member's size with the shared crop settings, and
:class:`EnsembleNet` resizes, mixes and normalises them per member before averaging
the members' probabilities.

Folds of one run share their pooling and tile weight, so their view probabilities are
averaged. Different models are **blended image by image**: each ``--model`` folder,
and each member of a blend folder (``ensemble.json`` with ``"combine": "image"``,
written by :mod:`hpa.pipelines.blend`), is a :class:`Group` that pools its own views
with its own pooling and tile weight; the image scores are then averaged with the
groups' weights. A mean-pooled and a max-pooled model are each judged as they were
tuned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from hpa.aggregation import ThresholdResult, load_thresholds, tune_thresholds
from hpa.artefacts.modeldir import ModelDir
from hpa.artefacts.tables import ID_COLUMN, read_csv_table
from hpa.classification.channels import channel_matrix
from hpa.classification.inference import pool_views
from hpa.classification.model import (
    THRESHOLDS_FILE,
    Group,
    ModelConfig,
    load_model,
    load_model_config,
    resize_views,
    unit_views,
)
from hpa.constants import CHANNELS
from hpa.errors import HPAConfigError
from hpa.io import read_labels

log = logging.getLogger(__name__)

ENSEMBLE_FILE = ModelDir.ENSEMBLE
OOF_VIEWS_FILE = ModelDir.OOF_VIEWS
OOF_LABELS_FILE = ModelDir.OOF_LABELS
OOF_IMAGES_FILE = ModelDir.OOF_IMAGES
#: Columns identifying a view across members (same masks, same tile grids).
VIEW_KEY = ["image_id", "kind", "cell_id"]
#: ``ensemble.json``'s ``combine`` of a blend folder: members blended image by image.
BLEND = "image"
#: The main model's folder inside a blend folder.
MAIN = "main"


def tune_on_views(
    index: pd.DataFrame,
    probs: np.ndarray,
    ids: Sequence[str],
    y: np.ndarray,
    pooling: str,
    use_cells: bool,
    use_tiles: bool,
    tile_weight: float | None,
    shrink: float,
) -> tuple[float, np.ndarray, ThresholdResult, dict[float, float]]:
    """Tile weight and per-class thresholds from view probabilities of labelled images.

    Args:
        index: one row per view (``image_id``, ``kind``).
        probs: ``(len(index), K)`` view probabilities.
        ids: the images, in the order of ``y``.
        y: ``(len(ids), K)`` multi-hot labels.
        pooling: cell-to-image pooling.
        use_cells, use_tiles: which views make the image score.
        tile_weight: a fixed weight, or None to pick the best of
            :data:`hpa.classification.train.TILE_WEIGHTS` by macro F1 (cells and tiles only;
            :func:`hpa.aggregation.selection.choose_weight`, as for a single model).
        shrink: threshold shrinkage (:func:`hpa.aggregation.tune_thresholds`).

    Returns:
        ``(tile_weight, image_scores, thresholds, {weight: macro F1})``.
    """
    from hpa.aggregation.selection import choose_weight, tuned_macro_f1
    from hpa.classification.train import TILE_WEIGHTS

    def pooled(w: float) -> np.ndarray:
        return pool_views(index, probs, ids, pooling, w, use_cells, use_tiles)

    if tile_weight is not None or not (use_cells and use_tiles):
        w = 0.5 if tile_weight is None else tile_weight
        scores = pooled(w)
        return w, scores, tune_thresholds(y, scores, shrink=shrink), {}
    choice = choose_weight(y, TILE_WEIGHTS, pooled, tuned_macro_f1(shrink))
    return choice.weight, choice.scores, tune_thresholds(y, choice.scores, shrink=shrink), choice.metric


@dataclass(frozen=True)
class Member:
    """One model folder of an ensemble, its share of the average and its :class:`Group`."""

    folder: Path
    weight: float
    group: int = 0


def _shares(folders: Sequence[str | Path], weights: Sequence[float] | None) -> np.ndarray:
    """``--model-weights`` (default equal), checked and normalised to sum to 1."""
    if weights is not None and len(weights) != len(folders):
        raise HPAConfigError(
            f"--model-weights gives {len(weights)} weights for {len(folders)} --model folders"
        )
    w = np.asarray(weights if weights is not None else [1.0] * len(folders), dtype=np.float64)
    if not (np.isfinite(w) & (w > 0)).all():
        raise HPAConfigError(
            f"--model-weights {' '.join(f'{v:g}' for v in w)}: each weight must be a number > 0 "
            "(leave a model out rather than weight it 0)"
        )
    return w / w.sum()


def expand_groups(
    folders: Sequence[str | Path], weights: Sequence[float] | None = None
) -> tuple[list[Member], list[Group]]:
    """The plain model folders behind ``folders`` and the groups they are blended in.

    A plain folder is a group of one; a ``--folds`` folder is one group of its folds
    (sharing its weight); a blend folder contributes each of its members as a group.
    Member weights sum to 1, and so do the groups'.

    Raises:
        HPAConfigError: weights do not match the folders, or are not positive.
    """
    members: list[Member] = []
    groups: list[Group] = []

    def add(folder: Path, share: float) -> None:
        spec = read_ensemble(folder)
        if spec is not None and spec.get("combine") == BLEND:
            if any((folder / m / ModelDir.FEATURE_HEAD).is_file() for m in spec["members"]):
                raise HPAConfigError(
                    f"{folder}: blended with the features companion (a head on localisation features, "
                    "measured from the images and their masks): score it with hpa predict (predict_folder), "
                    "on its own"
                )
            inner = np.asarray(spec["weights"], dtype=np.float64)
            for m, v in zip(spec["members"], inner / inner.sum()):
                add(folder / m, share * float(v))
            return
        pooling, tile_weight = _pooling_of(folder, spec)
        groups.append(Group(share, pooling, tile_weight))
        if spec is None:
            members.append(Member(folder, share, len(groups) - 1))
            return
        inner = np.asarray(spec["weights"], dtype=np.float64)
        members.extend(
            Member(folder / m, share * float(v), len(groups) - 1)
            for m, v in zip(spec["members"], inner / inner.sum())
        )

    for folder, share in zip(folders, _shares(folders, weights)):
        add(Path(folder), float(share))
    return members, groups


def expand_members(folders: Sequence[str | Path], weights: Sequence[float] | None = None) -> list[Member]:
    """The plain model folders behind ``folders``, with their weights (summing to 1)."""
    return expand_groups(folders, weights)[0]


def _pooling_of(folder: Path, spec: dict[str, Any] | None) -> tuple[str, float]:
    """The pooling and tile weight a folder's thresholds were tuned with."""
    if spec is not None and "pooling" in spec and "tile_weight" in spec:
        return str(spec["pooling"]), float(spec["tile_weight"])
    cfg = load_model_config(folder if spec is None else folder / spec["members"][0])
    return cfg.pooling, cfg.tile_weight


def read_ensemble(folder: str | Path) -> dict[str, Any] | None:
    """A folder's ``ensemble.json``, or None for a plain model folder.

    Raises:
        HPAConfigError: the file is malformed or names a missing member.
    """
    path = Path(folder) / ENSEMBLE_FILE
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        members, weights = list(spec["members"]), list(spec["weights"])
    except (ValueError, KeyError, TypeError) as exc:
        raise HPAConfigError(f"{path}: malformed ensemble file ({exc})") from exc
    if not members or len(weights) != len(members):
        raise HPAConfigError(
            f"{path}: needs members and one weight per member ({len(members)} members, {len(weights)} weights)"
        )
    _check_weights(path, weights)
    root = Path(folder).resolve()
    for m in members:
        if not isinstance(m, str) or not m.strip():
            raise HPAConfigError(f"{path}: member {m!r} is not a folder name")
        member = (Path(folder) / m).resolve()
        if member == root or root not in member.parents:
            raise HPAConfigError(
                f"{path}: member {m!r} is not a folder inside {folder}; members are sub-folders (fold-0, main)"
            )
        if not (Path(folder) / m).is_dir():
            raise HPAConfigError(f"{path}: member {m} is missing (an unfinished --folds run?)")
    return spec


def _check_weights(path: Path, weights: Sequence[Any]) -> None:
    """Refuse member weights that are not finite non-negative numbers with a positive sum.

    Raises:
        HPAConfigError: naming ``path`` and the weights.
    """
    try:
        w = np.asarray([float(v) for v in weights if not isinstance(v, bool)], dtype=np.float64)
    except (TypeError, ValueError):
        w = np.array([np.nan])
    if len(w) != len(weights) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise HPAConfigError(
            f"{path}: weights must be finite numbers >= 0, not all zero, got {list(weights)}"
        )


class SharedTrunk(nn.Module):
    """Members whose networks differ in their classifier alone: the features once, each classifier on them.

    The folds of a frozen-backbone run (``freeze_epochs: -2``, the CPU default) share
    every weight but their heads. Output: ``(B, M * K)``, the ``M`` members' logits
    side by side, as their own networks give them (checked when it is built:
    :func:`_share_trunks`).
    """

    def __init__(self, nets: Sequence[nn.Module]):
        from hpa.classification.probe import PooledFeatures

        super().__init__()
        self.features = PooledFeatures(nets[0])
        self.heads = nn.ModuleList([net.get_classifier() for net in nets])  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.cat([head(f) for head in self.heads], dim=1)


def _trunk_key(net: nn.Module, cfg: ModelConfig) -> str | None:
    """What a member's features depend on: its weights but the classifier's, and its input preparation."""
    from hpa.classification.engine import network_digest
    from hpa.classification.probe import PooledFeatures

    if not (hasattr(net, "forward_head") and hasattr(net, "get_classifier")):
        return None
    trunk = PooledFeatures(net)
    prep = [cfg.network_size, cfg.intensity, list(cfg.channels), list(cfg.mean), list(cfg.std)]
    return network_digest(trunk, (0,), trunk.unused()) + json.dumps(prep)


def _share_trunks(nets: Sequence[nn.Module], configs: Sequence[ModelConfig]) -> list[list[int]]:
    """Members that can share one :class:`SharedTrunk`, as lists of member indices (singletons run whole).

    Members share a trunk when every weight but the classifier's is the same and their
    views are prepared alike, and when the shared pass gives their own logits (within
    1e-4, on a random batch; otherwise each runs whole).
    """
    by_key: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for k, (net, cfg) in enumerate(zip(nets, configs)):
        key = _trunk_key(net, cfg) if not net.training else None
        if key is None:
            units.append([k])
        elif key in by_key:
            by_key[key].append(k)
        else:
            by_key[key] = [k]
            units.append(by_key[key])
    checked: list[list[int]] = []
    for unit in units:
        if len(unit) > 1 and not _same_logits([nets[k] for k in unit], configs[unit[0]]):
            log.info("members %s differ beyond their classifiers: each runs whole", unit)
            checked.extend([k] for k in unit)
        else:
            checked.append(unit)
    return checked


@torch.no_grad()
def _same_logits(nets: Sequence[nn.Module], cfg: ModelConfig) -> bool:
    param = next(nets[0].parameters())
    x = torch.rand(
        2, cfg.in_chans, cfg.network_size, cfg.network_size, generator=torch.Generator().manual_seed(0)
    )
    x = x.to(param.device)
    shared = SharedTrunk(nets)(x).float()
    whole = torch.cat([net(x) for net in nets], dim=1).float()
    return bool(torch.allclose(shared, whole, atol=1e-4, rtol=1e-4))


class EnsembleNet(nn.Module):
    """Members' networks behind one forward pass: per group, the weighted mean of their probabilities.

    Input: ``(B, 4, S, S)`` float views scaled to [0, 1] (the ensemble's config has mean
    0, std 1 and the four stains). Each member resizes them to its crop size, mixes its
    channels, normalises with its statistics and scores them. Output: ``(B, G * K)``,
    the logit of each group's mean probability, groups side by side (``G`` = 1 for the
    folds of one run), so :func:`hpa.classification.inference.score_views` (which applies
    the sigmoid) returns the mean probabilities.

    ``nets`` holds one network per unit of work: a member's own, or a
    :class:`SharedTrunk` of the members whose networks differ in their classifier alone
    (the folds of a frozen-backbone run: their views are embedded once, not once a fold);
    ``unit_members`` lists the members each one scores.
    """

    #: an engine exports each unit's network on its own (the per-view quantile scaling
    #: has no ONNX operator): :func:`hpa.classification.engine.make_engine` reads this
    export_members_apart = True

    def __init__(
        self,
        nets: Sequence[nn.Module],
        configs: Sequence[ModelConfig],
        weights: Sequence[float],
        groups: Sequence[int] | None = None,
    ):
        super().__init__()
        self.unit_members = _share_trunks(nets, configs)
        self.nets = nn.ModuleList(
            [nets[u[0]] if len(u) == 1 else SharedTrunk([nets[k] for k in u]) for u in self.unit_members]
        )
        self.sizes = [c.network_size for c in configs]
        self.intensities = [c.intensity for c in configs]
        self.groups = [int(g) for g in groups] if groups is not None else [0] * len(nets)
        self.n_groups = max(self.groups) + 1
        totals = np.zeros(self.n_groups)
        np.add.at(totals, self.groups, np.asarray(weights, dtype=np.float64))
        self.weights = [float(w) / totals[g] for w, g in zip(weights, self.groups)]  # within the group
        self.member_classes = configs[0].num_classes
        self.num_classes = configs[0].num_classes * self.n_groups
        for k, c in enumerate(configs):
            self.register_buffer(f"mix{k}", torch.from_numpy(channel_matrix(c.channels)), persistent=False)
            self.register_buffer(f"mean{k}", torch.tensor(c.mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer(f"std{k}", torch.tensor(c.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor | None] = [None] * self.n_groups
        for net, members in zip(self.nets, self.unit_members):
            k = members[0]  # the members of a unit prepare their views alike
            # x is in [0, 1] already; "view" scaling does not depend on the dtype's maximum
            v = unit_views(x.float(), 1.0, self.intensities[k])
            v = torch.einsum("oc,bchw->bohw", getattr(self, f"mix{k}"), v)
            v = resize_views((v - getattr(self, f"mean{k}")) / getattr(self, f"std{k}"), self.sizes[k])
            logits = net(v.contiguous(memory_format=torch.channels_last)).float()
            for j, m in enumerate(members):
                p = torch.sigmoid(logits[:, j * self.member_classes : (j + 1) * self.member_classes])
                p = p * self.weights[m]
                g = self.groups[m]
                parts[g] = p if parts[g] is None else parts[g] + p
        total = torch.cat([p for p in parts if p is not None], dim=1)
        return torch.logit(total.clamp(1e-7, 1 - 1e-7))


_SHARED = ("class_names", "use_cells", "use_tiles")
_SHARED_CROP = ("margin", "mask_outside", "tile_grids", "scale", "image_scale")


def _check_compatible(members: Sequence[Member], configs: Sequence[ModelConfig]) -> None:
    first, base = members[0].folder, configs[0]
    for m, c in zip(members[1:], configs[1:]):
        for name in _SHARED:
            if getattr(c, name) != getattr(base, name):
                raise HPAConfigError(f"{m.folder} and {first} differ in {name}: they cannot be averaged")
        for name in _SHARED_CROP:
            if getattr(c.crop, name) != getattr(base.crop, name):
                raise HPAConfigError(
                    f"{m.folder} and {first} cut their views differently ({name}): they cannot be averaged"
                )


def load_predictor(
    folders: Sequence[str | Path], weights: Sequence[float] | None = None, device: str = "cpu"
) -> tuple[nn.Module, ModelConfig, np.ndarray]:
    """The network, config and thresholds that ``hpa predict`` uses for ``--model`` folders.

    One plain model folder is loaded as it is. Otherwise the members are run by an
    :class:`EnsembleNet`; with several groups (several folders, or a blend folder) the
    config's ``groups`` say how each is pooled and weighted
    (:func:`hpa.classification.inference.image_scores`). Thresholds are, in order of
    preference: those of a single ``--folds`` or blend folder (tuned on its out-of-fold
    or validation scores); re-tuned on the weighted mean of the folders' out-of-fold
    image scores when every folder has them for the same images; else the weighted
    mean of the folders' own (logged).

    Returns:
        ``(model, config, thresholds)``; ``config`` describes the views to cut.
    """
    members, configs, cfg, thresholds = _plan(folders, weights)
    if len(members) == 1:
        return load_model(members[0].folder, device)[0], cfg, thresholds
    nets = [load_model(m.folder, device)[0] for m in members]
    net = EnsembleNet(nets, configs, [m.weight for m in members], [m.group for m in members])
    return net.to(device).eval(), cfg, thresholds


def predictor_config(
    folders: Sequence[str | Path], weights: Sequence[float] | None = None
) -> tuple[ModelConfig, np.ndarray]:
    """The config and thresholds :func:`load_predictor` gives, without loading any weights
    (``hpa predict --scheduler``: the workers load the networks)."""
    _, _, cfg, thresholds = _plan(folders, weights)
    return cfg, thresholds


def _plan(
    folders: Sequence[str | Path], weights: Sequence[float] | None
) -> tuple[list[Member], list[ModelConfig], ModelConfig, np.ndarray]:
    """The members, their configs, the predictor's config and its thresholds."""
    members, groups = expand_groups(folders, weights)
    if len(members) == 1:
        cfg = load_model_config(members[0].folder)
        own = Path(folders[0]) if len(folders) == 1 else members[0].folder  # a blend of one keeps its file
        return members, [cfg], cfg, _thresholds_of(own, cfg)
    configs = [load_model_config(m.folder) for m in members]
    _check_compatible(members, configs)
    base = configs[0]
    size = max(c.crop.crop_size for c in configs)
    specs = [read_ensemble(f) for f in folders]
    if len(folders) == 1 and specs[0] is not None:
        thresholds = _thresholds_of(Path(folders[0]), base)
        log.info(
            "%s: %d models in %d group(s), its own tuned thresholds", folders[0], len(members), len(groups)
        )
    else:
        thresholds = _combined_thresholds(folders, weights, specs, base)
    cfg = replace(
        base,
        backbone="+".join(dict.fromkeys(c.backbone for c in configs)),
        in_chans=len(CHANNELS),
        channels=CHANNELS,
        mean=(0.0,) * len(CHANNELS),
        std=(1.0,) * len(CHANNELS),
        crop=replace(base.crop, crop_size=size),
        pooling=groups[0].pooling,
        tile_weight=groups[0].tile_weight,
        # the members scale, resize and normalise their own inputs; "image" only says the
        # views are cut from images scaled by their bright end (crop.image_scale, shared)
        intensity="image" if base.crop.image_scale else "dataset",
        input_size=None,
        groups=tuple(groups) if len(groups) > 1 else (),
    )
    return members, configs, cfg, thresholds


def _thresholds_of(folder: Path, cfg: ModelConfig) -> np.ndarray:
    thresholds, names = load_thresholds(folder / THRESHOLDS_FILE)
    if tuple(names) != tuple(cfg.class_names):
        raise HPAConfigError(f"{folder}: thresholds.json classes differ from config.json classes")
    return thresholds


def _combined_thresholds(
    folders: Sequence[str | Path],
    weights: Sequence[float] | None,
    specs: Sequence[dict[str, Any] | None],
    base: ModelConfig,
) -> np.ndarray:
    """Thresholds of several folders (see :func:`load_predictor`)."""
    w = _shares(folders, weights)
    oof = [
        read_oof_images(Path(f), base.class_names) if s is not None else None for f, s in zip(folders, specs)
    ]
    if all(o is not None for o in oof):
        tables = [o for o in oof if o is not None]
        ids = sorted(tables[0][0].index)
        if all(sorted(t[0].index) == ids for t in tables):
            scores = sum(wk * t[0].loc[ids].to_numpy(np.float64) for t, wk in zip(tables, w))
            y = tables[0][1].subset(ids).y
            shrink = float(specs[0]["threshold_shrink"]) if specs[0] is not None else 0.0
            tuned = tune_thresholds(y, np.asarray(scores, np.float32), shrink=shrink)
            log.info(
                "thresholds re-tuned on the blended out-of-fold scores of %s", ", ".join(map(str, folders))
            )
            return tuned.thresholds
        log.warning("the folders' out-of-fold scores cover different images; using their mean thresholds")
    else:
        log.warning(
            "not every --model folder has out-of-fold scores (train with --folds K and no --fold); "
            "using the weighted mean of their thresholds"
        )
    thresholds = sum(
        wk * _thresholds_of(Path(f), load_model_config(_first_member(f))) for f, wk in zip(folders, w)
    )
    return np.asarray(thresholds, dtype=np.float64)


def _first_member(folder: str | Path) -> Path:
    spec = read_ensemble(folder)
    return _first_member(Path(folder) / spec["members"][0]) if spec is not None else Path(folder)


def read_oof_images(folder: Path, class_names: Sequence[str]) -> tuple[pd.DataFrame, Any] | None:
    """A folder's out-of-fold image scores (indexed by image Id) and labels, or None."""
    scores, labels = folder / OOF_IMAGES_FILE, folder / OOF_LABELS_FILE
    if not (scores.is_file() and labels.is_file()):
        return None
    table = read_csv_table(scores).set_index(ID_COLUMN)
    return table[list(class_names)], read_labels(labels)
