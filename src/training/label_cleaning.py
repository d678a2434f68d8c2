"""Label cleaning with nested folds (Config.clean_labels): before a fold trains, unverified training
clips whose label a judge confidently disputes are relabelled to the judge's class or dropped.

The judge is a logistic regression on each clip's pretrained aisfx embedding (src.models.aisfx_cnn:
the mean over windows covering the clip, computed once per dataset and cached beside the audio). Its
verdict on a clip comes from inner folds of the outer fold's own training rows: the clip is predicted
by a judge trained on the other inner folds. The outer fold's validation rows take no part, so no
validation label reaches the targets the fold trains on, and OOF scores stay honest.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.config import PRESETS, Config
from ..base.errors import DataError, UsageError
from ..base.layout import audio_dir, cache_dir, cache_folder
from ..dataset.inputs import model_input
from ..dataset.store import PackedStore, derive, locked, params_key
from ..models import check_weights as check_network_weights
from ..models.aisfx_cnn import EMBEDDING_SIZE, embedding_model
from .inference import predict_clips

log = logging.getLogger(__name__)

JUDGE_INPUT = "aisfx"  # the preset whose input (44.1 kHz crops) the judge's embeddings are computed from


def check_weights() -> None:
    """A SetupError saying how to install them if the judge's pretrained weights are absent."""
    check_network_weights(PRESETS[JUDGE_INPUT].network)


def embeddings(data_dir: Path, n_jobs: int = 1) -> PackedStore:
    """The aisfx embedding (one row of 512) of every decodable train clip, built incrementally like the
    audio cache and keyed by it."""
    config = PRESETS[JUDGE_INPUT]
    audio = model_input(data_dir, "train", config, n_jobs)
    params = {"stage": "embedding", "network": "aisfx", "version": 1, "audio": audio.store.params,
              "crop_seconds": config.crop_seconds}
    with locked(cache_dir(data_dir)):
        store = PackedStore(cache_folder(data_dir, "embedding-aisfx", params_key(params), "train"), "float32",
                            EMBEDDING_SIZE, params)
        model = None

        def compute(fnames):
            nonlocal model
            model = model or embedding_model(config)  # only when a clip needs it
            vectors = predict_clips(model, audio, fnames, batch_size=32, combine="mean") if fnames else []
            return [v[None] for v in vectors]
        store = derive(store, audio.store, audio_dir(data_dir, "train"), compute, "aisfx embeddings", chunk=64)
    return store


def judge_probabilities(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int,
                        seed: int) -> np.ndarray:
    """Each row's class probabilities from a logistic regression trained on the other inner folds
    (stratified; a class absent from a judge's training rows gets probability 0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if np.bincount(labels).max() < folds:
        raise UsageError(f"label cleaning: no class has {folds} training clips for {folds} inner folds; "
                        f"lower --clean-folds (at least 2) or turn it off with --clean-labels off")
    probs = np.zeros((len(labels), n_classes), np.float32)
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        if len(np.unique(labels[fit])) == 1:  # nothing to tell apart: the one class it saw
            probs[held, labels[fit][0]] = 1
            continue
        judge = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        judge.fit(features[fit], labels[fit])
        probs[np.ix_(held, judge.classes_)] = judge.predict_proba(features[held])
    return probs


def clean(config: Config, data_dir: Path, fit: pd.DataFrame, labels: list[str], fold: int) -> tuple[pd.DataFrame,
                                                                                                    pd.DataFrame]:
    """The fold's training rows with disputed unverified labels relabelled or dropped, and the report:
    one row per disputed clip (fname, label, judged, confidence, action)."""
    store = embeddings(data_dir)
    missing = [f for f in fit.fname if store.status(f) != "ok"]
    if missing:
        raise DataError(f"no aisfx embedding for {len(missing)} training clip(s) (e.g. {missing[0]}); "
                        f"rebuild the caches with `python -m src.train --model {config.preset} --prepare`")
    features = np.stack([store.read(f)[0] for f in fit.fname])
    targets = fit.label.map(labels.index).to_numpy()
    probs = judge_probabilities(features, targets, len(labels), config.clean_folds, config.seed + fold)
    judged, confidence = probs.argmax(axis=1), probs.max(axis=1)
    disputed = (fit.manually_verified.to_numpy() == 0) & (judged != targets) & (confidence >= config.clean_confidence)
    report = pd.DataFrame({"fname": fit.fname[disputed], "label": fit.label[disputed],
                           "judged": [labels[k] for k in judged[disputed]], "confidence": confidence[disputed],
                           "action": config.clean_labels})
    log.info("label cleaning: the judge (inner-fold accuracy %.3f on the %d training clips) disputes %d of %d "
             "unverified labels at confidence >= %.2f: %s", (judged == targets).mean(), len(fit), disputed.sum(),
             (fit.manually_verified == 0).sum(), config.clean_confidence,
             "relabelled" if config.clean_labels == "relabel" else "dropped")
    if config.clean_labels == "drop":
        return fit[~disputed], report
    cleaned = fit.copy()
    cleaned.loc[disputed, "label"] = report.judged.to_numpy()
    return cleaned, report
