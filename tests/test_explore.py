import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from src.tools import explore


@pytest.mark.readme("src.tools.explore --data-dir")
def test_report_finds_duplicates_silence_clipping_and_long_test_clips(dataset, tmp_path):
    audio_test = dataset / "audio_test"
    shutil.copy(dataset / "audio_train" / "tone00.wav", audio_test / "copy.wav")
    sf.write(audio_test / "quiet.wav", np.full(44100, 1e-5, np.float32), 44100)
    sf.write(audio_test / "loud.wav", np.clip(3 * np.sin(np.arange(44100) / 5), -1, 1), 44100)
    sf.write(audio_test / "long.wav", 0.1 * np.sin(np.arange(44100 * 20) / 7), 44100)
    sample = pd.read_csv(dataset / "sample_submission.csv")
    extra = pd.DataFrame({"fname": ["copy.wav", "quiet.wav", "loud.wav", "long.wav"], "label": "Tone Noise Clicks"})
    pd.concat([sample, extra]).to_csv(dataset / "sample_submission.csv", index=False)

    assert explore.main(["--data-dir", str(dataset), "--out-dir", str(tmp_path / "out"), "--jobs", "1"]) == 0
    out = tmp_path / "out" / "report"     # under --out-dir, never inside the dataset
    report = (out / "report.md").read_text()
    assert "24 train clips in 3 labels, 10 test clips; 1 unreadable." in report  # corrupt.wav; empty.wav reads
    assert "**Duplicates by content** (1 groups): copy.wav = tone00.wav" in report
    assert "below -60 dBFS)** (2): train/empty.wav (-200 dBFS), test/quiet.wav (-200 dBFS)" in report
    assert "at full scale)** (1): test/loud.wav" in report
    assert "long.wav (20.0 s)" in report.split("**Test clips longer")[1].split("\n")[0]
    assert "| 22050 | 1 | PCM_16 | 1 |" in report and "| 44100 | 2 | PCM_16 | 1 |" in report
    assert "PCM_U8" in report
    for png in ("clips_per_label.png", "lengths_train_test.png", "lengths_per_label.png"):
        assert (out / png).stat().st_size > 1000
