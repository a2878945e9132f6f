"""A classifier over the localisation features of an image (:mod:`hpa.features`), saved as JSON.

Per image, the :func:`hpa.features.image_features` summary (mean, max and 90th
percentile over its cells of each feature of docs/features.md) feeds one L2-regularised
logistic regression per class (scikit-learn, ``lbfgs``), after median imputation (a
feature no cell could measure) and standardisation (mean 0, standard deviation 1 over the
training images). The strength ``C`` is chosen inside the training images: inner
cross-validation (:data:`INNER_FOLDS` folds of iterative stratification, the split of
``hpa train-cells``) over :data:`C_GRID`, by out-of-fold macro average precision; ties
go to the smaller ``C`` (the stronger regularisation). Classes are not re-weighted: the
scores stay probabilities of the training prevalence, the scale the CNN's scores have
when the two are blended (:mod:`hpa.pipelines.blend`). A class with fewer than
:data:`MIN_FIT_POSITIVES` positives (or no negative) among the training images gets a
constant score, its smoothed prevalence.

The head is written as ``feature_head.json`` (:func:`write_feature_head`) and read back
by :func:`read_feature_head`, which checks every field: the feature names, the imputer's
medians, the scaler's means and scales, each class's coefficients and intercept, the
chosen ``C`` and the versions that wrote it. No pickle: a reader needs only this module.
A file may hold several heads (one per fold of a ``--folds`` run); their probabilities
are averaged.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.artefacts.modeldir import ModelDir
from hpa.config import load_json_object
from hpa.errors import HPAConfigError

log = logging.getLogger(__name__)

#: The head's file in a model folder.
HEAD_FILE = ModelDir.FEATURE_HEAD
#: ``format`` and ``format_version`` of :data:`HEAD_FILE`.
FORMAT = "hpa-feature-head"
FORMAT_VERSION = 1
#: Candidate regularisation strengths (inverse: smaller is stronger), chosen by inner CV.
C_GRID = (0.01, 0.03, 0.1, 0.3)
#: Inner folds that choose ``C``.
INNER_FOLDS = 4
#: Fewer positives than this among the training images: a constant score for the class.
MIN_FIT_POSITIVES = 2


@dataclass(frozen=True)
class LinearHead:
    """One fitted head: imputation, standardisation and one logistic regression per class.

    Scores are ``sigmoid(((x filled with medians) - mean) / scale @ coef.T + intercept)``.
    """

    medians: np.ndarray  # (F,)
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (K, F)
    intercept: np.ndarray  # (K,)
    c: float
    n_images: int
    inner_macro_ap: dict[float, float] = field(default_factory=dict)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``(N, K)`` class probabilities of ``(N, F)`` features (NaN = not measured)."""
        x = np.where(np.isfinite(x), x, self.medians[None, :])
        z = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class FeatureHead:
    """The heads of one model (one, or one per fold) and what their inputs are."""

    features: tuple[str, ...]
    classes: tuple[str, ...]
    heads: tuple[LinearHead, ...]
    feature_settings: dict[str, Any]
    features_version: int
    versions: dict[str, str]

    def scores(self, table: pd.DataFrame) -> np.ndarray:
        """``(N, K)`` image scores of an image feature table (rows: images; a column per feature).

        Missing feature columns are an error; an all-NaN row (an image without measured
        cells) gets the medians, the training images' typical image.

        Raises:
            HPAConfigError: the table lacks features the head was fitted on.
        """
        missing = [f for f in self.features if f not in table.columns]
        if missing:
            raise HPAConfigError(
                f"the feature table lacks {len(missing)} feature(s) the head was fitted on "
                f"({', '.join(missing[:3])}...): features of another version?"
            )
        x = table[list(self.features)].to_numpy(np.float64)
        return np.mean([h.probabilities(x) for h in self.heads], axis=0)


# ----------------------------------------------------------------- fitting ---


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Medians, means and scales of the training rows (NaN-skipping; unmeasured -> 0, flat -> 1)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
            medians = np.nanmedian(x, axis=0)
    medians = np.where(np.isfinite(medians), medians, 0.0)
    filled = np.where(np.isfinite(x), x, medians[None, :])
    mean = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return medians, mean, scale


