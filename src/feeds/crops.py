"""Where every crop comes from: long clips give a random crop in training and the first otherwise, short
ones are padded at a random offset in training and centred otherwise. Shared by the host feed, the
device feed and prediction over windows."""
from __future__ import annotations

import numpy as np


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
