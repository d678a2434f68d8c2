import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import fake_fold, run_folds, tiny, write_dataset

from src import data
from src.base.layout import Paths
from src.blend import blend
from src.dataset import audio as audio_cache
from src.dataset.tables import Dataset
from src.tools import adapters


def wav(path, seconds=0.5, rate=44100):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.random.default_rng(len(str(path))).standard_normal(int(seconds * rate)), rate)


def test_esc50_uses_its_predefined_folds(tmp_path):
    source = tmp_path / "ESC-50"
    rows = []
    for i in range(10):
        name = f"{i % 5 + 1}-{1000 + i}-A-0.wav"
        wav(source / "audio" / name)
        rows.append({"filename": name, "fold": i % 5 + 1, "target": i % 2, "category": ["dog", "rain"][i % 2],
                     "esc10": True, "src_file": 1000 + i, "take": "A"})
    (source / "meta").mkdir()
    pd.DataFrame(rows).to_csv(source / "meta" / "esc50.csv", index=False)
    out = tmp_path / "esc50"
    assert adapters.main(["esc50", str(source), str(out)]) == 0
    assert (out / "audio_train").is_symlink()  # linked, not copied
    summary = data.check_layout(out)
    assert (summary["train"], summary["test"], summary["labels"], summary["unreadable"]) == (10, 0, 2, [])
    folds = Dataset.load(out).folds(n_folds=10)  # the predefined folds win over the asked number
    assert folds.fold.tolist() == [i % 5 for i in range(10)]


def test_folder_tree_with_speech_commands_lists(tmp_path):
    source = tmp_path / "speech"
    for label in ("yes", "no"):
        for i in range(8):
            wav(source / label / f"{i:04d}.wav", seconds=0.3, rate=16000)
    wav(source / "_background_noise_" / "noise.wav")
    (source / "testing_list.txt").write_text("yes/0000.wav\nno/0000.wav\n")
    (source / "validation_list.txt").write_text("yes/0001.wav\nno/0001.wav\n")
    out = tmp_path / "speech_layout"
    train = adapters.folders(source, out, n_folds=4)
    assert len(train) == 14 and "no/0005.wav" in set(train.fname)
    assert set(train.fname[train.fold == 0]) == {"yes/0001.wav", "no/0001.wav"}
    assert sorted(train.fold.unique()) == [0, 1, 2, 3]
    truth = pd.read_csv(out / "test_labels.csv")
    assert truth.set_index("fname").label.to_dict() == {"yes/0000.wav": "yes", "no/0000.wav": "no"}
    data.check_layout(out)
    store = audio_cache.build(out, "train", [16000], n_jobs=1)[16000]
    assert store.length("yes/0003.wav") == 4800  # nested fnames are cache keys like any other


def test_csv_of_paths_and_labels(tmp_path):
    for name in ("a/x.wav", "b/x.wav", "c/y.wav"):
        wav(tmp_path / "clips" / name)
    listing = tmp_path / "clips" / "list.csv"
    pd.DataFrame({"path": ["a/x.wav", "b/x.wav", str(tmp_path / "clips" / "c" / "y.wav")],
                  "label": ["cat", "cat", "owl"]}).to_csv(listing, index=False)
    train = adapters.from_csv(listing, tmp_path / "mine")
    assert train.fname.tolist() == ["000000_x.wav", "000001_x.wav", "y.wav"]
    assert data.check_layout(tmp_path / "mine")["train"] == 3


def test_blend_reports_accuracy_and_needs_no_test_split(tmp_path):
    source = tmp_path / "src"
    rows = [{"path": f"c{i}.wav", "label": ["Clicks", "Noise", "Tone"][i % 3], "fold": i % 2} for i in range(6)]
    for row in rows:
        wav(source / row["path"])
    pd.DataFrame(rows).to_csv(source / "list.csv", index=False)
    adapters.from_csv(source / "list.csv", tmp_path / "ds")
    paths = Paths(tmp_path / "ds", tmp_path / "out")
    train = pd.read_csv(paths.data_dir / "train.csv")
    y = train.label.map(["Clicks", "Noise", "Tone"].index).to_numpy()
    probs = np.eye(3)[y] * 0.5 + np.eye(3)[(y + 1) % 3] * 0.3 + 0.1
    probs[0] = np.eye(3)[(y[0] + 1) % 3] * 0.8 + 0.1  # one clip wrong at top-1, right at rank 2
    for k in (0, 1):
        rows_k = (train.fold == k).to_numpy()
        fake_fold(paths, "m", k, {"val_map3": 0, "minutes": 1.5}, oof=(train.fname[rows_k], probs[rows_k]),
                  test=([], np.zeros((0, 3))))
    report = blend(paths, ["m"])["rows"][0]
    assert report["oof_accuracy"] == 5 / 6
    assert report["oof_map3"] == (5 + 0.5) / 6
    assert report["submission"] == "-" and not paths.submissions_dir.exists()


