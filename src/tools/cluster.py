"""One preset's folds trained on a Dask cluster. The same fold job as run_folds.sh, one fold per GPU worker.

    ./run_folds.sh 2d --cluster tcp://HOST:8786 [FOLD ...] [-- TRAIN_OPTIONS]
    python -m src.tools.cluster tcp://HOST:8786 --model 2d [--folds 0 1] [--copy-back] [-- TRAIN_OPTIONS]

Needs `pip install -r requirements-cluster.txt` here and on every worker. Workers run from a checkout
of this repository (same commit), one per GPU, started with `--nthreads 1 --resources GPU=1` and their
own CUDA_VISIBLE_DEVICES. The audio cache is built through the cluster (joblib's dask backend); each
fold runs `python -m src.train --fold K` on a worker, the code run_folds.sh runs locally. A worker lost
mid-fold has its fold re-run elsewhere (Dask retries tasks of lost workers); finished folds (with
result.json) are never run again. Logs come back to predictions/MODEL/logs/foldK.log as in a local run.

Storage: data/ (audio, folds.csv, cache) and predictions/ must be visible to every worker at the same
path (checked before anything runs). Without shared storage: build the cache here
(`python -m src.train --model M --prepare`), copy data/ to every worker at the same path, and run with
--copy-back, which sends each fold's files back here; the workers' copies of folds.csv and of the cache
index are checked against this machine's first.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from ..base import cli
from ..base.config import config_from_args
from ..base.errors import DataError
from ..base.files import Lock
from ..base.layout import Paths
from ..train import train_parser
from ..training.fold_files import FoldFiles, fold_files
from ..training.run_folder import ModelRun
from ..training.runs import run_lock, summarise

INTERRUPTED_NOTE = "an earlier attempt at this fold was interrupted; training it again"


def _die_with_parent() -> None:
    """Runs in the fold process before exec: SIGKILL it if the worker that started it dies, so a lost
    worker never leaves a fold process writing beside its re-run."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def run_fold(train_argv: list[str], preset: str, paths: Paths, fold: int, threads: int | None,
             copy_back: bool) -> dict:
    """The cluster task: train one fold in a fresh process on this worker, as run_folds.sh does locally.
    Returns the exit code, the log, the seconds it took and, with copy_back, the fold's files."""
    started = time.time()
    fold_files = FoldFiles(paths.fold_dir(preset, fold).resolve())
    note = INTERRUPTED_NOTE + "\n" if fold_files.config.exists() and not fold_files.is_finished() else ""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads),
                   TF_NUM_INTEROP_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-m", "src.train", *train_argv, "--fold", str(fold)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=_die_with_parent)
    files = {}
    if copy_back and done.returncode == 0:
        files = fold_files.contents()
    return {"fold": fold, "code": done.returncode, "seconds": time.time() - started,
            "host": socket.gethostname(), "log": note + done.stdout, "files": files}


def _can_read(path: str, token: str) -> bool:
    return Path(path).is_file() and Path(path).read_text() == token


def _digests(root: str, names: list[str]) -> dict[str, str | None]:
    """sha1 of each named file under root (None where it is missing)."""
    return {n: hashlib.sha1((Path(root) / n).read_bytes()).hexdigest() if (Path(root) / n).is_file() else None
            for n in names}


def check_storage(client, paths: Paths, shared: bool) -> None:
    """Stop early, naming the worker and the fix, when a worker does not see what it needs."""
    if shared:
        for folder in (paths.data_dir, paths.predictions_dir):
            folder = Path(folder).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".cluster-check-{uuid.uuid4().hex}"
            probe.write_text(probe.name)
            try:
                seen = client.run(_can_read, str(probe), probe.name)
            finally:
                probe.unlink()
            blind = [w for w, ok in seen.items() if not ok]
            if blind:
                raise DataError(f"worker(s) {', '.join(blind)} cannot see {folder}: put it on storage "
                                f"every worker mounts at the same path, or copy data/ to the workers and "
                                f"run with --copy-back (see `python -m src.tools.cluster --help`)")
        return
    data = paths.data_dir.resolve()
    names = [str(p.relative_to(data)) for p in [data / "folds.csv", *sorted((data / "cache").rglob("index.csv"))]]
    mine = _digests(str(data), names)
    for worker, theirs in client.run(_digests, str(data), names).items():
        differ = [n for n in names if theirs[n] != mine[n]]
        if differ:
            raise DataError(f"worker {worker} has other copies of {', '.join(differ[:3])} under {data}: "
                            f"copy this machine's data/ (folds.csv and cache/) to every worker first")


def security(ca_file: Path | None, cert: Path | None, key: Path | None):
    """Dask TLS settings from the three files (all or none); None leaves Dask's own configuration
    (distributed.comm.tls.* in its YAML files or DASK_DISTRIBUTED__COMM__TLS__* variables) in charge."""
    given = [f for f in (ca_file, cert, key) if f is not None]
    if not given:
        return None
    if len(given) < 3:
        raise DataError("TLS needs all three of --tls-ca-file, --tls-cert and --tls-key")
    for path in given:
        if not Path(path).is_file():
            raise DataError(f"{path} does not exist: give the PEM files the scheduler's certificates were made with")
    from distributed.security import Security

    return Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert), tls_client_key=str(key),
                    require_encryption=True)


