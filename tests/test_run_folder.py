"""A model's run folder read as a whole (src.training.run_folder): the folds it should have are its
dataset's, on datasets that bring their own folds (ESC-50's five, FSD50K's one) trained with
./run_folds.sh at tiny scale; predict and export go by the fold ids training recorded where the dataset is
not at hand; and every command a refusal suggests is run here and does what it says."""
import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import ROOT, command_env, fake_fold, run_folds, tiny, write_dataset

from src import blend, export, predict, train
from src.base.config import PRESETS
from src.base.errors import DataError
from src.base.layout import Paths
from src.tools import adapters
from src.training.fold_files import fold_files
from src.training.run_folder import ModelRun, run_folds_command

TINY = tiny(n_folds=None)   # the dataset brings its folds


def wav(path, seconds=0.5, rate=44100, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate)), rate)


def suggested(message: str) -> str:
    """The one ./run_folds.sh command a refusal names (between backticks)."""
    commands = re.findall(r"`([^`]*run_folds\.sh[^`]*)`", message)
    assert len(commands) == 1, message
    return commands[0]


def run_suggested(command: str):
    """A suggested command run as the user would paste it, from the folder the message was made in."""
    done = subprocess.run(command, shell=True, cwd=os.getcwd(), capture_output=True, text=True, timeout=900,
                          env=command_env())
    assert done.returncode == 0, command + "\n" + done.stdout + done.stderr
    return done.stdout


def esc50(tmp_path) -> Path:
    """An ESC-50 tree (meta/esc50.csv, audio/): 5 predefined folds of 3 clips, 2 classes."""
    source = tmp_path / "ESC-50"
    rows = []
    for i in range(15):
        name = f"{i % 5 + 1}-{1000 + i}-A-0.wav"
        wav(source / "audio" / name, seed=i)
        rows.append({"filename": name, "fold": i % 5 + 1, "target": i % 2, "category": ["dog", "rain"][i % 2],
                     "esc10": True, "src_file": 1000 + i, "take": "A"})
    (source / "meta").mkdir()
    pd.DataFrame(rows).to_csv(source / "meta" / "esc50.csv", index=False)
    assert adapters.main(["esc50", str(source), str(tmp_path / "esc50")]) == 0
    return tmp_path / "esc50"


def fsd50k(tmp_path) -> Path:
    """An FSD50K tree: its dev split (train rows: fold -1, always training; val rows: fold 0) and eval set."""
    source = tmp_path / "FSD50K"
    labels = ["Music,Guitar", "Speech", "Music", "Speech,Music", "Guitar", "Speech", "Music,Speech", "Guitar"]
    dev = pd.DataFrame({"fname": range(101, 109), "labels": labels, "mids": "/m/x",
                        "split": ["train"] * 5 + ["val"] * 3})
    evaluation = pd.DataFrame({"fname": [201, 202], "labels": ["Speech", "Guitar,Music"], "mids": "/m/x"})
    (source / "FSD50K.ground_truth").mkdir(parents=True)
    dev.to_csv(source / "FSD50K.ground_truth" / "dev.csv", index=False)
    evaluation.to_csv(source / "FSD50K.ground_truth" / "eval.csv", index=False)
    for i in dev.fname:
        wav(source / "FSD50K.dev_audio" / f"{i}.wav", seed=i)
    for i in evaluation.fname:
        wav(source / "FSD50K.eval_audio" / f"{i}.wav", seed=i)
    assert adapters.main(["fsd50k", str(source), str(tmp_path / "fsd50k")]) == 0
    return tmp_path / "fsd50k"


@pytest.mark.slow
@pytest.mark.readme("src.blend --data-dir")
def test_esc50_folds_are_the_datasets_for_predict_and_export_and_each_hint_works(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="a SavedModel needs TensorFlow")
    data, out = esc50(tmp_path), tmp_path / "out"
    run_folds("1d", "--", *TINY, "--data-dir", data, "--out-dir", out, check=True)   # config.n_folds stays 10
    paths = Paths(data, out)
    assert json.loads(fold_files(paths, "1d", 0).result.read_text())["dataset_folds"] == [0, 1, 2, 3, 4]
    clips = [str(data / "audio_train" / f) for f in pd.read_csv(data / "train.csv").fname[:2]]
    elsewhere = ["--data-dir", str(tmp_path / "not-here"), "--out-dir", str(out)]   # the dataset not at hand
    here = ["--data-dir", str(data), "--out-dir", str(out)]
    for where in (elsewhere, here):
        assert predict.main([*clips, "--models", "1d", "--csv", str(tmp_path / "t.csv"), *where]) == 0, \
            capsys.readouterr().err
        assert len(pd.read_csv(tmp_path / "t.csv")) == 2
    assert export.main(["1d", *elsewhere]) == 0
    assert json.loads((out / "exported" / "1d" / "config.json").read_text())["fold_ids"] == [0, 1, 2, 3, 4]

    # A fold of the five missing: export names both ways past it, and each works.
    fold_files(paths, "1d", 3).result.unlink()
    capsys.readouterr()
    assert export.main(["1d", *elsewhere]) == 2
    err = capsys.readouterr().err
    assert "fold(s) 3 of 5 are not finished" in err and "4 of its 5 folds are finished" in err, err
    assert "--allow-partial" in err
    assert export.main(["1d", *elsewhere, "--allow-partial"]) == 0
    assert json.loads((out / "exported" / "1d" / "config.json").read_text())["fold_ids"] == [0, 1, 2, 4]
    assert predict.main([*clips, "--models", "1d", *elsewhere]) == 2
    assert "with --data-dir naming the dataset the folds were trained on" in capsys.readouterr().err
    assert predict.main([*clips, "--models", "1d", *here]) == 2
    command = suggested(capsys.readouterr().err)
    assert " 1d 3 -- " in command and "--force" not in command
    run_suggested(command)                                           # trains fold 3, and only it
    assert fold_files(paths, "1d", 3).is_finished()
    assert predict.main([*clips, "--models", "1d", *elsewhere]) == 0
    assert blend.main(["1d", "--data-dir", str(data), "--out-dir", str(out)]) == 0


