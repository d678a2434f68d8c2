"""run_folds.sh --cluster on a real Dask LocalCluster of 2 worker processes on this machine: the same OOF
predictions as the local runner, and every fold done once when a worker is killed mid-fold."""
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, command_env, run_module, tiny, write_dataset

from src.base.layout import Paths
from src.training.fold_files import fold_files

distributed = pytest.importorskip("distributed", reason="the cluster extra: pip install -r requirements-cluster.txt")

TRAIN_OPTIONS = tiny(epochs=2)


def start_folds(*args) -> subprocess.Popen:
    """./run_folds.sh started, not waited for (conftest's environment), stderr into stdout."""
    return subprocess.Popen([str(ROOT / "run_folds.sh"), *args], cwd=ROOT, env=command_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"GPU": 1},
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("cluster") / "data", bad_inputs=False)


def options(data_dir, out_dir):
    return ["--", *TRAIN_OPTIONS, "--data-dir", str(data_dir), "--out-dir", str(out_dir)]


def oof(paths):
    return pd.concat([pd.read_csv(paths.fold_dir("1d", k) / "oof.csv") for k in (0, 1)]).set_index("fname")


@pytest.mark.slow
@pytest.mark.readme("run_folds.sh --cluster")
@pytest.mark.readme("run_folds.sh --cluster --n-folds")
def test_cluster_run_matches_the_local_runner(cluster, data_dir):
    local, _ = cluster
    here, there = Paths(data_dir, data_dir.parent / "local"), Paths(data_dir, data_dir.parent / "cluster")
    local_run = start_folds("1d", *options(data_dir, here.out_dir))
    assert local_run.wait(600) == 0, local_run.stdout.read()
    cluster_run = start_folds("1d", "--cluster", local.scheduler_address, *options(data_dir, there.out_dir))
    output = cluster_run.communicate(timeout=600)[0]
    assert cluster_run.returncode == 0, output
    assert "2 fold(s) on 2 worker(s)" in output and "failed" not in output
    mine, theirs = oof(here), oof(there)
    assert len(mine) > 0
    np.testing.assert_allclose(theirs.loc[mine.index].to_numpy(), mine.to_numpy(), atol=1e-5)
    for fold in (0, 1):
        for name in ("config.json", "best.keras", "oof.csv", "test.csv", "result.json"):
            assert (there.fold_dir("1d", fold) / name).exists()
        assert "validation MAP@3" in (there.model_dir("1d") / "logs" / f"fold{fold}.log").read_text()

    # Run again: both folds are finished, nothing is trained.
    again = start_folds("1d", "--cluster", local.scheduler_address, *options(data_dir, there.out_dir))
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0 and "0 fold(s) on 2 worker(s)" in output, output


@pytest.mark.slow
def test_a_killed_worker_leaves_every_fold_done_once(cluster, data_dir):
    local, client = cluster
    paths = Paths(data_dir, data_dir.parent / "killed")
    run = start_folds("1d", "--cluster", local.scheduler_address, *options(data_dir, paths.out_dir))
    victim_fold, other_fold = 0, 1
    deadline = time.time() + 300
    # Wait until fold 0 is under way on a worker (its fold process has written config.json).
    while not (paths.fold_dir("1d", victim_fold) / "config.json").exists():
        assert time.time() < deadline and run.poll() is None, run.stdout.read()
        time.sleep(0.2)
    processing = client.processing()
    victim = next(w for w, keys in processing.items() if any(f"1d-fold{victim_fold}-" in k for k in keys))
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # mid-fold: its nanny restarts it and the scheduler reschedules the fold
    other_result = paths.fold_dir("1d", other_fold) / "result.json"
    first_write = None
    while run.poll() is None:
        if first_write is None and other_result.exists():
            first_write = other_result.stat().st_mtime_ns
        assert time.time() < deadline
        time.sleep(0.2)
    output = run.stdout.read()
    assert run.returncode == 0, output
    for fold in (victim_fold, other_fold):
        assert (paths.fold_dir("1d", fold) / "result.json").exists()
    logs = paths.model_dir("1d") / "logs"
    assert "interrupted" in (logs / f"fold{victim_fold}.log").read_text()    # trained again, to the end
    assert "interrupted" not in (logs / f"fold{other_fold}.log").read_text()
    assert first_write is None or other_result.stat().st_mtime_ns == first_write  # never redone


def test_audio_cache_builds_on_the_cluster_as_it_does_locally(cluster, tmp_path):
    import joblib

    from src.dataset import audio as audio_cache

    _, client = cluster
    here, there = write_dataset(tmp_path / "here"), write_dataset(tmp_path / "there")
    local = audio_cache.build(here, "train", [16000], n_jobs=1)[16000]
    with distributed.get_task_stream(client) as stream, joblib.parallel_config(backend="dask"):
        remote = audio_cache.build(there, "train", [16000])[16000]
    assert len(stream.data) > 0                                   # the decoding ran on the workers
    fnames = list(local.index.fname)
    assert sorted(remote.index.fname) == sorted(fnames)
    assert [remote.status(f) for f in fnames] == [local.status(f) for f in fnames]  # bad inputs skipped alike
    for fname in fnames:
        if local.status(fname) == "ok":
            np.testing.assert_array_equal(remote.read(fname), local.read(fname))


@pytest.mark.slow
@pytest.mark.readme("src.tools.cluster --model --copy-back")
def test_copy_back_brings_a_fold_home(cluster, data_dir):
    local, _ = cluster
    paths = Paths(data_dir, data_dir.parent / "copied")
    run_module("src.tools.cluster", local.scheduler_address, "--model", "1d", "--folds", "1", "--copy-back",
               "--threads", "1", *options(data_dir, paths.out_dir), timeout=600, check=True)
    for name in ("config.json", "best.keras", "oof.csv", "test.csv", "result.json", "log.csv"):
        assert (paths.fold_dir("1d", 1) / name).exists(), name
    assert not list(paths.fold_dir("1d", 1).rglob("*.tmp"))
    assert not paths.fold_dir("1d", 0).exists()      # only the fold asked for


@pytest.mark.slow
@pytest.mark.readme("src.tools.cluster --model --tls-ca-file --tls-cert")
def test_a_tls_scheduler_is_reached_with_the_certificates(data_dir, tmp_path):
    from distributed.security import Security

    from src.tools import cluster as runner

    made = Security.temporary()            # a self-signed CA and certificate, made for this test
    files = {}
    for name, pem in (("ca", made.tls_ca_file), ("cert", made.tls_client_cert), ("key", made.tls_client_key)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(pem)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, resources={"GPU": 1},
                                  dashboard_address=None, security=made) as local:
        assert local.scheduler_address.startswith("tls://")
        out = data_dir.parent / "tls"
        code = runner.main([local.scheduler_address, "--model", "1d", "--folds", "0",
                            "--tls-ca-file", str(files["ca"]), "--tls-cert", str(files["cert"]),
                            "--tls-key", str(files["key"]), *options(data_dir, out)])
        assert code == 0 and fold_files(Paths(data_dir, out), "1d", 0).is_finished()
        assert runner.main([local.scheduler_address, "--model", "1d", "--tls-cert", str(files["cert"]),
                            *options(data_dir, out)]) == 2     # half the settings: a clear refusal
