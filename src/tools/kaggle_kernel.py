"""Kaggle Notebooks: trained folds as a Kaggle dataset and a kernel that submits with them, offline. One
command writes the dataset (the project as a wheel, the chosen fold models) and a kernel that installs it
without network, reads the competition's data where Kaggle mounts it, predicts every test clip with the folds
and writes /kaggle/working/submission.csv; with --train, a kernel that first trains the folds on the
notebook's GPUs with run_folds.sh.

    python -m src.tools.kaggle_kernel --models logmel aisfx --user USER             # folds from ./predictions
    python -m src.tools.kaggle_kernel --models logmel --user USER --out-dir runs/x --push
    python -m src.tools.kaggle_kernel --models logmel aisfx --user USER --train -- --epochs 40
    python -m src.tools.kaggle_kernel --models logmel aisfx --user USER --train --resume-from USER/KERNEL

Run it from the repository root (the wheel is built from pyproject.toml there). It writes BUNDLE_DIR
(default OUT_DIR/submissions/kaggle): dataset/ (dataset-metadata.json, freesound-bundle.json, the project's wheel,
each fold's best.keras, config.json and result.json as flat files, the aisfx wheel when training aisfx,
run_folds.sh when training) and kernel/ (kernel-metadata.json and kernel.py, or kernel.ipynb with
--notebook), then prints the kaggle commands that upload them; --push runs them when the kaggle CLI has
credentials. The kernel predicts as src.predict and the folds' own test predictions do (windows covering
each whole clip, or the first crop, as the preset says), blends as src.blend does (geometric mean per model
over its folds, then across models) and validates the submission as src.blend does: top 3 labels per clip
for 2018, a probability column per label for 2019 (the competition follows from the folds: multi-label
folds are 2019's). KAGGLE_ROOT (default /kaggle) moves the tree the kernel reads and writes.

A --train kernel trains one fold per GPU (FOLDS_PER_GPU=1) into /kaggle/working/run and stops itself
before --time-limit-hours, keeping finished folds and each unfinished fold's last saved epoch; push it again
with --resume-from USER/KERNEL (the kernel's own slug: its last output is attached as input) and the next
session copies that run back and goes on from there. When every fold is done it blends with src.blend.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from ..base import backend, cli
from ..base.config import PRESETS
from ..base.errors import CommandError, DataError, SetupError, UsageError
from ..base.files import atomic_folder
from ..base.layout import Paths, audio_dir, table_path
from ..base.networks import NETWORKS
from ..blend import main as blend_main
from ..blend import write_submission
from ..dataset import archives
from ..dataset.inputs import model_input
from ..dataset.tables import Dataset
from ..dataset.task import MULTI_LABEL, SINGLE_LABEL
from ..training.fold_files import finished_folds, fold_files
from ..training.run_folder import ModelRun, dataset_at_hand
from ..training.trained import load_fold_model
from .adapters import fsdkaggle2019

log = logging.getLogger(__name__)

COMPETITIONS = {"freesound-audio-tagging": 2018, "freesound-audio-tagging-2019": 2019}
COMPETITION_OF = {SINGLE_LABEL.NAME: "freesound-audio-tagging", MULTI_LABEL.NAME: "freesound-audio-tagging-2019"}
MARKER = "freesound-bundle.json"
"""The bundle's description, at the top of the dataset: how the kernel finds where Kaggle mounted it."""
AISFX = "aisfx==0.1.2"
# kaggle's docs/datasets_metadata.md: the licences a dataset may name.
LICENSES = ("CC0-1.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "GPL-2.0", "ODbL-1.0", "DbCL-1.0",
            "copyright-authors", "other", "unknown", "CC-BY-4.0", "CC-BY-NC-4.0", "PDDL", "CC-BY-3.0",
            "CC-BY-3.0-IGO", "US-Government-Works", "CC-BY-NC-SA-3.0-IGO", "CDLA-Permissive-1.0",
            "CDLA-Sharing-1.0", "CC-BY-ND-4.0", "CC-BY-NC-ND-4.0", "ODC-BY-1.0", "LGPL-3.0", "AGPL-3.0",
            "FDL-1.3", "EU-ODP-Legal-Notice", "apache-2.0", "GPL-3.0")
