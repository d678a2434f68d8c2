"""Callbacks of a fold's training: validation by prediction, epoch times, early stopping and the
state a killed fold resumes from."""
from __future__ import annotations

import time

import keras
import numpy as np

from ..dataset.task import SINGLE_LABEL, Task
from .inference import predict_sequence
from .resume import ResumeState


class EpochValidation(keras.callbacks.Callback):
    """Adds the task's validation figures to each epoch's logs from predictions of the validation crops,
    over the real rows only (src.dataset.task: val_loss, the cross-entropy as Keras computes it, and
    val_accuracy; for multi-label tagging val_loss, val_lwlrap and val_map). Prediction runs in full
    batches, so one compiled predict step serves validation and the final predictions and no other
    shape is compiled. Must come before the callbacks that read val_loss."""

    def __init__(self, sequence, targets: np.ndarray, task: Task = SINGLE_LABEL):
        super().__init__()
        self.sequence, self.targets, self.task = sequence, np.asarray(targets, np.float64), task

    def on_epoch_end(self, epoch, logs=None):
        probs = predict_sequence(self.model, self.sequence).astype(np.float64)
        if logs is not None:
            logs.update(self.task.validation_logs(self.targets, probs))


class EpochTimer(keras.callbacks.Callback):
    """Seconds per epoch: the first one holds the compilation, the median the steady state."""

    def __init__(self, seconds: list[float] | None = None):
        super().__init__()
        self.seconds: list[float] = list(seconds or [])

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)

    @property
    def first_epoch(self) -> float | None:
        return round(self.seconds[0], 2) if self.seconds else None

    def median_epoch(self) -> float | None:
        rest = self.seconds[1:] or self.seconds
        return round(float(np.median(rest)), 3) if rest else None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that keeps the best epoch's weights and can continue from a saved state."""

    def __init__(self, patience: int, resume: ResumeState | None = None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self.resume = resume

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resume:
            self.best, self.wait, self.best_epoch = (self.resume.stopping[k] for k in ("best", "wait", "best_epoch"))
            self.best_weights = self.resume.best_weights

    def state(self) -> dict:
        return {"best": None if self.best is None else float(self.best), "wait": int(self.wait),
                "best_epoch": int(self.best_epoch)}


# The resume state may cost this share of training time: saved after every epoch of seconds on a CPU,
# after every few when epochs last a fraction of a second on a GPU (about 30 ms a save for logmel).
SAVE_SHARE = 0.05


class FoldCheckpoint(keras.callbacks.Callback):
    """After an epoch (the last callback, so the epoch's log row is written): the fold's resume state,
    so a killed fold continues from there with the same numbers. Saved after an epoch that ends at
    least `every` seconds after the last save ended (0: every epoch); by default after one that ends
    at least 1 / SAVE_SHARE times the last save's duration after it, which keeps saving under 5 % of
    the time."""

    def __init__(self, path, stopping: ResumableEarlyStopping, timer: EpochTimer, every: float | None = None,
                 fingerprints: dict | None = None):
        super().__init__()
        self.path, self.stopping, self.timer, self.every = path, stopping, timer, every
        self.fingerprints = fingerprints or {}
        self.saved, self.cost = time.perf_counter(), 0.0

    def due(self, now: float) -> bool:
        wait = self.every if self.every is not None else self.cost / SAVE_SHARE
        return now - self.saved >= wait

    def on_epoch_end(self, epoch, logs=None):
        if not self.due(time.perf_counter()):
            return
        started = time.perf_counter()
        ResumeState.capture(self.model, epoch, self.stopping, self.timer.seconds, self.fingerprints).save(self.path)
        self.saved = time.perf_counter()
        self.cost = self.saved - started
