"""One fold of one preset: its rows, its batches, its model trained (resuming a killed attempt) and its
predictions written (src.training.fold_files says where)."""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..base import backend
from ..base.config import Config, Feeding
from ..base.errors import DataError, UsageError
from ..base.files import Lock
from ..base.layout import SPLITS, Paths
from ..dataset.folds import fold_ids
from ..dataset.inputs import InputKind, model_input
from ..dataset.tables import Dataset
from ..dataset.task import SINGLE_LABEL, Task
from ..feeds.fold_feeds import Feeds
from ..feeds.host import ClipSequence
from ..models import build_model, check_weights
from . import label_cleaning
from .callbacks import EpochTimer, EpochValidation, FoldCheckpoint, ResumableEarlyStopping
from .fold_files import FoldFiles, fold_files, validation_score
from .inference import predict_clips, predict_sequence
from .resume import ResumeState

log = logging.getLogger(__name__)


def prepare(config: Config, paths: Paths, n_jobs: int = -1) -> list[int]:
    """Build what every fold of the preset reads (audio cache, features, folds); return the fold ids."""
    check_weights(config.network)  # before minutes of caching: say now if pretrained weights are missing
    if config.clean_labels != "off":
        label_cleaning.check_weights()
    dataset = Dataset.load(paths.data_dir)
    check_task(config, dataset)
    dataset.check_files()  # before folds.csv is written: fixing a row must not mean deleting it too
    folds = dataset.folds(config.n_folds, config.seed)
    for split in SPLITS:
        model_input(paths.data_dir, split, config, n_jobs)
    if config.clean_labels != "off":  # the judge's embeddings, once, before the fold processes need them
        label_cleaning.embeddings(paths.data_dir, n_jobs)
    return fold_ids(folds)


def check_task(config: Config, dataset: Dataset) -> None:
    """UsageError for a setting that needs one label per clip on a multi-label dataset."""
    if not dataset.task.cleanable and config.clean_labels != "off":
        raise UsageError(f"--clean-labels judges one label per clip, but {dataset.data_dir / 'train.csv'} is "
                         f"multi-label (a labels column): drop --clean-labels.")


def changed_settings(config: Config, files: FoldFiles) -> str | None:
    """How `config` differs from the settings a fold was trained with (its config.json), as "epochs (2
    then, 5 now), ..."; None when it does not, or config.json is unreadable (nothing to compare)."""
    saved = files.saved_config()
    try:
        then = Config.from_dict(saved, str(files.config)).to_dict() if isinstance(saved, dict) else None
    except (ValueError, TypeError):
        then = None
    if then is None:
        return None
    now = config.to_dict()  # from_dict fills in settings added since with their defaults: no false alarm
    # The task is the dataset's, not a setting (a changed dataset shows in the fingerprints instead).
    return ", ".join(f"{k} ({then.get(k)} then, {v} now)" for k, v in now.items()
                     if then.get(k) != v and k != "task") or None


def check_settings(config: Config, paths: Paths, folds: list[int]) -> None:
    """UsageError when a finished fold among `folds` of config.name was trained with other settings than
    `config`: skipping it would pass it off as a fold of these settings. It lists the settings that differ
    and asks for --force (retrain it with these) or --name (train these as a model of their own)."""
    changed = [(k, why) for k in folds if fold_files(paths, config.name, k).is_finished()
               and (why := changed_settings(config, fold_files(paths, config.name, k)))]
    if changed:
        (k, why), others = changed[0], [str(k) for k, _ in changed[1:]]
        also = f" (and fold(s) {' '.join(others)} likewise)" if others else ""
        raise UsageError(f"fold {k} of {config.name} ({paths.fold_dir(config.name, k)}) is finished, but was trained "
                         f"with other settings than these: {why}{also}. It is not skipped as if trained with these: "
                         f"to retrain it with them, run the same command with --force; to keep it and train them "
                         f"as a model of their own, add --name NEW_NAME (a new folder under {paths.predictions_dir}).")


