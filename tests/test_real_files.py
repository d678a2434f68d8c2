"""The competitions' own tables (tests/real/, byte for byte as Kaggle and Zenodo serve them) through the
pipeline, over generated audio: Kaggle's 2018 download at its full size (9,473 train and 9,400 test rows,
the placeholder labels, the three test clips that are not audio, test_post_competition.csv), its archives
in both entry shapes, the leaderboards, the 9,400-row submission, and the FSDKaggle2019 release."""
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ONE_THREAD, run_folds, run_module, tiny

REAL = Path(__file__).parent / "real"
KAGGLE_2018 = REAL / "fsdkaggle2018"
EMPTY_TEST_CLIPS = ("0b0427e2.wav", "6ea0099f.wav", "b39975f5.wav")  # not audio in Kaggle's 2018 test set
TINY = tiny(batch_size=16)
RATE = 44100


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """A 16-bit mono PCM WAV file, written by hand: thousands of them are made per test."""
    data = np.asarray(samples, "<i2").tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(data)) + data)


def clip(label_index: int, rng: np.random.Generator, seconds: float = 0.05) -> bytes:
    """A short tone whose pitch says its label, with a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.4 * np.sin(2 * np.pi * (200 + 60 * label_index) * t) + 0.02 * rng.standard_normal(len(t))
    return wav_bytes(np.round(wave * 32767))


def kaggle_2018_download(folder: Path, train: pd.DataFrame, with_folders: bool) -> Path:
    """folder/freesound-audio-tagging.zip as `kaggle competitions download` brings it: the tables (the real
    sample_submission.csv and test_post_competition.csv) and the inner audio_train.zip and audio_test.zip,
    whose entries carry their folder (audio_train/x.wav) or none (x.wav). Two of the three clips that are
    not audio are a bare WAV header, one is 0 bytes."""
    rng = np.random.default_rng(0)
    labels = sorted(train.label.unique())
    truth = pd.read_csv(KAGGLE_2018 / "test_post_competition.csv")
    test_label = dict(zip(truth.fname, truth.label))
    folder.mkdir(parents=True)
    inner = {}
    for split, fnames, label_of in (("train", train.fname, dict(zip(train.fname, train.label))),
                                    ("test", truth.fname, test_label)):
        path = folder / f"audio_{split}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for fname in fnames:
                label = label_of.get(fname)
                if fname in EMPTY_TEST_CLIPS:
                    body = b"" if fname == EMPTY_TEST_CLIPS[0] else wav_bytes(np.zeros(0))
                else:
                    body = clip(labels.index(label) if label in labels else 41, rng)
                zf.writestr(f"audio_{split}/{fname}" if with_folders else fname, body)
        inner[split] = path
    download = folder / "freesound-audio-tagging.zip"
    with zipfile.ZipFile(download, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("train.csv", train.to_csv(index=False))
        zf.write(KAGGLE_2018 / "kaggle_sample_submission.csv", "sample_submission.csv")
        zf.write(KAGGLE_2018 / "test_post_competition.csv", "test_post_competition.csv")
        for path in inner.values():
            zf.write(path, path.name)
            path.unlink()
    return download


@pytest.mark.parametrize("with_folders", [True, False], ids=["entries-in-folders", "entries-at-root"])
@pytest.mark.readme("src.data")
def test_kaggle_2018_download_as_served_passes_src_data(tmp_path, with_folders):
    """The first command after the download, on Kaggle's own tables at their full size."""
    train = pd.read_csv(KAGGLE_2018 / "kaggle_train.csv")
    data_dir = tmp_path / "data"
    kaggle_2018_download(data_dir, train, with_folders)
    done = run_module("src.data", "--data-dir", str(data_dir), env=ONE_THREAD)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "9473 train clips in 41 labels, 9400 test clips" in out
    assert "3 clip(s) cannot be read as audio" in out and all(f in out for f in EMPTY_TEST_CLIPS)
    assert "test labels: 1600 clips, 1299 Private, 301 Public" in out
    assert "rare enough to be typos" not in out       # 41 labels of 94 to 300 clips: none is suspicious
    assert len(list((data_dir / "audio_train").iterdir())) == 9473
    assert len(list((data_dir / "audio_test").iterdir())) == 9400
    truth = pd.read_csv(data_dir / "test_labels.csv")
    assert len(truth) == 1600 and set(truth.usage) == {"Public", "Private"} and truth.label.notna().all()
    again = run_module("src.data", "--data-dir", str(data_dir), env=ONE_THREAD)   # nothing unpacked twice
    assert again.returncode == 0 and "9473 train clips" in again.stdout


