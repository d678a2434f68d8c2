"""Batches of crops cut on the host from the cached inputs for Keras (a PyDataset, Keras 3's
`keras.utils.Sequence`), and the batch order both feeds share.

Training batches take a random crop of long clips and pad short ones at a random offset, and the
order is reshuffled every epoch. Validation and test batches are the same every time: long clips give
their first crop, short clips are padded evenly on both sides (src.training.inference predicts over
windows covering each whole clip instead). Augmentation: src.feeds.augment.
"""
from __future__ import annotations

import math

import keras
import numpy as np

from ..dataset.inputs import InputKind
from .augment import NO_AUGMENTATION, Augmentation, between_class, mix
from .crops import crop_plans, place


class Batches(keras.utils.PyDataset):
    """The batch order of a list of clips, shared by the host and device feeds: reshuffled every epoch
    in training (seeded by seed and epoch), in list order otherwise.

    Training sequences are endless streams: batch `i` is batch `i % len` of epoch `i // len` (plus the
    epoch a resumed fold starts at), so what a batch holds depends on its number alone, never on when
    Keras's epoch callbacks run relative to a prefetching iterator (TensorFlow's tf.data starts the
    next epoch's batches before on_epoch_end). Fit them with steps_per_epoch=len(sequence)."""

    def __init__(self, fnames, targets: np.ndarray | None = None, batch_size: int = 64, *, train: bool = False,
                 seed: int = 0, augmentation: Augmentation = NO_AUGMENTATION, flags: np.ndarray | None = None,
                 full_batches: bool | None = None, **pydataset_kwargs):
        # workers, use_multiprocessing and max_queue_size belong to PyDataset itself.
        super().__init__(**pydataset_kwargs)
        self.fnames = list(fnames)
        self.targets = None if targets is None else np.asarray(targets, np.float32)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augmentation = augmentation if train else NO_AUGMENTATION
        self.flags = None if flags is None else np.asarray(flags, np.float32)
        self.full_batches = train if full_batches is None else full_batches
        self.first_epoch = 0
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return math.ceil(len(self.fnames) / self.batch_size)

    @property
    def num_batches(self):
        return None if self.train else len(self)

    def locate(self, i: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of batch number i."""
        return divmod(i + self.first_epoch * len(self), len(self)) if self.train else (0, i)

    def order(self, epoch: int) -> np.ndarray:
        """The clips of an epoch in the order its batches take them."""
        if not self.train:
            return np.arange(len(self.fnames))
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.fnames))}
        return self._orders[epoch]

    def rows(self, i: int) -> np.ndarray:
        """The clips of batch i. Training batches are always full (the last of an epoch is topped up
        from the start of its order), so a compiled step sees one shape; so are prediction batches
        with full_batches (predict_sequence drops the extra rows)."""
        epoch, index = self.locate(i)
        order = self.order(epoch)
        rows = order[index * self.batch_size:(index + 1) * self.batch_size]
        if self.full_batches and len(rows) < self.batch_size:
            rows = np.concatenate([rows, np.resize(order, self.batch_size - len(rows))])
        return rows

    def rng(self, i: int) -> np.random.Generator | None:
        """One generator per (epoch, batch) in training: the same crops whatever worker serves it."""
        return np.random.default_rng([self.seed, *self.locate(i)]) if self.train else None

    def with_flags(self, targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Targets with each clip's unverified flag appended as one more column, after mixup (the flag
        stays the clip's own): what UnverifiedLoss reads."""
        return targets if self.flags is None else np.concatenate([targets, self.flags[rows, None]], axis=1)

    def start_at(self, epoch: int) -> None:
        """Continue a killed fold: batch 0 is the first of `epoch`, as in an uninterrupted run."""
        self.first_epoch = epoch


class ClipSequence(Batches):
    """(inputs, one-hot targets[ + an unverified-flag column]) batches for training, or inputs alone for
    prediction, cut on the host from the cached inputs (Batches says the rest of the arguments)."""

    def __init__(self, source: InputKind, fnames, targets: np.ndarray | None = None, batch_size: int = 64,
                 **batches):
        super().__init__(fnames, targets, batch_size, **batches)
        self.source = source
        self.wave_steps = self.augmentation.wave_steps()  # a function (batch, rng) -> batch, or None

    def __getitem__(self, index: int):
        rows, rng, augmentation = self.rows(index), self.rng(index), self.augmentation
        store, length = self.source.store, self.source.crop_length
        plans = crop_plans([store.length(self.fnames[i]) for i in rows], length, rng, augmentation.min_length)
        batch = np.empty((len(rows), length, len(self.source.pad_row)), self.source.dtype)
        # Only the rows of each crop are read from the cache, never the whole clip.
        for out, i, start, take, before in zip(batch, rows, *plans):
            place(store.read(self.fnames[i], int(start), int(take)), int(before), self.source.pad_row, out)
        targets = None if self.targets is None else self.targets[rows]
        if self.wave_steps is not None:
            batch = self.wave_steps(batch, rng)
        if augmentation.mixup > 0 and targets is not None:
            batch, targets = mix(batch, targets, augmentation.mixup, rng, augmentation.union)
        elif augmentation.between_class_rate and targets is not None:
            batch, targets = between_class(batch, targets, rng, augmentation.between_class_rate)
        inputs = self.source.finish(batch)
        if targets is None:
            return inputs
        return inputs, self.with_flags(targets, rows)
