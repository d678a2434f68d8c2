import numpy as np
import pytest

from src.base.config import PRESETS
from src.dataset.task import MULTI_LABEL
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
    with pytest.raises(ValueError, match="gain_db augment raw waves"):
        dataclasses.replace(PRESETS["2d"], gain_db=6)
    with pytest.raises(ValueError, match="masks need a spectrogram"):
        dataclasses.replace(PRESETS["envnet"], time_masks=1)


@pytest.mark.parametrize("preset", ["logmel", "envnet"])
def test_new_presets_take_int16_crops_and_give_probabilities(preset):
    config = PRESETS[preset]
    model = build_model(config, 7)
    assert model.input_shape == (None, config.crop_samples, 1) and model.output_shape == (None, 7)
    assert build_model(config, 41).count_params() == {"logmel": 1_195_849, "envnet": 3_976_541}[preset]
    waves = np.random.default_rng(0).integers(-3000, 3000, (3, config.crop_samples, 1), dtype=np.int16)
    probs = model.predict(waves, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    # A clip's prediction does not depend on the rest of its batch (no batch-wide dB clamp).
    np.testing.assert_allclose(model.predict(waves[:1], verbose=0), probs[:1], rtol=1e-4, atol=1e-6)


def test_logmel_front_end_is_a_mel_spectrogram_in_db():
    import librosa

    from src.models.layers import Int16ToFloat, log_mel

    config = PRESETS["logmel"]
    tone = (0.25 * np.sin(2 * np.pi * 440 * np.arange(config.crop_samples) / config.sample_rate))
    mel = np.asarray(log_mel(config)(Int16ToFloat()((tone * 32768).astype(np.int16)[None, :, None])))[0]
    assert mel.shape == (config.n_mels, 1 + config.crop_samples // config.hop_length)
    bands = librosa.mel_frequencies(n_mels=config.n_mels + 2, fmin=20, fmax=config.sample_rate / 2,
                                     htk=True)[1:-1]                  # Keras uses the HTK mel scale
    loudest = int(np.argmax(mel[:, 10]))
    assert abs(bands[loudest] - 440) < 0.15 * 440     # the tone's energy lands in its own mel band
    assert mel[loudest, 10] - np.median(mel[:, 10]) > 40


def test_unverified_loss_weights_and_drops_the_highest_loss_unverified_clips():
    from src.models import UnverifiedLoss

    y_true = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    y_pred = np.full((6, 4), 0.1, np.float32)
    right = [0.7, 0.6, 0.5, 0.4, 0.3, 0.2]          # probability of the true class: rising losses
    for k, p in enumerate(right):
        y_pred[k] = (1 - p) / 3
        y_pred[k, np.argmax(y_true[k])] = p
    losses = -np.log(right)
    flags = np.array([0, 1, 0, 1, 1, 1], np.float32)  # clips 1, 3, 4, 5 unverified
    flagged = np.concatenate([y_true, flags[:, None]], axis=1)   # the flag travels as one more column
    plain = UnverifiedLoss()
    assert float(plain(y_true, y_pred)) == pytest.approx(losses.mean(), rel=1e-5)
    assert float(plain(flagged, y_pred)) == pytest.approx(losses.mean(), rel=1e-5)
    weighted = UnverifiedLoss(weight=0.5)
    assert float(weighted(flagged, y_pred)) == pytest.approx(
        (losses * np.where(flags > 0, 0.5, 1)).sum() / 6, rel=1e-5)
    dropping = UnverifiedLoss(drop=0.5)              # half of the 4 unverified: the two highest losses
    kept = np.array([1, 1, 1, 1, 0, 0], np.float32)
    assert float(dropping(flagged, y_pred)) == pytest.approx((losses * kept).sum() / 6, rel=1e-5)
    assert float(dropping(y_true, y_pred)) == pytest.approx(losses.mean(), rel=1e-5)   # validation: no flags
    restored = keras_roundtrip(dropping)
    assert (restored.weight, restored.drop) == (1.0, 0.5)


def keras_roundtrip(obj):
    import keras

    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))


def test_unverified_loss_trains_through_fit():
    import dataclasses

    config = dataclasses.replace(PRESETS["1d"], drop_unverified=0.5, unverified_weight=0.5, crop_seconds=0.5)
    model = build_model(config, 3)
    rng = np.random.default_rng(0)
    x = rng.integers(-3000, 3000, (8, config.crop_samples, 1), dtype=np.int16)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    flagged = np.concatenate([y, np.array([[0], [1]] * 4, np.float32)], axis=1)
    history = model.fit(x, flagged, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and 0 <= history.history["accuracy"][-1] <= 1


def test_spec_mask_layer_masks_runs_of_frames_and_bands_in_training_only():
    from src.models import SpecMask

    rng = np.random.default_rng(0)
    batch = rng.standard_normal((4, 40, 100, 1)).astype(np.float32) + 5
    layer = SpecMask(time_masks=2, freq_masks=2, fraction=0.1, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(batch, training=False)), batch)
    masked = np.asarray(layer(batch, training=True))[..., 0]
    for before, after in zip(batch[..., 0], masked):
        changed = after != before
        bands = np.flatnonzero(changed.all(axis=1))      # whole mel bands / coefficients masked
        frames = np.flatnonzero(changed.all(axis=0))     # whole frames masked
        assert changed.any()
        assert np.allclose(after[changed], before.mean(), atol=1e-5)  # filled with the crop's mean
        assert len(frames) <= 2 * 10 and len(bands) <= 2 * 4
        assert (changed == (np.isin(np.arange(40), bands)[:, None] | np.isin(np.arange(100), frames))).all()