FOLD_FILES = ("best.keras", "config.json", "result.json")


def slug(text: str) -> str:
    """The URL slug Kaggle makes of a title: lowercase ASCII letters and digits, other runs as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- the bundle, written here -----------------------------------------------------------------------


def chosen_folds(paths: Paths, models: list[str], allow_partial: bool, allow_mismatch: bool) -> dict:
    """{model: {"folds": [k...], "labels": [...], "task": its name}} of the trained models, with the checks
    src.predict makes: every fold finished (unless allow_partial), all trained on the same rows and folds
    (unless allow_mismatch), one label set and one task."""
    chosen, trained_on = {}, {}
    for name in models:
        # The dataset's folds, finished and not stale: the run folder's one reader, as src.predict uses it.
        folds = ModelRun(paths, name, dataset_at_hand(paths)).require_complete(allow_partial, allow_mismatch)
        first = fold_files(paths, name, folds[0])
        results = [fold_files(paths, name, k).read_result() for k in folds]
        for k, result in zip(folds, results):
            if result.fingerprints:
                trained_on.setdefault(json.dumps(result.fingerprints, sort_keys=True), []).append(f"{name} fold {k}")
        if len(trained_on) > 1 and not allow_mismatch:
            (_, one), (_, other) = list(trained_on.items())[:2]
            raise DataError(f"{one[0]} and {other[0]} were trained on different train rows or folds; a blend of them "
                            f"mixes two datasets. Retrain the stale ones, or pass --allow-mismatch.")
        task = first.task()  # result.json's task (older results: by their score's name)
        chosen[name] = {"folds": folds, "labels": first.labels(), "task": task.NAME}
    kinds = {json.dumps([c["labels"], c["task"]]) for c in chosen.values()}
    if len(kinds) > 1:
        raise DataError(f"the models {' '.join(models)} were trained on different label sets or tasks "
                        f"(single- and multi-label): bundle one kind at a time")
    return chosen


def build_wheel(project: Path, dest: Path) -> Path:
    """The project's wheel, built offline (`pip wheel --no-deps --no-build-isolation`, setuptools from this
    environment) from a copy of pyproject.toml, README.md and src/, so the checkout gains no build/ folder."""
    if not (project / "pyproject.toml").is_file() or not (project / "src" / "__init__.py").is_file():
        raise UsageError(f"{project.resolve()} holds no pyproject.toml and src/: run this from the repository root "
                         f"(or name it with --project-dir)")
    with tempfile.TemporaryDirectory(prefix="kaggle-wheel-") as tmp:
        source = Path(tmp) / "project"
        shutil.copytree(project / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(project / name, source / name)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "--no-index", "-q", "-w", str(dest), str(source)], capture_output=True, text=True)
    wheels = sorted(dest.glob("freesound_tagging-*.whl"))
    if done.returncode != 0 or not wheels:
        raise SetupError(f"could not build the project's wheel (pip wheel --no-deps --no-build-isolation): "
                         f"{(done.stderr or done.stdout).strip()[-1500:]}\nIt needs setuptools>=64 in this "
                         f"environment: python3 -m pip install 'setuptools>=64'")
    return wheels[-1]


def aisfx_wheel(project: Path, dest: Path, given: Path | None) -> Path:
    """The aisfx wheel (the pretrained weights) for a kernel that trains aisfx: the one given, one in the
    checkout's .whl/ folder, or one pip downloads (`pip download aisfx==0.1.2 --no-deps`, from pip's cache
    when offline)."""
    candidates = [given] if given else sorted((project / ".whl").glob("aisfx-0.1.2-*.whl"))
    for wheel in candidates:
        if wheel.is_file():
            return Path(shutil.copy2(wheel, dest))
        raise UsageError(f"--aisfx-wheel {wheel}: no such file")
    done = subprocess.run([sys.executable, "-m", "pip", "download", AISFX, "--no-deps", "-q", "-d", str(dest)],
                          capture_output=True, text=True)
    found = sorted(dest.glob("aisfx-*.whl"))
    if done.returncode != 0 or not found:
        raise SetupError(f"training aisfx on Kaggle needs the weights' wheel in the bundle, and `pip download "
                         f"{AISFX} --no-deps` failed here ({(done.stderr or done.stdout).strip()[-300:]}). On a "
                         f"machine with network: pip download {AISFX} --no-deps -d .whl/ (in the repository "
                         f"root), then run this again, or name the wheel with --aisfx-wheel PATH.")
    return found[0]


def dataset_metadata(dataset_id: str, title: str, license_name: str, models: list[str], train: bool,
                     aisfx: bool) -> dict:
    """dataset-metadata.json with the fields kaggle's docs/datasets_metadata.md documents for a new dataset."""
    parts = ["The freesound-tagging project as a wheel (install with pip --no-index --no-deps)"]
    if not train:
        parts.append(f"and the fold models of {', '.join(models)} (Keras .keras files, their config.json and "
                     f"result.json)")
    description = " ".join(parts) + ", written by `python -m src.tools.kaggle_kernel`."
    if aisfx:
        description += (" It carries the aisfx package's wheel, whose pretrained weights are by A. B. Ma and "
                        "A. Lerch (ISMIR 2022), licensed CC BY 4.0: https://github.com/alisonbma/aisfx")
    return {"title": title, "id": dataset_id, "licenses": [{"name": license_name}], "description": description}


