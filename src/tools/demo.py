"""The whole pipeline on the small demo set shipped in data/demo. As a user runs it on the real data:
validate the data, build the audio cache, train the folds of each model with run_folds.sh, inspect,
blend; each stage timed.

    python -m src.tools.demo                     # about 4 minutes on 2 CPU cores; writes under runs/demo/
    python -m src.tools.demo --models 1d 2d logmel aisfx  # the kernel's MFCC net too
    python -m src.tools.demo --multilabel        # the same clips mixed in pairs, tagged multi-label

The shipped data is left as found: every stage runs on a working copy under OUT_DIR/data (the tables
copied, the audio folders linked), so the folds and caches live in the run folder, and a rerun reuses
them (finished folds are skipped).

The pretrained `aisfx` is trained when its weights are installed (requirements-pretrained.txt); without
them the demo says so, names the install command and goes on with the others.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..base import cli
from ..base.config import PRESETS
from ..base.errors import DataError, SetupError
from ..base.files import atomic_write_csv
from ..base.layout import SPLITS, TABLES, audio_dir
from ..dataset import audio as audio_cache
from ..dataset.tables import load_test, load_test_labels, load_train
from ..models.pretrained import WEIGHTS

# The public kernel's raw-wave net (the baseline), the strongest preset trained from scratch, and the
# pretrained one, the most accurate.
MODELS = ("1d", "logmel", "aisfx")


def run(command: list[str], stage: str, times: dict[str, float], env: dict | None = None) -> None:
    shown = [f"{k}={v}" for k, v in (env or {}).items()]
    print(f"\n$ {shlex.join(shown + command)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=os.environ | (env or {}))
    times[stage] = time.perf_counter() - start
    if done.returncode != 0:
        raise DataError(f"demo stopped: `{shlex.join(command)}` exited with {done.returncode}; its "
                        f"output above says why.")


def installed(model: str) -> bool:
    """False, with a note naming the install command, for a pretrained model whose weights are absent."""
    if model not in WEIGHTS:
        return True
    try:
        WEIGHTS[model].path()
        return True
    except SetupError as missing:
        print(f"demo: leaving out {model}: {missing}", flush=True)
        return False


def demo_data(source: Path, target: Path) -> Path:
    """A working copy of the dataset in `source` at `target` (OUT_DIR/data), for the stages to write their
    folds.csv and caches into instead of the shipped folder: train.csv, sample_submission.csv and
    test_labels.csv copied (again whenever the source's differ), audio_train/ and audio_test/ as relative
    links to the source's folders. A second call keeps what the stages wrote there. Nothing in `source`
    is written."""
    source, target = Path(source), Path(target)
    if target.resolve() == source.resolve():
        return target
    if not (source / TABLES["train"]).is_file():
        raise DataError(f"{source / TABLES['train']} does not exist: --data-dir names the dataset the demo runs on "
                        f"(default: data/demo).")
    target.mkdir(parents=True, exist_ok=True)
    for table in ("train", "test", "truth"):
        name = TABLES[table]
        if not (source / name).is_file():
            (target / name).unlink(missing_ok=True)
        elif not (target / name).is_file() or (target / name).read_bytes() != (source / name).read_bytes():
            shutil.copyfile(source / name, target / name)
    for split in SPLITS:
        link, folder = audio_dir(target, split), audio_dir(source, split).resolve()
        relative = Path(os.path.relpath(folder, target.resolve()))
        if link.is_symlink() and link.resolve() != folder:
            link.unlink()                                  # made for another --data-dir
        if not link.is_symlink() and not link.exists():
            os.symlink(relative, link, target_is_directory=True)
    return target


MIX_RATE = 44100


def mixture_demo_data(source: Path, target: Path, share: float = 0.5, seed: int = 0) -> Path:
    """The demo's real clips as a multi-label dataset: in each split, `share` of the clips mixed with one
    clip of another label from the same split (both at half amplitude, the shorter one ending early) and
    labelled with both; the others kept alone. Written in the 2019 layout: a `labels` column, a
    probability column per label in sample_submission.csv, test_labels.csv. Made once; a second call
    keeps what is there."""
    if (target / "train.csv").exists():
        return target
    rng = np.random.default_rng(seed)
    train = load_train(source)
    labels = sorted(train.label.unique())
    test = load_test(source, labels).merge(load_test_labels(source, labels), on="fname")
    for split, table in (("train", train), ("test", test)):
        folder = audio_dir(target, split)
        folder.mkdir(parents=True, exist_ok=True)
        mixed_labels = []
        for fname, label in zip(table.fname, table.label):
            clip = _read(audio_dir(source, split) / fname)
            names = [label]
            if rng.random() < share:
                other = rng.choice(np.flatnonzero(table.label.to_numpy() != label))
                partner = _read(audio_dir(source, split) / table.fname.iloc[other])
                length = max(len(clip), len(partner))
                clip = 0.5 * (np.pad(clip, (0, length - len(clip))) + np.pad(partner, (0, length - len(partner))))
                names.append(table.label.iloc[other])
            _write_wav(folder / fname, clip)
            mixed_labels.append(",".join(sorted(names)))
        table["labels"] = mixed_labels
    atomic_write_csv(train[["fname", "labels", "manually_verified"]], target / "train.csv")
    atomic_write_csv(test[["fname", "labels"]], target / "test_labels.csv")
    atomic_write_csv(test[["fname"]].assign(**{label: 0.0 for label in labels}), target / "sample_submission.csv")
    return target


def _read(path: Path) -> np.ndarray:
    samples, rate, _ = audio_cache.decode(path)
    return audio_cache.resample(samples, rate, MIX_RATE)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile

    soundfile.write(path, np.clip(samples, -1, 1), MIX_RATE, subtype="PCM_16")


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.tools.demo", __doc__, data_dir=False, out_dir=False)
    parser.add_argument("--data-dir", default="data/demo",
                        help="the dataset (default: data/demo), left as found: the stages run on a working copy "
                             "under OUT_DIR/data")
    parser.add_argument("--out-dir", default="runs/demo", help="default: runs/demo")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(PRESETS),
                        help=f"the models to train and blend (default: {' '.join(MODELS)})")
    parser.add_argument("--folds", type=int, default=3, help="StratifiedKFold splits (default: 3)")
    parser.add_argument("--epochs", type=int, default=25, help="maximum epochs per fold (default: 25)")
    parser.add_argument("--logmel-epochs", type=int, default=30,
                        help="logmel's epochs, its cosine schedule run to the end (default: 30)")
    parser.add_argument("--aisfx-epochs", type=int, default=8,
                        help="aisfx's epochs, its warm-up and cosine schedule run to the end (default: 8; "
                             "its preset has 20)")
    parser.add_argument("--lanes", type=int, default=min(3, os.cpu_count() or 1),
                        help="fold processes at once, one thread each (default: min(3, cores)); the demo's "
                             "tiny batches keep one thread busy, so folds side by side finish sooner")
    parser.add_argument("--multilabel", action="store_true", dest="mixtures",
                        help="first mix half the demo's clips in pairs of different labels and tag the result "
                             "multi-label (written to OUT_DIR/data; lwlrap and mAP instead of MAP@3)")
    parser.add_argument("--force", action="store_true", help="retrain folds finished by an earlier demo")
    args = parser.parse_args(argv)
    started, times = time.perf_counter(), {}
    if args.mixtures:
        args.out_dir = "runs/demo-multilabel" if args.out_dir == "runs/demo" else args.out_dir
        args.data_dir = str(mixture_demo_data(Path(args.data_dir), Path(args.out_dir) / "data"))
        times["multi-label mixtures"] = time.perf_counter() - started
        print(f"multi-label demo set: {args.data_dir}", flush=True)
    else:
        source, args.data_dir = args.data_dir, str(demo_data(Path(args.data_dir), Path(args.out_dir) / "data"))
        print(f"demo data: {args.data_dir}, a working copy of {source} (tables copied, audio linked)", flush=True)
    models = [m for m in dict.fromkeys(args.models) if installed(m)]
    python = sys.executable
    where = ["--data-dir", args.data_dir, "--out-dir", args.out_dir]
    train_options = where + ["--n-folds", str(args.folds), "--epochs", str(args.epochs),
                             "--batch-size", "16", "--patience", "8"] + (["--force"] if args.force else [])
    # The two cosine schedules run to their end: no early stopping.
    own_epochs = {"logmel": args.logmel_epochs, "aisfx": args.aisfx_epochs}
    rates = sorted({16000, 22050, 44100} | {PRESETS[m].sample_rate for m in models})
    run([python, "-m", "src.data", "--data-dir", args.data_dir], "data check", times)
    run([python, "-m", "src.audio_cache", "--data-dir", args.data_dir, "--rates", *map(str, rates)], "audio cache",
        times)
    for model in models:
        own = ["--epochs", str(own_epochs[model]), "--patience", "none"] if model in own_epochs else []
        if model in own_epochs and PRESETS[model].warmup_epochs >= own_epochs[model]:
            own += ["--warmup-epochs", str(max(0, own_epochs[model] - 1))]   # a warm-up shorter than the run
        epochs = own_epochs.get(model, args.epochs)
        run(["./run_folds.sh", model, "--", *train_options, *own], f"{model} ({args.folds} folds, {epochs} epochs)",
            times, {"PYTHON": python, "THREADS": "1", "CPU_JOBS": str(args.lanes)})
    run([python, "-m", "src.inspect_oof", *models, "--worst", "5", *where], "inspect", times)
    run([python, "-m", "src.blend", *models, *where], "blend", times)
    name = models[0] if len(models) == 1 else f"blend_{'_'.join(models)}"
    print("\ndemo stages:")
    for stage, seconds in times.items():
        print(f"  {stage:<32}{seconds / 60:6.1f} min")
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min; submission: "
          f"{Path(args.out_dir) / 'submissions' / f'{name}.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
