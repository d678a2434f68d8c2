"""Stage 5, models: one file per network, each builder returning a keras.Model (src/core/networks.py lists
them with the input each reads); `build_model` compiles the preset's network with its optimizer,
schedule and loss.

Written with `keras` and `keras.ops` only, so they run under the TensorFlow, JAX or PyTorch backend.
"""
from __future__ import annotations

import keras

from ..core.config import Config
from ..core.networks import network
from .layers import FloatToInt16, Int16ToFloat, MfccFrontEnd, MinMaxScale, SpecMask
from .losses import UnverifiedLoss, label_accuracy

__all__ = ["build_model", "FloatToInt16", "Int16ToFloat", "MfccFrontEnd", "MinMaxScale", "SpecMask",
           "UnverifiedLoss"]


def build_model(config: Config, n_classes: int, steps_per_epoch: int = 1, steps_per_execution: int = 1,
                **statistics) -> keras.Model:
    """The preset's network in its precision, compiled with Adam (or AMSGrad), its learning-rate
    warm-up and schedule and categorical cross-entropy that treats unverified clips as the preset says
    (UnverifiedLoss); `steps_per_execution` training steps per call into the compiled step."""
    previous = keras.config.dtype_policy()
    # Layers take the policy when they are made; float32 pieces (front ends, softmax) say so themselves.
    keras.config.set_dtype_policy("mixed_bfloat16" if config.precision == "bfloat16" else "float32")
    try:
        model = network(config.network).build_function()(config, n_classes, **statistics)
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
                  loss=UnverifiedLoss(config.unverified_weight, config.drop_unverified),
                  metrics=[keras.metrics.MeanMetricWrapper(label_accuracy, name="accuracy")],
                  steps_per_execution=steps_per_execution)
    return model
