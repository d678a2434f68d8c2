"""src.tools.rehearsal: Kaggle's 2018 tables (tests/real/) made into a dataset with derived audio and the
whole pipeline run on it, measured. The end-to-end run is tiny (2 folds, 1 s clips, one model, 1 epoch)
so that it stays under about a minute; the planning of the full tables is checked without audio."""
import json

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, run_module

from src.tools import rehearsal

TABLES = ROOT / "tests" / "real" / "fsdkaggle2018"


@pytest.fixture(scope="module")
def tables():
    return rehearsal.read_tables(TABLES)


def test_every_row_at_the_real_totals(tables):
    train, test, truth, _ = tables
    chosen = rehearsal.plan(train, test, truth, scale=1.0, seed=0)
    assert len(chosen.train) == 9473 and len(chosen.test) == 9400            # every row of Kaggle's tables
    assert chosen.hours["train"] == pytest.approx(18.0, rel=1e-3)           # the task description's ~18 h
    scored = chosen.test.fname.isin(truth.fname[truth.usage.isin(["Public", "Private"])])
    assert chosen.test.seconds[scored].sum() / 3600 == pytest.approx(2.0, rel=1e-3)   # its ~2 h of scored clips
    clips = pd.concat([chosen.train.seconds, chosen.test.seconds[chosen.test.seconds > 0]])
    assert clips.min() >= 0.3 and clips.max() <= 30.0
    empty = chosen.test[chosen.test.fname.isin(rehearsal.EMPTY_TEST_CLIPS)]
    assert len(empty) == 3 and (empty.seconds == 0).all()
    # a scored clip sounds like its label; a third of the unverified rows like another label
    assert (chosen.test.sounds_like[scored] == chosen.test.fname[scored].map(truth.set_index("fname").label)).all()
    unverified = chosen.train.manually_verified == "0"
    assert (chosen.train.sounds_like[~unverified] == chosen.train.label[~unverified]).all()
    assert 0.25 < (chosen.train.sounds_like[unverified] != chosen.train.label[unverified]).mean() < 0.42


def test_a_share_is_stratified_seeded_and_keeps_the_empty_clips(tables):
    train, test, truth, _ = tables
    whole = rehearsal.plan(train, test, truth, scale=1.0, seed=0)
    share = rehearsal.plan(train, test, truth, scale=0.05, seed=0)
    again = rehearsal.plan(train, test, truth, scale=0.05, seed=0)
    assert share.train.fname.tolist() == again.train.fname.tolist()
    assert share.train.label.value_counts().min() >= rehearsal.N_FOLDS           # one row per label and fold
    assert 0.04 < len(share.train) / len(train) < 0.07 and 0.04 < len(share.test) / len(test) < 0.07
    assert set(rehearsal.EMPTY_TEST_CLIPS) <= set(share.test.fname)
    assert set(share.truth.usage) == {"Public", "Private", "Ignored"}
    # a row's clip is the same at every share
    same = whole.train.set_index("fname").loc[share.train.fname]
    assert np.allclose(same.seconds, share.train.seconds) and (same.sounds_like == share.train.sounds_like.values).all()


def test_each_label_has_its_own_voice(tables):
    labels = sorted(tables[0].label.unique())
    voices = {rehearsal.voice(label) for label in labels}
    assert len(labels) == 41 and len(voices) == 41
    assert {source for source, _, _ in voices} == set(rehearsal.SOURCES)


@pytest.mark.slow
@pytest.mark.readme("src.tools.rehearsal --scale")
def test_the_rehearsal_at_tiny_scale(tmp_path):
    out = tmp_path / "run"
    done = run_module("src.tools.rehearsal", "--scale", "0.004", "--folds", "2", "--max-seconds", "1", "--models",
                      "logmel", "--epochs", "1", "--crop-seconds", "0.5", "--batch-size", "8", "--predict-files", "3",
                      "--out-dir", out, env={"TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600, check=True)
    printed = done.stdout
    for stage in ("write audio", "data check", "audio cache", "logmel fold 0", "blend", "inspect", "predict"):
        assert f"\n{stage} " in printed                                      # a row of the table
    assert "projected full recipe on this machine" in printed and "peak RSS of any process" in printed

    data = out / "data"
    train, test = pd.read_csv(data / "train.csv"), pd.read_csv(data / "sample_submission.csv")
    assert 82 <= len(train) <= 100 and train.label.nunique() == 41 and 30 < len(test) < 60
    assert list(train.columns) == ["fname", "label", "manually_verified"]
    assert (data / "test_post_competition.csv").exists()                     # src.data reads the test labels there
    for fname in rehearsal.EMPTY_TEST_CLIPS:                                  # in the dataset, 0 bytes
        assert fname in set(test.fname) and (data / "audio_test" / fname).stat().st_size == 0
    import soundfile
    info = soundfile.info(str(data / "audio_train" / train.fname[0]))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16") and 0.3 <= info.duration <= 1.0

    record = json.loads((out / "rehearsal.json").read_text())
    stages = {s["name"]: s for s in record["stages"]}
    assert list(stages) == ["write audio", "data check", "audio cache", "logmel fold 0", "blend", "inspect", "predict"]
    assert all(s["seconds"] > 0 and s["peak_rss_mib"] > 0 and s["disk_mib"] > 0 for s in stages.values())
    assert stages["logmel fold 0"]["peak_rss_mib"] < 3 * 1024
    assert (out / "rehearsal.csv").read_text().count("\n") == len(stages) + 1
    checks = record["checks"]
    assert checks["skipped_test_clips"] == sorted(rehearsal.EMPTY_TEST_CLIPS)   # recorded as skipped by the cache
    assert checks["submission_rows"] == {"logmel.csv": len(test)}               # while the submission keeps every row
    assert record["projection"]["models"]["logmel"]["epochs"] == 80 and record["projection"]["total_s"] > 0
    assert 1 <= len(pd.read_csv(out / "predict.csv")) <= 3      # src.predict on 3 files (an empty one skipped)

    rehearsal.compare([rehearsal.Stage(**{k: v for k, v in s.items() if k != "per_item_ms"}) for s in record["stages"]],
                      out / "rehearsal.json")
