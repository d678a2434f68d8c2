import numpy as np
import pytest

from src.base.metrics import average_precision_at_k, map_at_k, map_at_k_labels, per_row_precision, top_k


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
