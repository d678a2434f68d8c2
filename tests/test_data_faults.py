"""Faults in what the user brings, injected for real: damaged and half-unpacked archives, FIFOs where
files belong, rows pandas cannot split, misspelt labels, reordered tables. Each case once failed."""
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_module, write_multilabel_dataset

from src import data
from src.base.errors import DataError
from src.dataset import archives
from src.dataset.tables import Dataset


def stored_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return path


def flip_byte_of(archive, member: str):
    """Flip one byte inside a stored member's data, as a damaged download would."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    blob = bytearray(archive.read_bytes())
    name_len, extra_len = np.frombuffer(bytes(blob[info.header_offset + 26:info.header_offset + 30]), "<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    blob[start + info.file_size // 2] ^= 0xFF
    archive.write_bytes(bytes(blob))


def test_a_damaged_member_is_never_kept_and_a_good_archive_replaces_it(tmp_path):
    good = os.urandom(50_000)
    archive = stored_zip(tmp_path / "audio_train.zip", {"a.wav": good, "b.wav": b"b" * 1000})
    flip_byte_of(archive, "a.wav")
    with pytest.raises(DataError, match=r"member a.wav is damaged .* nothing of it was kept"):
        archives.unpack_all(tmp_path)
    assert not (tmp_path / "audio_train" / "a.wav").exists()
    assert not list((tmp_path / "audio_train").glob(".unpacking.*"))
    stored_zip(archive, {"a.wav": good, "b.wav": b"b" * 1000})      # downloaded again, whole
    archives.unpack_all(tmp_path)
    assert (tmp_path / "audio_train" / "a.wav").read_bytes() == good


def test_a_file_left_by_an_older_damaged_unpack_is_checked_not_trusted(tmp_path):
    """A clip on disk with the member's name but other bytes (an in-place extraction that failed) is
    replaced: existing files are kept only when their size and CRC-32 are the member's."""
    good = os.urandom(20_000)
    (tmp_path / "audio_train").mkdir()
    bad = bytearray(good)
    bad[100] ^= 1
    (tmp_path / "audio_train" / "a.wav").write_bytes(bytes(bad))
    stored_zip(tmp_path / "audio_train.zip", {"a.wav": good})
    archives.unpack_all(tmp_path)
    assert (tmp_path / "audio_train" / "a.wav").read_bytes() == good


def test_an_unpack_killed_mid_member_leaves_no_clip_and_the_rerun_completes(tmp_path):
    big = bytes(300 * 2**20)   # 300 MB of zeros: compresses to little, takes a while to write
    with zipfile.ZipFile(tmp_path / "audio_test.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.wav", big)
    code = f"from src.dataset import archives; archives.unpack_all({str(tmp_path)!r})"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    folder = tmp_path / "audio_test"
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.stat().st_size > 2**20 for p in folder.glob(".unpacking.*")):
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (folder / "big.wav").exists(), "a half-written member is in place"
    archives.unpack_all(tmp_path)
    assert (folder / "big.wav").stat().st_size == len(big)
    assert not list(folder.glob(".unpacking.*"))


def test_a_finished_unpack_is_not_redone(tmp_path, monkeypatch):
    stored_zip(tmp_path / "audio_train.zip", {"a.wav": b"x" * 100})
    archives.unpack_all(tmp_path)
    monkeypatch.setattr(archives, "_extract", lambda *a: pytest.fail("unpacked twice"))
    archives.unpack_all(tmp_path)   # the manifest says whole and the member is there at its size


def test_a_member_escaping_the_folder_is_refused(tmp_path):
    stored_zip(tmp_path / "evil.zip", {"../outside.wav": b"x"})
    with pytest.raises(DataError, match="outside the folder"):
        archives.unpack_all(tmp_path)
    assert not (tmp_path.parent / "outside.wav").exists()


