import numpy as np
import pytest
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score

from src.base.metrics import (
    average_precision_at_k,
    average_precisions,
    geometric_mean,
    lwlrap,
    lwlrap_per_class,
    map_at_k,
    map_at_k_labels,
    mean_average_precision,
    per_row_precision,
    top_k,
)


def test_rank_one_two_three_and_absent():
    probs = np.array([
        [0.7, 0.2, 0.1, 0.0],  # true 0: 1st -> 1
        [0.7, 0.2, 0.1, 0.0],  # true 1: 2nd -> 1/2
        [0.7, 0.2, 0.1, 0.0],  # true 2: 3rd -> 1/3
        [0.7, 0.2, 0.1, 0.0],  # true 3: 4th -> 0
    ])
    y = np.array([0, 1, 2, 3])
    assert per_row_precision(y, probs).tolist() == pytest.approx([1, 0.5, 1 / 3, 0])
    assert map_at_k(y, probs) == pytest.approx((1 + 0.5 + 1 / 3 + 0) / 4)


def test_ties_go_to_the_lower_class_index():
    probs = np.array([[0.25, 0.25, 0.25, 0.25]])
    assert top_k(probs, 3).tolist() == [[0, 1, 2]]
    assert map_at_k(np.array([1]), probs) == pytest.approx(0.5)
    assert map_at_k(np.array([3]), probs) == 0.0


def test_label_lists_match_kaggle_apk():
    assert average_precision_at_k("a", ["b", "a", "c"]) == 0.5
    assert average_precision_at_k("a", ["b", "b", "a"]) == pytest.approx(1 / 3)
    assert average_precision_at_k("a", ["b", "c", "d", "a"]) == 0.0
    assert map_at_k_labels(["a", "c"], [["a", "b", "c"], ["a", "b", "c"]]) == pytest.approx((1 + 1 / 3) / 2)


# Multi-label: three clips, four labels.
Y = np.array([[1, 0, 1, 0],
              [0, 1, 0, 0],
              [1, 1, 1, 0]])
SCORES = np.array([[0.9, 0.8, 0.1, 0.0],   # label 0 ranked 1st (1/1), label 2 ranked 3rd (2/3)
                   [0.2, 0.1, 0.3, 0.4],   # label 1 ranked 4th (1/4)
                   [0.5, 0.7, 0.6, 0.1]])  # labels 1, 2, 0 ranked 1st to 3rd: 1/1, 2/2, 3/3


def test_lwlrap_worked_by_hand():
    per_class, weights = lwlrap_per_class(Y, SCORES)
    # Class 0: clips 0 and 2 -> (1 + 1) / 2; class 1: clips 1, 2 -> (1/4 + 1) / 2; class 2: (2/3 + 1) / 2.
    np.testing.assert_allclose(per_class[:3], [1.0, 0.625, 5 / 6])
    assert np.isnan(per_class[3])
    np.testing.assert_allclose(weights, [2 / 6, 2 / 6, 2 / 6, 0])
    assert lwlrap(Y, SCORES) == pytest.approx((1 + 2 / 3 + 1 / 4 + 1 + 1 + 1) / 6)  # every (clip, label) once


def test_lwlrap_equals_sklearn_lrap_when_every_clip_has_as_many_labels():
    rng = np.random.default_rng(0)
    for n_labels in (1, 2):
        y = np.zeros((40, 6), int)
        for row in y:
            row[rng.choice(6, n_labels, replace=False)] = 1
        scores = rng.random((40, 6)).round(1)   # rounded: ties, handled as scikit-learn does
        assert lwlrap(y, scores) == pytest.approx(label_ranking_average_precision_score(y, scores))
    # One label per clip and no ties: 1 / rank over the whole ranking, so MAP@3 plus what ranks 4-6 add.
    y, scores = np.eye(6, dtype=int)[rng.integers(0, 6, 40)], rng.random((40, 6))
    rank = (scores >= scores[np.arange(40), y.argmax(1)][:, None]).sum(axis=1)
    assert lwlrap(y, scores) == pytest.approx(map_at_k(y.argmax(1), scores) + np.where(rank > 3, 1 / rank, 0).mean())


def test_average_precision_by_hand_and_against_sklearn():
    # Class 1 over the three clips: scores 0.8 (no), 0.1 (yes), 0.7 (yes): ranks 3 and 2 -> (1/2 + 2/3) / 2.
    assert average_precisions(Y, SCORES)[1] == pytest.approx((1 / 2 + 2 / 3) / 2)
    rng = np.random.default_rng(1)
    y = (rng.random((50, 5)) < 0.3).astype(int)
    scores = rng.random((50, 5)).round(1)
    np.testing.assert_allclose(average_precisions(y, scores), average_precision_score(y, scores, average=None))
    assert mean_average_precision(y, scores) == pytest.approx(average_precision_score(y, scores, average="macro"))


def test_geometric_mean_keeps_each_label_probability_for_multi_label():
    a, b = np.array([[0.9, 0.4]]), np.array([[0.1, 0.9]])
    np.testing.assert_allclose(geometric_mean([a, b], normalize=False), [[0.3, 0.6]])
