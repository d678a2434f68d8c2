"""The MFCC Conv2D net of the "Beginner's Guide to Audio Data" kernel (preset 2d)."""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..base.config import Config
from ..base.errors import UsageError
from .layers import class_probabilities, spec_mask


def mfcc2d(config: Config, n_classes: int, mean: np.ndarray | None = None,
           variance: np.ndarray | None = None, activation: str = "softmax") -> keras.Model:
    """The kernel's MFCC Conv2D net (168,361 trainable parameters for 41 classes, 40 MFCC x 173
    frames). Per-coefficient normalisation by the fold's training statistics is its first layer,
    so a saved model carries its own statistics."""
    if config.crop_frames < 16 or config.n_mfcc < 16:
        raise UsageError(f"mfcc2d pools by 2 four times: it needs >= 16 MFCCs and >= 16 frames, "
                         f"got {config.n_mfcc} x {config.crop_frames}; raise --crop-seconds or --n-mfcc")
    inputs = keras.Input(shape=(config.n_mfcc, config.crop_frames, 1), name="mfcc")
    x = inputs
    masks = spec_mask(config)
    if masks is not None:
        x = masks(x)
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
    outputs = class_probabilities(n_classes, activation)(x)
    return keras.Model(inputs, outputs, name="mfcc2d")
