"""The folds every model shares: data/folds.csv, written once (a seeded StratifiedKFold, a multi-label
stratified one for multi-label tables, or the dataset's own `fold` column).

In a multi-label dataset the unverified rows (FSDKaggle2019's noisy subset) are never validated on:
their fold is ALWAYS_TRAINING, so every fold trains on them and no OOF prediction scores them."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..base.errors import DataError
from ..base.files import atomic_write_csv
from ..base.layout import table_path
from .task import ALWAYS_TRAINING, task_of

log = logging.getLogger(__name__)



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
    else:
        folds = pd.DataFrame({"fname": train.fname, "fold": task_of(train).folds(train, n_folds, seed)})
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
