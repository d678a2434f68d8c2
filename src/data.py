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
import zipfile
from pathlib import Path

from .base import cli
from .base.errors import DataError
from .base.layout import SPLITS, audio_dir, table_path
from .dataset import zenodo
from .dataset.tables import class_names, is_multilabel, label_lists, load_test, load_test_labels, load_train, row_number

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
    for split, table in zip(SPLITS, (train, test)):
        folder = audio_dir(data_dir, split)
        for i, fname in table.fname.items():
            path = folder / fname
            if not path.exists():
                csv = "train.csv" if split == "train" else "sample_submission.csv"
                raise DataError(f"{data_dir / csv}, row {row_number(i)}: {path} does not exist. Unpack the "
                                f"audio archives (python -m src.data) or remove the row.")
            try:
                soundfile.info(str(path))
            except Exception as error:  # noqa: BLE001 - any decoder complaint means the same thing
                unreadable.append((split, fname, str(error).splitlines()[0]))
    if is_multilabel(train):  # each label's clips, a clip counted under every label it has
        counts = train.assign(label=label_lists(train)).explode("label").groupby("label").manually_verified.agg(
            ["size", "sum"])
    else:
        counts = train.groupby("label").manually_verified.agg(["size", "sum"])
    print(f"{data_dir}: {len(train)} train clips in {len(labels)} labels, {len(test)} test clips")
    print(f"{'label':<28}{'clips':>7}{'verified':>10}")
    for label, row in counts.iterrows():
        print(f"{label:<28}{row['size']:>7}{row['sum']:>10}")
    if unreadable:
        print(f"{len(unreadable)} clip(s) have an unreadable header; the audio cache will try to decode "
              f"them and record the ones it must skip:")
        for split, fname, why in unreadable:
            print(f"  {audio_dir(data_dir, split) / fname}: {why}")
    return {"train": len(train), "test": len(test), "labels": len(labels), "unreadable": unreadable}


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
    check_layout(args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
