"""Multi-label tagging (FSDKaggle2019, FSD50K): the task kind from a `labels` column, multi-label stratified
folds with the unverified rows always training, sigmoid outputs and binary cross-entropy, lwlrap and mAP,
and the 2019 submission form, on real WAV mixtures trained with real Keras."""
import keras
import numpy as np
import pandas as pd
import pytest
from conftest import tiny, write_multilabel_dataset

from src import blend, inspect_oof, predict, train
from src.base.errors import DataError
from src.base.layout import Paths
from src.base.metrics import lwlrap
from src.dataset.folds import ALWAYS_TRAINING, fold_ids
from src.dataset.tables import Dataset
from src.models.losses import UnverifiedLoss
from src.training.fold_files import fold_files

TINY = [*tiny(epochs=2), "--min-crop-seconds", "0"]


@pytest.fixture
def multi(tmp_path):
    return write_multilabel_dataset(tmp_path / "data")


def test_the_task_kind_follows_from_a_labels_column(multi):
    dataset = Dataset.load(multi)
    assert dataset.task.NAME == "multi-label" and dataset.labels == ["Clicks", "Noise", "Tone"]
    table = pd.read_csv(multi / "train.csv")
    hot = dataset.train_targets
    for row, text in zip(hot, table.labels):
        assert [dataset.labels[i] for i in np.flatnonzero(row)] == sorted(text.split(","))
    assert dataset.submission_columns == ["Tone", "Noise", "Clicks"]
    truth, known = dataset.test_targets()
    assert known.all() and truth.sum(axis=1).min() >= 1


@pytest.mark.parametrize("labels, message", [
    ("Tone,", "no labels"), ("Tone, Noise", "label ' Noise' has spaces"), ("Tone,Tone", "a label listed twice"),
])
def test_bad_label_lists_name_the_row(multi, labels, message):
    table = pd.read_csv(multi / "train.csv")
    table.loc[4, "labels"] = labels
    table.to_csv(multi / "train.csv", index=False)
    with pytest.raises(DataError, match=rf"train.csv, row 6 \(mix04.wav\): {message}"):
        Dataset.load(multi)


def test_folds_stratify_label_sets_and_never_validate_unverified_rows(multi):
    dataset = Dataset.load(multi)
    folds = dataset.folds(n_folds=2, seed=0)
    verified = dataset.train.manually_verified.to_numpy() == 1
    assert (folds.fold[~verified] == ALWAYS_TRAINING).all() and (folds.fold[verified] >= 0).all()
    assert fold_ids(folds) == [0, 1]
    hot = dataset.train_targets[verified]
    per_fold = [hot[folds.fold[verified].to_numpy() == k].sum(axis=0) for k in (0, 1)]
    assert np.abs(per_fold[0] - per_fold[1]).max() <= 2       # each label split about evenly


def test_binary_cross_entropy_for_multi_label_with_the_unverified_flag():
    y = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    p = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.1]], np.float32)
    expected = keras.losses.binary_crossentropy(y, p)
    np.testing.assert_allclose(UnverifiedLoss(per_clip="binary_crossentropy").call(y, p), expected, rtol=1e-5)
    flagged = np.concatenate([y, [[1], [0]]], axis=1)          # first clip unverified, weighted 0.5
    np.testing.assert_allclose(UnverifiedLoss(0.5, per_clip="binary_crossentropy").call(flagged, p),
                               np.asarray(expected) * [0.5, 1], rtol=1e-5)