def kernel_metadata(kernel_id: str, title: str, code_file: str, notebook: bool, private: bool, gpu: bool,
                    dataset_id: str, competition: str, kernel_sources: list[str]) -> dict:
    """kernel-metadata.json with the fields kaggle's docs/kernels_metadata.md documents (booleans as its
    example writes them); internet off, as a code competition requires."""
    flag = lambda value: "true" if value else "false"
    return {"id": kernel_id, "title": title, "code_file": code_file, "language": "python",
            "kernel_type": "notebook" if notebook else "script", "is_private": flag(private),
            "enable_gpu": flag(gpu), "enable_internet": "false", "dataset_sources": [dataset_id],
            "competition_sources": [competition], "kernel_sources": kernel_sources}


KERNEL_CODE = '''\
import glob
import importlib
import os
import subprocess
import sys

KAGGLE_ROOT = os.environ.get("KAGGLE_ROOT", "/kaggle")
DATASET = {dataset!r}   # attached as input: KAGGLE_ROOT/input/<its slug>/ (looked for deeper if not there)
MARKER = {marker!r}


def bundle_folder():
    inputs = os.path.join(KAGGLE_ROOT, "input")
    expected = os.path.join(inputs, DATASET.split("/")[1])
    if os.path.isfile(os.path.join(expected, MARKER)):
        return expected
    for root, folders, files in os.walk(inputs):
        if MARKER in files:
            return root
        if root[len(inputs):].count(os.sep) >= 3:
            folders[:] = []
    raise SystemExit(f"{{MARKER}} not found under {{inputs}}: attach the dataset {{DATASET}} to this notebook")


bundle = bundle_folder()
# The project and its wheels only; everything else comes from the packages Kaggle's image already has.
wheels = sorted(glob.glob(os.path.join(bundle, "*.whl")))
subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--ignore-requires-python",
                "--disable-pip-version-check", *wheels], check=True)
importlib.invalidate_caches()
from src.tools.kaggle_kernel import on_kaggle  # noqa: E402 - installed just above

code = on_kaggle(bundle, KAGGLE_ROOT)
if code:
    raise SystemExit(code)
'''


def kernel_code(dataset_id: str) -> str:
    return KERNEL_CODE.format(dataset=dataset_id, marker=MARKER)


def kernel_script(dataset_id: str, title: str, what: str) -> str:
    return f'"""{title}: {what}\nWritten by `python -m src.tools.kaggle_kernel`."""\n' + kernel_code(dataset_id)


