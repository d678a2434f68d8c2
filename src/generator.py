"""Stage 4, generator: batches of crops from the cached inputs for Keras (a PyDataset, Keras 3's
`keras.utils.Sequence`).

Training batches take a random crop of long clips and pad short ones at a random offset, and the
order is reshuffled every epoch. Validation and test batches are the same every time: long clips give
their first crop, short clips are padded evenly on both sides. `predict_clips` predicts over windows
covering each whole clip instead.
"""
from __future__ import annotations

import math

import keras
import numpy as np

from .features import InputKind


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


def window_starts(n: int, length: int, hop: int) -> list[int]:
    """Window starts covering n rows with windows of `length` every `hop` rows, the last one ending at
    the clip's end; a single window (start 0) for a clip no longer than one window."""
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, hop))
    if starts[-1] != n - length:
        starts.append(n - length)
    return starts


def windows(rows: np.ndarray, length: int, hop: int, pad_row: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(windows x length x width) covering the clip, short clips padded centred as in validation."""
    rows = rows.reshape(len(rows), len(pad_row))
    starts = window_starts(len(rows), length, hop)
    if len(rows) <= length:
        return crop_or_pad(rows, length, pad_row)[None], starts
    return np.stack([rows[s:s + length] for s in starts]), starts


class Batches(keras.utils.PyDataset):
    """The batch order of a list of clips, shared by the host and device feeds: reshuffled every epoch
    in training (seeded by seed and epoch), in list order otherwise; `rows(index)` gives the clips of
    one batch and `rng(index)` its random numbers."""

    def __init__(self, fnames, targets: np.ndarray | None, batch_size: int, train: bool, seed: int,
                 mixup: float, weights: np.ndarray | None, min_length: int | None,
                 full_batches: bool | None, **pydataset_kwargs):
        # workers, use_multiprocessing and max_queue_size belong to PyDataset itself.
        super().__init__(**pydataset_kwargs)
        self.fnames = list(fnames)
        self.targets = None if targets is None else np.asarray(targets, np.float32)
        self.batch_size, self.train, self.seed, self.mixup = batch_size, train, seed, mixup
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        self.min_length = min_length  # training crops of random length from here to the crop length
        self.full_batches = train if full_batches is None else full_batches
        self.epoch = 0
        self.order = self._order()

    def __len__(self) -> int:
        return math.ceil(len(self.fnames) / self.batch_size)

    def _order(self) -> np.ndarray:
        if not self.train:
            return np.arange(len(self.fnames))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.fnames))

    def rows(self, index: int) -> np.ndarray:
        """The clips of batch `index`. Training batches are always full (the last one is topped up
        from the start of the epoch's order), so a compiled step sees one shape; so are prediction
        batches with full_batches (predict_sequence drops the extra rows)."""
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        if self.full_batches and len(rows) < self.batch_size:
            rows = np.concatenate([rows, np.resize(self.order, self.batch_size - len(rows))])
        return rows

    def rng(self, index: int) -> np.random.Generator | None:
        """One generator per (epoch, batch) in training: the same crops whatever worker serves it."""
        return np.random.default_rng([self.seed, self.epoch, index]) if self.train else None

    def on_epoch_end(self) -> None:
        if self.train:
            self.epoch += 1
            self.order = self._order()


class ClipSequence(Batches):
    """(inputs, one-hot targets[, sample weights]) batches for training, or inputs alone for
    prediction, cut on the host from the cached inputs."""

    def __init__(self, source: InputKind, fnames: list[str], targets: np.ndarray | None = None,
                 batch_size: int = 64, train: bool = False, seed: int = 0, mixup: float = 0.0,
                 weights: np.ndarray | None = None, augment=None, min_length: int | None = None,
                 full_batches: bool | None = None, **pydataset_kwargs):
        super().__init__(fnames, targets, batch_size, train, seed, mixup, weights, min_length, full_batches,
                         **pydataset_kwargs)
        self.source = source
        self.augment = augment  # a function (batch, rng) -> batch, applied to training batches

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
        inputs = self.source.finish(batch)
        if targets is None:
            return inputs
        return (inputs, targets) if self.weights is None else (inputs, targets, self.weights[rows])


def as_dtype(values: np.ndarray, dtype) -> np.ndarray:
    """Float results back to the batch's dtype: integer samples are rounded and clipped to range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.round(values), info.min, info.max)
    return values.astype(dtype)


def add_noise(batch: np.ndarray, rng: np.random.Generator, min_snr: float, max_snr: float = 40.0) -> np.ndarray:
    """White noise on each (B, samples, 1) crop at an SNR drawn from [min_snr, max_snr] dB."""
    signal = batch.astype(np.float32)
    power = (signal ** 2).mean(axis=(1, 2), keepdims=True)
    snr = rng.uniform(min_snr, max_snr, size=(len(batch), 1, 1))
    noise = rng.standard_normal(signal.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr / 10))
    return as_dtype(signal + noise, batch.dtype)


def gain(batch: np.ndarray, rng: np.random.Generator, max_db: float) -> np.ndarray:
    """Each (B, samples, 1) crop scaled by a gain drawn from [-max_db, max_db] dB."""
    db = rng.uniform(-max_db, max_db, size=(len(batch), 1, 1))
    return as_dtype(batch.astype(np.float32) * (10 ** (db / 20)).astype(np.float32), batch.dtype)


def time_shift(batch: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Each crop rolled in time by up to `fraction` of its length, either way (what leaves one end
    comes in at the other)."""
    limit = int(fraction * batch.shape[1])
    for k, shift in enumerate(rng.integers(-limit, limit + 1, size=len(batch))):
        batch[k] = np.roll(batch[k], int(shift), axis=0)
    return batch


def stretch(batch: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Each crop played faster or slower by a factor drawn from [1 - amount, 1 + amount] about its
    centre, by linear interpolation (the pitch moves with it, as in speed perturbation); what a faster
    crop leaves uncovered at the ends is silence."""
    length = batch.shape[1]
    centre = (length - 1) / 2
    out = np.empty_like(batch)
    for k, factor in enumerate(rng.uniform(1 - amount, 1 + amount, size=len(batch))):
        positions = centre + (np.arange(length) - centre) * factor
        out[k, :, 0] = as_dtype(np.interp(positions, np.arange(length), batch[k, :, 0], left=0, right=0),
                                batch.dtype)
    return out


def mix(batch: np.ndarray, targets: np.ndarray, alpha: float, rng: np.random.Generator):
    """Mixup: each example becomes lam * itself + (1 - lam) * a random partner of the batch, its
    targets with the same lam, lam ~ Beta(alpha, alpha). Integer inputs are rounded back."""
    lam = rng.beta(alpha, alpha, size=len(batch)).astype(np.float32)
    partner = rng.permutation(len(batch))
    shape = (-1,) + (1,) * (batch.ndim - 1)
    mixed = lam.reshape(shape) * batch + (1 - lam.reshape(shape)) * batch[partner]
    lam = lam[:, None]
    return as_dtype(mixed, batch.dtype), lam * targets + (1 - lam) * targets[partner]


def predict_padded(model, inputs, batch_size: int) -> np.ndarray:
    """model.predict on inputs padded to whole batches (one compiled shape, however many rows)."""
    n = len(inputs)
    extra = -n % batch_size
    if extra:
        inputs = np.concatenate([inputs, np.repeat(inputs[:1], extra, axis=0)])
    return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))[:n]


