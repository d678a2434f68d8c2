"""Read a PyTorch checkpoint (the zip archive `torch.save` writes) into numpy arrays, without torch.

The archive holds a pickle of the saved object and one raw file per tensor storage. Unpickling is
restricted to the handful of classes a state dict and its plain metadata need (an ordered dict,
tensors, numpy scalars), so a checkpoint cannot run code. Tensors become numpy arrays, each checked
first against its storage (and, given them, the network's shapes), so a crafted file cannot make the
reader allocate more than the file holds.
"""
from __future__ import annotations

import codecs
import collections
import io
import math
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


def _numpy_scalar(dtype, data):
    return np.frombuffer(data, dtype=dtype)[0]


class _Unpickler(pickle.Unpickler):
    """Only ALLOWED's classes; every storage read once, every tensor checked against its storage and the
    whole file before anything is allocated for it."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, np.ndarray] = {}
        self.tensors: dict[tuple, np.ndarray] = {}  # one copy per distinct view (tied weights share it)
        # What all the tensors together may hold: the bytes of the file's storages, which torch.save stores
        # uncompressed (_member refuses others), so the file's own size bounds what reading it allocates.
        self.budget = sum(i.file_size for i in archive.infolist() if i.filename.startswith(f"{prefix}/data/"))

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint read without torch")
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if key not in self.storages:
            raw = _member(self.archive, f"{self.prefix}/data/{key}")
            numel = int(numel)
            if not 0 <= numel * storage_type.dtype.itemsize <= len(raw):
                raise pickle.UnpicklingError(f"storage {key} claims {numel} elements of {storage_type.dtype} but "
                                             f"holds {len(raw)} bytes: the checkpoint is damaged or crafted")
            self.storages[key] = np.frombuffer(raw, dtype=storage_type.dtype, count=numel)
        return self.storages[key]

    def rebuild_tensor(self, storage: np.ndarray, offset: int, size, stride, *_ignored) -> np.ndarray:
        """A tensor as a copy of its view of the storage (sizes and strides in elements). Every element it
        addresses must lie inside the storage, it may not hold more elements than the storage (a stride of
        0 would make 4 bytes 1.6 GB), and all tensors together no more than the file's storages."""
        size, stride, offset = tuple(int(n) for n in size), tuple(int(s) for s in stride), int(offset)
        shape = f"a tensor of sizes {size}, strides {stride} and offset {offset}"
        if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
            raise pickle.UnpicklingError(f"{shape}: not a tensor this reader takes")
        if 0 in size:
            return np.zeros(size, storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(storage):
            raise pickle.UnpicklingError(f"{shape} reaches element {last} of a storage of {len(storage)}: the "
                                         f"checkpoint is damaged or crafted")
        numel = math.prod(size)
        if numel > len(storage):
            raise pickle.UnpicklingError(f"{shape} has {numel} elements, more than its storage's {len(storage)} "
                                         f"(its elements overlap): not a saved parameter; the checkpoint is crafted")
        if len(size) == 0:
            return storage[offset].copy()
        key = (id(storage), offset, size, stride)
        if key not in self.tensors:
            self.budget -= numel * storage.itemsize
            if self.budget < 0:
                raise pickle.UnpicklingError(f"{shape}: with the tensors before it, it holds more than the "
                                             f"checkpoint's storages hold; the checkpoint is crafted")
            strides = [s * storage.itemsize for s in stride]
            self.tensors[key] = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides).copy()
        return self.tensors[key]


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): codecs.encode,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}
"""What a checkpoint may name besides torch._utils._rebuild_tensor_v2 (_Unpickler.rebuild_tensor)."""


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    """One file of the archive, stored as torch.save stores it (uncompressed: a compressed one could
    inflate to any size)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise pickle.UnpicklingError(f"{name} is missing from the checkpoint: it is damaged") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise pickle.UnpicklingError(f"{name} is compressed in the checkpoint, which torch.save never does: "
                                     f"the checkpoint is crafted")
    return archive.read(info)


def read_checkpoint(path: Path, shapes: dict[str, tuple] | None = None):
    """The object saved at `path` by torch.save, with its tensors as numpy arrays. `shapes`: the network's
    tensors by name (in any dict of the object) and the shape it expects of each; a tensor of another
    shape, or one missing, is refused. pickle.UnpicklingError naming `path` for whatever is refused."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path} is not a torch.save archive (no single */data.pkl inside)")
        prefix = pickles[0][: -len("/data.pkl")]
        order = archive.read(f"{prefix}/byteorder").decode() if f"{prefix}/byteorder" in archive.namelist() \
            else "little"
        if order != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        try:
            saved = _Unpickler(archive, prefix, _member(archive, pickles[0])).load()
            _check_shapes(saved, shapes or {})
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(f"{path}: {error}") from None
        return saved


def _check_shapes(saved, shapes: dict[str, tuple]) -> None:
    found: dict[str, tuple] = {}
    stack = [saved]
    while stack:  # the dicts of the saved object (a state dict, perhaps inside a tuple or another dict)
        item = stack.pop()
        if isinstance(item, dict):
            found.update({k: np.shape(v) for k, v in item.items() if k in shapes})
            stack += list(item.values())
        elif isinstance(item, list | tuple):
            stack += list(item)
    for name, expected in shapes.items():
        if name not in found:
            raise pickle.UnpicklingError(f"the network expects a tensor {name} of shape {tuple(expected)}; the "
                                         f"checkpoint has none")
        if tuple(found[name]) != tuple(expected):
            raise pickle.UnpicklingError(f"{name} has shape {tuple(found[name])}; the network expects "
                                         f"{tuple(expected)}")
