"""Inference over whole clips: windows a crop long every half crop covering each clip, predicted in
full batches (one compiled shape) and combined into one probability row per clip. Used by training
(validation and test predictions) and by src.predict (new audio)."""
from __future__ import annotations

import numpy as np

from ..base.metrics import geometric_mean
from ..dataset.inputs import InputKind
from ..feeds.crops import crop_or_pad


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


def predict_padded(model, inputs, batch_size: int) -> np.ndarray:
    """model.predict on inputs padded to whole batches (one compiled shape, however many rows)."""
    n = len(inputs)
    extra = -n % batch_size
    if extra:
        inputs = np.concatenate([inputs, np.repeat(inputs[:1], extra, axis=0)])
    return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))[:n]


def predict_sequence(model, sequence) -> np.ndarray:
    """Predictions for every clip of a non-training sequence (src.feeds) made with full_batches=True."""
    return np.asarray(model.predict(sequence, verbose=0))[:len(sequence.fnames)]


def predict_clips(model, source: InputKind, fnames: list[str], batch_size: int = 64,
                  combine: str = "mean", chunk: int = 256, normalize: bool = True,
                  max_windows: int = 512) -> np.ndarray:
    """Class probabilities per clip from windows covering the whole clip (a crop long, every half
    crop, the last flush with the end), combined by their mean or geometric mean. Clips go through
    `chunk` at a time, and at most about `max_windows` windows (a clip's windows are never split), so
    memory stays bounded on long test sets whatever their clips last: 256 FSDKaggle2018-length clips
    made ~1,400 windows and raised an aisfx fold's peak RSS by 0.8 GB (docs/speed.md, "Rehearsal")."""
    length = source.crop_length
    out, stacks, held = [], [], 0

    def flush():
        probs = predict_padded(model, source.finish(np.concatenate(stacks)), batch_size)
        bounds = np.cumsum([0] + [len(s) for s in stacks])
        out.extend(combine_windows(probs[a:b], combine, normalize) for a, b in zip(bounds, bounds[1:]))
        stacks.clear()

    for fname in fnames:
        stacks.append(windows(source.store.read(fname), length, length // 2, source.pad_row)[0])
        held += len(stacks[-1])
        if len(stacks) == chunk or held >= max_windows:
            flush()
            held = 0
    if stacks:
        flush()
    return np.array(out).reshape(len(fnames), -1)


def combine_windows(probs: np.ndarray, combine: str = "mean", normalize: bool = True) -> np.ndarray:
    """One clip's probabilities from those of its windows: their mean, or their geometric mean (rows
    renormalised unless normalize=False: multi-label sigmoid outputs)."""
    return probs.mean(axis=0) if combine == "mean" else geometric_mean([p[None] for p in probs], None, normalize)[0]
