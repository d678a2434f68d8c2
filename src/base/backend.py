"""Which Keras backend runs, on which device, chosen once before Keras is imported.

The rule: a backend named in KERAS_BACKEND wins. Otherwise the best one installed for the device:
with an NVIDIA GPU, JAX, then PyTorch, then TensorFlow (on an H200, `logmel` trains 8.8x faster under
JAX than under PyTorch; docs/speed.md); on the CPU, TensorFlow, then JAX, then PyTorch. Keras itself
defaults to TensorFlow and fails to import without it, so the choice is written to KERAS_BACKEND
when the `src` package is imported (select), before any module imports Keras.

GPU_SHARE (set by run_folds.sh from FOLDS_PER_GPU) is the share of a GPU's memory this process may
take: JAX would otherwise take 75 % per process, so a second fold process on the same GPU would fail.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import SetupError, UsageError

BACKENDS = ("tensorflow", "jax", "torch")
PREFERENCE = {"gpu": ("jax", "torch", "tensorflow"), "cpu": ("tensorflow", "jax", "torch")}


@dataclass(frozen=True)
class Choice:
    backend: str
    device: str   # gpu or cpu: what the rule saw, before the backend was imported
    reason: str


def gpu_visible() -> bool:
    """An NVIDIA GPU is installed and not hidden by CUDA_VISIBLE_DEVICES (checked without importing a
    framework: the driver's /proc entries, or its device files where a container hides /proc)."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def choose(environ=os.environ, has_gpu=None, is_installed=installed) -> Choice:
    """The backend by the rule above (pure: the environment, device and packages are arguments)."""
    device = "gpu" if (gpu_visible() if has_gpu is None else has_gpu) else "cpu"
    named = environ.get("KERAS_BACKEND", "").strip()
    if named:
        if named not in BACKENDS:
            raise SetupError(f"KERAS_BACKEND={named!r} is not a backend this project runs on: use one of "
                             f"{', '.join(BACKENDS)}, or unset it to let src.base.backend choose")
        return Choice(named, device, "named in KERAS_BACKEND")
    for name in PREFERENCE[device]:
        if is_installed(name):
            return Choice(name, device, f"the best installed for the {device.upper()}; "
                                        f"KERAS_BACKEND=... names another")
    raise SetupError("no Keras backend is installed: pip install tensorflow (CPU), or jax / torch "
                     "(see README, 'On a GPU')")


def gpu_share() -> float | None:
    """GPU_SHARE as a number (at most 1), or None when no share is set."""
    share = os.environ.get("GPU_SHARE")
    return min(1.0, float(share)) if share else None


_chosen: Choice | SetupError | None = None  # what select() found, once per process


def select() -> Choice | None:
    """Apply the choice to this process's environment (before Keras is imported) and return it; None when
    no backend can be chosen (current() then raises the reason as a SetupError). Runs when the package is
    imported, so it never raises: importing src must not end a process."""
    global _chosen
    try:
        _chosen = choose()
    except SetupError as error:
        _chosen = error
        return None
    os.environ["KERAS_BACKEND"] = _chosen.backend
    share = gpu_share()
    if share and _chosen.backend == "jax":
        # Preallocation of a fixed share keeps several fold processes on one GPU from starving each other.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.95 * share:.3f}")
    if _chosen.backend == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _chosen


def current() -> Choice:
    """The backend this process runs; a SetupError saying why when none could be chosen. Commands that
    need Keras call it before importing it."""
    if _chosen is None:
        select()
    if isinstance(_chosen, SetupError):
        raise _chosen
    return _chosen


def configure(compile_cache: Path | None = None) -> str:
    """After Keras is imported: per-backend settings that need the framework (GPU memory share for
    PyTorch and TensorFlow, JAX's persistent compilation cache in the compile_cache folder). Returns a
    line for the run's log."""
    import keras

    backend = keras.backend.backend()
    notes = []
    share = gpu_share()
    if backend == "jax":
        import jax

        platform = jax.default_backend()
        if compile_cache is not None:
            cache = Path(compile_cache) / "jax"
            cache.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(cache))
            # Keep every compiled step, however quick to build: the point is that no fold pays twice.
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
            notes.append(f"compilation cache {cache}")
    elif backend == "torch":
        import torch

        platform = "gpu" if torch.cuda.is_available() else "cpu"
        if share and platform == "gpu":
            torch.cuda.set_per_process_memory_fraction(share)
        notes.append("no persistent compilation cache under torch")
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        platform = "gpu" if gpus else "cpu"
        for gpu in gpus:  # grow as needed instead of taking the whole GPU
            tf.config.experimental.set_memory_growth(gpu, True)
    if share and platform == "gpu":
        notes.append(f"GPU memory share {share:.2f}")
    return f"backend {backend} on {platform}" + (f"; {', '.join(notes)}" if notes else "")


def accelerator() -> bool:
    """The running backend computes on a GPU (Keras must be imported)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return jax.default_backend() == "gpu"
    if backend == "torch":
        import torch
        return torch.cuda.is_available()
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


def steps_per_execution(asked: int, on_gpu: bool) -> int:
    """Training steps per call of Keras's train function: `asked`, or when 0, 8 on a GPU and 1 on the
    CPU. TensorFlow compiles them into one loop; Keras's JAX trainer still dispatches each step's
    compiled function on its own and saves only its per-step bookkeeping (callbacks, logs) between
    them. PyTorch's Keras trainer takes 1 only."""
    import keras

    torch = keras.backend.backend() == "torch"
    if asked > 1 and torch:
        raise UsageError(f"--steps-per-execution {asked}: Keras's PyTorch backend runs one step per call; "
                         f"use 1 (or 0 for the default), or another backend")
    return asked or (8 if on_gpu and not torch else 1)


def has_tensorflow() -> bool:
    """TensorFlow-only pieces (TensorBoard logs, SavedModel export) need it installed."""
    return installed("tensorflow")


def device_memory() -> int | None:
    """Bytes of GPU memory this process may take (its GPU_SHARE where one is set), or None on the CPU
    or where the backend does not say (TensorFlow grows its allocation and reports no limit)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return (device.memory_stats() or {}).get("bytes_limit") if device.platform == "gpu" else None
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.get_device_properties(0).total_memory * (gpu_share() or 1.0))
    return None
