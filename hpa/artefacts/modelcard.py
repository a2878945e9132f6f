"""The model card: ``MODEL_DIR/README.md``, what a model is, how good, and how to use it.

Like the card of timm's hub export, written from the run's own records (labels,
``metrics.json``, ``thresholds.json``, ``train_config.yaml``, ``segmentation.yaml``)
at the end of training, so it never disagrees with them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpa.artefacts.modeldir import ModelDir
from hpa.io import Labels, write_text_atomic

log = logging.getLogger(__name__)

#: Training settings the card summarises (all of them are in ``train_config.yaml``).
_SUMMARY = (
    "backbone", "pretrained", "channels", "crop_size", "crop_scale", "tile_grids", "use_cells",
    "use_tiles", "epochs", "batch_size", "lr", "loss", "folds", "fold", "seed", "pooling",
    "threshold_shrink", "ema", "device", "precision",
)  # fmt: skip


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _f(value: Any) -> str:
    return f"{float(value):.4f}"


def model_card(
    *,
    name: str,
    images: Sequence[str | Path],
    labels: Labels,
    metrics: Mapping[str, Any],
    thresholds: Sequence[float] | np.ndarray,
    settings: Mapping[str, Any],
    segmentation: Mapping[str, Any] | None,
) -> str:
    """The Markdown text of a model card.

    Args:
        name: the model folder's name, for the title.
        images: the training images folder(s).
        labels: every labelled image the run used (training and validation).
        metrics: ``metrics.json``: a single fold's (``val_macro_f1``) or a ``--folds``
            run's (``oof_macro_f1``); ``per_class`` records with ``name``, ``precision``,
            ``recall``, ``f1``, ``support``.
        thresholds: the ``K`` tuned thresholds.
        settings: the resolved training settings (``train_config.yaml``).
        segmentation: the segmentation settings of the training masks, if known.
    """
    lines = [f"# Model card: {name}", ""]
    lines += _data_section(images, labels, metrics)
    lines += _metrics_section(metrics, thresholds)
    lines += _settings_section(settings)
    lines += _segmentation_section(segmentation)
    lines += _use_section(name)
    return "\n".join(lines)


def _data_section(images: Sequence[str | Path], labels: Labels, metrics: Mapping[str, Any]) -> list[str]:
    """What the model is, and the images it learnt from: folders, split, positives per class."""
    names = labels.class_names
    positives = labels.y.sum(axis=0)
    lines = [
        "A cell-crop and tile classifier of protein localisation in Human Protein Atlas images, "
        "trained by `hpa train-cells` from image-level labels.",
        "",
        "## Data",
        "",
        f"- images: {', '.join(str(Path(p).resolve()) for p in images)}",
        f"- labelled images: {len(labels)} (label set {labels.label_set}, {len(names)} classes)",
    ]
    if "oof_macro_f1" in metrics:
        lines.append(f"- {metrics['folds']} folds; each image validated by the fold that did not train on it")
    else:
        lines.append(
            f"- split: {metrics['n_train_images']} training, {metrics['n_val_images']} validation images"
        )
    lines += [
        "",
        *_table(
            ["class", "name", "positive images"], [(k, n, int(positives[k])) for k, n in enumerate(names)]
        ),
    ]
    return lines


def _metrics_section(metrics: Mapping[str, Any], thresholds: Sequence[float] | np.ndarray) -> list[str]:
    """How good: the macro F1 figures, the tile and blend weights, and the per-class table."""
    folds = "oof_macro_f1" in metrics
    lines = ["", "## Metrics", ""]
    if folds:
        lines.append(
            f"- out-of-fold macro F1 (tuned thresholds, all {metrics['n_images']} images): {_f(metrics['oof_macro_f1'])}"
        )
        per_fold = ", ".join(_f(v) for v in metrics["fold_val_macro_f1"])
        lines.append(f"- each fold's validation macro F1: {per_fold}")
    else:
        lines.append(f"- validation macro F1 (tuned thresholds): {_f(metrics['val_macro_f1'])}")
        lines.append(f"- validation macro F1 at 0.5: {_f(metrics['val_macro_f1_at_0.5'])}")
        lines.append(f"- best epoch: {metrics['best_epoch']}")
    lines.append(f"- tile weight: {metrics['tile_weight']}")
    if "blend" in metrics:  # a model and its companion (hpa.pipelines.blend)
        lines += _blend_lines(metrics["blend"])
    scored = "out-of-fold scores of every image" if folds else "the validation images"
    lines += ["", f"Per class, on {scored} (image level, tuned thresholds):", ""]
    rows = [
        (r["class"], r["name"], _f(r["precision"]), _f(r["recall"]), _f(r["f1"]), r["support"], _f(t))
        for r, t in zip(metrics["per_class"], thresholds, strict=True)
    ]
    lines += _table(["class", "name", "precision", "recall", "F1", "support", "threshold"], rows)
    return lines


def _blend_lines(blend: Mapping[str, Any]) -> list[str]:
    """The shares of a blend's members and each one's own F1; the features companion's ``C``."""
    shares = ", ".join(f"{name} {w:.1f}" for name, w in blend["weights"].items())
    own = ", ".join(f"{name} {_f(f)}" for name, f in blend["members_macro_f1"].items())
    lines = [f"- blended image by image, shares chosen on these images: {shares} (each alone: {own})"]
    if "feature_head_C" in blend:
        strengths = ", ".join(f"{c:g}" for c in blend["feature_head_C"])
        lines.append(
            f"- features companion: logistic regression on localisation features, C {strengths} "
            "(chosen by inner cross-validation on the training images; `features/feature_head.json`)"
        )
    return lines


