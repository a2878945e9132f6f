"""Each localisation feature on constructed cells whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from hpa.features import FeatureSettings, cell_features, feature_names, image_features
from hpa.features.measures import nucleoli_mask
from hpa.features.view import cell_views

from .helpers import CELL_R, NUCLEUS_R, SIZE, noise, radius_map, round_cell


def _one(image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray) -> pd.Series:
    table = cell_features(image, cells, nuclei, image_id="x")
    assert len(table) == 1
    return table.iloc[0]


def test_protein_only_in_the_nucleus() -> None:
    image, cells, nuclei = round_cell()
    image[..., 1] = np.where(nuclei > 0, image[..., 2], 0)  # the protein is the DNA stain
    row = _one(image, cells, nuclei)
    assert row.frac_nucleus > 0.99 and row.frac_cytoplasm < 0.01
    assert row.enrich_nucleus > 1.0 / row.nucleus_area_frac * 0.95
    assert row.pearson_nucleus > 0.9
    assert abs(row.pearson_microtubules) < 0.2
    assert row.radial_frac_1 + row.radial_frac_2 > 0.99  # the nucleus ends at scaled radius 0.4


def test_protein_on_the_cell_rim() -> None:
    image, cells, nuclei = round_cell()
    rim = (radius_map() > CELL_R - 4) & (cells > 0)
    image[..., 1] = np.where(rim, 3000, 0) + noise(1)
    row = _one(image, cells, nuclei)
    assert row.frac_edge > 0.8
    assert row.enrich_edge > 3
    assert row.radial_frac_4 > 0.8 and row.radial_meanfrac_4 > 1.5
    assert row.radial_mean_r > 0.85
    assert row.frac_nucleus < 0.02


def test_protein_identical_to_the_er_stain() -> None:
    image, cells, nuclei = round_cell()
    image[..., 1] = image[..., 3]
    row = _one(image, cells, nuclei)
    assert row.pearson_er == pytest.approx(1.0)
    assert row.m1_er == pytest.approx(1.0) and row.m2_er == pytest.approx(1.0)
    assert row.pearson_microtubules < 0.2 and row.m1_microtubules < 0.7


@pytest.mark.parametrize("n_dots", [1, 7])
def test_n_bright_dots_are_n_puncta(n_dots: int) -> None:
    image, cells, nuclei = round_cell()
    green = np.where(cells > 0, 200, 0) + noise(2)
    angles = np.linspace(0, 2 * np.pi, n_dots, endpoint=False)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for a in angles:  # dots of radius 2 on a circle between nucleus and edge
        cy, cx = 64 + 35 * np.sin(a), 64 + 35 * np.cos(a)
        green[np.hypot(yy - cy, xx - cx) <= 2] = 2000
    image[..., 1] = green
    row = _one(image, cells, nuclei)
    assert row.puncta_count == n_dots
    assert row.puncta_per_kpx == pytest.approx(1000 * n_dots / cells.sum())
    assert 9 <= row.puncta_mean_area <= 21  # a disc of radius 2 has 13 px
    assert row.frac_puncta == pytest.approx(n_dots * 13 * 1800 / image[..., 1][cells > 0].sum(), rel=0.3)


def test_diffuse_protein_has_no_puncta_and_a_flat_profile() -> None:
    image, cells, nuclei = round_cell()
    image[..., 1] = np.where(cells > 0, 1000, 0) + noise(3, 0, 50)
    row = _one(image, cells, nuclei)
    assert row.puncta_count == 0
    for k in range(1, 5):
        assert row[f"radial_meanfrac_{k}"] == pytest.approx(1.0, abs=0.05)
    assert row.enrich_nucleus == pytest.approx(1.0, abs=0.05)
    assert row.granularity_1 < 0.1


def test_nucleoli_are_the_blue_dim_holes_of_the_nucleus() -> None:
    image, cells, nuclei = round_cell()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    hole = np.hypot(yy - 60, xx - 66) <= 5
    image[..., 2][hole] = 300
    image[..., 1] = np.where(hole, 3000, np.where(nuclei > 0, 300, 0)) + noise(4)
    view = cell_views(image, cells, nuclei)[0]
    found = nucleoli_mask(view, FeatureSettings())
    assert found.sum() > 0.5 * hole.sum()
    row = _one(image, cells, nuclei)
    assert row.nucleoli_vs_nucleus > 3 and row.frac_nucleoli > 0.25


def test_a_one_sided_cluster_is_polar_and_a_symmetric_stain_is_not() -> None:
    image, cells, nuclei = round_cell()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image[..., 1] = np.where(np.hypot(yy - 64, xx - 94) <= 6, 3000, 0) + noise(8)  # beside the nucleus
    assert _one(image, cells, nuclei).polarity > 0.6  # 30 px off centre, nucleus 40 px across
    image[..., 1] = np.where(cells > 0, 1000, 0) + noise(9)
    assert _one(image, cells, nuclei).polarity < 0.05


def test_nuclear_rim() -> None:
    image, cells, nuclei = round_cell()
    r = radius_map()
    image[..., 1] = np.where(np.abs(r - NUCLEUS_R) <= 1, 3000, 0) + noise(5)
    row = _one(image, cells, nuclei)
    assert row.frac_nuclear_rim > 0.8 and row.enrich_nuclear_rim > 4


def _textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random((SIZE, SIZE)), 3)
    field = (field - field.min()) / np.ptp(field)
    return (field * 4000).astype(np.uint16) + noise(seed, 0, 200).astype(np.uint16)


def test_a_tenfold_brighter_protein_leaves_every_feature_unchanged() -> None:
    image, cells, nuclei = round_cell()
    image[..., 1] = np.where(cells > 0, _textured(6), 0)
    bright = image.copy()
    bright[..., 1] = image[..., 1] * 10
    a = cell_features(image, cells, nuclei)
    b = cell_features(bright, cells, nuclei)
    names = feature_names()
    undefined = ["nucleoli_vs_nucleus", "puncta_mean_area", "puncta_area_rel"]  # no nucleoli, no puncta
    assert np.isfinite(a[names].drop(columns=undefined).to_numpy()).all()
    # rtol: granularity's openings run in float32
    np.testing.assert_allclose(b[names].to_numpy(), a[names].to_numpy(), rtol=1e-5, atol=1e-9)


def test_no_nucleus_an_empty_nucleus_and_a_uniform_cell_give_nan_not_errors() -> None:
    image, cells, nuclei = round_cell()
    image[..., 1] = _textured(7)
    cells[:, :12] = 2  # a strip cell without nucleus
    cells[:3, 100:103] = 3  # a tiny cell
    cells[120:, 100:] = 4  # a uniform cell: every stain constant
    image[120:, 100:] = 7
    nuclei[cells != 1] = 0
    nuclei[60:62, 60:62] = 0  # a nucleus with a hole is still a nucleus
    with np.errstate(all="raise"):
        table = cell_features(image, cells, nuclei, image_id="x")
    assert table.cell_id.tolist() == [1, 2, 3, 4]
    values = table[feature_names()].to_numpy()
    assert not np.isinf(values).any()
    no_nucleus, uniform = table.iloc[1], table.iloc[3]
    assert no_nucleus.frac_nucleus == 0 and np.isnan(no_nucleus.enrich_nucleus)
    assert no_nucleus.frac_cytoplasm == pytest.approx(1.0)
    assert np.isnan(uniform.pearson_nucleus) and np.isnan(uniform.haralick_contrast_s1)
    assert np.isnan(uniform.lbp_0) and uniform.puncta_count == 0
    assert uniform.frac_nucleus == 0 and uniform.radial_meanfrac_1 == pytest.approx(1.0, abs=0.5)


def test_a_cell_without_protein_gives_nan_fractions() -> None:
    image, cells, nuclei = round_cell()
    row = _one(image, cells, nuclei)
    assert np.isnan(row.frac_nucleus) and np.isnan(row.radial_mean_r) and np.isnan(row.granularity_1)


def test_an_image_without_cells_gives_an_empty_table_with_every_column() -> None:
    image, cells, nuclei = round_cell()
    table = cell_features(image, np.zeros_like(cells), np.zeros_like(nuclei), image_id="x")
    assert table.empty and list(table.columns) == ["image_id", "cell_id", *feature_names()]


def test_bad_inputs_are_refused() -> None:
    image, cells, nuclei = round_cell()
    with pytest.raises(ValueError, match="H, W, 4"):
        cell_features(image[..., :3], cells, nuclei)
    with pytest.raises(ValueError, match="do not match"):
        cell_features(image, cells[:10], nuclei)


def test_feature_names_are_stable_and_unique() -> None:
    names = feature_names()
    assert len(names) == len(set(names))
    assert names[:3] == ["area", "nucleus_area_frac", "frac_nucleus"]
    some = {"pearson_er", "m1_nucleus", "radial_frac_4", "puncta_per_kpx", "granularity_4", "tas_8"}
    assert some <= set(names)
    assert sum(n.startswith("haralick_") for n in names) == 13 * 3


def test_image_features_summarise_cells_and_skip_nan() -> None:
    cells = pd.DataFrame(
        {"image_id": ["a", "a", "a", "b"], "cell_id": [1, 2, 3, 1], "f": [0.0, 1.0, np.nan, np.nan]}
    )
    out = image_features(cells)
    assert out.columns.tolist() == ["image_id", "n_cells", "f_mean", "f_max", "f_p90"]
    a, b = out.iloc[0], out.iloc[1]
    assert (a.n_cells, a.f_mean, a.f_max) == (3, 0.5, 1.0) and a.f_p90 == pytest.approx(0.9)
    assert b.n_cells == 1 and np.isnan(b.f_mean) and np.isnan(b.f_max)
