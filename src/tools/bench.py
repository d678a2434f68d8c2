"""Speed, measured on any dataset in the competition layout. How fast the audio cache builds, the feed
alone, the training step alone and the two together, on any machine. Figures are printed, with ratios measured in the
same run so that a noisy machine still gives a meaningful answer.

    python -m src.tools.bench DATA_DIR              # cache; feed alone, step alone, both together (GPU
                                                    # busy share), inference; peak RSS
    KERAS_BACKEND=torch python -m src.tools.bench DATA_DIR --models logmel --precision bfloat16
    python -m src.tools.bench DATA_DIR --repeat 10  # the same on the train list repeated 10 times
    python -m src.tools.bench DATA_DIR --models logmel --fold-stack 5   # and 5 folds trained as one model
    python -m src.tools.bench DATA_DIR --full-run   # a complete 5-fold 1d + 2d run, timed by stage,
                                                    # against per-batch loading and resampling

Works on a mirror of DATA_DIR in a temporary folder (symbolic links to its audio, a fresh cache), so
the dataset's own cache and predictions are never touched.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..base import backend, cli
from ..base.config import PRESETS, Config, Feeding
from ..base.files import atomic_write_csv
from ..base.layout import Paths, audio_dir
from ..dataset import audio as audio_cache
from ..dataset.inputs import model_input
from ..dataset.tables import class_names, load_train, one_hot
from .whole_runs import full_run, peak_rss

# The modules that import Keras (seconds to load) are imported in the functions that train.

# --- setup ---------------------------------------------------------------------------------------

def mirror(data_dir: Path, target: Path, repeat: int = 1) -> Path:
    """A copy of the dataset's layout made of links to its audio; the train list `repeat` times over
    (each copy's clips renamed r<k>_<fname>), so that size-dependent costs show."""
    data_dir = Path(data_dir).resolve()
    target.mkdir(parents=True)
    train = load_train(data_dir)
    audio_dir(target, "train").mkdir()
    copies = []
    for k in range(repeat):
        prefix = f"r{k}_" if repeat > 1 else ""
        for fname in train.fname:
            os.symlink(audio_dir(data_dir, "train") / fname, audio_dir(target, "train") / f"{prefix}{fname}")
        copies.append(train.assign(fname=prefix + train.fname))
    atomic_write_csv(pd.concat(copies), target / "train.csv")
    os.symlink(audio_dir(data_dir, "test"), audio_dir(target, "test"))
    for name in ("sample_submission.csv", "test_labels.csv"):
        if (data_dir / name).exists():
            shutil.copy(data_dir / name, target / name)
    return target


def machine() -> dict:
    import keras

    gpus = subprocess.run("nvidia-smi -L", shell=True, capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "gpu": gpus or "none", "backend": keras.backend.backend(),
            "keras": keras.__version__}


# --- audio cache ---------------------------------------------------------------------------------

def _decode_only(path: Path) -> int:
    return len(audio_cache.decode(path)[0])


def _decode_resample(path: Path, rates: list[int], res_type: str = audio_cache.RESAMPLER) -> int:
    samples, rate, _ = audio_cache.decode(path)
    return sum(len(audio_cache.to_int16(audio_cache.resample(samples, rate, r, res_type))) for r in rates)


def bench_cache(data_dir: Path, rates: list[int]) -> dict:
    """Clips/s of decoding, of decoding + resampling (the limit) and of the cache build, all cores."""
    from joblib import Parallel, delayed

    paths = [audio_dir(data_dir, "train") / f for f in load_train(data_dir).fname]
    for path in paths:  # warm the page cache so that no stage pays for the first disk read
        path.read_bytes()
    seconds_of_audio = sum(audio_cache.decode(p)[0].size / 44100 for p in paths[:50]) / min(50, len(paths))

    def rate(fn, *args, files=paths) -> float:
        start = time.perf_counter()
        Parallel(n_jobs=-1, batch_size=8)(delayed(fn)(p, *args) for p in files)
        return len(files) / (time.perf_counter() - start)

    # Start the worker pool and import what its workers need outside the timings.
    rate(_decode_resample, rates, files=paths[:32])
    decode = rate(_decode_only)
    resample = rate(_decode_resample, rates)
    start = time.perf_counter()
    audio_cache.build(data_dir, "train", rates)
    build = len(paths) / (time.perf_counter() - start)
    return {"clips": len(paths), "mean_seconds": seconds_of_audio, "decode": decode,
            "decode_resample": resample, "build": build}


# --- feeding the model ---------------------------------------------------------------------------

class GpuBusy:
    """GPU utilisation sampled by `nvidia-smi` every 100 ms while the block runs: the share of time a
    kernel was running (mean %), or None without a GPU."""

    def __enter__(self):
        self.samples, self.process = [], None
        if shutil.which("nvidia-smi") and os.environ.get("CUDA_VISIBLE_DEVICES") not in ("", "-1"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            self.process.terminate()
            out, _ = self.process.communicate()
            self.samples = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _sync(x) -> None:
    """Wait for a (possibly asynchronous) device computation to finish."""
    from keras import ops

    ops.convert_to_numpy(ops.sum(ops.cast(x, "float32")))


def _feeds(data_dir: Path, config: Config, feeding: Feeding, clips: int):
    """The preset's training sequences over up to `clips` clips: host feed, and device feed when the
    preset allows it (None otherwise)."""
    from ..feeds.device import ClipBank, supports
    from ..feeds.fold_feeds import training_batches

    train = load_train(data_dir)
    labels = class_names(train)
    source = model_input(data_dir, "train", config)
    ok = train[train.fname.map(lambda f: source.store.status(f) == "ok")].head(clips)
    targets = one_hot(labels, ok.label)
    host = training_batches(config, source, ok.fname, targets, 0, feeding=feeding)
    device = None
    if supports(config) is None:
        device = training_batches(config, source, ok.fname, targets, 0, bank=ClipBank(source))
    statistics = source.model_statistics(list(ok.fname))
    return host, device, len(labels), statistics


def feed_rate(sequence, rounds: int) -> float:
    """Crops/s of one feed alone (one worker, no model): batches made and, on a device, finished."""
    times = []
    for round_ in range(rounds + 1):
        start = time.perf_counter()
        for i in range(len(sequence)):
            x = sequence[round_ * len(sequence) + i][0]   # a new epoch each round
        _sync(x)
        if round_:  # round 0 warms up (first device ops compile)
            times.append(time.perf_counter() - start)
    return len(sequence) * sequence.batch_size / float(np.median(times))


def resident(sequence, batches: int = 8, folds: int = 1):
    """A PyDataset as long as `sequence` serving its first batches, made once and kept on the device,
    in a loop: the training step measured without any feed. With folds > 1, batches of a FoldStack:
    each fold's slot a different one of those batches."""
    import keras
    from keras import ops

    from ..training.fold_stack import stacked_batch

    kept = [tuple(ops.convert_to_tensor(t) for t in sequence[i]) for i in range(min(batches, len(sequence)))]
    if folds > 1:
        kept = [stacked_batch([kept[(i + k) % len(kept)] for k in range(folds)]) for i in range(len(kept))]

    class Resident(keras.utils.PyDataset):
        def __len__(self):
            return len(sequence)

        def __getitem__(self, index):
            return kept[index % len(kept)]
    return Resident()


def bench_training(data_dir: Path, config: Config, clips: int, rounds: int, feeding: Feeding | None = None,
                   fold_stack: int = 0) -> dict:
    """Samples/s of the feed alone (host and device), the training step alone (batches already on
    the device), and training fed by each feed (the two together, with the GPU busy share), medians
    of `rounds` epochs after one that compiles; and of inference. With fold_stack K, also the step
    alone of K folds stacked into one model (src.training.fold_stack), samples/s of all K together."""
    import keras

    from ..models import build_model

    feeding = feeding or Feeding()
    host, device, n_classes, statistics = _feeds(data_dir, config, feeding, clips)
    on_gpu = backend.accelerator()
    steps = backend.steps_per_execution(feeding.steps_per_execution, on_gpu)
    result = {"clips": len(host) * host.batch_size, "steps_per_execution": steps,
              "feed host": feed_rate(host, rounds),
              "feed device": feed_rate(device, rounds) if device is not None else None}
    from ..training.callbacks import EpochTimer

    def networks(sequence, folds: int) -> list:
        out = []
        for k in range(folds):
            keras.utils.set_random_seed(k)
            out.append(build_model(config, n_classes, len(sequence), steps, **statistics))
        return out

    def train_rate(model, sequence, folds: int = 1):
        """Samples/s (of every fold together) and GPU busy share of `model` trained on `sequence`."""
        timer = EpochTimer()
        with GpuBusy() as busy:
            model.fit(sequence, epochs=rounds + 1, steps_per_epoch=len(sequence), callbacks=[timer], verbose=0)
        result.setdefault("first epochs", []).append(round(timer.seconds[0], 1))
        return len(sequence) * config.batch_size * folds / float(np.median(timer.seconds[1:])), busy.mean

    resident_source = device if device is not None else host
    sequence = resident(resident_source)
    model = networks(sequence, 1)[0]
    result["step"], result["busy step"] = train_rate(model, sequence)
    if fold_stack > 1:
        from ..training.fold_stack import FoldStack

        stacked_sequence = resident(resident_source, folds=fold_stack)
        stack = FoldStack(networks(stacked_sequence, fold_stack))
        stack.compile_as(stack.network, steps_per_execution=steps)
        result["stack"], result["busy stack"] = train_rate(stack, stacked_sequence, fold_stack)
    result["host"], result["busy host"] = train_rate(networks(host, 1)[0], host)
    if device is not None:
        result["device"], result["busy device"] = train_rate(networks(device, 1)[0], device)
    x = np.concatenate([host[i][0] for i in range(len(host))])
    model.predict(x[: config.batch_size], batch_size=config.batch_size, verbose=0)
    start = time.perf_counter()
    model.predict(x[: len(x) // config.batch_size * config.batch_size], batch_size=config.batch_size, verbose=0)
    result["inference"] = len(x) // config.batch_size * config.batch_size / (time.perf_counter() - start)
    return result


# --- report --------------------------------------------------------------------------------------

@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.tools.bench", __doc__, out_dir=False)
    parser.add_argument("dataset", type=Path, nargs="?", help="the same as --data-dir (kept for older scripts)")
    parser.add_argument("--models", nargs="+", default=["1d", "2d"], choices=sorted(PRESETS))
    parser.add_argument("--repeat", type=int, default=1, help="repeat the train list N times (default 1)")
    parser.add_argument("--clips", type=int, default=512, help="clips per feeding measurement (default 512)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per feed, alternating "
                        "generator and in-memory, after one warm-up each (default 3)")
    parser.add_argument("--workers", type=int, help="PyDataset workers (default: the preset's)")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="training precision (default float32)")
    parser.add_argument("--fold-stack", type=int, default=0, metavar="K",
                        help="also time the training step of K folds stacked into one model (JAX only; "
                             "src.training.fold_stack), samples/s of all K together")
    parser.add_argument("--skip-cache", action="store_true", help="skip the audio cache timings")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS fold process")
    parser.add_argument("--json", type=Path, help="also append each model's figures to this JSON-lines file")
    parser.add_argument("--full-run", action="store_true", help="time a complete 5-fold 1d + 2d run instead")
    parser.add_argument("--full-run-epochs", type=int, default=50, help="maximum epochs per fold there")
    parser.add_argument("--full-run-folds", type=int, default=5, help="folds of each model there (default 5)")
    parser.add_argument("--kernel-epochs", type=int, default=3, help="epochs of the per-batch comparison")
    args = parser.parse_args(argv)
    if args.fold_stack > 1 and os.environ.get("KERAS_BACKEND") != "jax":
        parser.error(f"--fold-stack runs under JAX only (this run: {os.environ.get('KERAS_BACKEND')}); "
                     f"set KERAS_BACKEND=jax")
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        work = Path(work)
        data_dir = mirror(args.dataset or args.data_dir, work / "data", args.repeat)
            # The compilation cache: the same step built again is not compiled again.
        backend.configure(Paths(out_dir=work).compile_cache)
        info = machine()
        print(f"machine: {info['cores']} cores, GPU: {info['gpu']}, backend {info['backend']} "
              f"(keras {info['keras']})")
        if args.full_run:
            full_run(data_dir, work, args.full_run_epochs, args.kernel_epochs, args.full_run_folds)
            return 0
        rates = sorted({PRESETS[m].sample_rate for m in args.models})
        if args.skip_cache:
            for rate in rates:
                audio_cache.build(data_dir, "train", [rate])
        else:
            cache = bench_cache(data_dir, rates)
            audio = cache["mean_seconds"]
            print(f"\naudio cache, {cache['clips']} train clips (~{audio:.1f} s each), rates {rates}, all cores:")
            for name in ("decode", "decode_resample", "build"):
                label = {"decode": "decode only", "decode_resample": "decode + resample",
                         "build": "cache build"}[name]
                print(f"  {label:<20}{cache[name]:8.1f} clips/s {cache[name] * audio:9.0f} s of audio/s")
            print(f"  build / (decode + resample): {cache['build'] / cache['decode_resample']:.0%}")
        print(f"\ntraining, samples/s (median of {args.rounds} epochs over up to {args.clips} clips, after one "
              f"that compiles; precision {args.precision}); GPU busy = mean nvidia-smi utilisation:")
        print(f"  {'model':<7}{'feed: host':>11}{'device':>9}{'step alone':>12}{'host-fed':>10}{'busy':>6}"
              f"{'device-fed':>12}{'busy':>6}{'inference':>11}{'peak RSS':>10}")
        fmt = lambda v, w, unit="": f"{v:>{w}.0f}{unit}" if v is not None else f"{'-':>{w + len(unit)}}"
        for name in args.models:
            config = dataclasses.replace(PRESETS[name], precision=args.precision)
            speed = bench_training(data_dir, config, args.clips, args.rounds, Feeding(workers=args.workers or 1),
                                   args.fold_stack)
            rss = peak_rss(data_dir, work / "rss", name) if not args.no_rss else None
            print(f"  {name:<7}{fmt(speed['feed host'], 11)}{fmt(speed['feed device'], 9)}{fmt(speed['step'], 12)}"
                  f"{fmt(speed['host'], 10)}{fmt(speed['busy host'], 5, '%')}{fmt(speed.get('device'), 12)}"
                  f"{fmt(speed.get('busy device'), 5, '%')}{fmt(speed['inference'], 11)}{fmt(rss, 6, ' MiB')}"
                  f"   first epochs {speed['first epochs']} s", flush=True)
            if "stack" in speed:
                busy = "" if speed["busy stack"] is None else f", GPU busy {speed['busy stack']:.0f}%"
                print(f"  {'':<7}{args.fold_stack} folds stacked, step alone: {speed['stack']:.0f} samples/s of all "
                      f"folds together ({speed['stack'] / speed['step']:.2f}x one fold's){busy}", flush=True)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps({"model": name, **info, "precision": args.precision,
                                          "repeat": args.repeat, **speed, "peak_rss_mib": rss}) + "\n")
        print(f"  (feed: crops/s of one feed alone, one worker, no model; step alone: training on batches "
              f"already on the device; *-fed: the two together; {speed['steps_per_execution']} step(s) per "
              f"execution; peak RSS of a `src.train` fold process, 1 epoch, on {len(load_train(data_dir))} "
              f"train clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
