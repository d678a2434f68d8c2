import dataclasses
import json

import numpy as np
import pandas as pd
import soundfile as sf

from src import predict
from src.base.config import PRESETS
from src.base.layout import Paths
from src.models import build_model
from src.training.fold_files import fold_files
from src.training.inference import window_starts, windows

LABELS = ["Clicks", "Noise", "Tone"]


def test_windows_cover_the_whole_clip():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 2) == [0, 2, 4, 6, 7]  # the last window ends at the clip's end
    assert window_starts(3, 4, 2) == [0]
    batch, starts = windows(np.arange(3)[:, None], 4, 2, np.array([-1]))
    assert batch.shape == (1, 4, 1) and batch[0, :, 0].tolist() == [0, 1, 2, -1]  # centred: 0 before, 1 after


def make_models(out_dir, folds=2):
    """Untrained but real fold models of both presets, saved as a run of run_folds.sh saves them."""
    for preset in ("1d", "2d"):
        config = dataclasses.replace(PRESETS[preset], crop_seconds=0.5, n_folds=folds)
        for fold in range(folds):
            files = fold_files(Paths(out_dir=out_dir), preset, fold)
            files.start(config)
            stats = {"mean": np.zeros(40, np.float32), "variance": np.ones(40, np.float32)} \
                if preset == "2d" else {}
            build_model(config, len(LABELS), **stats).save(files.model)
            files.write_probabilities(files.test, [], np.zeros((0, len(LABELS))), LABELS)
            files.write_result({})


def test_tags_files_and_folders_per_window_and_skips_unreadable(tmp_path, capsys):
    make_models(tmp_path / "out")
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    long = 0.1 * rng.standard_normal((22050 * 6, 2)).astype(np.float32)  # 6 s, stereo, 22.05 kHz
    sf.write(audio / "long.wav", long, 22050)
    sf.write(audio / "short.flac", 0.1 * rng.standard_normal(4000).astype(np.float32), 44100)
    (audio / "broken.wav").write_bytes(b"RIFF....WAVEnothing")
    code = predict.main([str(audio), "--per-window", "--csv", str(tmp_path / "t.csv"),
                         "--json", str(tmp_path / "t.json"), "--out-dir", str(tmp_path / "out")])
    assert code == 0
    result = json.loads((tmp_path / "t.json").read_text())
    assert [r["file"].rsplit("/", 1)[1] for r in result["files"]] == ["long.wav", "short.flac"]
    assert result["skipped"][0]["file"].endswith("broken.wav")
    assert "skipped" in capsys.readouterr().err

    long_tags = result["files"][0]
    assert long_tags["seconds"] == 6.0
    assert len(long_tags["tags"]) == 3 and {t["label"] for t in long_tags["tags"]} <= set(LABELS)
    spans = [(w["start"], w["end"]) for w in long_tags["windows"]]
    assert spans[0][0] == 0 and spans[-1][1] == 6.0
    assert all(b[0] <= a[1] for a, b in zip(spans, spans[1:]))  # no gap between windows
    assert len(spans) == 23  # 0.5 s windows every 0.25 s over 6 s
    table = pd.read_csv(tmp_path / "t.csv")
    assert table.columns.tolist() == ["file", "label1", "label2", "label3", "p1", "p2", "p3"]
    assert len(table) == 2 and (table.p1 >= table.p2).all()
