"""Layers the networks share: front ends that turn int16 or float audio into what a network reads, and
SpecAugment masks. Registered, so saved models load anywhere."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..base.config import Config
from ..base.pcm import INT16_SCALE


@keras.saving.register_keras_serializable(package="freesound")
class MinMaxScale(layers.Layer):
    """Scale each example to [-0.5, 0.5] by its own minimum and maximum (the kernel's audio_norm).
    Inside the model, so that batches travel as int16 samples and saved models take raw audio."""

    def call(self, waves):
        waves = ops.cast(waves, "float32")
        low = ops.min(waves, axis=(1, 2), keepdims=True)
        high = ops.max(waves, axis=(1, 2), keepdims=True)
        return (waves - low) / (high - low + 1e-6) - 0.5


@keras.saving.register_keras_serializable(package="freesound")
class FloatToInt16(layers.Layer):
    """Float audio in [-1, 1] to the int16 samples the cache holds (same scale, rounding, clipping)."""

    def call(self, waves):
        return ops.cast(ops.clip(ops.round(waves * INT16_SCALE), -32768, 32767), "int16")


def power_mel(waves, n_fft: int, hop_length: int, window: np.ndarray, mel: np.ndarray):
    """Float audio (batch, samples) to a power mel spectrogram (batch, frames, mel bands) as librosa
    computes it: centred frames (zero padding), the given window, |STFT|^2 times the filter bank."""
    padded = ops.pad(waves, [[0, 0], [n_fft // 2, n_fft // 2]])
    real, imag = ops.stft(padded, sequence_length=n_fft, sequence_stride=hop_length, fft_length=n_fft,
                          window=window, center=False)
    return ops.matmul(real ** 2 + imag ** 2, mel)


@keras.saving.register_keras_serializable(package="freesound")
class MfccFrontEnd(layers.Layer):
    """Float audio (batch, samples) to the MFCCs of src.features (batch, n_mfcc, frames, 1): centred
    zero-padded STFT with a periodic Hann window, power mel spectrogram (librosa's filters), absolute
    dB, orthonormal DCT-II. Lets a model of MFCC input take raw audio."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, n_mfcc: int, **kwargs):
        super().__init__(**kwargs)
        import librosa
        import scipy

        self.settings = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                             n_mfcc=n_mfcc)
        self.mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).T.astype("float32")
        self.dct = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc].T.astype("float32")
        self.window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype("float32")

    def call(self, waves):
        mel = power_mel(waves, self.settings["n_fft"], self.settings["hop_length"], self.window, self.mel)
        mfcc = ops.matmul(10.0 * ops.log10(ops.maximum(mel, 1e-10)), self.dct)
        return ops.expand_dims(ops.transpose(mfcc, (0, 2, 1)), -1)

    def get_config(self):
        return {**super().get_config(), **self.settings}


@keras.saving.register_keras_serializable(package="freesound")
class Int16ToFloat(layers.Layer):
    """int16 samples (batch, samples, 1) to float audio in [-1, 1) (batch, samples): the cache's scale
    undone, level kept (unlike MinMaxScale), so gain augmentation means something."""

    def call(self, waves):
        return ops.squeeze(ops.cast(waves, "float32"), -1) / INT16_SCALE


