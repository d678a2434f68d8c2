"""The run folder as a store, under faults: two writers of one fold or run, kills inside a save, a changed
train.csv, folds from another assignment, a full disk, FIFOs, a killed export, a crafted checkpoint, a
cache left with orphaned rows. Real processes, real files, real signals."""
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import ROOT, TINY, command_env, crafted_checkpoint, run_folds, tiny, write_dataset

from src import blend, predict, train
from src.base.config import PRESETS
from src.base.files import Lock, Locked, WriteError, atomic_write
from src.base.layout import Paths
from src.dataset.store import PackedStore
from src.training.fold_files import fold_files
from src.training.resume import ResumeState


def command(*args, env=None, limit_bytes=None, **popen):
    """A real process of this checkout; with limit_bytes, files it writes cannot grow past that size (the
    disk is full for it: writes fail with EFBIG rather than killing it)."""
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=limited if limit_bytes else None,
                            start_new_session=True, env=command_env(env), **popen)


def finish(process, timeout=600):
    """Exit status, stdout and stderr; a process killed by a signal takes its own children with it (the
    decoding workers of the cache would otherwise hold its pipes open until they time out)."""
    code = process.wait(timeout=timeout)
    if code < 0:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out, err = process.communicate(timeout=timeout)
    return code, out, err


def fold_command(data, out, *extra, fold=0):
    return ["-m", "src.train", "--model", "1d", "--fold", str(fold), *TINY, "--data-dir", data, "--out-dir", out,
            *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("faults") / "data", per_class=5, n_test=3, bad_inputs=False)


# --- one writer per fold, and per run ------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_trainer_of_a_fold_stops_at_once_naming_the_first(data, tmp_path):
    first = command(*fold_command(data, tmp_path, "--epochs", "6"))
    lock = tmp_path / "predictions" / "1d" / "fold0" / "train.lock"
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)            # held mid-fold, however fast the tiny fold trains
    try:
        second = finish(command(*fold_command(data, tmp_path)))
    finally:
        first.send_signal(signal.SIGCONT)
    assert second[0] == 2 and f"pid {first.pid}" in second[2] and "Traceback" not in second[2], second[2]
    assert finish(first)[0] == 0                                   # the first run is untouched, and finishes
    result = json.loads((lock.parent / "result.json").read_text())
    assert result["epochs_run"] == 6 and not lock.exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "train.lock"
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "what": "a killed trainer"}))
    with Lock(path, "this test") as lock:
        assert f"pid {dead.pid}, which is gone" in lock.note
        with pytest.raises(Locked, match=f"this test holds .* \\(pid {os.getpid()}"):
            Lock(path, "another", pid=os.getpid() + 1).acquire()
    assert not path.exists()


@pytest.mark.slow
def test_a_second_run_folds_on_one_output_folder_stops(data, tmp_path):
    model_dir = tmp_path / "predictions" / "1d"
    Lock(model_dir / "run.lock", "./run_folds.sh 1d (the first terminal)").acquire()   # held by this live process
    done = run_folds("1d", "--", *TINY, "--data-dir", data, "--out-dir", tmp_path, timeout=600)
    assert done.returncode == 2 and "(the first terminal) holds" in done.stderr, done.stdout + done.stderr
    assert not list(model_dir.glob("fold*"))                      # no fold was started


# --- every write whole: a kill inside the resume save --------------------------------------------------

RESUMED = ["--epochs", "3", "--resume-every", "0"]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    whole = finish(command(*fold_command(data, out, *RESUMED)))
    assert whole[0] == 0, whole[2]
    return out / "predictions" / "1d" / "fold0"


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["written", "synced", "renamed"])
def test_a_kill_inside_the_resume_save_resumes_to_the_uninterrupted_result(data, uninterrupted, tmp_path, stage):
    options = RESUMED
    # The second save (after epoch 1) is cut short at this point of the write by SIGKILL.
    killed = finish(command(*fold_command(data, tmp_path / "killed", *options),
                            env={"SRC_CRASH_AT": f"resume.npz:{stage}:2"}))
    assert killed[0] == -signal.SIGKILL
    resumed = finish(command(*fold_command(data, tmp_path / "killed", *options)))
    assert resumed[0] == 0 and "continuing after epoch" in resumed[2], resumed[2]
    folders = {"whole": uninterrupted, "killed": tmp_path / "killed" / "predictions" / "1d" / "fold0"}
    for name in ("oof.csv", "test.csv", "log.csv", "config.json"):
        assert (folders["whole"] / name).read_bytes() == (folders["killed"] / name).read_bytes(), name
    assert sorted(p.name for p in folders["killed"].iterdir()) == sorted(p.name for p in folders["whole"].iterdir())