def train_fold(config: Config, paths: Paths, fold: int, force: bool = False, feeding: Feeding | None = None,
               resume_every: float | None = None) -> dict:
    """Train one fold and write its predictions, holding the fold's lock; returns its result record (read
    back if finished and still the dataset's: a finished fold trained on other rows needs --force)."""
    files = fold_files(paths, config.name, fold)
    dataset = Dataset.load(paths.data_dir)
    config = dataclasses.replace(config, task=dataset.task.NAME)  # saved in config.json with the rest
    fingerprints = dataset.fingerprints(config.n_folds, config.seed)
    with Lock(files.lock, f"src.train --model {config.preset} --name {config.name} --fold {fold}") as lock:
        if lock.note:
            log.warning("%s", lock.note)
        if files.is_finished() and not force:
            stale = files.stale(fingerprints)
            if stale:
                raise UsageError(f"{stale}. Its predictions no longer match the labels they would be scored "
                                 f"against: retrain it with `{files.retrain(paths.data_dir)}`.")
            check_settings(config, paths, [fold])
            if files.resume.exists():  # a kill between writing result.json and removing the resume state
                files.resume.unlink()
                log.info("removed %s, left by a run killed just after the fold finished", files.resume)
            log.info("fold %d of %s is finished (%s); skipping (use --force to redo)", fold, config.name,
                     files.result)
            return files.read_result()
        return _train(config, paths, dataset, fold, files, fingerprints, force, feeding or Feeding(), resume_every)


def _train(config: Config, paths: Paths, dataset: Dataset, fold: int, files: FoldFiles, fingerprints: dict,
           force: bool, feeding: Feeding, resume_every: float | None) -> dict:
    started = time.time()
    resume = files.start(config, fingerprints, force)
    import keras

    log.info("%s; %s", backend.configure(paths.compile_cache), backend.current().reason)
    on_gpu = backend.accelerator()
    rows = fold_rows(config, paths, dataset, fold, files)
    keras.utils.set_random_seed(config.seed + fold)
    feeds = Feeds.choose(config, feeding, rows.train_source, rows.fit, rows.val, rows.labels, config.seed + fold,
                         on_gpu)
    steps_per_execution = backend.steps_per_execution(feeding.steps_per_execution, on_gpu)
    model = build_model(config, len(rows.labels), feeds.steps_per_epoch, steps_per_execution, dataset.task,
                        **rows.train_source.model_statistics(list(rows.fit.fname)))
    log.info("fold %d: %d training clips, %d validation clips; %s; %d step(s) per execution, %s", fold,
             len(rows.fit), len(rows.val), feeds.reason, steps_per_execution, config.precision)
    first_epoch = resume.restore(model, feeds.train, config.epochs) if resume else 0
    if resume:
        files.log_rows(resume.epoch + 1)
        log.info("fold %d: continuing after epoch %d of %d (state in %s)", fold, resume.epoch + 1, config.epochs,
                 files.resume)
    fit_started = time.time()
    timer = fit(model, feeds, config, files, resume, first_epoch, resume_every, fingerprints, dataset.task)
    fitted = time.time()
    oof = predict(model, config, rows.train_source, rows.val.fname, len(rows.labels), dataset.task)
    test_probs = predict(model, config, rows.test_source, rows.test.fname, len(rows.labels), dataset.task)
    files.write_probabilities(files.oof, rows.val.fname, oof, rows.labels)
    files.write_probabilities(files.test, rows.test.fname, test_probs, rows.labels)
    result = rows.record(config, fold, oof, pd.read_csv(files.log_csv).val_loss.to_numpy()) | {
        "backend": keras.backend.backend(), "device": "gpu" if on_gpu else "cpu",
        "feeding": dataclasses.asdict(feeding), "feed": feeds.kind, "steps_per_execution": steps_per_execution,
        "first_epoch_seconds": timer.first_epoch, "epoch_seconds": timer.median_epoch(),
        "fit_minutes": (fitted - fit_started) / 60, "predict_minutes": (time.time() - fitted) / 60,
        "minutes": (time.time() - started) / 60, "fingerprints": fingerprints}
    result["dataset_folds"] = fold_ids(dataset.folds(config.n_folds, config.seed))  # for run_folder.ModelRun
    files.write_result(result)
    files.resume.unlink(missing_ok=True)
    log.info("fold %d of %s: validation %s %.4f (%d clips), best epoch %d of %d, %.1f min", fold, config.name,
             *validation_score(result), len(rows.val), result["best_epoch"], result["epochs_run"], result["minutes"])
    return result


