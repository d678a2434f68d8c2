import numpy as np

from src.config import PRESETS
from src.models import build_model


def trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_kernel_parameter_counts_for_41_classes():
    assert build_model(PRESETS["1d"], 41).count_params() == 360_513
    model = build_model(PRESETS["2d"], 41, mean=np.zeros(40, np.float32), variance=np.ones(40, np.float32))
    assert trainable(model) == 168_361
    assert model.input_shape == (None, 40, 173, 1)


def test_outputs_are_class_probabilities():
    model = build_model(PRESETS["1d"], 5)
    probs = model.predict(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 32000, 1)), verbose=0)
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
