"""FSDKaggle2018 from its public release (Zenodo record 2552860, CC BY 4.0): the archives downloaded with
their checksums checked, and the release's tables written in this project's layout.

The release, unpacked:
    FSDKaggle2018.audio_train/   the train clips
    FSDKaggle2018.audio_test/    the test clips (the 1,600 the competition scored, and the rest)
    FSDKaggle2018.meta/train_post_competition.csv               fname,label,manually_verified,freesound_id,license
    FSDKaggle2018.meta/test_post_competition_scoring_clips.csv  fname,label,usage,freesound_id,license
usage is Public or Private: the clip's leaderboard in the 2018 competition.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ..base.errors import DataError
from ..base.files import atomic_path, atomic_write_csv
from ..base.layout import SPLITS, audio_dir, table_path
from ..base.metrics import LEADERBOARDS

log = logging.getLogger(__name__)

RECORD = "2552860"
ZENODO = "https://zenodo.org"
PREFIX = "FSDKaggle2018"
ARCHIVES = tuple(f"{PREFIX}.{part}.zip" for part in ("audio_train", "audio_test", "meta"))
META = f"{PREFIX}.meta"
TRAIN_META = "train_post_competition.csv"
TEST_META = "test_post_competition_scoring_clips.csv"

HOW_TO_GET = """\
Could not download FSDKaggle2018 from Zenodo ({reason}).
To fix: check that this machine reaches {base_url}, then run `python -m src.data --source zenodo
--download --data-dir {data_dir}` again (finished archives are kept and not fetched twice). Without
network, download {archives} from {base_url}/records/{record} elsewhere, copy them into {data_dir}/
and run `python -m src.data --data-dir {data_dir}`."""


def record_files(record: str = RECORD, base_url: str = ZENODO) -> list[dict]:
    """The record's files as Zenodo's API lists them: name, size, md5 and download address."""
    with urllib.request.urlopen(f"{base_url}/api/records/{record}", timeout=60) as response:
        listing = json.load(response)
    files = []
    for entry in listing.get("files", []):
        algorithm, _, digest = entry.get("checksum", "").partition(":")
        links = entry.get("links", {})
        files.append({"name": entry["key"], "size": int(entry.get("size", 0)),
                      "md5": digest if algorithm == "md5" else None,
                      "url": links.get("content") or links.get("self")
                      or f"{base_url}/records/{record}/files/{entry['key']}?download=1"})
    return files


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(data_dir: Path, record: str = RECORD, base_url: str = ZENODO,
             names: tuple[str, ...] = ARCHIVES) -> list[Path]:
    """Fetch the release's archives into data_dir with a progress bar, each checked against the md5
    Zenodo publishes and renamed into place only then; archives already there and whole are kept.
    DataError saying what to do when the network or a checksum fails."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    fail = dict(base_url=base_url, data_dir=data_dir, record=record, archives=", ".join(names))
    try:
        listed = {f["name"]: f for f in record_files(record, base_url)}
    except (OSError, ValueError, KeyError) as error:  # URLError is an OSError; bad JSON a ValueError
        raise DataError(HOW_TO_GET.format(reason=f"{type(error).__name__}: {error}", **fail)) from None
    missing = [n for n in names if n not in listed]
    if missing:
        raise DataError(HOW_TO_GET.format(reason=f"record {record} lists no {', '.join(missing)}", **fail))
    fetched = []
    for name in names:
        entry, target = listed[name], data_dir / name
        if target.exists() and target.stat().st_size == entry["size"] and \
                (entry["md5"] is None or md5_of(target) == entry["md5"]):
            log.info("%s is already here and whole; not fetched again", target)
        else:
            try:
                _fetch(entry, target)
            except (OSError, urllib.error.URLError) as error:
                raise DataError(HOW_TO_GET.format(reason=f"{name}: {type(error).__name__}: {error}", **fail)) \
                    from None
        fetched.append(target)
    return fetched


def _fetch(entry: dict, target: Path) -> None:
    """One file through a temporary name: the md5 is computed while it streams, and a file that does not
    match is never renamed into place."""
    digest = hashlib.md5()
    with urllib.request.urlopen(entry["url"], timeout=60) as response, atomic_path(target) as tmp, \
            open(tmp, "wb") as out, tqdm(total=entry["size"] or None, unit="B", unit_scale=True,
                                         desc=target.name, disable=None) as bar:
        while block := response.read(1 << 20):
            out.write(block)
            digest.update(block)
            bar.update(len(block))
        out.flush()
        if entry["md5"] is not None and digest.hexdigest() != entry["md5"]:
            raise DataError(f"{target.name} arrived damaged: its md5 is {digest.hexdigest()}, Zenodo lists "
                            f"{entry['md5']}. Nothing was kept; run the same command again.")


def is_release(data_dir: Path) -> bool:
    """True when data_dir holds the unpacked release's tables."""
    return (Path(data_dir) / META / TRAIN_META).exists()


def write_layout(data_dir: Path) -> dict:
    """From the unpacked release: train.csv (fname,label,manually_verified), sample_submission.csv (the
    1,600 scored test clips, in the release's order), test_labels.csv (fname,label,usage) and the audio
    folders as links to the release's. Existing audio folders are kept. Returns the counts written;
    src.data validates the tables next (src.dataset.tables)."""
    data_dir = Path(data_dir)
    meta = data_dir / META
    train = _read(meta / TRAIN_META, ["fname", "label", "manually_verified"])
    test = _read(meta / TEST_META, ["fname", "label", "usage"])
    bad = ~test.usage.isin(LEADERBOARDS)
    if bad.any():  # named here: test_labels.csv is rewritten from this file on every run
        i = int(bad.to_numpy().argmax())
        raise DataError(f"{meta / TEST_META}, row {i + 2} ({test.fname.iloc[i]}): usage {test.usage.iloc[i]!r} is "
                        f"neither Public nor Private, so {META}.zip is not the release's archive. Fetch it again "
                        f"(an archive whose md5 is not Zenodo's is replaced): `python -m src.data --source zenodo "
                        f"--download --data-dir {data_dir}`.")
    for split in SPLITS:
        link, release = audio_dir(data_dir, split), data_dir / f"{PREFIX}.audio_{split}"
        if not link.exists() and not link.is_symlink():
            if not release.is_dir():
                raise DataError(f"{release} is missing: unpack {release.name}.zip into {data_dir} "
                                f"(python -m src.data --data-dir {data_dir} unpacks every archive there).")
            os.symlink(release.name, link)  # relative, so the folder can move
    atomic_write_csv(train[["fname", "label", "manually_verified"]], table_path(data_dir, "train"))
    atomic_write_csv(test[["fname"]], table_path(data_dir, "test"))
    atomic_write_csv(test[["fname", "label", "usage"]], table_path(data_dir, "truth"))
    counts = {"train": len(train), "test": len(test)} | test.usage.value_counts().to_dict()
    log.info("wrote %s's layout from the release: %d train clips, %d scored test clips (%d Public, %d Private)",
             data_dir, counts["train"], counts["test"], counts.get("Public", 0), counts.get("Private", 0))
    return counts


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"fname": str, "label": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path} cannot be read ({type(error).__name__}). Restore it from the release's "
                        f"{PREFIX}.meta.zip.") from None
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise DataError(f"{path} has no {', '.join(absent)} column: it is not the release's {path.name}. Restore "
                        f"it from {PREFIX}.meta.zip.")
    return table
