"""How much the localisation features carry on the 67 real labelled Kaggle 2018 images.

Per image, the :func:`hpa.features.image_features` summary (mean, max and 90th
percentile over its cells of every feature of docs/features.md) feeds one classifier per
class, fitted inside 5-fold cross-validation (iterative stratification: the split of
``hpa train-cells``). Every image is scored by the fold that did not train on it; the
thresholds applied to a fold's images are tuned on the out-of-fold scores of the other
four folds (cross-fitted, as ``benchmarks/real_bench.py`` does). Reported per split seed,
over the classes with at least ``MIN_POSITIVES`` positives: out-of-fold macro average
precision (threshold-free) and macro F1, against random scores (AP) and calling every
class for every image (F1). The two heads and their settings were fixed before any run
(nothing is tuned on these figures): scikit-learn's HistGradientBoostingClassifier
(NaN-aware) and an L2 logistic regression on standardised, median-imputed features.

Usage (segment once, then measure; features are cached under the SEG_DIR)::

    hpa segment ../shared/data/hpa-real/kaggle-2018/images --out /tmp/seg-real
    python benchmarks/features_bench.py --masks /tmp/seg-real [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hpa.aggregation import apply_thresholds, f1_per_class, tune_thresholds
from hpa.classification.validation import split_images
from hpa.features import folder_features, image_features
from hpa.io import read_labels

log = logging.getLogger("features_bench")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "hpa-real" / "kaggle-2018"
MIN_POSITIVES = 5
FOLDS = 5


def heads(seed: int) -> dict[str, Any]:
    """The two classifiers, settings fixed in advance (small data: shallow trees, strong L2)."""
    return {
        "hgb": lambda: HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.05, max_leaf_nodes=8, min_samples_leaf=5, random_state=seed
        ),
        "logreg": lambda: make_pipeline(
            SimpleImputer(strategy="median"),
            StandardScaler(),
            LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000),
        ),
    }


def fold_of(y: np.ndarray, seed: int) -> np.ndarray:
    """The validation fold of every image for one split seed."""
    fold = np.full(len(y), -1)
    for k in range(FOLDS):
        fold[split_images(y, FOLDS, k, seed)[1]] = k
    return fold


def oof_scores(x: np.ndarray, y: np.ndarray, classes: np.ndarray, fold: np.ndarray, make: Any) -> np.ndarray:
    """Out-of-fold scores ``(N, len(classes))``: one classifier per class and fold."""
    scores = np.zeros((len(y), len(classes)))
    for k in range(FOLDS):
        train, val = fold != k, fold == k
        for j, c in enumerate(classes):
            model = make().fit(x[train], y[train, c])
            scores[val, j] = model.predict_proba(x[val])[:, 1]
    return scores


def cross_fitted_f1(y: np.ndarray, scores: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Per-class F1 with each fold's thresholds tuned on the other folds' OOF scores."""
    pred = np.zeros_like(y)
    for k in range(FOLDS):
        other = fold != k
        tuned = tune_thresholds(y[other], scores[other], shrink=5.0)
        pred[~other] = apply_thresholds(scores[~other], tuned.thresholds)
    return f1_per_class(y, pred)


def macro_ap(y: np.ndarray, scores: np.ndarray) -> tuple[float, list[float]]:
    per_class = [float(average_precision_score(y[:, j], scores[:, j])) for j in range(y.shape[1])]
    return float(np.mean(per_class)), per_class


def random_ap(y: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The expected macro AP of random scores (mean over ``draws`` random rankings)."""
    rng = np.random.default_rng(seed)
    return float(np.mean([macro_ap(y, rng.random(y.shape))[0] for _ in range(draws)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default=str(DATA / "images"))
    parser.add_argument("--labels", default=str(DATA / "train.csv"))
    parser.add_argument("--masks", required=True, help="SEG_DIR of 'hpa segment' on --images")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    threadpool_limits(1)  # tiny fits: OpenMP threads only contend (minutes instead of seconds)
    labels = read_labels(args.labels)
    start = time.perf_counter()
    cells, failures = folder_features(args.images, args.masks, ids=list(labels.ids), workers=args.workers)
    seconds = time.perf_counter() - start
    table = image_features(cells).set_index("image_id")
    ids = [i for i in labels.ids if i in table.index]
    y_all = labels.subset(ids).y.astype(int)
    x = table.loc[ids].drop(columns="n_cells").to_numpy(dtype=np.float64)
    classes = np.flatnonzero(y_all.sum(axis=0) >= MIN_POSITIVES)
    y = y_all[:, classes]
    names = [labels.class_names[c] for c in classes]
    log.info(
        "%d images (%d failed), %d cells, %d features, %.0f s",
        len(ids),
        len(failures),
        len(cells),
        x.shape[1],
        seconds,
    )
    log.info("classes with >= %d positives: %s", MIN_POSITIVES, dict(zip(names, y.sum(axis=0).tolist())))

    every = float(f1_per_class(y, np.ones_like(y)).mean())
    chance_ap = random_ap(y)
    result: dict[str, Any] = {"classes": names, "positives": y.sum(axis=0).tolist(), "n_images": len(ids),
                              "n_features": x.shape[1], "every_class_f1": every, "random_ap": chance_ap,
                              "rows": {}}  # fmt: skip
    for seed in args.seeds:
        fold = fold_of(y_all, seed)
        for name, make in heads(seed).items():
            scores = oof_scores(x, y_all, classes, fold, make)
            ap, ap_per_class = macro_ap(y, scores)
            f1 = cross_fitted_f1(y, scores, fold)
            row = result["rows"].setdefault(name, {})
            row[str(seed)] = {"macro_ap": ap, "macro_f1": float(f1.mean()),
                              "ap_per_class": ap_per_class, "f1_per_class": f1.tolist()}  # fmt: skip
            log.info("seed %d %-6s macro AP %.3f  macro F1 %.3f", seed, name, ap, f1.mean())
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def report(result: dict[str, Any]) -> str:
    """A Markdown table: each head's macro AP and F1 per seed, their mean and range, per-class means."""
    lines = [
        f"{result['n_images']} images, {result['n_features']} image features; classes (positives): "
        + ", ".join(f"{n} ({p})" for n, p in zip(result["classes"], result["positives"])),
        "",
        "| row | macro AP per seed | mean (range) | macro F1 per seed | mean (range) |",
        "|---|---|---|---|---|",
        f"| random scores / every class | | {result['random_ap']:.3f} | | {result['every_class_f1']:.3f} |",
    ]
    for name, seeds in result["rows"].items():
        ap = [v["macro_ap"] for v in seeds.values()]
        f1 = [v["macro_f1"] for v in seeds.values()]
        lines.append(
            f"| {name} | {' / '.join(f'{a:.3f}' for a in ap)} | {np.mean(ap):.3f} ({min(ap):.3f}-{max(ap):.3f}) "
            f"| {' / '.join(f'{a:.3f}' for a in f1)} | {np.mean(f1):.3f} ({min(f1):.3f}-{max(f1):.3f}) |"
        )
    lines += ["", "| class | " + " | ".join(f"{n} AP / F1" for n in result["rows"]) + " |",
              "|---|" + "---|" * len(result["rows"])]  # fmt: skip
    for j, cls in enumerate(result["classes"]):
        cells = []
        for seeds in result["rows"].values():
            ap = np.mean([v["ap_per_class"][j] for v in seeds.values()])
            f1 = np.mean([v["f1_per_class"][j] for v in seeds.values()])
            cells.append(f"{ap:.2f} / {f1:.2f}")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
