"""A fold's files, each one's writer beside its reader (src.base.layout says where the fold lives).

predictions/<name>/fold<k>/: config.json, best.keras, log.csv, tensorboard/, oof.csv, test.csv, with
label cleaning cleaned_labels.csv, resume.npz while the fold trains (src.training.resume) and, written
last, result.json: a fold with it is finished, and nothing else marks one. Every file is written whole
or not at all (src.base.files)."""
from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.config import PRESETS, Config
from ..base.errors import DataError
from ..base.files import atomic_path, atomic_write, atomic_write_csv, atomic_write_json
from ..base.layout import Paths
from ..dataset.tables import row_number
from ..dataset.task import TASKS, Task, task_named
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
            state = ResumeState.load(self.resume)  # None when damaged: set aside, and the fold starts over
            if state is not None and state.fingerprints != (fingerprints or {}):
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
        """oof.csv or test.csv indexed by fname; DataError naming the file (and row) and the command that
        retrains the fold when it is not a table of finite probabilities within [0, 1], one column a label."""
        def retrain() -> str:
            return f"Retrain that fold: `{self.retrain()}` (with --data-dir added when the dataset is not ./data)."
        try:
            table = pd.read_csv(path, dtype={"fname": str}).set_index("fname")
        except (ValueError, KeyError) as error:  # cut short, empty, no fname column (pandas' errors are ValueErrors)
            raise DataError(f"{path} is not a table of probabilities ({type(error).__name__}: {error}); the file was "
                            f"damaged or edited. {retrain()}") from None
        if list(table.columns) != labels:
            raise DataError(f"{path}: its label columns are not train.csv's labels; it was made for another "
                            f"dataset. {retrain()}")
        numbers = table.apply(pd.to_numeric, errors="coerce")
        words = (numbers.isna() & table.notna()).to_numpy()
        if words.any():
            i, j = np.argwhere(words)[0]
            raise DataError(f"{path}, row {row_number(i)} ({table.index[i]}), column {table.columns[j]}: "
                            f"{table.iat[i, j]!r} is not a number; the file was damaged or edited. {retrain()}")
        values = numbers.to_numpy(np.float64)
        bad = ~np.isfinite(values).all(axis=1) | (values < -1e-6).any(axis=1) | (values > 1 + 1e-6).any(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}, row {row_number(i)} ({table.index[i]}): probabilities must be finite and "
                            f"within [0, 1]; the file was damaged or edited. {retrain()}")
        return table

    def labels(self) -> list[str]:
        """The labels of the fold's outputs, in order (the columns of test.csv)."""
        return list(pd.read_csv(self.test, nrows=0).columns[1:])

    def write_result(self, record: dict) -> FoldResult:
        """Write result.json (the fold is finished from then on) in the current schema."""
        result = FoldResult.from_json({"version": RESULT_VERSION, **record}, str(self.result))
        atomic_write_json(self.result, result.to_json())
        return result

    def read_result(self) -> FoldResult:
        """result.json, typed; a DataError naming it and the command that retrains the fold when it is damaged
        or written by a newer version of the project."""
        try:
            record = json.loads(self.result.read_text())
        except ValueError as error:  # cut short or edited (JSON's or UTF-8's complaint)
            problem = f"not whole JSON ({error})"
        else:
            if isinstance(record, dict):
                return FoldResult.from_json(record, str(self.result), self.retrain())
            problem = "no JSON object"
        raise DataError(f"{self.result} is damaged: {problem}. It is written whole, after the fold's other files, "
                        f"so something cut it short or edited it since, and the fold cannot be taken as finished. "
                        f"Retrain that fold: `{self.retrain()}` (with --data-dir added when the dataset is not "
                        f"./data).")

    def retrain(self, data_dir: Path | None = None) -> str:
        """The ./run_folds.sh line that trains this fold again, --force, as its config.json says it was
        trained: the preset, --name for a variant, every option that differs from the preset, --out-dir (and
        --data-dir when given: the fold's files do not say)."""
        root = Path(__file__).resolve().parents[2]
        runner = "./run_folds.sh" if Path.cwd().resolve() == root else str(root / "run_folds.sh")
        name, fold, out_dir = self.folder.parent.name, self.folder.name[len("fold"):], self.folder.parents[2]
        where = ["--out-dir", str(out_dir)] + ([] if data_dir is None else ["--data-dir", str(data_dir)])
        try:
            config = self.read_config()
        except (OSError, ValueError, TypeError):
            config = None
        if config is None or config.preset not in PRESETS:  # nothing says how: the user fills the preset in
            return f"{runner} PRESET {fold} -- {shlex.join(['--name', name, '--force', *where])}"
        flags = [] if name == config.preset else ["--name", name]
        for f in dataclasses.fields(Config):
            value = getattr(config, f.name)
            if "group" in f.metadata and value != getattr(PRESETS[config.preset], f.name):
                flags += ["--" + f.name.replace("_", "-"),
                          "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)]
        return shlex.join([runner, config.preset, fold, "--", *flags, "--force", *where])


    def task(self) -> Task:
        """What the fold was trained for (src.dataset.task), from its result.json."""
        return self.read_result().task

    def stale(self, fingerprints: dict) -> str | None:
        """Why a finished fold no longer matches its dataset (fingerprints: Dataset.fingerprints), or None."""
        saved = self.read_result().fingerprints
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


RESULT_VERSION = 2
"""The schema of result.json: 1 (no "version" key) before the task was recorded, 2 with it."""

# The fields every result has, in the order result.json lists them; the rest is how the fold ran.
RESULT_FIELDS = ("model", "fold", "task", "val_loss", "best_epoch", "epochs_run", "n_train", "n_val",
                 "skipped_train", "cleaned_labels", "silent_test", "minutes", "fingerprints", "dataset_folds")


@dataclass(frozen=True)
class FoldResult:
    """result.json, typed: what a finished fold records, in one schema (RESULT_VERSION). Its validation
    score is the task's (val_map3 or val_lwlrap in the file); `run` holds how it ran (backend, device,
    feed, timings). An older result (version 1) is read, its task worked out from its score's name; one
    from a newer version of the project is refused with the file named."""

    task: Task
    score: float | None
    model: str = ""
    fold: int = -1
    val_loss: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    skipped_train: int = 0
    cleaned_labels: int = 0
    silent_test: int = 0
    minutes: float = 0.0
    fingerprints: dict | None = None
    dataset_folds: list[int] | None = None
    run: dict = field(default_factory=dict)
    version: int = RESULT_VERSION

    @classmethod
    def from_json(cls, record: dict, where: str = "result.json", retrain: str | None = None) -> FoldResult:
        version = record.get("version", 1)
        if not isinstance(version, int) or version > RESULT_VERSION:
            redo = f"`{retrain}`" if retrain else "retrain the fold (--force)"
            raise DataError(f"{where} has schema version {version!r}; this project reads versions up to "
                            f"{RESULT_VERSION}. It was written by a newer version of the project: update this "
                            f"checkout, or {redo}.")
        older = next((task.NAME for task in TASKS.values() if f"val_{task.metric}" in record), None)
        task = task_named(record.get("task", older), where)
        known = {name for name in RESULT_FIELDS if name in record and name != "task"}
        run = {k: v for k, v in record.items() if k not in known | {"task", "version", f"val_{task.metric}"}}
        return cls(task=task, score=record.get(f"val_{task.metric}"), run=run, version=version,
                   **{name: record[name] for name in known})

    def to_json(self) -> dict:
        fields = {name: getattr(self, name) for name in RESULT_FIELDS if name not in ("model", "fold", "task")}
        return {"version": self.version, "model": self.model, "fold": self.fold, "task": self.task.NAME,
                f"val_{self.task.metric}": self.score, **{k: v for k, v in fields.items() if v is not None},
                **self.run}

    def __getitem__(self, key: str):
        """The record as result.json holds it, by key (for logs and tests)."""
        return self.to_json()[key]

    def get(self, key: str, default=None):
        return self.to_json().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_json()


def result_task(result: FoldResult | dict, where: str = "result.json") -> Task:
    """What a fold was trained for (its result's task; an older result's worked out from its score's name)."""
    return result.task if isinstance(result, FoldResult) else FoldResult.from_json(result, where).task


def validation_score(result: FoldResult | dict) -> tuple[str, float]:
    """(metric, value) of a fold's result: its validation MAP@3, or lwlrap for multi-label tagging."""
    result = result if isinstance(result, FoldResult) else FoldResult.from_json(result)
    return result.task.metric_title, result.score
