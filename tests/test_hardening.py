"""Hardening: what reaches a kernel is checked first; results cannot be
changed behind the backward pass's back; impossible memory requests fail fast."""

import threading

import numpy as np
import pytest

import evsim.functional as F
from evsim import _validate
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

RNG = np.random.default_rng(0)
T, B, I, H = 4, 2, 3, 5


def _egru_args(dtype="f4"):
    r = np.random.default_rng(1)
    return dict(x=r.normal(size=(T, B, I)).astype(dtype), W=r.normal(size=(I, 3 * H)).astype(dtype),
                R=r.normal(size=(H, 3 * H)).astype(dtype), bx=np.zeros(3 * H, dtype),
                br=np.zeros(3 * H, dtype), thr=np.full(H, 0.3, dtype),
                h0=np.zeros((B, H), dtype), y0=np.zeros((B, H), dtype))


def _fwd(kw, **extra):
    kw = dict(kw)
    pos = [kw.pop(k) for k in ("x", "W", "R", "bx", "br", "thr")]
    return F.egru_forward(*pos, **kw, **extra)


def _big(a):
    return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder in "=<" else "<"))


# -- 1. every array that reaches a kernel is checked at the boundary ---------------

@pytest.mark.parametrize("name", ["x", "W", "R", "bx", "br", "thr", "h0", "y0"])
def test_egru_forward_rejects_big_endian(name):
    kw = _egru_args()
    kw[name] = _big(kw[name])
    with pytest.raises(TypeError, match=name):
        _fwd(kw)


def test_egru_backward_rejects_big_endian_gradients():
    out = _fwd(_egru_args(), trace_alpha=0.9)
    dy = np.ones(out.y.shape, "f4")
    for name, kw in (("dy", dict(dy=_big(dy))), ("dh_last", dict(dy=dy, dh_last=_big(dy[0]))),
                     ("dy_last", dict(dy=dy, dy_last=_big(dy[0]))),
                     ("dtrace", dict(dy=dy, dtrace=_big(dy)))):
        with pytest.raises(TypeError, match=name):
            F.egru_backward(out, **kw)


def test_drive_and_gru_entry_points_reject_big_endian():
    kw = _egru_args()
    drive = np.ones((T, B, 3 * H), "f4")
    with pytest.raises(TypeError, match="drive"):
        F.egru_forward_drive(_big(drive), kw["R"], kw["br"], kw["thr"])
    with pytest.raises(TypeError, match="drive"):
        F.gru_forward_drive(_big(drive), kw["R"], kw["br"])
    with pytest.raises(TypeError, match="R"):
        F.gru_forward(kw["x"], kw["W"], _big(kw["R"]), kw["bx"], kw["br"])


def _lif_args():
    cell = F.lif_cell(10.0, [(0, 0.0, 0.0)], 1.0)
    return dict(x=RNG.normal(size=(T, B, H)), v0=np.zeros((B, H)), I0=np.zeros((B, H)),
                r0=np.zeros((B, H), np.int64), lengths=np.full(B, T, np.int64), cell=cell)


@pytest.mark.parametrize("name", ["x", "v0", "I0", "r0", "lengths"])
def test_lif_forward_rejects_big_endian(name):
    kw = _lif_args()
    kw[name] = _big(kw[name])
    with pytest.raises(TypeError, match=name):
        F.lif_forward(**kw)


@pytest.mark.parametrize("name, value", [("r0", -1), ("lengths", T + 1), ("lengths", -1)])
def test_lif_forward_rejects_out_of_range(name, value):
    kw = _lif_args()
    kw[name] = np.full_like(kw[name], value)
    with pytest.raises(ValueError, match=name):
        F.lif_forward(**kw)


def _prop_args():
    y = (RNG.random((T, B, H)) < 0.5).astype("f4")
    return dict(y=y, out=np.zeros((T, B, 4), "f4"), lengths=np.full(B, T, np.int64),
                W=RNG.normal(size=(H, 4)).astype("f4"))


@pytest.mark.parametrize("name", ["y", "out", "lengths", "W"])
def test_propagate_rejects_big_endian(name):
    kw = _prop_args()
    kw[name] = _big(kw[name])
    with pytest.raises(TypeError, match=name):
        F.propagate(**kw)


