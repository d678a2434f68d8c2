"""A fold's batches, chosen once: where training crops are cut (on the accelerator, src.feeds.device, or
on the host, src.feeds.host), the training and validation sequences and why that feed was taken."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..base import backend
from ..base.config import Config, Feeding
from ..base.errors import UsageError
from ..dataset.inputs import InputKind
from ..dataset.task import task_of
from .augment import Augmentation
from .device import ClipBank, DeviceClipSequence, bank_bytes, room_for, supports
from .host import Batches, ClipSequence

log = logging.getLogger(__name__)


@dataclass
class Feeds:
    """A fold's training and validation batches and where they are cut."""

    kind: str
    """device or host"""
    train: Batches
    validation: Batches
    validation_targets: np.ndarray
    reason: str
    """why this feed, for the log"""

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train)

    @classmethod
    def choose(cls, config: Config, feeding: Feeding, source: InputKind, fit: pd.DataFrame, val: pd.DataFrame,
               labels: list[str], seed: int, on_gpu: bool) -> Feeds:
        """Cut on the accelerator when asked (--feed device), or on auto with a GPU when the preset allows
        it and the audio cache fits beside training in the process's share of GPU memory; else on the host."""
        wanted = feeding.feed == "device" or (feeding.feed == "auto" and on_gpu)
        # The memory check only for a preset the device feed can take, before anything is copied.
        why_not = supports(config) or (room_for(bank_bytes(source), backend.device_memory()) if wanted else None)
        if feeding.feed == "device" and why_not:
            raise UsageError(f"--feed device cannot serve preset {config.name}: {why_not}; use --feed host")
        task = task_of(fit)  # the rows' own table says one label per clip or several
        targets, flags = task.targets(labels, fit), unverified_flags(fit, config)
        val_targets = task.targets(labels, val)
        if wanted and not why_not:
            bank = ClipBank(source)
            reason = f"device feed: {bank.nbytes / 1e9:.2f} GB of audio on the {'GPU' if on_gpu else 'CPU'}"
            return cls("device", training_batches(config, source, fit.fname, targets, seed, flags, bank=bank),
                       DeviceClipSequence(bank, val.fname, None, config.batch_size, full_batches=True),
                       val_targets, reason)
        device = "GPU" if on_gpu else "CPU"
        reason = f"host feed: {why_not}" if wanted else f"host feed (--feed {feeding.feed} on the {device})"
        return cls("host", training_batches(config, source, fit.fname, targets, seed, flags, feeding),
                   ClipSequence(source, val.fname, None, config.batch_size, full_batches=True, **feeding.pydataset()),
                   val_targets, reason)


def training_batches(config: Config, source: InputKind, fnames, targets: np.ndarray, seed: int,
                     flags: np.ndarray | None = None, feeding: Feeding | None = None,
                     bank: ClipBank | None = None) -> Batches:
    """The preset's training batches (crops, augmentation, mixup or between-class mixing): cut on the
    accelerator from `bank` when one is given, else on the host with `feeding`'s workers."""
    common = dict(train=True, seed=seed, flags=flags, augmentation=Augmentation.of(config, source.crop_length))
    if bank is not None:
        return DeviceClipSequence(bank, fnames, targets, config.batch_size, **common)
    return ClipSequence(source, fnames, targets, config.batch_size, **common, **(feeding or Feeding()).pydataset())


def unverified_flags(rows: pd.DataFrame, config: Config) -> np.ndarray | None:
    """Per-clip unverified flags for UnverifiedLoss (appended to the targets), or None when unverified
    clips are treated as is."""
    if config.unverified_weight == 1.0 and config.drop_unverified == 0:
        return None
    return (rows.manually_verified.to_numpy() == 0).astype(np.float32)
