"""The raw-wave Conv1D net of the "Beginner's Guide to Audio Data" kernel (preset 1d)."""
from __future__ import annotations

import keras
from keras import layers

from ..base.config import Config
from .layers import MinMaxScale, class_probabilities


def conv1d(config: Config, n_classes: int, activation: str = "softmax") -> keras.Model:
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
    outputs = class_probabilities(n_classes, activation)(x)
    return keras.Model(inputs, outputs, name="conv1d")