def test_fifos_where_files_belong_do_not_hang_src_data(clean_dataset):
    os.mkfifo(clean_dataset / "audio_train" / "pipe.wav")
    os.mkfifo(clean_dataset / "extra.zip")
    train = pd.read_csv(clean_dataset / "train.csv")
    pd.concat([train, pd.DataFrame([{"fname": "pipe.wav", "label": "Tone", "manually_verified": 1}])]).to_csv(
        clean_dataset / "train.csv", index=False)
    done = run_module("src.data", "--data-dir", str(clean_dataset), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pipe.wav: a FIFO, not an audio file" in done.stdout
    assert "extra.zip" in done.stderr and "a FIFO" in done.stderr


@pytest.mark.parametrize("command", [["src.data"], ["src.train", "--model", "1d", "--prepare"]])
def test_an_unquoted_label_list_is_one_paragraph_naming_the_row(clean_dataset, command):
    with open(clean_dataset / "train.csv", "a") as table:
        table.write("x.wav,Bark,Cello,0\n")
    done = run_module(*command, "--data-dir", str(clean_dataset), timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "train.csv, row 20: 4 fields where the header has 3: 'x.wav,Bark,Cello,0'" in done.stderr
    assert "must be quoted" in done.stderr


def test_a_misspelt_label_is_listed_and_a_missing_submission_column_refused(tmp_path):
    data_dir = write_multilabel_dataset(tmp_path / "data", n_train=60)
    train = pd.read_csv(data_dir / "train.csv")
    train.loc[5, "labels"] = "Clicks,Tnoe"
    train.to_csv(data_dir / "train.csv", index=False)
    done = run_module("src.data", "--data-dir", str(data_dir), timeout=120)
    # The misspelling is a label of its own, so sample_submission.csv lacks its column: refused, named.
    assert done.returncode == 2
    assert "training label 'Tnoe' has no column" in done.stderr
    sample = pd.read_csv(data_dir / "sample_submission.csv")
    sample.assign(Tnoe=0.0).to_csv(data_dir / "sample_submission.csv", index=False)
    done = run_module("src.data", "--data-dir", str(data_dir), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'Tnoe': row(s) 7 (did you mean 'Tone'?)" in done.stdout
    sample.drop(columns="Noise").to_csv(data_dir / "sample_submission.csv", index=False)
    with pytest.raises(DataError, match="training label 'Noise' has no column"):
        Dataset.load(data_dir)   # what blend, inspect and train read first


def test_reordered_rows_and_label_lists_are_the_same_data(tmp_path):
    data_dir = write_multilabel_dataset(tmp_path / "data", n_train=30)
    before = Dataset.load(data_dir)
    folds, prints = before.folds(n_folds=3).set_index("fname").fold, before.fingerprints(n_folds=3)
    train = pd.read_csv(data_dir / "train.csv").sample(frac=1, random_state=3)
    train["labels"] = train.labels.map(lambda text: ",".join(reversed(text.split(","))))
    assert (train.labels.str.contains(",")).any()
    train.to_csv(data_dir / "train.csv", index=False)
    after = Dataset.load(data_dir)
    assert after.fingerprints(n_folds=3) == prints
    again = after.folds(n_folds=3)
    assert list(again.fname) == list(after.train.fname)            # read back in train.csv's order
    assert (again.set_index("fname").fold == folds[again.fname]).all()


def test_src_data_lists_rows_with_rare_labels_as_likely_typos(clean_dataset):
    train = pd.read_csv(clean_dataset / "train.csv")
    folder = clean_dataset / "audio_train"
    copies = []
    for i in range(3):   # enough rows for one misspelling to stand out against the common labels
        copies.append(train.assign(fname=train.fname.str.replace(".wav", f"_{i}.wav", regex=False)))
        for fname in train.fname:
            (folder / fname.replace(".wav", f"_{i}.wav")).write_bytes((folder / fname).read_bytes())
    train = pd.concat([train, *copies], ignore_index=True)
    train.loc[0, "label"] = "Tonne"
    train.to_csv(clean_dataset / "train.csv", index=False)
    summary = data.check_layout(clean_dataset)
    assert summary["typos"] == [("Tonne", [2], "Tone")]
