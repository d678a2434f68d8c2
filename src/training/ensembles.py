"""Ways to combine several models' out-of-fold (OOF) probabilities into one: weights fitted on the OOF
matrix, the best equal-weight subset, and a second-level (stacking) model. Each choice is made on OOF
rows only; the test set plays no part. Inputs are plain matrices aligned with train.csv, NaN rows where
no fold predicted."""
from __future__ import annotations

import itertools

import numpy as np

from ..base.errors import DataError
from ..base.metrics import geometric_mean, lwlrap, map_at_k


def predicted_rows(oofs: list[np.ndarray]) -> np.ndarray:
    """Mask of the OOF rows that every one of the matrices predicted (unfinished folds leave NaN)."""
    return ~np.any([np.isnan(o).any(axis=1) for o in oofs], axis=0)


def fit_weights(oofs: list[np.ndarray], y_true: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Blend weights (non-negative, summing to 1) that minimise the log loss of the weighted geometric
    mean of OOF matrices, over the rows every model predicted (multilabel: y_true multi-hot, the binary
    cross-entropy of each label's own probability). Only OOF rows: never the test set."""
    from scipy.optimize import minimize

    rows = predicted_rows(oofs)
    logs = np.stack([np.log(np.clip(o[rows], 1e-7, 1.0)) for o in oofs])  # models x rows x classes
    y = y_true[rows]

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        mixed = np.tensordot(w, logs, axes=1)
        if multilabel:
            p = np.clip(np.exp(mixed), 1e-7, 1 - 1e-7)
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        log_norm = np.log(np.exp(mixed - mixed.max(axis=1, keepdims=True)).sum(axis=1)) + mixed.max(axis=1)
        return float(np.mean(log_norm - mixed[np.arange(len(y)), y]))

    # Softmax weights keep the search unconstrained; equal weights are the starting point.
    theta = minimize(loss, np.zeros(len(oofs)), method="Nelder-Mead" if len(oofs) > 1 else "BFGS",
                     options={"xatol": 1e-4, "fatol": 1e-7} if len(oofs) > 1 else {}).x
    weights = np.exp(theta - theta.max())
    return weights / weights.sum()


def fold_spread(oof: np.ndarray, y_true: np.ndarray, folds: np.ndarray, score=map_at_k) -> float:
    """Standard deviation over folds of the OOF MAP@3 (or `score`, e.g. lwlrap): how much a score moves
    from split to split."""
    rows = ~np.isnan(oof).any(axis=1)
    scores = [score(y_true[rows & (folds == k)], oof[rows & (folds == k)]) for k in np.unique(folds[rows])]
    return float(np.std(scores))


# 2^15 - 1 subsets is still quick; more models than that want a greedy search.
MAX_SEARCH_MODELS = 15


def search_blends(oofs: dict[str, np.ndarray], y_true: np.ndarray, score=map_at_k,
                  normalize: bool = True) -> list[tuple[float, list[str]]]:
    """Every non-empty subset of the models, blended with equal weights, ranked by OOF MAP@3 (or
    `score(y_true, probs)`, e.g. lwlrap on multi-hot targets with normalize=False) over the rows every
    model predicted (best first; on a tie, fewer models first). Only OOF rows: the test set plays no
    part in the choice."""
    if len(oofs) > MAX_SEARCH_MODELS:
        raise DataError(f"--search tries every subset: at most {MAX_SEARCH_MODELS} models, not "
                        f"{len(oofs)}. Name the candidates on the command line.")
    rows = predicted_rows(list(oofs.values()))
    oofs, y = {name: oof[rows] for name, oof in oofs.items()}, y_true[rows]
    ranking = []
    for size in range(1, len(oofs) + 1):
        for subset in itertools.combinations(oofs, size):
            ranking.append((score(y, geometric_mean([oofs[name] for name in subset], normalize=normalize)),
                            list(subset)))
    ranking.sort(key=lambda entry: (-entry[0], len(entry[1])))
    return ranking


STACK_STRENGTHS = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths the inner cross-validation chooses from


def stacked(oofs: list[np.ndarray], tests: list[np.ndarray], y_train: np.ndarray,
            folds: np.ndarray, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A second-level model on the models' OOF probabilities: multinomial logistic regression on their
    standardised logs (multilabel: y_train multi-hot, one binary logistic regression per label, chosen by
    lwlrap), its regularisation chosen by an inner 3-fold cross-validation. Its OOF predictions come from
    the outer folds (folds, one per train row) (each outer fold predicted by a stacker trained on the others, inner
    CV included), so its OOF MAP@3 is as honest as the first level's; the test predictions come from a
    stacker trained on every OOF row. Only OOF rows train or choose anything. Returns the OOF matrix
    (NaN where some model has no prediction), the test matrix and the strength chosen per outer fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    rows = predicted_rows(oofs)
    features = lambda matrices: np.concatenate([np.log(np.clip(m, 1e-7, 1.0)) for m in matrices], axis=1)
    x, y = features([oof[rows] for oof in oofs]), y_train[rows]
    groups = folds[rows]
    n_classes = oofs[0].shape[1]

    strength = "onevsrestclassifier__estimator__C" if multilabel else "logisticregression__C"

    def fit(x_fit, y_fit):
        # Standardised features: the solver converges in a few hundred iterations instead of crawling
        # to its limit on raw log-probabilities.
        if multilabel:
            inner = KFold(3, shuffle=True, random_state=0)
            estimator = OneVsRestClassifier(LogisticRegression(max_iter=2000))
            scoring = make_scorer(lwlrap, response_method="predict_proba")
        else:
            inner = StratifiedKFold(3, shuffle=True, random_state=0)
            estimator, scoring = LogisticRegression(max_iter=2000), "neg_log_loss"
        search = GridSearchCV(make_pipeline(StandardScaler(), estimator), {strength: list(STACK_STRENGTHS)},
                              cv=inner, scoring=scoring)
        with threadpool_limits(1):  # matrices this small run slower on several BLAS threads, not faster
            return search.fit(x_fit, y_fit)

    def probabilities(model, x_new):
        if multilabel:
            return model.predict_proba(x_new)
        out = np.full((len(x_new), n_classes), 1e-9)   # labels the stacker never saw: last, not absent
        out[:, model.best_estimator_.classes_] = model.predict_proba(x_new)
        return out / out.sum(axis=1, keepdims=True)

    oof, strengths = np.full((len(y_train), n_classes), np.nan), []
    for k in np.unique(groups):
        model = fit(x[groups != k], y[groups != k])
        oof[np.flatnonzero(rows)[groups == k]] = probabilities(model, x[groups == k])
        strengths.append(float(model.best_params_[strength]))
    test = probabilities(fit(x, y), features(tests)) if len(tests[0]) else np.zeros((0, n_classes))
    return oof, test, strengths
