"""The device feed: raw-wave training without a host bottleneck.

The split's whole audio cache is copied once to the accelerator (FSDKaggle2018 at 22.05 kHz int16 is
about 3 GB; an H200 holds 139 GiB). Per batch the host only draws the random numbers (which clip,
where its crop starts, how long it is, its padding, gain, shift and mixup partner: a few hundred
numbers, by the same `crop_plans` and in the same order as the host feed), and the accelerator cuts,
shifts, scales and mixes the crops with `keras.ops`. Batches are the host feed's batches, sample for
sample; only the place where they are made differs.

Takes wave inputs with random crops, random crop lengths, time shift, gain, mixup and between-class
mixing. Stretch and noise stay on the host feed (src.feeds.host), which also serves MFCC inputs.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..base.config import Config
from ..dataset.inputs import WaveInput, input_kind
from . import augment
from .crops import crop_plans
from .host import Batches

# Samples per device array: int32 indices address each one, so a larger cache is split in shards at
# clip boundaries.
SHARD_LIMIT = 2 ** 30


class ClipBank:
    """A split's cached samples on the accelerator: shards of the cache's data file, cut at clip
    boundaries, with each clip's shard and offset in it."""

    def __init__(self, source: WaveInput, shard_limit: int = SHARD_LIMIT):
        store = source.store
        ok = store.index[store.index.status == "ok"]
        data = np.fromfile(store.data_path, np.int16) if store.data_path.exists() else np.zeros(0, np.int16)
        order = np.argsort(ok.offset.to_numpy(np.int64), kind="stable")
        offsets = ok.offset.to_numpy(np.int64)[order]
        lengths = ok.length.to_numpy(np.int64)[order]
        self.shards, first, bounds = [], 0, []
        shard_of, within = np.zeros(len(ok), np.int32), np.zeros(len(ok), np.int64)
        for k, (offset, length) in enumerate(zip(offsets, lengths)):
            if offset + length - first > shard_limit and k > 0 and offset > first:
                bounds.append((first, offset))
                first = offset
            shard_of[k], within[k] = len(bounds), offset - first
        bounds.append((first, int(offsets[-1] + lengths[-1]) if len(offsets) else 0))
        self.shards = [ops.convert_to_tensor(np.ascontiguousarray(data[a:max(b, a + 1)])) for a, b in bounds]
        names = ok.fname.to_numpy()[order]
        self._where = {f: (int(s), int(w), int(n)) for f, s, w, n in zip(names, shard_of, within, lengths)}
        self.length = source.crop_length
        self.nbytes = sum(2 * max(b - a, 1) for a, b in bounds)
        self._cut = self._cut_on_device
        if keras.backend.backend() == "jax":  # one dispatch a batch instead of one per operation
            import jax
            self._cut = jax.jit(self._cut_on_device)

    def lookup(self, fnames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard, offset in shard, length in samples) of each clip."""
        where = np.array([self._where[f] for f in fnames], np.int64).reshape(-1, 3)
        return where[:, 0], where[:, 1], where[:, 2]

    def cut(self, shard, offset, start, take, before, shift=None, scale=None, partner=None, lam=None,
            ratio=None, analysis=None):
        """(batch, length, 1) int16 crops on the device: `take` samples of each clip from `start`,
        placed `before` samples in, silence around them; then rolled by `shift`, scaled by `scale`
        and mixed with the batch's `partner` rows, by mixup's `lam` or, with `ratio` and `analysis`
        (augment.loudness_frames, already on the device), between-class at `ratio` of their loudness;
        each step rounded back to int16 as the host feed does. The other arguments are host arrays of
        one value per crop (a few hundred numbers a batch)."""
        column = lambda values, dtype="int32": None if values is None else np.asarray(values, dtype)[:, None]
        before = np.asarray(before)
        return self._cut(tuple(self.shards), column(shard), column(np.asarray(offset) + start - before),
                         column(before), column(before + np.asarray(take)), column(shift),
                         column(scale, "float32"), None if partner is None else np.asarray(partner, "int32"),
                         column(lam, "float32"), None if ratio is None else np.asarray(ratio, "float32"),
                         analysis)

    def _cut_on_device(self, shards, shard, base, first, end, shift, scale, partner, lam, ratio, analysis):
        length = self.length
        position = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
        if shift is not None:  # np.roll: out[p] = crop[(p - shift) mod length]
            position = ops.mod(position - shift, length)
        inside = ops.logical_and(position >= first, position < end)
        wave = ops.zeros((ops.shape(base)[0], length), "int16")
        for k, samples in enumerate(shards):  # base < 2**31: offsets are within a shard
            index = ops.clip(base + position, 0, ops.shape(samples)[0] - 1)
            mine = inside if len(shards) == 1 else ops.logical_and(inside, shard == k)
            wave = ops.where(mine, ops.take(samples, index), wave)
        if scale is not None:
            wave = _to_int16(ops.cast(wave, "float32") * scale)
        if ratio is not None:
            wave = ops.cast(wave, "float32")
            loudness = _sound_pressure_db(wave, *analysis)
            p = ops.expand_dims(augment.between_class_share(loudness, ops.take(loudness, partner), ratio, xp=ops), 1)
            partners = ops.take(wave, partner, axis=0)
            wave = _to_int16((p * wave + (1 - p) * partners) / ops.sqrt(p ** 2 + (1 - p) ** 2))
        elif partner is not None:
            wave = ops.cast(wave, "float32")
            wave = _to_int16(lam * wave + (1 - lam) * ops.take(wave, partner, axis=0))
        return ops.expand_dims(wave, -1)


def _sound_pressure_db(wave, index, window, weights):
    """src.feeds.augment.sound_pressure_db of (batch, samples) int16-valued crops, on the device."""
    frames = ops.take(ops.pad(wave / 32768.0, ((0, 0), (0, 1))), index, axis=1) * window
    real, imag = ops.rfft(frames)
    loudest = ops.max(ops.sum((real ** 2 + imag ** 2) * weights, axis=-1), axis=1)
    return ops.maximum(10 * ops.log10(ops.maximum(loudest, 1e-30)), augment.LOUDNESS_FLOOR_DB)


def _to_int16(values):
    return ops.cast(ops.clip(ops.round(values), -32768, 32767), "int16")


class DeviceClipSequence(Batches):
    """ClipSequence's batches, cut on the accelerator from a ClipBank: (crops, targets[, flags]) for
    training, crops alone for prediction. Same arguments, same random numbers, same batches."""

    def __init__(self, bank: ClipBank, fnames, targets: np.ndarray | None = None, batch_size: int = 64,
                 **batches):
        super().__init__(fnames, targets, batch_size, **batches)
        self.bank = bank
        self.shard, self.offset, self.lengths = bank.lookup(self.fnames)
        # With between-class mixing: how each crop's loudness is measured (the crops' sample rate's frames),
        # put on the device once rather than sent with every batch.
        self.analysis = None
        if self.augmentation.between_class_rate:
            self.analysis = tuple(ops.convert_to_tensor(a, dtype) for a, dtype in zip(
                augment.loudness_frames(bank.length, self.augmentation.between_class_rate),
                ("int32", "float32", "float32")))

    def __getitem__(self, index: int):
        rows, rng, augmentation = self.rows(index), self.rng(index), self.augmentation
        start, take, before = crop_plans(self.lengths[rows], self.bank.length, rng, augmentation.min_length)
        # The host feed's draws, in its order: crop plans, time shift, gain, mixup or between-class.
        shift = scale = partner = lam = ratio = None
        if augmentation.time_shift:
            shift = augment.draw_shifts(rng, len(rows), self.bank.length, augmentation.time_shift)
        if augmentation.gain_db:
            scale = augment.draw_gains(rng, len(rows), augmentation.gain_db)
        targets = None if self.targets is None else self.targets[rows]
        if augmentation.mixup > 0 and targets is not None:
            lam, partner = augment.draw_mix(rng, len(rows), augmentation.mixup)
            targets = augment.mix_targets(targets, lam, partner, augmentation.union)
        elif self.analysis is not None and targets is not None:
            ratio, partner = augment.draw_between_class(rng, targets.argmax(axis=1))
            targets = augment.mix_targets(targets, ratio, partner)
        inputs = self.bank.cut(self.shard[rows], self.offset[rows], start, take, before, shift, scale,
                               partner, lam, ratio, self.analysis if ratio is not None else None)
        if targets is None:
            return (inputs,)  # a tuple: Keras takes a bare array for numpy only
        return inputs, self.with_flags(targets, rows)


# The audio cache goes on the device only if it leaves the rest of the process's GPU memory to training.
BANK_SHARE = 0.6


def bank_bytes(source: WaveInput) -> int:
    """Bytes a ClipBank of `source` takes on the device: the stretch of the cache's data file that holds
    its decodable clips (int16 samples)."""
    ok = source.store.index[source.store.index.status == "ok"]
    return 2 * int((ok.offset + ok.length).max() - ok.offset.min()) if len(ok) else 0


def room_for(nbytes: int, memory: int | None) -> str | None:
    """Why a ClipBank of nbytes does not fit beside training in `memory` bytes of GPU memory (this
    process's share), or None when it does or the memory is unknown."""
    if memory is None or nbytes <= BANK_SHARE * memory:
        return None
    return (f"the audio cache ({nbytes / 1e9:.2f} GB) would take over {BANK_SHARE:.0%} of this process's "
            f"{memory / 1e9:.2f} GB of GPU memory (fewer fold processes per GPU, FOLDS_PER_GPU, give each more)")


def supports(config: Config) -> str | None:
    """Why the device feed cannot take this preset, or None when it can."""
    if not input_kind(config).takes_waves:
        return f"it reads {config.features} input (the device feed cuts raw waves)"
    unsupported = [name for name in ("stretch", "noise_snr") if getattr(config, name)]
    if unsupported:
        return f"{' and '.join(unsupported)} augment on the host"
    return None