@keras.saving.register_keras_serializable(package="freesound")
class LogMel(layers.Layer):
    """Float audio (batch, samples) -> log-mel spectrogram (batch, n_mels, frames) in dB relative to the
    clip's own loudest bin, floored `top_db` below it (librosa's power_to_db(ref=np.max)). Per clip,
    unlike keras.layers.MelSpectrogram's batch-wide clamp: a clip's features never depend on its batch,
    and the silence padding short clips sits at the floor instead of 100 dB under everything else."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, top_db: float = 80.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                             top_db=top_db)
        self.mel = layers.MelSpectrogram(fft_length=n_fft, sequence_stride=hop_length, sampling_rate=sample_rate,
                                         num_mel_bins=n_mels, min_freq=20.0, power_to_db=False, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.mel.build(input_shape)

    def call(self, waves):
        db = 10.0 * ops.log10(ops.maximum(self.mel(waves), 1e-10))
        db = db - ops.max(db, axis=(1, 2), keepdims=True)
        return ops.maximum(db, -self.settings["top_db"])

    def get_config(self):
        return {**super().get_config(), **self.settings}


@keras.saving.register_keras_serializable(package="freesound")
class SfxMel(layers.Layer):
    """Float audio (batch, samples) -> the spectrogram the aisfx network was pretrained on, laid out
    (batch, mel bands, frames) like LogMel: each example scaled to a peak of 1, power mel spectrogram
    (HTK mel scale, each filter summing to 1, 0 Hz to Nyquist), log10(1 + 10^4 x), divided by the
    pretraining data's maximum so that values lie in about [0, 1]. As aisfx's own librosa front end
    computes it (src.models.aisfx_cnn; tests/reference/ checks it against the package)."""

    MAXIMUM = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize's "original" scale

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, **kwargs):
        super().__init__(**kwargs)
        import librosa
        import scipy

        self.settings = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2,
                                       htk=True, norm=1.0).T.astype("float32")
        self.window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype("float32")

    def call(self, waves):
        peak = ops.max(ops.abs(waves), axis=1, keepdims=True)
        waves = waves / ops.where(peak > 0, peak, 1.0)
        mel = power_mel(waves, self.settings["n_fft"], self.settings["hop_length"], self.window, self.mel)
        return ops.transpose(ops.log10(1.0 + 1e4 * mel) / self.MAXIMUM, (0, 2, 1))

    def get_config(self):
        return {**super().get_config(), **self.settings}


def log_mel(config: Config, name: str = "log_mel") -> LogMel:
    """The preset's LogMel front end, in float32 whatever the precision: dB of tiny powers need it."""
    return LogMel(config.sample_rate, config.n_fft, config.hop_length, config.n_mels, name=name, dtype="float32")


def class_probabilities(n_classes: int, activation: str = "softmax") -> layers.Dense:
    """The output every network ends with (the task's activation: a softmax over the labels, or a sigmoid
    per label), in float32 whatever the precision, so that the loss and the saved probabilities are
    computed at full precision."""
    return layers.Dense(n_classes, activation=activation, dtype="float32")


@keras.saving.register_keras_serializable(package="freesound")
class SpecMask(layers.Layer):
    """SpecAugment-style masks, in training only. On (batch, bands, frames, 1) inputs, each example
    gets `time_masks` runs of up to `fraction` of its frames and `freq_masks` runs of up to `fraction`
    of its bands set to its own mean. Inside the model so that it serves cached MFCCs and in-model
    spectrograms alike; at inference it passes inputs through."""

    def __init__(self, time_masks: int = 0, freq_masks: int = 0, fraction: float = 0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.time_masks, self.freq_masks, self.fraction, self.seed = time_masks, freq_masks, fraction, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=False):
        if not training:
            return x
        fill = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        for axis, count in ((2, self.time_masks), (1, self.freq_masks)):
            size = x.shape[axis]
            longest = max(1, int(self.fraction * size))
            positions = ops.arange(size, dtype="float32")
            shape = (-1, size, 1, 1) if axis == 1 else (-1, 1, size, 1)
            for _ in range(count):
                width = ops.floor(keras.random.uniform((ops.shape(x)[0], 1), 0, longest + 1,
                                                       seed=self.seed_generator))
                start = ops.floor(keras.random.uniform((ops.shape(x)[0], 1), seed=self.seed_generator)
                                  * (size - width + 1))
                inside = ops.logical_and(positions >= start, positions < start + width)
                x = ops.where(ops.reshape(inside, shape), fill, x)
        return x

    def get_config(self):
        return {**super().get_config(), "time_masks": self.time_masks, "freq_masks": self.freq_masks,
                "fraction": self.fraction, "seed": self.seed}


def spec_mask(config: Config):
    """The preset's SpecMask layer, or None when it masks nothing."""
    if not (config.time_masks or config.freq_masks):
        return None
    return SpecMask(config.time_masks, config.freq_masks, config.mask_fraction, name="spec_mask")
