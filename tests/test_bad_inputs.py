"""Bad inputs, one row each: the command, what was done to a copy of a small dataset, the exit status
and a phrase of the message. Every case also checks that nothing appeared outside the data and output
folders."""
import os

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, fake_fold, write_dataset

from src import blend, data, predict, train
from src.base.layout import Paths
from src.dataset.tables import Dataset
from src.training.fold_files import fold_files


def edit_csv(path, change):
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(table)
    table.to_csv(path, index=False)


def set_cell(name, row, column, value):
    return lambda d, o: edit_csv(d / name, lambda t: t.__setitem__(column, t[column].where(t.index != row, value)))


def write_text(name, text: bytes):
    return lambda d, o: (d / name).write_bytes(text)


def fake_folds(data_dir, out_dir):
    """Two finished folds of model `m` with valid probabilities, as src.train writes them."""
    dataset = Dataset.load(data_dir)
    train_rows = dataset.train_with_folds(2, 0)
    for k in (0, 1):
        val = train_rows[train_rows.fold == k]
        fake_fold(Paths(data_dir, out_dir), "m", k, {"n_val": len(val), "minutes": 0.1},
                  oof=(val.fname, np.full((len(val), 3), 1 / 3)),
                  test=(dataset.test.fname, np.full((len(dataset.test), 3), 1 / 3)))


def damage_fold(name, change):
    def damage(d, o):
        fake_folds(d, o)
        edit_csv(o / "predictions" / "m" / "fold1" / name, change)
    return damage


def first_value(value):
    return lambda t: t.__setitem__("Tone", t["Tone"].where(t.index != 0, value))


DATA = ["data"]
BLEND = ["blend", "m"]
CASES = [
    # (id, command, change, exit status, phrase of the message)
    ("nan in test.csv", BLEND, damage_fold("test.csv", first_value("nan")), 2, "must be finite and within [0, 1]"),
    ("inf in oof.csv", BLEND, damage_fold("oof.csv", first_value("inf")), 2, "must be finite and within [0, 1]"),
    ("negative in oof.csv", BLEND, damage_fold("oof.csv", first_value("-0.2")), 2, "within [0, 1]"),
    ("row deleted from oof.csv", BLEND, damage_fold("oof.csv", lambda t: t.drop(index=0, inplace=True)), 2,
     "rows but the fold predicted"),
    ("fname escaping the audio folder", DATA, set_cell("train.csv", 0, "fname", "../../x.wav"), 2,
     "must be a path relative to the split's audio folder"),
    ("absolute test fname", DATA, set_cell("sample_submission.csv", 1, "fname", "/etc/passwd"), 2,
     "row 3: fname '/etc/passwd' must be a path relative"),
    ("0-byte train.csv", DATA, write_text("train.csv", b""), 2, "train.csv is empty"),
    ("header-only train.csv", DATA, write_text("train.csv", b"fname,label,manually_verified\n"), 2,
     "has a header but no rows"),
    ("trailing space in a label", DATA, set_cell("train.csv", 4, "label", "Tone "), 2,
     "row 6: label 'Tone ' has spaces"),
    ("trailing space in a fname", DATA, set_cell("train.csv", 2, "fname", "tone02.wav "), 2,
     "row 4: fname 'tone02.wav ' has spaces"),
    ("missing audio file", DATA, lambda d, o: (d / "audio_train" / "noise01.wav").unlink(), 2, "does not exist"),
    ("unknown test label", DATA, set_cell("test_labels.csv", 0, "label", "Kazoo"), 2,
     "row 2 (test00.wav): label 'Kazoo' is not a training label"),
    ("Kaggle's placeholder in sample_submission.csv", DATA, set_cell("sample_submission.csv", 0, "label",
                                                                      "Laughter Hi-Hat Flute"), 0, "6 test clips"),
    ("duplicate fname", DATA, set_cell("train.csv", 3, "fname", "tone00.wav"), 2, "duplicate fname 'tone00.wav'"),
    ("BOM and CRLF", DATA, lambda d, o: (d / "train.csv").write_bytes(
        b"\xef\xbb\xbf" + (d / "train.csv").read_bytes().replace(b"\n", b"\r\n")), 0, "train clips in 3 labels"),
    ("corrupt, empty, truncated, stereo, 8-bit and 22.05 kHz clips", ["audio_cache", "--rates", "16000"], None, 0,
     "2 skipped"),
    ("48 kHz, 0.1 s, 60 s and non-WAV clips", ["audio_cache", "--rates", "16000"], lambda d, o: odd_clips(d), 0,
     "3 skipped"),
]


