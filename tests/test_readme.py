"""Every command the README shows is run by a test: the ones below run here at tiny scale, the others in
the test file README_COMMANDS names. A command added to the README without a test fails this file, and
so does a README whose install and test lines are not the ones CI runs (.ci/run)."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, write_dataset

TINY = ["--n-folds", "2", "--epochs", "1", "--batch-size", "8", "--crop-seconds", "0.5"]

# (program, flags) as the README writes them -> the test file that runs that command.
README_COMMANDS = {
    ("src", ()): "test_readme.py",
    ("src.data", ()): "test_data.py",
    ("src.data", ("--download",)): "test_data.py",
    ("src.data", ("--download", "--source")): "test_zenodo.py",
    ("src.audio_cache", ("--rates",)): "test_bad_inputs.py",
    ("src.features", ("--model",)): "test_readme.py",
    ("src.train", ("--fold",)): "test_resume.py",
    ("src.train", ("--fold", "--model")): "test_resume.py",
    ("src.train", ("--model", "--prepare")): "test_pretrained.py",
    ("run_folds.sh", ()): "test_run_folds.py",
    ("run_folds.sh", ("--epochs", "--learning-rate")): "test_readme.py",
    ("run_folds.sh", ("--precision",)): "test_readme.py",
    ("run_folds.sh", ("--data-dir",)): "test_adapters.py",
    ("run_folds.sh", ("--clean-labels", "--name")): "test_label_cleaning.py",
    ("run_folds.sh", ("--cluster",)): "test_cluster.py",
    ("run_folds.sh", ("--cluster", "--n-folds")): "test_cluster.py",
    ("src.blend", ()): "test_blend.py",
    ("src.blend", ("--data-dir",)): "test_adapters.py",
    ("src.blend", ("--weights",)): "test_readme.py",
    ("src.blend", ("--kaggle-form",)): "test_real_files.py",
    ("src.blend", ("--fit-weights",)): "test_blend.py",
    ("src.blend", ("--search",)): "test_blend.py",
    ("src.blend", ("--stack",)): "test_blend.py",
    ("src.inspect_oof", ()): "test_run_folds.py",
    ("src.predict", ()): "test_predict.py",
    ("src.predict", ("--csv", "--json")): "test_predict.py",
    ("src.predict", ("--per-window",)): "test_predict.py",
    ("src.export", ()): "test_export.py",
    ("src.tools.explore", ("--data-dir",)): "test_explore.py",
    ("src.tools.adapters", ()): "test_adapters.py",
    ("src.tools.cluster", ("--copy-back", "--model")): "test_cluster.py",
    ("src.tools.cluster", ("--model", "--tls-ca-file", "--tls-cert")): "test_cluster.py",
    ("src.tools.bench", ()): "test_bench.py",
    ("src.tools.bench", ("--models",)): "test_bench.py",
    ("src.tools.bench", ("--repeat",)): "test_bench.py",
    ("src.tools.bench", ("--full-run",)): "test_bench.py",
    ("src.tools.demo", ()): "test_readme.py",
    ("src.tools.demo", ("--multilabel",)): "test_readme.py",
    ("src.tools.kaggle_kernel", ("--models", "--user")): "test_kaggle_kernel.py",
    ("src.tools.kaggle_kernel", ("--models", "--push", "--user")): "test_kaggle_kernel.py",
    ("src.tools.kaggle_kernel", ("--epochs", "--models", "--train", "--user")): "test_kaggle_kernel.py",
    ("src.tools.kaggle_kernel", ("--models", "--resume-from", "--train", "--user")): "test_kaggle_kernel.py",
    ("src.tools.rehearsal", ("--scale",)): "test_rehearsal.py",
}


def readme_commands() -> set:
    """(program, sorted flags) of every `python -m src...` and `./run_folds.sh` command in the README."""
    text = (ROOT / "README.md").read_text()
    found = set()
    for match in re.finditer(r"(python3? -m (src(?:\.\w+)*)|\./run_folds\.sh)([^`\n#&]*)", text):
        flags = tuple(sorted(set(re.findall(r"(?<!\S)(--[\w-]+)", match.group(3)))))
        found.add((match.group(2) or "run_folds.sh", flags))
    return found


def test_every_readme_command_has_a_test_that_runs_it():
    assert readme_commands() == set(README_COMMANDS)
    for (program, flags), test_file in README_COMMANDS.items():
        text = (ROOT / "tests" / test_file).read_text()
        name = program.split(".")[-1]
        assert name in text and all(f'"{flag}"' in text or flag[2:].replace("-", "_") in text for flag in flags), \
            f"{test_file} does not run {program} {' '.join(flags)}"


def test_ci_runs_the_readme_quick_start_lines_as_written_and_in_order():
    """.ci/run runs the Quick start's lines (install, demo, tests) as the README writes them, one after the
    other: the tests then see what the demo leaves in the checkout, as a new user's do."""
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    block = readme.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    quick_start = [line.split("  #")[0].strip() for line in block if line.strip()]
    assert quick_start[0].startswith("python3 -m pip install") and quick_start[1:] == [
        "python3 -m src.tools.demo", "python3 -m pytest -q"], quick_start
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert quick_start[0] in commands, ".ci/run lacks the README's install line"
    start = commands.index(quick_start[0])
    assert commands[start:start + len(quick_start)] == quick_start, \
        f".ci/run does not run the Quick start's lines in order: {commands[start:start + len(quick_start)]}"


