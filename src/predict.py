"""Stage 7, predict: new audio tagged with the trained fold models. Every fold of the chosen models
predicts over windows covering the whole clip, combined as the preset combines them in training, and
folds and models are combined by geometric mean, as src.blend does.

    python -m src.predict recordings/ clip.flac              # top 3 labels per file
    python -m src.predict long.wav --per-window --top-k 5    # labels per window, with timestamps
    python -m src.predict audio/ --csv tags.csv --json tags.json --models 2d

Reads WAV, FLAC, OGG and MP3 (whatever libsndfile decodes), any length, rate or channel count. A
file that cannot be read is reported and skipped; the others are still tagged. Long recordings are
fed to the models a batch of windows at a time.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .base import cli
from .base.config import Config
from .base.errors import DataError
from .base.metrics import geometric_mean
from .dataset import audio as audio_cache
from .dataset.inputs import input_kind
from .training.fold_files import finished_folds, fold_files, trained_models
from .training.inference import combine_windows, predict_padded, windows


@dataclass
class Member:
    """One model preset: its config, its fold models and the labels of their outputs."""

    config: Config
    models: list
    labels: list[str]


def load_members(paths, names: list[str] | None = None, allow_partial: bool = False) -> list[Member]:
    """Every fold model of the named presets (default: all under predictions/); DataError when a
    preset's folds are not all finished (unless allowed) or a model file is refused."""
    names = names or trained_models(paths)
    if not names:
        raise DataError(f"no trained folds under {paths.predictions_dir}: run ./run_folds.sh first")
    members = []
    for name in names:
        folds = [fold_files(paths, name, k) for k in finished_folds(paths, name)]
        if not folds:
            raise DataError(f"{name}: no finished folds under {paths.model_dir(name)}")
        config, labels = folds[0].read_config(), folds[0].labels()
        if len(folds) < config.n_folds and not allow_partial:
            raise DataError(f"{name}: {len(folds)} of its {config.n_folds} folds are finished under "
                            f"{paths.model_dir(name)}. Finish them with ./run_folds.sh {name}, or predict with "
                            f"those there are with --allow-partial.")
        loaded = [_load(f.model) for f in folds]
        members.append(Member(config, loaded, labels))
    if any(m.labels != members[0].labels for m in members):
        raise DataError(f"the models {names} were trained on different label sets; predict with one at a time")
    return members


def _load(path: Path):
    """One fold model; DataError naming the file when Keras refuses it."""
    import keras

    from .models import MinMaxScale

    try:
        return keras.models.load_model(path, compile=False, custom_objects={"MinMaxScale": MinMaxScale})
    except (ValueError, TypeError, OSError) as error:  # safe mode's refusal, a damaged or foreign file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path} could not be loaded as a model of this project ({reason[:300]}). Keras's safe "
                        f"mode refuses files that would run code on loading; retrain that fold (--force) rather "
                        f"than loading a model file from elsewhere.") from None


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
    for member in members:
        batch, member_spans = model_windows(samples, rate, member.config)
        spans = member_spans if spans is None else spans
        same_windows = member_spans.shape == spans.shape and np.allclose(member_spans, spans, atol=0.02)
        for model in member.models:
            probs = predict_padded(model, batch, batch_size)
            clip_probs.append(combine_windows(probs, member.config.combine)[None])
            if same_windows:
                window_probs.append(probs)
    return {"probs": geometric_mean(clip_probs)[0], "windows": geometric_mean(window_probs), "spans": spans,
            "seconds": len(samples) / rate, "note": note}


def find_audio(inputs: list[Path]) -> list[Path]:
    """The files named, and the audio files under the folders named, in a stable order."""
    found = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in audio_cache.AUDIO_SUFFIXES)
        else:
            found.append(item)
    return found


def top(probs: np.ndarray, labels: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(labels[i], float(probs[i])) for i in order]


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.predict", __doc__)
    parser.add_argument("inputs", type=Path, nargs="+", help="audio files or folders")
    parser.add_argument("--models", nargs="+", help="presets to use (default: all with finished folds)")
    parser.add_argument("--top-k", type=int, default=3, help="labels per file (default 3)")
    parser.add_argument("--per-window", action="store_true", help="also give labels per window, with times")
    parser.add_argument("--csv", type=Path, help="write the tags as CSV here")
    parser.add_argument("--json", type=Path, help="write the tags (and windows) as JSON here")
    parser.add_argument("--allow-partial", action="store_true", help="predict with a preset whose folds are "
                        "not all finished")
    args = parser.parse_args(argv)
    members = load_members(cli.paths(args), args.models, args.allow_partial)
    labels = members[0].labels
    results, skipped = [], []
    for path in tqdm(find_audio(args.inputs), unit="file", desc="tagging", disable=None):
        try:
            tags = tag(path, members)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            skipped.append((str(path), f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"))
            continue
        record = {"file": str(path), "seconds": round(tags["seconds"], 3),
                  "tags": [{"label": lab, "probability": round(p, 4)}
                           for lab, p in top(tags["probs"], labels, args.top_k)]}
        if args.per_window:
            record["windows"] = [{"start": round(float(a), 3), "end": round(float(b), 3),
                                  "tags": [{"label": lab, "probability": round(p, 4)}
                                           for lab, p in top(w, labels, args.top_k)]}
                                 for (a, b), w in zip(tags["spans"], tags["windows"])]
        results.append(record)
        print(f"{path}: " + ", ".join(f"{t['label']} {t['probability']:.2f}" for t in record["tags"]))
        for window in record.get("windows", []):
            print(f"  {window['start']:8.2f}-{window['end']:<8.2f} "
                  + ", ".join(f"{t['label']} {t['probability']:.2f}" for t in window["tags"]))
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if args.csv:
        rows = [{"file": r["file"], **{f"label{i + 1}": t["label"] for i, t in enumerate(r["tags"])},
                 **{f"p{i + 1}": t["probability"] for i, t in enumerate(r["tags"])}} for r in results]
        columns = ["file"] + [f"label{i + 1}" for i in range(args.top_k)] + [f"p{i + 1}" for i in range(args.top_k)]
        pd.DataFrame(rows, columns=columns).to_csv(args.csv, index=False)   # the header even with no rows
    if args.json:
        args.json.write_text(json.dumps({"files": results, "skipped": [{"file": f, "reason": w} for f, w in skipped]},
                                        indent=2) + "\n")
    return 0 if results or not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