def _settings_section(settings: Mapping[str, Any]) -> list[str]:
    """The training settings of :data:`_SUMMARY`, and where the others are."""
    lines = ["", "## Training settings", ""]
    lines += [f"- {k}: {settings[k]}" for k in _SUMMARY if k in settings]
    lines.append(f"- every setting: `{ModelDir.TRAIN_CONFIG}`")
    return lines


def _segmentation_section(segmentation: Mapping[str, Any] | None) -> list[str]:
    """The training masks' segmentation settings, which ``hpa predict`` segments with."""
    lines = ["", "## Segmentation", ""]
    if segmentation is None:
        lines.append(
            "- the training masks recorded no settings; `hpa predict` without `--masks` uses the defaults"
        )
    else:
        lines += [f"- {k}: {v}" for k, v in segmentation.items()]
        lines.append(
            f"- `hpa predict` without `--masks` segments with these settings (`{ModelDir.SEGMENTATION}`)"
        )
    return lines


def _use_section(name: str) -> list[str]:
    """Intended use and limits, and how to load the model ``name``."""
    return [
        "",
        "## Intended use and limits",
        "",
        "- Multi-label protein localisation of 4-channel (red microtubules, green protein, blue nucleus, "
        "yellow ER) immunofluorescence images of the kind it was trained on; research use, not diagnosis.",
        "- Scores come from image-level labels: a cell's score says its image is likely to show the class, "
        "not that the cell was annotated.",
        "- The metrics above are measured on held-out images of the same source; other microscopes, "
        "stains or cell lines may score differently. Classes with few positive images have unreliable "
        "thresholds and F1.",
        "",
        "## How to load",
        "",
        "```bash",
        f"hpa predict IMAGES --model {name} --out PRED_DIR",
        "```",
        "",
        "```python",
        "import hpa",
        "",
        f'clf = hpa.Classifier.from_folder("{name}")',
        "result = clf.predict(image)  # (H, W, 4) uint8/uint16, channels red, green, blue, yellow",
        "result.label_names, result.cells",
        "```",
        "",
    ]


def write_model_card(folder: str | Path, **kwargs: Any) -> None:
    """Write :func:`model_card` as ``folder/README.md``, atomically (``name``: the folder's)."""
    folder = Path(folder)
    kwargs.setdefault("name", folder.name)
    write_text_atomic(folder / ModelDir.CARD, model_card(**kwargs))


#: A folder, several, or ``{image_id: folder}`` (training data from several sources).
Folders = str | Path | Sequence[str | Path] | Mapping[str, str | Path]


def folder_list(folders: Folders) -> list[str]:
    """The distinct folders of :data:`Folders`, sorted.

    >>> folder_list({"a": "x", "b": "x", "c": "w"})
    ['w', 'x']
    """
    if isinstance(folders, str | Path):
        return [str(folders)]
    values = folders.values() if isinstance(folders, Mapping) else folders
    return sorted({str(p) for p in values})


def training_segmentation(seg_dirs: Sequence[str | Path]) -> dict[str, Any] | None:
    """The segmentation settings of the training masks (their SEG_DIRs' ``config.yaml``).

    Several SEG_DIRs made with different settings: the first one's, with a warning
    (on-the-fly prediction can segment one way only). None when none records any.
    """
    from hpa.artefacts.segdir import SegDir

    recorded = [(d, SegDir(d).read_settings()) for d in seg_dirs]
    known = [(d, s) for d, s in recorded if s is not None]
    if not known:
        return None
    first_dir, first = known[0]
    for d, s in known[1:]:
        if s != first:
            log.warning(
                "the SEG_DIRs %s and %s were segmented with other settings; the model records %s's",
                first_dir,
                d,
                first_dir,
            )
    return first


def write_training_record(
    folder: str | Path,
    *,
    name: str,
    seg_dirs: Folders,
    images: Folders,
    labels: Labels,
    metrics: Mapping[str, Any],
    thresholds: Sequence[float] | np.ndarray,
    settings: Mapping[str, Any],
) -> None:
    """End a training run's folder: ``segmentation.yaml`` (from the training masks), then ``README.md``.

    Args:
        folder: the model folder being written (possibly its staging folder).
        name: the model folder's own name, for the card.
        seg_dirs: the SEG_DIR(s) of the training masks.
        images: the training images folder(s).
        labels, metrics, thresholds, settings: as :func:`model_card`.
    """
    masks = folder_list(seg_dirs)
    segmentation = training_segmentation(masks)
    ModelDir(folder).write_segmentation(segmentation, masks[0] if masks else None)
    write_model_card(
        folder,
        name=name,
        images=folder_list(images),
        labels=labels,
        metrics=metrics,
        thresholds=thresholds,
        settings=settings,
        segmentation=segmentation,
    )
