"""Training augmentation of crops: random crop lengths, and for raw waves gain, time shift, stretch,
noise, mixup and between-class learning. `Augmentation` is what a preset asks for, read by both feeds.

Each step draws its random numbers from the batch's generator, in the order `Augmentation.wave_steps`
applies them (src.feeds.device draws the same numbers for the crops it cuts on the accelerator).
SpecAugment masks are a model layer (src.models.layers.SpecMask)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from ..base.config import Config


@dataclass(frozen=True)
class Augmentation:
    """What training does to each batch of crops, made from the preset (`of`); the default does nothing
    (validation and prediction batches)."""

    min_length: int = 0
    """rows of the shortest random-length crop (the rest padded); 0: every crop is whole"""
    stretch: float = 0.0
    time_shift: float = 0.0
    gain_db: float = 0.0
    noise_snr: float = 0.0
    mixup: float = 0.0
    """mixup alpha; 0: off"""
    union: bool = False
    """mixup's targets: every label of both clips at 1, instead of mixed by the same weights"""
    between_class_rate: int | None = None
    """the crops' sample rate, with between-class mixing; None: off"""

    @classmethod
    def of(cls, config: Config, crop_length: int) -> Augmentation:
        """The preset's augmentation of crops `crop_length` rows long."""
        return cls(min_length=round(config.min_crop_seconds / config.crop_seconds * crop_length),
                   stretch=config.stretch, time_shift=config.time_shift, gain_db=config.gain_db,
                   noise_snr=config.noise_snr, mixup=config.mixup, union=config.mixup_targets == "union",
                   between_class_rate=config.sample_rate if config.between_class else None)

    def wave_steps(self):
        """The waveform steps on the host as one function (batch, rng) -> batch, or None."""
        steps = [partial(f, **{name: value}) for f, name, value in (
            (stretch, "amount", self.stretch), (time_shift, "fraction", self.time_shift),
            (gain, "max_db", self.gain_db), (add_noise, "min_snr", self.noise_snr)) if value]
        if not steps:
            return None

        def augment(batch, rng):
            for step in steps:
                batch = step(batch, rng)
            return batch
        return augment


NO_AUGMENTATION = Augmentation()  # validation and prediction batches


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


# The draws of gain, time shift and mixup, shared with src.feeds.device so that both feeds take
# the same numbers from a batch's generator.

def draw_gains(rng: np.random.Generator, n: int, max_db: float) -> np.ndarray:
    """n float32 factors, gains drawn from [-max_db, max_db] dB."""
    db = rng.uniform(-max_db, max_db, size=(n, 1, 1))
    return (10 ** (db / 20)).astype(np.float32).reshape(n)


def draw_shifts(rng: np.random.Generator, n: int, length: int, fraction: float) -> np.ndarray:
    """n shifts of up to `fraction` of a `length`-row crop, either way."""
    limit = int(fraction * length)
    return rng.integers(-limit, limit + 1, size=n)


