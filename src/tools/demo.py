"""The whole pipeline on the small demo set shipped in data/demo. As a user runs it on the real data:
validate the data, build the audio cache, train the 1d, 2d and logmel folds with run_folds.sh,
inspect, blend.

    python -m src.tools.demo            # about 4 minutes on 2 CPU cores; writes under runs/demo/
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..base import cli
from ..base.errors import DataError
from . import ROOT

# The kernel's two nets and the strongest preset, logmel: 30 epochs instead of its 80, its cosine
# schedule run to the end as in the preset (early stopping cut it short on the demo's folds).
MODELS = ("1d", "2d", "logmel")


def run(command: list[str]) -> None:
    print(f"\n$ {shlex.join(command)}", flush=True)
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise DataError(f"demo stopped: `{shlex.join(command)}` exited with {done.returncode}; its "
                        f"output above says why.")


@cli.command
def main(argv=None) -> int:
    parser = cli.parser("python -m src.tools.demo", __doc__, data_dir=False, out_dir=False)
    parser.add_argument("--data-dir", default="data/demo", help="default: data/demo")
    parser.add_argument("--out-dir", default="runs/demo", help="default: runs/demo")
    parser.add_argument("--folds", type=int, default=3, help="StratifiedKFold splits (default: 3)")
    parser.add_argument("--epochs", type=int, default=25, help="maximum epochs per fold (default: 25)")
    parser.add_argument("--logmel-epochs", type=int, default=30,
                        help="logmel's epochs, its cosine schedule run to the end (default: 30)")
    parser.add_argument("--force", action="store_true", help="retrain folds finished by an earlier demo")
    args = parser.parse_args(argv)
    started = time.time()
    python = sys.executable
    where = ["--data-dir", args.data_dir, "--out-dir", args.out_dir]
    train_options = where + ["--n-folds", str(args.folds), "--epochs", str(args.epochs),
                             "--batch-size", "16", "--patience", "8"] + (["--force"] if args.force else [])
    run([python, "-m", "src.data", "--data-dir", args.data_dir])
    run([python, "-m", "src.audio_cache", "--data-dir", args.data_dir, "--rates", "16000", "22050", "44100"])
    own_options = {"logmel": ["--epochs", str(args.logmel_epochs), "--patience", "none"]}
    for model in MODELS:
        run(["env", f"PYTHON={python}", "./run_folds.sh", model, "--", *train_options, *own_options.get(model, [])])
    run([python, "-m", "src.inspect_oof", *MODELS, "--worst", "5", *where])
    run([python, "-m", "src.blend", *MODELS, *where])
    submission = Path(args.out_dir) / "submissions" / f"blend_{'_'.join(MODELS)}.csv"
    print(f"\ndemo finished in {(time.time() - started) / 60:.1f} min; blend submission: {submission}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