@pytest.fixture(scope="module")
def kaggle_run(tmp_path_factory):
    """Kaggle's 2018 download with every test row (9,400) and three real train rows per label, folds of
    the raw-wave net trained by run_folds.sh at tiny scale."""
    tmp = tmp_path_factory.mktemp("kaggle2018")
    real_train = pd.read_csv(KAGGLE_2018 / "kaggle_train.csv")
    train = real_train.groupby("label", sort=False).head(3).reset_index(drop=True)
    data_dir = tmp / "data"
    kaggle_2018_download(data_dir, train, with_folders=True)
    steps = {"data": run_module("src.data", "--data-dir", str(data_dir), env=ONE_THREAD)}
    steps["train"] = run_folds("1d", "--", *TINY, "--data-dir", data_dir, "--out-dir", tmp / "out", timeout=1200)
    where = ["--data-dir", str(data_dir), "--out-dir", str(tmp / "out")]
    kaggle_form = str(KAGGLE_2018 / "kaggle_sample_submission.csv")
    steps["blend"] = run_module("src.blend", "1d", *where, "--kaggle-form", kaggle_form, env=ONE_THREAD)
    steps["inspect"] = run_module("src.inspect_oof", "1d", *where, env=ONE_THREAD)
    return data_dir, tmp / "out", steps


@pytest.mark.slow
def test_kaggle_2018_blend_reports_both_leaderboards_over_the_1600_scored_clips(kaggle_run):
    _, _, steps = kaggle_run
    for name, done in steps.items():
        assert done.returncode == 0, f"{name}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    header, row = steps["blend"].stdout.splitlines()[:2]
    assert "public LB" in header and "private LB" in header
    figures = row.split()
    assert figures[0] == "1d" and all(0 <= float(x) <= 1 for x in figures[3:8])
    assert "test figures over the 1600 test clips with labels" in steps["blend"].stdout
    inspect = steps["inspect"].stdout
    assert "over 1600 labelled test clips" in inspect
    assert "public leaderboard" in inspect and "private leaderboard" in inspect


@pytest.mark.slow
@pytest.mark.readme("src.blend --kaggle-form")
def test_kaggle_2018_submission_keeps_every_row_and_the_unreadable_clips_are_recorded_skips(kaggle_run):
    data_dir, out, _ = kaggle_run
    sample = pd.read_csv(KAGGLE_2018 / "kaggle_sample_submission.csv")
    submission = pd.read_csv(out / "submissions" / "1d.csv")
    assert list(submission.fname) == list(sample.fname)          # 9,400 rows, Kaggle's order
    labels = set(pd.read_csv(data_dir / "train.csv").label)
    guesses = submission.label.str.split(" ")
    assert guesses.map(len).eq(3).all() and guesses.map(lambda g: set(g) <= labels).all()
    reports = list((data_dir / "cache").glob("audio-*/test/report.csv"))
    assert reports, "the audio cache wrote no report of the test split"
    for report in reports:
        skipped = pd.read_csv(report)
        skipped = skipped[skipped.status.str.contains("skip", case=False)]
        assert sorted(skipped.fname) == sorted(EMPTY_TEST_CLIPS)
    kaggle_form = pd.read_csv(out / "submissions" / "1d.kaggle.csv")   # same rows: nothing to fill
    pd.testing.assert_frame_equal(kaggle_form, submission)


@pytest.mark.slow
def test_zenodo_route_writes_kaggles_9400_row_form_for_a_late_submission(tmp_path, kaggle_run):
    """The release's test split is the 1,600 scored clips; with Kaggle's sample_submission.csv at hand the
    same predictions are written in Kaggle's 9,400 rows (padding clips get the most frequent labels)."""
    from src import blend
    from src.base.layout import Paths
    from src.dataset.tables import Dataset

    data_dir, out, _ = kaggle_run
    dataset = Dataset.load(data_dir)
    scored = dataset.truth.fname
    rows = dataset.test.fname.isin(set(scored)).to_numpy()
    zenodo_like = Dataset(dataset.data_dir, dataset.train, dataset.labels,
                          dataset.test[rows].reset_index(drop=True), dataset.truth)
    probs = blend.load_model_predictions(Paths(data_dir, out), "1d", dataset).test[rows]
    sample = pd.read_csv(KAGGLE_2018 / "kaggle_sample_submission.csv")
    path = blend.write_kaggle_form(tmp_path / "late.kaggle.csv", probs, zenodo_like, sample)
    late = pd.read_csv(path)
    assert list(late.fname) == list(sample.fname) and len(late) == 9400
    ours = pd.read_csv(out / "submissions" / "1d.csv").set_index("fname").label
    np.testing.assert_array_equal(late.set_index("fname").label[scored].to_numpy(), ours[scored].to_numpy())
    frequency = dataset.train_targets.mean(axis=0)   # the padding rows: the most frequent labels, ties by name
    prior = " ".join(np.asarray(dataset.labels)[np.argsort(-frequency, kind="stable")[:3]])
    assert (late.set_index("fname").label.drop(scored) == prior).all()


KAGGLE_2019 = REAL / "fsdkaggle2019"


