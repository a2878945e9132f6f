"""Nested cross-validation on the 67 real Kaggle 2018 images: which companion the CPU default gets.

Outer loop: 5 folds of iterative stratification (the split of ``hpa train-cells``) for
each split seed. Every choice is made on the outer training part only (54 images): the
CNN's inner folds, its thresholds, the feature head's strength C, the blend weight.
The outer held-out images are scored once, by models that never saw them or their labels.

Candidates, fixed before any run:

* ``cnn``: the CNN default (frozen ``tf_efficientnet_lite0``, protein channel, each view
  scaled by its bright end, 64 px crops at 224 px, cells mean-pooled: the real_bench row
  ``frozen-g-224-mean-tflite``'s features, embedded once by ``real_bench.embed`` and
  normalised with the 67 images' channel statistics) with real_bench's linear probe head
  (AdamW, full batch) on fold 0 of a 5-fold split of the training part, thresholds from
  that split's validation images: ``hpa train-cells --companion none`` without ``--folds``;
* ``cnn-oof``: the same head on each of the 5 inner folds, the held-out images scored by
  their average, thresholds from the out-of-fold scores of all training images;
* ``features``: the localisation-feature head (:mod:`hpa.classification.feature_head`:
  L2 logistic regression per class on the image feature summary) on each inner fold, its
  ``C`` (of ``C_GRID``) chosen by the inner folds' out-of-fold macro AP on the training
  part (once per outer fold, where the product chooses it inside each fold's training
  images: the same rule, 4x cheaper), thresholds from those out-of-fold scores;
* ``blend``: ``cnn-oof`` and ``features`` blended image by image, the CNN's share chosen
  by :func:`hpa.pipelines.blend.choose_blend_weight` on the inner out-of-fold scores of
  the training part, thresholds tuned there on the blended scores.

The scratch companion of today's default is not among them (a network trained from
random weights per fold is beyond this machine's time); on the real cross-validation it
got no weight in any of 15 folds (benchmarks/RESULTS.md), so ``cnn`` stands for today's
default.

Reported per split seed: macro F1 over the classes with >= 5 positives among the 67 (as
``benchmarks/real_bench.py``) and over those with >= 3, macro AP over the same classes;
the mean and the spread (max - min) over the seeds. Outside check: every candidate
fitted on all 67 (the same procedure, one level up) scores the 11 labelled HPAv18
images.

Usage::

    hpa segment ../shared/data/hpa-real/kaggle-2018/images --out /tmp/seg-real
    hpa segment ../shared/data/hpa-real/hpav18/images --out /tmp/seg-hpav18
    python benchmarks/nested_bench.py --masks /tmp/seg-real --outside-masks /tmp/seg-hpav18 \\
        --out benchmarks/out/nested [--seeds 0 1 2] [--only seeds|outside|report]

Embeddings are cached in ``OUT/features/``, localisation features in each SEG_DIR; each
split seed and the outside check in ``OUT/parts/`` (``--only`` runs them side by side);
the report goes to ``OUT/RESULTS-nested.md`` and ``OUT/nested.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import real_bench  # benchmarks/ is on sys.path when run as a script
from segment_bench import machine
from sklearn.metrics import average_precision_score
from threadpoolctl import threadpool_limits

log = logging.getLogger("nested_bench")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "hpa-real"
OUTER = 5
INNER = 5
#: Classes judged: as real_bench.py (>= 5 positives among the 67), and the wider set (>= 3).
MIN_POSITIVES = (5, 3)
CANDIDATES = ("cnn", "cnn-oof", "features", "blend")
#: The CNN default's features: frozen tf_efficientnet_lite0, protein channel, each view
#: scaled by its bright end, 64 px crops resized to 224 (TrainConfig's CPU defaults).
CNN = real_bench.Probe(channels="g", backbone="tf_efficientnet_lite0", intensity="view", input_size=224)
#: The CPU default's cell pooling; cells and tiles weighted equally.
POOLING, TILE_WEIGHT = "mean", 0.5
SHRINK = 5.0  # TrainConfig.threshold_shrink


class Views:
    """Frozen CNN features of every view of a set of images, and which image each view is of."""

    def __init__(self, src: real_bench.Source, out: Path, ref: real_bench.Source):
        index, feats, seconds = real_bench.embed(src, CNN, out, ref)
        self.ids = list(src.labels.ids)
        row_of = {i: k for k, i in enumerate(self.ids)}
        self.index, self.feats = index.reset_index(drop=True), feats
        self.image = np.array([row_of[i] for i in index["image_id"]])
        log.info(
            "%s: %d views of %d images (embedded in %.0f s)", src.name, len(index), len(self.ids), seconds
        )

    def rows(self, images: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.isin(self.image, images))

    def fit(self, images: np.ndarray, y: np.ndarray, seed: int) -> Any:
        """The CNN's linear head on the views of ``images`` (labels inherited from their image)."""
        rows = self.rows(images)
        return real_bench.fit_head(self.feats[rows], y[self.image[rows]], seed=seed)

    def score(self, heads: list[Any], images: np.ndarray) -> np.ndarray:
        """Image scores of ``images``: the heads' mean view probabilities, pooled per image."""
        rows = self.rows(images)
        probs = np.mean([h(self.feats[rows]) for h in heads], axis=0)
        ids = [self.ids[i] for i in images]
        return real_bench_pool(self.index.iloc[rows], probs, ids)


