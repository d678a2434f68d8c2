"""The competition's scale, rehearsed and measured: a dataset with every row of Kaggle's 2018 tables
(audio derived from data/demo's real clips), then the whole pipeline run on it as a user runs it, each
stage's time, peak memory and disk printed, and the full recipe's time projected for this machine.

    python -m src.tools.rehearsal                       # every row: 9,473 train and 9,400 test clips, ~35 h
                                                        # of audio (~11 GB of WAV); hours on a 2-core CPU
    python -m src.tools.rehearsal --scale 0.05          # a stratified 5 % of the rows, for a quick run
    python -m src.tools.rehearsal --tables ~/kaggle     # your own download's train.csv, sample_submission.csv
    python -m src.tools.rehearsal --scale 0.05 --compare runs/rehearsal-full/rehearsal.json  # time per row

The dataset (OUT_DIR/data, the competition layout): train.csv and sample_submission.csv are Kaggle's rows
(all, or a share of them stratified by label and by leaderboard, seeded), test_post_competition.csv
beside them when the tables have it (src.data reads it as the test labels). Each clip is 44.1 kHz 16-bit
mono WAV, cut, looped, overlapped and gain-changed from data/demo's recordings of the sound source its
label is mapped to (the 41 labels onto the demo's 8 sources, each label of a source at its own playback
speed and event density, so that the task is learnable a little); a third of the unverified train rows
sound like another label, as unverified labels are often wrong. Kaggle's three test clips that no
decoder reads (0b0427e2.wav, 6ea0099f.wav, b39975f5.wav) are written empty, 0 bytes.

Durations are drawn from a log-normal clipped to the competition's 0.3 to 30 s and scaled so that the
totals are the real ones. The FSDKaggle2018 README (Fonseca et al., "General-purpose tagging of Freesound
audio with AudioSet labels: task description, dataset, and baseline", DCASE 2018; Zenodo record 2552860)
gives "the total duration of the train set is roughly 18h" and, for the 1,600 scored test clips, "roughly
2h". The 7,800 padding test clips Kaggle added (usage Ignored) have no published total: assumed here to
last what train clips last on average (18 h / 9,473 = 6.84 s), 14.8 h, so the test set holds about 16.8 h.

Then, each as its own process, as a user runs them: `src.data`, `src.audio_cache` (the models' rates),
`src.train` fold 0 of 5 of each model (`logmel`, `aisfx`; `aisfx` left out with a note when its weights
are not installed) for --epochs epochs, which predicts its validation clips (OOF) and every test clip
over whole-clip windows, `src.blend`, `src.inspect_oof`, and `src.predict` on --predict-files test files.
For each stage: wall time, peak resident memory of the largest process of its tree and of the tree
together (/proc sampled every 0.2 s, VmHWM), disk under OUT_DIR. Printed as a table and written to
OUT_DIR/rehearsal.json and rehearsal.csv; each stage's output goes to OUT_DIR/logs/. The projection of the
full recipe (5 folds of each model at its preset's epochs, one fold after another as run_folds.sh runs
them on a 2-core CPU) uses each fold's measured setup, first epoch, later epochs and prediction times.

A second run reuses the audio written for the same tables, share, seed and --max-seconds; the cache,
the folds and the predictions are always made again, so that every stage is measured.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ..base import cli
from ..base.config import PRESETS
from ..base.errors import DataError, SetupError, UsageError
from ..base.files import atomic_write_csv, atomic_write_json
from ..base.layout import audio_dir
from ..dataset.tables import load_test_labels, load_train

RATE = 44100
TABLES = Path("tests/real/fsdkaggle2018")
TRAIN_TABLE, TEST_TABLE, TEST_LABELS = "train.csv", "sample_submission.csv", "test_post_competition.csv"
# The names tests/real/ keeps Kaggle's files under (its README): tried after the download's own names.
KAGGLE_NAMES = {TRAIN_TABLE: "kaggle_train.csv", TEST_TABLE: "kaggle_sample_submission.csv"}
EMPTY_TEST_CLIPS = ("0b0427e2.wav", "6ea0099f.wav", "b39975f5.wav")
"""Kaggle's 2018 test clips that cannot be read as audio (0-byte files in the download)."""

SHORTEST, LONGEST = 0.3, 30.0
TRAIN_HOURS = 18.0                 # FSDKaggle2018 README: the train set (9,473 clips), "roughly 18h"
SCORED_TEST_HOURS, SCORED_TEST_CLIPS = 2.0, 1600   # its 1,600 scored test clips, "roughly 2h"
SIGMA = 1.0                        # spread of log-duration (assumed; only the totals are published)
MODELS = ("logmel", "aisfx")
N_FOLDS = 5
UNVERIFIED_WRONG = 1 / 3           # unverified train rows whose audio is another label's
FORMAT_VERSION = 1                 # of the written audio: a change makes a second run write it again

