"""Every stage answers --help without doing any work."""
import pytest
from conftest import ROOT, run_folds, run_module

from src.__main__ import STAGES, TOOLS

COMMANDS = [f"src.{stage}" for stage in STAGES] + [f"src.tools.{tool}" for tool in TOOLS]


def test_every_module_of_the_tree_is_a_listed_command_or_library():
    listed = {f"{name}.py" for name in [*STAGES, "__init__", "__main__"]}
    assert {p.name for p in (ROOT / "src").glob("*.py")} == listed
    assert {p.stem for p in (ROOT / "src" / "tools").glob("*.py")} == {*TOOLS, "__init__", "whole_runs"}


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    done = run_module(command, "--help", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {command}")


def test_run_folds_help_and_bad_usage():
    done = run_folds("--help", timeout=120)
    assert done.returncode == 0 and "usage: ./run_folds.sh MODEL" in done.stdout
    done = run_folds(timeout=120)
    assert done.returncode != 0 and "usage" in done.stdout


def test_train_help_lists_the_preset_overrides():
    done = run_module("src.train", "--help", timeout=120)
    assert "--crop-seconds CROP_SECONDS" in done.stdout and "length of each training" in done.stdout
    for group in ("input and network", "training", "augmentation", "validation and test prediction", "feeding"):
        assert group in done.stdout                         # flags grouped by concern
    assert "--patience PATIENCE" in done.stdout and "none = no early stopping" in done.stdout


def test_a_named_variant_keeps_the_preset_and_gets_its_own_folder():
    from src.base.config import config_from_args
    from src.base.layout import Paths
    from src.train import train_parser

    args = train_parser().parse_args(["--model", "logmel", "--name", "logmel44", "--sample-rate", "44100",
                                      "--prepare"])
    config = config_from_args(args)
    assert (config.name, config.network, config.sample_rate) == ("logmel44", "logmel_cnn", 44100)
    assert Paths().model_dir(config.name).name == "logmel44" and config.preset == "logmel"
    assert config_from_args(train_parser().parse_args(["--model", "1d", "--patience", "none", "--prepare"])).patience \
        is None
