"""A CNN pretrained on sound-effect libraries, fine-tuned (preset aisfx).

The embedding network of the `aisfx` package (A. B. Ma and A. Lerch, "Representation Learning for the
Automatic Indexing of Sound Effects Libraries", ISMIR 2022; weights CC BY 4.0): four blocks of two 3x3
conv (no bias) + batch norm + ReLU, 64 to 512 channels, 2x2 max pooling after the first three; the mean
over mel bands, then the max over time gives a 512-d embedding. It was trained on about 2.3 s of
44.1 kHz audio as 96-band mel spectrograms (src.models.layers.SfxMel), on commercial sound-effect
libraries, so it has heard nothing of Freesound. Rebuilt here with keras, its weights read from the
installed package's checkpoint without torch (src.models.torch_checkpoint); a new dropout + softmax
head on the embedding.

tests/reference/ holds the package's own outputs on fixed inputs, which the rebuilt network must give.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..base.config import Config
from ..base.errors import UsageError
from .layers import Int16ToFloat, SfxMel, class_probabilities, spec_mask
from .pretrained import WEIGHTS
from .torch_checkpoint import read_checkpoint

# What the pretrained weights were trained on; a preset must keep it.
PRETRAINED_INPUT = {"sample_rate": 44100, "n_fft": 2048, "hop_length": 1024, "n_mels": 96}
CHANNELS = (64, 128, 256, 512)
EMBEDDING_SIZE = CHANNELS[-1]


def sfx_mel(config: Config, name: str = "sfx_mel") -> SfxMel:
    return SfxMel(config.sample_rate, config.n_fft, config.hop_length, config.n_mels, name=name, dtype="float32")


def embedding_network(n_mels: int = 96, weights: dict | None = None) -> keras.Model:
    """Spectrogram (batch, n_mels, frames of any number >= 8, 1) -> (batch, 512) embedding, with the
    checkpoint's weights when given (its state dict, as numpy arrays)."""
    inputs = keras.Input(shape=(n_mels, None, 1), name="spectrogram")
    x = inputs
    for block, filters in enumerate(CHANNELS, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            # torch's batch norm: epsilon 1e-5; momentum 0.9 is torch's 0.1
            x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"block{block}_bn{conv}")(x)
            x = layers.Activation("relu")(x)
        if block < len(CHANNELS):
            x = layers.MaxPooling2D(2)(x)
    x = ops.max(ops.mean(x, axis=1), axis=1)                                   # bands, then time
    model = keras.Model(inputs, x, name="aisfx_embedding")
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: keras.Model, state: dict) -> None:
    """The checkpoint's embedding_net tensors into the rebuilt layers. torch lays a conv kernel out as
    (out, in, time, bands) over (time, bands) inputs; here the input is (bands, frames), so the kernel
    becomes (bands, time, in, out)."""
    for block in range(1, len(CHANNELS) + 1):
        for conv in (1, 2):
            prefix = f"embedding_net.conv_block{block}"
            kernel = state[f"{prefix}.conv{conv}.weight"]
            model.get_layer(f"block{block}_conv{conv}").set_weights([np.transpose(kernel, (3, 2, 1, 0))])
            model.get_layer(f"block{block}_bn{conv}").set_weights(
                [state[f"{prefix}.bn{conv}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")])


def pretrained_state() -> dict:
    """The installed aisfx checkpoint's state dict (numpy arrays); a SetupError saying how to install it
    when absent."""
    state, _datasets = read_checkpoint(WEIGHTS["aisfx"].path())
    return state


def aisfx_cnn(config: Config, n_classes: int, activation: str = "softmax") -> keras.Model:
    inputs, x = spectrogram(config)
    masks = spec_mask(config)
    if masks is not None:
        x = masks(x)
    x = embedding_network(config.n_mels, pretrained_state())(x)
    x = layers.Dropout(0.3)(x)
    outputs = class_probabilities(n_classes, activation)(x)
    return keras.Model(inputs, outputs, name="aisfx_cnn")


def embedding_model(config: Config) -> keras.Model:
    """int16 crops -> the pretrained 512-d embedding, as the package computes it (no head, no masks)."""
    inputs, x = spectrogram(config)
    return keras.Model(inputs, embedding_network(config.n_mels, pretrained_state())(x), name="aisfx_embedder")


def spectrogram(config: Config):
    """The int16 wave input and the spectrogram the pretrained network reads, (batch, bands, frames, 1)."""
    changed = {k: (getattr(config, k), v) for k, v in PRETRAINED_INPUT.items() if getattr(config, k) != v}
    if changed:
        raise UsageError("the pretrained aisfx weights expect " + ", ".join(
            f"{k.replace('_', '-')} {v}" for k, (_, v) in changed.items()) + "; got " + ", ".join(
            f"{k.replace('_', '-')} {mine}" for k, (mine, _) in changed.items()))
    frames = config.crop_frames
    if frames < 8:
        raise UsageError(f"aisfx_cnn pools by 2 three times: it needs >= 8 frames, got {frames}; raise --crop-seconds")
    inputs = keras.Input(shape=(config.crop_samples, 1), name="wave", dtype="int16")
    x = sfx_mel(config)(Int16ToFloat(name="int16_to_float")(inputs))          # (batch, mels, frames)
    return inputs, layers.Reshape((config.n_mels, frames, 1))(x)
