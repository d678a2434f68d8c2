"""The training loss and metric that know which clips are unverified.

A training target row may carry one column more than the network has classes: the clip's unverified
flag (1 = manually_verified is 0), appended by the feeds after mixup (src.feeds). Validation
targets have no flag column. Registered, so saved models load anywhere."""
from __future__ import annotations

import keras
from keras import ops


def split_flags(y_true, y_pred):
    """(class targets, unverified flags or None) of a target batch."""
    if y_true.shape[-1] == y_pred.shape[-1] + 1:
        return y_true[:, :-1], y_true[:, -1] > 0.5
    return y_true, None


@keras.saving.register_keras_serializable(package="freesound")
class UnverifiedLoss(keras.losses.Loss):
    """The task's per-clip cross-entropy (`per_clip`, a function of keras.losses: categorical, or binary
    averaged over the labels for multi-label tagging) that treats unverified clips apart: flagged clips
    count `weight` times, and in every batch the `drop` share of flagged clips with the highest loss are
    left out (their labels are the likeliest to be wrong). Per-clip losses go to Keras's own reduction
    (the mean over the batch); without flags it is the plain cross-entropy."""

    def __init__(self, weight: float = 1.0, drop: float = 0.0, per_clip: str = "categorical_crossentropy",
                 name: str = "unverified_loss", **kwargs):
        kwargs.pop("multilabel", None)  # the flag of models saved before the task named its loss
        super().__init__(name=name, **kwargs)
        self.weight, self.drop, self.per_clip = float(weight), float(drop), per_clip

    def call(self, y_true, y_pred):
        y_true, flagged = split_flags(y_true, y_pred)
        losses = getattr(keras.losses, self.per_clip)(y_true, y_pred)
        if flagged is None:
            return losses
        weights = ops.where(flagged, self.weight, 1.0)
        if self.drop > 0:
            # Rank the flagged clips by loss (0 = highest); unflagged ones rank last.
            ranked = ops.where(flagged, ops.stop_gradient(losses), -1.0)
            rank = ops.argsort(ops.argsort(-ranked))
            n_drop = ops.floor(self.drop * ops.sum(ops.cast(flagged, losses.dtype)))
            dropped = ops.logical_and(flagged, ops.cast(rank, losses.dtype) < n_drop)
            weights = ops.where(dropped, 0.0, weights)
        return losses * ops.cast(weights, losses.dtype)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "drop": self.drop, "per_clip": self.per_clip}


@keras.saving.register_keras_serializable(package="freesound")
def label_accuracy(y_true, y_pred):
    """Top-1 accuracy against the class targets (a flag column, if any, is not a class)."""
    y_true, _ = split_flags(y_true, y_pred)
    return ops.cast(ops.argmax(y_true, axis=-1) == ops.argmax(y_pred, axis=-1), "float32")


@keras.saving.register_keras_serializable(package="freesound")
def top_label_accuracy(y_true, y_pred):
    """Multi-label: whether the highest-scored label is one of the clip's labels."""
    y_true, _ = split_flags(y_true, y_pred)
    best = ops.one_hot(ops.argmax(y_pred, axis=-1), ops.shape(y_pred)[-1])
    return ops.cast(ops.sum(best * ops.cast(y_true > 0.5, best.dtype), axis=-1) > 0, "float32")


ACCURACIES = {"label_accuracy": label_accuracy, "top_label_accuracy": top_label_accuracy}
"""The accuracy each task logs while training (src.dataset.task.Task.train_metric)."""
