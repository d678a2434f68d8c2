"""What the tests share: the project's commands run as the user runs them (`run_module` for `python -m
...`, `run_folds` for ./run_folds.sh) in one single-thread CPU environment, the tiny training options
(TINY), small generated datasets in the competition layout written as real WAV files, and finished folds
faked through the fold's own writers (`fake_fold`)."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RATE = 44100
LABELS = ["Clicks", "Noise", "Tone"]
"""The labels of the generated datasets, in train.csv's (sorted) order."""

# --- commands ---------------------------------------------------------------------------------------------

TINY = ["--n-folds", "2", "--epochs", "1", "--batch-size", "8", "--crop-seconds", "0.5"]
"""src.train's options for a fold that trains in seconds: 2 folds, 1 epoch, batches of 8, 0.5 s crops."""


def tiny(**changes) -> list[str]:
    """TINY with some values changed (tiny(epochs=2)); None leaves an option out (tiny(n_folds=None) for a
    dataset that brings its own folds)."""
    values = dict(zip(TINY[::2], TINY[1::2]))
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        assert flag in values, f"{flag} is not one of TINY's options"
        values[flag] = value
    return [str(part) for flag, value in values.items() if value is not None for part in (flag, value)]


SINGLE_THREAD = {"PYTHON": sys.executable, "THREADS": "1", "CPU_JOBS": "2", "NVIDIA_SMI": "false"}
"""The environment of every command a test runs: run_folds.sh (also when a tool starts it) runs this
interpreter, CPU fold processes of one thread, two at once, and looks for no GPU."""

ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
"""For `env=`: the command itself on one thread, as run_folds.sh runs a CPU fold process."""


def command_env(env: dict | None = None) -> dict:
    """os.environ with SINGLE_THREAD and then `env` over it; a value of None removes the variable."""
    merged = {**os.environ, **SINGLE_THREAD, **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


def _run(command: list, cwd, env, timeout, check, popen) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=command_env(env), capture_output=True,
                          text=True, timeout=timeout, **popen)
    if check:
        assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def run_module(*args, cwd=ROOT, env: dict | None = None, timeout: float = 900, check: bool = False,
               **popen) -> subprocess.CompletedProcess:
    """`python -m ARGS` with this interpreter, from `cwd` (the repository root unless given), in the
    single-thread environment plus `env`; output captured as text. With check, a non-zero exit fails the
    test with the output's tails. Other keywords go to subprocess.run (preexec_fn, ...)."""
    return _run([sys.executable, "-m", *args], cwd, env, timeout, check, popen)


def run_folds(*args, cwd=ROOT, env: dict | None = None, timeout: float = 900, check: bool = False,
              **popen) -> subprocess.CompletedProcess:
    """`./run_folds.sh ARGS` of this checkout, as run_module runs a module (the same environment: CPU fold
    processes of one thread, two at once)."""
    return _run([ROOT / "run_folds.sh", *args], cwd, env, timeout, check, popen)


# --- finished folds ---------------------------------------------------------------------------------------

def fake_fold(paths, name: str, fold: int, result: dict | None = None, *, config=None, task=None, oof=None,
              test=None, labels=LABELS, model=None):
    """A finished fold of model `name` written as src.training.fold trains one, through its FoldFiles:
    started with `config` (default: the config.json the fold already has, else the 1d preset) for `task`
    (default: the config's), then the model (a Keras model) and the predictions given as (fnames, probs)
    for oof.csv and test.csv, and result.json last: `result` with the model, fold and task. Returns the
    FoldFiles."""
    import dataclasses

    from src.base.config import PRESETS
    from src.dataset.task import task_named
    from src.training.fold_files import fold_files

    files = fold_files(paths, name, fold)
    if config is None:
        config = files.read_config() if files.config.exists() else PRESETS["1d"]
    task = task or task_named(config.task)
    files.start(dataclasses.replace(config, task=task.NAME))
    if model is not None:
        files.save_model(model)
    for path, predictions in ((files.oof, oof), (files.test, test)):
        if predictions is not None:
            files.write_probabilities(path, *predictions, labels)
    files.write_result({"model": name, "fold": fold, "task": task.NAME, **(result or {})})
    return files


# --- datasets ---------------------------------------------------------------------------------------------