def kernel_notebook(dataset_id: str, title: str, what: str) -> str:
    lines = lambda text: text.splitlines(keepends=True)
    cells = [{"cell_type": "markdown", "metadata": {}, "source": lines(f"# {title}\n\n{what}\n\nWritten by "
                                                                         f"`python -m src.tools.kaggle_kernel`.")},
             {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
              "source": lines(kernel_code(dataset_id))}]
    notebook = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                            "name": "python3"},
                                             "language_info": {"name": "python"}},
                "nbformat": 4, "nbformat_minor": 4}
    return json.dumps(notebook, indent=1) + "\n"


def write_bundle(args, paths: Paths) -> dict:
    """Write BUNDLE_DIR/dataset and BUNDLE_DIR/kernel (whole or not at all); returns what the commands need."""
    project = Path(args.project_dir)
    chosen = {} if args.train else chosen_folds(paths, args.models, args.allow_partial, args.allow_mismatch)
    task = next(iter(chosen.values()))["task"] if chosen else SINGLE_LABEL.NAME
    competition = args.competition or COMPETITION_OF[task]
    if chosen and COMPETITION_OF[task] != competition:
        raise UsageError(f"the folds of {' '.join(args.models)} are {task}, for {COMPETITION_OF[task]}, not "
                         f"{competition}")
    year = COMPETITIONS[competition]
    name = "-".join(slug(m) for m in args.models)
    dataset_slug = args.dataset_slug or f"freesound-{year}-{name}-bundle"[:50].strip("-")
    kernel_title = args.kernel_title or f"freesound {year} {'train ' if args.train else ''}{' '.join(args.models)}"
    if not 5 <= len(kernel_title) <= 50:
        raise UsageError(f"kernel title {kernel_title!r}: Kaggle takes 5 to 50 characters; name one with "
                         f"--kernel-title")
    dataset_title = f"freesound {year} {' '.join(args.models)} bundle"
    dataset_title = dataset_title if len(dataset_title) <= 50 else f"freesound {year} bundle"
    if not 3 <= len(dataset_slug) <= 50:
        raise UsageError(f"dataset slug {dataset_slug!r}: Kaggle takes 3 to 50 characters")
    dataset_id, kernel_id = f"{args.user}/{dataset_slug}", f"{args.user}/{slug(kernel_title)}"
    # The pretrained weights train aisfx and judge labels for --clean-labels; trained folds load without them.
    trains_aisfx = args.train and (any(NETWORKS[PRESETS[m].network].weights for m in args.models)
                                   or "--clean-labels" in args.train_options)
    description = {"competition": competition, "models": args.models, "train": args.train,
                   "train_options": args.train_options, "time_limit_hours": args.time_limit_hours,
                   "resume_from": args.resume_from, "folds": chosen, "files": {}}
    bundle = Path(args.bundle_dir or paths.submissions_dir / "kaggle")
    with atomic_folder(bundle) as building:
        dataset, kernel = building / "dataset", building / "kernel"
        dataset.mkdir()
        kernel.mkdir()
        wheel = build_wheel(project, dataset)
        extra = [aisfx_wheel(project, dataset, args.aisfx_wheel).name] if trains_aisfx else []
        if args.train:
            shutil.copy2(project / "run_folds.sh", dataset / "run_folds.sh")
        for model, facts in chosen.items():
            for k in facts["folds"]:
                folder = fold_files(paths, model, k).folder
                for file in FOLD_FILES:
                    flat = f"{model}.fold{k}.{file}"
                    shutil.copy2(folder / file, dataset / flat)
                    description["files"][f"{model}/fold{k}/{file}"] = flat
        description["wheels"] = [wheel.name, *extra]
        (dataset / MARKER).write_text(json.dumps(description, indent=1) + "\n")
        (dataset / "dataset-metadata.json").write_text(json.dumps(
            dataset_metadata(dataset_id, dataset_title, args.license, args.models, args.train, bool(extra)),
            indent=1) + "\n")
        code_file = "kernel.ipynb" if args.notebook else "kernel.py"
        what = ("trains the folds of " if args.train else "predicts with the folds of ") + \
            f"{', '.join(args.models)} and writes {competition}'s submission.csv."
        code = kernel_notebook if args.notebook else kernel_script
        (kernel / code_file).write_text(code(dataset_id, kernel_title, what))
        (kernel / "kernel-metadata.json").write_text(json.dumps(kernel_metadata(
            kernel_id, kernel_title, code_file, args.notebook, not args.public, not args.no_gpu, dataset_id,
            competition, [args.resume_from] if args.resume_from else []), indent=1) + "\n")
    return {"bundle": bundle, "dataset": bundle / "dataset", "kernel": bundle / "kernel", "dataset_id": dataset_id,
            "kernel_id": kernel_id, "competition": competition}


