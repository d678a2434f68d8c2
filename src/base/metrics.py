"""MAP@3, the 2018 competition's metric (1, 1/2 or 1/3 when the true label is 1st, 2nd or 3rd of the top
three); for multi-label tagging lwlrap (the 2019 competition's) and mAP (FSD50K's); and the geometric
mean that blends probability matrices."""
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


LEADERBOARDS = ("Public", "Private")
"""The competitions' leaderboards, as test_labels.csv's usage column names them."""


def test_scores(y_test: np.ndarray, probs: np.ndarray, usage: np.ndarray | None = None, score=None,
                known: np.ndarray | None = None, name: str = "map3") -> dict:
    """test_<name> (MAP@3 by default, or `score(y, probs)`, e.g. lwlrap on multi-hot targets) over the
    known test clips (default: y_test >= 0, class indices), and test_<name>_public / _private over each
    leaderboard's clips where `usage` says which (Public or Private), as the competition scored them."""
    score = score or map_at_k
    known = y_test >= 0 if known is None else known
    scores = {f"test_{name}": score(y_test[known], probs[known]), "test_rows": int(known.sum())}
    for board in LEADERBOARDS if usage is not None else ():
        rows = known & (usage == board)
        if rows.any():
            scores[f"test_{name}_{board.lower()}"] = score(y_test[rows], probs[rows])
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


def lwlrap_per_class(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each class's label-ranking average precision, each class's share of all true labels).

    For every true label of every clip: the share of the clip's labels ranked at or above it, among all
    labels ranked at or above it (ties count as ranked above, as scikit-learn's
    label_ranking_average_precision_score does). A class's figure is the mean over its true labels;
    lwlrap is their mean weighted by the shares. Clips without a true label count for nothing."""
    y_true, scores = np.asarray(y_true) > 0.5, np.asarray(scores, dtype=np.float64)
    n_classes = y_true.shape[1]
    sums, counts = np.zeros(n_classes), y_true.sum(axis=0).astype(float)
    for truth, row in zip(y_true, scores):
        positives = np.flatnonzero(truth)
        if len(positives) == 0:
            continue
        at_or_above = row[None, :] >= row[positives, None]           # (positives, classes)
        sums[positives] += (at_or_above & truth).sum(axis=1) / at_or_above.sum(axis=1)
    total = counts.sum()
    per_class = np.divide(sums, counts, out=np.full(n_classes, np.nan), where=counts > 0)
    return per_class, counts / total if total else counts


def lwlrap(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Label-weighted label-ranking average precision: every (clip, true label) pair counts once."""
    per_class, weights = lwlrap_per_class(y_true, scores)
    return float(np.nansum(per_class * weights)) if weights.sum() else float("nan")


def average_precisions(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each class's average precision over the clips ranked by its score (the mean, over the class's
    positive clips, of the precision among the clips scored at or above each); NaN for a class
    without positives. Ties count as ranked above, as in scikit-learn's average_precision_score."""
    y_true, scores = np.asarray(y_true) > 0.5, np.asarray(scores, dtype=np.float64)
    out = np.full(y_true.shape[1], np.nan)
    for c in range(y_true.shape[1]):
        positives = y_true[:, c]
        if not positives.any():
            continue
        at_or_above = scores[None, :, c] >= scores[positives, c][:, None]   # (positives, clips)
        out[c] = float(np.mean((at_or_above & positives).sum(axis=1) / at_or_above.sum(axis=1)))
    return out


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """mAP: the mean of the classes' average precisions (classes without positives left out)."""
    return float(np.nanmean(average_precisions(y_true, scores)))


def geometric_mean(probs: list[np.ndarray], weights: list[float] | None = None,
                   normalize: bool = True) -> np.ndarray:
    """Weighted geometric mean of probability matrices, each row renormalised to sum to 1 (for one label
    per clip; normalize=False keeps each label's own probability, for multi-label tagging)."""
    weights = _weights(probs, weights)
    log_mean = sum(w * np.log(np.clip(p, 1e-7, 1.0)) for w, p in zip(weights, probs)) / weights.sum()
    mean = np.exp(log_mean)
    return mean / mean.sum(axis=1, keepdims=True) if normalize else mean


COMBINES = ("geometric", "arithmetic")


def combine(probs: list[np.ndarray], weights: list[float] | None = None, how: str = "geometric",
            normalize: bool = True) -> np.ndarray:
    """Probability matrices blended by their weighted geometric mean (geometric_mean) or arithmetic mean.
    normalize=False (multi-label) keeps each label's own probability in the geometric mean; an
    arithmetic mean of rows that sum to 1 sums to 1 already."""
    if how == "geometric":
        return geometric_mean(probs, weights, normalize)
    weights = _weights(probs, weights)
    return sum(w * p for w, p in zip(weights, probs)) / weights.sum()


def _weights(probs: list[np.ndarray], weights: list[float] | None) -> np.ndarray:
    """One non-negative weight per matrix, not all zero (equal when none are given)."""
    weights = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=float)
    if len(weights) != len(probs) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"need one non-negative weight per matrix, not all zero; got {list(weights)}")
    return weights