# --- nothing stale trusted ---------------------------------------------------------------------------

@pytest.mark.slow
def test_changed_labels_stop_skipping_resuming_and_blending(data, tmp_path, capsys):
    work = tmp_path / "data"
    work.mkdir()
    for item in data.iterdir():                                   # a copy whose train.csv can change
        (work / item.name).symlink_to(item) if item.name != "train.csv" else (work / item.name).write_bytes(
            item.read_bytes())
    where = ["--data-dir", str(work), "--out-dir", str(tmp_path / "out")]
    for fold in ("0", "1"):
        assert train.main(["--model", "1d", "--fold", fold, *TINY, *where]) == 0
    assert blend.main(["1d", *where]) == 0
    table = pd.read_csv(work / "train.csv")
    table.loc[table.index[table.label == "Noise"][:3], "label"] = "Clicks"   # three labels corrected since
    table.to_csv(work / "train.csv", index=False)
    capsys.readouterr()
    assert train.main(["--model", "1d", "--fold", "0", *TINY, *where]) == 2
    assert "trained on other rows" in capsys.readouterr().err      # not skipped as finished
    assert blend.main(["1d", *where]) == 2
    assert "--allow-mismatch" in capsys.readouterr().err           # not scored against the new labels
    assert blend.main(["1d", *where, "--allow-mismatch"]) == 0
    # A killed attempt's state from before the change is not resumed.
    files = fold_files(Paths(work, tmp_path / "out"), "1d", 0)
    config = files.read_config()
    ResumeState(0, False, {"best": 1.0, "wait": 0, "best_epoch": 0}, [1.0], [], None,
                {"rows": "then", "folds": "then"}).save(files.resume)
    assert files.start(config, {"rows": "now", "folds": "now"}) is None and not files.resume.exists()


