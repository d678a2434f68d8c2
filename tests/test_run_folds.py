"""run_folds.sh end to end: real WAV files, real fold processes, real Keras training on CPU."""
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_folds, write_dataset

from src import blend, inspect_oof
from src.base.layout import Paths

pytestmark = pytest.mark.slow  # every test reads the folds the module's fixture trains


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    data_dir = write_dataset(tmp / "data")
    paths = Paths(data_dir, tmp / "out")
    options = ["--", *TINY, "--data-dir", str(data_dir), "--out-dir", str(paths.out_dir)]
    fake_smi = tmp / "nvidia-smi"
    fake_smi.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\necho 'GPU 1: Fake GPU (UUID: GPU-1)'\n")
    fake_smi.chmod(0o755)
    one_gpu = tmp / "nvidia-smi-1"
    one_gpu.write_text("#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\n")
    one_gpu.chmod(0o755)
    runs = {
        # Two "GPUs" from a stand-in nvidia-smi, one fold on each, both at once.
        "1d": run_folds("1d", *options, env={"NVIDIA_SMI": str(fake_smi), "FOLDS_PER_GPU": "1"}),
        # One "GPU" shared by both folds at once (the stand-in GPUs leave the processes on the CPU).
        "1d_shared": run_folds("1d", *options[:-1], str(tmp / "shared"),
                               env={"NVIDIA_SMI": str(one_gpu), "FOLDS_PER_GPU": "2"}),
        "1d_bad_share": run_folds("1d", *options, env={"NVIDIA_SMI": str(one_gpu), "FOLDS_PER_GPU": "0"}),
        # No GPU: CPU processes. Fold 5 does not exist and fails; fold 0 must still finish. Run from the
        # dataset's parent folder with relative paths: they are the user's, not the repository's.
        "2d_crash": run_folds("2d", "0", "5", "--", *TINY, "--data-dir", "data", "--out-dir", "out",
                              env={"NVIDIA_SMI": "false"}, cwd=tmp),
        "2d_resume": run_folds("2d", *options, env={"NVIDIA_SMI": "false"}),
    }
    return paths, runs


@pytest.mark.readme("run_folds.sh")
def test_folds_run_one_per_gpu(pipeline):
    paths, runs = pipeline
    run = runs["1d"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 fold(s) on 2 GPU(s): 0 1" in run.stdout
    lines = run.stdout.splitlines()
    starts = [line for line in lines if re.fullmatch(r"fold \d -> GPU \d .*", line)]
    assert sorted(line[:15] for line in starts) == ["fold 0 -> GPU 0", "fold 1 -> GPU 1"]
    first_done = min(i for i, line in enumerate(lines) if line.endswith(" done"))
    assert all(lines.index(line) < first_done for line in starts)  # both started before either ended
    for fold in (0, 1):
        folder = paths.fold_dir("1d", fold)
        for name in ("config.json", "best.keras", "log.csv", "oof.csv", "test.csv", "result.json"):
            assert (folder / name).exists(), name
        assert (paths.model_dir("1d") / "logs" / f"fold{fold}.log").exists()
    assert "val MAP@3" in run.stdout and "failed" not in run.stdout


def test_folds_share_a_gpu_by_folds_per_gpu(pipeline):
    paths, runs = pipeline
    run = runs["1d_shared"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 fold(s) on 1 GPU(s): 0, 2 at a time on each" in run.stdout
    lines = run.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"fold \d -> GPU 0 .*", line)]
    first_done = min(i for i, line in enumerate(lines) if line.endswith(" done"))
    assert len(starts) == 2 and max(starts) < first_done
    log = (paths.out_dir.parent / "shared" / "predictions" / "1d" / "logs" / "fold0.log").read_text()
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    assert f"backend {backend} on cpu" in log and "host feed" in log   # printed at the start of the run
    bad = runs["1d_bad_share"]
    assert bad.returncode == 2 and "FOLDS_PER_GPU must be a whole number >= 1" in bad.stderr


def test_a_crashed_fold_keeps_the_finished_ones(pipeline):
    paths, runs = pipeline
    crash, resume = runs["2d_crash"], runs["2d_resume"]
    assert crash.returncode == 1
    assert "fold 5 FAILED" in crash.stdout and "failed(2)" in crash.stdout
    assert "does not exist" in (paths.model_dir("2d") / "logs" / "fold5.log").read_text()
    assert resume.returncode == 0, resume.stdout + resume.stderr
    assert "skipping" in (paths.model_dir("2d") / "logs" / "fold0.log").read_text()
    assert (paths.fold_dir("2d", 1) / "result.json").exists()


def test_skipped_clips_stay_out_of_training_and_oof(pipeline):
    paths, _ = pipeline
    oof = pd.concat(pd.read_csv(paths.fold_dir("1d", k) / "oof.csv") for k in (0, 1))
    assert "corrupt.wav" not in set(oof.fname) and "empty.wav" not in set(oof.fname)
    assert len(oof) == 24 - 2
    result = json.loads((paths.fold_dir("1d", 0) / "result.json").read_text())
    assert result["skipped_train"] == 2


def test_normalisation_uses_the_folds_training_rows_only(pipeline):
    import keras

    import src.models  # noqa: F401 - registers the custom layers and loss that best.keras names
    from src.dataset.inputs import model_input
    from src.training.fold_files import FoldFiles

    paths, _ = pipeline
    folder = paths.fold_dir("2d", 1)
    config = FoldFiles(folder).read_config()
    source = model_input(paths.data_dir, "train", config, n_jobs=1)
    folds = pd.read_csv(paths.folds_csv)
    fit = [f for f in folds.fname[folds.fold != 1] if source.store.status(f) == "ok"]
    everything = [f for f in folds.fname if source.store.status(f) == "ok"]
    layer = keras.models.load_model(folder / "best.keras").get_layer("mfcc_normalization")
    mean = np.asarray(layer.mean).reshape(-1)
    np.testing.assert_allclose(mean, source.statistics(fit)[0], rtol=1e-5, atol=1e-4)
    assert not np.allclose(mean, source.statistics(everything)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.readme("src.inspect_oof")
def test_blend_and_inspect_the_trained_models(pipeline, capsys):
    paths, _ = pipeline
    where = ["--data-dir", str(paths.data_dir), "--out-dir", str(paths.out_dir)]
    assert blend.main(["1d", "2d", *where]) == 0
    out = capsys.readouterr().out
    assert "blend_1d_2d" in out and "OOF MAP@3" in out
    submission = pd.read_csv(paths.submissions_dir / "blend_1d_2d.csv")
    sample = pd.read_csv(paths.data_dir / "sample_submission.csv")
    assert submission.fname.tolist() == sample.fname.tolist()
    assert all(len(set(label.split())) == 3 for label in submission.label)

    assert inspect_oof.main(["1d", "2d", *where]) == 0
    out = capsys.readouterr().out
    assert "per fold:" in out and "unverified:" in out and "worst clips" in out
    for name in ("oof_confusion.png", "oof_per_class.png"):
        assert (paths.model_dir("blend_1d_2d") / name).stat().st_size > 1000
