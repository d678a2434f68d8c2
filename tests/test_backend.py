"""The backend rule of src.base.backend: named wins, else the best installed for the device."""
import os
import subprocess
import sys

import pytest
from conftest import ROOT, run_module

from src.base.backend import choose
from src.base.errors import SetupError


def only(*names):
    return lambda name: name in names


def test_a_named_backend_wins():
    choice = choose({"KERAS_BACKEND": "torch"}, has_gpu=True, is_installed=only("jax", "torch"))
    assert (choice.backend, choice.device) == ("torch", "gpu") and "named" in choice.reason


@pytest.mark.parametrize("gpu, installed, expected", [
    (True, ("tensorflow", "jax", "torch"), "jax"),      # measured fastest on a GPU
    (True, ("tensorflow", "torch"), "torch"),
    (True, ("tensorflow",), "tensorflow"),
    (False, ("tensorflow", "jax", "torch"), "tensorflow"),   # the CPU default stays TensorFlow
    (False, ("jax", "torch"), "jax"),                   # a machine without TensorFlow still works
    (False, ("torch",), "torch"),
])
def test_otherwise_the_best_installed_for_the_device(gpu, installed, expected):
    assert choose({}, has_gpu=gpu, is_installed=only(*installed)).backend == expected


def test_an_unknown_or_missing_backend_is_a_clear_error():
    with pytest.raises(SetupError, match="not a backend"):
        choose({"KERAS_BACKEND": "numpy"}, has_gpu=False, is_installed=only("jax"))
    with pytest.raises(SetupError, match="no Keras backend is installed"):
        choose({}, has_gpu=False, is_installed=only())


def test_importing_the_package_sets_the_backend_and_the_gpu_share():
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_PYTHON_CLIENT_MEM_FRACTION")}
    code = ("import os, src, keras; print(keras.backend.backend(), os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(env, CUDA_VISIBLE_DEVICES="", GPU_SHARE="0.5"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tensorflow", "None"]      # CPU, TensorFlow installed: its default


def test_a_named_backend_gets_its_share_of_the_gpu():
    pytest.importorskip("jax", reason="the second backend: pip install jax")
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_PYTHON_CLIENT_MEM_FRACTION")}
    code = ("import os, src, keras; print(keras.backend.backend(), os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(env, KERAS_BACKEND="jax", GPU_SHARE="0.5"), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["jax", "0.475"]             # half the GPU, less headroom


def test_importing_the_package_never_exits_and_a_command_reports_a_bad_backend():
    env = dict(os.environ, KERAS_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", "import src.train, src.blend; print('imported')"], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "imported", out.stderr
    out = run_module("src.train", "--model", "1d", "--fold", "0", env={"KERAS_BACKEND": "numpy"}, timeout=300)
    assert out.returncode == 2 and "KERAS_BACKEND='numpy' is not a backend" in out.stderr
    assert "Traceback" not in out.stderr
