"""One model's run folder, predictions/<name>/, read as a whole: the one owner of what "all its folds are
finished" means, for every reader of trained folds (src.blend, src.inspect_oof, src.predict, src.export,
and the cluster runner's list of folds still to train).

Which folds a model should have is its dataset's: the fold ids of folds.csv (a `fold` column in train.csv
when the dataset brings its own folds: ESC-50's five, FSD50K's one), not config.n_folds. Where the
dataset is at hand (its folder holds train.csv and folds.csv) its folds.csv says so, and its fingerprints
say which finished folds are stale (trained on other rows or folds than it has now). Where it is not
(predict or export on another machine), each fold's result.json says: training records the dataset's fold
ids there ("dataset_folds"). A fold from before that record falls back to the dataset, then to its
config's n_folds.

Every refusal names a command that works as written: the preset read from the fold's config.json, the
run's --name and every option it was trained with (./run_folds.sh 1d 1 -- --name 1d_s7 --seed 7 ...),
and the data and output folders of this command.
"""
from __future__ import annotations

import dataclasses
import logging
import shlex
from pathlib import Path

import pandas as pd

from ..base.config import PRESETS, Config
from ..base.errors import DataError
from ..base.layout import Paths, table_path
from ..dataset.folds import fold_ids
from ..dataset.tables import Dataset
from .fold_files import FoldFiles, FoldResult, finished_folds, fold_files

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: run_folds.sh lives here."""


def dataset_at_hand(paths: Paths) -> Dataset | None:
    """The dataset under --data-dir when it was prepared for training (train.csv and folds.csv are there),
    else None: predict and export then go by what the folds recorded."""
    if not (table_path(paths.data_dir, "train").is_file() and paths.folds_csv.is_file()):
        return None
    return Dataset.load(paths.data_dir)


def seed_note(paths: Paths, seed: int | None) -> str | None:
    """What --seed does not do once the dataset's folds exist, or None. The split is made once, into
    folds.csv, and every model shares it, so a seed variant (--name 1d_s7 --seed 7) seeds its weights, crops
    and batch order, not its folds: a warning rather than a refusal, since that is what a seed ensemble
    wants; it names the file and how to make new folds for whoever wanted those."""
    folds_csv = paths.folds_csv
    if seed is None or not folds_csv.is_file():
        return None
    try:
        own = "fold" in pd.read_csv(table_path(paths.data_dir, "train"), nrows=0, encoding="utf-8-sig").columns
    except (OSError, ValueError):
        return None  # train.csv's own reader says what is wrong with it
    if own:
        return None  # the dataset's own folds (a `fold` column): no seed ever made them
    return (f"--seed {seed} seeds the weights, crops and batch order, but not the folds: {folds_csv} already "
            f"exists and every model shares its split, whatever the seed it was made with. For a split made with "
            f"seed {seed}, delete {folds_csv} (and the predictions trained on it, which would no longer line up) "
            f"before training")


def run_folds_command(config: Config | None, paths: Paths, name: str, folds=(), force: bool = False) -> str:
    """The ./run_folds.sh line that trains `folds` (all with none) of the run `name` exactly as `config`
    (a fold's config.json) was trained: its preset, --name when the run is a variant, and every option
    that differs from the preset."""
    runner = "./run_folds.sh" if Path.cwd().resolve() == ROOT else str(ROOT / "run_folds.sh")
    preset = config.preset if config is not None and config.preset in PRESETS else None
    flags = []
    if preset is None:  # no config.json to read (or a preset this checkout lacks): the user fills it in
        flags += ["--name", name] if name not in PRESETS else []
        head = [runner, name if name in PRESETS else "PRESET", *map(str, folds)]
    else:
        head = [runner, preset, *map(str, folds)]
        if name != preset:
            flags += ["--name", name]
        base = PRESETS[preset]
        for f in dataclasses.fields(Config):
            value = getattr(config, f.name)
            if "group" in f.metadata and value != getattr(base, f.name):
                flags += ["--" + f.name.replace("_", "-"), _flag(value)]
    if force:
        flags.append("--force")
    flags += ["--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]
    return " ".join(shlex.quote(part) if part != "PRESET" else part for part in [*head, "--", *flags])


def _flag(value) -> str:
    """A Config value as src.train's flag parses it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ModelRun:
    """predictions/<name>/ of one model: its finished folds, the folds its dataset has, the missing and the
    stale ones, and `require_complete`, the check every reader makes before using the folds.

    `dataset`: the dataset as it is now when the caller has it (src.blend always does; src.predict and
    src.export pass dataset_at_hand's), else None."""

    def __init__(self, paths: Paths, name: str, dataset: Dataset | None = None):
        self.paths, self.name, self.dataset = paths, name, dataset
        self.folder = paths.model_dir(name)

    def files(self, fold: int) -> FoldFiles:
        return fold_files(self.paths, self.name, fold)

    @property
    def finished(self) -> list[int]:
        """Every fold with a result.json, in order."""
        return finished_folds(self.paths, self.name)

    def config(self) -> Config | None:
        """The config a fold of the run was trained with (the first readable config.json), or None."""
        finished = self.finished
        started = sorted(int(d.name[4:]) for d in self.folder.glob("fold*") if d.name[4:].isdigit())
        for k in finished + [k for k in started if k not in finished]:
            try:
                return self.files(k).read_config()
            except (OSError, ValueError, TypeError):
                continue
        return None

    def expected(self) -> tuple[list[int], str]:
        """The fold ids the model should have, and where that comes from."""
        if self.dataset is not None:
            return fold_ids(self.dataset.folds()), str(table_path(self.dataset.data_dir, "folds"))
        recorded = set()
        for k in self.finished:
            result = self._result(k)
            recorded |= set(result.dataset_folds or []) if result else set()
        if recorded:
            return sorted(recorded), "the dataset's folds recorded in the folds' result.json"
        config = self.config()
        if config is None:
            return [], "nothing (no fold has a config.json)"
        return list(range(config.n_folds)), "config.json's n_folds"

    def missing(self) -> list[int]:
        expected, finished = self.expected()[0], self.finished
        return [k for k in expected if k not in finished]

    def stale(self) -> list[tuple[int, str]]:
        """(fold, why) for each finished fold trained on other rows or folds than the dataset has now
        (none when the dataset is not at hand: then nothing says what it is now)."""
        if self.dataset is None:
            return []
        current = self.dataset.fingerprints()
        return [(k, why) for k in self.finished if (why := self.files(k).stale(current))]

    def command(self, folds=(), force: bool = False) -> str:
        """The ./run_folds.sh line that trains these folds of this run as it was trained (quoted, with a
        word on --data-dir when the dataset is not there)."""
        line = f"`{run_folds_command(self.config(), self.paths, self.name, folds, force)}`"
        if self.dataset is None and not table_path(self.paths.data_dir, "train").is_file():
            line += (f" (with --data-dir naming the dataset the folds were trained on: {self.paths.data_dir} holds "
                     f"none)")
        return line

    def require_complete(self, allow_partial: bool = False, allow_mismatch: bool = False) -> list[int]:
        """The folds to use: every fold the dataset has, finished and not stale. DataError, naming the
        command that fixes it, when there is no finished fold, when a finished fold is stale (unless
        allow_mismatch: then a warning) or a fold is missing (unless allow_partial). A finished fold the
        dataset does not have (left from an earlier folding) is left out with a warning."""
        finished = self.finished
        if not finished:
            raise DataError(f"{self.name}: no finished folds under {self.folder}. Train them: "
                            f"{self.command()}.")
        stale = self.stale()
        if stale and not allow_mismatch:
            folds = [k for k, _ in stale]
            others = f" (and {len(stale) - 1} other fold(s) of {self.name})" if len(stale) > 1 else ""
            raise DataError(f"{self.name}: {stale[0][1]}{others}. Using it against this dataset would mix two "
                            f"datasets: retrain with {self.command(folds, force=True)}, or pass --allow-mismatch "
                            f"if that is what you mean.")
        for _, why in stale:
            log.warning("%s (--allow-mismatch)", why)
        expected, source = self.expected()
        extra = [k for k in finished if k not in expected]
        if extra and expected:
            log.warning("%s: fold(s) %s are finished but the dataset has no such fold (its folds: %s, from %s): "
                        "left out", self.name, " ".join(map(str, extra)), " ".join(map(str, expected)), source)
        used = [k for k in finished if k in expected] if expected else finished
        missing = [k for k in expected if k not in finished]
        if missing and not allow_partial:
            some = f", or pass --allow-partial to use the {len(used)} finished fold(s)" if used else ""
            raise DataError(f"{self.name}: fold(s) {' '.join(map(str, missing))} of {len(expected)} are not finished "
                            f"under {self.folder}: {len(used)} of its {len(expected)} folds are finished (its folds: "
                            f"{source}). Finish them with {self.command(missing)}{some}.")
        if not used:
            raise DataError(f"{self.name}: none of its finished folds ({' '.join(map(str, finished))}) is a fold of "
                            f"the dataset (its folds: {' '.join(map(str, expected))}, from {source}). Train them: "
                            f"{self.command()}.")
        return used

    def _result(self, fold: int) -> FoldResult | None:
        try:
            return self.files(fold).read_result()
        except (OSError, ValueError):
            return None