def kaggle_2019_download(folder: Path, with_folders: bool) -> dict:
    """folder/freesound-audio-tagging-2019.zip in the shape of Kaggle's download, from real rows of the
    FSDKaggle2019 release's tables: curated rows covering all 80 labels (up to two per first label), 60 noisy
    rows, 40 test rows; the inner train_curated.zip, train_noisy.zip and test.zip with entries at their
    root (as Kaggle's test.zip has them) or in their folder. One curated clip is silence, one test clip
    holds no samples."""
    rng = np.random.default_rng(1)
    vocabulary = pd.read_csv(KAGGLE_2019 / "vocabulary.csv", header=None, names=["index", "label"]).label.tolist()
    curated = pd.read_csv(KAGGLE_2019 / "train_curated_post_competition.csv", dtype=str)
    curated = curated.groupby(curated.labels.str.split(",").str[0], sort=False).head(2).reset_index(drop=True)
    noisy = pd.read_csv(KAGGLE_2019 / "train_noisy_post_competition.head400.csv", dtype=str).head(60)
    test = pd.read_csv(KAGGLE_2019 / "test_post_competition.csv", dtype=str).head(40)
    odd = {"silent": curated.fname[0], "empty": test.fname[0],
           "counts": {"train_curated": len(curated), "train_noisy": len(noisy), "test": len(test)}}
    folder.mkdir(parents=True)
    download = folder / "freesound-audio-tagging-2019.zip"
    with zipfile.ZipFile(download, "w", zipfile.ZIP_STORED) as outer:
        for name, table in (("train_curated", curated), ("train_noisy", noisy), ("test", test)):
            inner = folder / f"{name}.zip"
            with zipfile.ZipFile(inner, "w", zipfile.ZIP_STORED) as zf:
                for fname, labels in zip(table.fname, table.labels):
                    body = (wav_bytes(np.zeros(2205)) if fname == odd["silent"] else
                            wav_bytes(np.zeros(0)) if fname == odd["empty"] else
                            clip(vocabulary.index(labels.split(",")[0]), rng))
                    zf.writestr(f"{name}/{fname}" if with_folders else fname, body)
            outer.write(inner, inner.name)
            inner.unlink()
        outer.writestr("train_curated.csv", curated[["fname", "labels"]].to_csv(index=False))
        outer.writestr("train_noisy.csv", noisy[["fname", "labels"]].to_csv(index=False))
        sample = test[["fname"]].assign(**dict.fromkeys(vocabulary, 0))
        outer.writestr("sample_submission.csv", sample.to_csv(index=False))
        outer.write(KAGGLE_2019 / "test_post_competition.csv", "test_post_competition.csv")
    return odd


@pytest.mark.parametrize("with_folders", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["entries-at-root", "entries-in-folders"])      # only the second trains folds
def test_fsdkaggle2019_download_through_the_readme_commands(tmp_path, with_folders):
    """The README's 2019 commands exactly as written (after the download), then folds trained and blended:
    the silent clip trains, the empty one is a recorded skip, the submission holds no NaN."""
    odd = kaggle_2019_download(tmp_path / "fsd2019", with_folders)
    unzip = subprocess.run(["bash", "-c", "cd fsd2019 && unzip -q '*.zip'"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert unzip.returncode == 0, unzip.stderr
    adapted = run_module("src.tools.adapters", "fsdkaggle2019", "fsd2019", "data/fsd2019", cwd=tmp_path,
                         env=ONE_THREAD)
    assert adapted.returncode == 0, adapted.stdout + adapted.stderr
    for folder, count in odd["counts"].items():
        assert len(list((tmp_path / "fsd2019" / folder).glob("*.wav"))) == count, folder
    checked = run_module("src.data", "--data-dir", "data/fsd2019", cwd=tmp_path, env=ONE_THREAD)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    n_train = odd["counts"]["train_curated"] + odd["counts"]["train_noisy"]
    assert f"{n_train} train clips in 80 labels, 40 test clips" in checked.stdout
    assert f"audio_test/{odd['empty']}: a header with no samples" in checked.stdout
    if not with_folders:
        return  # the rest is the same for both shapes
    where = ["--data-dir", "data/fsd2019", "--out-dir", "out"]
    trained = run_folds("1d", "--", *TINY, *where, cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    blended = run_module("src.blend", "1d", *where, cwd=tmp_path, env=ONE_THREAD)
    assert blended.returncode == 0, blended.stdout + blended.stderr
    submission = pd.read_csv(tmp_path / "out" / "submissions" / "1d.csv")
    assert len(submission) == 40 and np.isfinite(submission.iloc[:, 1:].to_numpy()).all()
    reports = (tmp_path / "data" / "fsd2019" / "cache").glob("audio-*/test/report.csv")
    report = pd.concat(pd.read_csv(p) for p in reports)
    assert set(report[report.status == "skipped"].fname) == {odd["empty"]}
    oof = pd.read_csv(tmp_path / "out" / "predictions" / "1d" / "fold0" / "oof.csv")
    assert np.isfinite(oof.iloc[:, 1:].to_numpy()).all()