def test_epoch_validation_gives_the_loss_keras_gives_over_the_real_rows(clean_dataset):
    """Validation runs in full batches (one compiled shape); the padding rows must not count."""
    import dataclasses

    from src.dataset.inputs import model_input
    from src.feeds.host import ClipSequence
    from src.training.callbacks import EpochValidation

    config = dataclasses.replace(PRESETS["1d"], crop_seconds=0.5)
    source = model_input(clean_dataset, "train", config, n_jobs=1)
    fnames = [f for f in source.store.index.fname if source.store.status(f) == "ok"][:7]
    targets = np.eye(3, dtype=np.float32)[np.arange(7) % 3]
    model = build_model(config, 3)
    validation = EpochValidation(ClipSequence(source, fnames, None, 4, full_batches=True), targets)
    validation.set_model(model)
    logs = {}
    validation.on_epoch_end(0, logs)
    inputs = ClipSequence(source, fnames, None, 7)[0]
    assert logs["val_loss"] == pytest.approx(float(model.evaluate(inputs, targets, verbose=0)[0]), rel=1e-4)
    expected_accuracy = (model.predict(inputs, verbose=0).argmax(1) == np.arange(7) % 3).mean()
    assert logs["val_accuracy"] == pytest.approx(expected_accuracy)


def test_bfloat16_precision_keeps_front_end_softmax_and_weights_in_float32():
    import dataclasses

    config = dataclasses.replace(PRESETS["logmel"], precision="bfloat16")
    model = build_model(config, 5)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert policies["log_mel"] == "float32" and policies[model.layers[-1].name] == "float32"
    assert "mixed_bfloat16" in policies.values()
    assert all(w.dtype == "float32" for w in model.weights if "seed" not in w.path)
    x = np.random.default_rng(0).integers(-3000, 3000, (2, config.crop_samples, 1), dtype=np.int16)
    probs = np.asarray(model.predict(x, verbose=0))
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    import keras
    assert keras.config.dtype_policy().name == "float32"   # the global policy is left as it was


def test_each_network_declares_its_input_and_an_impossible_pairing_is_refused(tmp_path):
    import dataclasses
    import json

    from src.base.config import Config
    from src.base.networks import NETWORKS
    from src.dataset.inputs import INPUT_KINDS, input_kind

    assert {net.input for net in NETWORKS.values()} <= set(INPUT_KINDS)
    assert input_kind(PRESETS["2d"]).name == "mfcc" and input_kind(PRESETS["logmel"]).name == "wave"
    with pytest.raises(ValueError, match="network must be one of"):
        dataclasses.replace(PRESETS["1d"], network="resnet")
    with pytest.raises(ValueError, match="augment raw waves"):
        dataclasses.replace(PRESETS["2d"], gain_db=3.0)
    with pytest.raises(ValueError, match="need a spectrogram"):
        dataclasses.replace(PRESETS["1d"], time_masks=1)
    saved = tmp_path / "config.json"                  # a config written before the network decided
    saved.write_text(json.dumps({**dataclasses.asdict(PRESETS["2d"]), "features": "mfcc"}))
    assert Config.from_dict(json.loads(saved.read_text())) == PRESETS["2d"]
    legacy = {k: v for k, v in dataclasses.asdict(PRESETS["logmel"]).items() if k != "name"}
    saved.write_text(json.dumps({**legacy, "preset": "logmel16", "workers": 1, "feed": "auto", "patience": 80}))
    old = Config.from_dict(json.loads(saved.read_text()))       # run name in `preset`, feeding settings beside the rest
    assert (old.name, old.preset, old.patience) == ("logmel16", "", 80)
    saved.write_text(json.dumps({**dataclasses.asdict(PRESETS["2d"]), "features": "wave"}))
    with pytest.raises(ValueError, match="reads mfcc input, not wave"):
        Config.from_dict(json.loads(saved.read_text()))


@pytest.mark.parametrize("preset", ["1d", "2d", "logmel", "envnet", "aisfx"])
def test_every_preset_ends_in_a_sigmoid_per_label_for_multi_label(preset):
    import importlib.util

    if preset == "aisfx" and importlib.util.find_spec("aisfx") is None:
        pytest.skip("aisfx weights not installed (pip install --no-deps -r requirements-pretrained.txt)")
    statistics = {"mean": np.zeros(40, np.float32), "variance": np.ones(40, np.float32)} if preset == "2d" else {}
    model = build_model(PRESETS[preset], 4, task=MULTI_LABEL, **statistics)
    assert model.layers[-1].activation.__name__ == "sigmoid" and model.loss.per_clip == "binary_crossentropy"
    shape = (2, *model.input_shape[1:])
    rng = np.random.default_rng(0)
    inputs = rng.integers(-3000, 3000, shape).astype(np.int16) if preset != "2d" else \
        rng.normal(size=shape).astype(np.float32)   # 2d reads MFCCs, the others int16 waves
    probs = model.predict(inputs, verbose=0)
    assert probs.shape == (2, 4) and ((probs > 0) & (probs < 1)).all()
    assert not np.allclose(probs.sum(axis=1), 1, atol=1e-3)   # each label its own probability, not a softmax
