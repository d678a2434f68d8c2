"""The networks: one file each, each builder returning a keras.Model (BUILDERS; src/base/networks.py says
what each reads); `build_model` compiles the preset's network with its optimizer, schedule and loss;
FRONT_ENDS turn float audio into each input kind inside a model (export); pretrained weights and their
reader (pretrained.py, torch_checkpoint.py).

Written with `keras` and `keras.ops` only, so they run under the TensorFlow, JAX or PyTorch backend.
"""
from __future__ import annotations

import keras

from ..base.config import Config
from ..base.networks import network
from ..dataset.task import SINGLE_LABEL, Task
from .aisfx_cnn import aisfx_cnn
from .conv1d import conv1d
from .envnet import envnet
from .layers import FloatToInt16, Int16ToFloat, MfccFrontEnd, MinMaxScale, SpecMask
from .logmel_cnn import logmel_cnn
from .losses import ACCURACIES, UnverifiedLoss
from .mfcc2d import mfcc2d
from .pretrained import WEIGHTS

__all__ = ["build_model", "check_weights", "front_end", "BUILDERS", "FRONT_ENDS", "FloatToInt16", "Int16ToFloat",
           "MfccFrontEnd", "MinMaxScale", "SpecMask", "UnverifiedLoss"]

# Each network of src.base.networks.NETWORKS: builder(config, n_classes, activation, **statistics) -> keras.Model.
BUILDERS = {"conv1d": conv1d, "mfcc2d": mfcc2d, "logmel_cnn": logmel_cnn, "envnet": envnet, "aisfx_cnn": aisfx_cnn}

# Per input kind (src.base.networks.INPUTS): a layer turning float audio in [-1, 1] (batch, crop_samples)
# into that input, as the cache holds it, so that an exported model takes raw audio.
FRONT_ENDS = {
    "wave": lambda config: keras.Sequential([keras.layers.Reshape((config.crop_samples, 1)), FloatToInt16()]),
    "mfcc": lambda config: MfccFrontEnd(config.sample_rate, config.n_fft, config.hop_length, config.n_mels,
                                        config.n_mfcc),
}


def check_weights(network_name: str) -> None:
    """A SetupError saying how to install them if the network's pretrained weights are absent."""
    weights = network(network_name).weights
    if weights is not None:
        WEIGHTS[weights].path()


def front_end(config: Config) -> keras.Layer:
    """The front end of the preset's input kind (FRONT_ENDS)."""
    return FRONT_ENDS[config.features](config)


def build_model(config: Config, n_classes: int, steps_per_epoch: int = 1, steps_per_execution: int = 1,
                task: Task = SINGLE_LABEL, **statistics) -> keras.Model:
    """The preset's network in its precision, ending in the task's output (a softmax over the labels or a
    sigmoid per label), compiled with Adam (or AMSGrad), its learning-rate warm-up and schedule and the
    task's cross-entropy treating unverified clips as the preset says (UnverifiedLoss);
    `steps_per_execution` training steps per call into the compiled step."""
    previous = keras.config.dtype_policy()
    # Layers take the policy when they are made; float32 pieces (front ends, softmax) say so themselves.
    keras.config.set_dtype_policy("mixed_bfloat16" if config.precision == "bfloat16" else "float32")
    try:
        model = BUILDERS[config.network](config, n_classes, activation=task.activation, **statistics)
    finally:
        keras.config.set_dtype_policy(previous)
    learning_rate = config.learning_rate
    warmup = config.warmup_epochs * steps_per_epoch
    if config.schedule == "cosine" or warmup:
        # After the warm-up: cosine decay to 0 over the remaining steps, or (alpha=1) a constant rate.
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else config.learning_rate,
            decay_steps=max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch),
            alpha=0.0 if config.schedule == "cosine" else 1.0,
            warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, amsgrad=config.optimizer == "amsgrad"),
                  loss=UnverifiedLoss(config.unverified_weight, config.drop_unverified, task.loss),
                  metrics=[keras.metrics.MeanMetricWrapper(ACCURACIES[task.train_metric], name="accuracy")],
                  steps_per_execution=steps_per_execution)
    return model
