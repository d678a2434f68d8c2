"""The folds every model shares: data/folds.csv, written once (a seeded StratifiedKFold, a multi-label
stratified one for multi-label tables, or the dataset's own `fold` column).

In a multi-label dataset the unverified rows (FSDKaggle2019's noisy subset) are never validated on:
their fold is ALWAYS_TRAINING, so every fold trains on them and no OOF prediction scores them."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError
from ..base.files import atomic_write_csv
from ..base.layout import table_path

log = logging.getLogger(__name__)

ALWAYS_TRAINING = -1
"""The fold of rows that every fold trains on and none validates on."""


def fold_ids(folds: pd.DataFrame) -> list[int]:
    """The folds to train: every fold number but ALWAYS_TRAINING."""
    return sorted(int(k) for k in folds.fold.unique() if k != ALWAYS_TRAINING)


def load_folds(data_dir: Path, train: pd.DataFrame, n_folds: int | None = 10, seed: int = 42) -> pd.DataFrame:
    """fname,fold for every row of `train` (train.csv), written once to data/folds.csv so every model
    shares it.

    n_folds=None reads the folds that exist, whatever their number. A `fold` column in train.csv
    (predefined folds, e.g. ESC-50) is used as is; otherwise a shuffled, seeded StratifiedKFold on the
    labels.
    """
    from sklearn.model_selection import StratifiedKFold

    path = table_path(data_dir, "folds")
    if path.exists():
        folds = _read_folds(path)
        listed, wanted = set(folds.fname), set(train.fname)
        if listed != wanted:  # keyed by clip: the same clips in another order are the same folds
            extra, absent = sorted(listed - wanted), sorted(wanted - listed)
            what = (f"lacks {len(absent)} clip(s) of train.csv (e.g. {absent[0]!r})" if absent else
                    f"lists {len(extra)} clip(s) that train.csv does not (e.g. {extra[0]!r})")
            raise DataError(f"{path} {what}: it was made for another train.csv. Delete it to make new folds "
                            f"(older predictions then no longer line up: delete them too).")
        folds = folds.set_index("fname").loc[train.fname].reset_index()  # train.csv's order
        existing = len(fold_ids(folds))
        if n_folds is not None and "fold" not in train.columns and existing != n_folds:
            raise DataError(f"{path} holds {existing} folds, but {n_folds} were asked for. Use "
                            f"--n-folds {existing}, or delete {path} (and predictions made on it).")
        return folds
    if n_folds is None and "fold" not in train.columns:
        raise DataError(f"{path} does not exist yet: train some folds first (./run_folds.sh MODEL).")
    if "fold" in train.columns:
        folds = train[["fname", "fold"]].astype({"fold": int})
    elif "labels" in train.columns:
        folds = _multilabel_folds(train, n_folds, seed)
    else:
        smallest = train.label.value_counts().min()
        if smallest < n_folds:
            log.warning("the smallest class has %d clips, fewer than %d folds: some folds lack it",
                        smallest, n_folds)
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        fold = np.zeros(len(train), dtype=int)
        for k, (_, val) in enumerate(splitter.split(train.fname, train.label)):
            fold[val] = k
        folds = pd.DataFrame({"fname": train.fname, "fold": fold})
    atomic_write_csv(folds, path)
    log.info("wrote %s (%d folds)", path, len(fold_ids(folds)))
    return folds


def _read_folds(path: Path) -> pd.DataFrame:
    """folds.csv: fname,fold, one row per clip, integer folds; DataError naming the row otherwise."""
    try:
        folds = pd.read_csv(path, dtype={"fname": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read ({type(error).__name__}): delete it to make new folds.") from None
    if list(folds.columns[:2]) != ["fname", "fold"] or folds.fname.duplicated().any() or \
            not pd.api.types.is_integer_dtype(folds.fold):
        raise DataError(f"{path} is not a folds table (fname,fold with one integer fold per clip, each clip "
                        f"once): delete it to make new folds.")
    return folds


def with_folds(train: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """train.csv's rows with their fold from folds.csv (which wins over any fold column of train.csv)."""
    return train.drop(columns="fold", errors="ignore").merge(folds, on="fname", how="left")


def _multilabel_folds(train: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """Iterative stratification (Sechidis et al., 2011; the iterative-stratification package) of the
    verified rows on their label sets; unverified rows always train."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    verified = train.manually_verified.to_numpy() == 1
    if verified.sum() < n_folds:
        raise DataError(f"{verified.sum()} verified clips cannot fill {n_folds} folds: unverified clips are never "
                        f"validated on in a multi-label dataset. Lower --n-folds or mark more rows verified.")
    names = sorted({label for text in train.labels for label in text.split(",")})
    index = {label: i for i, label in enumerate(names)}
    hot = np.zeros((int(verified.sum()), len(names)), np.int8)
    for row, text in zip(hot, train.labels[verified]):
        row[[index[label] for label in text.split(",")]] = 1
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(train), ALWAYS_TRAINING)
    positions = np.flatnonzero(verified)
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(hot)), hot)):
        fold[positions[val]] = k
    return pd.DataFrame({"fname": train.fname, "fold": fold})
