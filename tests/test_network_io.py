"""Save and load: structure, parameters, state and random streams, bit for bit."""

import h5py
import numpy as np
import pytest

from evsim.io import FileFormatError
from evsim.network import Network
from evsim.populations import (
    EGRU,
    GRU,
    LIF,
    DenseInput,
    Embedding,
    PoissonInput,
    Readout,
    SpikeInput,
)


def _net():
    net = Network(seed=11, dtype="float32", dt=0.5)
    net.add(DenseInput("x", 3))
    net.add(PoissonInput("p", 4, rates=[900.0, 600.0, 1000.0, 500.0]))
    net.add(SpikeInput("s", 2))
    net.add(Embedding("tok", 5, 3))
    net.add(EGRU("e", 6, zoneout=0.2, dropconnect=0.1, support=2.0, trace_alpha=0.9))
    net.add(LIF("lif", 4, tau_mem=0.5, tau_syn=0.5))
    net.add(GRU("g", 3))
    net.add(Readout("out", 2, leak=0.5))
    net.connect("x", "e", scale=2.0)
    net.connect("tok", "e")
    net.connect("p", "lif", kind="sparse", p=0.5, scale=8.0)
    net.connect("s", "lif")
    net.connect("e", "g")
    net.connect("e", "out")
    net.connect("lif", "out", kind="sparse", p=0.7)
    net.connect("g", "out")
    return net


def _inputs(T=6, B=2):
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(T, B, 3)).astype(np.float32),
            "tok": rng.integers(0, 5, (T, B)),
            "s": {"times": [1, 3], "indices": [0, 1], "batch": [1, 0]}}


def test_save_load_reproduces_events_bit_for_bit(tmp_path):
    net = _net()
    net.forward(_inputs())  # advance the random streams, keep a state
    path = tmp_path / "net.h5"
    net.save(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["evsim_format"] == "network"
        assert f.attrs["seed"] == 11 and f.attrs["dt"] == 0.5
        assert "format_version" in f.attrs and "evsim_version" in f.attrs
    net2 = Network.load(path)
    assert net2.structure() == net.structure()
    p1, p2 = net.params(), net2.params()
    assert set(p1) == set(p2)
    for k in p1:
        assert p1[k].dtype == p2[k].dtype
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    for k in net.state:
        for v in net.state[k]:
            np.testing.assert_array_equal(net.state[k][v], net2.state[k][v])
    # training-mode runs (zoneout, dropconnect, Poisson) continue the same streams
    for training in (True, False):
        a = net.forward(_inputs(), training=training, reset=False)
        b = net2.forward(_inputs(), training=training, reset=False)
        for k in a.outputs:
            np.testing.assert_array_equal(a.outputs[k], b.outputs[k], err_msg=k)
    assert a.stats["e"]["events"] > 0 and a.stats["lif"]["events"] > 0


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Network.load(tmp_path / "missing.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(FileFormatError, match="not one written by evsim"):
        Network.load(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        Network.load(garbage)
    good = tmp_path / "good.h5"
    _net().save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError):
        Network.load(trunc)
    # a parameter removed: corrupt file, clear error
    broken = tmp_path / "broken.h5"
    broken.write_bytes(data)
    with h5py.File(broken, "r+") as f:
        del f["params"]["e.R"]
    with pytest.raises(FileFormatError, match="checksum"):
        Network.load(broken)
    with h5py.File(broken, "r+") as f:
        del f.attrs["params_sha256"]  # a file of an older evsim: the structure check
    with pytest.raises(FileFormatError, match="corrupt"):
        Network.load(broken)
    with h5py.File(broken, "r+") as f:
        f.attrs["structure"] = "{not json"
    with pytest.raises(FileFormatError, match="attribute 'structure' is invalid"):
        Network.load(broken)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "net.h5"
    net = _net()
    net.save(path)
    before = path.read_bytes()

    def boom():
        raise RuntimeError("disk full")

    monkeypatch.setattr(net, "rng_state", boom)
    with pytest.raises(RuntimeError):
        net.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.h5"]