def commands(made: dict) -> list[list[str]]:
    return [["kaggle", "datasets", "create", "-p", str(made["dataset"])],
            ["kaggle", "kernels", "push", "-p", str(made["kernel"])]]


def has_credentials() -> bool:
    """Whether the kaggle package finds credentials (it prints pages and exits when it does not)."""
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            from kaggle.api.kaggle_api_extended import KaggleApi

            KaggleApi().authenticate()
        return True
    except (Exception, SystemExit):  # noqa: BLE001 - any failure means: no usable credentials here
        return False


def kaggle_cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "kaggle", *args], capture_output=True, text=True)
    print((done.stdout + done.stderr).strip(), flush=True)
    return done


def push(made: dict) -> None:
    """Upload the dataset (a new version when it exists), wait until Kaggle has it ready, push the kernel."""
    if not has_credentials():
        raise SetupError("--push: the kaggle CLI finds no credentials here, so nothing was uploaded. Give it yours "
                         "(`kaggle auth login`, or a token from https://www.kaggle.com/settings/api exported as "
                         "KAGGLE_API_TOKEN or saved to ~/.kaggle/access_token), then run the commands above or "
                         "this command again with --push.")
    done = kaggle_cli("datasets", "create", "-p", str(made["dataset"]))
    text = (done.stdout + done.stderr).lower()
    if done.returncode != 0 or "error" in text:
        if "exist" not in text:
            raise SetupError("kaggle datasets create failed (above); nothing else was pushed")
        done = kaggle_cli("datasets", "version", "-p", str(made["dataset"]), "-m",
                          f"python -m src.tools.kaggle_kernel, {date.today()}")
        if done.returncode != 0:
            raise SetupError("kaggle datasets version failed (above); the kernel was not pushed")
    for _ in range(60):  # Kaggle processes an upload before a kernel can mount it
        status = kaggle_cli("datasets", "status", made["dataset_id"])
        if "ready" in status.stdout.lower():
            break
        time.sleep(15)
    else:
        raise SetupError(f"{made['dataset_id']} is not ready after 15 minutes; push the kernel later with "
                         f"`kaggle kernels push -p {made['kernel']}`")
    if kaggle_cli("kernels", "push", "-p", str(made["kernel"])).returncode != 0:
        raise SetupError("kaggle kernels push failed (above)")


def submit_hint(made: dict) -> str:
    kernel, competition = made["kernel_id"], made["competition"]
    if COMPETITIONS[competition] == 2019:
        return (f"A code competition submits the kernel itself, once a version has run: kaggle competitions submit "
                f"{competition} -k {kernel} -f submission.csv -v VERSION -m MESSAGE")
    return (f"When it has run: kaggle kernels output {kernel} -p kernel-output/ && kaggle competitions submit "
            f"{competition} -f kernel-output/submission.csv -m MESSAGE")


# --- the kernel's side, run on Kaggle -----------------------------------------------------------------


