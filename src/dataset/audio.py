"""The audio cache: every clip decoded once, resampled to each rate the models need, and packed as
int16 in one flat file per split and rate, read by offset (src/dataset/store.py). Built by the
`python -m src.audio_cache` stage, or on demand by whatever needs a rate.

Incremental (a second run does nothing; new or changed clips are added), keyed by its parameters,
parallel over all cores. A clip that cannot be decoded, or holds no samples, is recorded as skipped in
report.csv beside the index instead of stopping the build; stereo, 8-bit or other-rate files are
converted and the conversion noted.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from ..base.errors import DataError
from ..base.files import WriteError, atomic_write_csv, irregular
from ..base.layout import audio_dir, cache_dir, cache_folder
from ..base.pcm import to_int16
from .store import PackedStore, compacted, locked, params_key, write_rows
from .tables import class_names, load_test, load_train

log = logging.getLogger(__name__)

RESAMPLER = "soxr_hq"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"}  # what libsndfile decodes
EXPECTED = {"samplerate": 44100, "channels": 1, "subtype": "PCM_16"}
FLUSH_SECONDS = 10


def audio_params(sample_rate: int) -> dict:
    return {"stage": "audio", "version": 1, "sample_rate": int(sample_rate), "resampler": RESAMPLER,
            "dtype": "int16", "mono": "mean"}


def audio_store(data_dir: Path, split: str, sample_rate: int) -> PackedStore:
    """The cache of one split at one rate: data/cache/audio-<rate>hz-<key>/<split>/."""
    params = audio_params(sample_rate)
    root = cache_folder(data_dir, f"audio-{sample_rate}hz", params_key(params), split)
    return PackedStore(root, "int16", 1, params)


def split_fnames(data_dir: Path, split: str) -> list[str]:
    train = load_train(data_dir)
    if split == "train":
        return list(train.fname)
    return list(load_test(data_dir, class_names(train)).fname)


def decode(path: Path) -> tuple[np.ndarray, int, str]:
    """Mono float32 samples and rate of any file libsndfile reads (WAV, FLAC, OGG, MP3), and a note
    of what was converted. Raises on unreadable files and on anything but a regular file."""
    import soundfile

    kind = irregular(path)
    if kind:
        raise ValueError(f"{kind}, not an audio file: never opened")

    info = soundfile.info(str(path))
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    found = {"samplerate": info.samplerate, "channels": info.channels, "subtype": info.subtype}
    note = ", ".join(f"{k} {v}" for k, v in found.items() if v != EXPECTED[k])
    declared = _declared_wav_frames(path)
    if declared is not None and declared > len(samples):
        note = ", ".join(filter(None, [note, f"truncated: header declares {declared} frames, "
                                              f"file holds {len(samples)}"]))
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return np.nan_to_num(mono.astype(np.float32)), int(rate), note


def _declared_wav_frames(path: Path) -> int | None:
    """Frames a WAV header promises (data chunk size / block size), or None for other files."""
    import struct

    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block = None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                block = struct.unpack("<H", handle.read(16)[12:14])[0]
                handle.seek(size - 16 + (size & 1), 1)
            elif name == b"data":
                return size // block if block else None
            else:
                handle.seek(size + (size & 1), 1)


def resample(samples: np.ndarray, rate: int, target: int, res_type: str = RESAMPLER) -> np.ndarray:
    import librosa

    if rate == target:
        return samples
    return librosa.resample(samples, orig_sr=rate, target_sr=target, res_type=res_type)


def _process(fname: str, path: Path, slots: dict[int, tuple[Path, int, int]]) -> tuple[str, dict | None, str]:
    """Decode one clip, resample it to every rate and write each into its reserved slot (data file,
    byte offset, capacity in samples). Returns (fname, {rate: samples written, or the int16 array
    when it outgrew its slot}, note), or (fname, None, why) when it must be skipped. Runs in a worker."""
    try:
        samples, rate, note = decode(path)
    except Exception as error:  # noqa: BLE001 - any decoder failure is a recorded skip
        why = str(error).splitlines()[0] if str(error) else ""
        return fname, None, f"unreadable: {type(error).__name__}: {why}"
    if len(samples) == 0:
        return fname, None, "empty: no samples"
    written = {}
    for target, (data_path, byte_offset, capacity) in slots.items():
        wave = to_int16(resample(samples, rate, target))
        if len(wave) <= capacity:
            write_rows(data_path, byte_offset, wave)
            written[target] = len(wave)
        else:  # the header under-stated its length: hand the samples back to be appended
            written[target] = wave
    return fname, written, note


def _capacities(path: Path, rates) -> dict[int, int]:
    """Samples a clip will hold at each rate, from its header (resampling gives n * ratio, within 1)."""
    import soundfile

    try:
        if irregular(path):
            return {rate: 0 for rate in rates}
        info = soundfile.info(str(path))
    except Exception:  # noqa: BLE001 - unreadable: it will be skipped, reserve nothing
        return {rate: 0 for rate in rates}
    return {rate: int(np.ceil(info.frames * rate / info.samplerate)) + 2 for rate in rates}


def build(data_dir: Path, split: str, rates: list[int], n_jobs: int = -1,
          fnames: list[str] | None = None) -> dict[int, PackedStore]:
    """Bring the cache of `split` at every rate up to date; returns the stores by rate."""
    data_dir = Path(data_dir)
    fnames = split_fnames(data_dir, split) if fnames is None else fnames
    folder = audio_dir(data_dir, split)
    with locked(cache_dir(data_dir)):
        stores = {r: compacted(audio_store(data_dir, split, r)) for r in rates}
        todo = []
        for fname in fnames:
            path = folder / fname
            if not path.exists():
                raise DataError(f"{path} is listed in the {split} table but does not exist; "
                                f"restore the file or remove its row.")
            if any(store.needs(fname, path) for store in stores.values()):
                todo.append(fname)
        if todo:
            try:
                _decode_all(todo, folder, stores, n_jobs, split)
            except OSError as error:  # a full disk: name the file, say what stays
                raise WriteError(error.filename or next(iter(stores.values())).data_path, error,
                                 kept=f"The clips the cache had indexed before stay (in "
                                      f"{cache_dir(data_dir)}); the rows of the others are reclaimed by the "
                                      f"next build.") from None
        for store in stores.values():
            _write_report(store)
    return stores


def _decode_all(todo: list[str], folder: Path, stores: dict[int, PackedStore], n_jobs: int,
                split: str) -> None:
    # Each clip gets a slot per rate, sized from its header, that a worker fills directly: samples
    # never travel back through this process.
    offsets = {fname: {} for fname in todo}
    slots = {fname: {} for fname in todo}
    for fname in todo:
        for rate, capacity in _capacities(folder / fname, stores).items():
            offsets[fname][rate] = stores[rate].reserve(capacity)
            slots[fname][rate] = (stores[rate].data_path, offsets[fname][rate] * 2, capacity)
    jobs = (delayed(_process)(f, folder / f, slots[f]) for f in todo)
    # Unordered: a long clip does not hold back the results finished behind it.
    results = Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=8)(jobs)
    last_flush = time.monotonic()
    skipped = 0
    bar = tqdm(results, total=len(todo), unit="clip",
               desc=f"audio cache {split} @ {'/'.join(map(str, sorted(stores)))} Hz", disable=None)
    for fname, written, note in bar:
        source = folder / fname
        for rate, store in stores.items():
            if written is None:
                store.record(fname, offsets[fname][rate], 0, source, note, status="skipped")
            elif isinstance(written[rate], int):
                store.record(fname, offsets[fname][rate], written[rate], source, note)
            else:
                store.append(fname, written[rate], source, note)
        skipped += written is None
        if time.monotonic() - last_flush > FLUSH_SECONDS:
            for store in stores.values():
                store.flush()
            last_flush = time.monotonic()
    for store in stores.values():
        store.flush()
    if skipped:
        log.warning("%d %s clip(s) skipped: see %s", skipped, split,
                    next(iter(stores.values())).root / "report.csv")


def _write_report(store: PackedStore) -> None:
    """report.csv: the clips that were skipped or converted, and why."""
    report = store.index[(store.index.status != "ok") | (store.index.note != "")]
    atomic_write_csv(report[["fname", "status", "note"]], store.root / "report.csv")
