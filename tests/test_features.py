import dataclasses

import numpy as np

from src.base.config import PRESETS
from src.dataset.inputs import MfccInput, mfcc, model_input

CONFIG = dataclasses.replace(PRESETS["2d"], crop_seconds=0.5)


def test_cached_frames_equal_the_mfcc_of_the_cropped_audio(clean_dataset):
    source = model_input(clean_dataset, "train", CONFIG, n_jobs=1)
    audio = model_input(clean_dataset, "train", dataclasses.replace(PRESETS["1d"], sample_rate=CONFIG.sample_rate),
                        n_jobs=1)
    samples = audio.store.read("noise04.wav")[:, 0].astype(np.float32) / 32768
    frames = source.store.read("noise04.wav")
    start = 20 * CONFIG.hop_length
    crop = mfcc(samples[start:start + 30 * CONFIG.hop_length], CONFIG)
    edge = CONFIG.n_fft // CONFIG.hop_length  # frames whose window reaches past the crop
    np.testing.assert_allclose(crop[edge:-edge], frames[20 + edge:20 + len(crop) - edge], atol=1e-3, rtol=1e-4)


def test_padding_row_is_the_mfcc_of_silence(clean_dataset):
    source = model_input(clean_dataset, "train", CONFIG, n_jobs=1)
    assert isinstance(source, MfccInput)
    silence = mfcc(np.zeros(CONFIG.sample_rate, np.float32), CONFIG)
    np.testing.assert_allclose(silence, np.broadcast_to(source.pad_row, silence.shape), atol=1e-4)


def test_statistics_come_from_the_given_clips_only(clean_dataset):
    source = model_input(clean_dataset, "train", CONFIG, n_jobs=1)
    some = ["tone00.wav", "noise01.wav"]
    mean, variance = source.statistics(some)
    frames = np.concatenate([source.store.read(f) for f in some]).astype(np.float64)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(variance, frames.var(axis=0), rtol=1e-4, atol=1e-3)
    other, _ = source.statistics(["clicks02.wav"])
    assert not np.allclose(mean, other)