# The 41 labels onto the demo's 8 recorded sources, by what they sound most like. Each label of a source
# plays it at its own speed (pitch) and event density, in the order listed.
SOURCES = {
    "Applause": ["Applause", "Fireworks", "Bus", "Microwave_oven", "Tearing", "Writing", "Shatter"],
    "Bark": ["Bark", "Laughter", "Cough", "Burping_or_eructation", "Fart", "Meow"],
    "Cello": ["Cello", "Violin_or_fiddle", "Double_bass", "Acoustic_guitar"],
    "Electric_piano": ["Electric_piano", "Glockenspiel", "Chime", "Gong", "Telephone"],
    "Flute": ["Flute", "Clarinet", "Oboe", "Squeak"],
    "Hi-hat": ["Hi-hat", "Tambourine", "Cowbell", "Keys_jangling", "Scissors", "Computer_keyboard"],
    "Snare_drum": ["Snare_drum", "Bass_drum", "Knock", "Gunshot_or_gunfire", "Drawer_open_or_close",
                   "Finger_snapping"],
    "Trumpet": ["Trumpet", "Saxophone", "Harmonica"],
}
SPEEDS = (1.0, 1.335, 0.749, 1.782, 0.561, 2.378, 0.42)    # 0, +5, -5, +10, -10, +15, -15 semitones
DENSITIES = (1.0, 0.6, 1.4, 0.8, 1.2, 0.5, 1.6)            # spacing of events, relative


def voice(label: str) -> tuple[str, float, float]:
    """The demo source a label sounds like, its playback speed and its event spacing. Labels outside the
    table (other tables) get a source and a variant from a checksum of their name."""
    for source, labels in SOURCES.items():
        if label in labels:
            k = labels.index(label)
            return source, SPEEDS[k], DENSITIES[k]
    h = zlib.crc32(label.encode())
    k = h // len(SOURCES) % len(SPEEDS)
    return sorted(SOURCES)[h % len(SOURCES)], SPEEDS[k], DENSITIES[k]


# --- the tables ----------------------------------------------------------------------------------

def table_file(tables: Path, name: str) -> Path | None:
    for candidate in (name, KAGGLE_NAMES.get(name)):
        if candidate and (tables / candidate).is_file():
            return tables / candidate
    return None


def read_tables(tables: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, dict[str, Path]]:
    """Kaggle's train.csv, sample_submission.csv and (when present) test_post_competition.csv, read as
    text exactly as written (a label `None` stays the text None)."""
    found = {name: table_file(tables, name) for name in (TRAIN_TABLE, TEST_TABLE, TEST_LABELS)}
    for name in (TRAIN_TABLE, TEST_TABLE):
        if found[name] is None:
            also = f" (or {KAGGLE_NAMES[name]})" if name in KAGGLE_NAMES else ""
            raise DataError(f"{tables} has no {name}{also}: point --tables at the folder holding Kaggle's "
                            f"2018 {TRAIN_TABLE} and {TEST_TABLE} (kaggle competitions download "
                            f"freesound-audio-tagging).")
    read = lambda path: pd.read_csv(path, dtype=str, keep_default_na=False)
    train, test = read(found[TRAIN_TABLE]), read(found[TEST_TABLE])
    for name, table, columns in ((TRAIN_TABLE, train, ["fname", "label"]), (TEST_TABLE, test, ["fname"])):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(f"{found[name]}: missing column(s) {missing}; found {list(table.columns)}. It is "
                            f"not Kaggle's 2018 {name}.")
    truth = read(found[TEST_LABELS]) if found[TEST_LABELS] else None
    if truth is not None and not {"fname", "label", "usage"} <= set(truth.columns):
        truth = None
    return train, test, truth, {name: path for name, path in found.items() if path}


def stratified(groups: pd.Series, share: float, rng: np.random.Generator, least: int = 1) -> np.ndarray:
    """Positions of a seeded share of the rows, each group keeping round(share x its size) rows (at least
    `least`, at most all), in table order."""
    if share >= 1:
        return np.arange(len(groups))
    kept = []
    for _, positions in groups.reset_index(drop=True).groupby(groups.to_numpy(), sort=True).indices.items():
        n = min(len(positions), max(least, int(round(share * len(positions)))))
        kept.append(rng.choice(positions, n, replace=False))
    return np.sort(np.concatenate(kept))


