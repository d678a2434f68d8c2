"""Stage 4, generator: batches of crops from the cached inputs for Keras (a PyDataset, Keras 3's
`keras.utils.Sequence`).

Training batches take a random crop of long clips and pad short ones at a random offset, and the
order is reshuffled every epoch. Validation and test batches are the same every time: long clips give
their first crop, short clips are padded evenly on both sides.
"""
from __future__ import annotations

import math

import keras
import numpy as np

from .features import MfccInput, WaveInput


def crop_or_pad(clip: np.ndarray, length: int, pad_row: np.ndarray,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly `length` rows of clip: a crop (random with rng, else the first) or the clip padded
    with pad_row (at a random offset with rng, else centred)."""
    n = len(clip)
    if n >= length:
        start = int(rng.integers(0, n - length + 1)) if rng is not None else 0
        return np.asarray(clip[start:start + length], dtype=np.float32)
    before = int(rng.integers(0, length - n + 1)) if rng is not None else (length - n) // 2
    out = np.empty((length, clip.shape[1] if clip.ndim > 1 else 1), np.float32)
    out[:] = pad_row
    out[before:before + n] = clip.reshape(n, -1)
    return out


class ClipSequence(keras.utils.PyDataset):
    """(inputs, one-hot targets) batches for training, or inputs alone for prediction."""

    def __init__(self, source: WaveInput | MfccInput, fnames: list[str], targets: np.ndarray | None = None,
                 batch_size: int = 64, train: bool = False, seed: int = 0, **pydataset_kwargs):
        # workers, use_multiprocessing and max_queue_size belong to PyDataset itself.
        super().__init__(**pydataset_kwargs)
        self.source = source
        self.fnames = list(fnames)
        self.targets = None if targets is None else np.asarray(targets, np.float32)
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.order = self._order()

    def __len__(self) -> int:
        return math.ceil(len(self.fnames) / self.batch_size)

    def _order(self) -> np.ndarray:
        if not self.train:
            return np.arange(len(self.fnames))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.fnames))

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        # One generator per (epoch, batch): the same crops whatever worker serves the batch.
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        batch = np.stack([crop_or_pad(self.source.read(self.fnames[i]), self.source.crop_length,
                                      self.source.pad_row, rng) for i in rows])
        inputs = self.source.finish(batch)
        if self.targets is None:
            return inputs
        return inputs, self.targets[rows]

    def on_epoch_end(self) -> None:
        if self.train:
            self.epoch += 1
            self.order = self._order()
