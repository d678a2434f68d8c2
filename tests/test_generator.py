import dataclasses

import numpy as np
import pytest

from src.base.config import PRESETS
from src.dataset.inputs import WaveInput, model_input
from src.dataset.store import PackedStore
from src.feeds.augment import Augmentation
from src.feeds.crops import crop_or_pad
from src.feeds.host import ClipSequence

PAD = np.array([-9.0, -9.0], np.float32)


def test_long_clip_gives_its_first_crop_or_a_random_one():
    clip = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.testing.assert_array_equal(crop_or_pad(clip, 4, PAD), clip[:4])
    rng = np.random.default_rng(1)
    starts = {int(crop_or_pad(clip, 4, PAD, rng)[0, 0]) // 2 for _ in range(200)}
    assert starts == set(range(7))  # every start from 0 to 10 - 4


def test_short_clip_is_padded_centred_or_at_a_random_offset():
    clip = np.ones((3, 2), np.float32)
    out = crop_or_pad(clip, 8, PAD)
    assert out.shape == (8, 2)
    assert (out[:2] == -9).all() and (out[2:5] == 1).all() and (out[5:] == -9).all()
    rng = np.random.default_rng(2)
    offsets = set()
    for _ in range(200):
        out = crop_or_pad(clip, 8, PAD, rng)
        inside = np.flatnonzero(out[:, 0] == 1)
        assert len(inside) == 3 and np.ptp(inside) == 2  # the clip stays whole and in order
        offsets.add(int(inside[0]))
    assert offsets == set(range(6))


def make_sequence(dataset, preset, train, **kwargs):
    config = dataclasses.replace(PRESETS[preset], crop_seconds=0.5)
    source = model_input(dataset, "train", config, n_jobs=1)
    fnames = [f for f in source.store.index.fname if source.store.status(f) == "ok"]
    targets = np.eye(len(fnames), dtype=np.float32)  # row i marks clip i, to follow the shuffling
    return config, fnames, ClipSequence(source, fnames, targets, batch_size=5, train=train, seed=3, **kwargs)


def test_wave_batches_have_the_model_shape_and_range(clean_dataset):
    config, fnames, seq = make_sequence(clean_dataset, "1d", train=True, workers=2, max_queue_size=4)
    assert len(seq) == 4 and seq.workers == 2 and seq.max_queue_size == 4
    x, y = seq[0]
    assert x.shape == (5, config.crop_samples, 1) and y.shape == (5, len(fnames))
    assert x.dtype == np.int16 and np.abs(x).max() > 1000  # raw samples: the model scales them
    last_x, last_y = seq[len(seq) - 1]   # training batches are full: one compiled shape
    assert len(last_x) == 5 and (last_y.argmax(1)[3:] == seq.order(0)[:2]).all()   # topped up from the start
    _, _, plain = make_sequence(clean_dataset, "1d", train=False)
    assert len(plain[len(plain) - 1][0]) == len(fnames) - 15


def test_mfcc_batches_have_the_model_shape(clean_dataset):
    config, fnames, seq = make_sequence(clean_dataset, "2d", train=False)
    x, _ = seq[0]
    assert x.shape == (5, config.n_mfcc, config.crop_frames, 1)


def test_validation_is_the_same_every_epoch_and_training_reshuffles(clean_dataset):
    _, fnames, val = make_sequence(clean_dataset, "1d", train=False)
    first = [val[i] for i in range(len(val))]
    val.on_epoch_end()
    for i, (x, y) in enumerate(first):
        np.testing.assert_array_equal(val[i][0], x)
        np.testing.assert_array_equal(val[i][1], y)
    assert np.argmax(np.concatenate([y for _, y in first]), axis=1).tolist() == list(range(len(fnames)))

    _, _, train = make_sequence(clean_dataset, "1d", train=True)
    assert train.num_batches is None                       # an endless stream: batch i // len is the epoch
    n = len(train)
    first = train[0][0]                                      # before any other batch is cut
    # Every clip once per epoch (then the last batch is topped up with the epoch's first clips).
    order = lambda epoch: np.argmax(np.concatenate([train[epoch * n + i][1] for i in range(n)]),
                                    axis=1)[:len(fnames)].tolist()
    epoch0, epoch1 = order(0), order(1)
    assert sorted(epoch0) == list(range(len(fnames)))
    np.testing.assert_array_equal(train[0][0], first)       # a batch depends on its number alone, not on the
                                                             # batches cut before it
    train.on_epoch_end()                                      # Keras's callbacks change nothing
    assert order(0) == epoch0 and sorted(epoch1) == sorted(epoch0) and epoch1 != epoch0
    train.start_at(1)                                         # a resumed fold: batch 0 is epoch 1's first
    fresh = make_sequence(clean_dataset, "1d", train=True)[2]
    np.testing.assert_array_equal(train[0][0], fresh[n][0])


def test_whole_clip_prediction_combines_windows_covering_each_clip(clean_dataset):
    import keras

    from src.base.metrics import geometric_mean
    from src.models import MinMaxScale
    from src.training.inference import predict_clips, windows

    config, fnames, _ = make_sequence(clean_dataset, "1d", train=False)
    source = model_input(clean_dataset, "train", config, n_jobs=1)
    inputs = keras.Input((config.crop_samples, 1), dtype="int16")
    hidden = keras.layers.GlobalAveragePooling1D()(MinMaxScale()(inputs))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(hidden))
    dense.set_weights([np.array([[4.0, -4.0, 1.0]], np.float32), np.zeros(3, np.float32)])  # any backend
    chosen = ["tone00.wav", "noise01.wav", "clicks02.wav"]
    assert not np.allclose(model.predict(np.zeros((1, config.crop_samples, 1), np.int16), verbose=0), 1 / 3)
    for combine in ("mean", "geometric"):
        probs = predict_clips(model, source, chosen, batch_size=4, combine=combine, chunk=2)
        for fname, row in zip(chosen, probs):
            stack = windows(source.store.read(fname), config.crop_samples, config.crop_samples // 2,
                            source.pad_row)[0]
            per_window = model.predict(stack, verbose=0)
            assert len(stack) == max(1, int(np.ceil((source.store.length(fname) - config.crop_samples)
                                                    / (config.crop_samples // 2))) + 1)
            expected = per_window.mean(axis=0) if combine == "mean" else \
                geometric_mean([p[None] for p in per_window])[0]
            np.testing.assert_allclose(row, expected, rtol=1e-5)
            assert np.ptp(per_window.max(axis=1)) > 0 or len(stack) == 1  # windows do differ


def constant_store(tmp_path, values, length):
    """A wave store of clips c0, c1, ... each `length` samples of one constant value."""
    source_file = tmp_path / "x.wav"
    source_file.write_bytes(b"x")
    store = PackedStore(tmp_path / "store", "int16", 1, {"test": 1})
    for k, value in enumerate(values):
        store.append(f"c{k}", np.full(length, value, np.int16), source_file)
    store.flush()
    return store


def test_mixup_mixes_labels_with_the_same_weights_as_inputs(tmp_path):
    values = [0, 1000, 2000, 3000, 4000, 5000]
    store = constant_store(tmp_path, values, 400)  # constant clips: a mixed input reveals its weights
    config = dataclasses.replace(PRESETS["1d"], sample_rate=1000, crop_seconds=0.2)
    fnames = [f"c{k}" for k in range(6)]
    seq = ClipSequence(WaveInput(store, config), fnames, np.eye(6, dtype=np.float32), batch_size=6,
                       train=True, seed=5, augmentation=Augmentation(mixup=0.4))
    x, y = seq[0]
    assert x.dtype == np.int16
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    assert (np.sort(y, axis=1)[:, :-2] == 0).all()  # each row mixes at most two clips
    expected = y @ np.array(values, np.float32)      # the label weights applied to the clip values
    np.testing.assert_allclose(x[:, :, 0], np.round(expected)[:, None].repeat(200, axis=1), atol=1)
    assert ((y > 0.02) & (y < 0.98)).any()           # and some rows really are mixed

    plain = ClipSequence(WaveInput(store, config), fnames, np.eye(6, dtype=np.float32), batch_size=6,
                         train=False, augmentation=Augmentation(mixup=0.4))
    assert set(np.unique(plain[0][1])) == {0.0, 1.0}  # never at validation or test time


def test_unverified_flags_follow_their_clips_through_the_shuffle(clean_dataset):
    import pandas as pd

    from src.feeds.fold_feeds import unverified_flags

    config, fnames, _ = make_sequence(clean_dataset, "1d", train=True)
    table = pd.DataFrame({"fname": fnames, "manually_verified": [i % 2 for i in range(len(fnames))]})
    flags = unverified_flags(table, dataclasses.replace(config, unverified_weight=0.25))
    assert flags.tolist() == [1.0 if i % 2 == 0 else 0.0 for i in range(len(fnames))]
    assert unverified_flags(table, dataclasses.replace(config, drop_unverified=0.5)).tolist() == flags.tolist()
    assert unverified_flags(table, config) is None
    source = model_input(clean_dataset, "train", config, n_jobs=1)
    seq = ClipSequence(source, fnames, np.eye(len(fnames), dtype=np.float32), batch_size=5, train=True,
                       seed=1, flags=flags)
    for i in range(len(seq)):
        _, y = seq[i]
        np.testing.assert_array_equal(y[:, -1], flags[np.argmax(y[:, :-1], axis=1)])


def test_random_crop_lengths_leave_the_rest_padded(tmp_path):
    fnames = [f"c{k}" for k in range(8)]
    source = WaveInput(constant_store(tmp_path, [1000] * 8, 4000),
                       dataclasses.replace(PRESETS["1d"], sample_rate=1000, crop_seconds=2.0))
    seq = ClipSequence(source, fnames, None, batch_size=8, train=True, seed=3,
                       augmentation=Augmentation(min_length=500))
    lengths = []
    for epoch in range(5):
        lengths += list((seq[epoch * len(seq)][:, :, 0] != 0).sum(axis=1))
    assert min(lengths) >= 500 and max(lengths) <= 2000 and len(set(lengths)) > 10
    fixed = ClipSequence(source, fnames, None, batch_size=8, train=True, seed=3)
    assert ((fixed[0][:, :, 0] != 0).sum(axis=1) == 2000).all()
    validation = ClipSequence(source, fnames, None, batch_size=8, augmentation=Augmentation(min_length=500))
    assert ((validation[0][:, :, 0] != 0).sum(axis=1) == 2000).all()   # whole crops outside training


def test_gain_time_shift_and_stretch():
    from src.feeds.augment import gain, stretch, time_shift

    rng = np.random.default_rng(0)
    ramp = np.arange(1000, dtype=np.int16)[None, :, None].repeat(40, axis=0) + 100
    louder = gain(ramp.copy(), rng, max_db=6)
    ratios = louder[:, 500, 0] / ramp[:, 500, 0]
    assert louder.dtype == np.int16 and 0.49 < ratios.min() < ratios.max() < 2.0 and np.ptp(ratios) > 0.5
    shifted = time_shift(ramp.copy(), rng, fraction=0.1)
    shifts = [(int(np.argmin(c[:, 0])) % 1000) for c in shifted]       # where the ramp now starts
    assert all(s <= 100 or s >= 900 for s in shifts) and len(set(shifts)) > 10
    assert all(sorted(c[:, 0]) == sorted(ramp[0, :, 0]) for c in shifted)   # rolled, nothing lost
    stretched = stretch(ramp.copy(), rng, amount=0.2)
    slopes = [np.polyfit(np.arange(400, 600), c[400:600, 0], 1)[0] for c in stretched]
    assert 0.79 < min(slopes) < max(slopes) < 1.21 and np.ptp(slopes) > 0.1
    assert np.allclose([c[500, 0] for c in stretched], ramp[0, 500, 0], atol=1)   # about the centre


def test_noise_is_added_at_the_drawn_snr():
    from src.feeds.augment import add_noise

    rng = np.random.default_rng(0)
    clean = (8000 * np.sin(np.arange(32000) / 10)).astype(np.int16)[None, :, None].repeat(50, axis=0)
    noisy = add_noise(clean, rng, min_snr=10, max_snr=20)
    assert noisy.dtype == np.int16
    noise = noisy.astype(np.float64) - clean
    snr = 10 * np.log10((clean.astype(np.float64) ** 2).mean(axis=(1, 2)) / (noise ** 2).mean(axis=(1, 2)))
    assert snr.min() > 9.5 and snr.max() < 20.5 and np.ptp(snr) > 3


def test_sound_pressure_follows_the_a_weighting():
    from src.feeds.augment import a_weighting_db, sound_pressure_db

    rate = 16000
    t = np.arange(rate // 2) / rate
    crops = np.stack([np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 1000 * t),
                      np.sin(2 * np.pi * 100 * t), np.zeros_like(t)])[..., None]
    loud, half, low, silent = sound_pressure_db((crops * 32767).astype(np.int16), rate)
    assert abs(a_weighting_db([1000.0])[0]) < 0.1 and a_weighting_db([100.0])[0] == pytest.approx(-19.1, abs=0.1)
    assert loud - half == pytest.approx(6.02, abs=0.05)
    assert loud - low == pytest.approx(19.1, abs=0.3)
    assert silent == -80.0


@pytest.mark.parametrize("feed", ["host", "device"])
def test_between_class_mixes_other_classes_at_the_drawn_ratio_of_sound_pressure(tmp_path, feed):
    """Loud 1 kHz clips of class 0 and quiet 250 Hz clips of class 1: in every mix the two are heard
    (A-weighted level of each component) in the ratio r : 1 - r its targets give, cut on the host or
    on the device."""
    from src.feeds.augment import a_weighting_db
    from src.feeds.device import ClipBank

    rate, n = 16000, 8000
    t = np.arange(n) / rate
    tones = {0: (1000.0, 0.8), 1: (250.0, 0.05)}
    source_file = tmp_path / "x.wav"
    source_file.write_bytes(b"x")
    store = PackedStore(tmp_path / "store", "int16", 1, {"test": 1})
    classes = [0, 1, 0, 1, 0, 1, 1, 0]
    for k, c in enumerate(classes):
        frequency, amplitude = tones[c]
        store.append(f"c{k}", np.round(amplitude * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16),
                     source_file)
    store.flush()
    config = dataclasses.replace(PRESETS["envnet"], crop_seconds=0.5, time_shift=0, gain_db=0, between_class=True)
    targets = np.eye(2, dtype=np.float32)[classes]
    from src.feeds.fold_feeds import training_batches

    config = dataclasses.replace(config, sample_rate=rate, batch_size=8)
    source = WaveInput(store, config)
    seq = training_batches(config, source, [f"c{k}" for k in range(8)], targets, seed=3,
                            bank=ClipBank(source) if feed == "device" else None)
    x, y = seq[0]
    x = np.asarray(x)
    assert x.dtype == np.int16 and x.shape == (8, n, 1)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    assert ((y > 0.05) & (y < 0.95)).all()             # every example mixed, always with the other class
    for wave, target in zip(x[:, :, 0].astype(np.float64) / 32767, y):
        level = [20 * np.log10(2 * abs(np.exp(-2j * np.pi * f * t) @ wave) / n) + a_weighting_db([f])[0]
                 for f, _ in tones.values()]
        assert level[0] - level[1] == pytest.approx(20 * np.log10(target[0] / target[1]), abs=0.5)
    with pytest.raises(ValueError, match="between_class replaces mixup"):
        dataclasses.replace(PRESETS["logmel"], between_class=True)
    with pytest.raises(ValueError, match="between_class augment raw waves"):
        dataclasses.replace(PRESETS["2d"], between_class=True)
