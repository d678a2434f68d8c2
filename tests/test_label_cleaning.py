"""Label cleaning with nested folds: a judge trained on inner folds of a fold's training rows disputes
wrong unverified labels, which are relabelled or dropped; the fold's validation rows take no part."""
import importlib.util

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_folds, write_dataset

from src import train
from src.base.errors import UsageError
from src.base.layout import Paths
from src.training.fold_files import fold_files
from src.training.label_cleaning import judge_probabilities

needs_weights = pytest.mark.skipif(importlib.util.find_spec("aisfx") is None,
                                   reason="aisfx weights not installed (pip install --no-deps -r "
                                          "requirements-pretrained.txt; .ci/run does)")


def test_the_judge_sees_each_row_only_from_inner_folds_that_left_it_out():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = rng.normal(size=(60, 8)) + 4 * np.eye(3, 8)[labels]
    wrong = labels.copy()
    wrong[[0, 21]] = [2, 0]                                   # two rows given another class's label
    probs = judge_probabilities(features, wrong, 4, folds=5, seed=0)
    assert probs.shape == (60, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs[:, 3] == 0).all()
    # Each row is judged by a regression that never saw its (wrong) label: it still says its true class.
    assert probs[0].argmax() == 0 and probs[21].argmax() == 1
    assert (probs.argmax(axis=1) == labels).mean() > 0.95
    with pytest.raises(UsageError, match="lower --clean-folds"):
        judge_probabilities(features[[0, 1, 20, 21, 40, 41]], labels[[0, 1, 20, 21, 40, 41]], 4, folds=5, seed=0)


@pytest.mark.slow
@pytest.mark.readme("run_folds.sh --name --clean-labels")
@needs_weights
@pytest.mark.parametrize("action", ["relabel", "drop"])
def test_disputed_unverified_labels_are_relabelled_or_dropped_before_the_fold_trains(tmp_path, action):
    data_dir = write_dataset(tmp_path / "data", per_class=10, bad_inputs=False)
    table = pd.read_csv(data_dir / "train.csv")
    unverified = table.index[table.manually_verified == 0]
    flipped = {table.fname[i]: ("Noise" if table.label[i] == "Tone" else "Tone") for i in unverified[::2]}
    table["label"] = [flipped.get(f, label) for f, label in zip(table.fname, table.label)]
    table.to_csv(data_dir / "train.csv", index=False)
    paths = Paths(data_dir, tmp_path / "out")
    options = [*TINY, "--min-crop-seconds", "0", "--clean-labels", action, "--clean-folds", "3",
               "--data-dir", str(data_dir), "--out-dir", str(paths.out_dir)]
    if action == "relabel":  # as the README runs it: a named variant of logmel, through run_folds.sh
        run_folds("logmel", "0", "--", "--name", "logmel_clean", *options, env={"THREADS": "2"}, check=True)
        files = fold_files(paths, "logmel_clean", 0)
    else:
        assert train.main(["--model", "logmel", *options, "--prepare"]) == 0
        assert train.main(["--model", "logmel", *options, "--fold", "0"]) == 0
        files = fold_files(paths, "logmel", 0)
    disputed = pd.read_csv(files.cleaned)
    folds = pd.read_csv(paths.folds_csv)
    training = set(folds.fname[folds.fold != 0])
    assert set(disputed.fname) <= training                     # never a validation clip
    caught = {f for f in flipped if f in training}
    assert caught and caught <= set(disputed.fname)            # every flipped training label disputed
    assert (disputed.confidence >= 0.8).all() and (disputed.action == action).all()
    original = dict(zip(pd.read_csv(data_dir / "train.csv").fname, pd.read_csv(data_dir / "train.csv").label))
    assert all(original[f] != judged for f, judged in zip(disputed.fname, disputed.judged))
    result = files.read_result()
    assert result["cleaned_labels"] == len(disputed)
    assert result["n_train"] == len(training) - (len(disputed) if action == "drop" else 0)
