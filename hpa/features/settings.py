"""The settings of the localisation features and the version of their code.

Lengths are fractions of each cell's reference length (:attr:`CellView.ref`: the
nucleus's equivalent diameter), not pixels, so one setting fits 512 and 2048 px images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Final

#: Bump when a feature's definition changes: cached feature tables of older versions are
#: then recomputed (:mod:`hpa.features.folder`).
FEATURES_VERSION: Final = 2


@dataclass(frozen=True)
class FeatureSettings:
    """How the per-cell features are measured.

    Attributes:
        rings: radial rings from the nucleus centre to the cell edge.
        edge_band: width of the cell-edge band, as a fraction of the reference length.
        rim_band: half-width of the nuclear-rim band (inside and outside the nucleus outline).
        nucleoli_dim: nucleoli are nucleus pixels whose smoothed blue is below this fraction
            of the nucleus's median blue.
        grey_levels: grey levels of the texture features (protein quantised between the
            cell's own 1st and 99th percentiles).
        haralick_scales: co-occurrence distances of the Haralick features.
        lbp_radius: radius of the local binary patterns (8 neighbours).
        smooth: Gaussian sigma applied to the protein before puncta and granularity, so a
            2048 px image is measured at the detail of its 512 px version (0.3 px at 512 px).
        tophat_radius: radius of the white top-hat that finds puncta.
        puncta_mean: a punctum's top-hat response exceeds this multiple of the cell's mean protein...
        puncta_noise: ...and this multiple of the top-hat's robust spread (1.4826 x MAD).
        puncta_min_area: smallest punctum, as a fraction of the reference length squared
            (2 px at 512 px, 32 px at 2048 px; never under 2 px).
        granularity_step: radius added by each erosion step of the granularity spectrum.
        granularity_steps: steps of the granularity spectrum.
    """

    rings: int = 4
    edge_band: float = 0.1
    rim_band: float = 0.05
    nucleoli_dim: float = 0.6
    grey_levels: int = 32
    haralick_scales: tuple[float, ...] = (0.02, 0.05, 0.1)
    lbp_radius: float = 0.02
    smooth: float = 0.006
    tophat_radius: float = 0.08
    puncta_mean: float = 1.0
    puncta_noise: float = 4.0
    puncta_min_area: float = 0.0008
    granularity_step: float = 0.03
    granularity_steps: int = 4

    def key(self) -> str:
        """A short hash of the settings and :data:`FEATURES_VERSION` (names a cache folder).

        >>> FeatureSettings().key() == FeatureSettings().key() != FeatureSettings(rings=5).key()
        True
        """
        text = json.dumps({"version": FEATURES_VERSION, **asdict(self)}, sort_keys=True)
        return f"v{FEATURES_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def scaled(fraction: float, ref: float) -> int:
    """``fraction`` of the reference length ``ref``, in whole pixels, at least 1.

    >>> scaled(0.1, 50.0), scaled(0.01, 50.0)
    (5, 1)
    """
    return max(1, round(fraction * ref))