def test_propagate_backward_rejects_big_endian_and_bad_events():
    kw = _prop_args()
    dout = np.ones((T, B, 4), "f4")
    with pytest.raises(TypeError, match="dout"):
        F.propagate_backward(kw["y"], _big(dout), kw["lengths"], kw["W"])
    ev_idx, ev_cnt = F.compact_events(kw["y"], kw["lengths"])
    for events, exc, what in (((_big(ev_idx), ev_cnt), TypeError, "ev_idx"),
                              ((ev_idx, _big(ev_cnt)), TypeError, "ev_cnt"),
                              ((np.full_like(ev_idx, H), np.full_like(ev_cnt, H)), ValueError,
                               "ev_idx"),
                              ((ev_idx, np.full_like(ev_cnt, H + 1)), ValueError, "ev_cnt"),
                              ((ev_idx[:-1], ev_cnt), ValueError, "ev_idx")):
        with pytest.raises(exc, match=what):
            F.propagate(kw["y"], kw["out"], kw["lengths"], kw["W"], events=events)
        with pytest.raises(exc, match=what):
            F.propagate_backward(kw["y"], dout, kw["lengths"], kw["W"], events=events)


def test_csr_rejects_big_endian_and_out_of_range_indices():
    indptr = np.array([0, 1, 2], np.int64)
    indices = np.array([0, 3], np.int64)
    with pytest.raises(TypeError, match="indptr"):
        F.csr(_big(indptr), indices, (2, 4))
    with pytest.raises(TypeError, match="indices"):
        F.csr(indptr, _big(indices), (2, 4))
    with pytest.raises(ValueError, match="indices"):
        F.csr(indptr, np.array([0, 4]), (2, 4))
    with pytest.raises(ValueError, match="indptr"):
        F.csr(np.array([0, 3, 2]), indices, (2, 4))


def test_trace_and_compact_events_reject_big_endian():
    y = np.ones((T, B, H), "f4")
    with pytest.raises(TypeError, match="y"):
        F.output_trace(_big(y), 0.9)
    with pytest.raises(TypeError, match="dtrace"):
        F.output_trace_backward(_big(y), 0.9)
    with pytest.raises(TypeError, match="y"):
        F.compact_events(_big(y), np.full(B, T))


# every population kind through a Network: big-endian inputs are converted
# (same result as native ones), bad indices are refused before a kernel runs

def _kind_net(kind):
    net = Network(seed=0)
    if kind == "dense":
        net.add(DenseInput("in", 3))
    elif kind == "spike":
        net.add(SpikeInput("in", 3))
    elif kind == "poisson":
        net.add(PoissonInput("in", 3, rates=0.5, unit="prob"))
    else:
        net.add(Embedding("in", 6, 3))
    net.add(EGRU("e", 4))
    net.add(GRU("g", 3))
    net.add(LIF("l", 3))
    net.add(Readout("o", 2))
    net.connect("in", "e")
    net.connect("e", "g", kind="sparse", p=0.7)
    net.connect("g", "l")
    net.connect("l", "o", kind="sparse", p=0.7)
    return net


def _kind_input(kind):
    r = np.random.default_rng(2)
    if kind in ("dense", "poisson"):
        return r.random((T, B, 3)).astype(">f8")
    if kind == "spike":
        return {"times": np.array([0, 1, 3], ">i8"), "indices": np.array([0, 2, 1], ">i8"),
                "batch": np.array([0, 1, 1], ">i4"), "values": np.array([1.0, 2, 3], ">f4")}
    return r.integers(0, 6, (T, B)).astype(">i8")


def _native(value):
    if isinstance(value, dict):
        return {k: v.astype(v.dtype.newbyteorder("=")) for k, v in value.items()}
    return value.astype(value.dtype.newbyteorder("="))


@pytest.mark.parametrize("kind", ["dense", "spike", "poisson", "embedding"])
def test_network_converts_big_endian_inputs(kind):
    value = _kind_input(kind)
    a = _kind_net(kind).forward({"in": value}, lengths=np.full(B, T), steps=T)
    b = _kind_net(kind).forward({"in": _native(value)}, lengths=np.full(B, T), steps=T)
    for name in a.outputs:
        np.testing.assert_array_equal(a.outputs[name], b.outputs[name])


