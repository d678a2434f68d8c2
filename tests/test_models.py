import numpy as np
import pytest

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
    probs = model.predict(np.random.default_rng(0).integers(-2000, 2000, (2, 32000, 1), dtype=np.int16),
                          verbose=0)
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_waves_are_min_max_scaled_inside_the_model():
    from src.models import MinMaxScale

    waves = np.array([[[-100], [0], [300]], [[5], [5], [5]]], np.int16)
    scaled = np.asarray(MinMaxScale()(waves))
    np.testing.assert_allclose(scaled[0, :, 0], [-0.5, -0.25, 0.5], atol=1e-6)
    np.testing.assert_allclose(scaled[1, :, 0], [-0.5, -0.5, -0.5], atol=1e-6)  # silence: no division by 0


def test_optimizer_and_schedule_options():
    import dataclasses

    import keras

    config = dataclasses.replace(PRESETS["1d"], optimizer="amsgrad", schedule="cosine", epochs=4,
                                 learning_rate=0.01)
    model = build_model(config, 3, steps_per_epoch=5)
    assert model.optimizer.amsgrad
    schedule = model.optimizer.learning_rate if callable(model.optimizer.learning_rate) else \
        model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(20)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        dataclasses.replace(PRESETS["1d"], optimizer="sgd")
