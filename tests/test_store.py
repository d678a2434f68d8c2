import numpy as np
import pytest

from src.base.errors import DataError
from src.dataset.store import PackedStore


def test_rows_round_trip_and_partial_reads(tmp_path):
    source = tmp_path / "a.wav"
    source.write_bytes(b"x")
    store = PackedStore(tmp_path / "s", "float32", 2, {"k": 1})
    clips = {"a": np.arange(10, dtype=np.float32).reshape(5, 2), "b": np.ones((3, 2), np.float32)}
    for name, rows in clips.items():
        store.append(name, rows, source)
    store.append("bad", None, source, status="skipped", note="empty")
    store.flush()

    reopened = PackedStore(tmp_path / "s", "float32", 2, {"k": 1})
    np.testing.assert_array_equal(reopened.read("a"), clips["a"])
    np.testing.assert_array_equal(reopened.read("a", 1, 3), clips["a"][1:4])
    np.testing.assert_array_equal(reopened.read("b"), clips["b"])
    assert reopened.status("bad") == "skipped" and reopened.length("bad") == 0
    assert reopened.status("never") == "missing"
    with pytest.raises(IndexError):
        reopened.read("a", 3, 3)


def test_other_parameters_are_refused(tmp_path):
    PackedStore(tmp_path / "s", "int16", 1, {"rate": 16000})
    with pytest.raises(DataError, match="Delete"):
        PackedStore(tmp_path / "s", "int16", 1, {"rate": 22050})