@pytest.mark.parametrize("kind", ["spike", "embedding"])
def test_network_rejects_out_of_range_input_indices(kind):
    value = _kind_input(kind)
    if kind == "spike":
        value = dict(value, indices=np.array([0, 3, 1]))
    else:
        value = np.full((T, B), 6)
    with pytest.raises(ValueError, match="in"):
        _kind_net(kind).forward({"in": value}, steps=T)


@pytest.mark.parametrize("param", ["e.R", "e.thr", "g.R", "in->e.W", "e->g.W", "l->o.W"])
def test_network_rejects_big_endian_and_misshaped_parameters(param):
    net = _kind_net("dense")
    x = np.random.default_rng(3).random((T, B, 3))
    owner, _, key = param.rpartition(".")
    holder = net.projections[owner] if "->" in owner else net.populations[owner]
    good = holder.params[key]
    holder.params[key] = _big(good)
    with pytest.raises((TypeError, ValueError)):
        net.forward({"in": x})
    holder.params[key] = np.concatenate([good.ravel(), good.ravel()[:1]])
    with pytest.raises((TypeError, ValueError)):
        net.forward({"in": x})


def test_network_rejects_out_of_range_sparse_structure():
    net = _kind_net("dense")
    proj = net.projections["e->g"]
    proj.indices = proj.indices.copy()
    proj.indices[-1] = 99
    with pytest.raises(ValueError, match="e->g"):
        net.forward({"in": np.ones((T, B, 3))})


@pytest.mark.parametrize("proj", ["e->g", "l->o"])
def test_nan_in_sparse_weights_names_the_projection(proj):
    net = _kind_net("dense")
    net.projections[proj].params["W"][0] = np.nan
    for training in (True, False):
        with pytest.raises(ValueError, match=proj):
            net.forward({"in": np.ones((T, B, 3))}, training=training)


# -- a forward pass is tied to its network and parameter arrays --------------------

def _small_net(seed, H=5):
    net = Network(seed=seed)
    net.add(DenseInput("x", 3))
    net.add(EGRU("e", H))
    net.add(EGRU("e2", 4))
    net.add(Readout("o", 2))
    net.connect("x", "e")
    net.connect("e", "e2", kind="sparse", p=0.5)
    net.connect("e2", "o")
    return net


@pytest.mark.parametrize("other_H", [5, 9, 2])
def test_backward_refuses_another_networks_forward_pass(other_H):
    x = np.random.default_rng(0).normal(size=(T, B, 3))
    a, b = _small_net(0), _small_net(1, other_H)
    fp = a.forward({"x": x})
    with pytest.raises(ValueError, match="another network"):
        b.backward(fp, {"o": np.ones((T, B, 2))})
    a.backward(fp, {"o": np.ones((T, B, 2))})  # its own network still takes it


@pytest.mark.parametrize("how", ["param", "structure", "connect", "add"])
def test_backward_refuses_a_changed_network(how):
    net = _small_net(0)
    fp = net.forward({"x": np.ones((T, B, 3))})
    if how == "param":
        net.populations["e"].params["R"] = net.populations["e"].params["R"].copy()
    elif how == "structure":
        net.projections["e->e2"].indices = net.projections["e->e2"].indices.copy()
    elif how == "connect":
        net.connect("e", "o")
    else:
        net.add(EGRU("new", 3))
    with pytest.raises(ValueError, match="changed|replaced"):
        net.backward(fp, {"o": np.ones((T, B, 2))})


def test_in_place_update_after_backward_is_the_normal_pattern():
    net = _small_net(0)
    for _ in range(2):
        fp = net.forward({"x": np.ones((T, B, 3))})
        grads = net.backward(fp, {"o": np.ones((T, B, 2))})
        for k, v in net.params().items():
            v -= 0.01 * grads[k]


# -- 2. no silent wrong result ----------------------------------------------------

def _mutations():
    return {
        "y": lambda out, kw: out.y.__imul__(0.5),
        "h": lambda out, kw: out.h.__imul__(0.5),
        "c": lambda out, kw: out.c.__imul__(0.0),
        "events": lambda out, kw: out.events and out.events[1].__imul__(0),
        "x": lambda out, kw: kw["x"].__imul__(2.0),
        "W": lambda out, kw: kw["W"].__imul__(2.0),
        "R": lambda out, kw: kw["R"].__imul__(2.0),
        "thr": lambda out, kw: kw["thr"].__iadd__(0.1),
        "h0": lambda out, kw: kw["h0"].__iadd__(0.1),
    }


