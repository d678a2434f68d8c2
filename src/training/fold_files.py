"""A fold's files, each one's writer beside its reader (src.base.layout says where the fold lives).

predictions/<name>/fold<k>/: config.json, best.keras, log.csv, tensorboard/, oof.csv, test.csv, with
label cleaning cleaned_labels.csv, resume.npz while the fold trains (src.training.resume) and, written
last, result.json: a fold with it is finished, and nothing else marks one. Every file is written whole
or not at all (src.base.files)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.config import Config
from ..base.errors import DataError
from ..base.files import atomic_path, atomic_write, atomic_write_csv, atomic_write_json
from ..base.layout import Paths
from ..dataset.tables import row_number
from .resume import ResumeState

log = logging.getLogger(__name__)


class FoldFiles:
    """The files of one fold of one model."""

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
        self.resume = self.folder / "resume.npz"  # the state after the last saved epoch, while the fold trains
        self.lock = self.folder / "train.lock"    # held by the process training the fold (base.files.Lock)

    def is_finished(self) -> bool:
        return self.result.exists()

    def start(self, config: Config, fingerprints: dict | None = None, force: bool = False) -> ResumeState | None:
        """Begin a fold, or continue a killed one: no result.json, the config that trains it saved.
        Returns the state of the last saved epoch when there is one for this very config and dataset
        (and not force), else None (and no resume state is left)."""
        self.result.unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".*.tmp*"):  # temporaries of a killed writer (we hold the lock)
            leftover.unlink(missing_ok=True)
        state = None
        if self.resume.exists() and not force and self.saved_config() == config.to_dict():
            state = ResumeState.load(self.resume)
            if state.fingerprints != (fingerprints or {}):
                log.warning("%s: train.csv or the folds changed since the killed attempt (rows %s, folds %s then; "
                            "%s now): starting the fold over", self.folder, state.fingerprints.get("rows"),
                            state.fingerprints.get("folds"), fingerprints)
                state = None
        if state is None:
            self.resume.unlink(missing_ok=True)
            shutil.rmtree(self.tensorboard, ignore_errors=True)  # a fresh start: no events of killed attempts
        atomic_write_json(self.config, config.to_dict())
        return state

    def saved_config(self) -> dict | None:
        """config.json as saved, or None when it is absent or unreadable (a fresh start then)."""
        try:
            return json.loads(self.config.read_text())
        except (OSError, ValueError):
            return None

    def read_config(self) -> Config:
        return Config.from_dict(json.loads(self.config.read_text()), str(self.config))

    def save_model(self, model) -> None:
        with atomic_path(self.model, suffix=".keras") as tmp:
            model.save(tmp)

    def log_rows(self, epochs: int) -> None:
        """Keep log.csv's first `epochs` epochs: rows of an epoch that did not complete are dropped."""
        if self.log_csv.exists():
            lines = self.log_csv.read_bytes().splitlines(keepends=True)  # bytes: CSVLogger ends lines with \r\n
            atomic_write(self.log_csv, b"".join(lines[:1 + epochs]))

    def write_table(self, path: Path, table: pd.DataFrame) -> None:
        atomic_write_csv(table, path)

    def write_probabilities(self, path: Path, fnames, probs: np.ndarray, labels: list[str]) -> None:
        """fname plus one probability column per label (oof.csv or test.csv)."""
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
        atomic_write_json(self.result, record)

    def read_result(self) -> dict:
        return json.loads(self.result.read_text())


    def stale(self, fingerprints: dict) -> str | None:
        """Why a finished fold no longer matches its dataset (fingerprints: Dataset.fingerprints), or None."""
        saved = self.read_result().get("fingerprints")
        if saved is None or saved == fingerprints:
            return None  # a fold from before fingerprints were recorded is taken as it is
        what = " and ".join(k for k in ("rows", "folds") if saved.get(k) != fingerprints[k])
        return (f"{self.folder} was trained on other {what} than the dataset has now (train rows "
                f"{saved.get('rows')}, folds {saved.get('folds')} then; {fingerprints['rows']}, "
                f"{fingerprints['folds']} now): train.csv's labels or rows, or folds.csv, changed since")

    def contents(self) -> dict[str, bytes]:
        """Every file of the fold by its path inside the folder (to send it to another machine)."""
        return {str(p.relative_to(self.folder)): p.read_bytes() for p in sorted(self.folder.rglob("*"))
                if p.is_file() and p != self.lock and not p.name.startswith(".")}

    def receive(self, files: dict[str, bytes]) -> None:
        """Write a fold's files sent from another machine (contents()), result.json last, so the fold
        looks finished only when the rest is in place."""
        for name in files:  # names come from another machine: nothing may land outside this folder
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise DataError(f"a worker sent back {name!r} for {self.folder}: not a path inside the fold "
                                f"folder; nothing was written")
        for name in sorted(files, key=lambda n: n == self.result.name):
            atomic_write(self.folder / name, files[name])


def fold_files(paths: Paths, name: str, fold: int) -> FoldFiles:
    return FoldFiles(paths.fold_dir(name, fold))


def finished_folds(paths: Paths, name: str) -> list[int]:
    """The folds of a model with a result.json, in order."""
    found = [int(d.name[4:]) for d in paths.model_dir(name).glob("fold*") if d.name[4:].isdigit()]
    return sorted(k for k in found if fold_files(paths, name, k).is_finished())


def trained_models(paths: Paths) -> list[str]:
    """The models under predictions/ with at least one finished fold, by name."""
    folders = paths.predictions_dir.glob("*") if paths.predictions_dir.is_dir() else []
    return sorted(d.name for d in folders if d.is_dir() and finished_folds(paths, d.name))


def validation_score(result: dict) -> tuple[str, float]:
    """(metric, value) of a fold's result: its validation lwlrap (multi-label) or MAP@3."""
    return ("lwlrap", result["val_lwlrap"]) if "val_lwlrap" in result else ("MAP@3", result["val_map3"])
