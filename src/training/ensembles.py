"""Ways to combine several models' out-of-fold (OOF) probabilities into one: weights fitted on the OOF
matrix, the best equal-weight subset, and a second-level (stacking) model. Each choice is made on OOF
rows only; the test set plays no part. Inputs are plain matrices aligned with train.csv, NaN rows where
no fold predicted."""
from __future__ import annotations

import itertools

import numpy as np

from ..base.errors import DataError
from ..dataset.task import Task


def predicted_rows(oofs: list[np.ndarray]) -> np.ndarray:
    """Mask of the OOF rows that every one of the matrices predicted (unfinished folds leave NaN)."""
    return ~np.any([np.isnan(o).any(axis=1) for o in oofs], axis=0)


def fit_weights(oofs: list[np.ndarray], targets: np.ndarray, task: Task) -> np.ndarray:
    """Blend weights (non-negative, summing to 1) that minimise the task's log loss of the weighted
    geometric mean of OOF matrices, over the rows every model predicted. Only OOF rows: never the test set."""
    from scipy.optimize import minimize

    rows = predicted_rows(oofs)
    logs = np.stack([np.log(np.clip(o[rows], 1e-7, 1.0)) for o in oofs])  # models x rows x classes
    y = targets[rows]

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        return task.weight_loss(y, np.tensordot(w, logs, axes=1))

    # Softmax weights keep the search unconstrained; equal weights are the starting point.
    theta = minimize(loss, np.zeros(len(oofs)), method="Nelder-Mead" if len(oofs) > 1 else "BFGS",
                     options={"xatol": 1e-4, "fatol": 1e-7} if len(oofs) > 1 else {}).x
    weights = np.exp(theta - theta.max())
    return weights / weights.sum()


def fold_spread(oof: np.ndarray, targets: np.ndarray, folds: np.ndarray, task: Task) -> float:
    """Standard deviation over folds of the task's OOF score: how much a score moves from split to split."""
    rows = ~np.isnan(oof).any(axis=1)
    scores = [task.score(targets[rows & (folds == k)], oof[rows & (folds == k)]) for k in np.unique(folds[rows])]
    return float(np.std(scores))


# 2^15 - 1 subsets is still quick; more models than that want a greedy search.
MAX_SEARCH_MODELS = 15


def search_blends(oofs: dict[str, np.ndarray], targets: np.ndarray, task: Task) -> list[tuple[float, list[str]]]:
    """Every non-empty subset of the models, blended with equal weights, ranked by the task's OOF score over
    the rows every model predicted (best first; on a tie, fewer models first). Only OOF rows: the test set
    plays no part in the choice."""
    if len(oofs) > MAX_SEARCH_MODELS:
        raise DataError(f"--search tries every subset: at most {MAX_SEARCH_MODELS} models, not "
                        f"{len(oofs)}. Name the candidates on the command line.")
    rows = predicted_rows(list(oofs.values()))
    oofs, y = {name: oof[rows] for name, oof in oofs.items()}, targets[rows]
    ranking = []
    for size in range(1, len(oofs) + 1):
        for subset in itertools.combinations(oofs, size):
            ranking.append((task.score(y, task.combine([oofs[name] for name in subset])), list(subset)))
    ranking.sort(key=lambda entry: (-entry[0], len(entry[1])))
    return ranking


STACK_STRENGTHS = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths the inner cross-validation chooses from


def stacked(oofs: list[np.ndarray], tests: list[np.ndarray], targets: np.ndarray,
            folds: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A second-level model on the models' OOF probabilities: the task's stacker (a multinomial logistic
    regression, or one binary logistic regression per label chosen by lwlrap) on their standardised logs,
    its regularisation chosen by an inner 3-fold cross-validation. Its OOF predictions come from the outer
    folds (folds, one per train row) (each outer fold predicted by a stacker trained on the others, inner
    CV included), so its OOF score is as honest as the first level's; the test predictions come from a
    stacker trained on every OOF row. Only OOF rows train or choose anything. Returns the OOF matrix
    (NaN where some model has no prediction), the test matrix and the strength chosen per outer fold."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    rows = predicted_rows(oofs)
    features = lambda matrices: np.concatenate([np.log(np.clip(m, 1e-7, 1.0)) for m in matrices], axis=1)
    x, y = features([oof[rows] for oof in oofs]), task.stack_targets(targets[rows])
    groups = folds[rows]
    n_classes = oofs[0].shape[1]

    def fit(x_fit, y_fit):
        # Standardised features: the solver converges in a few hundred iterations instead of crawling
        # to its limit on raw log-probabilities.
        estimator, inner, scoring, strength = task.stacker()
        search = GridSearchCV(make_pipeline(StandardScaler(), estimator), {strength: list(STACK_STRENGTHS)},
                              cv=inner, scoring=scoring)
        with threadpool_limits(1):  # matrices this small run slower on several BLAS threads, not faster
            return search.fit(x_fit, y_fit), strength

    oof, strengths = np.full((len(targets), n_classes), np.nan), []
    for k in np.unique(groups):
        model, strength = fit(x[groups != k], y[groups != k])
        oof[np.flatnonzero(rows)[groups == k]] = task.stack_probabilities(model, x[groups == k], n_classes)
        strengths.append(float(model.best_params_[strength]))
    test = task.stack_probabilities(fit(x, y)[0], features(tests), n_classes) if len(tests[0]) else \
        np.zeros((0, n_classes))
    return oof, test, strengths