@pytest.mark.slow
def test_models_trained_on_other_folds_are_not_blended(data, tmp_path, capsys):
    work = tmp_path / "data"
    work.mkdir()
    for item in data.iterdir():
        if item.name != "folds.csv":
            (work / item.name).symlink_to(item)
    out = tmp_path / "out"
    three = tiny(n_folds=3)
    for fold in range(3):
        assert train.main(["--model", "1d", "--name", "a3", "--fold", str(fold), *three, "--data-dir", str(work),
                           "--out-dir", str(out)]) == 0
    (work / "folds.csv").rename(tmp_path / "folds3.csv")
    for fold in range(2):
        assert train.main(["--model", "1d", "--name", "a2", "--fold", str(fold), *TINY, "--data-dir", str(work),
                           "--out-dir", str(out)]) == 0
    capsys.readouterr()
    assert blend.main(["a3", "a2", "--data-dir", str(work), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a3" in err and "other folds" in err and not (out / "submissions" / "a3.csv").exists()
    predict_code = predict.main([str(work / "audio_test"), "--models", "a3", "a2", "--out-dir", str(out)])
    assert predict_code == 2 and "different train rows or folds" in capsys.readouterr().err


def test_an_empty_config_beside_a_resume_state_starts_over(tmp_path):
    files = fold_files(Paths(out_dir=tmp_path), "1d", 0)
    files.start(PRESETS["1d"])
    ResumeState(0, False, {"best": 1.0, "wait": 0, "best_epoch": 0}, [1.0], [], None, {}).save(files.resume)
    files.config.write_text("")                                    # what a kill mid-write used to leave
    assert files.start(PRESETS["1d"]) is None and json.loads(files.config.read_text())["name"] == "1d"


def test_a_damaged_cache_parameter_file_is_named(data, tmp_path, capsys):
    store = PackedStore(tmp_path / "cache" / "x", "int16", 1, {"a": 1})
    (store.root / "params.json").write_text("")
    with pytest.raises(Exception, match="params.json is damaged") as caught:
        PackedStore(store.root, "int16", 1, {"a": 1})
    assert type(caught.value).__name__ == "DataError"
    (store.root / "params.json").write_text(json.dumps({"a": 2}))
    with pytest.raises(Exception, match="belongs to other settings"):
        PackedStore(store.root, "int16", 1, {"a": 1})


# --- full disks and unwritable paths ------------------------------------------------------------------

def leftovers(folder):
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.mark.slow
def test_a_full_disk_is_one_paragraph_naming_the_file(tmp_path):
    # The audio cache: its data file cannot grow past 100 kB.
    copy = write_dataset(tmp_path / "data", per_class=5, n_test=12, bad_inputs=False)
    code, _, err = finish(command("-m", "src.audio_cache", "--data-dir", copy, "--rates", "16000",
                                  limit_bytes=100_000))
    assert code == 2 and "data.bin" in err and "reclaimed by the next build" in err and "Traceback" not in err, err
    # A fold: caches made beforehand; its resume state (about 4 MB for 1d) cannot be written.
    assert finish(command("-m", "src.train", "--model", "1d", "--prepare", *TINY, "--data-dir", copy))[0] == 0
    code, _, err = finish(command(*fold_command(copy, tmp_path / "out", "--resume-every", "0"),
                                  limit_bytes=1_000_000))
    assert code == 2 and "resume.npz" in err and "no epoch of this attempt was saved yet" in err, err
    assert "Traceback" not in err and not leftovers(tmp_path / "out")
    # The blend: a submission of about 450 bytes does not fit in 300 (its lock file, 150, does).
    for fold in (0, 1):
        assert finish(command(*fold_command(copy, tmp_path / "out", fold=fold)))[0] == 0
    code, _, err = finish(command("-m", "src.blend", "1d", "--data-dir", copy, "--out-dir", tmp_path / "out",
                                  limit_bytes=300))
    assert code == 2 and "1d.csv" in err and "Traceback" not in err, err
    assert not leftovers(tmp_path / "out" / "submissions")


def test_predict_checks_its_outputs_before_tagging(tmp_path, capsys):
    assert predict.main([str(tmp_path), "--csv", str(tmp_path / "missing" / "t.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert predict.main([str(tmp_path), "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_a_killed_tagging_keeps_what_was_tagged_and_a_rerun_skips_it(tmp_path, monkeypatch, capsys):
    from test_predict import make_models

    make_models(tmp_path / "out")
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav", "c.wav", "odd\nname.wav"):
        sf.write(audio / name, 0.1 * rng.standard_normal(8000).astype(np.float32), 16000)
    os.mkfifo(audio / "pipe.wav")                                  # would block a reader forever
    real_tag, calls = predict.tag, []

    def tag_then_die(path, members, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt                                # the kill, after two files were tagged
        calls.append(path.name)
        return real_tag(path, members, *args)
    monkeypatch.setattr(predict, "tag", tag_then_die)
    options = [str(audio), "--csv", str(tmp_path / "t.csv"), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(KeyboardInterrupt):
        predict.main(options)
    assert not (tmp_path / "t.csv").exists() and len((tmp_path / "t.csv.partial").read_text().splitlines()) == 2
    calls.clear()
    monkeypatch.setattr(predict, "tag", lambda path, members, *a: calls.append(path.name) or real_tag(path, members))
    assert predict.main(options) == 0
    out, err = capsys.readouterr()
    assert "2 file(s) already tagged" in err and len(calls) == 2   # only the other two were tagged again
    assert "pipe.wav: a FIFO, not an audio file" in err
    assert "odd\\nname.wav: " in out                              # one line per file, the newline escaped
    assert len(pd.read_csv(tmp_path / "t.csv")) == 4 and not (tmp_path / "t.csv.partial").exists()


@pytest.mark.readme("src.audio_cache --rates")
def test_a_fifo_in_the_audio_folder_is_skipped_with_a_note(tmp_path):
    data = write_dataset(tmp_path / "data", per_class=2, n_test=1, bad_inputs=False)
    os.mkfifo(data / "audio_train" / "pipe.wav")
    table = pd.read_csv(data / "train.csv")
    pd.concat([table, pd.DataFrame([{"fname": "pipe.wav", "label": "Tone", "manually_verified": 1}])]) \
        .to_csv(data / "train.csv", index=False)
    code, _, err = finish(command("-m", "src.audio_cache", "--data-dir", data, "--rates", "16000"), timeout=300)
    assert code == 0, err
    report = pd.read_csv(next((data / "cache").glob("audio-16000hz-*/train/report.csv")))
    assert report.set_index("fname").note["pipe.wav"].startswith("unreadable: ValueError: a FIFO")


# --- exports and caches --------------------------------------------------------------------------------

def test_an_export_killed_midway_leaves_the_previous_one(tmp_path):
    pytest.importorskip("tensorflow", reason="a SavedModel needs TensorFlow")
    from test_predict import make_models

    make_models(tmp_path / "out")
    out = tmp_path / "tagger"
    assert finish(command("-m", "src.export", "1d", "--out-dir", tmp_path / "out", "--out", out))[0] == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    killed = finish(command("-m", "src.export", "2d", "--out-dir", tmp_path / "out", "--out", out,
                            env={"SRC_CRASH_AT": "tagger:built:1"}))
    assert killed[0] == -signal.SIGKILL
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert finish(command("-m", "src.export", "2d", "--out-dir", tmp_path / "out", "--out", out))[0] == 0
    assert json.loads((out / "config.json").read_text())["name"] == "2d"


def test_a_killed_cache_build_is_compacted_by_the_next(tmp_path):
    data = write_dataset(tmp_path / "data", per_class=3, n_test=1, bad_inputs=False)
    build = ["-m", "src.audio_cache", "--data-dir", data, "--rates", "16000"]
    killed = finish(command(*build, env={"SRC_CRASH_AT": "index.csv:written:1"}))
    assert killed[0] == -signal.SIGKILL                             # every clip written, none indexed
    root = next((data / "cache").glob("audio-16000hz-*/train"))
    assert (root / "data.bin").stat().st_size > 0 and not (root / "index.csv").exists()
    assert finish(command(*build))[0] == 0
    index = pd.read_csv(root / "index.csv")
    # No orphaned rows left: only the few samples each clip's slot was sized above its length.
    assert 2 * index.length.sum() <= (root / "data.bin").stat().st_size <= 2 * (index.length.sum() + 4 * len(index))
    assert not leftovers(data / "cache")
    store = PackedStore(root, "int16", 1, json.loads((root / "params.json").read_text()))
    assert all(len(store.read(f)) == n for f, n in zip(index.fname, index.length))


def test_a_crafted_checkpoint_cannot_read_outside_its_storage(tmp_path, monkeypatch):
    from src.models.torch_checkpoint import read_checkpoint

    path = tmp_path / "crafted.pth"
    state = read_checkpoint(crafted_checkpoint(path, monkeypatch, (1, (3,), (1,))))   # a fair view: elements 1-3
    assert state["w0"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(pickle.UnpicklingError, match="reaches element 1000001 of a storage of 4"):
        read_checkpoint(crafted_checkpoint(path, monkeypatch, (1, (2,), (1_000_000,))))   # a stride past the end
    with pytest.raises(pickle.UnpicklingError, match="not a tensor this reader takes"):
        read_checkpoint(crafted_checkpoint(path, monkeypatch, (0, (2,), (-1,))))


def test_atomic_writes_leave_no_temporary_when_they_fail(tmp_path):
    def full_disk(handle):
        handle.write(b"half a table")
        raise OSError(28, "No space left on device")
    with pytest.raises(WriteError, match="could not write .*file.csv: No space left on device"):
        atomic_write(tmp_path / "file.csv", full_disk)
    assert list(tmp_path.iterdir()) == []
