"""Speed of whole runs, for src.tools.bench: a complete 1d + 2d run timed stage by stage, the public
kernel's per-batch data path beside the cache, and the peak memory of one fold process."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..base.config import PRESETS, Config
from ..base.errors import DataError
from ..base.layout import Paths, audio_dir
from ..base.pcm import to_int16
from ..dataset.inputs import model_input
from ..dataset.tables import Dataset, one_hot
from ..feeds.crops import crop_or_pad
from ..training.fold_files import finished_folds, fold_files


def peak_rss(data_dir: Path, out_dir: Path, preset: str, epochs: int = 1) -> float:
    """Peak resident memory (MiB) of one `src.train` fold process: 5 folds, fold 0, `epochs` epochs."""
    command = [sys.executable, "-m", "src.train", "--model", preset, "--fold", "0", "--n-folds", "5",
               "--epochs", str(epochs), "--data-dir", str(data_dir), "--out-dir", str(out_dir), "--force"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise DataError(f"{' '.join(command)} failed:\n{process.stderr.read()[-2000:]}")
    return usage.ru_maxrss / 1024


# --- per-batch loading, as the public kernel does ------------------------------------------------

def kernel_style_sequence(data_dir: Path, fnames: list[str], targets: np.ndarray, config: Config,
                          res_type: str = "kaiser_fast"):
    """The public kernel's data path re-implemented: every batch loads each WAV and resamples it
    (librosa.load with kaiser_fast), then crops or pads at a random offset (the model min-max
    scales, as it does for the cached feed)."""
    import keras
    import librosa


    class KernelStyle(keras.utils.PyDataset):
        def __len__(self):
            return int(np.ceil(len(fnames) / config.batch_size))

        def __getitem__(self, index):
            rows = range(index * config.batch_size, min(len(fnames), (index + 1) * config.batch_size))
            rng = np.random.default_rng(index)
            batch = []
            for i in rows:
                wave, _ = librosa.load(audio_dir(data_dir, "train") / fnames[i], sr=config.sample_rate,
                                       res_type=res_type)
                batch.append(crop_or_pad(to_int16(wave)[:, None], config.crop_samples,
                                         np.zeros(1, np.int16), rng))
            return np.stack(batch), targets[list(rows)]

    return KernelStyle()


def compare_with_kernel(data_dir: Path, epochs: int, folds: int = 5) -> dict:
    """Seconds per epoch of one 1d fold fed by the cache and by per-batch loading + resampling, over
    `epochs` epochs after a first one that traces the model."""
    import keras

    from ..feeds.host import ClipSequence
    from ..models import build_model
    from ..training.callbacks import EpochTimer

    config = PRESETS["1d"]
    dataset = Dataset.load(data_dir)
    labels = dataset.labels
    train = dataset.train_with_folds(n_folds=folds)
    rows = train[train.fold != 0]
    targets = one_hot(labels, rows.label)
    source = model_input(data_dir, "train", config)
    feeds = {"cache": ClipSequence(source, rows.fname, targets, config.batch_size, train=True, seed=0),
             "per-batch kaiser_fast": kernel_style_sequence(data_dir, list(rows.fname), targets, config)}
    result = {}
    for name, sequence in feeds.items():
        keras.utils.set_random_seed(0)
        model = build_model(config, len(labels))
        timer = EpochTimer()
        model.fit(sequence, epochs=epochs + 1, steps_per_epoch=len(sequence), callbacks=[timer], verbose=0)
        result[name] = float(np.mean(timer.seconds[1:]))
    return result


def full_run(data_dir: Path, work: Path, epochs: int, kernel_epochs: int, folds: int = 5) -> None:
    """Cache, the folds of 1d, the folds of 2d and the blend, timed stage by stage."""
    out = work / "out"
    options = ["--data-dir", str(data_dir), "--out-dir", str(out), "--n-folds", str(folds), "--epochs", str(epochs)]
    stages = [("audio cache", [sys.executable, "-m", "src.audio_cache", "--data-dir", str(data_dir)]),
              ("1d folds", ["./run_folds.sh", "1d", "--", *options]),
              ("2d folds", ["./run_folds.sh", "2d", "--", *options]),
              ("blend", [sys.executable, "-m", "src.blend", "1d", "2d", "--data-dir", str(data_dir),
                         "--out-dir", str(out)])]
    times = {}
    for name, command in stages:
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True,
                              env=dict(os.environ, PYTHON=sys.executable))
        times[name] = time.perf_counter() - start
        if done.returncode != 0:
            raise DataError(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        if name == "blend":
            print(done.stdout)
    total = sum(times.values())
    print(f"full run ({epochs} epochs at most, early stopping patience {PRESETS['1d'].patience}): "
          f"{total / 60:.1f} min")
    for name, seconds in times.items():
        print(f"  {name:<12}{seconds / 60:7.1f} min")
    for preset in ("1d", "2d"):
        run = Paths(data_dir, out)
        results = [fold_files(run, preset, k).read_result() for k in finished_folds(run, preset)]
        split = {key: sum(r[key] for r in results) for key in ("fit_minutes", "predict_minutes", "minutes")}
        print(f"  {preset} folds: fit {split['fit_minutes']:.1f} min, predict {split['predict_minutes']:.1f} min, "
              f"setup {split['minutes'] - split['fit_minutes'] - split['predict_minutes']:.1f} min "
              f"(process start, imports, loading), epochs run {[r['epochs_run'] for r in results]}")
    per_epoch = compare_with_kernel(data_dir, kernel_epochs, folds)
    ratio = per_epoch["per-batch kaiser_fast"] / per_epoch["cache"]
    print(f"1d fold 0, {kernel_epochs} epochs after a warm-up: {per_epoch['cache']:.1f} s/epoch from the cache, "
          f"{per_epoch['per-batch kaiser_fast']:.1f} s/epoch loading and resampling every batch: {ratio:.1f}x")
