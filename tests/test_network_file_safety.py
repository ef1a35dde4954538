"""Network files: a checksum of the parameters, damaged fields named."""

import shutil

import h5py
import numpy as np
import pytest

from evsim.io import FileFormatError
from evsim.network import Network
from evsim.populations import LIF, DenseInput, PoissonInput, Readout


@pytest.fixture
def saved(tmp_path):
    net = Network(seed=3)
    net.add(DenseInput("x", 3))
    net.add(PoissonInput("p", 4, rates=[900.0, 600.0, 1000.0, 500.0]))
    net.add(LIF("lif", 4))
    net.add(Readout("out", 2))
    net.connect("x", "lif")
    net.connect("p", "lif", kind="sparse", p=0.7)
    net.connect("lif", "out")
    path = tmp_path / "net.h5"
    net.save(path)
    return path


def _edit(saved, change, keep_checksum=False):
    path = saved.with_name("edited.h5")
    shutil.copy(saved, path)
    with h5py.File(path, "a") as f:
        change(f)
        if not keep_checksum:
            del f.attrs["params_sha256"]
    return path


def _sparse_key(f, end):
    return "sparse/" + [k for k in f["sparse"] if k.endswith(end)][0]


def _set(f, name, value):
    del f[name]
    f[name] = value


CASES = [
    ("structure not JSON", lambda f: f.attrs.__setitem__("structure", "{"), "'structure'"),
    ("structure a list", lambda f: f.attrs.__setitem__("structure", "[1]"), "'structure'"),
    ("structure null", lambda f: f.attrs.__setitem__("structure", "null"), "'structure'"),
    ("no structure", lambda f: f.attrs.__delitem__("structure"), "'structure'"),
    ("no params", lambda f: f.__delitem__("params"), "params"),
    ("param text", lambda f: _set(f, "params/" + sorted(f["params"])[0], "x"), "weight"),
    ("index out of range", lambda f: _set(f, _sparse_key(f, "indices"),
                                          f[_sparse_key(f, "indices")][()] + 1000), "sparse"),
    ("negative indptr", lambda f: _set(f, _sparse_key(f, "indptr"),
                                       -np.ones_like(f[_sparse_key(f, "indptr")][()])),
     "sparse"),
]


@pytest.mark.parametrize("name,change,pattern", CASES, ids=[c[0] for c in CASES])
def test_damaged_network_file(saved, name, change, pattern):
    path = _edit(saved, change)
    with pytest.raises(FileFormatError) as err:
        Network.load(path)
    assert str(path) in str(err.value) and pattern in str(err.value), str(err.value)


def test_checksum_detects_an_edited_weight(saved):
    def bump(f):
        name = "params/" + sorted(f["params"])[0]
        value = f[name][()]
        value.flat[0] += 1
        f[name][...] = value
    with pytest.raises(FileFormatError, match="checksum"):
        Network.load(_edit(saved, bump, keep_checksum=True))
    Network.load(saved)


@pytest.mark.parametrize("keep", [0.6, 0.05])
def test_truncated_network_file(saved, keep):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(FileFormatError, match=str(saved)):
        Network.load(saved)
