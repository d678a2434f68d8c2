"""The ESC-50 and FSD50K adapters on real samples of the tables their authors publish (tests/real/esc50/,
tests/real/fsd50k/, byte for byte; tests/real/README.md names the sources), through the README's commands:
`python -m src.tools.adapters KIND SOURCE OUT`, then `python -m src.data --data-dir OUT`, over short
generated WAVs laid out as the datasets ship them."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ONE_THREAD, run_module

from src.dataset.tables import Dataset

REAL = Path(__file__).parent / "real"
ESC50_SAMPLE = REAL / "esc50" / "esc50.sample.csv"
FSD50K_DEV = REAL / "fsd50k" / "dev.sample.csv"
FSD50K_EVAL = REAL / "fsd50k" / "eval.sample.csv"
RATE = 44100


def wav(path: Path, seed: int, seconds: float = 0.2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    sf.write(path, samples.astype(np.float32), RATE, subtype="PCM_16")


def rows(path: Path) -> list[dict]:
    """The sample's rows as the csv module reads them (not the code under test)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.readme("src.tools.adapters")
def test_esc50_real_meta_through_the_readme_commands(tmp_path):
    """ESC-50's own meta/esc50.csv (its header and the first 12 rows of each fold): folds 1-5 become 0-4."""
    meta = rows(ESC50_SAMPLE)
    assert len(meta) == 60 and list(meta[0]) == ["filename", "fold", "target", "category", "esc10", "src_file",
                                                 "take"]
    source = tmp_path / "ESC-50-master"
    (source / "meta").mkdir(parents=True)
    shutil.copyfile(ESC50_SAMPLE, source / "meta" / "esc50.csv")
    for i, row in enumerate(meta):
        wav(source / "audio" / row["filename"], seed=i)
    out = tmp_path / "esc50"
    run = run_module("src.tools.adapters", "esc50", source, out, timeout=600, env=ONE_THREAD)
    assert run.returncode == 0, run.stdout + run.stderr
    categories = sorted({row["category"] for row in meta})
    assert f"60 train clips in {len(categories)} labels, folds [0, 1, 2, 3, 4]" in run.stdout
    check = run_module("src.data", "--data-dir", out, timeout=600, env=ONE_THREAD)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"60 train clips in {len(categories)} labels, 0 test clips" in check.stdout

    dataset = Dataset.load(out)
    assert dataset.labels == categories and dataset.task.NAME == "single-label"
    train = dataset.train_with_folds(n_folds=5)
    expected = {row["filename"]: (int(row["fold"]) - 1, row["category"]) for row in meta}
    assert dict(zip(train.fname, zip(train.fold, train.label))) == expected
    assert train.fold.value_counts().sort_index().to_dict() == {k: 12 for k in range(5)}


def test_fsd50k_real_ground_truth_through_the_readme_commands(tmp_path):
    """FSD50K's own dev.csv and eval.csv (quoted label and mid lists, numeric fnames, dev's train/val
    split): val is fold 0, train trains every fold (-1), eval is the labelled test split."""
    dev, evaluation = rows(FSD50K_DEV), rows(FSD50K_EVAL)
    assert {row["split"] for row in dev} == {"train", "val"} and "split" not in evaluation[0]
    source = tmp_path / "FSD50K"
    truth = source / "FSD50K.ground_truth"
    truth.mkdir(parents=True)
    shutil.copyfile(FSD50K_DEV, truth / "dev.csv")
    shutil.copyfile(FSD50K_EVAL, truth / "eval.csv")
    for i, row in enumerate(dev):
        wav(source / "FSD50K.dev_audio" / f"{row['fname']}.wav", seed=i)
    for i, row in enumerate(evaluation):
        wav(source / "FSD50K.eval_audio" / f"{row['fname']}.wav", seed=1000 + i)
    out = tmp_path / "fsd50k"
    run = run_module("src.tools.adapters", "fsd50k", source, out, timeout=600, env=ONE_THREAD)
    assert run.returncode == 0, run.stdout + run.stderr
    labels = sorted({label for row in dev for label in row["labels"].split(",")})
    assert f"{len(dev)} train clips in {len(labels)} labels, folds [-1, 0]" in run.stdout
    check = run_module("src.data", "--data-dir", out, timeout=600, env=ONE_THREAD)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(dev)} train clips in {len(labels)} labels, {len(evaluation)} test clips" in check.stdout
    assert f"test labels: {len(evaluation)} clips" in check.stdout

    dataset = Dataset.load(out)
    assert dataset.task.NAME == "multi-label" and dataset.labels == labels and dataset.submission_columns == labels
    train = dataset.train_with_folds(n_folds=5)
    assert train.fname.tolist() == [f"{row['fname']}.wav" for row in dev]  # numeric fnames kept as written
    assert train.fold.tolist() == [0 if row["split"] == "val" else -1 for row in dev]
    assert dataset.test.fname.tolist() == [f"{row['fname']}.wav" for row in evaluation]
    targets = dataset.test_targets()[0]
    expected = [[float(label in row["labels"].split(",")) for label in labels] for row in evaluation]
    assert targets.tolist() == expected
