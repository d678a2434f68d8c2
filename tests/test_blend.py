import numpy as np
import pandas as pd
import pytest
from conftest import LABELS, fake_fold

from src import blend
from src.base.errors import DataError
from src.base.layout import Paths
from src.base.metrics import geometric_mean
from src.dataset.tables import Dataset
from src.dataset.task import SINGLE_LABEL, validate_top3
from src.training import ensembles


def test_geometric_mean_by_hand():
    a = np.array([[0.5, 0.5]])
    b = np.array([[0.125, 0.875]])
    raw = np.array([np.sqrt(0.5 * 0.125), np.sqrt(0.5 * 0.875)])
    np.testing.assert_allclose(geometric_mean([a, b]), [raw / raw.sum()])
    np.testing.assert_allclose(geometric_mean([a, b], [1, 0]), a)
    weighted = np.array([0.5 ** 2 * 0.125, 0.5 ** 2 * 0.875]) ** (1 / 3)
    np.testing.assert_allclose(geometric_mean([a, b], [2, 1]), [weighted / weighted.sum()])
    with pytest.raises(ValueError):
        geometric_mean([a, b], [1])


def good_submission():
    return pd.DataFrame({"fname": ["a.wav", "b.wav"], "label": ["Tone Noise Clicks", "Noise Tone Clicks"]})


@pytest.mark.parametrize("change, message", [
    (lambda s: s.iloc[:1], "has 1 rows"),
    (lambda s: s.iloc[::-1].reset_index(drop=True), "row 0: fname 'b.wav', expected 'a.wav'"),
    (lambda s: s.assign(label=["Tone Noise", "Noise Tone Clicks"]), "row 0"),
    (lambda s: s.assign(label=["Tone Tone Clicks", "Noise Tone Clicks"]), "row 0"),
    (lambda s: s.assign(label=["Tone Noise Clicks", "Noise Tone Kazoo"]), "row 1"),
    (lambda s: s.assign(label=["Tone Noise Clicks", "Noise  Tone Clicks"]), "row 1"),
])
def test_validation_rejects_bad_submissions(change, message):
    validate_top3(good_submission(), ["a.wav", "b.wav"], LABELS)
    with pytest.raises(ValueError, match=message):
        validate_top3(change(good_submission()), ["a.wav", "b.wav"], LABELS)


def two_folds(clean_dataset, tmp_path):
    """Paths with an empty output root, 2 folds, train.csv, the test fnames and the train label indices."""
    train = pd.read_csv(clean_dataset / "train.csv")
    return (Paths(clean_dataset, tmp_path / "out"), Dataset.load(clean_dataset).folds(n_folds=2, seed=0), train,
            pd.read_csv(clean_dataset / "sample_submission.csv"), train.label.map(LABELS.index).to_numpy())


def write_fold(paths, model, fold, oof_fnames, oof, test_fnames, test):
    """A finished fold of `model` (conftest.fake_fold) with these predictions, trained in 1.5 minutes."""
    fake_fold(paths, model, fold, {"val_map3": 0, "minutes": 1.5}, oof=(oof_fnames, oof), test=(test_fnames, test))


