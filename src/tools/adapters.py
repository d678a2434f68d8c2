"""Other single-label clip datasets written in the competition layout. train.csv, audio_train/,
sample_submission.csv, audio_test/, the audio linked instead of copied.

    python -m src.tools.adapters esc50 ESC-50-master data/esc50        # its 5 predefined folds become `fold`
    python -m src.tools.adapters folders speech_commands data/speech   # label/clip.wav folders
    python -m src.tools.adapters csv my_clips.csv data/mine            # rows of path,label[,fold]

Then train as usual: `./run_folds.sh 2d -- --data-dir data/esc50`. ESC-50 has no test split, so its
runs report OOF MAP@3 and accuracy only. For folder trees, Speech Commands' testing_list.txt becomes
the test split (with test_labels.csv) and validation_list.txt becomes fold 0, the other clips being
spread over folds 1 to N-1, so `./run_folds.sh MODEL 0` trains on the official split.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..base import cli
from ..base.errors import DataError
from ..base.files import atomic_write_csv
from ..base.layout import audio_dir
from ..dataset import audio as audio_cache


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path(target).resolve(), link)


def _write_layout(out: Path, train: pd.DataFrame, test: pd.DataFrame | None = None) -> None:
    """train.csv, and sample_submission.csv (plus test_labels.csv when test labels are known)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(train, out / "train.csv")
    labels = sorted(train.label.unique())
    placeholder = " ".join(labels[:3])
    if test is None or test.empty:
        audio_dir(out, "test").mkdir(exist_ok=True)
        atomic_write_csv(pd.DataFrame(columns=["fname", "label"]), out / "sample_submission.csv")
        return
    atomic_write_csv(test[["fname"]].assign(label=placeholder), out / "sample_submission.csv")
    if "label" in test.columns:
        atomic_write_csv(test[["fname", "label"]], out / "test_labels.csv")


def esc50(source: Path, out: Path) -> pd.DataFrame:
    """ESC-50 (meta/esc50.csv, audio/): labels from `category`, folds 1-5 as folds 0-4."""
    meta_path = source / "meta" / "esc50.csv"
    if not meta_path.exists():
        raise DataError(f"{meta_path} not found: point at the ESC-50 folder holding meta/ and audio/")
    meta = pd.read_csv(meta_path)
    train = pd.DataFrame({"fname": meta.filename, "label": meta.category, "manually_verified": 1,
                          "fold": meta.fold.astype(int) - 1})
    _link(source / "audio", audio_dir(out, "train"))
    _write_layout(out, train)
    return train


def folders(source: Path, out: Path, n_folds: int = 5, seed: int = 42) -> pd.DataFrame:
    """One folder per label (folders starting with _ or . are not labels, e.g. _background_noise_);
    validation_list.txt / testing_list.txt, when present, give fold 0 and the test split."""
    from sklearn.model_selection import StratifiedKFold

    clips = sorted(p.relative_to(source).as_posix() for p in source.glob("*/*")
                   if p.suffix.lower() in audio_cache.AUDIO_SUFFIXES and not p.parent.name.startswith(("_", ".")))
    if not clips:
        raise DataError(f"{source} holds no label/clip audio files (e.g. {source}/dog/0001.wav)")
    listed = {name: set(_read_list(source / f"{name}_list.txt")) for name in ("validation", "testing")}
    table = pd.DataFrame({"fname": clips, "label": [c.split("/")[0] for c in clips], "manually_verified": 1})
    test = table[table.fname.isin(listed["testing"])].reset_index(drop=True)
    train = table[~table.fname.isin(listed["testing"])].reset_index(drop=True)
    if listed["validation"]:
        validation = train.fname.isin(listed["validation"]).to_numpy()
        fold = np.zeros(len(train), dtype=int)
        rest = np.flatnonzero(~validation)
        splitter = StratifiedKFold(n_splits=n_folds - 1, shuffle=True, random_state=seed)
        for k, (_, part) in enumerate(splitter.split(rest, train.label[rest])):
            fold[rest[part]] = k + 1
        train["fold"] = fold
    _link(source, audio_dir(out, "train"))
    if not test.empty:
        _link(source, audio_dir(out, "test"))
    _write_layout(out, train, test)
    return train


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def from_csv(csv_path: Path, out: Path) -> pd.DataFrame:
    """Rows of path,label[,fold]; relative paths are taken from the CSV's folder. Each clip is linked
    as audio_train/<its file name> (prefixed with its row number where names repeat)."""
    table = pd.read_csv(csv_path)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise DataError(f"{csv_path}: needs columns path,label (optionally fold); missing {sorted(missing)}")
    paths = [p if Path(p).is_absolute() else csv_path.parent / p for p in table.path]
    names = [Path(p).name for p in paths]
    repeated = pd.Series(names).duplicated(keep=False)
    fnames = [f"{i:06d}_{n}" if r else n for i, (n, r) in enumerate(zip(names, repeated))]
    for i, (path, fname) in enumerate(zip(paths, fnames)):
        if not Path(path).exists():
            raise DataError(f"{csv_path}, row {i + 2}: {path} does not exist")
        _link(path, audio_dir(out, "train") / fname)
    train = pd.DataFrame({"fname": fnames, "label": table.label, "manually_verified": 1})
    if "fold" in table.columns:
        train["fold"] = table.fold.astype(int)
    _write_layout(out, train)
    return train


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.tools.adapters", __doc__, data_dir=False, out_dir=False)
    parser.add_argument("kind", choices=["esc50", "folders", "csv"])
    parser.add_argument("source", type=Path, help="the dataset's folder, or the CSV file for `csv`")
    parser.add_argument("out", type=Path, help="where to write the competition layout")
    parser.add_argument("--n-folds", type=int, default=5, help="folds when a validation list is given (folders)")
    args = parser.parse_args(argv)
    if args.kind == "esc50":
        train = esc50(args.source, args.out)
    elif args.kind == "folders":
        train = folders(args.source, args.out, args.n_folds)
    else:
        train = from_csv(args.source, args.out)
    folds = f", folds {sorted(int(k) for k in train.fold.unique())}" if "fold" in train.columns else ""
    print(f"{args.out}: {len(train)} train clips in {train.label.nunique()} labels{folds}. "
          f"Check it with `python -m src.data --data-dir {args.out}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
