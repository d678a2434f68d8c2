"""Stage 1, data: download and unpack the competition archives, validate the layout, make the folds.

    python -m src.data [--download] [--data-dir data]

The layout (FSDKaggle2018, or any single-label clip dataset written the same way):
    train.csv               fname,label[,manually_verified]
    sample_submission.csv   fname[,label]   (the test clips, in submission order)
    audio_train/, audio_test/
    test_labels.csv         optional fname,label of the test clips (scores the test split locally)
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .config import stage_parser

log = logging.getLogger(__name__)

COMPETITION = "freesound-audio-tagging"


class DataError(Exception):
    """Bad input that the user must fix; the message names the file, the row and the fix."""


def reports_data_errors(main):
    """Wrap a command's main: a DataError becomes its message on stderr and exit status 2."""
    @functools.wraps(main)
    def run(argv=None) -> int:
        try:
            return main(argv)
        except DataError as error:
            print(error, file=sys.stderr)
            return 2
    return run


# --- tables -------------------------------------------------------------------------------------

def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path} is missing. Run `python -m src.data --data-dir {path.parent}` "
                        f"after placing the competition files there (see README).")
    table = pd.read_csv(path, dtype={"fname": str, "label": str})
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(table.columns)}.")
    bad = table["fname"].isna()
    if bad.any():
        raise DataError(f"{path}, row {_row(bad.idxmax())}: empty fname.")
    dup = table["fname"].duplicated()
    if dup.any():
        i = int(dup.idxmax())
        raise DataError(f"{path}, row {_row(i)}: duplicate fname {table.fname[i]!r} "
                        f"(first at row {_row(int((table.fname == table.fname[i]).idxmax()))}); "
                        f"each clip must be listed once.")
    return table


def _row(index: int) -> int:
    """The line number a spreadsheet or editor shows for a 0-based data row (header is line 1)."""
    return int(index) + 2


def load_train(data_dir: Path) -> pd.DataFrame:
    """train.csv with fname, label, manually_verified (1 when the column is absent)."""
    path = Path(data_dir) / "train.csv"
    train = _read_csv(path, ["fname", "label"])
    empty = train["label"].isna() | (train["label"].str.strip() == "")
    if empty.any():
        raise DataError(f"{path}, row {_row(empty.idxmax())}: empty label for {train.fname[empty.idxmax()]!r}.")
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
            raise DataError(f"{path}, row {_row(i)} ({table.fname[i]}): label {unknown[0]!r} is not a "
                            f"training label; labels must be among the {len(labels)} in train.csv.")


# --- folds --------------------------------------------------------------------------------------

def load_folds(data_dir: Path, n_folds: int | None = 10, seed: int = 42) -> pd.DataFrame:
    """fname,fold for every train.csv row, written once to data/folds.csv so every model shares it.

    n_folds=None reads the folds that exist, whatever their number. A `fold` column in train.csv (predefined folds, e.g. ESC-50) is used as is; otherwise a shuffled,
    seeded StratifiedKFold on the labels.
    """
    from sklearn.model_selection import StratifiedKFold

    data_dir = Path(data_dir)
    train = load_train(data_dir)
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


# --- download, unpack, validate -------------------------------------------------------------------

HOW_TO_DOWNLOAD = """\
Could not download the competition data from Kaggle ({reason}).
To fix: (1) sign in to kaggle.com and accept the rules at
https://www.kaggle.com/c/{competition}/rules; (2) give the kaggle CLI your credentials, either with
`kaggle auth login`, or a token from https://www.kaggle.com/settings/api exported as KAGGLE_API_TOKEN
or saved to ~/.kaggle/access_token (older CLIs: ~/.kaggle/kaggle.json with chmod 600); (3) check
that this machine reaches kaggle.com. Then run `python -m src.data --download --data-dir {data_dir}`
again. Without network you can download the archive elsewhere, copy {competition}.zip into
{data_dir}/ and run `python -m src.data --data-dir {data_dir}`."""


def download(data_dir: Path) -> None:
    """Download the competition archive with the kaggle API; DataError with what to do on failure."""
    data_dir.mkdir(parents=True, exist_ok=True)
    chatter = io.StringIO()
    try:
        # The kaggle package prints pages of help and raises SystemExit (not an Exception) when it
        # has no credentials; keep that out of the user's way and say what to do instead.
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            from kaggle.api.kaggle_api_extended import KaggleApi
            api = KaggleApi()
            api.authenticate()
            api.competition_download_files(COMPETITION, path=str(data_dir), quiet=False)
    except (Exception, SystemExit) as error:
        reason = "no credentials found" if isinstance(error, SystemExit) else \
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise DataError(HOW_TO_DOWNLOAD.format(reason=reason, competition=COMPETITION,
                                               data_dir=data_dir)) from None


def unpack(data_dir: Path) -> list[Path]:
    """Extract every .zip in data_dir (and the zips inside them) in place; returns what was unpacked."""
    done: list[Path] = []
    while True:
        pending = [z for z in sorted(data_dir.glob("*.zip")) if z not in done]
        if not pending:
            return done
        for archive in pending:
            log.info("unpacking %s", archive)
            try:
                with zipfile.ZipFile(archive) as zf:
                    members = [m for m in zf.namelist() if not m.startswith("__MACOSX")]
                    for member in members:
                        if not (data_dir / member).exists():
                            zf.extract(member, data_dir)
            except zipfile.BadZipFile:
                raise DataError(f"{archive} is not a valid zip (an interrupted download?). "
                                f"Delete it and download again.") from None
            done.append(archive)


def check_layout(data_dir: Path) -> dict:
    """Validate tables and files; print labels and counts. Raises DataError on a missing file."""
    import soundfile

    data_dir = Path(data_dir)
    train = load_train(data_dir)
    labels = class_names(train)
    test = load_test(data_dir, labels)
    load_test_labels(data_dir, labels)
    unreadable = []
    for split, table in (("train", train), ("test", test)):
        folder = data_dir / f"audio_{split}"
        for i, fname in table.fname.items():
            path = folder / fname
            if not path.exists():
                csv = "train.csv" if split == "train" else "sample_submission.csv"
                raise DataError(f"{data_dir / csv}, row {_row(i)}: {path} does not exist. Unpack the "
                                f"audio archives (python -m src.data) or remove the row.")
            try:
                soundfile.info(str(path))
            except Exception as error:  # noqa: BLE001 - any decoder complaint means the same thing
                unreadable.append((split, fname, str(error).splitlines()[0]))
    counts = train.groupby("label").manually_verified.agg(["size", "sum"])
    print(f"{data_dir}: {len(train)} train clips in {len(labels)} labels, {len(test)} test clips")
    print(f"{'label':<28}{'clips':>7}{'verified':>10}")
    for label, row in counts.iterrows():
        print(f"{label:<28}{row['size']:>7}{row['sum']:>10}")
    if unreadable:
        print(f"{len(unreadable)} clip(s) have an unreadable header; the audio cache will try to decode "
              f"them and record the ones it must skip:")
        for split, fname, why in unreadable:
            print(f"  audio_{split}/{fname}: {why}")
    return {"train": len(train), "test": len(test), "labels": len(labels), "unreadable": unreadable}


@reports_data_errors
def main(argv=None) -> int:
    parser = stage_parser("python -m src.data", __doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default: data")
    parser.add_argument("--download", action="store_true",
                        help=f"first download the {COMPETITION} archive with the kaggle API")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.download:
        download(args.data_dir)
    unpack(args.data_dir)
    check_layout(args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
