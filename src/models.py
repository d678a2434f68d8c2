"""Stage 5, models: one builder per network, each returning a compiled keras.Model.

Written with `keras` and `keras.ops` only, so they run under the TensorFlow, JAX or PyTorch backend.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from .config import Config


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
        return ops.cast(ops.clip(ops.round(waves * 32768.0), -32768, 32767), "int16")


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
        n_fft, hop = self.settings["n_fft"], self.settings["hop_length"]
        padded = ops.pad(waves, [[0, 0], [n_fft // 2, n_fft // 2]])
        real, imag = ops.stft(padded, sequence_length=n_fft, sequence_stride=hop, fft_length=n_fft,
                              window=self.window, center=False)
        mel = ops.matmul(real ** 2 + imag ** 2, self.mel)
        mfcc = ops.matmul(10.0 * ops.log10(ops.maximum(mel, 1e-10)), self.dct)
        return ops.expand_dims(ops.transpose(mfcc, (0, 2, 1)), -1)

    def get_config(self):
        return {**super().get_config(), **self.settings}


def conv1d(config: Config, n_classes: int, **_) -> keras.Model:
    """The raw-wave Conv1D net of the "Beginner's Guide to Audio Data" kernel (360,513 parameters
    for 41 classes and 2 s at 16 kHz). Takes int16 samples."""
    inputs = keras.Input(shape=(config.crop_samples, 1), name="wave", dtype="int16")
    x = MinMaxScale(name="min_max_scale")(inputs)
    for filters, kernel, pool, dropout in ((16, 9, 16, 0.1), (32, 3, 4, 0.1), (32, 3, 4, 0.1)):
        x = layers.Conv1D(filters, kernel, activation="relu", padding="valid")(x)
        x = layers.Conv1D(filters, kernel, activation="relu", padding="valid")(x)
        x = layers.MaxPooling1D(pool)(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Conv1D(256, 3, activation="relu", padding="valid")(x)
    x = layers.Conv1D(256, 3, activation="relu", padding="valid")(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dense(1028, activation="relu")(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="conv1d")


def mfcc2d(config: Config, n_classes: int, mean: np.ndarray | None = None,
           variance: np.ndarray | None = None) -> keras.Model:
    """The kernel's MFCC Conv2D net (168,361 trainable parameters for 41 classes, 40 MFCC x 173
    frames). Per-coefficient normalisation by the fold's training statistics is its first layer,
    so a saved model carries its own statistics."""
    if config.crop_frames < 16 or config.n_mfcc < 16:
        raise ValueError(f"mfcc2d pools by 2 four times: it needs >= 16 MFCCs and >= 16 frames, "
                         f"got {config.n_mfcc} x {config.crop_frames}; raise --crop-seconds or --n-mfcc")
    inputs = keras.Input(shape=(config.n_mfcc, config.crop_frames, 1), name="mfcc")
    x = inputs
    if mean is not None:
        x = layers.Normalization(axis=1, mean=mean, variance=variance, name="mfcc_normalization")(x)
    for _ in range(4):
        x = layers.Conv2D(32, (4, 10), padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mfcc2d")


NETWORKS = {"conv1d": conv1d, "mfcc2d": mfcc2d}


def build_model(config: Config, n_classes: int, steps_per_epoch: int = 1, **statistics) -> keras.Model:
    """The preset's network, compiled with Adam (or AMSGrad), its learning-rate schedule and
    categorical cross-entropy."""
    if config.network not in NETWORKS:
        raise ValueError(f"unknown network {config.network!r}; known: {sorted(NETWORKS)}")
    model = NETWORKS[config.network](config, n_classes, **statistics)
    learning_rate = config.learning_rate
    if config.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, amsgrad=config.optimizer == "amsgrad"),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model
