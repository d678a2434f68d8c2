import dataclasses
import errno
import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import LABELS, fake_fold, run_module

from src import predict
from src.base.config import PRESETS
from src.base.layout import Paths
from src.models import build_model
from src.training.inference import window_starts, windows


def test_windows_cover_the_whole_clip():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 2) == [0, 2, 4, 6, 7]  # the last window ends at the clip's end
    assert window_starts(3, 4, 2) == [0]
    batch, starts = windows(np.arange(3)[:, None], 4, 2, np.array([-1]))
    assert batch.shape == (1, 4, 1) and batch[0, :, 0].tolist() == [0, 1, 2, -1]  # centred: 0 before, 1 after


def make_models(out_dir, folds=2):
    """Untrained but real fold models of both presets, saved as a run of run_folds.sh saves them."""
    for preset in ("1d", "2d"):
        config = dataclasses.replace(PRESETS[preset], crop_seconds=0.5, n_folds=folds)
        for fold in range(folds):
            stats = {"mean": np.zeros(40, np.float32), "variance": np.ones(40, np.float32)} \
                if preset == "2d" else {}
            fake_fold(Paths(out_dir=out_dir), preset, fold, config=config,
                      model=build_model(config, len(LABELS), **stats), test=([], np.zeros((0, len(LABELS)))))


