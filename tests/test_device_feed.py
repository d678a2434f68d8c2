"""The device feed cuts the host feed's batches, sample for sample, from the audio cache held on the
accelerator (here the CPU device of whichever backend runs the suite)."""
import dataclasses

import numpy as np
import pytest
from conftest import tiny

from src.base.config import PRESETS
from src.dataset.inputs import model_input
from src.feeds.augment import Augmentation
from src.feeds.device import BANK_SHARE, ClipBank, DeviceClipSequence, bank_bytes, room_for, supports
from src.feeds.host import ClipSequence


@pytest.mark.parametrize("preset, options", [
    ("logmel", {}),                                        # mixup, random crop lengths
    ("envnet", {}),                                        # gain, time shift
    ("1d", {"mixup": 0.4, "gain_db": 3.0, "time_shift": 0.2, "min_crop_seconds": 0.2}),
])
@pytest.mark.parametrize("shard_limit", [2 ** 30, 30_000])   # one device array, or many
def test_device_batches_equal_host_batches(clean_dataset, preset, options, shard_limit):
    config = dataclasses.replace(PRESETS[preset], crop_seconds=1.0, **options)
    source = model_input(clean_dataset, "train", config, n_jobs=1)
    fnames = [f for f in source.store.index.fname if source.store.status(f) == "ok"]
    targets = np.eye(len(fnames), dtype=np.float32)
    flags = np.arange(len(fnames)) % 2
    common = dict(train=True, seed=3, flags=flags, augmentation=Augmentation.of(config, source.crop_length))
    host = ClipSequence(source, fnames, targets, 5, **common)
    bank = ClipBank(source, shard_limit=shard_limit)
    assert (len(bank.shards) > 1) == (shard_limit < 2 ** 30)
    device = DeviceClipSequence(bank, fnames, targets, 5, **common)
    assert len(host) == len(device) == 4                  # 18 clips: the last batch is topped up
    for epoch in range(2):
        for i in range(epoch * len(host), (epoch + 1) * len(host)):
            (hx, hy), (dx, dy) = host[i], device[i]
            dx = np.asarray(dx)
            assert dx.shape == hx.shape == (5, source.crop_length, 1) and dx.dtype == np.int16
            # Equal up to float rounding at .5 in the rare sample (fused multiply-adds may differ).
            assert np.abs(hx.astype(int) - dx).max() <= 1 and (hx == dx).mean() > 0.999
            np.testing.assert_allclose(hy, dy, atol=1e-6)
            assert hy.shape[1] == len(fnames) + 1 and set(np.unique(hy[:, -1])) <= {0, 1}  # flags, unmixed
    plain_host = ClipSequence(source, fnames, None, 5, full_batches=True)
    plain_device = DeviceClipSequence(bank, fnames, None, 5, full_batches=True)
    for i in range(len(plain_host)):
        np.testing.assert_array_equal(plain_host[i], np.asarray(plain_device[i][0]))


def test_device_between_class_batches_equal_host_batches(clean_dataset):
    config = dataclasses.replace(PRESETS["envnet"], crop_seconds=1.0, between_class=True)
    source = model_input(clean_dataset, "train", config, n_jobs=1)
    fnames = [f for f in source.store.index.fname if source.store.status(f) == "ok"]
    targets = np.eye(3, dtype=np.float32)[np.arange(len(fnames)) % 3]
    common = dict(train=True, seed=4, augmentation=Augmentation.of(config, source.crop_length))
    host = ClipSequence(source, fnames, targets, 6, **common)
    device = DeviceClipSequence(ClipBank(source), fnames, targets, 6, **common)
    for i in range(2 * len(host)):
        (hx, hy), (dx, dy) = host[i], device[i]
        dx = np.asarray(dx)
        assert ((hy > 0) & (hy < 1)).any(axis=1).mean() > 0.9   # mixed, with another class
        np.testing.assert_allclose(hy, dy, atol=1e-6)
        # Loudness in float32 on the device, float64 on the host: a sample may round the other way.
        assert np.abs(hx.astype(int) - dx).max() <= 1 and (hx == dx).mean() > 0.99


def test_what_the_device_feed_cannot_take_is_named():
    assert supports(PRESETS["logmel"]) is None and supports(PRESETS["envnet"]) is None
    assert "mfcc" in supports(PRESETS["2d"])
    assert "stretch" in supports(dataclasses.replace(PRESETS["1d"], stretch=0.1))
    assert supports(dataclasses.replace(PRESETS["envnet"], between_class=True)) is None


def test_the_audio_cache_goes_on_the_gpu_only_where_it_leaves_room_to_train(clean_dataset):
    from src.base import backend

    source = model_input(clean_dataset, "train", PRESETS["logmel"], n_jobs=1)
    needed = bank_bytes(source)                           # known before anything is copied to the device
    assert needed == ClipBank(source).nbytes > 0
    assert room_for(needed, None) is None                 # no limit known (CPU, TensorFlow): as asked
    assert room_for(needed, int(needed / BANK_SHARE) + 1) is None
    # FSDKaggle2018 at 22.05 kHz (about 2.8 GB) in a fifth of a 16 GB GPU: the host feed, and why.
    why = room_for(2_840_000_000, 16_000_000_000 // 5)
    assert "2.84 GB" in why and "3.20 GB" in why and "FOLDS_PER_GPU" in why
    assert backend.device_memory() is None                # this machine has no GPU


@pytest.mark.slow
def test_a_fold_trains_on_device_cut_between_class_batches(clean_dataset, tmp_path):
    import json

    from src import train

    options = ["--model", "envnet", *tiny(n_folds=3, epochs=2, batch_size=6, crop_seconds=0.6),
               "--between-class", "true", "--feed", "device", "--data-dir", str(clean_dataset),
               "--out-dir", str(tmp_path)]
    assert train.main([*options, "--prepare"]) == 0
    assert train.main([*options, "--fold", "0"]) == 0
    result = json.loads((tmp_path / "predictions" / "envnet" / "fold0" / "result.json").read_text())
    assert result["feed"] == "device" and result["epochs_run"] == 2 and 0 <= result["val_map3"] <= 1