def fit_linear_head(x: np.ndarray, y: np.ndarray, c: float) -> LinearHead:
    """One head on ``(N, F)`` features and ``(N, K)`` labels with strength ``c``."""
    from sklearn.linear_model import LogisticRegression

    medians, mean, scale = _standardiser(x)
    z = (np.where(np.isfinite(x), x, medians[None, :]) - mean) / scale
    k, n = y.shape[1], len(y)
    coef = np.zeros((k, x.shape[1]))
    intercept = np.zeros(k)
    for j in range(k):
        pos = int(y[:, j].sum())
        if pos < MIN_FIT_POSITIVES or pos == n:
            p = (pos + 0.5) / (n + 1.0)
            intercept[j] = math.log(p / (1.0 - p))
            continue
        model = LogisticRegression(C=c, max_iter=2000).fit(z, y[:, j])
        coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
    return LinearHead(medians, mean, scale, coef, intercept, float(c), n)


def inner_scores(x: np.ndarray, y: np.ndarray, c: float, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities ``(N, K)`` of heads of strength ``c`` over ``folds`` folds."""
    from hpa.classification.validation import split_images

    scores = np.zeros(y.shape)
    for k in range(folds):
        train, val = split_images(y, folds, k, seed)
        scores[val] = fit_linear_head(x[train], y[train], c).probabilities(x[val])
    return scores


def fit_feature_head_once(
    x: np.ndarray, y: np.ndarray, seed: int = 0, grid: Sequence[float] = C_GRID, folds: int = INNER_FOLDS
) -> LinearHead:
    """A head on ``(N, F)`` features and ``(N, K)`` labels, ``C`` chosen by inner CV.

    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random((24, 2)) < 0.4).astype(int)
    >>> x = y @ np.ones((2, 3)) + rng.normal(0, 0.3, (24, 3))
    >>> head = fit_feature_head_once(x, y)
    >>> head.c in C_GRID, head.probabilities(x).shape
    (True, (24, 2))
    """
    from threadpoolctl import threadpool_limits

    from hpa.aggregation.metrics import macro_average_precision

    folds = min(folds, len(y))
    with threadpool_limits(1):  # a few dozen tiny fits: BLAS threads only contend (15x slower on 2 cores)
        ap = {float(c): macro_average_precision(y, inner_scores(x, y, c, folds, seed)) for c in grid}
        best = max(ap, key=lambda c: (ap[c], -c))  # ties: the stronger regularisation
        head = fit_linear_head(x, y, best)
    log.info(
        "feature head: C %g chosen on %d images (inner macro AP by C: %s)",
        best, len(y), ", ".join(f"{c:g}: {a:.3f}" for c, a in ap.items()),
    )  # fmt: skip
    return LinearHead(**{**head.__dict__, "inner_macro_ap": ap})


def make_feature_head(
    features: Sequence[str], heads: Sequence[LinearHead], classes: Sequence[str]
) -> FeatureHead:
    """Wrap fitted heads with the names of their features and classes and the writing versions."""
    import sklearn

    import hpa
    from hpa.features import FEATURES_VERSION

    return FeatureHead(
        features=tuple(features),
        classes=tuple(classes),
        heads=tuple(heads),
        feature_settings=_settings_now(),
        features_version=int(FEATURES_VERSION),
        versions={"hpa": hpa.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__},
    )


def _settings_now() -> dict[str, Any]:
    """The feature settings :func:`feature_table` measures with, as JSON holds them."""
    from hpa.features import FeatureSettings

    return dict(json.loads(json.dumps(asdict(FeatureSettings()))))


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The model inputs of an image feature table: every column but the Id and the cell count."""
    return [c for c in table.columns if c not in ("image_id", "n_cells")]