@pytest.mark.readme("src.blend")
def test_blend_aligns_oof_with_train_and_writes_valid_submissions(clean_dataset, tmp_path):
    paths, folds, train, test, y = two_folds(clean_dataset, tmp_path)
    right = np.eye(3)[y] * 0.8 + 0.1      # true label first
    second = np.eye(3)[(y + 1) % 3] * 0.5 + np.eye(3)[y] * 0.3 + 0.1  # true label second
    test_probs = np.tile([0.2, 0.3, 0.5], (len(test), 1))
    for k in (0, 1):
        rows = (folds.fold == k).to_numpy()
        # Fold files list their rows in reverse, so alignment by fname is what makes the score right.
        write_fold(paths, "a", k, train.fname[rows][::-1], right[rows][::-1], test.fname, test_probs)
        write_fold(paths, "b", k, train.fname[rows][::-1], second[rows][::-1], test.fname, test_probs)
    report = blend.blend(paths, ["a", "b"])
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["a"]["oof_map3"] == pytest.approx(1.0)
    assert rows["b"]["oof_map3"] == pytest.approx(0.5)
    assert rows["a"]["oof_rows"] == len(train)
    assert "test_map3" in rows["a"]
    assert rows["a"]["train_minutes"] == 3.0 and rows["blend_a_b"]["train_minutes"] == 6.0  # fold minutes summed
    submission = pd.read_csv(paths.submissions_dir / "blend_a_b.csv")
    assert submission.fname.tolist() == test.fname.tolist()
    assert set(submission.label) == {"Tone Noise Clicks"}
    # The command, as the README gives it: every model under predictions/, the same submission.
    (paths.submissions_dir / "blend_a_b.csv").unlink()
    assert blend.main(["--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(paths.submissions_dir / "blend_a_b.csv"), submission)


def test_unfinished_folds_are_named_unless_partial_is_allowed(clean_dataset, tmp_path):
    paths, folds, train, test, _ = two_folds(clean_dataset, tmp_path)
    rows = (folds.fold == 1).to_numpy()
    probs = np.full((rows.sum(), 3), 1 / 3)
    write_fold(paths, "a", 1, train.fname[rows], probs, test.fname, np.full((len(test), 3), 1 / 3))
    # The run "a" is a variant of the preset in its config.json: run_folds.sh takes the preset, --name the run.
    with pytest.raises(DataError, match=r"fold\(s\) 0 of 2 are not finished.*run_folds.sh 1d 0 -- --name a "):
        blend.blend(paths, ["a"])
    report = blend.blend(paths, ["a"], allow_partial=True)
    assert report["rows"][0]["oof_rows"] == rows.sum()


def test_fitted_weights_favour_the_informative_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.eye(3)[y] * 0.6 + 0.4 / 3 + rng.uniform(0, 0.05, (300, 3))
    noise = rng.dirichlet(np.ones(3), 300)
    weights = ensembles.fit_weights([good / good.sum(1, keepdims=True), noise], np.eye(3)[y], SINGLE_LABEL)
    assert weights.sum() == pytest.approx(1) and weights[0] > 0.8


@pytest.mark.readme("src.blend --fit-weights")
def test_fitted_weights_come_from_oof_only_and_warn_within_the_fold_spread(clean_dataset, tmp_path, caplog, capsys):
    paths, folds, train, test, y = two_folds(clean_dataset, tmp_path)
    oof = {"a": np.eye(3)[y] * 0.5 + 0.5 / 3, "b": np.eye(3)[(y + 1) % 3] * 0.5 + 0.5 / 3}

    def fitted_weights(test_probs):
        for model in ("a", "b"):
            for k in (0, 1):
                folder = paths.fold_dir(model, k)
                if folder.exists():
                    import shutil
                    shutil.rmtree(folder)
                rows = (folds.fold == k).to_numpy()
                write_fold(paths, model, k, train.fname[rows], oof[model][rows], test.fname, test_probs[model])
        return [r for r in blend.blend(paths, ["a", "b"], fit=True)["rows"] if "weights" in r][0]

    first = fitted_weights({m: np.tile([0.2, 0.3, 0.5], (len(test), 1)) for m in "ab"})
    other_test = fitted_weights({m: np.random.default_rng(3).dirichlet(np.ones(3), len(test)) for m in "ab"})
    assert first["weights"] == other_test["weights"]  # the test predictions play no part
    assert first["weights"]["a"] > 0.9 and first["oof_map3"] == pytest.approx(1.0)
    assert (paths.submissions_dir / "blend_a_b_fitted.csv").exists()
    (paths.submissions_dir / "blend_a_b_fitted.csv").unlink()
    capsys.readouterr()
    where = ["--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]
    assert blend.main(["a", "b", "--fit-weights", *where]) == 0
    assert "weights fitted on OOF: {'a': " in capsys.readouterr().out
    assert (paths.submissions_dir / "blend_a_b_fitted.csv").exists()

    # Two equal models, right first on fold 0 and third on fold 1: the fit gains nothing, the folds
    # differ by a lot, so the report warns.
    caplog.clear()
    last = (y + 2) % 3, (y + 1) % 3
    ranked = np.eye(3)[y] * 0.2 + np.eye(3)[last[0]] * 0.3 + np.eye(3)[last[1]] * 0.5
    oof["a"] = np.where((folds.fold == 0).to_numpy()[:, None], np.eye(3)[y] * 0.5 + 0.5 / 3, ranked)
    oof["b"] = oof["a"].copy()
    row = fitted_weights({m: np.tile([0.2, 0.3, 0.5], (len(test), 1)) for m in "ab"})
    assert row["gain_over_equal"] == pytest.approx(0.0)
    assert row["fold_spread"] == pytest.approx(np.std([1.0, 1 / 3]))
    assert "less than the fold-to-fold spread" in caplog.text


@pytest.mark.readme("src.blend --search")
def test_search_picks_the_subset_with_the_best_oof_and_ignores_test(clean_dataset, tmp_path, capsys):
    paths, folds, train, test, y = two_folds(clean_dataset, tmp_path)
    first = np.eye(3)[y] * 0.7 + 0.1
    third = np.eye(3)[(y + 1) % 3] * 0.5 + np.eye(3)[(y + 2) % 3] * 0.4 + np.eye(3)[y] * 0.1
    on_fold0 = (folds.fold == 0).to_numpy()[:, None]
    # a is right on fold 0 only, b on fold 1 only (each 2/3 alone, 1.0 together); c is always third.
    oof = {"a": np.where(on_fold0, first, third), "b": np.where(on_fold0, third, first), "c": third}
    # On the test split c is perfect and a, b always wrong: a choice made there would be c.
    truth = pd.read_csv(clean_dataset / "test_labels.csv").set_index("fname").label
    y_test = test.fname.map(truth).map(LABELS.index).to_numpy()
    tests = {"a": np.eye(3)[(y_test + 1) % 3] * 0.9 + 0.05, "c": np.eye(3)[y_test] * 0.9 + 0.05}
    tests["b"] = tests["a"]
    for model in oof:
        for k in (0, 1):
            rows = (folds.fold == k).to_numpy()
            write_fold(paths, model, k, train.fname[rows], oof[model][rows], test.fname, tests[model])
    report = blend.blend(paths, ["a", "b", "c"], search=True)
    ranking = report["search"]
    assert len(ranking) == 7
    assert ranking[0] == (pytest.approx(1.0), ["a", "b"])
    assert dict((" ".join(names), score) for score, names in ranking)["c"] == pytest.approx(1 / 3)
    assert [r["name"] for r in report["rows"]] == ["a", "b", "blend_a_b"]
    assert (paths.submissions_dir / "blend_a_b.csv").exists()
    assert not (paths.submissions_dir / "c.csv").exists()
    assert report["rows"][-1]["test_map3"] < 0.5   # scored on test, not chosen there
    (paths.submissions_dir / "blend_a_b.csv").unlink()
    capsys.readouterr()
    assert blend.main(["--search", "--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]) == 0
    out = capsys.readouterr().out
    assert "equal-weight subsets" in out and "\n  1.0000  a b\n" in out       # every model under predictions/
    assert (paths.submissions_dir / "blend_a_b.csv").exists() and not (paths.submissions_dir / "c.csv").exists()


def test_a_model_named_twice_is_refused(capsys):
    with pytest.raises(SystemExit):
        blend.main(["a", "b", "a"])
    assert "a model named twice" in capsys.readouterr().err


@pytest.mark.readme("src.blend --stack")
def test_stacking_learns_what_a_mean_cannot_and_chooses_on_oof_only(clean_dataset, tmp_path, capsys):
    paths, folds, train, test, y = two_folds(clean_dataset, tmp_path)
    truth = pd.read_csv(clean_dataset / "test_labels.csv").set_index("fname").label
    y_test = test.fname.map(truth).map(LABELS.index).to_numpy()
    rng = np.random.default_rng(0)
    # A model that always ranks the label after the true one first: a mean keeps its mistake, a
    # second-level model learns the shift from the OOF rows and carries it to the test clips.
    shifted = lambda labels: np.eye(3)[(labels + 1) % 3] * 0.7 + 0.1 + rng.uniform(0, 0.05, (len(labels), 3))
    oof, test_probs = shifted(y), shifted(y_test)
    for k in (0, 1):
        rows = (folds.fold == k).to_numpy()
        write_fold(paths, "shifted", k, train.fname[rows], oof[rows], test.fname, test_probs)
    report = blend.blend(paths, ["shifted"], stack=True)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["shifted"]["oof_map3"] < 0.6
    assert rows["stack_shifted"]["oof_map3"] == pytest.approx(1.0) and rows["stack_shifted"]["oof_rows"] == len(train)
    assert rows["stack_shifted"]["test_map3"] == pytest.approx(1.0)
    assert len(rows["stack_shifted"]["stack_strengths"]) == 2             # one inner CV per outer fold
    submission = pd.read_csv(paths.submissions_dir / "stack_shifted.csv")
    validate_top3(submission, test.fname.tolist(), LABELS)
    # The test labels play no part: without them the stacked submission is the same file.
    (clean_dataset / "test_labels.csv").unlink()
    blend.blend(paths, ["shifted"], stack=True)
    assert pd.read_csv(paths.submissions_dir / "stack_shifted.csv").equals(submission)
    (paths.submissions_dir / "stack_shifted.csv").unlink()
    capsys.readouterr()
    assert blend.main(["shifted", "--stack", "--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]) == 0
    assert "stacked: logistic regression" in capsys.readouterr().out
    assert pd.read_csv(paths.submissions_dir / "stack_shifted.csv").equals(submission)


def test_arithmetic_combine_by_hand():
    from src.base.metrics import combine

    a, b = np.array([[0.5, 0.5]]), np.array([[0.125, 0.875]])
    np.testing.assert_allclose(combine([a, b], how="arithmetic"), [[0.3125, 0.6875]])
    np.testing.assert_allclose(combine([a, b], [3, 1], how="arithmetic"), [[0.40625, 0.59375]])
    np.testing.assert_allclose(combine([a, b]), geometric_mean([a, b]))
