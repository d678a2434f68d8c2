"""Every command the README shows is run by a test, which says so with a marker:
`@pytest.mark.readme("src.blend --kaggle-form")` (the program, then the flags the README gives it). A
command added to the README without a marked test fails this file, and so does a marker naming a command
the README no longer shows, or a README whose install and test lines are not the ones CI runs (.ci/run)."""
import ast
import importlib.util
import os
import re
import shutil

import pytest
from conftest import ROOT, TINY, run_folds, run_module, write_dataset

COMMAND = re.compile(r"(python3? -m (src(?:\.\w+)*)|\./run_folds\.sh)([^`\n#&]*)")
FLAG = re.compile(r"(?<!\S)(--[\w-]+)")


def readme_commands() -> set:
    """(program, sorted flags) of every `python -m src...` and `./run_folds.sh` command in the README."""
    text = (ROOT / "README.md").read_text()
    return {(match.group(2) or "run_folds.sh", tuple(sorted(set(FLAG.findall(match.group(3))))))
            for match in COMMAND.finditer(text)}


def command_of(marked: str) -> tuple:
    """(program, sorted flags) of a readme marker's command: the program first (src.blend, run_folds.sh,
    or as the README writes it, `python -m src.blend` or `./run_folds.sh`), then its arguments."""
    words = marked.split()
    if words[:2] in (["python", "-m"], ["python3", "-m"]):
        words = words[2:]
    program = words[0].removeprefix("./") if words else ""
    return program, tuple(sorted(set(FLAG.findall(" ".join(words[1:])))))


def readme_marks(paths) -> tuple[dict, list]:
    """The readme markers in these test files: {(program, flags): [file::test, ...]}, and the markers that
    are not on a test (a fixture, a helper, a class, a variable), which count for nothing."""
    marked, misplaced = {}, []
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        on_tests = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.readme":
                        on_tests.add(id(decorator.func))
                        assert len(decorator.args) == 1 and isinstance(decorator.args[0], ast.Constant), \
                            f"{path.name}:{decorator.lineno}: readme takes one command, a string literal"
                        key = command_of(decorator.args[0].value)
                        marked.setdefault(key, []).append(f"{path.name}::{node.name}")
        misplaced += [f"{path.name}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and ast.unparse(node) == "pytest.mark.readme"
                      and id(node) not in on_tests]
    return marked, misplaced


@pytest.mark.readme("src")
def test_the_pipeline_listing():
    out = run_module("src", check=True).stdout
    assert "1. python -m src.data" in out and "python -m src.tools.demo" in out


def test_every_readme_command_has_a_marked_test_that_runs_it():
    marked, misplaced = readme_marks(sorted((ROOT / "tests").glob("test_*.py")))
    assert misplaced == [], f"readme markers on something other than a test function: {misplaced}"
    shown = readme_commands()
    unmarked = sorted(shown - set(marked))
    assert unmarked == [], "README commands no test is marked as running (add @pytest.mark.readme(\"PROGRAM " \
        f"--flag ...\") to the test that runs each): {unmarked}"
    stale = {command: tests for command, tests in marked.items() if command not in shown}
    assert stale == {}, f"tests marked as running commands the README does not show: {stale}"


def test_the_marker_reader_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\n"
        "@pytest.mark.readme('python -m src.blend 1d 2d --weights 1 2')\n"
        "@pytest.mark.readme('./run_folds.sh 2d -- --epochs 30 --learning-rate 5e-4')\n"
        "def test_a():\n    pass\n"
        "@pytest.mark.readme('src.tools.bench')\n"
        "@pytest.fixture\n"
        "def not_a_test():\n    pass\n"
        "readme = pytest.mark.readme('src.export')\n")
    marked, misplaced = readme_marks([sample])
    assert marked == {("src.blend", ("--weights",)): ["test_sample.py::test_a"],
                      ("run_folds.sh", ("--epochs", "--learning-rate")): ["test_sample.py::test_a"]}
    assert misplaced == ["test_sample.py:6", "test_sample.py:10"]
    assert command_of("src.tools.cluster tcp://H:8786 --model 2d --copy-back") == \
        ("src.tools.cluster", ("--copy-back", "--model"))


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's workflow on a tiny dataset: features, some folds with preset overrides, a bfloat16 run."""
    tmp = tmp_path_factory.mktemp("readme")
    data = write_dataset(tmp / "data", per_class=4, n_test=3, bad_inputs=False)
    where = ["--data-dir", data, "--out-dir", tmp / "out"]
    out = {"features": run_module("src.features", "--model", "2d", "--data-dir", data, check=True).stdout,
           "2d": run_folds("2d", "0", "1", "--", *TINY, "--learning-rate", "5e-4", *where, check=True).stdout,
           "bfloat16": run_folds("logmel", "--", *TINY, "--min-crop-seconds", "0.5", "--precision", "bfloat16",
                                 *where, check=True).stdout,
           "blend": run_module("src.blend", "2d", "logmel", "--weights", "1", "2", *where, check=True).stdout}
    return tmp, out


@pytest.mark.slow
@pytest.mark.readme("src.features --model")
@pytest.mark.readme("run_folds.sh --epochs --learning-rate")
@pytest.mark.readme("run_folds.sh --precision")
@pytest.mark.readme("src.blend --weights")
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


@pytest.mark.slow
@pytest.mark.readme("src.tools.demo")
def test_the_demo_at_tiny_scale(tmp_path):
    """Run on a copy of data/demo holding what an older demo left there (3 folds, a cache): the demo asks
    for 2 folds, works on its own copy under the run folder and leaves the data as it found it."""
    data = copy_of_the_demo_data(tmp_path / "demo")
    stray_leftovers(data)
    before = listing(data)
    out = run_module("src.tools.demo", "--data-dir", data, "--out-dir", tmp_path / "runs", "--models", "1d", "aisfx",
                     "--folds", "2", "--epochs", "1", "--aisfx-epochs", "1", check=True).stdout
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


@pytest.mark.slow
@pytest.mark.readme("src.tools.demo --multilabel")
def test_the_multilabel_demo_at_tiny_scale(tmp_path):
    out = run_module("src.tools.demo", "--multilabel", "--out-dir", tmp_path / "runs", "--models", "1d", "--folds", "2",
                     "--epochs", "1", check=True).stdout
    assert "multi-label mixtures" in out and "OOF lwlrap" in out and "demo finished in" in out
    import pandas as pd

    mixed = pd.read_csv(tmp_path / "runs" / "data" / "train.csv")
    pairs = mixed.labels.str.contains(",")
    assert len(mixed) == 80 and 0.3 < pairs.mean() < 0.7       # about half the clips are mixtures of two labels
    assert (tmp_path / "runs" / "submissions" / "1d.csv").read_text().startswith("fname,")
