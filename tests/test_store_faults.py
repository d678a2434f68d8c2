"""The run folder as a store, under the faults tests/test_faults.py leaves out: many takers racing for one
lock, holders killed by SIGKILL, a damaged result.json, oof.csv or resume.npz, a finished fold asked to
train with other settings, a checkpoint crafted to allocate gigabytes, the leftovers of killed writers,
and the modes of files written through temporary names. Real processes, real files, real signals."""
import json
import logging
import os
import pickle
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, TINY, command_env, crafted_checkpoint, run_folds, write_dataset
from test_faults import command, finish, fold_command

from src import blend, inspect_oof, predict, train
from src.base.config import PRESETS
from src.base.files import Lock, Locked, atomic_folder, atomic_path, atomic_write, atomic_write_json
from src.base.layout import Paths
from src.training.fold_files import fold_files
from src.training.resume import ResumeState


def python(code: str, *args, **popen) -> subprocess.Popen:
    """A Python process of this checkout running `code` with `args`."""
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, **popen)


# --- one holder of a lock, whatever happens ------------------------------------------------------------

RACER = r"""
import os, sys, time
from src.base.files import Lock, Locked
path, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
out = os.open(log, os.O_WRONLY | os.O_APPEND)
print("ready", flush=True)
sys.stdin.readline()                                     # all start together
until, taken = time.time() + seconds, 0
while time.time() < until:
    try:
        lock = Lock(path, f"racer {os.getpid()}").acquire()
    except Locked:
        continue
    os.write(out, f"+{os.getpid()}\n".encode())          # O_APPEND: the lines are in the order written
    time.sleep(0.001)
    os.write(out, f"-{os.getpid()}\n".encode())
    lock.release()
    taken += 1
print(taken, flush=True)
"""


def test_racing_takers_never_hold_a_lock_together(tmp_path):
    path, log = tmp_path / "run.lock", tmp_path / "held.log"
    log.touch()
    for _round in range(2):
        racers = [python(RACER, path, log, 2.0, stdin=subprocess.PIPE) for _ in range(24)]
        for racer in racers:
            assert racer.stdout.readline().strip() == "ready"
        for racer in racers:
            racer.stdin.write("\n")
            racer.stdin.close()
        taken = [int(racer.stdout.readline()) for racer in racers]
        assert [racer.wait(timeout=60) for racer in racers] == [0] * 24
        assert sum(taken) > 24                           # they did contend
    holder, overlaps = None, 0
    for line in log.read_text().splitlines():
        if line[0] == "+":
            overlaps += holder is not None
            holder = line[1:]
        else:
            holder = None if holder == line[1:] else holder
    assert overlaps == 0 and not path.exists()


