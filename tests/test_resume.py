"""A fold killed mid-training (SIGKILL to the real process) and run again continues from its last
completed epoch and ends exactly as an uninterrupted run of the same seed."""
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT, command_env, tiny, write_dataset

from src.training.resume import ResumeState

OPTIONS = ["--model", "1d", "--fold", "0", *tiny(n_folds=3, epochs=6, batch_size=4),
           "--resume-every", "0"]  # every epoch saved: the kill comes after epoch 2's


def train(data_dir, out_dir):
    """src.train started, not waited for (conftest's environment), stderr into stdout."""
    return subprocess.Popen([sys.executable, "-m", "src.train", *OPTIONS, "--data-dir", str(data_dir),
                             "--out-dir", str(out_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=command_env())


def saved_epoch(path) -> int:
    """The epoch of a resume state, or -1 while none can be read (the file is replaced whole)."""
    try:
        return ResumeState.load(path).epoch
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
@pytest.mark.readme("src.train --fold")
@pytest.mark.readme("src.train --model --fold")
def test_a_killed_fold_resumes_to_the_same_result(tmp_path):
    data_dir = write_dataset(tmp_path / "data", per_class=8, bad_inputs=False)
    whole = train(data_dir, tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    killed = train(data_dir, tmp_path / "killed")
    state = tmp_path / "killed" / "predictions" / "1d" / "fold0" / "resume.npz"
    deadline = time.time() + 600
    while not (state.exists() and saved_epoch(state) >= 2) and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)                    # mid-epoch 4, or wherever it has got to
    killed.wait()
    assert not (state.parent / "result.json").exists()
    resumed = train(data_dir, tmp_path / "killed")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "continuing after epoch" in out, out

    done = {name: tmp_path / name / "predictions" / "1d" / "fold0" for name in ("whole", "killed")}
    logs = {name: pd.read_csv(folder / "log.csv") for name, folder in done.items()}
    assert list(logs["killed"].epoch) == list(range(6))   # one row per epoch, none twice
    # Exact on this machine: every variable (weights, optimizer moments, step, random-number state)
    # is restored and a batch depends on its number alone.
    pd.testing.assert_frame_equal(logs["whole"][["epoch", "loss", "val_loss"]],
                                  logs["killed"][["epoch", "loss", "val_loss"]])
    for name in ("oof.csv", "test.csv"):
        assert (done["whole"] / name).read_text() == (done["killed"] / name).read_text()
    assert not (done["killed"] / "resume.npz").exists()   # the resume state goes once the fold is finished


def test_the_resume_state_costs_at_most_a_twentieth_of_the_time_by_default():
    from src.training.callbacks import FoldCheckpoint

    checkpoint = FoldCheckpoint(path=None, stopping=None, timer=None)
    assert checkpoint.due(checkpoint.saved)              # the first epoch is saved, however short
    checkpoint.cost = 0.03                               # a 30 ms save: the next one 0.6 s later at the earliest
    assert not checkpoint.due(checkpoint.saved + 0.59) and checkpoint.due(checkpoint.saved + 0.61)
    checkpoint.cost = 2.0                                # a 2 s save: 40 s later, the same twentieth
    assert not checkpoint.due(checkpoint.saved + 39.9) and checkpoint.due(checkpoint.saved + 40.1)
    every = FoldCheckpoint(path=None, stopping=None, timer=None, every=0)
    every.cost = 10.0
    assert every.due(every.saved)                        # --resume-every 0: every epoch, whatever it costs