def real_bench_pool(index: Any, probs: np.ndarray, ids: list[str]) -> np.ndarray:
    from hpa.classification.inference import pool_views

    return pool_views(index, probs, ids, POOLING, TILE_WEIGHT, True, True).astype(np.float64)


def split(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of every row (``hpa train-cells``'s iterative stratification)."""
    from hpa.classification.validation import split_images

    fold = np.full(len(y), -1)
    for k in range(folds):
        fold[split_images(y, folds, k, seed)[1]] = k
    return fold


def thresholds(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    from hpa.aggregation import tune_thresholds

    return tune_thresholds(y, scores.astype(np.float32), shrink=SHRINK).thresholds


def fit_all(train: np.ndarray, y: np.ndarray, views: Views, table: np.ndarray, seed: int) -> dict[str, Any]:
    """Every candidate fitted on the images ``train`` (rows of ``y``) alone.

    Returns ``{candidate: (score function of image rows, thresholds)}`` and the blend
    weight; the score functions take rows of ``views``/``table`` or of the outside set.
    """
    from hpa.aggregation.metrics import macro_average_precision
    from hpa.classification.feature_head import C_GRID, fit_linear_head
    from hpa.pipelines.blend import choose_blend_weight

    yt = y[train]
    inner = split(yt, INNER, seed)
    cnn_heads = []
    oof_cnn = np.zeros(yt.shape)
    by_c: dict[float, tuple[list[Any], np.ndarray]] = {
        c: ([], np.zeros(yt.shape)) for c in C_GRID
    }  # the feature heads of each C, their OOF scores
    for k in range(INNER):
        fit_rows, val_rows = train[inner != k], train[inner == k]
        cnn_heads.append(views.fit(fit_rows, y, seed + k))
        oof_cnn[inner == k] = views.score(cnn_heads[-1:], val_rows)
        for c, (heads, oof) in by_c.items():
            heads.append(fit_linear_head(table[fit_rows], y[fit_rows], c))
            oof[inner == k] = heads[-1].probabilities(table[val_rows])
    # C by the inner folds' macro AP (ties: the smaller C), as the head chooses it
    ap = {c: macro_average_precision(yt, oof) for c, (_, oof) in by_c.items()}
    best = max(ap, key=lambda c: (ap[c], -c))
    feat_heads, oof_feat = by_c[best]
    w, _, _ = choose_blend_weight(yt, oof_cnn, oof_feat, seed=seed)
    blended = w * oof_cnn + (1 - w) * oof_feat
    return {
        # the product without --folds: fold 0's model, thresholds from its validation images
        "cnn": (cnn_heads[:1], thresholds(yt[inner == 0], oof_cnn[inner == 0])),
        "cnn-oof": (cnn_heads, thresholds(yt, oof_cnn)),
        "features": (feat_heads, thresholds(yt, oof_feat)),
        "blend": ((cnn_heads, feat_heads), thresholds(yt, blended)),
        "weight": w,
        "C": best,
    }


def score_all(
    fitted: dict[str, Any], views: Views, table: np.ndarray, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Each candidate's image scores of ``rows`` (of ``views`` and ``table``)."""
    cnn = views.score(fitted["cnn-oof"][0], rows)
    feat = np.mean([h.probabilities(table[rows]) for h in fitted["features"][0]], axis=0)
    w = fitted["weight"]
    return {
        "cnn": views.score(fitted["cnn"][0], rows),
        "cnn-oof": cnn,
        "features": feat,
        "blend": w * cnn + (1 - w) * feat,
    }


def judge(y: np.ndarray, pred: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    from hpa.aggregation import f1_per_class

    f1 = f1_per_class(y[:, classes], pred[:, classes])
    ap = [float(average_precision_score(y[:, c], scores[:, c])) for c in classes]
    return {"macro_f1": float(f1.mean()), "macro_ap": float(np.mean(ap)),
            "f1_per_class": [round(float(v), 3) for v in f1], "ap_per_class": [round(v, 3) for v in ap]}  # fmt: skip


def features_of(src: real_bench.Source) -> np.ndarray:
    from hpa.classification.feature_head import feature_columns, feature_table

    table = feature_table(src.images, src.masks, list(src.labels.ids))
    return table[feature_columns(table.reset_index())].to_numpy(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DATA.parent))
    parser.add_argument("--masks", required=True, help="SEG_DIR of 'hpa segment' on the 67 images")
    parser.add_argument(
        "--outside-masks", required=True, help="SEG_DIR of 'hpa segment' on the 11 HPAv18 images"
    )
    parser.add_argument("--out", default="benchmarks/out/nested")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--only",
        choices=("seeds", "outside", "report"),
        default=None,
        help="run only the split seeds, or only the outside check, or only the report of the cached "
        "parts (OUT/parts/; several processes can run the parts side by side)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("hpa.classification.feature_head").setLevel(logging.WARNING)
    from hpa.aggregation import apply_thresholds
    from hpa.io import read_labels

    out = Path(args.out)
    real = Path(args.data) / "hpa-real"
    kag = real_bench.Source("kaggle", real / "kaggle-2018" / "images", read_labels(real / "kaggle-2018" / "train.csv"),
                            Path(args.masks))  # fmt: skip
    ext = real_bench.Source("hpav18", real / "hpav18" / "images", read_labels(real / "hpav18" / "labels.csv"),
                            Path(args.outside_masks))  # fmt: skip
    t0 = time.perf_counter()
    views, ext_views = Views(kag, out, kag), Views(ext, out, kag)
    table, ext_table = features_of(kag), features_of(ext)
    log.info("features and embeddings ready in %.0f s", time.perf_counter() - t0)
    threadpool_limits(1)  # tiny fits: OpenMP threads only contend
    y = kag.labels.y.astype(int)
    judged = {m: np.flatnonzero(y.sum(0) >= m) for m in MIN_POSITIVES}
    result: dict[str, Any] = {"classes": {str(m): [kag.labels.class_names[c] for c in cl] for m, cl in judged.items()},
                              "positives": {str(m): y.sum(0)[cl].tolist() for m, cl in judged.items()},
                              "seeds": {}}  # fmt: skip
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds if args.only in (None, "seeds") else []:
        if (parts / f"seed{seed}.json").is_file():
            continue
        t0 = time.perf_counter()
        fold = split(y, OUTER, seed)
        scores = {c: np.zeros(y.shape) for c in CANDIDATES}
        pred = {c: np.zeros_like(y) for c in CANDIDATES}
        weights, strengths = [], []
        for k in range(OUTER):
            train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            fitted = fit_all(train, y, views, table, seed)
            weights.append(fitted["weight"])
            strengths.append(fitted["C"])
            for c, s in score_all(fitted, views, table, test).items():
                scores[c][test] = s
                pred[c][test] = apply_thresholds(s, fitted[c][1])
        row = {c: {str(m): judge(y, pred[c], scores[c], cl) for m, cl in judged.items()} for c in CANDIDATES}
        part = {"rows": row, "cnn_share_per_fold": weights, "C_per_fold": strengths,
                "seconds": time.perf_counter() - t0}  # fmt: skip
        (parts / f"seed{seed}.json").write_text(json.dumps(part))
        log.info("seed %d: %s (CNN share per fold %s)", seed, ", ".join(
            f"{c} F1 {row[c]['5']['macro_f1']:.3f} AP {row[c]['5']['macro_ap']:.3f}" for c in CANDIDATES), weights)  # fmt: skip
    # outside check: fitted on all 67 as the product fits one --folds run, the 11 HPAv18 images scored
    if args.only in (None, "outside") and not (parts / "outside.json").is_file():
        y_ext = ext.labels.y.astype(int)
        ext_classes = np.flatnonzero((y_ext.sum(0) >= 1) & (y.sum(0) >= 1))
        fitted = fit_all(np.arange(len(y)), y, views, table, 0)
        ext_scores = score_all(fitted, ext_views, ext_table, np.arange(len(y_ext)))
        outside = {
            "n_images": len(y_ext),
            "classes": [ext.labels.class_names[c] for c in ext_classes],
            "positives": y_ext.sum(0)[ext_classes].tolist(),
            "cnn_share": fitted["weight"],
            "C": fitted["C"],
            "rows": {c: judge(y_ext, apply_thresholds(s, fitted[c][1]), s, ext_classes)
                     for c, s in ext_scores.items()},
        }  # fmt: skip
        (parts / "outside.json").write_text(json.dumps(outside))
    if args.only in ("seeds", "outside"):
        return
    result["seeds"] = {str(s): json.loads((parts / f"seed{s}.json").read_text()) for s in args.seeds}
    result["outside"] = json.loads((parts / "outside.json").read_text())
    result["command"] = " ".join(["python", "benchmarks/nested_bench.py", *sys.argv[1:]])
    result["machine"] = machine()
    result["load_average"] = os.getloadavg()
    (out / "nested.json").write_text(json.dumps(result, indent=2))
    text = report(result)
    (out / "RESULTS-nested.md").write_text(text + "\n")
    print(text)


def report(result: dict[str, Any]) -> str:
    """The Markdown table: per seed, mean and spread of every candidate; per class; the outside check."""
    seeds = list(result["seeds"])
    lines = [
        f"Command: `{result['command']}`.  ",
        f"Machine: {result['machine']}; load average at the end {result['load_average'][0]:.1f} (shared).",
        "",
    ]
    for m in map(str, MIN_POSITIVES):
        lines += [
            f"Classes with >= {m} positives among the 67 (positives): "
            + ", ".join(f"{n} ({p})" for n, p in zip(result["classes"][m], result["positives"][m])),
            "",
            "| candidate | macro F1 per seed | mean | spread | macro AP per seed | mean | spread |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in CANDIDATES:
            f1 = [result["seeds"][s]["rows"][c][m]["macro_f1"] for s in seeds]
            ap = [result["seeds"][s]["rows"][c][m]["macro_ap"] for s in seeds]
            lines.append(
                f"| {c} | {' / '.join(f'{v:.3f}' for v in f1)} | {np.mean(f1):.3f} | {max(f1) - min(f1):.3f} "
                f"| {' / '.join(f'{v:.3f}' for v in ap)} | {np.mean(ap):.3f} | {max(ap) - min(ap):.3f} |"
            )
        lines.append("")
    m = str(MIN_POSITIVES[0])
    lines += ["Per class (>= 5 positives), mean over the seeds, AP / F1:", "",
              "| class | " + " | ".join(CANDIDATES) + " |", "|---|" + "---|" * len(CANDIDATES)]  # fmt: skip
    for j, name in enumerate(result["classes"][m]):
        cells = []
        for c in CANDIDATES:
            ap = np.mean([result["seeds"][s]["rows"][c][m]["ap_per_class"][j] for s in seeds])
            f1 = np.mean([result["seeds"][s]["rows"][c][m]["f1_per_class"][j] for s in seeds])
            cells.append(f"{ap:.2f} / {f1:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    shares = [w for s in seeds for w in result["seeds"][s]["cnn_share_per_fold"]]
    lines += ["", f"CNN share of the blend, chosen on each outer training part: {shares}.", ""]
    o = result["outside"]
    lines += [
        f"Outside check: fitted on all 67, scored on the {o['n_images']} HPAv18 images (CNN share {o['cnn_share']}); "
        "classes with a positive there (positives): "
        + ", ".join(f"{n} ({p})" for n, p in zip(o["classes"], o["positives"])),
        "",
        "| candidate | macro AP | macro F1 | AP per class | F1 per class |",
        "|---|---|---|---|---|",
    ]
    for c in CANDIDATES:
        r = o["rows"][c]
        lines.append(
            f"| {c} | {r['macro_ap']:.3f} | {r['macro_f1']:.3f} | {r['ap_per_class']} | {r['f1_per_class']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