def durations(n: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """n durations in [0.3, 30] s from a clipped log-normal whose total is n x mean."""
    raw = rng.lognormal(0.0, SIGMA, n)
    scale = mean / np.exp(SIGMA ** 2 / 2)
    for _ in range(50):   # the clip moves the mean: rescale until the total is right
        drawn = np.clip(raw * scale, SHORTEST, LONGEST)
        if abs(drawn.mean() / mean - 1) < 1e-4:
            break
        scale *= mean / drawn.mean()
    return drawn


@dataclass
class Plan:
    """The rows kept, each with what its audio is made of: the label it sounds like and its duration."""

    train: pd.DataFrame       # Kaggle's rows, plus sounds_like, seconds, row (position in Kaggle's table)
    test: pd.DataFrame
    truth: pd.DataFrame | None
    hours: dict = field(default_factory=dict)


def plan(train: pd.DataFrame, test: pd.DataFrame, truth: pd.DataFrame | None, scale: float, seed: int,
         max_seconds: float = LONGEST, least: int = N_FOLDS) -> Plan:
    """Which rows the rehearsal keeps and what each clip sounds like and lasts: decided on the whole
    tables first, so that a row's clip is the same at every --scale. Each label keeps at least `least`
    train rows (one per fold)."""
    rng = np.random.default_rng(seed)
    labels = sorted(train.label.unique())
    verified = train.get("manually_verified", pd.Series("1", index=train.index)).astype(str) == "1"
    train = train.assign(row=np.arange(len(train)), sounds_like=train.label,
                         seconds=durations(len(train), TRAIN_HOURS * 3600 / 9473, rng))
    wrong = ~verified.to_numpy() & (rng.random(len(train)) < UNVERIFIED_WRONG)
    others = rng.integers(0, len(labels) - 1, len(train))
    train.loc[wrong, "sounds_like"] = [labels[o + (o >= labels.index(lab))]
                                       for o, lab in zip(others[wrong], train.label[wrong])]
    usage = pd.Series("", index=test.index)
    test_label = pd.Series("", index=test.index)
    if truth is not None:
        known = truth.set_index("fname")
        usage = test.fname.map(known.usage).fillna("")
        test_label = test.fname.map(known.label).fillna("")
    scored = usage.isin(["Public", "Private"]).to_numpy() & test_label.isin(labels).to_numpy()
    padding_mean = TRAIN_HOURS * 3600 / 9473
    seconds = durations(len(test), padding_mean, rng)
    if scored.any():
        seconds[scored] = durations(int(scored.sum()), SCORED_TEST_HOURS * 3600 / SCORED_TEST_CLIPS, rng)
    random_labels = np.array(labels)[rng.integers(0, len(labels), len(test))]
    test = test.assign(row=np.arange(len(test)), seconds=seconds,
                       sounds_like=np.where(scored, test_label, random_labels))
    keep_train = stratified(train.label, scale, rng, least)
    keep_test = stratified(usage, scale, rng)
    empty = np.flatnonzero(test.fname.isin(EMPTY_TEST_CLIPS).to_numpy())
    keep_test = np.union1d(keep_test, empty)
    train, test = train.iloc[keep_train].copy(), test.iloc[keep_test].copy()
    for table in (train, test):
        table["seconds"] = table.seconds.clip(upper=max(SHORTEST, max_seconds))
    test.loc[test.fname.isin(EMPTY_TEST_CLIPS), "seconds"] = 0.0
    if truth is not None:
        truth = truth[truth.fname.isin(set(test.fname))]
    hours = {"train": float(train.seconds.sum() / 3600), "test": float(test.seconds.sum() / 3600)}
    return Plan(train, test, truth, hours)


# --- the audio -----------------------------------------------------------------------------------

_PIECES: dict[str, dict[str, list[np.ndarray]]] = {}   # split -> demo source -> its clips (float32)
_SPED: dict = {}                                       # (split, source, speed) -> the clips played at speed


def load_demo(demo: Path) -> dict[str, dict[str, list[np.ndarray]]]:
    """data/demo's clips by split and label, float32 at 44.1 kHz (the rehearsal's train clips are made
    from the demo's train clips, its test clips from the demo's test clips)."""
    import soundfile


    train = load_train(demo)
    tables = {"train": train}
    truth = load_test_labels(demo, sorted(train.label.unique()))
    tables["test"] = truth if truth is not None else train
    out = {}
    for split, table in tables.items():
        folder = audio_dir(demo, split if truth is not None else "train")
        out[split] = {}
        for fname, label in zip(table.fname, table.label):
            samples, rate = soundfile.read(str(folder / fname), dtype="float32", always_2d=True)
            if rate != RATE:
                raise DataError(f"{folder / fname}: {rate} Hz; the demo's clips are 44.1 kHz.")
            out[split].setdefault(label, []).append(samples.mean(axis=1))
    missing = sorted(set(SOURCES) - set(out["train"]))
    if missing:
        raise DataError(f"{demo} lacks clips of {missing}: the rehearsal derives its audio from data/demo's 8 "
                        f"sources; restore the folder (git checkout data/demo).")
    return out


def _sped(split: str, source: str, speed: float) -> list[np.ndarray]:
    key = (split, source, speed)
    if key not in _SPED:
        clips = []
        for clip in _PIECES[split][source]:
            n = max(16, int(len(clip) / speed))
            clips.append(np.interp(np.arange(n) * speed, np.arange(len(clip)), clip).astype(np.float32))
        _SPED[key] = clips
    return _SPED[key]


def synthesize(split: str, label: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of audio sounding like `label`: pieces of its source's demo clips (whole or cut),
    at the label's speed, each with its own gain and short fades, laid one after another with gaps or
    overlaps at the label's event spacing, over faint noise; peak normalised to 0.3 to 0.9."""
    source, speed, density = voice(label)
    clips = _sped(split, source, speed)
    n = max(1, int(round(seconds * RATE)))
    out = np.zeros(n, np.float32)
    position = int(rng.uniform(0, 0.05) * RATE)
    shortest = int(0.15 * RATE)
    while position < n:
        piece = clips[rng.integers(len(clips))]
        if len(piece) > 2 * shortest and rng.random() < 0.5:   # a cut of the clip
            start = int(rng.integers(0, len(piece) - shortest))
            piece = piece[start:start + int(rng.integers(shortest, len(piece) - start + 1))]
        piece = piece * np.float32(10 ** (rng.uniform(-6, 6) / 20))
        fade = min(len(piece) // 2, 220)
        if fade:
            ramp = np.linspace(0, 1, fade, dtype=np.float32)
            piece[:fade] *= ramp
            piece[-fade:] *= ramp[::-1]
        m = min(len(piece), n - position)
        out[position:position + m] += piece[:m]
        position += max(64, int(len(piece) * density * rng.uniform(0.5, 1.3)))
    out += np.float32(10 ** (-55 / 20)) * rng.standard_normal(n, dtype=np.float32)
    peak = float(np.abs(out).max()) or 1.0
    return out * np.float32(rng.uniform(0.3, 0.9) / peak)


def write_clip(task: tuple) -> int:
    """Write one clip (a job of the writing pool); returns its bytes."""
    import soundfile

    path, split, label, seconds, seed = task
    if seconds <= 0:            # Kaggle's unreadable test clips: empty files
        open(path, "wb").close()
        return 0
    samples = synthesize(split, label, seconds, np.random.default_rng(seed))
    soundfile.write(path, (np.clip(samples, -1, 1) * 32767).astype(np.int16), RATE, subtype="PCM_16")
    return os.path.getsize(path)


def write_dataset(chosen: Plan, demo: Path, data_dir: Path, seed: int, jobs: int) -> int:
    """The dataset folder: tables, then every clip (in parallel, a progress bar); returns the audio bytes."""
    from tqdm import tqdm

    _PIECES.clear()
    _PIECES.update(load_demo(demo))
    _SPED.clear()
    tasks = []
    for split, table in (("train", chosen.train), ("test", chosen.test)):
        folder = audio_dir(data_dir, split)
        folder.mkdir(parents=True, exist_ok=True)
        split_id = 0 if split == "train" else 1
        tasks += [(str(folder / fname), split, label, float(seconds), (seed, split_id, int(row)))
                  for fname, label, seconds, row in zip(table.fname, table.sounds_like, table.seconds, table.row)]
    context = multiprocessing.get_context("fork")   # the workers inherit the demo's clips
    total = 0
    with context.Pool(max(1, jobs)) as pool:
        bar = tqdm(pool.imap_unordered(write_clip, tasks, chunksize=16), total=len(tasks), unit="clip",
                   desc="writing audio", disable=None, mininterval=2)
        for written in bar:
            total += written
    drop = ["row", "sounds_like", "seconds"]
    atomic_write_csv(chosen.train.drop(columns=drop), data_dir / TRAIN_TABLE)
    atomic_write_csv(chosen.test.drop(columns=drop), data_dir / TEST_TABLE)
    if chosen.truth is not None:
        atomic_write_csv(chosen.truth, data_dir / TEST_LABELS)
    return total


# --- measuring a stage ---------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in KiB: its peak and current resident memory; (0, 0) once gone."""
    found = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    found[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return found.get("VmHWM", 0), found.get("VmRSS", 0)


class TreeMemory(threading.Thread):
    """Samples the resident memory of a process and all its descendants every `every` s: the peak of
    the largest one (from each process's own high-water mark, VmHWM) and of their sum. Linux only;
    elsewhere both stay 0."""

    def __init__(self, root: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.every, self.stop = root, every, threading.Event()
        self.process_kib, self.tree_kib, self.processes, self.loads = 0, 0, set(), []

    def sample(self) -> None:
        if not os.path.isdir("/proc"):
            return
        children, pending, total = _children(), [self.root], 0
        while pending:
            pid = pending.pop()
            peak, now = _memory_kib(pid)
            if peak or now:
                self.processes.add(pid)
            self.process_kib = max(self.process_kib, peak)
            total += now
            pending += children.get(pid, [])
        self.tree_kib = max(self.tree_kib, total)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.loads.append(os.getloadavg()[0])
            self.stop.wait(self.every)

    @property
    def load(self) -> float:
        """The machine's mean 1-minute load average while the stage ran: other work on it shows here."""
        return float(np.mean(self.loads)) if self.loads else os.getloadavg()[0]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


def disk_bytes(folder: Path) -> int:
    """Bytes allocated under a folder (links not followed)."""
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


@dataclass
class Stage:
    name: str
    command: str
    seconds: float
    peak_rss_mib: float          # the largest single process of the stage
    tree_rss_mib: float          # the stage's processes together
    disk_mib: float              # everything under OUT_DIR after the stage
    disk_added_mib: float
    items: int = 0               # what the stage goes through (clips, rows, files)
    unit: str = ""
    note: str = ""
    load: float = 0.0            # the machine's mean 1-minute load average meanwhile

    @property
    def per_item_ms(self) -> float | None:
        return 1000 * self.seconds / self.items if self.items else None


class Stages:
    """Runs and measures the stages one after another, the record kept as they finish."""

    def __init__(self, out_dir: Path, log_dir: Path):
        self.out_dir, self.log_dir, self.done = out_dir, log_dir, []
        self.disk = disk_bytes(out_dir)

    def record(self, name: str, command: str, seconds: float, memory: TreeMemory, own_kib: int = 0,
               items: int = 0, unit: str = "", note: str = "") -> Stage:
        disk = disk_bytes(self.out_dir)
        stage = Stage(name, command, round(seconds, 2), round(max(memory.process_kib, own_kib) / 1024, 1),
                      round(max(memory.tree_kib, own_kib) / 1024, 1), round(disk / 2 ** 20, 1),
                      round((disk - self.disk) / 2 ** 20, 1), items, unit, note, round(memory.load, 2))
        self.disk = disk
        self.done.append(stage)
        print(f"  {name}: {_duration(stage.seconds)}, peak RSS {stage.peak_rss_mib:,.0f} MiB (tree "
              f"{stage.tree_rss_mib:,.0f}), disk {stage.disk_mib:,.0f} MiB (+{stage.disk_added_mib:,.0f}), load "
              f"{stage.load:.1f}", flush=True)
        return stage

    def run(self, name: str, command: list[str], items: int = 0, unit: str = "", note: str = "",
            shown: str | None = None) -> Stage:
        """Run one stage's command, its output to logs/<n>-<name>.log (the command on its first line);
        DataError if it fails. `shown` abbreviates a long command where it is printed and recorded."""
        log = self.log_dir / f"{len(self.done) + 1:02d}-{name.replace(' ', '-')}.log"
        shown = shown or shlex.join(command)
        print(f"\n$ {shown}\n  (output: {log})", flush=True)
        started = time.perf_counter()
        with open(log, "w") as out:
            out.write(f"$ {shlex.join(command)}\n")
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            with TreeMemory(process.pid) as memory:
                _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
            raise DataError(f"rehearsal stopped at {name}: `{shown}` exited with {process.returncode}. The end of "
                            f"its output ({log}):\n{tail}")
        return self.record(name, shown, seconds, memory, usage.ru_maxrss, items, unit, note)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# --- the run -------------------------------------------------------------------------------------

def pretrained_weights() -> dict:
    """src.models.pretrained's WEIGHTS, read without importing the src.models package, whose __init__
    loads Keras (seconds, and hundreds of MB this process has no use for)."""
    if "src.models.pretrained" in sys.modules:
        return sys.modules["src.models.pretrained"].WEIGHTS
    spec = importlib.util.spec_from_file_location("src.models.pretrained",
                                                  Path(__file__).resolve().parents[1] / "models" / "pretrained.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # the module itself, as an import of src.models would find it
    spec.loader.exec_module(module)
    return module.WEIGHTS


def installed(model: str) -> str | None:
    """None when the model can train here, else why not (a pretrained model without its weights)."""
    weights = pretrained_weights()
    if model not in weights:
        return None
    try:
        weights[model].path()
        return None
    except SetupError as missing:
        return str(missing)


def fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


MANIFEST = "rehearsal_data.json"
RECORD = "rehearsal.json"


def prepare_out_dir(out_dir: Path, data_dir: Path) -> None:
    """OUT_DIR must be new, empty, or an earlier rehearsal's: its cache, folds, predictions and
    submissions are removed so that every stage runs in full."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / RECORD).exists() \
            and not (data_dir / MANIFEST).exists() and not (out_dir / "logs").exists():
        raise UsageError(f"{out_dir} holds files that are not a rehearsal's: name a new or empty --out-dir.")
    for old in (data_dir / "cache", out_dir / "predictions", out_dir / "submissions", out_dir / "report",
                out_dir / "compile-cache", out_dir / "logs"):
        if old.exists():
            shutil.rmtree(old)
    for old in (data_dir / "folds.csv", data_dir / "test_labels.csv", out_dir / "predict.csv"):
        old.unlink(missing_ok=True)


def project(fold: dict, seconds: float, preset_epochs: int, train_factor: float = 1.0,
            predict_factor: float = 1.0) -> dict:
    """One fold of the preset at its own epochs, from a measured fold whose process took `seconds`: setup
    (process start, imports, loading: the seconds outside fitting and predicting), compilation (the
    first epoch's excess over the steady one), the epochs at the measured steady epoch (the first one
    when only one ran), and prediction (OOF and test). The epochs scale by train_factor and prediction by
    predict_factor: the full recipe's clips over the measured fold's."""
    fit, predict = fold["fit_minutes"] * 60, fold["predict_minutes"] * 60
    first = fold.get("first_epoch_seconds") or fit / max(1, fold["epochs_run"])
    epoch = fold.get("epoch_seconds") or first
    setup = max(0.0, seconds - fit - predict)
    compile_s = max(0.0, first - epoch)
    epoch_full, predict_full = epoch * train_factor, predict * predict_factor
    return {"setup_s": setup, "compile_s": compile_s, "epoch_s": epoch_full, "predict_s": predict_full,
            "epochs": preset_epochs, "fold_s": setup + compile_s + preset_epochs * epoch_full + predict_full}


def machine() -> dict:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   "")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    return {"cores": os.cpu_count(), "cpu": cpu or platform.processor(), "memory_gib": round(memory / 2 ** 30, 1),
            "gpu": "none" if not shutil.which("nvidia-smi") else "see nvidia-smi", "commit": commit.strip(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version()}


def write_record(out_dir: Path, record: dict) -> None:
    atomic_write_json(out_dir / RECORD, record)
    with open(out_dir / "rehearsal.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f for f in Stage.__dataclass_fields__] + ["per_item_ms"])
        writer.writeheader()
        for stage in record["stages"]:
            writer.writerow(stage)


def print_table(stages: list[Stage]) -> None:
    print(f"\n{'stage':<22}{'time':>10}{'per item':>16}{'peak RSS':>11}{'tree RSS':>11}{'disk':>11}{'added':>10}"
          f"{'load':>6}  note")
    for s in stages:
        per = f"{s.per_item_ms:,.1f} ms/{s.unit}" if s.per_item_ms is not None else ""
        print(f"{s.name:<22}{_duration(s.seconds):>10}{per:>16}{s.peak_rss_mib:>7,.0f} MiB{s.tree_rss_mib:>7,.0f} MiB"
              f"{s.disk_mib:>7,.0f} MiB{s.disk_added_mib:>6,.0f} MiB{s.load:>6.1f}  {s.note}")


def compare(stages: list[Stage], earlier: Path) -> None:
    """Each stage's time per item here against an earlier rehearsal's: linear growth keeps it near 1."""
    before = {s["name"]: s for s in json.loads(earlier.read_text())["stages"]}
    print(f"\ntime per item against {earlier} (1.0 = linear in the rows; above 1.5 grows faster):")
    for s in stages:
        old = before.get(s.name)
        if not old or not s.items or not old.get("items") or not old.get("seconds"):
            continue
        ratio = (s.seconds / s.items) / (old["seconds"] / old["items"])
        print(f"  {s.name:<22}{old['items']:>8,} -> {s.items:<8,} {s.unit:<6} x{ratio:5.2f}"
              f"{'  <- grows faster than linearly' if ratio > 1.5 else ''}")


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.tools.rehearsal", __doc__, data_dir=False, out_dir=False)
    parser.add_argument("--tables", type=Path, default=TABLES,
                        help="folder with Kaggle's 2018 train.csv and sample_submission.csv (and "
                             "test_post_competition.csv when you have it); default: the copies in tests/real/")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/rehearsal"),
                        help="where the rehearsal writes everything (default: runs/rehearsal)")
    parser.add_argument("--data-dir", type=Path, help="the dataset it writes (default: OUT_DIR/data)")
    parser.add_argument("--demo", type=Path, default=Path("data/demo"),
                        help="the recordings the audio is derived from (default: data/demo)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="share of the rows kept, stratified by label (train) and leaderboard (test); "
                             "at least one train row per label and fold (default: 1, every row)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rows kept and of the audio (default: 0)")
    parser.add_argument("--max-seconds", type=float, default=LONGEST,
                        help="cut every clip at this length (default: 30, the competition's longest)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(PRESETS),
                        help=f"the models trained, fold 0 of --folds each (default: {' '.join(MODELS)})")
    parser.add_argument("--folds", type=int, default=N_FOLDS,
                        help=f"StratifiedKFold splits of the training rows; the full recipe's is {N_FOLDS} (default)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs of each fold (default: 2: the first compiles, the second is the steady "
                             "epoch the projection multiplies)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the preset's)")
    parser.add_argument("--crop-seconds", type=float, help="crop length (default: the preset's)")
    parser.add_argument("--predict-files", type=int, default=100,
                        help="test files tagged by src.predict (default: 100)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes writing audio (default: all cores)")
    parser.add_argument("--compare", type=Path, metavar="REHEARSAL_JSON",
                        help="an earlier run's rehearsal.json: print each stage's time per item against it")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be within (0, 1], not {args.scale}")
    if args.epochs < 1 or args.predict_files < 0 or args.max_seconds < SHORTEST:
        parser.error("--epochs must be at least 1, --predict-files at least 0, --max-seconds at least 0.3")
    if args.compare and not args.compare.is_file():
        parser.error(f"--compare {args.compare}: no such file")
    out_dir = args.out_dir
    data_dir = args.data_dir or out_dir / "data"
    started = time.perf_counter()

    train, test, truth, files = read_tables(args.tables)
    chosen = plan(train, test, truth, args.scale, args.seed, args.max_seconds, args.folds)
    prepare_out_dir(out_dir, data_dir)
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True)
    stages = Stages(out_dir, log_dir)
    print(f"rehearsal: {len(chosen.train):,} train rows ({chosen.hours['train']:.1f} h of audio) and "
          f"{len(chosen.test):,} test rows ({chosen.hours['test']:.1f} h) of {len(train):,} and {len(test):,} in "
          f"{args.tables}{'' if truth is not None else ' (no test_post_competition.csv: no test labels)'}; "
          f"dataset {data_dir}", flush=True)

    # 1. The dataset, or the same one reused.
    wanted = {"version": FORMAT_VERSION, "tables": fingerprint(sorted(files.values())), "scale": args.scale,
              "seed": args.seed, "max_seconds": args.max_seconds, "demo": fingerprint(sorted(args.demo.rglob("*.wav")))}
    manifest = data_dir / MANIFEST
    items = len(chosen.train) + len(chosen.test)
    if manifest.exists() and json.loads(manifest.read_text()) == wanted:
        print(f"\nreusing the audio written for the same tables, share, seed and --max-seconds in {data_dir}")
        memory = TreeMemory(os.getpid())
        memory.sample()
        stages.record("write audio", "(reused)", 0.0, memory, note="reused from an earlier run")
    else:
        for split in ("train", "test"):
            if audio_dir(data_dir, split).exists():
                shutil.rmtree(audio_dir(data_dir, split))
        manifest.unlink(missing_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        print(f"\nwriting {items:,} clips ({sum(chosen.hours.values()):.1f} h of audio) with {args.jobs} process(es)",
              flush=True)
        begun = time.perf_counter()
        with TreeMemory(os.getpid()) as memory:
            written = write_dataset(chosen, args.demo, data_dir, args.seed, args.jobs)
        stages.record("write audio", f"python -m src.tools.rehearsal (in process, {args.jobs} workers)",
                      time.perf_counter() - begun, memory, items=items, unit="clip",
                      note=f"{written / 2 ** 30:.2f} GiB of WAV")
        atomic_write_json(manifest, wanted)

    # 2. The pipeline, stage by stage, as a user runs it.
    python, where = sys.executable, ["--data-dir", str(data_dir)]
    out = ["--out-dir", str(out_dir)]
    stages.run("data check", [python, "-m", "src.data", *where], items=items, unit="clip")
    models, left_out = [], {}
    for model in dict.fromkeys(args.models):
        why = installed(model)
        if why:
            left_out[model] = why
            print(f"\nrehearsal: leaving out {model}: {why}", flush=True)
        else:
            models.append(model)
    if not models:
        raise UsageError("no model left to train: " + "; ".join(left_out.values()))
    rates = sorted({PRESETS[m].sample_rate for m in models})
    stages.run("audio cache", [python, "-m", "src.audio_cache", *where, "--rates", *map(str, rates)], items=items,
               unit="clip", note=f"rates {', '.join(map(str, rates))} Hz")
    folds = {}
    for model in models:
        preset = PRESETS[model]
        options = ["--epochs", str(args.epochs)]
        if preset.warmup_epochs >= args.epochs:
            options += ["--warmup-epochs", str(args.epochs - 1)]
        if args.batch_size:
            options += ["--batch-size", str(args.batch_size)]
        if args.crop_seconds:
            options += ["--crop-seconds", str(args.crop_seconds)]
            if preset.min_crop_seconds > args.crop_seconds:
                options += ["--min-crop-seconds", str(args.crop_seconds)]
        stage = stages.run(f"{model} fold 0", [python, "-m", "src.train", "--model", model, "--fold", "0", "--n-folds",
                                               str(args.folds), *options, *where, *out, "--force"],
                           items=items, unit="clip")
        result = json.loads((out_dir / "predictions" / model / "fold0" / "result.json").read_text())
        folds[model] = result
        stage.note = (f"{result['n_train']:,} train, {result['n_val']:,} OOF, {len(chosen.test):,} test clips; "
                      f"epoch {result['epoch_seconds']:.0f} s, first {result['first_epoch_seconds']:.0f} s, "
                      f"predict {result['predict_minutes'] * 60:.0f} s")
    stages.run("blend", [python, "-m", "src.blend", *models, "--allow-partial", *where, *out],
               items=len(chosen.test), unit="row")
    stages.run("inspect", [python, "-m", "src.inspect_oof", *models, "--allow-partial", *where, *out],
               items=sum(f["n_val"] for f in folds.values()) // len(folds), unit="row")
    tagged = [str(audio_dir(data_dir, "test") / f) for f in chosen.test.fname[: args.predict_files]]
    if tagged:
        rest = ["--allow-partial", "--csv", str(out_dir / "predict.csv"), *where, *out]
        more = f" ... ({len(tagged)} files of {audio_dir(data_dir, 'test')}) " if len(tagged) > 2 else " "
        shown = shlex.join([python, "-m", "src.predict", *tagged[:2]]) + more + shlex.join(rest)
        stages.run("predict", [python, "-m", "src.predict", *tagged, *rest], items=len(tagged), unit="file",
                   shown=shown)

    # 3. What it shows.
    print_table(stages.done)
    by_name = {s.name: s for s in stages.done}
    # The full recipe: every row of the tables, N_FOLDS folds; from this run's rows linearly.
    full_train, full_test = len(train), len(test)
    rows_factor = (full_train + full_test) / items
    projection = {}
    for model, fold in folds.items():
        train_factor = full_train * (1 - 1 / N_FOLDS) / fold["n_train"]
        predict_factor = (full_train / N_FOLDS + full_test) / (fold["n_val"] + len(chosen.test))
        projection[model] = project(fold, by_name[f"{model} fold 0"].seconds, PRESETS[model].epochs, train_factor,
                                    predict_factor)
    fixed = rows_factor * sum(by_name[n].seconds for n in ("data check", "audio cache", "blend", "inspect"))
    total = fixed + sum(N_FOLDS * p["fold_s"] for p in projection.values())
    scaled = "" if rows_factor < 1.01 and args.folds == N_FOLDS else \
        f"; from this run's {items:,} clips and {args.folds} folds, linearly"
    print(f"\nprojected full recipe on this machine ({os.cpu_count()} cores; {full_train:,} train and {full_test:,} "
          f"test clips, {N_FOLDS} folds of each model at its preset's epochs, one fold process at a time{scaled}): "
          f"{_duration(total)}")
    for model, p in projection.items():
        print(f"  {model:<8}{N_FOLDS} x ({_duration(p['setup_s'])} setup + {_duration(p['compile_s'])} compiling + "
              f"{p['epochs']} x {_duration(p['epoch_s'])} + {_duration(p['predict_s'])} predicting) = "
              f"{_duration(N_FOLDS * p['fold_s'])}" + ("  (one epoch ran: its compilation is counted in every "
                                                        "epoch; --epochs 2 measures the steady one)"
                                                        if folds[model]["epochs_run"] < 2 else ""))
    print(f"  data check, audio cache, blend, inspect: {_duration(fixed)}")

    checks = targets(stages.done, folds, chosen, data_dir, out_dir, models)
    for line in checks["lines"]:
        print(line)
    if args.compare:
        compare(stages.done, args.compare)
    command = shlex.join(["python", "-m", "src.tools.rehearsal", *(argv or sys.argv[1:])])
    record = {"machine": machine(), "command": command,
              "scale": args.scale, "seed": args.seed, "epochs": args.epochs, "models": models, "left_out": left_out,
              "train_rows": len(chosen.train), "test_rows": len(chosen.test), "hours": chosen.hours,
              "stages": [asdict(s) | {"per_item_ms": s.per_item_ms} for s in stages.done],
              "folds": {m: {k: v for k, v in f.items() if k != "fingerprints"} for m, f in folds.items()},
              "projection": {"total_s": total, "fixed_s": fixed, "models": projection},
              "checks": {k: v for k, v in checks.items() if k != "lines"},
              "seconds": time.perf_counter() - started}
    write_record(out_dir, record)
    print(f"\nrehearsal finished in {_duration(record['seconds'])}; figures in {out_dir / RECORD} and "
          f"{out_dir / 'rehearsal.csv'}")
    return 0


def prediction_windows(data_dir: Path, out_dir: Path, model: str, fold: int = 0) -> int:
    """How many windows the fold's whole-clip prediction computed over its OOF and test clips: a crop long
    every half crop, the last flush with the clip's end, one for a clip no longer than a crop or not
    decoded (src.training.inference); from the audio cache's index at the model's rate. 0 if unknown."""
    folder = out_dir / "predictions" / model / f"fold{fold}"
    config = json.loads((folder / "config.json").read_text())
    if config.get("prediction") != "windows":
        return 0
    crop = int(round(config["crop_seconds"] * config["sample_rate"]))
    hop = crop // 2
    count = 0
    for split, table in (("train", folder / "oof.csv"), ("test", data_dir / TEST_TABLE)):
        indexes = sorted((data_dir / "cache").glob(f"audio-{config['sample_rate']}hz-*/{split}/index.csv"))
        if not indexes or not table.exists():
            return 0
        index = pd.read_csv(indexes[0], dtype={"fname": str}, keep_default_na=False).set_index("fname")
        fnames = pd.read_csv(table, usecols=["fname"], dtype=str).fname
        lengths = fnames.map(index.length.where(index.status == "ok", 0)).fillna(0).astype(int).to_numpy()
        count += int(np.where(lengths <= crop, 1, np.ceil((lengths - crop) / hop) + 1).sum())
    return count


def targets(stages: list[Stage], folds: dict, chosen: Plan, data_dir: Path, out_dir: Path, models: list[str]) -> dict:
    """The issue's targets, each measured: peak RSS of any process under 3 GB, the blend under 10 s,
    test inference at least as fast per clip as training; and the empty test clips skipped by the cache
    while every submission keeps all rows."""
    by_name = {s.name: s for s in stages}
    peak = max(stages, key=lambda s: s.peak_rss_mib)
    blend = by_name["blend"]
    out = {"peak_rss_mib": peak.peak_rss_mib, "peak_rss_stage": peak.name, "peak_rss_ok": peak.peak_rss_mib < 3 * 1024,
           "blend_seconds": blend.seconds, "blend_ok": blend.seconds < 10, "inference": {}}
    lines = ["\ntargets:",
             f"  peak RSS of any process: {peak.peak_rss_mib:,.0f} MiB ({peak.name}); under 3 GB: "
             f"{'yes' if out['peak_rss_ok'] else 'NO'}",
             f"  blend of {len(chosen.test):,} test rows: {blend.seconds:.1f} s; under 10 s: "
             f"{'yes' if out['blend_ok'] else 'NO'}"]
    for model, fold in folds.items():
        train_ms = 1000 * fold["epoch_seconds"] / fold["n_train"]
        predicted = fold["n_val"] + len(chosen.test)
        predict_ms = 1000 * fold["predict_minutes"] * 60 / predicted
        ok = predict_ms <= train_ms
        count = prediction_windows(data_dir, out_dir, model)
        window_ms = 1000 * fold["predict_minutes"] * 60 / count if count else None
        out["inference"][model] = {"train_ms_per_clip": train_ms, "predict_ms_per_clip": predict_ms, "ok": ok,
                                   "windows": count, "predict_ms_per_window": window_ms}
        lines.append(f"  {model}: whole-clip prediction {predict_ms:.1f} ms per clip (OOF and test), training "
                     f"{train_ms:.1f} ms per clip of an epoch; prediction at least as fast: {'yes' if ok else 'NO'}"
                     + (f" ({count / predicted:.1f} windows a clip, {window_ms:.1f} ms a window)" if count else ""))
    reports = sorted((data_dir / "cache").glob("audio-*/test/report.csv"))
    skipped = set()
    for report in reports:
        table = pd.read_csv(report, dtype=str, keep_default_na=False)
        skipped |= set(table.fname[table.status != "ok"])
    empty = sorted(set(EMPTY_TEST_CLIPS) & set(chosen.test.fname))
    rows = {}
    for path in sorted((out_dir / "submissions").glob("*.csv")):
        rows[path.name] = sum(1 for _ in open(path)) - 1
    out |= {"empty_test_clips": empty, "skipped_test_clips": sorted(skipped), "submission_rows": rows,
            "test_rows": len(chosen.test)}
    kept_all = bool(rows) and all(n == len(chosen.test) for n in rows.values())
    lines.append(f"  empty test clips {', '.join(empty) or '(none kept)'}: skipped by the audio cache: "
                 f"{'yes' if set(empty) <= skipped else 'NO'}; every submission keeps all {len(chosen.test):,} rows: "
                 f"{'yes' if kept_all else 'NO'} ({', '.join(f'{k} {v:,}' for k, v in rows.items())})")
    out["lines"] = lines
    return out


if __name__ == "__main__":
    sys.exit(main())