def draw_mix(rng: np.random.Generator, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Mixup weights lam ~ Beta(alpha, alpha) (float32) and each example's partner in the batch."""
    return rng.beta(alpha, alpha, size=n).astype(np.float32), rng.permutation(n)


def mix_targets(targets: np.ndarray, lam: np.ndarray, partner: np.ndarray, union: bool = False) -> np.ndarray:
    """A mixed pair's targets: mixed by the pair's weights, or (union) the labels of both."""
    if union:
        return np.maximum(targets, targets[partner])
    return lam[:, None] * targets + (1 - lam[:, None]) * targets[partner]


def gain(batch: np.ndarray, rng: np.random.Generator, max_db: float) -> np.ndarray:
    """Each (B, samples, 1) crop scaled by a gain drawn from [-max_db, max_db] dB."""
    factors = draw_gains(rng, len(batch), max_db)
    return as_dtype(batch.astype(np.float32) * factors[:, None, None], batch.dtype)


def time_shift(batch: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Each crop rolled in time by up to `fraction` of its length, either way (what leaves one end
    comes in at the other)."""
    for k, shift in enumerate(draw_shifts(rng, len(batch), batch.shape[1], fraction)):
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


def mix(batch: np.ndarray, targets: np.ndarray, alpha: float, rng: np.random.Generator, union: bool = False):
    """Mixup: each example becomes lam * itself + (1 - lam) * a random partner of the batch, its
    targets with the same lam (or, union, the labels of both), lam ~ Beta(alpha, alpha). Integer inputs
    are rounded back."""
    lam, partner = draw_mix(rng, len(batch), alpha)
    shape = (-1,) + (1,) * (batch.ndim - 1)
    mixed = lam.reshape(shape) * batch + (1 - lam.reshape(shape)) * batch[partner]
    return as_dtype(mixed, batch.dtype), mix_targets(targets, lam, partner, union)


def a_weighting_db(frequencies: np.ndarray, floor_db: float = -80.0) -> np.ndarray:
    """The A-weighting curve (IEC 61672) in dB at the given frequencies, floored at floor_db."""
    f2 = np.maximum(np.asarray(frequencies, np.float64) ** 2, 1e-12)
    ra = 12194.0 ** 2 * f2 ** 2 / ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2))
                                     * (f2 + 12194.0 ** 2))
    return np.maximum(20 * np.log10(np.maximum(ra, 1e-300)) + 2.0, floor_db)


LOUDNESS_FLOOR_DB = -80.0  # the quietest loudness between-class mixing tells apart (silence)


def loudness_frames(length: int, rate: int,
                    floor_db: float = LOUDNESS_FLOOR_DB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How EnvNet-v2's between-class learning measures a crop of `length` samples at `rate`: frames of
    about 0.1 s (n_fft 2048 at 16 kHz, 4096 at 44.1 kHz, as in the paper) at half overlap, as sample
    indices (frames x n_fft; index `length` past a short crop's end, for a zero sample appended), the
    Hann window and the A-weights (power) of the rfft bins. Shared by the host and device feeds."""
    n_fft = 2 ** int(round(np.log2(0.1 * rate)))
    hop = n_fft // 2
    starts = np.arange(0, max(length, n_fft) - n_fft + 1, hop)
    index = np.minimum(starts[:, None] + np.arange(n_fft), length)
    weights = 10 ** (a_weighting_db(np.fft.rfftfreq(n_fft, 1 / rate), floor_db) / 10)
    return index, np.hanning(n_fft + 1)[:-1], weights


def sound_pressure_db(batch: np.ndarray, rate: int, floor_db: float = LOUDNESS_FLOOR_DB) -> np.ndarray:
    """Each (B, samples, 1) crop's loudness as EnvNet-v2's between-class learning measures it: the
    largest A-weighted power of its frames (loudness_frames), in dB of full scale (int16 crops are
    scaled to [-1, 1] first), floored at floor_db."""
    waves = batch[..., 0].astype(np.float64)
    if np.issubdtype(batch.dtype, np.integer):
        waves /= -float(np.iinfo(batch.dtype).min)
    index, window, weights = loudness_frames(waves.shape[1], rate, floor_db)
    frames = np.pad(waves, ((0, 0), (0, 1)))[:, index] * window
    loudest = (np.abs(np.fft.rfft(frames, axis=-1)) ** 2 * weights).sum(axis=-1).max(axis=1)
    return np.maximum(10 * np.log10(np.maximum(loudest, 1e-30)), floor_db)


def between_class_share(loudness, partner_loudness, ratio, xp=np):
    """p of between-class mixing: the weight of each example against its partner's, so that at their
    loudness (dB) the mix is heard at `ratio` : 1 - ratio. With numpy (xp=np) on the host, keras.ops
    (xp=ops) on the device."""
    odds = xp.where(ratio > 0, (1 - ratio) / xp.maximum(ratio, 1e-12), float("inf"))
    return 1 / (1 + xp.power(10.0, (loudness - partner_loudness) / 20) * odds)


def draw_between_class(rng: np.random.Generator, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratios r ~ U(0, 1) (float32) and each example's partner: another example of the batch of another
    class (itself, with r = 1, when the batch holds one class only)."""
    n = len(classes)
    ratio = rng.uniform(0, 1, size=n).astype(np.float32)
    partner = np.arange(n)
    for i in range(n):
        others = np.flatnonzero(classes != classes[i])
        if len(others):
            partner[i] = rng.choice(others)
        else:
            ratio[i] = 1.0
    return ratio, partner


def between_class(batch: np.ndarray, targets: np.ndarray, rng: np.random.Generator, rate: int):
    """Between-class learning (Tokozume, Ushiku and Harada, ICLR 2018): each example mixed with one of
    another class at a ratio r ~ U(0, 1) of their sound pressures. With G1, G2 their loudness in dB,
    p = 1 / (1 + 10^((G1 - G2) / 20) (1 - r) / r) and the mix (p x1 + (1 - p) x2) / sqrt(p^2 + (1 - p)^2),
    so that a quiet clip is heard at the share r asks for; its targets are r t1 + (1 - r) t2."""
    ratio, partner = draw_between_class(rng, targets.argmax(axis=1))
    loudness = sound_pressure_db(batch, rate)
    with np.errstate(divide="ignore"):
        p = between_class_share(loudness, loudness[partner], ratio.astype(np.float64))
    shape = (-1,) + (1,) * (batch.ndim - 1)
    p = p.reshape(shape)
    mixed = (p * batch + (1 - p) * batch[partner]) / np.sqrt(p ** 2 + (1 - p) ** 2)
    return as_dtype(mixed, batch.dtype), mix_targets(targets, ratio, partner)
