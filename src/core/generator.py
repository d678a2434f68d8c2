"""Stage 4, generator: batches of crops from the cached inputs for Keras (a PyDataset, Keras 3's
`keras.utils.Sequence`).

Training batches take a random crop of long clips and pad short ones at a random offset, and the
order is reshuffled every epoch. Validation and test batches are the same every time: long clips give
their first crop, short clips are padded evenly on both sides (src.core.inference predicts over windows
covering each whole clip instead). Augmentation: src.core.augment.
"""
from __future__ import annotations

import math

import keras
import numpy as np

from .augment import between_class, mix
from .inputs import InputKind


def crop_plans(lengths, length: int, rng: np.random.Generator | None = None,
               min_take: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which rows of clips of `lengths` rows fill crops of `length` rows, for a whole batch at once:
    arrays of (first clip row, rows taken, rows of padding before them). Long clips: a random crop
    with rng, else the first. Short clips: padded at a random offset with rng, else centred. With rng
    and min_take, each crop's own length is random too (min_take to length rows, the rest padded:
    random crop lengths). The one place that decides where a crop comes from, for the host feed and
    the device feed alike."""
    n = np.asarray(lengths, np.int64)
    if rng is None:
        take = np.minimum(n, length)
        return np.zeros_like(n), take, (length - take) // 2
    wanted = rng.integers(min_take, length + 1, size=len(n)) if min_take else length
    take = np.minimum(n, wanted)
    return rng.integers(0, n - take + 1), take, rng.integers(0, length - take + 1)


def crop_plan(n: int, length: int, rng: np.random.Generator | None = None,
              min_take: int = 0) -> tuple[int, int, int]:
    """crop_plans for one clip of n rows."""
    return tuple(int(v[0]) for v in crop_plans([n], length, rng, min_take))


def place(rows: np.ndarray, before: int, pad_row: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Fill out (length x width) with pad_row, then rows from index `before`, then pad_row again."""
    out[:before] = pad_row
    out[before:before + len(rows)] = rows
    out[before + len(rows):] = pad_row
    return out


def crop_or_pad(clip: np.ndarray, length: int, pad_row: np.ndarray,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly `length` rows of an in-memory clip, by crop_plan."""
    start, take, before = crop_plan(len(clip), length, rng)
    out = np.empty((length, len(pad_row)), pad_row.dtype)
    return place(clip[start:start + take].reshape(-1, len(pad_row)), before, pad_row, out)


class Batches(keras.utils.PyDataset):
    """The batch order of a list of clips, shared by the host and device feeds: reshuffled every epoch
    in training (seeded by seed and epoch), in list order otherwise.

    Training sequences are endless streams: batch `i` is batch `i % len` of epoch `i // len` (plus the
    epoch a resumed fold starts at), so what a batch holds depends on its number alone, never on when
    Keras's epoch callbacks run relative to a prefetching iterator (TensorFlow's tf.data starts the
    next epoch's batches before on_epoch_end). Fit them with steps_per_epoch=len(sequence)."""

    def __init__(self, fnames, targets: np.ndarray | None, batch_size: int, train: bool, seed: int,
                 mixup: float, flags: np.ndarray | None, min_length: int | None,
                 full_batches: bool | None, **pydataset_kwargs):
        # workers, use_multiprocessing and max_queue_size belong to PyDataset itself.
        super().__init__(**pydataset_kwargs)
        self.fnames = list(fnames)
        self.targets = None if targets is None else np.asarray(targets, np.float32)
        self.batch_size, self.train, self.seed, self.mixup = batch_size, train, seed, mixup
        self.flags = None if flags is None else np.asarray(flags, np.float32)
        self.min_length = min_length  # training crops of random length from here to the crop length
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
    prediction, cut on the host from the cached inputs."""

    def __init__(self, source: InputKind, fnames: list[str], targets: np.ndarray | None = None,
                 batch_size: int = 64, train: bool = False, seed: int = 0, mixup: float = 0.0,
                 flags: np.ndarray | None = None, augment=None, min_length: int | None = None,
                 full_batches: bool | None = None, between_class_rate: int = 0, **pydataset_kwargs):
        super().__init__(fnames, targets, batch_size, train, seed, mixup, flags, min_length, full_batches,
                         **pydataset_kwargs)
        self.source = source
        self.augment = augment  # a function (batch, rng) -> batch, applied to training batches
        self.between_class_rate = between_class_rate  # the crops' sample rate with between-class mixing, else 0

    def __getitem__(self, index: int):
        rows, rng = self.rows(index), self.rng(index)
        store, length = self.source.store, self.source.crop_length
        plans = crop_plans([store.length(self.fnames[i]) for i in rows], length, rng, self.min_length or 0)
        batch = np.empty((len(rows), length, len(self.source.pad_row)), self.source.dtype)
        # Only the rows of each crop are read from the cache, never the whole clip.
        for out, i, start, take, before in zip(batch, rows, *plans):
            place(store.read(self.fnames[i], int(start), int(take)), int(before), self.source.pad_row, out)
        targets = None if self.targets is None else self.targets[rows]
        if self.train and self.augment is not None:
            batch = self.augment(batch, rng)
        if self.train and self.mixup > 0 and targets is not None:
            batch, targets = mix(batch, targets, self.mixup, rng)
        elif self.train and self.between_class_rate and targets is not None:
            batch, targets = between_class(batch, targets, rng, self.between_class_rate)
        inputs = self.source.finish(batch)
        if targets is None:
            return inputs
        return inputs, self.with_flags(targets, rows)
