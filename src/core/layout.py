"""The on-disk contract, in one place: a dataset's tables and folders, and a run's outputs, each
file's writer beside its reader.

A dataset (FSDKaggle2018, or any single-label clip dataset written the same way), `--data-dir`:
    train.csv               fname,label[,manually_verified][,fold]
    sample_submission.csv   fname[,label]   (the test clips, in submission order)
    test_labels.csv         optional fname,label of the test clips (scores the test split locally)
    audio_train/, audio_test/
    folds.csv               fname,fold: written once, shared by every model
    cache/                  the audio cache and features (src.core.store)

A run, `--out-dir`:
    predictions/<name>/fold<k>/   config.json, best.keras, log.csv, tensorboard/, oof.csv, test.csv and,
                                  written last, result.json: a fold with it is finished
    predictions/<name>/logs/fold<k>.log
    submissions/<name>.csv
    compile-cache/                compiled training steps (src.core.backend)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def audio_dir(data_dir: Path, split: str) -> Path:
    """The folder of a split's audio files (fnames are relative to it)."""
    return Path(data_dir) / f"audio_{split}"


def cache_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "cache"


# --- the dataset's tables -------------------------------------------------------------------------------------

def _read_csv(path: Path, required: list[str], rows_required: bool = False) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path} is missing. Run `python -m src.data --data-dir {path.parent}` "
                        f"after placing the competition files there (see README).")
    try:
        table = pd.read_csv(path, dtype={"fname": str, "label": str}, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: it needs a header ({','.join(required)}) and one row per clip.") from None
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


def row_number(index: int) -> int:
    """The line number a spreadsheet or editor shows for a 0-based data row (header is line 1)."""
    return int(index) + 2


def load_train(data_dir: Path) -> pd.DataFrame:
    """train.csv with fname, label, manually_verified (1 when the column is absent)."""
    path = Path(data_dir) / "train.csv"
    train = _read_csv(path, ["fname", "label"], rows_required=True)
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
    return sorted(train["label"].unique())


def load_test(data_dir: Path, labels: list[str]) -> pd.DataFrame:
    """The test clips in sample_submission.csv order; any labels there must be training labels."""
    path = Path(data_dir) / "sample_submission.csv"
    test = _read_csv(path, ["fname"])
    if "label" in test.columns:
        _check_known_labels(path, test, labels, multi=True)
    return test[["fname"]].reset_index(drop=True)


def load_test_labels(data_dir: Path, labels: list[str]) -> pd.DataFrame | None:
    """True test labels when the dataset ships them (test_labels.csv), else None."""
    path = Path(data_dir) / "test_labels.csv"
    if not path.exists():
        return None
    truth = _read_csv(path, ["fname", "label"])
    _check_known_labels(path, truth, labels, multi=False)
    return truth[["fname", "label"]]


def _check_known_labels(path: Path, table: pd.DataFrame, labels: list[str], multi: bool) -> None:
    known = set(labels)
    for i, text in table["label"].items():
        guesses = str(text).split() if multi else [text]
        unknown = [g for g in guesses if g not in known]
        if unknown:
            raise DataError(f"{path}, row {row_number(i)} ({table.fname[i]}): label {unknown[0]!r} is not a "
                            f"training label; labels must be among the {len(labels)} in train.csv.")


# --- folds --------------------------------------------------------------------------------------

def load_folds(data_dir: Path, n_folds: int | None = 10, seed: int = 42,
               train: pd.DataFrame | None = None) -> pd.DataFrame:
    """fname,fold for every train.csv row, written once to data/folds.csv so every model shares it.

    n_folds=None reads the folds that exist, whatever their number. A `fold` column in train.csv
    (predefined folds, e.g. ESC-50) is used as is; otherwise a shuffled, seeded StratifiedKFold on the
    labels.
    """
    from sklearn.model_selection import StratifiedKFold

    data_dir = Path(data_dir)
    train = load_train(data_dir) if train is None else train
    path = data_dir / "folds.csv"
    if path.exists():
        folds = pd.read_csv(path, dtype={"fname": str})
        if list(folds.fname) != list(train.fname):
            raise DataError(f"{path} does not list the clips of {data_dir / 'train.csv'} in order; it was "
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


def atomic_write_csv(table: pd.DataFrame, path: Path, **kwargs) -> None:
    """Write through a temporary file and rename, so a killed process never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False, **kwargs)
    tmp.replace(path)


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

    @property
    def y_train(self) -> np.ndarray:
        return self.train.label.map(self.labels.index).to_numpy()

    @property
    def y_test(self) -> np.ndarray | None:
        """Test label indices in submission order (-1 where test_labels.csv lacks a clip), or None."""
        if self.truth is None:
            return None
        known = self.test.fname.map(self.truth.set_index("fname").label)
        return known.map(lambda label: self.labels.index(label) if isinstance(label, str) else -1).to_numpy()

    def folds(self, n_folds: int | None = None, seed: int = 42) -> pd.DataFrame:
        """folds.csv (made on first use), read once per Dataset and number of folds asked for."""
        if (n_folds, seed) not in self._folds:
            self._folds[n_folds, seed] = load_folds(self.data_dir, n_folds, seed, self.train)
        return self._folds[n_folds, seed]

    def train_with_folds(self, n_folds: int | None = None, seed: int = 42) -> pd.DataFrame:
        return with_folds(self.train, self.folds(n_folds, seed))

    def check_files(self) -> None:
        """Every listed clip exists; DataError naming the table, row and file otherwise."""
        for split, table, csv in (("train", self.train, "train.csv"), ("test", self.test, "sample_submission.csv")):
            folder = audio_dir(self.data_dir, split)
            for i, fname in table.fname.items():
                if not (folder / fname).exists():
                    raise DataError(f"{self.data_dir / csv}, row {row_number(i)}: {folder / fname} does not exist. "
                                    f"Unpack the audio archives (python -m src.data) or remove the row.")


# --- a run's outputs ------------------------------------------------------------------------------

@dataclass
class Paths:
    """Where a dataset lives and where a run writes."""

    data_dir: Path = Path("data")
    out_dir: Path = Path(".")

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)
        self.out_dir = Path(self.out_dir)

    @property
    def cache_dir(self) -> Path:
        return cache_dir(self.data_dir)

    @property
    def folds_csv(self) -> Path:
        return self.data_dir / "folds.csv"

    @property
    def predictions_dir(self) -> Path:
        return self.out_dir / "predictions"

    @property
    def submissions_dir(self) -> Path:
        return self.out_dir / "submissions"

    def model_dir(self, preset: str) -> Path:
        return self.predictions_dir / preset

    def fold_dir(self, preset: str, fold: int) -> Path:
        return self.model_dir(preset) / f"fold{fold}"

    def fold(self, name: str, fold: int) -> FoldFiles:
        return FoldFiles(self.fold_dir(name, fold))

    def log_dir(self, name: str) -> Path:
        return self.model_dir(name) / "logs"

    @property
    def compile_cache(self) -> Path:
        return self.out_dir / "compile-cache"

    def finished_folds(self, name: str) -> list[int]:
        """The folds of a model with a result.json, in order."""
        found = [int(d.name[4:]) for d in self.model_dir(name).glob("fold*") if d.name[4:].isdigit()]
        return sorted(k for k in found if self.fold(name, k).is_finished())

    def trained_models(self) -> list[str]:
        """The models under predictions/ with at least one finished fold, by name."""
        folders = self.predictions_dir.glob("*") if self.predictions_dir.is_dir() else []
        return sorted(d.name for d in folders if d.is_dir() and self.finished_folds(d.name))


class FoldFiles:
    """The files of one fold of one model, each one's writer beside its reader. result.json is written
    last and atomically, so a fold with it is finished and a killed run never leaves one that looks
    finished."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.config = self.folder / "config.json"
        self.model = self.folder / "best.keras"
        self.log_csv = self.folder / "log.csv"
        self.tensorboard = self.folder / "tensorboard"
        self.oof = self.folder / "oof.csv"
        self.test = self.folder / "test.csv"
        self.result = self.folder / "result.json"
        self.cleaned = self.folder / "cleaned_labels.csv"  # with label cleaning: the disputed training clips
        # The state after the last completed epoch, while the fold trains; state.json is written last.
        self.resume = self.folder / "resume"
        self.resume_variables = self.resume / "variables.npz"
        self.resume_best = self.resume / "best_weights.npz"
        self.resume_state = self.resume / "state.json"

    def is_finished(self) -> bool:
        return self.result.exists()

    def start(self, config, force: bool = False) -> dict | None:
        """Begin a fold, or continue a killed one: no result.json, the config that trains it saved.
        Returns the resume state of the last completed epoch when there is one for this very config
        (and not force), else None (and no resume state is left)."""
        self.result.unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        state = None
        if self.resume_state.exists() and not force and self.config.exists() and \
                dataclasses.asdict(self.read_config()) == dataclasses.asdict(config):
            state = json.loads(self.resume_state.read_text())
        if state is None:
            self.clear_resume()
            shutil.rmtree(self.tensorboard, ignore_errors=True)  # a fresh start: no events of killed attempts
        config.to_json(self.config)
        return state

    def save_resume(self, variables: list, best_weights: list | None, state: dict) -> None:
        """Every variable of the model and its optimizer (weights, moments, step, random-number state),
        the best weights so far and the training state after a completed epoch; each file atomically,
        state.json last (it says the rest is complete)."""
        self.resume.mkdir(parents=True, exist_ok=True)
        for path, arrays in ((self.resume_variables, variables), (self.resume_best, best_weights)):
            if arrays is not None:
                tmp = path.with_name(path.stem + ".tmp.npz")
                np.savez(tmp, *arrays)
                tmp.replace(path)
        tmp = self.resume / "state.json.tmp"
        tmp.write_text(json.dumps(state) + "\n")
        tmp.replace(self.resume_state)

    def load_resume_arrays(self, path: Path) -> list | None:
        """The arrays of resume/variables.npz or resume/best_weights.npz, in order (None if absent)."""
        if not path.exists():
            return None
        with np.load(path) as saved:
            return [saved[f"arr_{k}"] for k in range(len(saved.files))]

    def clear_resume(self) -> None:
        shutil.rmtree(self.resume, ignore_errors=True)

    def log_rows(self, epochs: int) -> None:
        """Keep log.csv's first `epochs` epochs: rows of an epoch that did not complete are dropped."""
        if self.log_csv.exists():
            lines = self.log_csv.read_text().splitlines(keepends=True)
            tmp = self.log_csv.with_name("log.csv.tmp")
            tmp.write_text("".join(lines[:1 + epochs]))
            tmp.replace(self.log_csv)

    def read_config(self):
        from .config import Config

        return Config.from_json(self.config)

    def write_probabilities(self, path: Path, fnames, probs: np.ndarray, labels: list[str]) -> None:
        """fname plus one probability column per label (oof.csv or test.csv), atomically."""
        table = pd.DataFrame(probs, columns=labels)
        table.insert(0, "fname", list(fnames))
        atomic_write_csv(table, path, float_format="%.6g")

    def read_probabilities(self, path: Path, labels: list[str]) -> pd.DataFrame:
        """oof.csv or test.csv indexed by fname; DataError when its columns are not these labels."""
        table = pd.read_csv(path, dtype={"fname": str}).set_index("fname")
        if list(table.columns) != labels:
            raise DataError(f"{path}: its label columns are not train.csv's labels; it was made for another "
                            f"dataset. Retrain that fold (--force).")
        values = table.to_numpy(np.float64)
        bad = ~np.isfinite(values).all(axis=1) | (values < -1e-6).any(axis=1) | (values > 1 + 1e-6).any(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}, row {row_number(i)} ({table.index[i]}): probabilities must be finite and "
                            f"within [0, 1]; the file was damaged or edited. Retrain that fold (--force).")
        return table

    def labels(self) -> list[str]:
        """The labels of the fold's outputs, in order (the columns of test.csv)."""
        return list(pd.read_csv(self.test, nrows=0).columns[1:])

    def write_result(self, record: dict) -> None:
        tmp = self.result.with_name(self.result.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(self.result)

    def read_result(self) -> dict:
        return json.loads(self.result.read_text())

    def contents(self) -> dict[str, bytes]:
        """Every file of the fold by its path inside the folder (to send it to another machine)."""
        return {str(p.relative_to(self.folder)): p.read_bytes() for p in sorted(self.folder.rglob("*"))
                if p.is_file()}

    def receive(self, files: dict[str, bytes]) -> None:
        """Write a fold's files sent from another machine (contents()), result.json last, so the fold
        looks finished only when the rest is in place."""
        for name in files:  # names come from another machine: nothing may land outside this folder
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise DataError(f"a worker sent back {name!r} for {self.folder}: not a path inside the fold "
                                f"folder; nothing was written")
        for name in sorted(files, key=lambda n: n == self.result.name):
            target = self.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(files[name])
            tmp.replace(target)
