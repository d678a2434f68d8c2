"""Stage 7, predict: new audio tagged with the trained fold models. Every fold of the chosen models
predicts over windows covering the whole clip, combined as the preset combines them in training, and
folds and models are combined by geometric mean, as src.blend does.

    python -m src.predict recordings/ clip.flac              # top 3 labels per file
    python -m src.predict long.wav --per-window --top-k 5    # labels per window, with timestamps
    python -m src.predict audio/ --csv tags.csv --json tags.json --models 2d
    python -m src.predict audio/ --threshold 0.3             # multi-label models: every label at >= 0.3

Models trained on a multi-label dataset (FSDKaggle2019, FSD50K) give each label its own probability:
they tag a file with every label at or above --threshold (default 0.5), at most --top-k if given.

Uses every fold of each model: the folds of its dataset (the dataset's folds.csv under --data-dir when it is
there, else the fold ids each fold recorded when it was trained); --allow-partial uses the finished ones.
Where the dataset is there, folds trained on other rows or folds than it has now are refused unless
--allow-mismatch, as src.blend refuses them.

Reads WAV, FLAC, OGG and MP3 (whatever libsndfile decodes), any length, rate or channel count. A
file that cannot be read is reported and skipped; the others are still tagged. Long recordings are
fed to the models a batch of windows at a time.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import cli
from .base.config import Config
from .base.errors import UsageError
from .base.files import WriteError, atomic_write, irregular
from .base.metrics import geometric_mean
from .dataset import audio as audio_cache
from .dataset.inputs import input_kind
from .dataset.task import SINGLE_LABEL, Task
from .training.inference import combine_windows, predict_padded, windows
from .training.trained import Member, load_members


def model_windows(samples: np.ndarray, rate: int, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The preset's inputs for every window of a clip, and each window's (start, end) in seconds."""
    kind = input_kind(config)
    rows, seconds_per_row = kind.rows(audio_cache.resample(samples, rate, config.sample_rate), config)
    length, pad_row = kind.crop_layout(config)
    batch, starts = windows(rows, length, length // 2, pad_row)
    batch = kind.finish(batch)
    clip_seconds = len(samples) / rate
    spans = np.array([(s * seconds_per_row, min(clip_seconds, (s + length) * seconds_per_row)) for s in starts])
    return batch, spans


def tag(path: Path, members: list[Member], batch_size: int = 64) -> dict:
    """Clip probabilities (windows combined as each preset combines them in training, geometric mean
    over folds and models), and per-window probabilities with each window's span in seconds. Windows
    follow the first model; another model joins the per-window blend where its windows have the same
    spans."""
    samples, rate, note = audio_cache.decode(path)
    if len(samples) == 0:
        raise ValueError("no samples")
    clip_probs, window_probs, spans = [], [], None
    normalize = members[0].task.normalize  # a sigmoid per label keeps its own probability
    for member in members:
        batch, member_spans = model_windows(samples, rate, member.config)
        spans = member_spans if spans is None else spans
        same_windows = member_spans.shape == spans.shape and np.allclose(member_spans, spans, atol=0.02)
        # Padded to the next power of two up to batch_size, not to batch_size: a clip of 2 windows computes
        # 2, not 64 (20x the time for aisfx on a CPU), at the cost of a few compiled shapes per model.
        size = min(batch_size, 1 << (len(batch) - 1).bit_length())
        for model in member.models:
            probs = predict_padded(model, batch, size)
            clip_probs.append(combine_windows(probs, member.config.combine, normalize)[None])
            if same_windows:
                window_probs.append(probs)
    return {"probs": geometric_mean(clip_probs, normalize=normalize)[0],
            "windows": geometric_mean(window_probs, normalize=normalize), "spans": spans,
            "seconds": len(samples) / rate, "note": note}


def find_audio(inputs: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files named, and the audio files under the folders named, in a stable order; and the ones
    left out because they are not regular files (a FIFO would block the reader forever), with why."""
    found, skipped = [], []
    for item in inputs:
        candidates = sorted(p for p in item.rglob("*") if p.suffix.lower() in audio_cache.AUDIO_SUFFIXES) \
            if item.is_dir() else [item]
        for path in candidates:
            kind = irregular(path) if path.exists() else None
            if kind:
                skipped.append((shown(path), f"{kind}, not an audio file: never opened"))
            else:
                found.append(path)
    return found, skipped


def shown(path: Path) -> str:
    """A path as one printable line: control characters (a newline in a file name) escaped."""
    text = str(path)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def top(probs: np.ndarray, labels: list[str], k: int | None, threshold: float | None = None) -> list[tuple[str, float]]:
    """The k most probable labels, best first (all with k=None), keeping those at or above threshold."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(labels[i], float(probs[i])) for i in order if threshold is None or probs[i] >= threshold]


def check_output(path: Path | None, flag: str) -> None:
    """A UsageError now, before any tagging, when `path` cannot be written: a folder, or in a folder that
    does not exist or cannot be written."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder: name a file to write")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path}: the folder {folder} cannot be written")


class Journal:
    """The records tagged so far, appended and fsynced one by one beside the output (OUTPUT.partial), so
    that a killed tagging keeps them and a rerun of the same tagging skips the files it already tagged
    (same path, size and modification time). Each line names the tagging that wrote it (a digest of
    `context`: the models, each fold's fingerprints and result, the options that change a record), so a
    rerun with other models, retrained folds or other options starts over instead of reusing another
    tagging's records. A write that fails (a full disk, a file size limit) leaves the records before it
    whole and stops the tagging. Removed once the outputs are written."""

    def __init__(self, output: Path | None, context: dict | None = None):
        self.path = None if output is None else output.with_name(output.name + ".partial")
        self.context = context or {}
        self.tagging = hashlib.sha256(json.dumps(self.context, sort_keys=True).encode()).hexdigest()[:16]
        self.done: dict[str, dict] = {}
        self.note = None
        self._start_over = True  # the first record written starts the file afresh (another tagging's gone)
        self._cut = False
        if self.path is None or not self.path.exists():
            return
        content = self.path.read_bytes()
        entries = [e for e in map(_parsed, content.decode("utf-8", errors="replace").splitlines())
                   if e and "key" in e]  # not the line a kill cut short
        mine = [e for e in entries if e.get("tagging") == self.tagging]
        if entries and not mine:
            self.note = (f"{shown(self.path)} holds {len(entries)} file(s) tagged by another tagging (other models, "
                         f"retrained folds or other options): not reused; tagging every file again")
            return
        self.done = {e["key"]: e["record"] for e in mine}
        self._start_over = False
        self._cut = bool(content) and not content.endswith(b"\n")  # a cut line must not swallow the next

    @staticmethod
    def key(path: Path) -> str:
        status = path.stat()
        return json.dumps([str(path), status.st_size, status.st_mtime])

    def add(self, key: str, record: dict) -> None:
        """Append one record; a WriteError (the records before it kept whole) when it cannot be written."""
        self.done[key] = record
        if self.path is None:
            return
        text = ("\n" if self._cut else "") + json.dumps({"tagging": self.tagging, "key": key, "record": record}) + "\n"
        data, fd, end = text.encode(), None, 0
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if self._start_over else os.O_APPEND),
                         0o644)
            end = os.lseek(fd, 0, os.SEEK_END)
            written = memoryview(data)
            while written:
                written = written[os.write(fd, written):]
            os.fsync(fd)
        except OSError as error:
            if fd is not None:
                try:  # no half record left behind: the file ends where the last whole one did
                    os.ftruncate(fd, end)
                except OSError:
                    pass
            del self.done[key]
            kept = (f"The {len(self.done)} file(s) tagged before it are kept in {shown(self.path)}: run the same "
                    f"command again to tag only the others." if self.done else "No file was tagged into it yet.")
            raise WriteError(self.path, error, len(data), kept=kept) from None
        finally:
            if fd is not None:
                os.close(fd)
        self._start_over = self._cut = False

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _parsed(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:  # the line a kill cut short
        return None
    return value if isinstance(value, dict) else None


def describe(path: Path, tags: dict, labels: list[str], top_k: int | None, per_window: bool,
             threshold: float | None = None) -> dict:
    record = {"file": str(path), "seconds": round(tags["seconds"], 3),
              "tags": [{"label": lab, "probability": round(p, 4)}
                       for lab, p in top(tags["probs"], labels, top_k, threshold)]}
    record["probabilities"] = {label: round(float(p), 4) for label, p in zip(labels, tags["probs"])}
    if per_window:
        record["windows"] = [{"start": round(float(a), 3), "end": round(float(b), 3),
                              "tags": [{"label": lab, "probability": round(p, 4)}
                                       for lab, p in top(w, labels, top_k, threshold)]}
                             for (a, b), w in zip(tags["spans"], tags["windows"])]
    return record


def write_outputs(results: list[dict], skipped: list[tuple[str, str]], top_k: int | None, csv: Path | None,
                  json_path: Path | None, labels: list[str], task: Task = SINGLE_LABEL) -> None:
    """CSV: the task's table of tags (label1..k and p1..k per file; for multi-label models the labels at or
    above the threshold, then every label's probability). JSON: the records and the skipped files."""
    if csv:
        atomic_write(csv, task.tag_table(results, labels, top_k).to_csv(index=False))
    if json_path:
        atomic_write(json_path, json.dumps({"files": results, "skipped": [{"file": f, "reason": w}
                                                                           for f, w in skipped]}, indent=2) + "\n")


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.predict", __doc__)
    parser.add_argument("inputs", type=Path, nargs="+", help="audio files or folders")
    parser.add_argument("--models", nargs="+", help="presets to use (default: all with finished folds)")
    parser.add_argument("--top-k", type=int, help="labels per file (default 3; for multi-label models every label "
                        "at or above --threshold)")
    parser.add_argument("--threshold", type=float, help="multi-label models: tag every label with at least this "
                        "probability (default 0.5); single-label: keep top-k labels at or above it")
    parser.add_argument("--per-window", action="store_true", help="also give labels per window, with times")
    parser.add_argument("--csv", type=Path, help="write the tags as CSV here")
    parser.add_argument("--json", type=Path, help="write the tags (and windows) as JSON here")
    parser.add_argument("--allow-mismatch", action="store_true", help="combine folds or models trained on "
                        "different train rows or folds, or on other rows or folds than the dataset under --data-dir "
                        "has now (stopped otherwise)")
    parser.add_argument("--allow-partial", action="store_true", help="predict with a preset whose folds are "
                        "not all finished")
    args = parser.parse_args(argv)
    check_output(args.csv, "--csv")
    check_output(args.json, "--json")
    if args.csv and args.json and args.csv.resolve() == args.json.resolve():
        raise UsageError(f"--csv and --json both name {args.csv}: one would replace the other. Give each its own "
                         f"file (e.g. --csv tags.csv --json tags.json), or only the one you want.")
    members = load_members(cli.paths(args), args.models, args.allow_partial, args.allow_mismatch)
    labels, task = members[0].labels, members[0].task
    top_k = args.top_k if args.top_k is not None else task.default_top_k
    threshold = args.threshold if args.threshold is not None else task.default_threshold
    files, skipped = find_audio(args.inputs)
    # What a record depends on: the models (each config holds its windows: crop, rate, how they combine),
    # what each fold was trained on and as, and the options that choose and shape the tags.
    context = {"models": [{"name": m.name, "config": m.config.to_dict(), "folds": m.trained} for m in members],
               "top_k": top_k, "threshold": threshold, "per_window": args.per_window}
    journal = Journal(args.csv or args.json, context)
    if journal.note:
        print(journal.note, file=sys.stderr)
    if journal.done:
        print(f"continuing: {len(journal.done)} file(s) already tagged in {shown(journal.path)}", file=sys.stderr)
    results = []
    for path in tqdm(files, unit="file", desc="tagging", disable=None):
        fresh = False
        try:
            key = Journal.key(path)
            record = journal.done.get(key)
            if record is None:
                record, fresh = describe(path, tag(path, members), labels, top_k, args.per_window, threshold), True
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            skipped.append((shown(path), f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"))
            continue
        if fresh:  # outside the per-file net: a journal that cannot be written (a full disk) stops the tagging
            journal.add(key, record)
        results.append(record)
        print(f"{shown(path)}: " + ", ".join(f"{t['label']} {t['probability']:.2f}" for t in record["tags"]))
        for window in record.get("windows", []):
            print(f"  {window['start']:8.2f}-{window['end']:<8.2f} "
                  + ", ".join(f"{t['label']} {t['probability']:.2f}" for t in window["tags"]))
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    try:
        write_outputs(results, skipped, top_k, args.csv, args.json, labels, task)
    except WriteError as error:
        raise WriteError(error.path, error.error, error.needed, kept=(
            f"Every file tagged is kept in {shown(journal.path)}: run the same command again once there is room, "
            f"and it writes the outputs without tagging any file again.")) from None
    journal.finish()
    return 0 if results or not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
