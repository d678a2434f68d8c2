"""Trained models read back from their run folders (src.training.run_folder decides which folds): one
model's OOF matrix aligned with train.csv and its folds' test probabilities combined (ModelPredictions,
for src.blend and src.inspect_oof), and its fold models loaded for new audio (Member, for src.predict
and src.export)."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.config import Config
from ..base.errors import DataError
from ..base.layout import Paths
from ..dataset.tables import Dataset
from ..dataset.task import SINGLE_LABEL, Task
from .fold_files import fold_files, trained_models
from .run_folder import ModelRun, dataset_at_hand

log = logging.getLogger(__name__)


@dataclass
class ModelPredictions:
    """One model's folds: the OOF matrix aligned with train.csv (NaN rows where no fold predicted)
    and the geometric mean of its folds' test probabilities in sample_submission order."""

    name: str
    folds: list[int]
    oof: np.ndarray
    test: np.ndarray
    minutes: float = 0.0
    """Training time of its folds, summed (fit, prediction, start-up: result.json's minutes)."""


def load_model_predictions(paths: Paths, name: str, dataset: Dataset, allow_partial: bool = False,
                           allow_mismatch: bool = False, how: str = "geometric") -> ModelPredictions:
    """Read every finished fold of one model, its folds' test predictions combined by their geometric
    (or arithmetic) mean; DataError when folds are missing (unless allowed), or when they were trained
    on other rows or folds than the dataset has now (unless allowed), or the predictions do not match
    this dataset."""
    # Which folds there should be, which are finished and which are stale: the run folder's one reader.
    finished = ModelRun(paths, name, dataset).require_complete(allow_partial, allow_mismatch)
    _check_same_config(paths, name, finished)
    train, test, labels = dataset.train, dataset.test, dataset.labels
    oof = np.full((len(train), len(labels)), np.nan)
    position = pd.Series(np.arange(len(train)), index=train.fname)
    tests, minutes = [], 0.0
    for k in finished:
        files = fold_files(paths, name, k)
        result = files.read_result()
        minutes += result.minutes
        fold_oof = files.read_probabilities(files.oof, labels)
        if result.n_val is not None and len(fold_oof) != result.n_val:
            raise DataError(f"{files.oof} has {len(fold_oof)} rows but the fold predicted {result.n_val} "
                            f"(result.json): the file was damaged or edited. Retrain that fold (--force).")
        unknown = ~fold_oof.index.isin(position.index)
        if unknown.any():
            raise DataError(f"{files.oof} lists {fold_oof.index[unknown][0]!r}, which is not in train.csv: "
                            f"these predictions belong to another dataset.")
        oof[position[fold_oof.index].to_numpy()] = fold_oof.to_numpy()
        fold_test = files.read_probabilities(files.test, labels)
        if list(fold_test.index) != list(test.fname):
            raise DataError(f"{files.test} does not list sample_submission.csv's fnames in order: retrain "
                            f"that fold (--force) on this dataset.")
        tests.append(fold_test.to_numpy())
    return ModelPredictions(name, finished, oof, dataset.task.combine(tests, None, how), minutes)


def _check_same_config(paths: Paths, name: str, folds: list[int]) -> None:
    configs = {k: fold_files(paths, name, k).read_config().to_dict() for k in folds}
    first = configs[folds[0]]
    for k, config in configs.items():
        differ = sorted(key for key in first if first[key] != config[key])
        if differ:
            log.warning("%s: fold %d was trained with other settings than fold %d (%s); blending them "
                        "anyway", name, k, folds[0], ", ".join(differ))


@dataclass
class Member:
    """One model preset: its config, its fold models and the labels of their outputs."""

    config: Config
    models: list
    labels: list[str]
    task: Task = SINGLE_LABEL
    """what the folds were trained for (their result.json): a softmax over the labels or a sigmoid per label"""
    name: str = ""
    folds: list[int] = field(default_factory=list)
    trained: list[dict] = field(default_factory=list)
    """what each fold was trained on and as (its fingerprints, a digest of its result.json): what the
    journal of a tagging is keyed by, beside the options"""


def load_members(paths, names: list[str] | None = None, allow_partial: bool = False,
                 allow_mismatch: bool = False) -> list[Member]:
    """Every fold model of the named presets (default: all under predictions/); DataError when a
    preset's folds are not all finished (the dataset's folds, src.training.run_folder; unless allowed),
    when they are stale against the dataset under --data-dir, when it is at hand, or folds or models were
    trained on other rows or folds than each other (unless allowed), or a model file is refused."""
    names = names or trained_models(paths)
    if not names:
        raise DataError(f"no trained folds under {paths.predictions_dir}: train a model first "
                        f"(./run_folds.sh MODEL -- --data-dir {paths.data_dir} --out-dir {paths.out_dir}).")
    dataset = dataset_at_hand(paths)
    members, trained_on = [], {}
    for name in names:
        run = ModelRun(paths, name, dataset)
        ids = run.require_complete(allow_partial, allow_mismatch)
        folds = [run.files(k) for k in ids]
        results = [files.read_result() for files in folds]
        for files, result in zip(folds, results):  # folds from before fingerprints were recorded say nothing
            fingerprints = result.fingerprints
            if fingerprints:
                trained_on.setdefault(json.dumps(fingerprints, sort_keys=True), []).append(files.folder)
        if len(trained_on) > 1 and not allow_mismatch:
            (one, first), (other, second) = list(trained_on.items())[:2]
            raise DataError(f"{first[0]} and {second[0]} were trained on different train rows or folds ({one} "
                            f"against {other}); combining them mixes two datasets. Retrain the stale ones, or "
                            f"pass --allow-mismatch if that is what you mean.")
        config, labels = folds[0].read_config(), folds[0].labels()
        loaded = [load_fold_model(f.model, run.command([k], force=True)) for k, f in zip(ids, folds)]
        trained = [{"fold": k, "fingerprints": r.fingerprints,
                    "result": hashlib.sha256(f.result.read_bytes()).hexdigest()[:16]}
                   for k, f, r in zip(ids, folds, results)]
        members.append(Member(config, loaded, labels, folds[0].task(), name, ids, trained))
    if any(m.labels != members[0].labels for m in members):
        raise DataError(f"the models {names} were trained on different label sets; predict with one at a time")
    if any(m.task is not members[0].task for m in members):
        kinds = ", ".join(sorted({m.task.NAME for m in members}))
        raise DataError(f"the models {names} were trained for different tasks ({kinds}: a softmax over the labels "
                        f"or a sigmoid per label); predict with one kind at a time")
    return members


def load_fold_model(path: Path, retrain: str = "`./run_folds.sh MODEL FOLD -- --force`"):
    """One fold model; DataError naming the file when Keras refuses it (`retrain`: the command that
    retrains that fold)."""
    import keras

    from ..models import MinMaxScale

    try:
        return keras.models.load_model(path, compile=False, custom_objects={"MinMaxScale": MinMaxScale})
    except (ValueError, TypeError, OSError) as error:  # safe mode's refusal, a damaged or foreign file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path} could not be loaded as a model of this project ({reason[:300]}). Keras's safe "
                        f"mode refuses files that would run code on loading; retrain that fold ({retrain}) "
                        f"rather than loading a model file from elsewhere.") from None
