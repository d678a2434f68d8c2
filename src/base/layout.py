"""Where everything lives: a dataset's files (`--data-dir`) and a run's outputs (`--out-dir`). The one
place that names paths; src.dataset.tables reads and validates the tables, src.training.fold_files
reads and writes a fold's files.

A dataset (FSDKaggle2018, or any clip dataset written the same way; multi-label with `labels`):
    train.csv               fname,label|labels[,manually_verified][,fold]   (labels: comma-separated)
    sample_submission.csv   fname[,label] or fname,<one column per label>   (the test clips, in order)
    test_labels.csv         optional fname,label|labels[,usage] of the test clips (scores the test split
                            locally; usage: the 2018 leaderboard, Public or Private)
    audio_train/, audio_test/
    folds.csv               fname,fold: written once, shared by every model
    cache/                  the audio cache, features and embeddings (src.dataset.store), keyed folders

A run:
    predictions/<name>/fold<k>/   a fold's files (src.training.fold_files): result.json last
    predictions/<name>/logs/fold<k>.log
    submissions/<name>.csv, report/, exported/<name>/
    compile-cache/                compiled training steps (src.base.backend)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")
TABLES = {"train": "train.csv", "test": "sample_submission.csv", "truth": "test_labels.csv", "folds": "folds.csv"}


def audio_dir(data_dir: Path, split: str) -> Path:
    """The folder of a split's audio files (fnames are relative to it)."""
    return Path(data_dir) / f"audio_{split}"


def cache_dir(data_dir: Path) -> Path:
    """The folder every derived cache (audio, features, embeddings) lives under, one keyed folder each."""
    return Path(data_dir) / "cache"


def cache_folder(data_dir: Path, kind: str, key: str, split: str) -> Path:
    """One cache: cache/<kind>-<key>/<split>/, key a hash of the parameters that made it."""
    return cache_dir(data_dir) / f"{kind}-{key}" / split


def table_path(data_dir: Path, table: str) -> Path:
    """train.csv, sample_submission.csv, test_labels.csv or folds.csv (by TABLES' key)."""
    return Path(data_dir) / TABLES[table]


def row_number(index: int) -> int:
    """The line number a spreadsheet or editor shows for a table's 0-based data row (header is line 1)."""
    return int(index) + 2


@dataclass
class Paths:
    """Where a dataset lives and where a run writes."""

    data_dir: Path = Path("data")
    out_dir: Path = Path(".")

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)
        self.out_dir = Path(self.out_dir)

    @property
    def folds_csv(self) -> Path:
        return table_path(self.data_dir, "folds")

    @property
    def predictions_dir(self) -> Path:
        return self.out_dir / "predictions"

    @property
    def submissions_dir(self) -> Path:
        return self.out_dir / "submissions"

    @property
    def report_dir(self) -> Path:
        return self.out_dir / "report"

    def exported_dir(self, name: str) -> Path:
        return self.out_dir / "exported" / name

    def model_dir(self, name: str) -> Path:
        return self.predictions_dir / name

    def fold_dir(self, name: str, fold: int) -> Path:
        return self.model_dir(name) / f"fold{fold}"

    def log_dir(self, name: str) -> Path:
        return self.model_dir(name) / "logs"

    @property
    def compile_cache(self) -> Path:
        return self.out_dir / "compile-cache"