def feature_table(
    images: Any, masks: Any, ids: Sequence[str], *, cache: str | Path | None = None, workers: int = 1
) -> pd.DataFrame:
    """The :func:`hpa.features.image_features` rows of ``ids``, indexed by Id, in ``ids`` order.

    ``images`` and ``masks`` are folders, or mappings from Id to folder (several sources,
    :data:`hpa.classification.cache.Folders`); cell features are cached per image in
    each SEG_DIR (:func:`hpa.features.folder_features`). An image that could not be
    measured gets a row of NaN (a warning names it).
    """
    from hpa.classification.cache import folder_of
    from hpa.features import folder_features, image_features

    groups: dict[tuple[Path, Path], list[str]] = {}
    for i in ids:
        groups.setdefault((folder_of(images, i), folder_of(masks, i)), []).append(i)
    parts = []
    for (img_dir, seg_dir), these in groups.items():
        cells, failures = folder_features(img_dir, seg_dir, ids=these, cache=cache, workers=workers)
        for image_id, why in failures.items():
            log.warning(
                "%s: no localisation features (%s); the head scores it as a typical image", image_id, why
            )
        if len(cells):
            parts.append(image_features(cells))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["image_id"])
    return table.set_index("image_id").reindex(list(ids)).copy()  # copy: one block, not 300


# ----------------------------------------------------------------- the file ---


def write_feature_head(path: str | Path, head: FeatureHead) -> None:
    """Write ``head`` as JSON (atomically): every number a reader needs, nothing pickled."""
    from hpa.config import save_json

    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "per-class L2 logistic regression on median-imputed, standardised image features",
        "class_weight": None,
        "classes": list(head.classes),
        "features": list(head.features),
        "feature_settings": head.feature_settings,
        "features_version": head.features_version,
        "versions": head.versions,
        "heads": [
            {
                "C": h.c,
                "n_images": h.n_images,
                "inner_macro_ap": {repr(c): a for c, a in h.inner_macro_ap.items()},
                "medians": h.medians.tolist(),
                "mean": h.mean.tolist(),
                "scale": h.scale.tolist(),
                "coef": h.coef.tolist(),
                "intercept": h.intercept.tolist(),
            }
            for h in head.heads
        ],
    }
    save_json(path, data)