def competition_folder(root: Path, competition: str) -> Path:
    """Where Kaggle mounts the competition's data: KAGGLE_ROOT/input/<competition>/ (or the input folder
    holding its tables)."""
    table = "train_curated.csv" if COMPETITIONS[competition] == 2019 else "sample_submission.csv"
    expected = root / "input" / competition
    if (expected / table).is_file():
        return expected
    found = sorted(p.parent for p in (root / "input").glob(f"*/{table}")) + \
        sorted(p.parent for p in (root / "input").glob(f"*/*/{table}"))
    if not found:
        raise DataError(f"{competition}'s data is not under {root / 'input'} (no {table}): add the competition "
                        f"as an input of the notebook (competition_sources in kernel-metadata.json)")
    return found[0]


def competition_data(source: Path, competition: str, data_dir: Path) -> Path:
    """The competition's data in this project's layout at data_dir, the audio read where Kaggle mounts it:
    2018's tables and audio folders linked (an audio folder mounted only as its .zip is unpacked into
    data_dir, as src.data unpacks a download); 2019's tables written by src.tools.adapters (the curated clips
    verified, the noisy ones not), its audio folders linked."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if COMPETITIONS[competition] == 2019:
        fsdkaggle2019(source, data_dir)
        return data_dir
    zipped = []
    for name in ("train", "test"):
        for path in (table_path(data_dir, name), audio_dir(data_dir, name)):
            if (source / path.name).exists() and not path.exists():
                path.symlink_to((source / path.name).resolve())
        folder, archive = audio_dir(data_dir, name), source / f"{audio_dir(data_dir, name).name}.zip"
        if not folder.exists() and archive.is_file():
            (data_dir / archive.name).symlink_to(archive.resolve())
            zipped.append(archive.name)
    if zipped:
        log.info("unpacking %s from the competition's archives", ", ".join(zipped))
        archives.unpack_all(data_dir)
    return data_dir


def bundled_run(bundle: Path, description: dict, run_dir: Path) -> Paths:
    """The bundle's fold files laid out as a run folder (predictions/<model>/fold<k>/), linked, not copied."""
    for inside, flat in description["files"].items():
        link = run_dir / "predictions" / inside
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(bundle / flat)
    return Paths(Path("unused"), run_dir)


def predict_test(run: Paths, data_dir: Path, models: list[str], labels: dict):
    """Every fold of the models predicts the test clips as it did in training (its test.csv): whole-clip
    windows or the first crop as its preset says, from the audio cache of the test split, silent clips as
    silence; each model's folds combined by geometric mean, then the models, as src.blend does. Returns
    the probabilities and the dataset."""
    from ..training.fold import predict  # imports Keras: only here, where the models run

    dataset = Dataset.load(data_dir)
    backend.current()
    log.info("%s", backend.configure())
    fnames, task = list(dataset.test.fname), dataset.task
    per_model = []
    for name in models:
        if labels[name] != dataset.labels:
            raise DataError(f"{name} was trained on {len(labels[name])} labels ({', '.join(labels[name][:3])}, "
                            f"...); this competition's train data has {len(dataset.labels)} "
                            f"({', '.join(dataset.labels[:3])}, ...): these folds are not for this competition")
        started, tests = time.perf_counter(), []
        for k in finished_folds(run, name):
            files = fold_files(run, name, k)
            config = files.read_config()
            source = model_input(data_dir, "test", config)  # built once per preset and rate, on every core
            tests.append(predict(load_fold_model(files.model), config, source, fnames, len(dataset.labels), task))
        per_model.append(task.combine(tests))
        log.info("%s: %d folds predicted %d test clips in %.0f s", name, len(tests), len(fnames),
                 time.perf_counter() - started)
    return task.combine(per_model), dataset


def write_competition_submission(path: Path, probs, dataset) -> Path:
    """submission.csv in the competition's form (the task's: top 3 labels, or a probability per label in
    sample_submission.csv's columns), validated and written as src.blend writes its own."""
    return write_submission(path, probs, dataset)


