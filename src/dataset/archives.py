"""Archives as Kaggle and Zenodo serve them, unpacked so that a damaged or half-written member is never
taken for a clip.

`kaggle competitions download X` brings one X.zip holding the tables and inner archives (2018:
audio_train.zip, audio_test.zip; 2019: train_curated.zip, train_noisy.zip, test.zip). An inner archive's
entries may carry their folder (audio_train/00044347.wav) or none (66b82f03.wav at its root): an archive
named for a folder of the layout is unpacked into that folder either way; any other archive (the
outer one, Zenodo's FSDKaggle2018.*.zip) where it lies.

Each member is written under a temporary name, its CRC-32 checked while it streams (zipfile raises at
the end of a damaged member), and renamed into place only then. A file already in place is kept when
its size and CRC-32 equal the member's, else written again. When an archive has been unpacked whole, a
manifest beside it (.<archive>.unpacked.json: the archive's size and modification time) lets the next
run skip it after a size check of each member, without reading the archive again.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from ..base.errors import DataError
from ..base.files import WriteError, atomic_write_json, irregular

log = logging.getLogger(__name__)

LAYOUT_FOLDERS = ("audio_train", "audio_test", "train_curated", "train_noisy", "test")
"""Folders of the 2018 and 2019 layouts: an archive with one of these names is unpacked into it."""

TMP_PREFIX = ".unpacking."


def unpack_all(folder: Path, folders: tuple[str, ...] = LAYOUT_FOLDERS) -> list[Path]:
    """Unpack every .zip in `folder`, and the archives found inside them, until none is left new.
    Returns the archives unpacked (or found unpacked already). What is not a regular file (a FIFO
    named x.zip would block a reader forever) is skipped with a note."""
    folder = Path(folder)
    done: list[Path] = []
    while True:
        pending = [z for z in sorted(folder.glob("*.zip")) if z not in done]
        if not pending:
            return done
        for archive in pending:
            done.append(archive)
            kind = irregular(archive)
            if kind:
                log.warning("skipped %s: it is %s, not an archive", archive, kind)
                continue
            unpack(archive, folder, folders)


def unpack(archive: Path, root: Path, folders: tuple[str, ...] = LAYOUT_FOLDERS) -> Path:
    """Unpack one archive under `root` (into root/<name> when the archive is named for a layout folder
    and its entries do not already start with that folder); returns where its members went."""
    archive, root = Path(archive), Path(root)
    manifest = root / f".{archive.name}.unpacked.json"
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX")]
            target = _target(archive, root, members, folders)
            for member in members:
                _check_name(archive, member.filename)
            stat = archive.stat()
            stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "target": str(target)}
            if _still_whole(manifest, stamp, target, members):
                log.info("%s: unpacked already (%s)", archive.name, manifest.name)
                return target
            _clean_temporaries(target, members)
            total = sum(m.file_size for m in members)
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"unpacking {archive.name}",
                      disable=None) as bar:
                for member in members:
                    _extract(zf, archive, member, target / member.filename)
                    bar.update(member.file_size)
    except zipfile.BadZipFile as error:
        raise DataError(f"{archive} is not a whole zip archive ({error}): an interrupted or damaged download. "
                        f"Delete it and download it again.") from None
    os.sync()  # the members' bytes on disk before the manifest says they are whole
    atomic_write_json(manifest, stamp)
    return target


def _target(archive: Path, root: Path, members: list[zipfile.ZipInfo], folders: tuple[str, ...]) -> Path:
    name = archive.stem
    if name in folders and not all(m.filename.startswith(f"{name}/") for m in members):
        return root / name
    return root


def _check_name(archive: Path, name: str) -> None:
    """No member may land outside the folder it is unpacked into."""
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name:
        raise DataError(f"{archive}: member {name!r} would be written outside the folder it is unpacked into; "
                        f"this is not an archive of the dataset. Nothing more was unpacked from it.")


def _still_whole(manifest: Path, stamp: dict, target: Path, members: list[zipfile.ZipInfo]) -> bool:
    """The manifest of a finished unpack of this very archive, and every member in place at its size."""
    try:
        if json.loads(manifest.read_text()) != stamp:
            return False
    except (OSError, ValueError):
        return False
    for member in members:
        path = target / member.filename
        try:
            if path.stat().st_size != member.file_size:
                return False
        except OSError:
            return False
    return True


def _clean_temporaries(target: Path, members: list[zipfile.ZipInfo]) -> None:
    """Temporaries of a killed unpack, in the folders this archive writes."""
    for folder in {(target / m.filename).parent for m in members}:
        if folder.is_dir():
            for leftover in folder.glob(f"{TMP_PREFIX}*"):
                leftover.unlink(missing_ok=True)


def _crc32(path: Path, chunk: int = 1 << 20) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def _extract(zf: zipfile.ZipFile, archive: Path, member: zipfile.ZipInfo, dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and irregular(dest)):
        raise DataError(f"{dest} is {'a link' if dest.is_symlink() else irregular(dest)}, where {archive.name} "
                        f"has the file {member.filename}: move it away and run the same command again.")
    if dest.exists() and dest.stat().st_size == member.file_size and _crc32(dest) == member.CRC:
        return  # whole already (an earlier unpack killed later on)
    tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as source, open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        tmp.replace(dest)
    except zipfile.BadZipFile as error:
        tmp.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)  # never leave an older copy of a member the archive says is different
        raise DataError(f"{archive}: member {member.filename} is damaged ({error}); nothing of it was kept. "
                        f"Download {archive.name} again and rerun the same command.") from None
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteError(dest, error, needed=member.file_size) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
