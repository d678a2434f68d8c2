"""The state a killed fold continues from, in one file written whole (resume.npz): every variable of
the model and its optimizer (weights, moments, step, random-number state), the best weights so far,
early stopping's state and the epoch times. A kill at any moment leaves the previous epoch's state or
the new one, never a mix. A file damaged all the same (a disk that lost its tail, a copy cut short) is set
aside, and the fold starts over."""
from __future__ import annotations

import json
import logging
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.files import atomic_write

log = logging.getLogger(__name__)


@dataclass
class ResumeState:
    epoch: int
    """the last completed epoch (0-based)"""
    stopped: bool
    """early stopping ended training after that epoch"""
    stopping: dict
    """early stopping's best, wait and best_epoch"""
    seconds: list[float]
    """every epoch's duration so far"""
    variables: list[np.ndarray]
    """the model's variables, then its optimizer's"""
    best_weights: list[np.ndarray] | None
    """the best epoch's weights so far"""
    fingerprints: dict
    """the train rows and fold assignment trained on (Dataset.fingerprints): a changed dataset starts over"""

    @classmethod
    def capture(cls, model, epoch: int, stopping, seconds: list[float], fingerprints: dict) -> ResumeState:
        """The state of a model being fitted after `epoch`, with its early stopping (ResumableEarlyStopping)."""
        import keras

        variables = [keras.ops.convert_to_numpy(v) for v in [*model.variables, *model.optimizer.variables]]
        return cls(epoch, bool(model.stop_training), stopping.state(), list(seconds), variables,
                   stopping.best_weights, fingerprints)

    def save(self, path: Path) -> None:
        arrays = {f"variable_{k}": v for k, v in enumerate(self.variables)}
        arrays.update({f"best_{k}": w for k, w in enumerate(self.best_weights or [])})
        record = {"epoch": self.epoch, "stopped": self.stopped, "stopping": self.stopping, "seconds": self.seconds,
                  "fingerprints": self.fingerprints, "n_variables": len(self.variables),
                  "n_best": None if self.best_weights is None else len(self.best_weights)}
        arrays["state"] = np.array(json.dumps(record))
        atomic_write(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: Path) -> ResumeState | None:
        """The saved state; None when the file is damaged: it is renamed resume.npz.damaged-<time> (kept for
        a look, never read again) with a note in the log, and the fold starts over."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                record = json.loads(str(saved["state"]))
                variables = [saved[f"variable_{k}"] for k in range(record["n_variables"])]
                best = None if record["n_best"] is None else [saved[f"best_{k}"] for k in range(record["n_best"])]
            return cls(record["epoch"], record["stopped"], record["stopping"], record["seconds"], variables, best,
                       record.get("fingerprints", {}))
        except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            path.replace(aside)
            log.warning("%s is damaged (%s: %s): set aside as %s; the fold starts from scratch", path,
                        type(error).__name__, error, aside)
            return None

    def restore(self, model, sequence, epochs: int) -> int:
        """The model as it was after the saved epoch (weights, optimizer state, schedule position and
        random-number state) and the training batches continuing from the next epoch's order; returns
        the epoch training continues at (`epochs` when early stopping had ended it). Early stopping
        takes its part itself (ResumableEarlyStopping)."""
        model.optimizer.build(model.trainable_variables)
        for variable, value in zip([*model.variables, *model.optimizer.variables], self.variables, strict=True):
            variable.assign(value)
        first_epoch = epochs if self.stopped else self.epoch + 1
        sequence.start_at(first_epoch)  # batch 0 of the resumed fit is the first of that epoch
        return first_epoch