@pytest.mark.slow
def test_fsd50k_one_fold_and_the_retrain_hint_of_a_name_variant(tmp_path, capsys):
    pytest.importorskip("tensorflow", reason="a SavedModel needs TensorFlow")
    data, out = fsd50k(tmp_path), tmp_path / "out"
    # A seed variant in its own folder: `./run_folds.sh 1d 0 -- --name 1d_s7 --seed 7`.
    run_folds("1d", "0", "--", "--name", "1d_s7", "--seed", "7", *TINY, "--data-dir", data, "--out-dir", out,
              check=True)
    paths = Paths(data, out)
    assert json.loads(fold_files(paths, "1d_s7", 0).result.read_text())["dataset_folds"] == [0]
    clip = str(data / "audio_test" / "201.wav")
    elsewhere = ["--data-dir", str(tmp_path / "not-here"), "--out-dir", str(out)]
    here = ["--data-dir", str(data), "--out-dir", str(out)]
    for where in (elsewhere, here):
        assert predict.main([clip, "--models", "1d_s7", "--json", str(tmp_path / "t.json"), *where]) == 0, \
            capsys.readouterr().err
        assert "probabilities" in json.loads((tmp_path / "t.json").read_text())["files"][0]   # multi-label
    assert export.main(["1d_s7", *here]) == 0

    # train.csv relabelled: the fold is stale; predict and export refuse it as blend does, with a retrain
    # command that works for a --name variant (the preset from config.json, the run's options).
    table = pd.read_csv(data / "train.csv")
    table.loc[5, "labels"] = "Guitar,Speech"
    table.to_csv(data / "train.csv", index=False)
    capsys.readouterr()
    assert blend.main(["1d_s7", *here]) == 2
    from_blend = suggested(capsys.readouterr().err)
    assert export.main(["1d_s7", *here]) == 2
    assert "trained on other rows" in capsys.readouterr().err
    assert predict.main([clip, "--models", "1d_s7", *here]) == 2
    err = capsys.readouterr().err
    assert "trained on other rows" in err and "--allow-mismatch" in err
    command = suggested(err)
    assert command == from_blend
    assert re.search(r"run_folds\.sh 1d 0 -- --name 1d_s7 .*--seed 7 .*--force", command), command
    assert predict.main([clip, "--models", "1d_s7", *here, "--allow-mismatch"]) == 0
    run_suggested(command)
    assert predict.main([clip, "--models", "1d_s7", *here]) == 0
    assert blend.main(["1d_s7", *here]) == 0


def test_expected_folds_come_from_the_dataset_then_the_record_then_n_folds(tmp_path):
    paths = Paths(tmp_path / "nowhere", tmp_path / "out")
    three = dataclasses.replace(PRESETS["1d"], n_folds=3)
    fake_fold(paths, "1d", 0, {}, config=three)                        # from before dataset_folds was recorded
    assert ModelRun(paths, "1d").expected()[0] == [0, 1, 2]
    assert ModelRun(paths, "1d").missing() == [1, 2]
    fake_fold(paths, "1d", 1, {"dataset_folds": [0, 1]}, config=three)
    run = ModelRun(paths, "1d")
    assert run.expected()[0] == [0, 1] and run.require_complete() == [0, 1]
    fake_fold(paths, "1d", 7, {"dataset_folds": [0, 1]}, config=three)  # a fold left from another folding
    assert ModelRun(paths, "1d").require_complete() == [0, 1]


def test_run_folds_command_carries_the_preset_name_and_options(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = dataclasses.replace(PRESETS["logmel"], name="logmel_s7", seed=7, patience=None, epochs=3,
                                 mixup=0.0)
    command = run_folds_command(config, Paths("d a", "o"), "logmel_s7", [2], force=True)
    assert command == ("./run_folds.sh logmel 2 -- --name logmel_s7 --epochs 3 --seed 7 --mixup 0.0 --force "
                       "--data-dir 'd a' --out-dir o")
    monkeypatch.chdir(tmp_path)
    assert run_folds_command(PRESETS["1d"], Paths(), "1d").startswith(f"{ROOT / 'run_folds.sh'} 1d -- ")


def test_no_finished_fold_is_named_with_the_command_that_trains_it(tmp_path):
    paths = Paths(tmp_path / "nowhere", tmp_path / "out")
    fold_files(paths, "2d_big", 0).start(dataclasses.replace(PRESETS["2d"], name="2d_big", epochs=9))
    with pytest.raises(DataError, match=r"no finished folds.*run_folds\.sh 2d -- --name 2d_big --epochs 9 "):
        ModelRun(paths, "2d_big").require_complete()


@pytest.mark.readme("src.train --model --prepare")
def test_seed_with_existing_folds_csv_is_said(tmp_path, caplog):
    data = write_dataset(tmp_path / "data", per_class=3, n_test=1, bad_inputs=False)
    options = ["--model", "1d", "--prepare", "--n-folds", "2", "--data-dir", str(data)]
    assert train.main(options) == 0
    before = (data / "folds.csv").read_bytes()
    caplog.clear()
    assert train.main([*options, "--seed", "7"]) == 0
    assert (data / "folds.csv").read_bytes() == before                   # the split is kept...
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "--seed 7" in said and "folds.csv" in said and "delete" in said  # ...and that is said