def run(*command, env=None):
    done = subprocess.run(list(map(str, command)), cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHON=sys.executable, THREADS="1", CPU_JOBS="2", NVIDIA_SMI="false",
                                   **(env or {})))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's workflow on a tiny dataset: features, some folds with preset overrides, a bfloat16 run."""
    tmp = tmp_path_factory.mktemp("readme")
    data = write_dataset(tmp / "data", per_class=4, n_test=3, bad_inputs=False)
    where = ["--data-dir", data, "--out-dir", tmp / "out"]
    out = {"features": run(sys.executable, "-m", "src.features", "--model", "2d", "--data-dir", data),
           "2d": run("./run_folds.sh", "2d", "0", "1", "--", *TINY, "--learning-rate", "5e-4", *where),
           "bfloat16": run("./run_folds.sh", "logmel", "--", *TINY, "--min-crop-seconds", "0.5",
                           "--precision", "bfloat16", *where),
           "blend": run(sys.executable, "-m", "src.blend", "2d", "logmel", "--weights", "1", "2", *where)}
    return tmp, out


def test_the_pipeline_listing(tmp_path):
    out = run(sys.executable, "-m", "src")
    assert "1. python -m src.data" in out and "python -m src.tools.demo" in out


def test_the_readme_workflow_at_tiny_scale(trained):
    tmp, out = trained
    assert list((tmp / "data" / "cache").glob("mfcc-*/train/index.csv"))           # features built
    fold = tmp / "out" / "predictions" / "2d" / "fold0"
    assert '"learning_rate": 0.0005' in (fold / "config.json").read_text()         # the override, recorded
    assert '"precision": "bfloat16"' in (tmp / "out" / "predictions" / "logmel" / "fold1" / "config.json").read_text()
    assert "blend_2d_logmel" in out["blend"] and (tmp / "out" / "submissions" / "blend_2d_logmel.csv").exists()


def copy_of_the_demo_data(target):
    """data/demo's tables and audio only: never a folds.csv or cache/ that an older demo left there."""
    source = ROOT / "data" / "demo"
    target.mkdir(parents=True)
    for name in ("train.csv", "sample_submission.csv", "test_labels.csv"):
        shutil.copyfile(source / name, target / name)
    for folder in ("audio_train", "audio_test"):
        shutil.copytree(source / folder, target / folder)
    return target


def listing(folder):
    """Every path under `folder` with its size and modification time: what a write would change."""
    return sorted((str(path.relative_to(folder)), path.lstat().st_size, path.lstat().st_mtime_ns)
                  for path in folder.rglob("*"))


