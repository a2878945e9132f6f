"""2018 -> 2021 mapping, the Negative rule, cell-score rules, PredictionStrings."""

import numpy as np
import pytest

from hpa.aggregation.single_cell import (
    CELL_SCORES,
    MAP_2018_TO_2021,
    NEGATIVE,
    TIE_BREAK,
    cell_confidence,
    map_labels_2018_to_2021,
    map_scores_2018_to_2021,
    mapping_agreement,
    negative_score,
    prediction_string,
    to_2021_scores,
)
from hpa.constants import CLASS_NAMES_2018, CLASS_NAMES_2021
from hpa.io import read_labels


def test_table_covers_every_2018_class_and_maps_by_name():
    assert sorted(MAP_2018_TO_2021) == list(range(28))
    for old, new in MAP_2018_TO_2021.items():
        if new is not None and CLASS_NAMES_2018[old] in CLASS_NAMES_2021:
            assert CLASS_NAMES_2021[new] == CLASS_NAMES_2018[old]
    named = {
        CLASS_NAMES_2018[o]: (CLASS_NAMES_2021[n] if n is not None else None)
        for o, n in MAP_2018_TO_2021.items()
    }
    assert named["Focal adhesion sites"] == "Actin filaments"
    assert named["Cell junctions"] == "Plasma membrane"
    assert named["Microtubule organizing center"] == "Centrosome"
    for vesicle in ("Peroxisomes", "Endosomes", "Lysosomes", "Lipid droplets", "Cytoplasmic bodies"):
        assert named[vesicle] == "Vesicles and punctate cytosolic patterns"
    for dropped in ("Microtubule ends", "Cytokinetic bridge", "Rods & rings"):
        assert named[dropped] is None
    assert set(MAP_2018_TO_2021.values()) - {None} == set(range(NEGATIVE))  # every localisation has a source


def test_mapped_score_is_max_of_sources_and_negative_is_one_minus_max():
    rng = np.random.default_rng(0)
    s = rng.random((50, 28)).astype(np.float32) * 0.9
    out = map_scores_2018_to_2021(s)
    assert out.shape == (50, 19)
    for new in range(NEGATIVE):
        sources = [o for o, n in MAP_2018_TO_2021.items() if n == new]
        assert np.array_equal(out[:, new], s[:, sources].max(axis=1))
    assert np.allclose(out[:, NEGATIVE], 1 - out[:, :NEGATIVE].max(axis=1))
    only_dropped = np.zeros((1, 28), np.float32)
    only_dropped[0, [15, 16, 27]] = 0.99
    assert map_scores_2018_to_2021(only_dropped)[0, NEGATIVE] == 1.0


def test_negative_score_and_label_mapping():
    assert negative_score(np.array([[0.2, 0.7]])).tolist() == pytest.approx([0.3])
    y = np.zeros((3, 28), np.uint8)
    y[0, [13, 12]] = 1
    y[1, [15, 27]] = 1
    y[2, [0, 20]] = 1
    mapped = map_labels_2018_to_2021(y)
    assert [np.flatnonzero(r).tolist() for r in mapped] == [[9], [18], [0, 17]]


def test_2021_model_scores_pass_through_and_unknown_sets_fail():
    s = np.random.default_rng(1).random((4, 19)).astype(np.float32)
    assert np.array_equal(to_2021_scores(s, CLASS_NAMES_2021), s)
    with pytest.raises(ValueError, match="neither"):
        to_2021_scores(s[:, :5], ["a", "b", "c", "d", "e"])


def test_cell_score_rules():
    c = np.array([[0.9, 0.2, 0.0]])
    i = np.array([[0.4, 0.5, 1.0]])
    assert cell_confidence(c, i, "cell")[0] == pytest.approx(c[0])
    assert cell_confidence(c, i, "image")[0] == pytest.approx(i[0])
    assert cell_confidence(c, i, "product")[0] == pytest.approx([0.36, 0.1, 0.0])
    assert cell_confidence(c, i, "geometric")[0] == pytest.approx([0.6, 0.1**0.5, 0.0])
    assert set(CELL_SCORES) == {"cell", "image", "product", "geometric", "image-then-cell"}
    # image-then-cell: the image's order across images, the cell's inside one image
    cells = np.array([[0.9], [0.1], [1.0], [0.0]])
    images = np.array([[0.50], [0.50], [0.499], [0.501]])
    ranked = cell_confidence(cells, images, "image-then-cell").ravel()
    assert ranked[0] > ranked[1]  # same image: the cell's own probability decides
    assert ranked[3] > ranked[0] > ranked[1] > ranked[2]  # 0.2 % apart: the image decides
    assert np.all(np.abs(ranked - images.ravel()) <= TIE_BREAK * images.ravel())
    with pytest.raises(ValueError, match="unknown cell score"):
        cell_confidence(c, i, "mean")
    with pytest.raises(ValueError, match="shape"):
        cell_confidence(c, i[:, :2], "cell")


def test_prediction_string_lists_each_cell_once_per_class():
    conf = np.zeros((2, 19))
    conf[0, [0, 5]] = [0.5, 0.02]
    conf[1, 18] = 0.9
    conf[1, 3] = 0.001  # below the floor: not listed
    text = prediction_string([4, 9], conf, {4: "AAA", 9: "BBB"}, 0.01)
    assert text == "0 0.5 AAA 5 0.02 AAA 18 0.9 BBB"


@pytest.mark.realdata
def test_mapping_agreement_on_the_55_real_pairs(shared_data):
    pairs = [
        (
            shared_data / "hpa-real" / "kaggle-2018" / "train.csv",
            shared_data / "hpa-real" / "kaggle-2018" / "labels_2021.csv",
        ),
        (
            shared_data / "hpa-2021-samples" / "labels_2018.csv",
            shared_data / "hpa-2021-samples" / "labels_2021.csv",
        ),
    ]
    old_rows, new_rows = [], []
    for old_path, new_path in pairs:
        old, new = read_labels(old_path), read_labels(new_path)
        common = [i for i in new.ids if i in set(old.ids)]
        old_rows.append(old.subset(common).y)
        new_rows.append(new.subset(common).y)
    y18, y21 = np.concatenate(old_rows), np.concatenate(new_rows)
    assert len(y18) == 55
    result = mapping_agreement(y18, y21)
    # the same figure counted by hand, set by set
    exact = 0
    for a, b in zip(y18, y21):
        mapped = {MAP_2018_TO_2021[k] for k in np.flatnonzero(a)} - {None}
        exact += (mapped or {NEGATIVE}) == set(np.flatnonzero(b).tolist())
    assert result["n"] == 55 and result["exact"] == pytest.approx(exact / 55)
    assert 0.3 < result["exact"] < 1.0  # re-annotated: the table agrees often, not always


def test_the_cli_offers_every_cell_score_rule():
    import argparse

    from hpa.cli import _add_single_cell_output

    parser = argparse.ArgumentParser()
    _add_single_cell_output(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "cell_score")
    assert tuple(choices) == CELL_SCORES
