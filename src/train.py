"""Stage 4, train: one fold of one preset, trained and its predictions written.

    python -m src.train --model 1d --fold 3          # train fold 3, predict its OOF rows and the test set
    python -m src.train --model 1d --prepare         # build caches and data/folds.csv, print the fold ids
                                                     # and the model's folder

Writes predictions/<model>/fold<k>/: config.json, best.keras, log.csv, tensorboard/, oof.csv (the fold's
validation rows), test.csv (sample_submission order), with --clean-labels cleaned_labels.csv (the
training labels it changed) and, last, result.json. A fold with result.json is
finished and is skipped unless --force; every file is written atomically, so a killed run never leaves
a fold that looks finished.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .core import cli
from .core.config import Config, Feeding, add_config_arguments, config_from_args, feeding_from_args
from .core.errors import DataError
from .core.inputs import model_input
from .core.layout import SPLITS, Dataset, FoldFiles, Paths, atomic_write_csv
from .core.metrics import map_at_k
from .core.networks import network
from .core.runs import write_plan

log = logging.getLogger(__name__)


def prepare(config: Config, paths: Paths, n_jobs: int = -1) -> list[int]:
    """Build what every fold of the preset reads (audio cache, features, folds); return the fold ids."""
    # Before minutes of caching: say now if pretrained weights are missing.
    network(config.network).check_weights()
    if config.clean_labels != "off":
        from .core.label_cleaning import check_weights

        check_weights()
    dataset = Dataset.load(paths.data_dir)
    dataset.check_files()  # before folds.csv is written: fixing a row must not mean deleting it too
    folds = dataset.folds(config.n_folds, config.seed)
    for split in SPLITS:
        model_input(paths.data_dir, split, config, n_jobs)
    if config.clean_labels != "off":  # the judge's embeddings, once, before the fold processes need them
        from .core.label_cleaning import embeddings

        embeddings(paths.data_dir, n_jobs)
    return sorted(folds.fold.unique().tolist())


def train_fold(config: Config, paths: Paths, fold: int, force: bool = False, feeding: Feeding | None = None,
               resume_every: float | None = None) -> dict:
    """Train one fold and write its predictions; returns its result record (read back if finished)."""
    files = paths.fold(config.name, fold)
    if files.is_finished() and not force:
        log.info("fold %d of %s is finished (%s); skipping (use --force to redo)", fold, config.name,
                 files.result)
        return files.read_result()
    started = time.time()
    feeding = feeding or Feeding()
    resume = files.start(config, force)

    import keras

    from . import BACKEND
    from .core import backend
    from .models import build_model

    log.info("%s; %s", backend.configure(paths.compile_cache), BACKEND.reason)
    on_gpu = backend.accelerator()
    rows = fold_rows(config, paths, fold)
    cleaned = 0
    if config.clean_labels != "off":
        from .core.label_cleaning import clean

        rows.fit, disputed = clean(config, paths.data_dir, rows.fit, rows.labels, fold)
        atomic_write_csv(disputed, files.cleaned)
        cleaned = len(disputed)
    keras.utils.set_random_seed(config.seed + fold)
    statistics = rows.train_source.model_statistics(list(rows.fit.fname))
    steps_per_execution = backend.steps_per_execution(feeding.steps_per_execution, on_gpu)
    model = build_model(config, len(rows.labels), -(-len(rows.fit) // config.batch_size), steps_per_execution,
                        **statistics)
    fit_seq, val_seq = feeds(config, feeding, rows.train_source, rows.fit, rows.val, rows.one_hot(rows.fit), fold,
                             on_gpu)
    log.info("fold %d: %d training clips, %d validation clips; %s feed, %d step(s) per execution, %s",
             fold, len(rows.fit), len(rows.val), "device" if hasattr(fit_seq, "bank") else "host",
             steps_per_execution, config.precision)
    first_epoch = 0
    if resume:
        # The model as it was after its last completed epoch: weights, optimizer state, schedule position
        # and random-number state; the batches continue from the next epoch's order.
        model.optimizer.build(model.trainable_variables)
        for variable, value in zip([*model.variables, *model.optimizer.variables],
                                   files.load_resume_arrays(files.resume_variables), strict=True):
            variable.assign(value)
        first_epoch = config.epochs if resume.get("stopped") else resume["epoch"] + 1
        files.log_rows(resume["epoch"] + 1)
        fit_seq.start_at(first_epoch)  # batch 0 of the resumed fit is the first of that epoch
        log.info("fold %d: continuing after epoch %d of %d (state in %s)", fold, resume["epoch"] + 1,
                 config.epochs, files.resume)

    fit_started = time.time()
    timer = fit(model, fit_seq, val_seq, rows.one_hot(rows.val), config, files, resume, first_epoch, resume_every)
    fitted = time.time()
    oof = predict(model, config, rows.train_source, rows.val.fname, len(rows.labels))
    test_probs = predict(model, config, rows.test_source, rows.test.fname, len(rows.labels))
    predicted = time.time()

    files.write_probabilities(files.oof, rows.val.fname, oof, rows.labels)
    files.write_probabilities(files.test, rows.test.fname, test_probs, rows.labels)
    losses = pd.read_csv(files.log_csv).val_loss.to_numpy()   # every epoch, earlier attempts' too
    result = {
        "model": config.name, "fold": fold,
        "val_map3": map_at_k(rows.val.label.map(rows.labels.index).to_numpy(), oof),
        "val_loss": float(min(losses)), "best_epoch": int(np.argmin(losses)) + 1, "epochs_run": len(losses),
        "n_train": len(rows.fit), "n_val": len(rows.val), "skipped_train": rows.skipped_train,
        "cleaned_labels": cleaned,
        "silent_test": len(rows.silent_test), "backend": keras.backend.backend(),
        "device": "gpu" if on_gpu else "cpu", "feeding": dataclasses.asdict(feeding),
        "feed": "device" if hasattr(fit_seq, "bank") else "host", "steps_per_execution": steps_per_execution,
        "first_epoch_seconds": timer.first_epoch, "epoch_seconds": timer.median_epoch(),
        "fit_minutes": (fitted - fit_started) / 60, "predict_minutes": (predicted - fitted) / 60,
        "minutes": (time.time() - started) / 60,
    }
    files.write_result(result)
    files.clear_resume()
    log.info("fold %d of %s: validation MAP@3 %.4f (%d clips), best epoch %d of %d, %.1f min",
             fold, config.name, result["val_map3"], len(rows.val), result["best_epoch"],
             result["epochs_run"], result["minutes"])
    return result


@dataclass
class FoldRows:
    """Which clips one fold trains on, validates on and predicts, and the inputs they come from."""

    labels: list[str]
    fit: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    train_source: object
    test_source: object
    skipped_train: int
    silent_test: list[str]

    def one_hot(self, rows: pd.DataFrame) -> np.ndarray:
        return np.eye(len(self.labels), dtype=np.float32)[rows.label.map(self.labels.index)]


def fold_rows(config: Config, paths: Paths, fold: int) -> FoldRows:
    """The fold's training and validation rows (clips the audio cache skipped left out, and said so)
    and the test clips (undecodable ones predicted as silence, and said so)."""
    dataset = Dataset.load(paths.data_dir)
    train = dataset.train_with_folds(config.n_folds, config.seed)
    if fold not in set(train.fold):
        raise DataError(f"fold {fold} does not exist: {paths.folds_csv} holds folds {sorted(set(train.fold))}")
    train_source = model_input(paths.data_dir, "train", config, n_jobs=1)
    test_source = model_input(paths.data_dir, "test", config, n_jobs=1)
    usable = train.fname.map(lambda f: train_source.store.status(f) == "ok")
    if not usable.all():
        log.warning("leaving out %d train clip(s) the audio cache skipped: %s", (~usable).sum(),
                    ", ".join(train.fname[~usable]))
    silent = [f for f in dataset.test.fname if test_source.store.status(f) != "ok"]
    if silent:
        log.warning("%d test clip(s) could not be decoded and are predicted as silence: %s",
                    len(silent), ", ".join(silent))
    return FoldRows(dataset.labels, train[usable & (train.fold != fold)], train[usable & (train.fold == fold)],
                    dataset.test, train_source, test_source, int((~usable).sum()), silent)


def fit(model, fit_seq, val_seq, val_targets: np.ndarray, config: Config, files: FoldFiles,
        resume: dict | None = None, first_epoch: int = 0, resume_every: float | None = None):
    """Train with validation every epoch, from the start or from a resume state; after every epoch the
    state is saved (a killed fold continues from there). The best epoch's weights end in the model and
    in best.keras. Returns the epoch timer."""
    import keras

    from .core import backend
    from .core.callbacks import EpochTimer, EpochValidation, FoldCheckpoint, ResumableEarlyStopping

    timer = EpochTimer(resume["seconds"] if resume else None)
    # Ends with the best epoch's weights in the model: they are saved as best.keras, and prediction
    # reuses the predict step compiled for validation instead of loading and compiling anew.
    stopping = ResumableEarlyStopping(config.early_stopping_patience, resume and resume["stopping"],
                                      files.load_resume_arrays(files.resume_best) if resume else None)
    callbacks = [
        EpochValidation(val_seq, val_targets),  # first: the callbacks after it read its val_loss
        timer, stopping, keras.callbacks.CSVLogger(files.log_csv, append=bool(resume)),
    ]
    if backend.has_tensorflow():  # TensorBoard writes through tf.summary; a resumed attempt in its own run
        folder = files.tensorboard / (f"resumed_at_epoch_{resume['epoch'] + 2}" if resume else "")
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(folder)))
    else:
        log.info("no TensorBoard logs: TensorBoard needs TensorFlow installed (log.csv has every epoch)")
    callbacks.append(FoldCheckpoint(files, stopping, timer, resume_every))  # last: after the epoch's log row
    verbose = 2 if not sys.stdout.isatty() else "auto"
    model.fit(fit_seq, epochs=config.epochs, initial_epoch=first_epoch, steps_per_epoch=len(fit_seq),
              callbacks=callbacks, verbose=verbose, shuffle=False)  # the sequence orders its own batches
    model.save(files.model)  # once, the best epoch's weights: saving at every better epoch cost seconds a fold
    return timer


def predict(model, config: Config, source, fnames, n_classes: int) -> np.ndarray:
    """Class probabilities of the clips: over windows covering each clip, or from one crop."""
    from .core.generator import ClipSequence
    from .core.inference import predict_clips, predict_sequence

    if len(fnames) == 0:  # e.g. a dataset with predefined folds and no test split
        return np.zeros((0, n_classes), np.float32)
    if config.prediction == "windows":
        return predict_clips(model, source, list(fnames), config.batch_size, config.combine)
    return predict_sequence(model, ClipSequence(source, fnames, None, config.batch_size, full_batches=True))


def feeds(config: Config, feeding: Feeding, source, fit_rows: pd.DataFrame, val_rows: pd.DataFrame,
          targets: np.ndarray, fold: int, on_gpu: bool):
    """The training and validation sequences: cut on the accelerator (src.core.device_feed) when asked
    (--feed device), or on auto with a GPU when the preset allows it and the audio cache fits beside
    training in the process's share of GPU memory; else on the host (src.core.generator)."""
    from .core import backend
    from .core.device_feed import ClipBank, DeviceClipSequence, bank_bytes, room_for, supports
    from .core.generator import ClipSequence

    wanted = feeding.feed == "device" or (feeding.feed == "auto" and on_gpu)
    # The memory check only for a preset the device feed can take, before anything is copied.
    why_not = supports(config) or (room_for(bank_bytes(source), backend.device_memory()) if wanted else None)
    if feeding.feed == "device" and why_not:
        raise DataError(f"--feed device cannot serve preset {config.name}: {why_not}; use --feed host")
    flags = _unverified_flags(fit_rows, config)
    if wanted and not why_not:
        bank = ClipBank(source)
        log.info("device feed: %.2f GB of audio on the %s", bank.nbytes / 1e9, "GPU" if on_gpu else "CPU")
        return (training_sequence(config, source, fit_rows.fname, targets, config.seed + fold, flags, bank=bank),
                DeviceClipSequence(bank, val_rows.fname, None, config.batch_size, full_batches=True))
    if wanted:
        log.info("host feed: %s", why_not)
    return (training_sequence(config, source, fit_rows.fname, targets, config.seed + fold, flags, feeding),
            ClipSequence(source, val_rows.fname, None, config.batch_size, full_batches=True, **feeding.pydataset()))