HOLDER = r"""
import sys, time
from src.base.files import Lock
Lock(sys.argv[1], "a holder about to be killed").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_holder_killed_by_sigkill_lets_go_of_its_lock(tmp_path):
    path = tmp_path / "train.lock"
    holder = python(HOLDER, path)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Locked, match=f"a holder about to be killed holds .* \\(pid {holder.pid} "):
        Lock(path, "a second taker").acquire()
    holder.kill()
    holder.wait()
    with Lock(path, "the next run") as lock:                       # at once: the kernel let go of it
        assert f"pid {holder.pid}, which is gone" in lock.note
    assert not path.exists()


def test_a_lock_file_naming_a_live_process_that_holds_nothing_is_taken(tmp_path):
    # What a SIGKILLed holder leaves when its PID has been given to another process since.
    path = tmp_path / "train.lock"
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getppid(), "what": "a killed trainer"}))
    with Lock(path, "the next run") as lock:
        assert f"pid {os.getppid()}" in lock.note and "no longer holds it" in lock.note


SHELL = '"$1" -m src.training.runs lock "$2" $$ "./run_folds.sh 1d" || exit 2; echo taken; read -r _'


def test_run_folds_lock_lasts_as_long_as_its_shell(tmp_path):
    """run_folds.sh takes its lock for its own PID through a short-lived Python process: the lock must
    outlive that process, and end with the shell, however the shell ends."""
    path = tmp_path / "run.lock"
    for ending in ("exit", "SIGKILL"):
        shell = subprocess.Popen(["bash", "-c", SHELL, "bash", sys.executable, str(path)], cwd=ROOT, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert shell.stdout.readline().strip() == "taken"          # the python process has exited
        with pytest.raises(Locked, match=f"./run_folds.sh 1d holds .* \\(pid {shell.pid} "):
            Lock(path, "a second run").acquire()
        if ending == "exit":
            shell.communicate("\n", timeout=10)
        else:
            shell.kill()
            shell.communicate(timeout=10)
        deadline = time.time() + 5
        while True:
            try:
                Lock(path, "the next run").acquire().release()
                break
            except Locked:
                assert time.time() < deadline, f"the lock outlived its shell ({ending})"
                time.sleep(0.05)


# --- damaged fold files: one paragraph, the file and the fix ---------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    data = write_dataset(root / "data", per_class=5, n_test=3, bad_inputs=False)
    for fold in ("0", "1"):
        assert train.main(["--model", "1d", "--fold", fold, *TINY, "--data-dir", str(data),
                           "--out-dir", str(root / "out")]) == 0
    return data, root / "out"


def copy_of(trained, tmp_path):
    """The dataset and a copy of the trained run folder, to damage."""
    data, out = trained
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return data, tmp_path / "out"


@pytest.mark.slow
@pytest.mark.readme("run_folds.sh --force")          # the retrain line a damaged fold's message gives
def test_a_truncated_result_json_is_named_with_the_command_that_retrains_it(trained, tmp_path, capsys):
    data, out = copy_of(trained, tmp_path)
    where = ["--data-dir", str(data), "--out-dir", str(out)]
    result = out / "predictions" / "1d" / "fold0" / "result.json"
    whole = result.read_bytes()
    result.write_bytes(whole[:40])                                 # cut short
    capsys.readouterr()
    for run in (lambda: blend.main(["1d", *where]), lambda: inspect_oof.main(["1d", *where]),
                lambda: predict.main([str(data / "audio_test"), "--models", "1d", *where])):
        assert run() == 2
        err = capsys.readouterr().err
        assert f"{result} is damaged" in err and "--force" in err and "Traceback" not in err, err
    # The command the message gives, with the dataset's folder, retrains that fold.
    retrain = shlex.split(re.search(r"`(\S*run_folds\.sh [^`]*)`", err).group(1)) + ["--data-dir", str(data)]
    run = subprocess.run(retrain, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=command_env({"CPU_JOBS": "1"}))
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(result.read_text())["fold"] == 0 and blend.main(["1d", *where]) == 0


@pytest.mark.slow
def test_a_non_numeric_cell_in_oof_csv_is_named_by_file_row_and_column(trained, tmp_path, capsys):
    data, out = copy_of(trained, tmp_path)
    oof = out / "predictions" / "1d" / "fold1" / "oof.csv"
    table = pd.read_csv(oof, dtype=str)
    table.loc[1, "Noise"] = "0.3x"                                 # an edit gone wrong
    table.to_csv(oof, index=False)
    capsys.readouterr()
    assert blend.main(["1d", "--data-dir", str(data), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{oof}, row 3" in err and "Noise" in err and "'0.3x'" in err and "--force" in err, err
    assert "Traceback" not in err


def test_a_truncated_resume_file_is_set_aside_and_the_fold_starts_over(tmp_path, caplog):
    files = fold_files(Paths(out_dir=tmp_path), "1d", 0)
    files.start(PRESETS["1d"])
    ResumeState(0, False, {"best": 1.0, "wait": 0, "best_epoch": 0}, [1.0], [np.ones(10_000, np.float32)], None,
                {}).save(files.resume)
    whole = files.resume.read_bytes()
    files.resume.write_bytes(whole[: len(whole) // 2])              # a disk that lost its tail
    with caplog.at_level(logging.WARNING):
        assert files.start(PRESETS["1d"]) is None
    damaged = list(files.folder.glob("resume.npz.damaged-*"))
    assert not files.resume.exists() and len(damaged) == 1 and damaged[0].read_bytes() == whole[: len(whole) // 2]
    assert str(damaged[0]) in caplog.text and "from scratch" in caplog.text
    assert files.start(PRESETS["1d"]) is None                       # the next start has nothing to trip on


# --- a finished fold is what it was trained as -----------------------------------------------------------

@pytest.mark.slow
def test_a_finished_fold_asked_for_other_settings_says_which_and_stops(trained, tmp_path, capsys, caplog):
    data, out = copy_of(trained, tmp_path)
    where = ["--data-dir", str(data), "--out-dir", str(out)]
    changed = ["--model", "1d", *TINY, "--epochs", "5", "--learning-rate", "0.01", *where]
    differs = ("epochs (1 then, 5 now)", "learning_rate (0.001 then, 0.01 now)")
    capsys.readouterr()
    for action in (["--fold", "0"], ["--prepare"]):
        assert train.main([*changed, *action]) == 2
        err = capsys.readouterr().err
        assert all(d in err for d in differs) and "--force" in err and "--name" in err, err
    # Where the user runs it: run_folds.sh stops before any fold starts.
    run = run_folds("1d", "--", *changed[2:], env={"CPU_JOBS": "1"}, timeout=600)
    assert run.returncode == 2 and all(d in run.stderr for d in differs), run.stdout + run.stderr
    assert not (out / "predictions" / "1d" / "logs").exists()      # no fold log: no fold process was started
    # The same settings still skip it; another name is another model.
    with caplog.at_level(logging.INFO):
        assert train.main(["--model", "1d", "--fold", "0", *TINY, *where]) == 0
    assert "skipping" in caplog.text
    assert train.main([*changed, "--name", "1d_fast", "--prepare"]) == 0


@pytest.mark.slow
def test_a_fold_killed_after_its_result_keeps_no_resume_state(trained, tmp_path):
    data, _ = trained
    out = tmp_path / "out"
    folder = out / "predictions" / "1d" / "fold0"
    options = fold_command(data, out, "--resume-every", "0")
    killed = finish(command(*options, env={"SRC_CRASH_AT": "result.json:renamed:1"}))
    assert killed[0] == -signal.SIGKILL and (folder / "result.json").exists()
    rerun = finish(command(*options))
    assert rerun[0] == 0 and "skipping" in rerun[2], rerun[2]
    assert not (folder / "resume.npz").exists()


# --- a crafted checkpoint ---------------------------------------------------------------------------------

READ = r"""
import importlib.util, pickle, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))       # 1 GB of address space
spec = importlib.util.spec_from_file_location("torch_checkpoint", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
try:
    module.read_checkpoint(sys.argv[2])
except pickle.UnpicklingError as error:
    print(error)
    sys.exit(3)
"""


def test_a_crafted_checkpoint_cannot_allocate_more_than_its_file_holds(tmp_path, monkeypatch):
    from src.models.torch_checkpoint import read_checkpoint

    # 20000 x 20000 floats over one float of storage (stride 0): 1.6 GB from a file of a few hundred bytes.
    path = crafted_checkpoint(tmp_path / "wide.pth", monkeypatch, (0, (20_000, 20_000), (0, 0)), storage=1)
    assert path.stat().st_size < 1000
    reader = python(READ, ROOT / "src" / "models" / "torch_checkpoint.py", path, stderr=subprocess.PIPE,
                    env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 3 and "400000000 elements" in out and str(path) in out, out + err
    # Views of one storage that together hold more than it: refused too; one view named twice is one.
    with pytest.raises(pickle.UnpicklingError, match="more than the checkpoint's storages hold"):
        read_checkpoint(crafted_checkpoint(tmp_path / "many.pth", monkeypatch, *[(k, (3,), (1,)) for k in (0, 1)]))
    state = read_checkpoint(crafted_checkpoint(tmp_path / "fair.pth", monkeypatch, (0, (2, 2), (2, 1))))
    assert state["w0"].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    # The network's shapes, when the reader is given them.
    assert read_checkpoint(tmp_path / "fair.pth", shapes={"w0": (2, 2)})["w0"].shape == (2, 2)
    with pytest.raises(pickle.UnpicklingError, match=r"w0 .*\(2, 2\).* expects \(4, 4\)"):
        read_checkpoint(tmp_path / "fair.pth", shapes={"w0": (4, 4)})


# --- leftovers and modes -----------------------------------------------------------------------------------

BUILDER = r"""
import sys
from pathlib import Path
from src.base.files import atomic_folder
with atomic_folder(Path(sys.argv[1])) as building:
    (building / "who").write_text(sys.argv[2])
    if sys.argv[2] == "paused":
        print("building", flush=True)
        sys.stdin.readline()
"""


def test_a_killed_folder_build_is_cleared_by_the_next_one_but_a_live_one_is_not(tmp_path):
    target = tmp_path / "tagger"
    def temporaries():
        return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tagger."))
    killed = python(BUILDER, target, "killed", env=dict(os.environ, SRC_CRASH_AT="tagger:built:1"))
    assert killed.wait(timeout=60) == -signal.SIGKILL and len(temporaries()) == 1
    left = temporaries()[0]
    paused = python(BUILDER, target, "paused", stdin=subprocess.PIPE)
    assert paused.stdout.readline().strip() == "building"
    live = [name for name in temporaries() if name != left]
    with atomic_folder(target) as building:
        (building / "who").write_text("this test")
    assert temporaries() == live and (target / "who").read_text() == "this test"
    paused.communicate("\n", timeout=60)
    assert paused.returncode == 0 and (target / "who").read_text() == "paused" and temporaries() == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_written_through_temporary_names_take_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "table.csv", "a,b\n")
        atomic_write_json(tmp_path / "result.json", {})
        with atomic_path(tmp_path / "best.keras", suffix=".keras") as tmp:
            tmp.write_bytes(b"model")
        ResumeState(0, False, {}, [], [], None, {}).save(tmp_path / "resume.npz")
        with atomic_folder(tmp_path / "export") as building:
            (building / "labels.txt").write_text("a\n")
        with Lock(tmp_path / "export.lock", "this test"):
            lock_mode = stat.S_IMODE((tmp_path / "export.lock").stat().st_mode)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    files = {n: 0o666 & ~umask for n in ("table.csv", "result.json", "best.keras", "resume.npz")}
    assert modes == {**files, "export": 0o777 & ~umask}
    assert stat.S_IMODE((tmp_path / "export" / "labels.txt").stat().st_mode) == 0o666 & ~umask
    assert lock_mode == 0o666 & ~umask