def predict_sequence(model, sequence: ClipSequence) -> np.ndarray:
    """Predictions for every clip of a non-training sequence made with full_batches=True."""
    return np.asarray(model.predict(sequence, verbose=0))[:len(sequence.fnames)]


def predict_clips(model, source: InputKind, fnames: list[str], batch_size: int = 64,
                  combine: str = "mean", chunk: int = 256) -> np.ndarray:
    """Class probabilities per clip from windows covering the whole clip (a crop long, every half
    crop, the last flush with the end), combined by their mean or geometric mean. Clips go through
    `chunk` at a time, so memory stays bounded on long test sets."""
    length = source.crop_length
    out = []
    for first in range(0, len(fnames), chunk):
        stacks = [windows(source.store.read(f), length, length // 2, source.pad_row)[0]
                  for f in fnames[first:first + chunk]]
        probs = predict_padded(model, source.finish(np.concatenate(stacks)), batch_size)
        bounds = np.cumsum([0] + [len(s) for s in stacks])
        out += [combine_windows(probs[a:b], combine) for a, b in zip(bounds, bounds[1:])]
    return np.array(out).reshape(len(fnames), -1)


def combine_windows(probs: np.ndarray, combine: str = "mean") -> np.ndarray:
    """One clip's probabilities from those of its windows: their mean, or their geometric mean."""
    from .metrics import geometric_mean

    return probs.mean(axis=0) if combine == "mean" else geometric_mean([p[None] for p in probs])[0]
