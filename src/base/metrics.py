"""MAP@3, the competition metric (1, 1/2 or 1/3 when the true label is 1st, 2nd or 3rd of the top
three), and the geometric mean that blends probability matrices."""
from __future__ import annotations

import numpy as np


def top_k(probs: np.ndarray, k: int = 3) -> np.ndarray:
    """Column indices of the k highest probabilities per row, best first; ties go to the lower index."""
    probs = np.asarray(probs)
    # A stable sort of the negated scores keeps equal scores in column order.
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def average_precision_at_k(actual: int, predicted, k: int = 3) -> float:
    """1 / rank of the first guess equal to the true label within the first k, 0 when it is absent."""
    for rank, guess in enumerate(list(predicted)[:k], start=1):
        if guess == actual:
            return 1.0 / rank
    return 0.0


def map_at_k(y_true: np.ndarray, probs: np.ndarray, k: int = 3) -> float:
    """Mean over rows of average_precision_at_k, from class indices and a probability matrix."""
    return float(np.mean(per_row_precision(y_true, probs, k))) if len(y_true) else float("nan")


def test_scores(y_test: np.ndarray, probs: np.ndarray, usage: np.ndarray | None = None) -> dict:
    """Test MAP@3 over the clips with a label (y_test >= 0); with each clip's leaderboard (`usage`:
    Public or Private, FSDKaggle2018's release), also over each leaderboard's clips as the 2018
    competition scored them."""
    known = y_test >= 0
    scores = {"test_map3": map_at_k(y_test[known], probs[known]), "test_rows": int(known.sum())}
    for board in ("Public", "Private") if usage is not None else ():
        rows = known & (usage == board)
        if rows.any():
            scores[f"test_map3_{board.lower()}"] = map_at_k(y_test[rows], probs[rows])
    return scores


def per_row_precision(y_true: np.ndarray, probs: np.ndarray, k: int = 3) -> np.ndarray:
    """Each row's 1/rank of its true class within the top k, else 0."""
    y_true = np.asarray(y_true)
    hits = top_k(probs, k) == y_true[:, None]
    ranks = np.argmax(hits, axis=1) + 1
    return np.where(hits.any(axis=1), 1.0 / ranks, 0.0)


def map_at_k_labels(actual: list[str], predicted: list[list[str]], k: int = 3) -> float:
    """MAP@k from label strings, e.g. a submission's space-separated guesses against true labels."""
    return float(np.mean([average_precision_at_k(a, p, k) for a, p in zip(actual, predicted)]))


def geometric_mean(probs: list[np.ndarray], weights: list[float] | None = None) -> np.ndarray:
    """Weighted geometric mean of probability matrices, each row renormalised to sum to 1."""
    weights = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=float)
    if len(weights) != len(probs) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"need one non-negative weight per matrix, not all zero; got {list(weights)}")
    log_mean = sum(w * np.log(np.clip(p, 1e-7, 1.0)) for w, p in zip(weights, probs)) / weights.sum()
    mean = np.exp(log_mean)
    return mean / mean.sum(axis=1, keepdims=True)
