"""The Kaggle bundle (src.tools.kaggle_kernel) as Kaggle runs it: tiny trained folds bundled, a stand-in
/kaggle tree (KAGGLE_ROOT) with the competition's data and the dataset mounted read-only, the generated
kernel run in a fresh virtual environment whose pip has no index, outside the checkout, the project coming
from the bundle's wheel alone (the packages of Kaggle's image stood in for by this environment's, seen
through a .pth file); its submission must be src.blend's for the same folds. And the metadata files
against the fields the kaggle CLI documents (Kaggle/kaggle-api docs/kernels_metadata.md and
docs/datasets_metadata.md)."""
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_folds, run_module, write_dataset

USER = "someone"

# kernels_metadata.md and datasets_metadata.md ("kaggle datasets create"): every field they document.
KERNEL_FIELDS = {"id", "id_no", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu",
                 "enable_internet", "dataset_sources", "competition_sources", "kernel_sources", "model_sources"}
DATASET_FIELDS = {"title", "subtitle", "description", "id", "id_no", "licenses", "resources", "keywords"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny folds of 1d on the conftest dataset, and their bundle."""
    tmp = tmp_path_factory.mktemp("kaggle")
    data = write_dataset(tmp / "data", per_class=4, n_test=5, bad_inputs=False)
    out = tmp / "out"
    run_folds("1d", "--", *TINY, "--data-dir", data, "--out-dir", out, check=True)
    made = run_module("src.tools.kaggle_kernel", "--models", "1d", "--user", USER, "--out-dir", out, check=True)
    return tmp, data, out, made.stdout


def mount(source, target):
    """A read-only copy, as Kaggle mounts an input."""
    shutil.copytree(source, target, symlinks=False)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def session(tmp, name, data, bundle):
    """A stand-in Kaggle session: KAGGLE_ROOT with the competition's files and the bundle's dataset under
    input/ (read-only), and a fresh virtual environment whose pip has no index and which sees this
    environment's packages (Kaggle's image) through a .pth file, but not the project."""
    root = tmp / name / "kaggle"
    competition = root / "input" / "freesound-audio-tagging"
    competition.mkdir(parents=True)
    for table in ("train.csv", "sample_submission.csv"):
        shutil.copy2(data / table, competition / table)
    for folder in ("audio_train", "audio_test"):
        (competition / folder).symlink_to(data / folder)
    dataset_id = json.loads((bundle / "dataset" / "dataset-metadata.json").read_text())["id"]
    mount(bundle / "dataset", root / "input" / dataset_id.split("/")[1])
    venv = tmp / name / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "kaggle-image.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp / name / "elsewhere"   # the kernel runs outside the checkout
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("PIP_")}
    env.update(KAGGLE_ROOT=str(root), PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, CUDA_VISIBLE_DEVICES="",
               NVIDIA_SMI="false", THREADS="1", CPU_JOBS="2", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")

    def python_run(*args):
        return subprocess.run([python, *map(str, args)], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=900)

    assert python_run("-c", "import src").returncode != 0     # the project is not there before the kernel runs
    return root, site, python_run


@pytest.mark.slow
@pytest.mark.readme("src.tools.kaggle_kernel --models --user")
def test_the_kernel_installs_the_bundle_offline_and_submits_what_blend_does(trained):
    tmp, data, out, printed = trained
    bundle = out / "submissions" / "kaggle"
    assert f"kaggle datasets create -p {bundle / 'dataset'}" in printed
    assert f"kaggle kernels push -p {bundle / 'kernel'}" in printed
    root, site, python = session(tmp, "predict", data, bundle)
    done = python(bundle / "kernel" / "kernel.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    where = python("-c", "import src; print(src.__file__)").stdout.strip()
    assert where == os.path.join(site, "src", "__init__.py")               # the bundle's wheel, installed here
    assert f"freesound-tagging from {os.path.join(site, 'src')}" in done.stdout + done.stderr
    # The submission: src.blend's for the same folds, row for row.
    submission = pd.read_csv(root / "working" / "submission.csv")
    run_module("src.blend", "1d", "--data-dir", data, "--out-dir", out, check=True)
    blended = pd.read_csv(out / "submissions" / "1d.csv")
    assert list(submission.columns) == ["fname", "label"] and len(submission) == 5
    pd.testing.assert_frame_equal(submission, blended)
    assert sorted(p.name for p in (root / "working").iterdir()) == ["submission.csv"]  # nothing else kept


@pytest.mark.slow
@pytest.mark.readme("src.tools.kaggle_kernel --models --user --train --epochs")
@pytest.mark.readme("src.tools.kaggle_kernel --models --user --train --resume-from")
def test_a_train_kernel_stops_at_its_time_limit_and_the_next_session_goes_on(trained):
    tmp, data, out, _ = trained
    kernel_id = f"{USER}/freesound-2018-train-1d"

    def bundle(name, *options):
        made = tmp / name / "bundle"
        run_module("src.tools.kaggle_kernel", "--models", "1d", "--user", USER, "--train", "--bundle-dir", made,
                   *options, "--", *TINY, check=True)
        return made

    first = bundle("first", "--time-limit-hours", "0.0005")                # 1.8 s: stopped while preparing
    root, _, python = session(tmp, "first", data, first)
    done = python(first / "kernel" / "kernel.py")
    assert done.returncode == 0 and "Stopped at the time limit" in done.stdout, done.stdout + done.stderr[-3000:]
    assert not (root / "working" / "submission.csv").exists() and (root / "working" / "run").is_dir()
    # The next session, with an earlier session's output attached as the kernel's input: here the output of
    # one that finished both folds (the fixture's run, laid out as the kernel leaves it). They are kept, not
    # retrained, and blended as src.blend blends them.
    second = bundle("second", "--resume-from", kernel_id)
    assert json.loads((second / "kernel" / "kernel-metadata.json").read_text())["kernel_sources"] == [kernel_id]
    root, _, python = session(tmp, "second", data, second)
    earlier = tmp / "second" / "earlier-output"
    shutil.copytree(out / "predictions", earlier / "run" / "predictions", ignore=shutil.ignore_patterns("logs"))
    shutil.copy2(data / "folds.csv", earlier / "run" / "folds.csv")
    mount(earlier, root / "input" / kernel_id.split("/")[1])
    done = python(second / "kernel" / "kernel.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming from" in done.stderr
    run_dir = root / "working" / "run"
    for k in (0, 1):
        kept = run_dir / "predictions" / "1d" / f"fold{k}" / "result.json"
        assert kept.read_bytes() == (out / "predictions" / "1d" / f"fold{k}" / "result.json").read_bytes()
    assert (run_dir / "folds.csv").read_bytes() == (data / "folds.csv").read_bytes()
    submission = pd.read_csv(root / "working" / "submission.csv")
    run_module("src.blend", "1d", "--data-dir", data, "--out-dir", out, check=True)
    pd.testing.assert_frame_equal(submission, pd.read_csv(out / "submissions" / "1d.csv"))


@pytest.mark.slow
def test_the_metadata_files_hold_the_fields_the_kaggle_cli_documents(trained, tmp_path):
    from kaggle.api.kaggle_api_extended import KaggleApi
    from slugify import slugify  # what the kaggle CLI checks a title against

    tmp, data, out, _ = trained
    api = KaggleApi()
    bundles = {"predict": out / "submissions" / "kaggle"}
    run_module("src.tools.kaggle_kernel", "--models", "1d", "--user", USER, "--out-dir", out, "--train",
               "--competition", "freesound-audio-tagging-2019", "--notebook", "--public", "--no-gpu", "--resume-from",
               f"{USER}/freesound-2019-train-1d", "--bundle-dir", tmp_path / "train", "--", "--epochs", "3", check=True)
    bundles["train"] = tmp_path / "train"
    for kind, bundle in bundles.items():
        dataset = json.loads((bundle / "dataset" / "dataset-metadata.json").read_text())
        assert set(dataset) <= DATASET_FIELDS and {"title", "id", "licenses"} <= set(dataset)
        owner, name = dataset["id"].split("/")
        assert owner == USER and 3 <= len(name) <= 50 and 6 <= len(dataset["title"]) <= 50
        assert len(dataset["licenses"]) == 1 and set(dataset["licenses"][0]) == {"name"}
        api.validate_dataset_string(dataset["id"])
        kernel = json.loads((bundle / "kernel" / "kernel-metadata.json").read_text())
        assert set(kernel) <= KERNEL_FIELDS
        assert kernel["id"] == f"{USER}/{slugify(kernel['title'])}" and 5 <= len(kernel["title"])
        assert (bundle / "kernel" / kernel["code_file"]).is_file()
        assert kernel["language"] == "python" and kernel["enable_internet"] == "false"
        assert kernel["dataset_sources"] == [dataset["id"]]
        for source in kernel["kernel_sources"]:
            api.validate_kernel_string(source)
        if kind == "predict":
            assert (kernel["kernel_type"], kernel["is_private"], kernel["enable_gpu"]) == ("script", "true", "true")
            assert kernel["competition_sources"] == ["freesound-audio-tagging"] and kernel["kernel_sources"] == []
            files = sorted(p.name for p in (bundle / "dataset").iterdir())
            assert [f for f in files if f.startswith("1d.")] == [f"1d.fold{k}.{n}" for k in (0, 1)
                                                                 for n in ("best.keras", "config.json", "result.json")]
        else:
            assert (kernel["kernel_type"], kernel["is_private"], kernel["enable_gpu"]) == ("notebook", "false", "false")
            assert kernel["competition_sources"] == ["freesound-audio-tagging-2019"]
            assert kernel["kernel_sources"] == [f"{USER}/freesound-2019-train-1d"]
            notebook = json.loads((bundle / "kernel" / "kernel.ipynb").read_text())
            code = "".join(notebook["cells"][1]["source"])
            assert notebook["nbformat"] == 4 and "pip\", \"install\", \"--no-index\", \"--no-deps\"" in code
            assert (bundle / "dataset" / "run_folds.sh").is_file()
            description = json.loads((bundle / "dataset" / "freesound-bundle.json").read_text())
            assert description["train"] and description["train_options"] == ["--epochs", "3"]
            assert not [p for p in (bundle / "dataset").iterdir() if p.name.startswith("1d.")]
        assert len(list((bundle / "dataset").glob("freesound_tagging-*-py3-none-any.whl"))) == 1


@pytest.mark.slow
@pytest.mark.readme("src.tools.kaggle_kernel --models --user --push")
def test_push_without_credentials_says_so(trained, tmp_path):
    _, _, out, _ = trained
    env = {k: None for k in os.environ if k.startswith("KAGGLE_")}
    env.update(HOME=str(tmp_path), KAGGLE_CONFIG_DIR=str(tmp_path / "none"))
    done = run_module("src.tools.kaggle_kernel", "--models", "1d", "--user", USER, "--out-dir", out, "--bundle-dir",
                      tmp_path / "bundle", "--push", env=env, timeout=600)
    assert done.returncode == 2 and "finds no credentials" in done.stderr, done.stdout + done.stderr
    assert "kaggle kernels push -p" in done.stdout and (tmp_path / "bundle" / "kernel" / "kernel.py").is_file()


def test_the_2019_data_becomes_the_multilabel_layout_and_its_submission_form(tmp_path):
    from src.tools.kaggle_kernel import competition_data, competition_folder, write_competition_submission

    root = tmp_path / "kaggle"
    source = root / "input" / "freesound-audio-tagging-2019"
    for folder in ("train_curated", "train_noisy", "test"):
        (source / folder).mkdir(parents=True)
    labels = ["Bark", "Meow", "Purr"]
    pd.DataFrame({"fname": ["a.wav", "b.wav"], "labels": ["Bark,Meow", "Purr"]}).to_csv(source / "train_curated.csv",
                                                                                       index=False)
    pd.DataFrame({"fname": ["n.wav"], "labels": ["Meow"]}).to_csv(source / "train_noisy.csv", index=False)
    pd.DataFrame({"fname": ["t1.wav", "t2.wav"], **{label: 0.0 for label in labels}}).to_csv(
        source / "sample_submission.csv", index=False)
    found = competition_folder(root, "freesound-audio-tagging-2019")
    data = competition_data(found, "freesound-audio-tagging-2019", tmp_path / "data")
    from src.dataset.tables import Dataset
    from src.dataset.task import MULTI_LABEL

    dataset = Dataset.load(data)
    assert dataset.task is MULTI_LABEL and dataset.labels == labels and dataset.submission_columns == labels
    path = write_competition_submission(tmp_path / "submission.csv", np.array([[0.1, 0.8, 0.3], [0.5, 0.2, 0.9]]),
                                        dataset)
    written = pd.read_csv(path)
    assert list(written.columns) == ["fname", *labels] and list(written.fname) == ["t1.wav", "t2.wav"]
    with pytest.raises(Exception, match="not under"):
        competition_folder(tmp_path / "empty", "freesound-audio-tagging")
