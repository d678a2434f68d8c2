import zipfile

import pandas as pd
import pytest

from src import data
from src.base.errors import DataError
from src.dataset import tables as layout


def test_duplicate_fname_names_the_row(clean_dataset):
    train = pd.read_csv(clean_dataset / "train.csv")
    pd.concat([train, train.iloc[[2]]]).to_csv(clean_dataset / "train.csv", index=False)
    with pytest.raises(DataError, match=rf"row {len(train) + 2}: duplicate fname '{train.fname[2]}'"):
        layout.load_train(clean_dataset)


def test_sample_submission_labels_are_a_placeholder_never_read(clean_dataset):
    sample = pd.read_csv(clean_dataset / "sample_submission.csv")
    sample["label"] = "Laughter Hi-Hat Flute"   # Kaggle's 2018 file: no training label of this set at all
    sample.to_csv(clean_dataset / "sample_submission.csv", index=False)
    assert data.check_layout(clean_dataset)["test"] == len(sample)


def test_unknown_label_in_test_labels_is_an_error(clean_dataset):
    pd.DataFrame({"fname": ["test00.wav"], "label": ["Kazoo"]}).to_csv(clean_dataset / "test_labels.csv",
                                                                       index=False)
    with pytest.raises(DataError, match=r"test_labels.csv, row 2 \(test00.wav\): label 'Kazoo'"):
        data.check_layout(clean_dataset)


def test_missing_file_names_row_and_path(clean_dataset):
    (clean_dataset / "audio_train" / "noise01.wav").unlink()
    with pytest.raises(DataError, match=r"train.csv, row \d+: .*noise01.wav does not exist"):
        data.check_layout(clean_dataset)


def test_check_layout_counts_and_lists_unreadable_headers(dataset, capsys):
    summary = data.check_layout(dataset)
    assert summary["train"] == 24 and summary["test"] == 6 and summary["labels"] == 3
    assert sorted(f for _, f, _ in summary["unreadable"]) == ["corrupt.wav", "empty.wav"]  # empty: no samples
    out = capsys.readouterr().out
    assert "24 train clips in 3 labels, 6 test clips" in out


def test_folds_are_stratified_seeded_and_shared(clean_dataset):
    folds = layout.Dataset.load(clean_dataset).folds(n_folds=3, seed=7)
    train = layout.load_train(clean_dataset).merge(folds, on="fname")
    per_fold = train.groupby(["label", "fold"]).size().unstack()
    assert (per_fold == 2).all().all()  # 6 clips of each label -> 2 per fold
    assert (clean_dataset / "folds.csv").exists()
    again = layout.Dataset.load(clean_dataset).folds(n_folds=3, seed=999)  # written once: every model gets the same
    pd.testing.assert_frame_equal(folds, again)
    with pytest.raises(DataError, match="holds 3 folds, but 5 were asked for"):
        layout.Dataset.load(clean_dataset).folds(n_folds=5)


def test_predefined_fold_column_is_used(clean_dataset):
    train = pd.read_csv(clean_dataset / "train.csv")
    train["fold"] = [i % 2 for i in range(len(train))]
    train.to_csv(clean_dataset / "train.csv", index=False)
    folds = layout.Dataset.load(clean_dataset).folds(n_folds=10)
    assert folds.fold.tolist() == train.fold.tolist()


def test_unpack_extracts_nested_archives(tmp_path, clean_dataset):
    inner = tmp_path / "audio_train.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        for wav in (clean_dataset / "audio_train").iterdir():
            zf.write(wav, f"audio_train/{wav.name}")
    outer = tmp_path / "fresh" / "freesound-audio-tagging.zip"
    outer.parent.mkdir()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "audio_train.zip")
        zf.write(clean_dataset / "train.csv", "train.csv")
    data.unpack(outer.parent)
    assert (outer.parent / "train.csv").exists()
    assert len(list((outer.parent / "audio_train").glob("*.wav"))) == 18


@pytest.mark.readme("src.data --download")
def test_download_without_credentials_explains_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    code = data.main(["--download", "--data-dir", str(tmp_path / "d")])
    captured = capsys.readouterr()
    assert code == 2
    assert "Could not download the competition data" in captured.err
    assert "accept the rules" in captured.err and "Traceback" not in captured.err + captured.out


def test_the_run_layout_knows_finished_folds_and_reads_back_what_it_wrote(clean_dataset, tmp_path):
    import numpy as np

    from src.base.config import PRESETS
    from src.base.layout import Paths
    from src.dataset.tables import Dataset
    from src.training.fold_files import finished_folds, fold_files, trained_models

    dataset = Dataset.load(clean_dataset)
    assert dataset.labels == ["Clicks", "Noise", "Tone"] and len(dataset.y_train) == len(dataset.train)
    paths = Paths(clean_dataset, tmp_path / "out")
    assert trained_models(paths) == []
    started = fold_files(paths, "1d", 0)
    started.start(PRESETS["1d"])                      # begun, not finished
    finished = fold_files(paths, "1d", 1)
    finished.start(PRESETS["1d"])
    probs = np.full((2, 3), 1 / 3)
    finished.write_probabilities(finished.test, ["a.wav", "b.wav"], probs, dataset.labels)
    finished.write_result({"val_map3": 0.5})
    assert finished_folds(paths, "1d") == [1] and trained_models(paths) == ["1d"]
    result = finished.read_result()
    assert (result.task.NAME, result.score, result.version) == ("single-label", 0.5, 2)
    assert result.to_json()["val_map3"] == 0.5 and finished.labels() == dataset.labels
    assert finished.read_config() == PRESETS["1d"]
    np.testing.assert_allclose(finished.read_probabilities(finished.test, dataset.labels).to_numpy(), probs, rtol=1e-5)
    with pytest.raises(DataError, match="not train.csv's labels"):
        finished.read_probabilities(finished.test, ["x", "y", "z"])
    copy = fold_files(paths, "copy", 1)
    copy.receive(finished.contents())                 # as --copy-back brings a fold home
    assert copy.is_finished() and copy.read_result() == result


def test_result_json_is_read_in_its_schema_older_versions_too_newer_refused(tmp_path):
    import json

    from src.training.fold_files import FoldFiles

    files = FoldFiles(tmp_path / "fold0")
    files.folder.mkdir()
    files.result.write_text(json.dumps({"val_lwlrap": 0.7, "minutes": 2.0, "n_val": 5}))   # version 1: no task
    old = files.read_result()
    assert (old.task.NAME, old.score, old.minutes, old.n_val, old.version) == ("multi-label", 0.7, 2.0, 5, 1)
    files.result.write_text(json.dumps({"version": 3, "task": "single-label", "val_map3": 0.5}))
    with pytest.raises(DataError, match="schema version 3; this project reads versions up to 2"):
        files.read_result()
    files.result.write_text(json.dumps({"version": 2, "task": "regression", "val_map3": 0.5}))
    with pytest.raises(DataError, match="task 'regression' is none of"):
        files.read_result()
