"""Small generated datasets in the competition layout, written as real WAV files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RATE = 44100


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
