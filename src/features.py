"""Stage 3, features: build the audio cache and the features one model preset reads.

`wave` inputs are crops of the cached int16 samples (the model min-max scales each crop, as the public
kernel did).
`mfcc` inputs are crops of full-clip MFCCs computed once from the cache and packed like it, so the
generator only slices frames. The MFCCs use an absolute dB scale (no per-clip top_db clamp): each frame
depends on its own samples alone, so a crop of cached frames equals the MFCCs of the cropped audio, and
padding a short clip with the MFCC of silence equals padding its audio with zeros.

    python -m src.features --model 2d [--data-dir data]
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from . import audio_cache
from .config import Config, add_config_arguments, config_from_args, stage_parser
from .errors import DataError, reports_data_errors
from .layout import audio_dir
from .store import PackedStore, locked, params_key

log = logging.getLogger(__name__)


def mfcc(samples: np.ndarray, config: Config) -> np.ndarray:
    """MFCC frames (n_frames x n_mfcc), float32, of float samples at config.sample_rate."""
    import librosa

    mel = librosa.feature.melspectrogram(y=samples, sr=config.sample_rate, n_fft=config.n_fft,
                                         hop_length=config.hop_length, n_mels=config.n_mels)
    log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)
    return librosa.feature.mfcc(S=log_mel, n_mfcc=config.n_mfcc).T.astype(np.float32)


def silence_frame(config: Config) -> np.ndarray:
    """The MFCC frame of digital silence: what pads a clip shorter than a crop."""
    return mfcc(np.zeros(config.n_fft, np.float32), config)[0]


def _mfcc_of_int16(samples: np.ndarray, config: Config) -> np.ndarray:
    return mfcc(samples.astype(np.float32) / audio_cache.INT16_SCALE, config)


class WaveInput:
    """Raw-wave crops: (crop_samples, 1) int16 samples per clip; the model scales them."""

    dtype = np.int16

    def __init__(self, store: PackedStore, config: Config):
        self.store = store
        self.crop_length = config.crop_samples
        self.pad_row = np.zeros(1, np.int16)

    def finish(self, batch: np.ndarray) -> np.ndarray:
        return batch


class MfccInput:
    """MFCC crops: (n_mfcc, crop_frames, 1) per clip, padded with the MFCC of silence."""

    dtype = np.float32

    def __init__(self, store: PackedStore, config: Config):
        self.store = store
        self.crop_length = config.crop_frames
        self.pad_row = silence_frame(config)

    def finish(self, batch: np.ndarray) -> np.ndarray:
        """(B, frames, n_mfcc) -> (B, n_mfcc, frames, 1), the layout of the kernel's 2D net."""
        return np.transpose(batch, (0, 2, 1))[..., None]

    def statistics(self, fnames: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-coefficient mean and variance over every frame of the given clips (the training rows)."""
        total = np.zeros(self.store.width)
        square = np.zeros(self.store.width)
        count = 0
        for fname in fnames:
            frames = self.store.read(fname).astype(np.float64)
            total += frames.sum(axis=0)
            square += (frames ** 2).sum(axis=0)
            count += len(frames)
        if count == 0:
            raise DataError("no training frames to compute MFCC statistics from")
        mean = total / count
        return mean.astype(np.float32), np.maximum(square / count - mean ** 2, 1e-8).astype(np.float32)


def model_input(data_dir: Path, split: str, config: Config, n_jobs: int = -1) -> WaveInput | MfccInput:
    """The up-to-date input source of one split for one preset, building caches as needed."""
    stores = audio_cache.build(data_dir, split, [config.sample_rate], n_jobs)
    audio = stores[config.sample_rate]
    if config.features == "wave":
        return WaveInput(audio, config)
    if config.features == "mfcc":
        return MfccInput(_build_mfcc(data_dir, split, audio, config, n_jobs), config)
    raise ValueError(f"unknown features {config.features!r}: use wave or mfcc")


def _build_mfcc(data_dir: Path, split: str, audio: PackedStore, config: Config, n_jobs: int) -> PackedStore:
    params = dict(config.feature_params(), stage="mfcc", version=1, audio=audio.params)
    root = Path(data_dir) / "cache" / f"mfcc-{params_key(params)}" / split
    with locked(Path(data_dir) / "cache"):
        store = PackedStore(root, "float32", config.n_mfcc, params)
        folder = audio_dir(data_dir, split)
        todo = [f for f in audio.index.fname
                if store.needs(f, folder / f) or store.status(f) != audio.status(f)]
        if todo:
            ok = [f for f in todo if audio.status(f) == "ok"]
            jobs = (delayed(_mfcc_of_int16)(audio.read(f)[:, 0], config) for f in ok)
            frames = iter(Parallel(n_jobs=n_jobs, return_as="generator", batch_size=8)(jobs))
            for fname in tqdm(todo, unit="clip", desc=f"mfcc {split}", disable=None):
                if audio.status(fname) == "ok":
                    store.append(fname, next(frames), folder / fname)
                else:
                    store.append(fname, None, folder / fname, status="skipped",
                                 note=audio.index.at[fname, "note"])
            store.flush()
    return store


@reports_data_errors
def main(argv=None) -> int:
    parser = stage_parser("python -m src.features", __doc__)
    add_config_arguments(parser)
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default: data")
    parser.add_argument("--jobs", type=int, default=-1, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = config_from_args(args)
    for split in ("train", "test"):
        source = model_input(args.data_dir, split, config, args.jobs)
        print(f"{split}: {len(source.store.index)} clips -> {source.store.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
