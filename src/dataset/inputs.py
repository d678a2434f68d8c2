"""Input kinds: what a network reads (src/base/networks.py says which), and all that follows from it.

`wave` inputs are crops of the cached int16 samples. `mfcc` inputs are crops of full-clip MFCCs
computed once from the audio cache and packed like it, so the batches only slice frames. The MFCCs use
an absolute dB scale (no per-clip top_db clamp): each frame depends on its own samples alone, so a crop
of cached frames equals the MFCCs of the cropped audio, and padding a short clip with the MFCC of
silence equals padding its audio with zeros.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from ..base.config import Config
from ..base.errors import DataError
from ..base.layout import audio_dir, cache_dir, cache_folder
from ..base.networks import INPUTS
from ..base.pcm import INT16_SCALE, to_int16
from . import audio as audio_cache
from .store import PackedStore, derive, locked, params_key


def mfcc(samples: np.ndarray, config: Config) -> np.ndarray:
    """MFCC frames (n_frames x n_mfcc), float32, of float samples at config.sample_rate."""
    import librosa

    mel = librosa.feature.melspectrogram(y=samples, sr=config.sample_rate, n_fft=config.n_fft,
                                         hop_length=config.hop_length, n_mels=config.n_mels)
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)
    return librosa.feature.mfcc(S=log_mel, n_mfcc=config.n_mfcc).T.astype(np.float32)


def silence_frame(config: Config) -> np.ndarray:
    """The MFCC frame of digital silence: what pads a clip shorter than a crop."""
    return mfcc(np.zeros(config.n_fft, np.float32), config)[0]


def _mfcc_of_int16(samples: np.ndarray, config: Config) -> np.ndarray:
    return mfcc(samples.astype(np.float32) / INT16_SCALE, config)


class InputKind:
    """What a network reads, and all that follows from it: the store its crops come from, their
    length and padding, how a batch of crops becomes model input, the statistics a model needs from
    its fold's training rows and the rows of a decoded clip (for prediction on new audio); the front
    end that turns float audio into the same input inside a model is src.models.FRONT_ENDS[name]. One
    instance per split."""

    name: str
    dtype: type
    takes_waves: bool  # wave augmentations and the device feed apply (src.base.networks.INPUTS)

    def __init__(self, store: PackedStore, config: Config):
        self.store = store
        self.crop_length, self.pad_row = self.crop_layout(config)

    @classmethod
    def crop_layout(cls, config: Config) -> tuple[int, np.ndarray]:
        """Rows of a crop, and the row that pads a short clip."""
        raise NotImplementedError

    @classmethod
    def build(cls, data_dir: Path, split: str, config: Config, n_jobs: int) -> InputKind:
        """The up-to-date input of one split, building the audio cache (and features) as needed."""
        raise NotImplementedError

    @classmethod
    def finish(cls, batch: np.ndarray) -> np.ndarray:
        """A batch of crops (B, rows, width) as the network takes it."""
        return batch

    def model_statistics(self, fnames: list[str]) -> dict:
        """Keyword arguments for the network's builder computed from the fold's training clips."""
        return {}

    @classmethod
    def rows(cls, wave: np.ndarray, config: Config) -> tuple[np.ndarray, float]:
        """The rows of a float clip at config.sample_rate, as cached, and the seconds one row spans."""
        raise NotImplementedError


class WaveInput(InputKind):
    """Raw-wave crops: (crop_samples, 1) int16 samples per clip; the model scales them."""

    name, dtype = "wave", np.int16
    takes_waves = INPUTS[name].takes_waves

    @classmethod
    def crop_layout(cls, config):
        return config.crop_samples, np.zeros(1, np.int16)

    @classmethod
    def build(cls, data_dir, split, config, n_jobs):
        return cls(audio_cache.build(data_dir, split, [config.sample_rate], n_jobs)[config.sample_rate], config)

    @classmethod
    def rows(cls, wave, config):
        return to_int16(wave)[:, None], 1 / config.sample_rate


class MfccInput(InputKind):
    """MFCC crops: (n_mfcc, crop_frames, 1) per clip, padded with the MFCC of silence."""

    name, dtype = "mfcc", np.float32
    takes_waves = INPUTS[name].takes_waves

    @classmethod
    def crop_layout(cls, config):
        return config.crop_frames, silence_frame(config)

    @classmethod
    def cache_params(cls, config: Config) -> dict:
        """The parameters that make the cached MFCCs (their cache key)."""
        return {"features": "mfcc", **{name: getattr(config, name) for name in
                                        ("sample_rate", "n_mfcc", "n_mels", "n_fft", "hop_length")}}

    @classmethod
    def build(cls, data_dir, split, config, n_jobs):
        audio = audio_cache.build(data_dir, split, [config.sample_rate], n_jobs)[config.sample_rate]
        return cls(_build_mfcc(data_dir, split, audio, config, n_jobs), config)

    @classmethod
    def finish(cls, batch: np.ndarray) -> np.ndarray:
        """(B, frames, n_mfcc) -> (B, n_mfcc, frames, 1), the layout of the kernel's 2D net."""
        return np.transpose(batch, (0, 2, 1))[..., None]

    def statistics(self, fnames: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-coefficient mean and variance over every frame of the given clips (the training rows)."""
        total = np.zeros(self.store.width)
        square = np.zeros(self.store.width)
        count = 0
        for fname in fnames:
            frames = self.store.read(fname).astype(np.float64)
            total += frames.sum(axis=0)
            square += (frames ** 2).sum(axis=0)
            count += len(frames)
        if count == 0:
            raise DataError("no training frames to compute MFCC statistics from")
        mean = total / count
        return mean.astype(np.float32), np.maximum(square / count - mean ** 2, 1e-8).astype(np.float32)

    def model_statistics(self, fnames):
        # The fold's training rows only: validation rows must not leak into the normalisation.
        return dict(zip(("mean", "variance"), self.statistics(fnames)))

    @classmethod
    def rows(cls, wave, config):
        return mfcc(wave, config), config.hop_length / config.sample_rate


INPUT_KINDS = {kind.name: kind for kind in (WaveInput, MfccInput)}


def input_kind(config: Config) -> type[InputKind]:
    """The input kind the preset's network reads."""
    return INPUT_KINDS[config.features]


def model_input(data_dir: Path, split: str, config: Config, n_jobs: int = -1) -> InputKind:
    """The up-to-date input source of one split for one preset, building caches as needed."""
    return input_kind(config).build(data_dir, split, config, n_jobs)


def _build_mfcc(data_dir: Path, split: str, audio: PackedStore, config: Config, n_jobs: int) -> PackedStore:
    params = dict(MfccInput.cache_params(config), stage="mfcc", version=1, audio=audio.params)
    root = cache_folder(data_dir, "mfcc", params_key(params), split)
    with locked(cache_dir(data_dir)):
        store = PackedStore(root, "float32", config.n_mfcc, params)
        compute = lambda fnames: Parallel(n_jobs=n_jobs, batch_size=8)(
            delayed(_mfcc_of_int16)(audio.read(f)[:, 0], config) for f in fnames)
        store = derive(store, audio, audio_dir(data_dir, split), compute, f"mfcc {split}")
    return store
