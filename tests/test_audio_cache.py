import numpy as np
import pandas as pd
import soundfile as sf

from src.dataset import audio as audio_cache


def test_bad_inputs_are_converted_or_skipped_with_a_record(dataset):
    store = audio_cache.build(dataset, "train", [16000], n_jobs=2)[16000]
    report = pd.read_csv(store.root / "report.csv").set_index("fname")
    assert report.loc["corrupt.wav", "status"] == "skipped"
    assert report.loc["corrupt.wav", "note"].startswith("unreadable")
    assert report.loc["empty.wav", "note"] == "empty: no samples"
    assert report.loc["stereo.wav", "note"] == "channels 2"
    assert report.loc["eightbit.wav", "note"] == "subtype PCM_U8"
    assert report.loc["lowrate.wav", "note"] == "samplerate 22050"
    assert report.loc["truncated.wav", "note"].startswith("truncated: header declares 44100 frames")
    assert store.length("lowrate.wav") == 16000  # 1 s at 22.05 kHz -> 1 s at 16 kHz
    assert store.status("stereo.wav") == "ok"


def test_cache_holds_every_rate_and_matches_the_source(clean_dataset):
    stores = audio_cache.build(clean_dataset, "train", [16000, 44100], n_jobs=1)
    source, rate = sf.read(clean_dataset / "audio_train" / "tone03.wav", dtype="int16")
    np.testing.assert_array_equal(stores[44100].read("tone03.wav")[:, 0], source)
    assert abs(stores[16000].length("tone03.wav") - len(source) * 16000 / rate) <= 1
    assert stores[16000].root.parent != stores[44100].root.parent  # keyed by rate


def test_second_run_does_nothing_and_new_clips_are_added(clean_dataset):
    store = audio_cache.build(clean_dataset, "train", [16000], n_jobs=1)[16000]
    data_size = store.data_path.stat().st_size
    index_mtime = store.index_path.stat().st_mtime_ns
    audio_cache.build(clean_dataset, "train", [16000], n_jobs=1)
    assert store.data_path.stat().st_size == data_size
    assert store.index_path.stat().st_mtime_ns == index_mtime

    sf.write(clean_dataset / "audio_train" / "late.wav", np.full(4410, 0.25, np.float32), 44100)
    train = pd.read_csv(clean_dataset / "train.csv")
    pd.concat([train, pd.DataFrame([{"fname": "late.wav", "label": "Tone", "manually_verified": 1}])]) \
        .to_csv(clean_dataset / "train.csv", index=False)
    store = audio_cache.build(clean_dataset, "train", [16000], n_jobs=1)[16000]
    assert store.length("late.wav") == 1600
    assert store.data_path.stat().st_size == data_size + 1600 * 2
    assert len(store.index) == len(train) + 1


def test_a_clip_that_outgrows_its_slot_is_handed_back(clean_dataset, tmp_path):
    path = clean_dataset / "audio_train" / "tone01.wav"
    fname, written, note = audio_cache._process("tone01.wav", path, {16000: (tmp_path / "data.bin", 0, 10)})
    assert fname == "tone01.wav" and note == ""
    assert written[16000].dtype == np.int16 and len(written[16000]) > 10
    assert not (tmp_path / "data.bin").exists()
    fname, written, _ = audio_cache._process("tone01.wav", path, {16000: (tmp_path / "data.bin", 4, 10 ** 6)})
    assert written[16000] == (tmp_path / "data.bin").stat().st_size // 2 - 2