def _vector(path: Path, where: str, value: Any, length: int, *, positive: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise HPAConfigError(f"{path}: {where} must be a list of numbers") from None
    if arr.shape != (length,) or not np.isfinite(arr).all() or (positive and not (arr > 0).all()):
        raise HPAConfigError(
            f"{path}: {where} must be {length} finite{' positive' if positive else ''} numbers, "
            f"got shape {arr.shape}"
        )
    return arr


def _names(path: Path, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    names = data.get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise HPAConfigError(f"{path}: '{key}' must be a non-empty list of names")
    if len(set(names)) != len(names):
        raise HPAConfigError(f"{path}: '{key}' names a column twice")
    return tuple(names)


def read_feature_head(path: str | Path) -> FeatureHead:
    """Read and check a :func:`write_feature_head` file.

    Raises:
        HPAConfigError: missing, not JSON, of another format or version, or with a field
            of the wrong shape or a non-finite number; names the file and the field.
    """
    path = Path(path)
    data = load_json_object(path, missing="not found (a feature head folder without its head?)")
    if data.get("format") != FORMAT:
        raise HPAConfigError(f'{path}: not a feature head file (expected "format": "{FORMAT}")')
    if data.get("format_version") != FORMAT_VERSION:
        raise HPAConfigError(
            f"{path}: feature head format version {data.get('format_version')!r}; this hpa reads {FORMAT_VERSION}"
        )
    features, classes = _names(path, data, "features"), _names(path, data, "classes")
    raw = data.get("heads")
    if not isinstance(raw, list) or not raw:
        raise HPAConfigError(f"{path}: 'heads' must be a non-empty list")
    heads = []
    f, k = len(features), len(classes)
    for n, h in enumerate(raw):
        where = f"heads[{n}]"
        if not isinstance(h, dict):
            raise HPAConfigError(f"{path}: {where} must be an object")
        try:
            coef = np.asarray(h.get("coef"), dtype=np.float64)
        except (TypeError, ValueError):
            coef = np.zeros(0)
        if coef.shape != (k, f) or not np.isfinite(coef).all():
            raise HPAConfigError(
                f"{path}: {where}.coef must be {k} x {f} finite numbers (classes x features)"
            )
        c = h.get("C")
        if isinstance(c, bool) or not isinstance(c, int | float) or not (math.isfinite(c) and c > 0):
            raise HPAConfigError(f"{path}: {where}.C must be a positive number, got {c!r}")
        n_images = h.get("n_images")
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise HPAConfigError(f"{path}: {where}.n_images must be a positive integer, got {n_images!r}")
        ap = h.get("inner_macro_ap", {})
        if not isinstance(ap, dict):
            raise HPAConfigError(f"{path}: {where}.inner_macro_ap must be an object")
        heads.append(
            LinearHead(
                medians=_vector(path, f"{where}.medians", h.get("medians"), f),
                mean=_vector(path, f"{where}.mean", h.get("mean"), f),
                scale=_vector(path, f"{where}.scale", h.get("scale"), f, positive=True),
                coef=coef,
                intercept=_vector(path, f"{where}.intercept", h.get("intercept"), k),
                c=float(c),
                n_images=n_images,
                inner_macro_ap={float(key): float(v) for key, v in ap.items()},
            )
        )
    settings, version, versions = (
        data.get("feature_settings"),
        data.get("features_version"),
        data.get("versions"),
    )
    if not isinstance(settings, dict) or not isinstance(version, int) or not isinstance(versions, dict):
        raise HPAConfigError(
            f"{path}: needs 'feature_settings' (object), 'features_version' (integer), 'versions'"
        )
    from hpa.features import FEATURES_VERSION

    if settings != _settings_now():
        raise HPAConfigError(
            f"{path}: fitted on features measured with other settings ({settings}); this hpa measures "
            f"with {_settings_now()} (retrain the model)"
        )
    if version != FEATURES_VERSION:
        raise HPAConfigError(
            f"{path}: fitted on localisation features version {version}; this hpa computes version "
            f"{FEATURES_VERSION} (retrain the model)"
        )
    return FeatureHead(
        features, classes, tuple(heads), settings, version, {str(a): str(b) for a, b in versions.items()}
    )


# ------------------------------------------------------------------ predict ---


@dataclass(frozen=True)
class FeatureBlend:
    """A blend folder whose companion is the feature head, as ``hpa predict`` runs it.

    The main member (a model or ``--folds`` folder) scores the views as any model does;
    the head scores each image's localisation features; the image scores are blended
    with the folder's weights and thresholded with the folder's thresholds (tuned on the
    blended validation or out-of-fold scores).
    """

    folder: Path
    main: Path
    head: FeatureHead
    weight: float  # the feature head's share of the image scores

    def thresholds(self, class_names: Sequence[str]) -> np.ndarray:
        from hpa.aggregation import load_thresholds
        from hpa.artefacts.folder import THRESHOLDS_FILE

        return load_thresholds(self.folder / THRESHOLDS_FILE, class_names)[0]

    def scores(self, images: Any, masks: Any, ids: Sequence[str], workers: int = 1) -> np.ndarray:
        """``(len(ids), K)`` head scores of the images (features cached in the SEG_DIR)."""
        return self.head.scores(feature_table(images, masks, ids, workers=workers))

    def blend(self, main: np.ndarray, features: np.ndarray) -> np.ndarray:
        return ((1.0 - self.weight) * main + self.weight * features).astype(np.float32)


def feature_blend(model_dirs: Sequence[str | Path]) -> FeatureBlend | None:
    """The :class:`FeatureBlend` of ``model_dirs``, or None when none is blended with the head.

    Raises:
        HPAConfigError: such a folder among several ``--model`` folders, a head file that
            does not read (:func:`read_feature_head`), or a class list other than the
            main model's thresholds'.
    """
    from hpa.classification.ensemble import BLEND, MAIN, read_ensemble
    from hpa.classification.train import FEATURE_COMPANION

    found = []
    for m in map(Path, model_dirs):
        spec = read_ensemble(m)
        if spec is not None and spec.get("combine") == BLEND and FEATURE_COMPANION in spec["members"]:
            found.append((m, spec))
    if not found:
        return None
    if len(model_dirs) > 1:
        raise HPAConfigError(
            f"{found[0][0]}: a model blended with the features companion is predicted on its own "
            "(one --model folder)"
        )
    folder, spec = found[0]
    weights = {m: float(w) for m, w in zip(spec["members"], spec["weights"])}
    share = weights[FEATURE_COMPANION] / sum(weights.values())
    if not (folder / MAIN).is_dir():
        raise HPAConfigError(f"{folder}: the main model folder {MAIN}/ is missing")
    head = read_feature_head(folder / FEATURE_COMPANION / HEAD_FILE)
    return FeatureBlend(folder, folder / MAIN, head, share)