def run(address: str, train_argv: list[str], folds: list[int] | None, threads: int | None = None,
        copy_back: bool = False, resource: str = "GPU", tls=None) -> bool:
    """Train the folds through the scheduler at `address` (with `tls`, a distributed Security, over
    TLS); write logs (and, with copy_back, fold files) under predictions/; print run_folds.sh's closing
    table. True when every fold finished."""
    import joblib
    from distributed import Client, as_completed

    from ..training.fold import check_settings, prepare  # with Keras (seconds to load)

    args = train_parser().parse_args([*train_argv, "--prepare"])
    config, paths = config_from_args(args), Paths(args.data_dir, args.out_dir)
    worker_argv = [a for a in train_argv if a != "--force"]  # a retried fold must never redo a finished one
    # One run of a model at a time, local or on a cluster (run_folds.sh takes the same lock).
    with Lock(run_lock(paths, config.name), f"src.tools.cluster {address} --model {config.name}"), \
            Client(address, security=tls) as client:
        offered = [w for w in client.scheduler_info()["workers"].values() if resource in w.get("resources", {})]
        if not offered:
            raise DataError(f"no worker of {address} offers the resource {resource!r}: start one worker per "
                            f"GPU with `dask worker {address} --nthreads 1 --resources {resource}=1`")
        check_storage(client, paths, shared=not copy_back)
        if "--force" not in train_argv:  # a finished fold asked for other settings is never skipped silently
            check_settings(config, paths, ModelRun(paths, config.name).finished)
        if copy_back:
            all_folds = prepare(config, paths)
        else:
            with joblib.parallel_config(backend="dask"):  # decode and resample on the workers
                all_folds = prepare(config, paths)
        folds = all_folds if folds is None else folds
        if "--force" in train_argv:
            for fold in folds:
                fold_files(paths, config.name, fold).result.unlink(missing_ok=True)
        log_dir = paths.log_dir(config.name)
        log_dir.mkdir(parents=True, exist_ok=True)
        finished = ModelRun(paths, config.name).finished
        todo = [f for f in folds if f not in finished]
        print(f"{config.name}: {len(todo)} fold(s) on {len(offered)} worker(s) of {address}"
              + (f"; {len(folds) - len(todo)} already finished" if len(todo) < len(folds) else ""))
        futures = {client.submit(run_fold, worker_argv, config.name, paths, f, threads, copy_back,
                                 key=f"{config.name}-fold{f}-{uuid.uuid4().hex[:8]}", pure=False,
                                 resources={resource: 1}): f for f in todo}
        status = []
        for future in as_completed(futures):
            fold = futures[future]
            try:
                record = future.result()
            except Exception as error:  # noqa: BLE001 - e.g. KilledWorker after repeated losses
                status.append(f"{fold} lost 0")
                print(f"fold {fold} FAILED on the cluster: {type(error).__name__}: {error}")
                continue
            with open(log_dir / f"fold{fold}.log", "a") as log_file:  # after any earlier attempt's log
                log_file.write(f"=== attempt on {record['host']}\n{record['log']}")
            if record["files"]:
                fold_files(paths, config.name, fold).receive(record["files"])
            status.append(f"{fold} {record['code']} {int(record['seconds'])}")
            print(f"fold {fold} " + ("done" if record["code"] == 0 else
                                     f"FAILED (exit {record['code']}): see {log_dir / f'fold{fold}.log'}")
                  + f" on {record['host']}")
    skipped = [f"{f} 0 0" for f in folds if f not in todo]
    with tempfile.NamedTemporaryFile("w", suffix=".status", delete=False) as handle:
        handle.write("\n".join(skipped + status) + "\n")
    try:
        return summarise(paths, config.name, Path(handle.name))
    finally:
        os.unlink(handle.name)


@cli.command
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_argv = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = cli.parser("python -m src.tools.cluster", __doc__, data_dir=False, out_dir=False)
    parser.add_argument("address", help="the Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--model", required=True, help="the preset to train")
    parser.add_argument("--folds", type=int, nargs="*", help="folds to train (default: all)")
    parser.add_argument("--threads", type=int, help="threads per fold process on CPU workers (default: all)")
    parser.add_argument("--copy-back", action="store_true",
                        help="workers do not share predictions/: send each fold's files back here")
    parser.add_argument("--resource", default="GPU",
                        help="the worker resource one fold takes (default: GPU; workers declare GPU=1)")
    for flag, what in (("--tls-ca-file", "the certificate authority"), ("--tls-cert", "this client's certificate"),
                       ("--tls-key", "this client's private key")):
        parser.add_argument(flag, type=Path, help=f"PEM file of {what}, for a scheduler at tls://...")
    parser.epilog = (parser.epilog or "") + "\nTRAIN_OPTIONS: those of `python -m src.train` (e.g. --epochs 20)."
    args = parser.parse_args(own)
    ok = run(args.address, ["--model", args.model, *train_argv], args.folds or None, args.threads,
             args.copy_back, args.resource, security(args.tls_ca_file, args.tls_cert, args.tls_key))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