def training_sequence(config: Config, source, fnames, targets: np.ndarray, seed: int,
                      flags: np.ndarray | None = None, feeding: Feeding | None = None, bank=None):
    """The preset's training batches (crops, augmentation, mixup or between-class mixing): cut on the
    accelerator from `bank` when one is given, else on the host with `feeding`'s workers."""
    from .core.augment import augmentation
    from .core.device_feed import DeviceClipSequence
    from .core.generator import ClipSequence

    common = dict(train=True, seed=seed, mixup=config.mixup, flags=flags,
                  min_length=round(config.min_crop_seconds / config.crop_seconds * source.crop_length))
    common["between_class_rate"] = config.sample_rate if config.between_class else 0
    if bank is not None:
        return DeviceClipSequence(bank, fnames, targets, config.batch_size, time_shift=config.time_shift,
                                  gain_db=config.gain_db, **common)
    return ClipSequence(source, fnames, targets, config.batch_size, augment=augmentation(config), **common,
                        **(feeding or Feeding()).pydataset())


def _unverified_flags(rows: pd.DataFrame, config: Config) -> np.ndarray | None:
    """Per-clip unverified flags for UnverifiedLoss (appended to the targets), or None when unverified
    clips are treated as is."""
    if config.unverified_weight == 1.0 and config.drop_unverified == 0:
        return None
    return (rows.manually_verified.to_numpy() == 0).astype(np.float32)


