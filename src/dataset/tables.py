"""A dataset's tables, read and validated once: train rows, the label list, the test clips in
submission order and, when shipped, their labels (src.base.layout names the files).

The task kind follows from train.csv: a `label` column gives one label per clip (FSDKaggle2018, ESC-50);
a `labels` column of comma-separated labels makes the dataset multi-label (FSDKaggle2019, FSD50K).
A multi-label table keeps `labels` and gets `label` as the same labels joined by commas, so code that
only shows or hashes a clip's labels reads one column either way."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.errors import DataError
from ..base.files import irregular
from ..base.layout import audio_dir, row_number, table_path
from ..base.metrics import LEADERBOARDS
from .folds import load_folds, with_folds
from .task import Task, task_of


def read_table(path: Path, required: list[str], rows_required: bool = False) -> pd.DataFrame:
    """A CSV table of clips, whole and checked: required columns, fnames that name clips (once each).
    DataError naming the file, row and fix otherwise."""
    path = Path(path)
    if path.exists() and irregular(path):
        raise DataError(f"{path} is {irregular(path)}, not a table: replace it with the CSV file.")
    if not path.exists():
        raise DataError(f"{path} is missing. Run `python -m src.data --data-dir {path.parent}` "
                        f"after placing the competition files there (see README).")
    try:
        table = pd.read_csv(path, dtype={"fname": str, "label": str, "labels": str}, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: it needs a header ({','.join(required)}) and one row per clip.") from None
    except pd.errors.ParserError as error:
        raise DataError(_parser_problem(path, error)) from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8 CSV.") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(table.columns)}.")
    if table.empty and rows_required:
        raise DataError(f"{path} has a header but no rows: list one clip per row.")
    bad = table["fname"].isna()
    if bad.any():
        raise DataError(f"{path}, row {row_number(bad.idxmax())}: empty fname.")
    for i, fname in table["fname"].items():
        why = fname_problem(fname)
        if why:
            raise DataError(f"{path}, row {row_number(i)}: fname {fname!r} {why}.")
    dup = table["fname"].duplicated()
    if dup.any():
        i = int(dup.idxmax())
        raise DataError(f"{path}, row {row_number(i)}: duplicate fname {table.fname[i]!r} "
                        f"(first at row {row_number(int((table.fname == table.fname[i]).idxmax()))}); "
                        f"each clip must be listed once.")
    return table


def _parser_problem(path: Path, error: Exception) -> str:
    """One paragraph for a row pandas cannot split: its line, what it holds, and the likely fix."""
    import re

    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
    if not found:
        return f"{path} cannot be read as CSV ({str(error).strip().splitlines()[0]}): fix the file's quoting."
    expected, line, seen = map(int, found.groups())
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        text = next((row for k, row in enumerate(handle, start=1) if k == line), "").rstrip("\r\n")
    return (f"{path}, row {line}: {seen} fields where the header has {expected}: {text[:120]!r}. A field "
            f"holding commas (several labels, e.g. \"Bark,Cello\") must be quoted; fix the row and run the "
            f"command again.")


def fname_problem(fname: str) -> str | None:
    """Why a fname cannot name a clip, or None. fnames are relative paths inside audio_train/ or
    audio_test/ (subfolders allowed): nothing may reach outside them."""
    if fname != fname.strip():
        return "has spaces at its start or end; remove them"
    path = Path(fname)
    if path.is_absolute() or "\\" in fname or ".." in path.parts or fname.startswith("~"):
        return ("must be a path relative to the split's audio folder (no leading /, no .., no ~, no "
                "backslashes)")
    return None


def load_train(data_dir: Path) -> pd.DataFrame:
    """train.csv with fname, label (or labels, for multi-label tagging), manually_verified (1 when the
    column is absent)."""
    path = table_path(data_dir, "train")
    train = read_table(path, ["fname"], rows_required=True)
    task_of(train).read_labels(path, train)
    empty = train["label"].isna() | (train["label"].str.strip() == "")
    if empty.any():
        raise DataError(f"{path}, row {row_number(empty.idxmax())}: empty label for {train.fname[empty.idxmax()]!r}.")
    padded = train["label"] != train["label"].str.strip()
    if padded.any():
        i = int(padded.idxmax())
        raise DataError(f"{path}, row {row_number(i)}: label {train.label[i]!r} has spaces at its start or "
                        f"end, which would make it a class of its own; remove them.")
    if "manually_verified" not in train.columns:
        train["manually_verified"] = 1
    train["manually_verified"] = train["manually_verified"].fillna(0).astype(int)
    return train.reset_index(drop=True)


def class_names(train: pd.DataFrame) -> list[str]:
    """The training labels, sorted: the column order of every probability matrix."""
    return sorted({label for labels in task_of(train).label_lists(train) for label in labels})


def likely_typos(train: pd.DataFrame, share: float = 0.05) -> list[tuple[str, list[int], str | None]]:
    """Labels seen in very few rows next to the others (at most 2 rows, and fewer than `share` of the
    median label's rows): (label, its rows as numbered in train.csv, the closest common label or None).
    A misspelt label ("Celo") silently becomes a class of its own; src.data lists these to check."""
    import difflib

    rows = pd.Series(task_of(train).label_lists(train)).explode()
    counts = rows.value_counts()
    median = float(counts.median())
    common = [label for label, n in counts.items() if n > 2]
    found = []
    for label, n in sorted(counts.items()):
        if n <= 2 and n < share * median:
            near = difflib.get_close_matches(label, common, n=1, cutoff=0.75)
            found.append((label, [row_number(i) for i in rows.index[rows == label]], near[0] if near else None))
    return found


def fingerprint(table: pd.DataFrame) -> str:
    """A short hash of a table's rows, whatever their order."""
    text = table.astype(str).sort_values(list(table.columns)).to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def one_hot(labels: list[str], row_labels) -> np.ndarray:
    """Targets of rows with the given labels: one column per label of `labels`, float32."""
    return np.eye(len(labels), dtype=np.float32)[pd.Series(row_labels).map(labels.index).to_numpy()]


def load_test(data_dir: Path, labels: list[str]) -> pd.DataFrame:
    """The test clips in sample_submission.csv order. A `label` column is the competition's placeholder
    (Kaggle's 2018 file says `Laughter Hi-Hat Flute` in every row, "Hi-Hat" being no training label)
    and is not read; in the 2019 form the columns after fname must be the training labels."""
    path = table_path(data_dir, "test")
    test = read_table(path, ["fname"])
    if "label" not in test.columns and len(test.columns) > 1:  # the 2019 form: one probability column per label
        columns = list(test.columns[1:])
        unknown = [c for c in columns if c not in set(labels)]
        absent = [label for label in labels if label not in set(columns)]
        if unknown or absent:
            what = (f"column {unknown[0]!r} is not a training label" if unknown else
                    f"training label {absent[0]!r} has no column" + (f" ({len(absent)} labels have none)"
                                                                   if len(absent) > 1 else ""))
            raise DataError(f"{path}: {what}; its columns must be fname and the {len(labels)} labels of "
                            f"train.csv, one probability column each (a submission in another form is refused).")
    return test[["fname"]].reset_index(drop=True)


def load_test_labels(data_dir: Path, labels: list[str]) -> pd.DataFrame | None:
    """True test labels when the dataset ships them (test_labels.csv), else None; with a `usage` column
    (FSDKaggle2018's release), each clip's leaderboard in the competition, Public or Private."""
    path = table_path(data_dir, "truth")
    if not path.exists():
        return None
    truth = read_table(path, ["fname"])
    task = task_of(truth)
    task.read_labels(path, truth)
    _check_known_labels(path, truth, labels)
    columns = ["fname", "label", *task.label_columns]
    if "usage" not in truth.columns:
        return truth[columns]
    bad = ~truth.usage.isin(LEADERBOARDS)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise DataError(f"{path}, row {row_number(truth.index[i])} ({truth.fname.iloc[i]}): usage "
                        f"{truth.usage.iloc[i]!r} is neither Public nor Private. Fix the row or drop the column.")
    return truth[columns + ["usage"]]


def _check_known_labels(path: Path, table: pd.DataFrame, labels: list[str]) -> None:
    """Every label of the table is a training label: its comma-separated labels (multi-label), or its one label."""
    known = set(labels)
    for i, named in zip(table.index, task_of(table).label_lists(table)):
        unknown = [g for g in named if g not in known]
        if unknown:
            raise DataError(f"{path}, row {row_number(i)} ({table.fname[i]}): label {unknown[0]!r} is not a "
                            f"training label; labels must be among the {len(labels)} in train.csv.")


@dataclass
class Dataset:
    """A dataset's tables, loaded and validated once: train rows, the label list (the column order of
    every probability matrix), the test clips in submission order, and their labels when shipped."""

    data_dir: Path
    train: pd.DataFrame
    labels: list[str]
    test: pd.DataFrame
    truth: pd.DataFrame | None
    _folds: dict = field(default_factory=dict, repr=False, compare=False)  # folds.csv, read once

    @classmethod
    def load(cls, data_dir: Path) -> Dataset:
        train = load_train(data_dir)
        labels = class_names(train)
        return cls(Path(data_dir), train, labels, load_test(data_dir, labels), load_test_labels(data_dir, labels))

    @cached_property  # read from the file once, not at every submission written
    def submission_columns(self) -> list[str] | None:
        """The label columns of sample_submission.csv in its order (the 2019 form), or None."""
        columns = list(pd.read_csv(table_path(self.data_dir, "test"), nrows=0, encoding="utf-8-sig").columns)
        return columns[1:] if len(columns) > 1 and "label" not in columns else None

    @property
    def task(self) -> Task:
        """One label per clip, or several (a `labels` column in train.csv): src.dataset.task."""
        return task_of(self.train)

    @property
    def y_train(self) -> np.ndarray:
        return self.train.label.map(self.labels.index).to_numpy()

    @cached_property
    def train_targets(self) -> np.ndarray:
        """One-hot (multi-hot for multi-label) targets of train.csv's rows."""
        return self.task.targets(self.labels, self.train)

    def test_targets(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(targets of the test clips in submission order, which of them test_labels.csv labels), or None."""
        if self.truth is None:
            return None
        rows = self.test[["fname"]].merge(self.truth, on="fname", how="left")
        known = rows.label.notna().to_numpy()
        matrix = np.zeros((len(rows), len(self.labels)), np.float32)
        matrix[known] = self.task.targets(self.labels, rows[known])
        return matrix, known

    @property
    def y_test(self) -> np.ndarray | None:
        """Test label indices in submission order (-1 where test_labels.csv lacks a clip), or None."""
        if self.truth is None:
            return None
        known = self.test.fname.map(self.truth.set_index("fname").label)
        return known.map(lambda label: self.labels.index(label) if isinstance(label, str) else -1).to_numpy()

    @property
    def test_usage(self) -> np.ndarray | None:
        """Each test clip's leaderboard (Public, Private, or "" where unknown) in submission order, when
        test_labels.csv has a usage column; else None."""
        if self.truth is None or "usage" not in self.truth.columns:
            return None
        return self.test.fname.map(self.truth.set_index("fname").usage).fillna("").to_numpy()

    def folds(self, n_folds: int | None = None, seed: int = 42) -> pd.DataFrame:
        """folds.csv (made on first use), read once per Dataset and number of folds asked for."""
        if (n_folds, seed) not in self._folds:
            self._folds[n_folds, seed] = load_folds(self.data_dir, self.train, n_folds, seed)
        return self._folds[n_folds, seed]

    def train_with_folds(self, n_folds: int | None = None, seed: int = 42) -> pd.DataFrame:
        return with_folds(self.train, self.folds(n_folds, seed))

    def fingerprints(self, n_folds: int | None = None, seed: int = 42) -> dict[str, str]:
        """What a fold was trained on, as two short hashes: the train rows (fnames, labels and verified
        flags) and the fold assignment. A fold whose hashes differ from its dataset's is stale."""
        return {"rows": fingerprint(self.train[["fname", "label", "manually_verified"]]),
                "folds": fingerprint(self.folds(n_folds, seed)[["fname", "fold"]])}

    def check_files(self) -> None:
        """Every listed clip exists; DataError naming the table, row and file otherwise."""
        for split, table, csv in (("train", self.train, "train.csv"), ("test", self.test, "sample_submission.csv")):
            folder = audio_dir(self.data_dir, split)
            for i, fname in table.fname.items():
                if not (folder / fname).exists():
                    raise DataError(f"{self.data_dir / csv}, row {row_number(i)}: {folder / fname} does not exist. "
                                    f"Unpack the audio archives (python -m src.data) or remove the row.")