def train_on_kaggle(bundle: Path, description: dict, data_dir: Path, root: Path, deadline: float) -> bool:
    """Train every model's folds with run_folds.sh into KAGGLE_ROOT/working/run, one fold per GPU, from where
    an attached earlier run left off; True when all are finished, False when the time limit stopped it (the
    run, and folds.csv beside it, are kept for the next session)."""
    run = root / "working" / "run"
    if description["resume_from"]:
        previous = root / "input" / description["resume_from"].split("/")[1] / "run"
        if previous.is_dir():  # Kaggle's inputs are read-only: a copy the folds can write to
            shutil.copytree(previous, run, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock", ".*.tmp*"),
                            copy_function=shutil.copyfile)
            for path in [run, *run.rglob("*")]:
                path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IRUSR | (stat.S_IXUSR if path.is_dir() else 0))
            log.info("resuming from %s: finished folds are kept, unfinished ones go on from their last saved epoch",
                     previous)
        else:
            log.warning("no earlier run at %s: starting afresh (attach the kernel's output to resume)", previous)
    run.mkdir(parents=True, exist_ok=True)
    if (run / "folds.csv").is_file() and not (data_dir / "folds.csv").exists():
        shutil.copy2(run / "folds.csv", data_dir / "folds.csv")
    env = dict(os.environ, PYTHON=sys.executable, FOLDS_PER_GPU=os.environ.get("FOLDS_PER_GPU", "1"))
    try:
        for model in description["models"]:
            command = ["bash", str(bundle / "run_folds.sh"), model, "--", "--data-dir", str(data_dir),
                       "--out-dir", str(run), *description["train_options"]]
            log.info("$ %s", shlex.join(command))
            process = subprocess.Popen(command, env=env, start_new_session=True)
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("time limit: stopping %s's folds; finished folds and saved epochs are kept", model)
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                return False
            if code != 0:
                raise DataError(f"./run_folds.sh {model} failed (exit {code}): see its fold logs in "
                                f"{run / 'predictions' / model / 'logs'}")
        return True
    finally:
        if (data_dir / "folds.csv").is_file():
            shutil.copy2(data_dir / "folds.csv", run / "folds.csv")