def train_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.train", __doc__)
    add_config_arguments(parser)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--fold", type=int, help="train this fold (0-based, as in data/folds.csv)")
    action.add_argument("--prepare", action="store_true",
                        help="build the caches and folds the preset needs; print its fold ids")
    parser.add_argument("--plan", type=Path, metavar="FILE",
                        help="with --prepare: also write the fold ids and the model's folders as JSON to FILE "
                             "(what run_folds.sh reads)")
    parser.add_argument("--force", action="store_true", help="retrain a finished fold")
    parser.add_argument("--resume-every", type=float, metavar="SECONDS",
                        help="save the state a killed fold resumes from after an epoch that ends this long after "
                             "the last save (0: after every epoch). Default: as often as keeps saving under 5 %% "
                             "of the time (every epoch on a CPU, every few sub-second epochs on a GPU)")
    return parser


@cli.command
def main(argv=None) -> int:
    args = train_parser().parse_args(argv)
    config, paths = config_from_args(args), cli.paths(args)
    if args.prepare:
        folds = prepare(config, paths)
        print(f"{config.name}: folds {' '.join(map(str, folds))} -> {paths.model_dir(config.name)}")
        if args.plan:
            write_plan(args.plan, paths, config.name, folds)
    else:
        try:
            train_fold(config, paths, args.fold, args.force, feeding_from_args(args), args.resume_every)
        except OSError as error:  # a full disk, a read-only folder: say where, keep what was done
            files = paths.fold(config.name, args.fold)
            raise DataError(f"could not write {error.filename or 'under ' + str(files.folder)}: "
                            f"{error.strerror or error}. Epochs completed so far are kept in {files.resume} "
                            f"and finished folds are untouched: make room or fix the folder, then run the "
                            f"same command again to continue.") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
