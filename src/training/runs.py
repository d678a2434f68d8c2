"""What run_folds.sh (and src.tools.cluster) share with Python: the plan of a run of folds, handed over as
JSON in a file, and the table that closes the run.

    python -m src.training.runs PLAN STATUS_FILE     # run_folds.sh's closing table; exit 1 if a fold failed
    python -m src.training.runs lock PATH PID WHAT   # one run of a model at a time (run_folds.sh)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..base import cli
from ..base.files import Lock, atomic_write
from ..base.layout import Paths
from .fold_files import fold_files, validation_score


def write_plan(path: Path, paths: Paths, name: str, folds: list[int]) -> None:
    """The fold ids and folders of a run (`python -m src.train --prepare --plan FILE`)."""
    atomic_write(path, json.dumps({
        "name": name, "folds": folds, "data_dir": str(paths.data_dir), "out_dir": str(paths.out_dir),
        "model_dir": str(paths.model_dir(name)), "log_dir": str(paths.log_dir(name)),
        "run_lock": str(run_lock(paths, name))}) + "\n")


def run_lock(paths: Paths, name: str) -> Path:
    """The lock one run of a model's folds holds (run_folds.sh, src.tools.cluster)."""
    return paths.model_dir(name) / "run.lock"


def summarise(paths: Paths, preset: str, status_file: Path) -> bool:
    """Print run_folds.sh's closing table (fold, status, validation MAP@3, minutes); True if all ok.

    status_file holds one "fold exit_code seconds" line per fold process."""
    lines = [line.split() for line in Path(status_file).read_text().splitlines() if line.strip()]
    results = {}
    for fold, code, _ in lines:
        files = fold_files(paths, preset, int(fold))
        if code == "0" and files.is_finished():
            results[fold] = files.read_result()
    metric = validation_score(next(iter(results.values())))[0] if results else "MAP@3"
    print(f"\n{preset}: {'fold':>4}  {'status':<8}{'val ' + metric:>10}{'minutes':>9}")
    for fold, code, seconds in sorted(lines, key=lambda t: int(t[0])):
        result = results.get(fold)
        score = f"{validation_score(result)[1]:.4f}" if result else "-"
        status = "ok" if result else f"failed({code})"
        print(f"{'':{len(preset) + 2}}{fold:>4}  {status:<8}{score:>10}{int(seconds) / 60:>9.1f}")
    return len(results) == len(lines)


@cli.command
def main(argv=None) -> int:
    """`PLAN STATUS_FILE`: the closing table (exit 1 if a fold failed); `lock PATH PID WHAT`: take a run's
    lock for the process PID (run_folds.sh's shell), exit 2 naming the holder when another run has it."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["lock"]:
        path, pid, what = args[1:4]
        lock = Lock(Path(path), what, int(pid)).acquire()
        if lock.note:
            print(lock.note, file=sys.stderr)
        return 0
    plan_file, status_file = args
    plan = json.loads(Path(plan_file).read_text())
    return 0 if summarise(Paths(plan["data_dir"], plan["out_dir"]), plan["name"], Path(status_file)) else 1


if __name__ == "__main__":
    sys.exit(main())
