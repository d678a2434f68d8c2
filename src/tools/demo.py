"""The whole pipeline on the small demo set shipped in data/demo. As a user runs it on the real data:
validate the data, build the audio cache, train the 1d and 2d folds with run_folds.sh, blend, inspect.

    python -m src.demo            # a few minutes on 2 CPU cores; writes under runs/demo/
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import ROOT
from .core import cli
from .core.errors import DataError


def run(command: list[str]) -> None:
    print(f"\n$ {shlex.join(command)}", flush=True)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise DataError(f"demo stopped: `{shlex.join(command)}` exited with {done.returncode}; its "
                        f"output above says why.")


def main(argv=None) -> int:
    parser = cli.parser("python -m src.demo", __doc__, data_dir=False, out_dir=False)
    parser.add_argument("--data-dir", default="data/demo", help="default: data/demo")
    parser.add_argument("--out-dir", default="runs/demo", help="default: runs/demo")
    parser.add_argument("--folds", type=int, default=3, help="StratifiedKFold splits (default: 3)")
    parser.add_argument("--epochs", type=int, default=25, help="maximum epochs per fold (default: 25)")
    parser.add_argument("--force", action="store_true", help="retrain folds finished by an earlier demo")
    args = parser.parse_args(argv)
    started = time.time()
    python = sys.executable
    where = ["--data-dir", args.data_dir, "--out-dir", args.out_dir]
    train_options = where + ["--n-folds", str(args.folds), "--epochs", str(args.epochs),
                             "--batch-size", "16", "--patience", "8"] + (["--force"] if args.force else [])
    run([python, "-m", "src.data", "--data-dir", args.data_dir])
    run([python, "-m", "src.audio_cache", "--data-dir", args.data_dir, "--rates", "16000", "44100"])
    for model in ("1d", "2d"):
        run(["env", f"PYTHON={python}", "./run_folds.sh", model, "--", *train_options])
    run([python, "-m", "src.inspect_oof", "1d", "2d", "--worst", "5", *where])
    run([python, "-m", "src.blend", "1d", "2d", *where])
    submission = Path(args.out_dir) / "submissions" / "blend_1d_2d.csv"
    print(f"\ndemo finished in {(time.time() - started) / 60:.1f} min; blend submission: {submission}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