@pytest.mark.slow
@pytest.mark.readme("run_folds.sh --data-dir")
def test_a_dataset_with_its_own_folds_and_no_test_split_trains_and_blends(tmp_path):
    generated = write_dataset(tmp_path / "gen", per_class=4, bad_inputs=False)
    train = pd.read_csv(generated / "train.csv")
    pd.DataFrame({"path": [str(generated / "audio_train" / f) for f in train.fname], "label": train.label,
                  "fold": [i % 2 for i in range(len(train))]}).to_csv(tmp_path / "list.csv", index=False)
    adapters.from_csv(tmp_path / "list.csv", tmp_path / "ds")
    options = ["--data-dir", str(tmp_path / "ds"), "--out-dir", str(tmp_path / "out")]
    run = run_folds("1d", "--", *options, *tiny(n_folds=None, batch_size=4), timeout=600, check=True)
    assert "2 fold(s) on CPU" in run.stdout
    report = blend(Paths(tmp_path / "ds", tmp_path / "out"), ["1d"])["rows"][0]
    assert report["folds"] == 2 and report["oof_rows"] == 12 and report["submission"] == "-"


def test_fsdkaggle2019_curated_verified_noisy_always_training(tmp_path):
    source = tmp_path / "fsd2019"
    curated = pd.DataFrame({"fname": [f"c{i}.wav" for i in range(6)],
                            "labels": ["Bark", "Bark,Walk_and_footsteps", "Walk_and_footsteps", "Bark",
                                       "Walk_and_footsteps", "Bark,Walk_and_footsteps"]})
    noisy = pd.DataFrame({"fname": ["n0.wav", "n1.wav"], "labels": ["Bark", "Walk_and_footsteps"]})
    for folder, table in (("train_curated", curated), ("train_noisy", noisy)):
        for fname in table.fname:
            wav(source / folder / fname)
        table.to_csv(source / f"{folder}.csv", index=False)
    for i in range(2):
        wav(source / "test" / f"t{i}.wav")
    pd.DataFrame({"fname": ["t0.wav", "t1.wav"], "Bark": 0.0, "Walk_and_footsteps": 0.0}).to_csv(
        source / "sample_submission.csv", index=False)
    pd.DataFrame({"fname": ["t0.wav", "t1.wav"], "labels": ["Bark", "Bark,Walk_and_footsteps"],
                  "usage": ["Public", "Private"]}).to_csv(source / "test_post_competition.csv", index=False)
    out = tmp_path / "out"
    assert adapters.main(["fsdkaggle2019", str(source), str(out)]) == 0
    summary = data.check_layout(out)
    assert (summary["train"], summary["test"], summary["labels"], summary["unreadable"]) == (8, 2, 2, [])
    dataset = Dataset.load(out)
    assert dataset.task.NAME == "multi-label" and dataset.submission_columns == ["Bark", "Walk_and_footsteps"]
    train = pd.read_csv(out / "train.csv")
    assert train.fname.tolist()[:2] == ["curated/c0.wav", "curated/c1.wav"] and train.manually_verified.sum() == 6
    folds = dataset.folds(n_folds=2, seed=0)
    assert (folds.fold[train.fname.str.startswith("noisy/")] == -1).all()
    assert dataset.test_targets()[0].tolist() == [[1, 0], [1, 1]]


def test_fsd50k_dev_split_is_the_fold_and_eval_the_test_split(tmp_path):
    source = tmp_path / "FSD50K"
    dev = pd.DataFrame({"fname": [101, 102, 103, 104], "labels": ["Music,Guitar", "Speech", "Music", "Speech,Music"],
                        "mids": "/m/x", "split": ["train", "train", "val", "val"]})
    evaluation = pd.DataFrame({"fname": [201, 202], "labels": ["Speech", "Guitar,Music"], "mids": "/m/x"})
    (source / "FSD50K.ground_truth").mkdir(parents=True)
    dev.to_csv(source / "FSD50K.ground_truth" / "dev.csv", index=False)
    evaluation.to_csv(source / "FSD50K.ground_truth" / "eval.csv", index=False)
    for i in dev.fname:
        wav(source / "FSD50K.dev_audio" / f"{i}.wav")
    for i in evaluation.fname:
        wav(source / "FSD50K.eval_audio" / f"{i}.wav")
    out = tmp_path / "out"
    assert adapters.main(["fsd50k", str(source), str(out)]) == 0
    summary = data.check_layout(out)
    assert (summary["train"], summary["test"], summary["labels"], summary["unreadable"]) == (4, 2, 3, [])
    dataset = Dataset.load(out)
    assert dataset.labels == ["Guitar", "Music", "Speech"]
    assert dataset.folds(n_folds=5).fold.tolist() == [-1, -1, 0, 0]   # the dataset's own split, whatever is asked
    assert dataset.test_targets()[0].tolist() == [[0, 0, 1], [1, 1, 0]]