def on_kaggle(bundle: str | Path, kaggle_root: str | Path = "/kaggle") -> int:
    """The kernel: the competition's data in place, the bundle's folds (or folds trained here with --train),
    KAGGLE_ROOT/working/submission.csv in the competition's form. Returns the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(**cli.LOG_FORMAT)
    started = time.monotonic()
    bundle, root = Path(bundle), Path(kaggle_root)
    description = json.loads((bundle / MARKER).read_text())
    log.info("freesound-tagging from %s (Python %s)", Path(__file__).resolve().parents[1], sys.version.split()[0])
    if sys.version_info[:2] not in ((3, 11), (3, 12)):
        log.warning("this Python is outside the tested range (3.11, 3.12)")
    competition = description["competition"]
    working = root / "working"
    working.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="freesound-") as tmp:
            data_dir = competition_data(competition_folder(root, competition), competition, Path(tmp) / "data")
            models = description["models"]
            if description["train"]:
                deadline = started + 3600 * description["time_limit_hours"]
                if not train_on_kaggle(bundle, description, data_dir, root, deadline):
                    print(f"Stopped at the time limit ({description['time_limit_hours']} h). Push the kernel again "
                          f"with --resume-from set to this kernel: the next session continues from this output.")
                    return 0
                run = working / "run"
                code = blend_main([*models, "--data-dir", str(data_dir), "--out-dir", str(run)])
                if code != 0:
                    return code
                name = models[0] if len(models) == 1 else "blend_" + "_".join(models)
                shutil.copy2(run / "submissions" / f"{name}.csv", working / "submission.csv")
            else:
                run = bundled_run(bundle, description, Path(tmp) / "run")
                labels = {m: description["folds"][m]["labels"] for m in models}
                probs, dataset = predict_test(run, data_dir, models, labels)
                write_competition_submission(working / "submission.csv", probs, dataset)
    except CommandError as error:  # what to fix, as every command reports it
        print(error, file=sys.stderr)
        return 2
    log.info("wrote %s (%.1f min)", working / "submission.csv", (time.monotonic() - started) / 60)
    return 0


# --- the command ----------------------------------------------------------------------------------------


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.tools.kaggle_kernel", __doc__, data_dir=False)
    parser.add_argument("--models", nargs="+", required=True, help="the models to bundle (their folds under "
                        "OUT_DIR/predictions/), or with --train the presets to train on Kaggle")
    parser.add_argument("--user", default=os.environ.get("KAGGLE_USERNAME"),
                        help="your Kaggle user name, the owner of the dataset and kernel (default: $KAGGLE_USERNAME)")
    parser.add_argument("--competition", choices=sorted(COMPETITIONS), help="default: from the folds "
                        "(multi-label folds are 2019's); with --train: freesound-audio-tagging")
    parser.add_argument("--bundle-dir", type=Path, help="where to write dataset/ and kernel/ (default: "
                        "OUT_DIR/submissions/kaggle)")
    parser.add_argument("--dataset-slug", help="default: freesound-YEAR-MODELS-bundle")
    parser.add_argument("--kernel-title", help="default: freesound YEAR [train] MODELS (its slug is the kernel's id)")
    parser.add_argument("--license", choices=LICENSES, default="other", help="the dataset's licence (default: "
                        "other, the parts' own licences in its description)")
    parser.add_argument("--train", action="store_true", help="a kernel that trains the models' folds on Kaggle "
                        "(run_folds.sh, one fold per GPU) before predicting")
    parser.add_argument("--time-limit-hours", type=float, default=11.0, help="--train: stop training after this "
                        "long, keeping what is done (default 11: a Kaggle session ends at 12 hours)")
    parser.add_argument("--resume-from", metavar="USER/KERNEL", help="--train: attach this kernel's output (an "
                        "earlier session of the same kernel) and continue its run")
    parser.add_argument("--aisfx-wheel", type=Path, help="--train with aisfx: the aisfx 0.1.2 wheel (default: .whl/ "
                        "in the repository, else pip download)")
    parser.add_argument("--notebook", action="store_true", help="a notebook (kernel.ipynb) instead of a script")
    parser.add_argument("--public", action="store_true", help="a public kernel (default: private)")
    parser.add_argument("--no-gpu", action="store_true", help="a CPU kernel (default: GPU)")
    parser.add_argument("--project-dir", type=Path, default=Path("."), help="the repository root (default: .)")
    parser.add_argument("--allow-partial", action="store_true", help="bundle a model whose folds are not all finished")
    parser.add_argument("--allow-mismatch", action="store_true", help="bundle folds trained on different rows")
    parser.add_argument("--push", action="store_true", help="upload the dataset and push the kernel (needs the "
                        "kaggle CLI's credentials)")
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, train_options = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(argv)
    args.train_options = train_options
    if not args.user:
        parser.error("name your Kaggle user with --user (or set KAGGLE_USERNAME)")
    if train_options and not args.train:
        parser.error("options after -- are for --train (passed to every ./run_folds.sh)")
    if args.resume_from and not args.train:
        parser.error("--resume-from continues a --train kernel")
    if args.train:
        unknown = [m for m in args.models if m not in PRESETS]
        if unknown:
            parser.error(f"--train trains presets ({', '.join(sorted(PRESETS))}); {', '.join(unknown)} is none: "
                         f"name a variant with -- --name NAME")
        if args.competition == "freesound-audio-tagging-2019":
            log.warning("the 2019 competition ran kernels that only predicted (about an hour on a GPU); train "
                        "there in a notebook of its own, then bundle the folds for the submission kernel")
    made = write_bundle(args, cli.paths(args))
    print(f"wrote {made['dataset']} (dataset {made['dataset_id']}) and {made['kernel']} (kernel {made['kernel_id']})")
    print("upload them with:")
    for command in commands(made):
        print(f"  {shlex.join(command)}")
    print(f"  (an existing dataset takes a new version: kaggle datasets version -p {made['dataset']} -m MESSAGE)")
    print(submit_hint(made))
    if args.push:
        push(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
