"""An EnvNet-style raw-wave net (Tokozume and Harada, 2017) (preset envnet).

Two 1D convolutions learn a filter bank over the raw wave and max pooling over 10 ms makes a
filter-by-time map, which 2D convolutions then read like a spectrogram. Trained on 1.5 s crops; at test
time the preset votes over sliding windows (the mean of their probabilities). As in EnvNet-v2: batch
norm after every convolution and a stride of 2 in the first (half the cost, the same map). Dense layers
of 512 units with dropout 0.2 instead of 4096 with 0.5, for datasets of a few hundred clips a class
(docs/results.md).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from ..base.config import Config
from ..base.errors import UsageError
from .layers import Int16ToFloat, class_probabilities


def _conv_bn_relu(x, conv):
    return layers.Activation("relu")(layers.BatchNormalization(momentum=0.9)(conv(x)))


def envnet(config: Config, n_classes: int, activation: str = "softmax") -> keras.Model:
    pool = max(1, config.sample_rate // 200)                   # 10 ms of the first conv's output
    if config.crop_samples // 2 // pool < 60:
        raise UsageError(f"envnet needs crops of >= 0.6 s, got {config.crop_seconds} s; raise --crop-seconds")
    inputs = keras.Input(shape=(config.crop_samples, 1), name="wave", dtype="int16")
    x = ops.expand_dims(Int16ToFloat(name="int16_to_float")(inputs), -1)
    x = _conv_bn_relu(x, layers.Conv1D(40, 8, strides=2, use_bias=False))
    x = _conv_bn_relu(x, layers.Conv1D(40, 8, use_bias=False))
    x = layers.MaxPooling1D(pool)(x)                            # (batch, time, 40 filters)
    x = ops.expand_dims(ops.transpose(x, (0, 2, 1)), -1)        # (batch, 40 filters, time, 1)
    x = _conv_bn_relu(x, layers.Conv2D(50, (8, 13), use_bias=False))
    x = layers.MaxPooling2D((3, 3))(x)
    x = _conv_bn_relu(x, layers.Conv2D(50, (1, 5), use_bias=False))
    x = layers.MaxPooling2D((1, 3))(x)
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dropout(0.2)(layers.Dense(512, activation="relu")(x))
    outputs = class_probabilities(n_classes, activation)(x)
    return keras.Model(inputs, outputs, name="envnet")
