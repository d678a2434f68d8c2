"""The folds every model shares: data/folds.csv, written once (a seeded StratifiedKFold, or the
dataset's own `fold` column)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError
from ..base.files import atomic_write_csv
from ..base.layout import table_path

log = logging.getLogger(__name__)


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
        folds = pd.read_csv(path, dtype={"fname": str})
        if list(folds.fname) != list(train.fname):
            raise DataError(f"{path} does not list the clips of {table_path(data_dir, 'train')} in order; it was "
                            f"made for another train.csv. Delete it to make new folds (older "
                            f"predictions then no longer line up: delete them too).")
        existing = folds.fold.nunique()
        if n_folds is not None and "fold" not in train.columns and existing != n_folds:
            raise DataError(f"{path} holds {existing} folds, but {n_folds} were asked for. Use "
                            f"--n-folds {existing}, or delete {path} (and predictions made on it).")
        return folds
    if n_folds is None and "fold" not in train.columns:
        raise DataError(f"{path} does not exist yet: train some folds first (./run_folds.sh MODEL).")
    if "fold" in train.columns:
        folds = train[["fname", "fold"]].astype({"fold": int})
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
    log.info("wrote %s (%d folds)", path, folds.fold.nunique())
    return folds


def with_folds(train: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """train.csv's rows with their fold from folds.csv (which wins over any fold column of train.csv)."""
    return train.drop(columns="fold", errors="ignore").merge(folds, on="fname", how="left")
