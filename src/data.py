"""Stage 1, data: the competition archives downloaded, unpacked and validated. Then the folds made.

    python -m src.data [--download] [--data-dir data]                 # the Kaggle competition's archive
    python -m src.data --source zenodo [--download] [--data-dir data]  # its public release, test labels too

The layout (src.base.layout; FSDKaggle2018, or any clip dataset written the same way):
    train.csv               fname,label[,manually_verified]   (or labels, comma-separated: multi-label)
    sample_submission.csv   fname[,label]   (the test clips, in submission order)
    audio_train/, audio_test/
    test_labels.csv         optional fname,label[,usage] of the test clips (scores the test split locally)
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

from .base import cli
from .base.errors import DataError
from .base.files import atomic_write_csv, irregular
from .base.layout import SPLITS, audio_dir, table_path
from .base.metrics import LEADERBOARDS
from .dataset import archives, zenodo
from .dataset.tables import (
    class_names,
    likely_typos,
    load_test,
    load_test_labels,
    load_train,
    read_table,
    row_number,
)
from .dataset.task import task_of

log = logging.getLogger(__name__)

COMPETITION = "freesound-audio-tagging"


# --- download, unpack, validate -------------------------------------------------------------------

HOW_TO_DOWNLOAD = """\
Could not download the competition data from Kaggle ({reason}).
To fix: (1) sign in to kaggle.com and accept the rules at
https://www.kaggle.com/c/{competition}/rules; (2) give the kaggle CLI your credentials, either with
`kaggle auth login`, or a token from https://www.kaggle.com/settings/api exported as KAGGLE_API_TOKEN
or saved to ~/.kaggle/access_token (older CLIs: ~/.kaggle/kaggle.json with chmod 600); (3) check
that this machine reaches kaggle.com. Then run `python -m src.data --download --data-dir {data_dir}`
again, or `kaggle competitions download {competition} -p {data_dir}` and `python -m src.data --data-dir
{data_dir}`. Without network you can download the archive elsewhere, copy {competition}.zip into
{data_dir}/ and run `python -m src.data --data-dir {data_dir}`. The same clips, with the labels of the
scored test clips, are public on Zenodo: `python -m src.data --source zenodo --download --data-dir {data_dir}`."""


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
    except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever failed, the user gets what to do
        reason = "no credentials found" if isinstance(error, SystemExit) else \
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise DataError(HOW_TO_DOWNLOAD.format(reason=reason, competition=COMPETITION,
                                               data_dir=data_dir)) from None


def unpack(data_dir: Path) -> list[Path]:
    """Every archive in data_dir (and the archives inside them) unpacked where the layout needs it
    (src.dataset.archives); returns the archives."""
    return archives.unpack_all(data_dir)


KAGGLE_TEST_LABELS = "test_post_competition.csv"
"""In Kaggle's 2018 download since the competition ended: fname, label, usage (Public, Private, or
Ignored for the unscored padding clips, whose label is None), freesound_id, license."""


def write_kaggle_test_labels(data_dir: Path) -> int | None:
    """test_labels.csv (fname, label, usage) from Kaggle's test_post_competition.csv: the 1,600 clips the
    2018 competition scored, with their leaderboard; the Ignored padding clips left out. None when the
    file is absent. Rows are checked here, so an error names the file the user has."""
    source = Path(data_dir) / KAGGLE_TEST_LABELS
    if not source.exists():
        return None
    table = read_table(source, ["fname", "label", "usage"])
    bad = ~table.usage.isin(LEADERBOARDS + ("Ignored",))
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise DataError(f"{source}, row {row_number(i)} ({table.fname.iloc[i]}): usage {table.usage.iloc[i]!r} is "
                        f"none of Public, Private, Ignored; it is not Kaggle's {KAGGLE_TEST_LABELS}. Download it "
                        f"again (kaggle competitions download {COMPETITION} -p {data_dir}).")
    scored = table[table.usage.isin(LEADERBOARDS)]
    atomic_write_csv(scored[["fname", "label", "usage"]], table_path(data_dir, "truth"))
    return len(scored)


def check_layout(data_dir: Path) -> dict:
    """Validate tables and files; print labels and counts. Raises DataError on a missing file."""
    import soundfile

    data_dir = Path(data_dir)
    train = load_train(data_dir)
    labels = class_names(train)
    test = load_test(data_dir, labels)
    unreadable = []
    for split, table in zip(SPLITS, (train, test)):
        folder = audio_dir(data_dir, split)
        for i, fname in table.fname.items():
            path = folder / fname
            if not path.exists():
                csv = "train.csv" if split == "train" else "sample_submission.csv"
                raise DataError(f"{data_dir / csv}, row {row_number(i)}: {path} does not exist. Unpack the "
                                f"audio archives (python -m src.data) or remove the row.")
            kind = irregular(path)
            if kind:  # a FIFO would block the decoder forever; the audio cache skips it too
                unreadable.append((split, fname, f"{kind}, not an audio file"))
                continue
            try:
                if soundfile.info(str(path)).frames == 0:
                    unreadable.append((split, fname, "a header with no samples"))
            except Exception as error:  # noqa: BLE001 - any decoder complaint means the same thing
                unreadable.append((split, fname, str(error).splitlines()[0]))
    # Each label's clips, a clip counted under every label it has.
    counts = train.assign(label=task_of(train).label_lists(train)).explode("label").groupby(
        "label").manually_verified.agg(["size", "sum"])
    print(f"{data_dir}: {len(train)} train clips in {len(labels)} labels, {len(test)} test clips")
    print(f"{'label':<28}{'clips':>7}{'verified':>10}")
    for label, row in counts.iterrows():
        print(f"{label:<28}{row['size']:>7}{row['sum']:>10}")
    if unreadable:
        print(f"{len(unreadable)} clip(s) cannot be read as audio; the audio cache will try to decode them "
              f"and record the ones it must skip (a test clip skipped still gets its submission row):")
        for split, fname, why in unreadable:
            print(f"  {audio_dir(data_dir, split) / fname}: {why}")
    typos = likely_typos(train)
    if typos:
        print(f"{len(typos)} label(s) are rare enough to be typos; check these rows of "
              f"{table_path(data_dir, 'train')}:")
        for label, rows, near in typos:
            guess = f" (did you mean {near!r}?)" if near else ""
            print(f"  {label!r}: row(s) {', '.join(map(str, rows[:5]))}{guess}")
    truth = load_test_labels(data_dir, labels)
    if truth is not None:
        boards = truth.usage.value_counts().to_dict() if "usage" in truth.columns else {}
        print(f"test labels: {len(truth)} clips" + "".join(f", {n} {board}" for board, n in sorted(boards.items())))
    return {"train": len(train), "test": len(test), "labels": len(labels), "unreadable": unreadable,
            "typos": typos, "test_labels": 0 if truth is None else len(truth)}


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.data", __doc__, out_dir=False)
    parser.add_argument("--download", action="store_true",
                        help="first download the data from --source")
    parser.add_argument("--source", choices=("kaggle", "zenodo"), default="kaggle",
                        help=f"kaggle: the {COMPETITION} archive, with the kaggle API (default); zenodo: "
                             f"FSDKaggle2018's public release (record {zenodo.RECORD}), with the labels and "
                             f"leaderboard (Public/Private) of the scored test clips")
    parser.add_argument("--zenodo-url", default=zenodo.ZENODO,
                        help=f"where Zenodo's API answers, for a mirror (default: {zenodo.ZENODO})")
    args = parser.parse_args(argv)
    if args.download:
        if args.source == "zenodo":
            zenodo.download(args.data_dir, base_url=args.zenodo_url.rstrip("/"))
        else:
            download(args.data_dir)
    unpack(args.data_dir)
    # The release's tables become the layout's; a Kaggle train.csv already there is kept unless asked.
    kept = table_path(args.data_dir, "train").exists() and args.source != "zenodo"
    if zenodo.is_release(args.data_dir) and not kept:
        zenodo.write_layout(args.data_dir)
    else:
        write_kaggle_test_labels(args.data_dir)
    check_layout(args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