def stray_leftovers(data):
    """What an older demo left in data/demo: 3 folds (the demo's default) and a cache."""
    import pandas as pd

    train = pd.read_csv(data / "train.csv")
    pd.DataFrame({"fname": train.fname, "fold": [i % 3 for i in range(len(train))]}).to_csv(data / "folds.csv",
                                                                                          index=False)
    (data / "cache" / "audio-44100hz-stale" / "train").mkdir(parents=True)


def test_the_demo_works_on_a_copy_and_leaves_its_data_as_found(tmp_path):
    from src.tools.demo import demo_data

    source = copy_of_the_demo_data(tmp_path / "demo")
    before = listing(source)
    target = demo_data(source, tmp_path / "runs" / "data")
    assert listing(source) == before
    assert target == tmp_path / "runs" / "data"
    for name in ("train.csv", "sample_submission.csv", "test_labels.csv"):
        assert (target / name).read_bytes() == (source / name).read_bytes() and not (target / name).is_symlink()
    for folder in ("audio_train", "audio_test"):
        assert (target / folder).is_symlink() and (target / folder).resolve() == (source / folder).resolve()
        assert sorted(p.name for p in (target / folder).iterdir()) == sorted(os.listdir(source / folder))
    # A rerun reuses the working copy: what the stages wrote there stays; a changed table is copied again.
    (target / "folds.csv").write_text("fname,fold\n")
    (target / "cache").mkdir()
    (source / "sample_submission.csv").write_bytes((source / "sample_submission.csv").read_bytes() + b"\n")
    before = listing(source)
    assert demo_data(source, target) == target and listing(source) == before
    assert (target / "folds.csv").exists() and (target / "cache").is_dir()
    assert (target / "sample_submission.csv").read_bytes() == (source / "sample_submission.csv").read_bytes()


def test_the_demo_at_tiny_scale(tmp_path):
    """Run on a copy of data/demo holding what an older demo left there (3 folds, a cache): the demo asks
    for 2 folds, works on its own copy under the run folder and leaves the data as it found it."""
    data = copy_of_the_demo_data(tmp_path / "demo")
    stray_leftovers(data)
    before = listing(data)
    out = run(sys.executable, "-m", "src.tools.demo", "--data-dir", data, "--out-dir", tmp_path / "runs",
              "--models", "1d", "aisfx", "--folds", "2", "--epochs", "1", "--aisfx-epochs", "1")
    assert "demo finished in" in out and "audio cache" in out
    assert listing(data) == before
    import pandas as pd

    assert pd.read_csv(tmp_path / "runs" / "data" / "folds.csv").fold.nunique() == 2   # its own folds
    assert list((tmp_path / "runs" / "data" / "cache").glob("audio-*/train/index.csv"))
    if importlib.util.find_spec("aisfx") is None:                  # without the weights: the others, and a note
        assert "leaving out aisfx" in out and (tmp_path / "runs" / "submissions" / "1d.csv").exists()
    else:
        assert "aisfx (2 folds, 1 epochs)" in out
        assert (tmp_path / "runs" / "submissions" / "blend_1d_aisfx.csv").exists()


def test_the_multilabel_demo_at_tiny_scale(tmp_path):
    out = run(sys.executable, "-m", "src.tools.demo", "--multilabel", "--out-dir", tmp_path / "runs",
              "--models", "1d", "--folds", "2", "--epochs", "1")
    assert "multi-label mixtures" in out and "OOF lwlrap" in out and "demo finished in" in out
    import pandas as pd

    mixed = pd.read_csv(tmp_path / "runs" / "data" / "train.csv")
    pairs = mixed.labels.str.contains(",")
    assert len(mixed) == 80 and 0.3 < pairs.mean() < 0.7       # about half the clips are mixtures of two labels
    assert (tmp_path / "runs" / "submissions" / "1d.csv").read_text().startswith("fname,")
