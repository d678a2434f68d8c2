"""Read a PyTorch checkpoint (the zip archive `torch.save` writes) into numpy arrays, without torch.

The archive holds a pickle of the saved object and one raw file per tensor storage. Unpickling is
restricted to the handful of classes a state dict and its plain metadata need (an ordered dict,
tensors, numpy scalars), so a checkpoint cannot run code. Tensors become numpy arrays.
"""
from __future__ import annotations

import codecs
import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_ignored) -> np.ndarray:
    """A tensor as a copy of its view of the storage (sizes and strides in elements). Every element it
    addresses must lie inside the storage: a crafted file must not make the view read outside it."""
    size, stride, offset = tuple(int(n) for n in size), tuple(int(s) for s in stride), int(offset)
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
        raise pickle.UnpicklingError(f"a tensor of sizes {size}, strides {stride} and offset {offset}: not a "
                                     f"tensor this reader takes")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise pickle.UnpicklingError(f"a tensor of sizes {size}, strides {stride} and offset {offset} reaches "
                                     f"element {last} of a storage of {len(storage)}: the checkpoint is damaged "
                                     f"or crafted")
    if len(size) == 0:
        return storage[offset].copy()
    strides = [s * storage.itemsize for s in stride]
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides).copy()


def _numpy_scalar(dtype, data):
    return np.frombuffer(data, dtype=dtype)[0]


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): codecs.encode,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint read without torch")
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype, count=numel)


def read_checkpoint(path: Path):
    """The object saved at `path` by torch.save, with its tensors as numpy arrays."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path} is not a torch.save archive (no single */data.pkl inside)")
        prefix = pickles[0][: -len("/data.pkl")]
        order = archive.read(f"{prefix}/byteorder").decode() if f"{prefix}/byteorder" in archive.namelist() \
            else "little"
        if order != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        return _Unpickler(archive, prefix, archive.read(pickles[0])).load()