def tone(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A clip whose class is easy to hear: a pitched tone, a noise burst or a click train."""
    t = np.arange(int(seconds * RATE)) / RATE
    if kind == "tone":
        y = 0.5 * np.sin(2 * np.pi * rng.uniform(400, 500) * t)
    elif kind == "noise":
        y = 0.3 * rng.standard_normal(len(t)) * np.exp(-3 * t)
    else:
        y = np.zeros(len(t))
        y[:: int(RATE / rng.uniform(8, 12))] = 0.9
    return y.astype(np.float32)


def write_dataset(root: Path, per_class: int = 6, n_test: int = 6, seed: int = 0,
                  bad_inputs: bool = True) -> Path:
    """3 labels x per_class train clips of 0.3 to 2.5 s plus n_test test clips. With bad_inputs, the
    train set also holds a corrupt WAV, an empty WAV, a truncated, a stereo, an 8-bit and a
    22.05 kHz file."""
    rng = np.random.default_rng(seed)
    kinds = {"Tone": "tone", "Noise": "noise", "Clicks": "clicks"}
    (root / "audio_train").mkdir(parents=True)
    (root / "audio_test").mkdir()
    rows, test_rows = [], []
    for label, kind in kinds.items():
        for i in range(per_class):
            fname = f"{label.lower()}{i:02d}.wav"
            sf.write(root / "audio_train" / fname, tone(kind, rng.uniform(0.3, 2.5), rng), RATE,
                     subtype="PCM_16")
            rows.append((fname, label, int(i % 3 != 0)))
    for i in range(n_test):
        label = list(kinds)[i % 3]
        fname = f"test{i:02d}.wav"
        sf.write(root / "audio_test" / fname, tone(kinds[label], rng.uniform(0.3, 2.5), rng), RATE,
                 subtype="PCM_16")
        test_rows.append((fname, label))
    if bad_inputs:
        (root / "audio_train" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk" + bytes(40))
        sf.write(root / "audio_train" / "empty.wav", np.zeros(0, np.float32), RATE, subtype="PCM_16")
        stereo = np.stack([tone("tone", 1.0, rng), tone("tone", 1.0, rng)], axis=1)
        sf.write(root / "audio_train" / "stereo.wav", stereo, RATE, subtype="PCM_16")
        sf.write(root / "audio_train" / "eightbit.wav", tone("noise", 1.0, rng), RATE, subtype="PCM_U8")
        sf.write(root / "audio_train" / "truncated.wav", tone("clicks", 1.0, rng), RATE, subtype="PCM_16")
        whole = (root / "audio_train" / "truncated.wav").read_bytes()
        (root / "audio_train" / "truncated.wav").write_bytes(whole[: len(whole) // 2])
        low = tone("clicks", 1.0, rng)[::2]
        sf.write(root / "audio_train" / "lowrate.wav", low, RATE // 2, subtype="PCM_16")
        rows += [("corrupt.wav", "Tone", 0), ("empty.wav", "Noise", 0), ("stereo.wav", "Tone", 1),
                 ("eightbit.wav", "Noise", 1), ("lowrate.wav", "Clicks", 1),
                 ("truncated.wav", "Clicks", 0)]
    pd.DataFrame(rows, columns=["fname", "label", "manually_verified"]).to_csv(root / "train.csv", index=False)
    test = pd.DataFrame(test_rows, columns=["fname", "label"])
    test.to_csv(root / "test_labels.csv", index=False)
    test.assign(label="Tone Noise Clicks").to_csv(root / "sample_submission.csv", index=False)
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def clean_dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data", bad_inputs=False)


def write_multilabel_dataset(root: Path, n_train: int = 30, n_test: int = 6, seed: int = 0) -> Path:
    """A multi-label dataset in the 2019 layout: clips mixing one or two of the three sounds (a tone, a
    noise burst, clicks), labelled with the union; a third of the train rows unverified (the "noisy"
    subset); sample_submission.csv with one probability column per label; test_labels.csv with labels."""
    rng = np.random.default_rng(seed)
    kinds = {"Tone": "tone", "Noise": "noise", "Clicks": "clicks"}
    (root / "audio_train").mkdir(parents=True)
    (root / "audio_test").mkdir()

    def clip(folder: Path, fname: str) -> str:
        chosen = sorted(rng.choice(list(kinds), size=rng.integers(1, 3), replace=False))
        seconds = rng.uniform(0.5, 2.0)
        mix = sum(tone(kinds[label], seconds, rng) for label in chosen) / len(chosen)
        sf.write(folder / fname, mix, RATE, subtype="PCM_16")
        return ",".join(chosen)

    train = pd.DataFrame({"fname": [f"mix{i:02d}.wav" for i in range(n_train)]})
    train["labels"] = [clip(root / "audio_train", f) for f in train.fname]
    train["manually_verified"] = [int(i % 3 != 2) for i in range(n_train)]
    train.to_csv(root / "train.csv", index=False)
    test = pd.DataFrame({"fname": [f"test{i:02d}.wav" for i in range(n_test)]})
    test["labels"] = [clip(root / "audio_test", f) for f in test.fname]
    test.to_csv(root / "test_labels.csv", index=False)
    sample = test[["fname"]].assign(**{label: 0.0 for label in ("Tone", "Noise", "Clicks")})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root


def crafted_checkpoint(path, monkeypatch, *tensors, storage=4):
    """A torch.save-like archive of {"w0": ..., "w1": ...}: each tensor (offset, size, stride) over one
    float32 storage of `storage` elements."""
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        pass
    for stand_in, module in ((FloatStorage, "torch"), (_rebuild_tensor_v2, "torch._utils")):
        stand_in.__module__, stand_in.__qualname__ = module, stand_in.__name__
    fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

    class Tensor:
        def __init__(self, offset, size, stride):
            self.args = (("storage", FloatStorage, "0", "cpu", storage), offset, size, stride, False, {})

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Saver(pickle.Pickler):
        def persistent_id(self, obj):
            return obj if isinstance(obj, tuple) and obj[:1] == ("storage",) else None

    buffer = io.BytesIO()
    Saver(buffer, protocol=2).dump({f"w{k}": Tensor(*t) for k, t in enumerate(tensors)})
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("archive/data.pkl", buffer.getvalue())
        out.writestr("archive/data/0", np.arange(storage, dtype=np.float32).tobytes())
    return path