@pytest.mark.parametrize("backend", ["cpu", "dense", "reference"])
@pytest.mark.parametrize("what", list(_mutations()))
def test_backward_does_not_depend_on_later_mutations(backend, what):
    kw = _egru_args("f8")
    kw["h0"] = np.full((B, H), 0.2)
    ref_out = _fwd({k: v.copy() for k, v in kw.items()}, backend=backend)
    dy = np.random.default_rng(5).normal(size=ref_out.y.shape)
    ref = F.egru_backward(ref_out, dy)
    out = _fwd(kw, backend=backend)
    try:
        _mutations()[what](out, kw)
    except ValueError as err:  # a read-only result array: refused, fine
        assert "read-only" in str(err)
    if what == "events" and out.events is None:
        return
    got = F.egru_backward(out, dy)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_result_arrays_are_read_only():
    out = _fwd(_egru_args())
    for name in ("y", "h", "c", "h_last", "y_last"):
        assert not getattr(out, name).flags.writeable, name
    for arr in out.events:
        assert not arr.flags.writeable


def test_network_outputs_mutation_does_not_change_gradients():
    x = np.random.default_rng(0).normal(size=(T, B, 3))
    g = {"o": np.ones((T, B, 2))}
    net = _small_net(0)
    fp = net.forward({"x": x})
    ref = net.backward(fp, g)
    fp = net.forward({"x": x})
    for v in fp.outputs.values():
        try:
            v *= 0.5
        except ValueError:
            pass
    got = net.backward(fp, g)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_two_python_threads_running_forward_passes_restore_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from evsim import threads

    controllers = threads._blas_controllers()
    if not controllers:
        pytest.skip("no BLAS found by threadpoolctl")
    before = [lc.num_threads for lc in controllers]
    user = max(2, before[0])
    with threadpoolctl.threadpool_limits(user, user_api="blas"):
        want = [lc.num_threads for lc in threads._blas_controllers()]
        errors = []
        barrier = threading.Barrier(2)

        def work(seed):
            try:
                barrier.wait()
                net = _small_net(seed)
                for _ in range(5):
                    fp = net.forward({"x": np.ones((T, B, 3))})
                    net.backward(fp, {"o": np.ones((T, B, 2))})
            except Exception as err:  # pragma: no cover - reported below
                errors.append(err)

        ts = [threading.Thread(target=work, args=(s,)) for s in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors
        assert [lc.num_threads for lc in threads._blas_controllers()] == want
    assert [lc.num_threads for lc in threads._blas_controllers()] == before


# -- 3. impossible memory requests fail fast --------------------------------------

def test_functional_memory_errors_name_the_sizes_before_allocating(monkeypatch):
    kw = _egru_args()
    Hb = 500
    kw.update(W=np.zeros((I, 3 * Hb), "f4"), R=np.zeros((Hb, 3 * Hb), "f4"),
              bx=np.zeros(3 * Hb, "f4"), br=np.zeros(3 * Hb, "f4"), thr=np.ones(Hb, "f4"))
    kw.update(x=np.zeros((50, 20, I), "f4"), h0=None, y0=None)
    out = _fwd(kw)  # fits
    monkeypatch.setattr(_validate, "available_memory", lambda: 10 * 2**20)
    with pytest.raises(MemoryError, match=rf"T=50, B=20, H={Hb}.*GiB"):
        _fwd(kw)
    with pytest.raises(MemoryError, match=rf"backward.*T=50, B=20, H={Hb}"):
        F.egru_backward(out, np.zeros(out.y.shape, "f4"))
    with pytest.raises(MemoryError, match="T=50, B=20"):
        F.egru_forward_drive(np.zeros((50, 20, 3 * Hb), "f4"), kw["R"], kw["br"], kw["thr"])


def test_huge_network_run_raises_memory_error():
    net = Network(seed=0)
    net.add(SpikeInput("s", 10))
    net.add(EGRU("e", 2000))
    net.connect("s", "e")
    with pytest.raises(MemoryError, match="GiB"):
        net.forward({"s": {"times": [0], "indices": [0], "batch": [0]}}, steps=10_000_000,
                    lengths=np.full(8, 10_000_000))


def test_memory_estimate_reads_meminfo():
    assert _validate.available_memory() > 0