@dataclass
class FoldRows:
    """Which clips one fold trains on, validates on and predicts, and the inputs they come from."""

    labels: list[str]
    fit: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    train_source: InputKind
    test_source: InputKind
    skipped_train: int
    silent_test: list[str]
    cleaned: int = 0
    """training labels label cleaning changed or dropped"""
    task: Task = SINGLE_LABEL

    def record(self, config: Config, fold: int, oof: np.ndarray, val_losses: np.ndarray) -> dict:
        """The fold's result as its rows and validation losses (every epoch, earlier attempts' too) say:
        the task's validation score (MAP@3, or lwlrap for multi-label tagging)."""
        score = self.task.score(self.task.targets(self.labels, self.val), oof)
        return {
            "model": config.name, "fold": fold, "task": self.task.NAME, f"val_{self.task.metric}": score,
            "val_loss": float(min(val_losses)), "best_epoch": int(np.argmin(val_losses)) + 1,
            "epochs_run": len(val_losses), "n_train": len(self.fit), "n_val": len(self.val),
            "skipped_train": self.skipped_train, "cleaned_labels": self.cleaned, "silent_test": len(self.silent_test)}


def fold_rows(config: Config, paths: Paths, dataset: Dataset, fold: int, files: FoldFiles) -> FoldRows:
    """The fold's training and validation rows (clips the audio cache skipped left out, and said so; with
    label cleaning, disputed labels changed and listed in the fold's cleaned_labels.csv) and the test
    clips (undecodable ones predicted as silence, and said so)."""
    check_task(config, dataset)
    train = dataset.train_with_folds(config.n_folds, config.seed)
    if fold not in fold_ids(train):
        raise DataError(f"fold {fold} does not exist: {paths.folds_csv} holds folds {fold_ids(train)}")
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
    rows = FoldRows(dataset.labels, train[usable & (train.fold != fold)], train[usable & (train.fold == fold)],
                    dataset.test, train_source, test_source, int((~usable).sum()), silent, task=dataset.task)
    if config.clean_labels != "off":
        rows.fit, disputed = label_cleaning.clean(config, paths.data_dir, rows.fit, rows.labels, fold)
        files.write_table(files.cleaned, disputed)
        rows.cleaned = len(disputed)
    return rows


def fit(model, feeds: Feeds, config: Config, files: FoldFiles, resume: ResumeState | None = None,
        first_epoch: int = 0, resume_every: float | None = None, fingerprints: dict | None = None,
        task: Task = SINGLE_LABEL) -> EpochTimer:
    """Train with validation every epoch, from the start or from a resume state; after an epoch the
    state is saved as often as resume_every says (a killed fold continues from there). The best epoch's
    weights end in the model and in best.keras. Returns the epoch timer."""
    import keras

    timer = EpochTimer(resume.seconds if resume else None)
    # Ends with the best epoch's weights in the model: they are saved as best.keras, and prediction
    # reuses the predict step compiled for validation instead of loading and compiling anew.
    stopping = ResumableEarlyStopping(config.early_stopping_patience, resume)
    callbacks = [
        EpochValidation(feeds.validation, feeds.validation_targets, task),  # first: later ones read val_loss
        timer, stopping, keras.callbacks.CSVLogger(files.log_csv, append=bool(resume)),
    ]
    if backend.has_tensorflow():  # TensorBoard writes through tf.summary; a resumed attempt in its own run
        folder = files.tensorboard / (f"resumed_at_epoch_{resume.epoch + 2}" if resume else "")
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(folder)))
    else:
        log.info("no TensorBoard logs: TensorBoard needs TensorFlow installed (log.csv has every epoch)")
    # Last: after the epoch's log row.
    callbacks.append(FoldCheckpoint(files.resume, stopping, timer, resume_every, fingerprints))
    verbose = 2 if not sys.stdout.isatty() else "auto"
    model.fit(feeds.train, epochs=config.epochs, initial_epoch=first_epoch, steps_per_epoch=feeds.steps_per_epoch,
              callbacks=callbacks, verbose=verbose, shuffle=False)  # the sequence orders its own batches
    files.save_model(model)  # once, the best epoch's weights: saving at every better epoch cost seconds a fold
    return timer


def predict(model, config: Config, source: InputKind, fnames, n_classes: int, task: Task = SINGLE_LABEL) -> np.ndarray:
    """Class probabilities of the clips: over windows covering each clip, or from one crop."""
    if len(fnames) == 0:  # e.g. a dataset with predefined folds and no test split
        return np.zeros((0, n_classes), np.float32)
    if config.prediction == "windows":
        return predict_clips(model, source, list(fnames), config.batch_size, config.combine, normalize=task.normalize)
    return predict_sequence(model, ClipSequence(source, fnames, None, config.batch_size, full_batches=True))
