"""Folds stacked into one model (src.training.fold_stack) compute and learn exactly what each fold would
alone. JAX only (CI runs this file under KERAS_BACKEND=jax)."""
import dataclasses

import keras
import numpy as np
import pytest

from src.base.config import PRESETS

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="fold stacks need the JAX backend")

# logmel's network (mel front end, masks, batch norm, dropout) at a size that trains in seconds.
CONFIG = dataclasses.replace(PRESETS["logmel"], crop_seconds=0.4, min_crop_seconds=0.2, n_mels=16,
                             batch_size=4)
CLASSES, FOLDS = 5, 3


def fold_networks(optimizer=None):
    from src.models import build_model

    networks = []
    for k in range(FOLDS):
        keras.utils.set_random_seed(100 + k)
        network = build_model(CONFIG, CLASSES)
        if optimizer is not None:
            network.compile(optimizer=optimizer(), loss=network.loss)
        networks.append(network)
    return networks


def batches(rng):
    waves = rng.integers(-8000, 8000, (CONFIG.batch_size, FOLDS, CONFIG.crop_samples, 1)).astype(np.int16)
    targets = np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, (CONFIG.batch_size, FOLDS))]
    return waves, targets


def test_a_stack_predicts_what_each_fold_predicts_alone():
    from src.training.fold_stack import FoldStack

    networks = fold_networks()
    stack = FoldStack(networks)
    waves, _ = batches(np.random.default_rng(0))
    stacked = np.asarray(stack.predict(waves, verbose=0))
    assert stacked.shape == (CONFIG.batch_size, FOLDS, CLASSES)
    for k, network in enumerate(networks):
        np.testing.assert_allclose(stacked[:, k], network.predict(waves[:, k], verbose=0), atol=1e-6)
    assert not np.allclose(stacked[:, 0], stacked[:, 1])  # the folds' own weights, not one copy


def test_training_a_stack_trains_each_fold_as_it_would_train_alone():
    from src.training.fold_stack import FoldStack, FoldSum

    sgd = lambda: keras.optimizers.SGD(0.05)
    alone = fold_networks(sgd)
    stack = FoldStack(fold_networks())
    stack.compile(optimizer=sgd(), loss=FoldSum(alone[0].loss))
    rng = np.random.default_rng(1)
    for _ in range(3):  # batch-norm statistics, dropout and mask seeds move on with every step
        waves, targets = batches(rng)
        stack.train_on_batch(waves, targets)
        for k, network in enumerate(alone):
            network.train_on_batch(waves[:, k], targets[:, k])
    differences = []
    for k, network in enumerate(alone):
        start, restored = fold_networks()[k], stack.fold_into(k, fold_networks()[k])
        learnt, stacked = floats(network) - floats(start), floats(restored) - floats(start)
        assert np.linalg.norm(learnt) > 1  # it did learn
        differences.append(np.linalg.norm(stacked - learnt) / np.linalg.norm(learnt))
    # The same to roundoff (1e-6), which can tip a ReLU at 0 or a max-pooling tie in a fold and move it
    # a little further with every step: one fold of three does here (3 % after 3 steps, the same
    # alone and in a stack of two). Averaged or swapped losses, shared or reused seeds, frozen
    # batch-norm statistics would be off by 30 % or more in every fold.
    assert max(differences) < 0.1 and sorted(differences)[-2] < 1e-4, differences


def floats(network) -> np.ndarray:
    """Every float variable of a network (weights, batch-norm statistics) as one vector."""
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in network.variables
                           if v.dtype.startswith("float")])


def test_a_stack_refuses_networks_of_different_shapes():
    from src.models import build_model
    from src.training.fold_stack import FoldStack

    with pytest.raises(ValueError, match="same architecture"):
        FoldStack([build_model(CONFIG, CLASSES), build_model(CONFIG, CLASSES + 1)])