@pytest.mark.readme("src.predict --csv --json")
@pytest.mark.readme("src.predict --per-window")
def test_tags_files_and_folders_per_window_and_skips_unreadable(tmp_path, capsys):
    make_models(tmp_path / "out")
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    long = 0.1 * rng.standard_normal((22050 * 6, 2)).astype(np.float32)  # 6 s, stereo, 22.05 kHz
    sf.write(audio / "long.wav", long, 22050)
    sf.write(audio / "short.flac", 0.1 * rng.standard_normal(4000).astype(np.float32), 44100)
    (audio / "broken.wav").write_bytes(b"RIFF....WAVEnothing")
    code = predict.main([str(audio), "--per-window", "--csv", str(tmp_path / "t.csv"),
                         "--json", str(tmp_path / "t.json"), "--out-dir", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["file"].rsplit("/", 1)[1] for r in result["files"]] == ["long.wav", "short.flac"]
    assert result["skipped"][0]["file"].endswith("broken.wav")
    assert "skipped" in capsys.readouterr().err

    long_tags = result["files"][0]
    assert long_tags["seconds"] == 6.0
    assert len(long_tags["tags"]) == 3 and {t["label"] for t in long_tags["tags"]} <= set(LABELS)
    spans = [(w["start"], w["end"]) for w in long_tags["windows"]]
    assert spans[0][0] == 0 and spans[-1][1] == 6.0
    assert all(b[0] <= a[1] for a, b in zip(spans, spans[1:]))  # no gap between windows
    assert len(spans) == 23  # 0.5 s windows every 0.25 s over 6 s
    table = pd.read_csv(tmp_path / "t.csv")
    assert table.columns.tolist() == ["file", "label1", "label2", "label3", "p1", "p2", "p3"]
    assert len(table) == 2 and (table.p1 >= table.p2).all()


def clips(folder, n, seconds=1.0, rate=16000):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        sf.write(folder / f"c{i}.wav", 0.1 * rng.standard_normal(int(seconds * rate)).astype(np.float32), rate)
    return folder


def test_a_rerun_with_other_models_or_options_does_not_reuse_the_journal(tmp_path, monkeypatch, capsys):
    make_models(tmp_path / "out")
    audio = clips(tmp_path / "audio", 4)
    real_tag, calls = predict.tag, []

    def tag_then_die(path, members, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt                           # killed after two files, tagged with 1d
        calls.append(path.name)
        return real_tag(path, members, *args)
    monkeypatch.setattr(predict, "tag", tag_then_die)
    out = ["--out-dir", str(tmp_path / "out")]
    with pytest.raises(KeyboardInterrupt):
        predict.main([str(audio), "--models", "1d", "--csv", str(tmp_path / "t.csv"), *out])
    monkeypatch.setattr(predict, "tag", lambda path, members, *a: calls.append(path.name) or real_tag(path, members))
    capsys.readouterr()

    # Other models and options, same output: every file is tagged again, by 2d, with two labels.
    calls.clear()
    other = ["--models", "2d", "--top-k", "2", *out]
    assert predict.main([str(audio), *other, "--csv", str(tmp_path / "t.csv")]) == 0
    assert len(calls) == 4 and "another tagging" in capsys.readouterr().err
    assert predict.main([str(audio), *other, "--csv", str(tmp_path / "fresh.csv")]) == 0
    assert (tmp_path / "t.csv").read_text() == (tmp_path / "fresh.csv").read_text()

    # The same command killed again and rerun continues; with --per-window added, or with a fold retrained
    # since (its result.json rewritten), it tags every file again.
    def counting(path, members, *args):
        calls.append(path.name)
        return real_tag(path, members, *args)
    for change, continues in (([], True), (["--per-window"], False), ("retrained", False)):
        calls.clear()
        monkeypatch.setattr(predict, "tag", tag_then_die)
        with pytest.raises(KeyboardInterrupt):
            predict.main([str(audio), *other, "--csv", str(tmp_path / "t.csv")])
        monkeypatch.setattr(predict, "tag", counting)
        calls.clear()
        if change == "retrained":
            fake_fold(Paths(out_dir=tmp_path / "out"), "2d", 1, {"minutes": 1.0})   # its own config kept
            change = []
        assert predict.main([str(audio), *other, *change, "--csv", str(tmp_path / "t.csv")]) == 0
        err = capsys.readouterr().err
        assert len(calls) == (2 if continues else 4) and ("2 file(s) already tagged" in err) == continues, change


def test_csv_and_json_into_one_file_are_refused(tmp_path, capsys):
    same = str(tmp_path / "tags.out")
    assert predict.main([str(tmp_path), "--csv", same, "--json", same]) == 2
    assert "--csv and --json both name" in capsys.readouterr().err


def stale_setup(tmp_path):
    """Fold models of 1d and 2d beside a prepared dataset (folds.csv written) whose rows they were not
    trained on: their result.json records other fingerprints."""
    from conftest import write_dataset

    from src.dataset.tables import Dataset

    make_models(tmp_path / "out")
    data = write_dataset(tmp_path / "data", per_class=2, n_test=1, bad_inputs=False)
    dataset = Dataset.load(data)
    dataset.folds(2)
    paths = Paths(data, tmp_path / "out")
    for preset in ("1d", "2d"):
        for fold in (0, 1):
            fake_fold(paths, preset, fold, {"fingerprints": {"rows": "0123456789abcdef",
                                                             "folds": dataset.fingerprints()["folds"]},
                                            "dataset_folds": [0, 1]})
    return paths, dataset


@pytest.mark.readme("src.predict")
def test_folds_stale_against_the_dataset_are_refused_unless_allowed(tmp_path, capsys):
    paths, dataset = stale_setup(tmp_path)
    clip = str(paths.data_dir / "audio_test" / dataset.test.fname[0])
    options = [clip, "--models", "1d", "--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]
    assert predict.main(options) == 2
    err = capsys.readouterr().err
    assert "trained on other rows than the dataset has now" in err and "--allow-mismatch" in err
    assert "run_folds.sh 1d 0 1 -- --crop-seconds 0.5 --n-folds 2 --force" in err   # the folds' own options
    assert predict.main([*options, "--allow-mismatch"]) == 0
    for fold in (0, 1):                                         # trained on these very rows: taken
        fake_fold(paths, "1d", fold, {"fingerprints": dataset.fingerprints(), "dataset_folds": [0, 1]})
    assert predict.main(options) == 0


def fill(folder, leave_pages):
    """Fill the file system of `folder`, then free `leave_pages` pages of 4 kB."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as error:
        assert error.errno == errno.ENOSPC
    os.ftruncate(fd, max(0, os.fstat(fd).st_size // 4096 - leave_pages) * 4096)
    os.close(fd)
    return filler


def test_a_full_disk_stops_the_tagging_in_one_paragraph_and_keeps_what_was_tagged(tmp_path, capsys):
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"no small disk to fill: mounting a 200 kB tmpfs failed ({mounted.stderr.strip()}); "
                    f"this case needs root (the file size limit case runs without)")
    try:
        make_models(tmp_path / "out")
        audio = clips(tmp_path / "audio", 6, seconds=3.0)
        filler = fill(disk, leave_pages=2)
        options = [str(audio), "--per-window", "--csv", str(disk / "t.csv"), "--out-dir", str(tmp_path / "out")]
        assert predict.main(options) == 2
        out, err = capsys.readouterr()
        assert "skipped" not in err and "Errno" not in err and "Traceback" not in err, err
        assert "t.csv.partial: No space left on device" in err and f"mounted at {disk}" in err, err
        assert "is full: make room there" in err and "run the same command again to tag only the others" in err
        journal = (disk / "t.csv.partial").read_text().splitlines()
        assert 1 <= len(journal) < 6 and all(json.loads(line)["record"] for line in journal)   # whole lines only
        filler.unlink()
        assert predict.main(options) == 0
        assert f"{len(journal)} file(s) already tagged" in capsys.readouterr().err
        assert len(pd.read_csv(disk / "t.csv")) == 6 and not (disk / "t.csv.partial").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_file_size_limit_is_named_with_its_size(tmp_path, capsys):
    import resource
    import signal

    make_models(tmp_path / "out")
    audio = clips(tmp_path / "audio", 5)
    options = [str(audio), "--csv", str(tmp_path / "t.csv"), "--out-dir", str(tmp_path / "out")]

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1200, 1200))
    done = run_module("src.predict", *options, preexec_fn=limited, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "skipped" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "File too large" in done.stderr and "file size limit" in done.stderr and "1200 bytes" in done.stderr
    assert "Make room" not in done.stderr
    journal = (tmp_path / "t.csv.partial").read_text().splitlines()
    assert 1 <= len(journal) < 5 and all(json.loads(line)["record"] for line in journal)
    assert predict.main(options) == 0                                  # no limit: it continues
    assert f"{len(journal)} file(s) already tagged" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "t.csv")) == 5


def test_outputs_that_cannot_be_written_keep_the_journal(tmp_path, monkeypatch, capsys):
    from src.base.files import WriteError

    make_models(tmp_path / "out")
    audio = clips(tmp_path / "audio", 2)

    def full(results, skipped, top_k, csv, *rest):
        raise WriteError(csv, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 5000)
    monkeypatch.setattr(predict, "write_outputs", full)
    options = [str(audio), "--csv", str(tmp_path / "t.csv"), "--out-dir", str(tmp_path / "out")]
    assert predict.main(options) == 2
    err = capsys.readouterr().err
    assert "it needed about 5.0 kB" in err and "Every file tagged is kept in" in err and "t.csv.partial" in err
    assert len((tmp_path / "t.csv.partial").read_text().splitlines()) == 2