@pytest.mark.slow
def test_multi_label_folds_train_blend_and_submit(multi, tmp_path, capsys):
    out = tmp_path / "out"
    options = [*TINY, "--data-dir", str(multi), "--out-dir", str(out)]
    for model, extra in (("logmel", ["--mixup-targets", "union"]), ("1d", [])):
        assert train.main(["--model", model, *options, *extra, "--prepare"]) == 0
        for fold in (0, 1):
            assert train.main(["--model", model, *options, *extra, "--fold", str(fold)]) == 0
    paths = Paths(multi, out)
    files = fold_files(paths, "logmel", 0)
    assert files.read_config().mixup_targets == "union"
    result = files.read_result()
    assert "val_lwlrap" in result and "val_map3" not in result
    dataset = Dataset.load(multi)
    folds = dataset.folds()
    oof = pd.read_csv(files.oof)
    assert set(oof.fname) == set(folds.fname[folds.fold == 0])                 # verified validation rows only
    probs = oof[dataset.labels].to_numpy()
    assert ((probs > 0) & (probs < 1)).all() and not np.allclose(probs.sum(axis=1), 1)   # a sigmoid per label
    assert {"val_lwlrap", "val_map"} <= set(pd.read_csv(files.log_csv).columns)

    report = blend.blend(paths, ["logmel", "1d"], search=True)
    rows = {r["name"]: r for r in report["rows"]}
    verified = dataset.train.manually_verified.to_numpy() == 1
    assert rows["logmel"]["oof_rows"] == verified.sum()
    assert 0 < rows["logmel"]["oof_lwlrap"] <= 1 and 0 < rows["logmel"]["test_map"] <= 1
    chosen = report["search"][0][1]
    name = chosen[0] if len(chosen) == 1 else "blend_" + "_".join(chosen)
    submission = pd.read_csv(out / "submissions" / f"{name}.csv")
    assert list(submission.columns) == ["fname", "Tone", "Noise", "Clicks"]      # sample_submission's order
    assert submission.fname.tolist() == pd.read_csv(multi / "sample_submission.csv").fname.tolist()
    truth, _ = dataset.test_targets()
    assert lwlrap(truth, submission[dataset.labels].to_numpy()) == pytest.approx(rows[name]["test_lwlrap"], abs=1e-5)
    truth_table = pd.read_csv(multi / "test_labels.csv")
    truth_table.assign(usage=["Public", "Public"] + ["Private"] * 4).to_csv(multi / "test_labels.csv", index=False)
    assert blend.main(["logmel", "1d", "--data-dir", str(multi), "--out-dir", str(out)]) == 0
    assert "OOF lwlrap     OOF mAP test lwlrap    test mAP   public LB  private LB" in capsys.readouterr().out
    private = blend.blend(paths, ["logmel"])["rows"][0]["test_lwlrap_private"]
    probs = pd.read_csv(out / "submissions" / "logmel.csv")[dataset.labels].to_numpy()
    assert private == pytest.approx(lwlrap(truth[2:], probs[2:]), abs=1e-5)
    truth_table.to_csv(multi / "test_labels.csv", index=False)
    arithmetic = blend.blend(paths, ["logmel", "1d"], how="arithmetic")["rows"][-1]
    expected = (pd.read_csv(out / "submissions" / "logmel.csv")[dataset.labels].to_numpy()
                + pd.read_csv(out / "submissions" / "1d.csv")[dataset.labels].to_numpy()) / 2
    blended = pd.read_csv(out / "submissions" / "blend_logmel_1d.csv")[dataset.labels].to_numpy()
    np.testing.assert_allclose(blended, expected, atol=2e-6)                  # the arithmetic mean, written
    assert arithmetic["name"] == "blend_logmel_1d"
    report = blend.blend(paths, ["logmel", "1d"], fit=True, stack=True)
    rows = {r["name"]: r for r in report["rows"]}
    assert abs(sum(rows["blend_logmel_1d_fitted"]["weights"].values()) - 1) < 1e-6
    assert rows["stack_logmel_1d"]["oof_rows"] == verified.sum() and 0 < rows["stack_logmel_1d"]["oof_lwlrap"] <= 1
    stack = pd.read_csv(out / "submissions" / "stack_logmel_1d.csv")
    assert list(stack.columns) == ["fname", "Tone", "Noise", "Clicks"]

    assert inspect_oof.main(["logmel", "1d", "--worst", "3", "--data-dir", str(multi), "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"over {verified.sum()} clips of {len(verified)} (the rest:" in text
    assert "per class (worst AP first):" in text and "3 worst clips (lowest label-ranking precision):" in text
    assert "test lwlrap" in text and (out / "predictions" / "blend_logmel_1d" / "oof_per_class.png").exists()

    tags = tmp_path / "tags.csv"
    assert predict.main([str(multi / "audio_test"), "--threshold", "0.3", "--csv", str(tags), "--per-window",
                         "--data-dir", str(multi), "--out-dir", str(out)]) == 0
    tagged = pd.read_csv(tags, keep_default_na=False)
    assert list(tagged.columns) == ["file", "tags", "Clicks", "Noise", "Tone"] and len(tagged) == 6
    for _, row in tagged.iterrows():   # every label at or above the threshold, and no other
        assert set(filter(None, row.tags.split(","))) == {c for c in ("Clicks", "Noise", "Tone") if row[c] >= 0.3}


def test_missed_and_invented_labels_by_hand():
    from src.dataset.task import MULTI_LABEL, SINGLE_LABEL
    from src.inspect_oof import oof_table, report

    train = pd.DataFrame({"fname": ["a.wav", "b.wav"], "label": ["Noise,Tone", "Clicks"],
                          "labels": ["Tone,Noise", "Clicks"], "manually_verified": [1, 1]})
    folds = pd.DataFrame({"fname": ["a.wav", "b.wav"], "fold": [0, 1]})
    labels = ["Clicks", "Noise", "Tone"]
    y = np.array([[0, 1, 1], [1, 0, 0]], np.float32)
    oof = np.array([[0.9, 0.8, 0.1],     # two labels: guesses Clicks, Noise -> Tone missed, Clicks invented
                    [0.7, 0.2, 0.1]])    # one label, ranked first
    table, y, probs = oof_table(train, folds, oof, labels, y, MULTI_LABEL)
    assert table.missed.tolist() == [["Tone"], []] and table.invented.tolist() == [["Clicks"], []]
    text, per_class, pairs = report(table, y, probs, labels, MULTI_LABEL)
    assert pairs[labels.index("Tone"), labels.index("Clicks")] == 1 and pairs.sum() == 1
    assert "Tone -> Clicks: 1" in text and list(per_class) == ["AP", "lwlrap"]
    # One label per clip: the guess is the top-1, so the pairs are the confusion matrix's off-diagonal.
    single = pd.DataFrame({"fname": ["a.wav", "b.wav"], "label": ["Tone", "Clicks"], "manually_verified": [1, 0]})
    table, y, probs = oof_table(single, folds, oof, labels, np.eye(3, dtype=np.float32)[[2, 0]], SINGLE_LABEL)
    text, per_class, pairs = report(table, y, probs, labels, SINGLE_LABEL)
    assert pairs[labels.index("Tone"), labels.index("Clicks")] == 1 and pairs.sum() == 1
    assert table.score.tolist() == pytest.approx([1 / 3, 1.0])
    assert "OOF MAP@3 0.6667, OOF acc 0.5000 over 2 clips" in text
    assert "unverified:    1.0000 over 1 clips" in text


def test_mixup_targets_mixed_or_united():
    from src.feeds.augment import mix_targets

    targets = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
    lam, partner = np.array([0.25, 0.5], np.float32), np.array([1, 0])
    np.testing.assert_allclose(mix_targets(targets, lam, partner), [[0.25, 0.75, 0.75], [0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(mix_targets(targets, lam, partner, union=True), [[1, 1, 1], [1, 1, 1]])
