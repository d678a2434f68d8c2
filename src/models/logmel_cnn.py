"""A VGG-style log-mel CNN in the manner of the strong 2018 entries (preset logmel).

The mel spectrogram is computed inside the model, so it runs on the accelerator with the rest and a
saved model takes raw (int16) audio. Four blocks of two 3x3 conv + batch norm + ReLU, each followed by
2x2 max pooling; then the mean over mel bands, max + mean over time, dropout and softmax.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from ..base.config import Config
from ..base.errors import UsageError
from .layers import Int16ToFloat, class_probabilities, log_mel, spec_mask


def logmel_cnn(config: Config, n_classes: int, activation: str = "softmax") -> keras.Model:
    frames = 1 + config.crop_samples // config.hop_length
    if config.n_mels < 16 or frames < 16:
        raise UsageError(f"logmel_cnn pools by 2 four times: it needs >= 16 mel bands and >= 16 frames, "
                         f"got {config.n_mels} x {frames}; raise --n-mels or --crop-seconds")
    inputs = keras.Input(shape=(config.crop_samples, 1), name="wave", dtype="int16")
    x = log_mel(config)(Int16ToFloat(name="int16_to_float")(inputs))          # (batch, mels, frames)
    x = layers.Reshape((config.n_mels, frames, 1))(x)
    masks = spec_mask(config)
    if masks is not None:
        x = masks(x)
    # Per-band standardisation learnt from the training batches: the model needs no outside statistics.
    # Momentum 0.9 (not 0.99): with ~10 steps an epoch the inference statistics must catch up fast.
    x = layers.BatchNormalization(axis=1, momentum=0.9, name="band_norm")(x)
    for filters in (32, 64, 128, 256):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = ops.mean(x, axis=1)                                                  # over mel bands
    x = layers.Concatenate()([layers.GlobalMaxPooling1D()(x), layers.GlobalAveragePooling1D()(x)])
    x = layers.Dropout(0.3)(x)
    outputs = class_probabilities(n_classes, activation)(x)
    return keras.Model(inputs, outputs, name="logmel_cnn")