def odd_clips(data_dir):
    import soundfile as sf

    rows = [("rate48k.wav", 48000, 1.0), ("short.wav", 44100, 0.1), ("long.wav", 44100, 60.0)]
    for name, rate, seconds in rows:
        sf.write(data_dir / "audio_train" / name, 0.1 * np.sin(np.arange(int(rate * seconds)) / 7), rate)
    (data_dir / "audio_train" / "notes.wav").write_text("not audio at all")      # a text file named .wav
    train_table = pd.read_csv(data_dir / "train.csv")
    extra = pd.DataFrame({"fname": [r[0] for r in rows] + ["notes.wav"], "label": "Tone", "manually_verified": 1})
    pd.concat([train_table, extra]).to_csv(data_dir / "train.csv", index=False)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, capsys):
    _, command, change, status, phrase = case
    data_dir, out_dir = write_dataset(tmp_path / "data", bad_inputs=command[0] == "audio_cache"), tmp_path / "out"
    if change:
        change(data_dir, out_dir)
    before_tmp, before_repo = sorted(os.listdir(tmp_path)), sorted(os.listdir(ROOT))
    module = __import__(f"src.{command[0]}", fromlist=["main"])
    code = module.main([*command[1:], "--data-dir", str(data_dir)]
                       + (["--out-dir", str(out_dir)] if command[0] == "blend" else []))
    printed = capsys.readouterr()
    assert code == status, printed.out + printed.err
    assert phrase in printed.out + printed.err
    assert "Traceback" not in printed.err
    assert sorted(os.listdir(tmp_path)) == before_tmp and sorted(os.listdir(ROOT)) == before_repo
    if code == 2 and command[0] == "blend":
        assert not (out_dir / "submissions").exists()     # no submission from bad numbers


def test_a_missing_clip_stops_prepare_before_folds_are_written(clean_dataset, capsys):
    (clean_dataset / "audio_train" / "clicks03.wav").unlink()
    assert train.main(["--model", "1d", "--prepare", "--data-dir", str(clean_dataset)]) == 2
    assert "clicks03.wav does not exist" in capsys.readouterr().err
    assert not (clean_dataset / "folds.csv").exists()        # fixing the row is all it takes


def test_a_refused_model_file_and_a_partial_preset_are_named(tmp_path, capsys):
    from test_predict import make_models

    make_models(tmp_path / "out", folds=2)
    clip = tmp_path / "clip.wav"
    write_dataset(tmp_path / "d", per_class=1, n_test=0, bad_inputs=False)
    (tmp_path / "d" / "audio_train" / "tone00.wav").rename(clip)
    (tmp_path / "out" / "predictions" / "2d" / "fold1" / "best.keras").write_bytes(b"PK\x03\x04 not a model")
    assert predict.main([str(clip), "--models", "2d", "--out-dir", str(tmp_path / "out")]) == 2
    assert "fold1/best.keras could not be loaded" in capsys.readouterr().err
    (tmp_path / "out" / "predictions" / "1d" / "fold1" / "result.json").unlink()
    assert predict.main([str(clip), "--models", "1d", "--out-dir", str(tmp_path / "out")]) == 2
    assert "1 of its 2 folds are finished" in capsys.readouterr().err
    csv = tmp_path / "tags.csv"
    assert predict.main([str(tmp_path / "nothing.wav"), "--models", "1d", "--allow-partial", "--csv", str(csv),
                         "--out-dir", str(tmp_path / "out")]) == 1
    assert csv.read_text().startswith("file,label1,label2,label3,p1,p2,p3")   # a header, even empty


def test_no_kaggle_credentials_is_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    before = sorted(os.listdir(ROOT))
    assert data.main(["--download", "--data-dir", str(tmp_path / "d")]) == 2
    assert "accept the rules" in capsys.readouterr().err and sorted(os.listdir(ROOT)) == before


def test_files_sent_back_by_a_worker_stay_inside_the_fold(tmp_path):
    from src.base.errors import DataError

    files = fold_files(Paths(out_dir=tmp_path), "m", 0)
    with pytest.raises(DataError, match="not a path inside the fold folder"):
        files.receive({"oof.csv": b"x", "../../escape.txt": b"x"})
    assert not (tmp_path / "predictions" / "escape.txt").exists() and not files.oof.exists()


def test_a_failing_write_names_the_path(clean_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions").write_text("a file where the folder should be")
    assert train.main(["--model", "1d", "--fold", "0", "--n-folds", "3", "--data-dir", str(clean_dataset),
                       "--out-dir", str(out)]) == 2
    assert "could not write" in capsys.readouterr().err and (out / "predictions").is_file()


def test_a_crop_too_short_for_the_network_is_a_message_not_a_traceback(clean_dataset, tmp_path, capsys):
    assert train.main(["--model", "envnet", "--fold", "0", "--n-folds", "3", "--crop-seconds", "0.5",
                       "--data-dir", str(clean_dataset), "--out-dir", str(tmp_path)]) == 2
    assert "envnet needs crops of >= 0.6 s, got 0.5 s; raise --crop-seconds" in capsys.readouterr().err


def test_blend_prints_how_many_rows_each_figure_covers(clean_dataset, tmp_path, capsys):
    fake_folds(clean_dataset, tmp_path / "out")
    assert blend.main(["m", "--data-dir", str(clean_dataset), "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "OOF rows" in out and "OOF figures over all 18 train clips" in out
    assert "test figures over the 6 test clips" in out


def test_data_stage_runs_on_the_edited_dataset(clean_dataset, capsys):
    assert data.main(["--data-dir", str(clean_dataset)]) == 0
