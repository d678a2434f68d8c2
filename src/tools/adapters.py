"""Other clip datasets written in the competition layout. train.csv, audio_train/, sample_submission.csv,
audio_test/, the audio linked instead of copied.

    python -m src.tools.adapters esc50 ESC-50-master data/esc50        # its 5 predefined folds become `fold`
    python -m src.tools.adapters folders speech_commands data/speech   # label/clip.wav folders
    python -m src.tools.adapters csv my_clips.csv data/mine            # rows of path,label[,fold]
    python -m src.tools.adapters fsdkaggle2019 freesound-audio-tagging-2019 data/fsd2019   # multi-label
    python -m src.tools.adapters fsd50k FSD50K data/fsd50k                                 # multi-label

The two multi-label ones write a `labels` column (comma-separated), which makes every stage multi-label
(sigmoid outputs, lwlrap and mAP, probability submissions). FSDKaggle2019: the curated clips are the
verified rows and the noisy ones the unverified rows, which train every fold and are never validated on;
its sample_submission.csv is kept, and test_post_competition.csv (the public release's test labels), when
present, becomes test_labels.csv. FSD50K: the dev set's own train/val split is the one fold (`fold` 0 =
val; the train rows, fold -1, train it), and the eval set the test split with its labels.

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
from ..base.metrics import LEADERBOARDS
from ..dataset import archives
from ..dataset import audio as audio_cache
from ..dataset.folds import ALWAYS_TRAINING


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


def fsdkaggle2019(source: Path, out: Path) -> pd.DataFrame:
    """The 2019 competition's folder (train_curated.csv, train_noisy.csv and their audio folders, test/,
    sample_submission.csv), or the public release's names for the same (FSDKaggle2019.audio_*/,
    FSDKaggle2019.meta/*_post_competition.csv). Archives still packed there (Kaggle's
    freesound-audio-tagging-2019.zip, and train_curated.zip, train_noisy.zip and test.zip inside it, whose
    entries may carry no folder) are unpacked first, each into the folder of its name."""
    archives.unpack_all(source)
    parts = []
    for subset, verified in (("curated", 1), ("noisy", 0)):
        table_path = _first(source, [f"train_{subset}.csv", f"FSDKaggle2019.meta/train_{subset}_post_competition.csv"])
        folder = _first(source, [f"train_{subset}", f"FSDKaggle2019.audio_train_{subset}"])
        if table_path is None or folder is None:
            if subset == "noisy":  # optional: the curated clips alone are a dataset
                continue
            raise DataError(f"{source}: no train_curated.csv and train_curated/ (or the release's FSDKaggle2019.meta/ "
                            f"and FSDKaggle2019.audio_train_curated/): point at the unpacked 2019 data")
        table = pd.read_csv(table_path, dtype={"fname": str, "labels": str})
        _link(folder, audio_dir(out, "train") / subset)
        parts.append(pd.DataFrame({"fname": subset + "/" + table.fname, "labels": table.labels,
                                   "manually_verified": verified}))
    train = pd.concat(parts, ignore_index=True)
    test_folder = _first(source, ["test", "FSDKaggle2019.audio_test"])
    sample = _first(source, ["sample_submission.csv"])
    labels = sorted({label for text in train.labels for label in text.split(",")})
    truth_path = _first(source, ["test_post_competition.csv", "FSDKaggle2019.meta/test_post_competition.csv"])
    truth = pd.read_csv(truth_path, dtype={"fname": str, "labels": str}) if truth_path else None
    if sample is not None:
        test = pd.read_csv(sample, dtype={"fname": str})
    elif truth is not None:
        test = truth[["fname"]].assign(**{label: 0.0 for label in labels})
    else:
        test = pd.DataFrame(columns=["fname", *labels])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(train, out / "train.csv")
    atomic_write_csv(test, out / "sample_submission.csv")
    if test_folder is not None:
        _link(test_folder, audio_dir(out, "test"))
    else:
        audio_dir(out, "test").mkdir(exist_ok=True)
    if truth is not None:
        boards = "usage" in truth.columns and truth.usage.isin(LEADERBOARDS).all()
        atomic_write_csv(truth[["fname", "labels", *(["usage"] if boards else [])]], out / "test_labels.csv")
    return train


def fsd50k(source: Path, out: Path) -> pd.DataFrame:
    """FSD50K (FSD50K.ground_truth/dev.csv with labels, mids and split; eval.csv; FSD50K.dev_audio/,
    FSD50K.eval_audio/): the dev set to train on its own split, the eval set as the labelled test split."""
    truth = source / "FSD50K.ground_truth"
    if not (truth / "dev.csv").exists():
        raise DataError(f"{truth / 'dev.csv'} not found: point at the folder holding FSD50K.ground_truth/, "
                        f"FSD50K.dev_audio/ and FSD50K.eval_audio/")
    dev = pd.read_csv(truth / "dev.csv", dtype={"fname": str, "labels": str})
    train = pd.DataFrame({"fname": dev.fname + ".wav", "labels": dev.labels, "manually_verified": 1,
                          "fold": np.where(dev.split == "val", 0, ALWAYS_TRAINING)})
    _link(source / "FSD50K.dev_audio", audio_dir(out, "train"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(train, out / "train.csv")
    labels = sorted({label for text in train.labels for label in text.split(",")})
    if (truth / "eval.csv").exists():
        evaluation = pd.read_csv(truth / "eval.csv", dtype={"fname": str, "labels": str})
        test = pd.DataFrame({"fname": evaluation.fname + ".wav", "labels": evaluation.labels})
        _link(source / "FSD50K.eval_audio", audio_dir(out, "test"))
        atomic_write_csv(test, out / "test_labels.csv")
    else:
        test = pd.DataFrame(columns=["fname"])
        audio_dir(out, "test").mkdir(exist_ok=True)
    atomic_write_csv(test[["fname"]].assign(**{label: 0.0 for label in labels}), out / "sample_submission.csv")
    return train


def _first(source: Path, names: list[str]) -> Path | None:
    """The first of the names that exists under source."""
    return next((source / n for n in names if (source / n).exists()), None)


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
    parser.add_argument("kind", choices=["esc50", "folders", "csv", "fsdkaggle2019", "fsd50k"])
    parser.add_argument("source", type=Path, help="the dataset's folder, or the CSV file for `csv`")
    parser.add_argument("out", type=Path, help="where to write the competition layout")
    parser.add_argument("--n-folds", type=int, default=5, help="folds when a validation list is given (folders)")
    args = parser.parse_args(argv)
    if args.kind == "esc50":
        train = esc50(args.source, args.out)
    elif args.kind == "folders":
        train = folders(args.source, args.out, args.n_folds)
    elif args.kind == "csv":
        train = from_csv(args.source, args.out)
    else:
        train = (fsdkaggle2019 if args.kind == "fsdkaggle2019" else fsd50k)(args.source, args.out)
    folds = f", folds {sorted(int(k) for k in train.fold.unique())}" if "fold" in train.columns else ""
    n_labels = len({x for text in train.labels for x in text.split(",")}) if "labels" in train.columns \
        else train.label.nunique()
    print(f"{args.out}: {len(train)} train clips in {n_labels} labels{folds}. "
          f"Check it with `python -m src.data --data-dir {args.out}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
