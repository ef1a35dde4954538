"""BPTT through whole networks: finite differences (float64), sparse equals dense."""

import numpy as np
import pytest

from evsim import config
from evsim.network import Network
from evsim.populations import EGRU, GRU, LIF, DenseInput, Embedding, Readout

SUPPORT = 10.0  # surrogate band |v - thr| < 0.1
MARGIN = 0.15


def _two_egru_net(backend="cpu", sparse=True, seed=3):
    net = Network(seed=seed, dtype="float64", backend=backend)
    net.add(DenseInput("x", 3))
    net.add(EGRU("e1", 5, support=SUPPORT))
    net.add(EGRU("e2", 4, support=SUPPORT))
    net.add(Readout("out", 2, leak=0.5))
    net.connect("x", "e1", scale=2.0)
    net.connect("e1", "e2", kind="sparse" if sparse else "dense", p=0.6 if sparse else None,
                scale=2.0)
    net.connect("e1", "out")
    net.connect("e2", "out")
    net.connect("x", "e2")
    return net


def _membranes(net, fp):
    return {n: fp._runs[n].saved.saved.v for n in ("e1", "e2")}


def _with_margin(net, inputs, lengths, margin=MARGIN, rounds=40):
    """Move thresholds of units that come within ``margin`` of firing to
    extremes (always / never fire) until no unit does (as tests/conftest.py)."""
    rng = np.random.default_rng(0)
    T = next(iter(inputs.values())).shape[0]
    valid = (np.arange(T)[:, None] < lengths[None, :])[..., None]
    for _ in range(rounds):
        fp = net.forward(inputs, lengths=lengths, training=True)
        bad_any = False
        for name, v in _membranes(net, fp).items():
            thr = net.populations[name].params["thr"]
            dist = np.where(valid, np.abs(v - thr), np.inf).min(axis=(0, 1))
            bad = dist < margin
            if bad.any():
                bad_any = True
                big = 1.0 + margin + float(np.abs(fp._runs[name].saved.h).max())
                thr[bad] = np.where(rng.random(int(bad.sum())) < 0.5, big, -big)
                break  # upstream first: downstream membranes change
        if not bad_any:
            return
    raise AssertionError("could not keep the thresholds away from the membranes")


def _loss_and_grads(net, inputs, lengths, cot):
    fp = net.forward(inputs, lengths=lengths, training=True)
    loss = sum(float(np.sum(cot[k] * fp.outputs[k])) for k in cot)
    return loss, fp


def _check_fd(net, inputs, lengths, cot, eps=1e-6, rtol=2e-6, atol=1e-9):
    params = net.params()
    _, fp = _loss_and_grads(net, inputs, lengths, cot)
    grads = net.backward(fp, cot)
    assert set(grads) == set(params)
    rng = np.random.default_rng(1)
    for key, p in params.items():
        d = rng.normal(size=p.shape)
        keep = p.copy()
        p += eps * d
        lp, _ = _loss_and_grads(net, inputs, lengths, cot)
        p[...] = keep - eps * d
        lm, _ = _loss_and_grads(net, inputs, lengths, cot)
        p[...] = keep
        fd = (lp - lm) / (2 * eps)
        an = float(np.sum(d * grads[key]))
        assert abs(fd - an) <= atol + rtol * max(abs(fd), abs(an), 1e-3), (key, fd, an)
    return grads, fp


def test_fd_two_egru_populations_with_readout():
    net = _two_egru_net()
    rng = np.random.default_rng(5)
    T, B = 7, 3
    x = rng.normal(size=(T, B, 3))
    lengths = np.array([7, 4, 6])
    inputs = {"x": x}
    _with_margin(net, inputs, lengths)
    cot = {"out": rng.normal(size=(T, B, 2)), "e2": rng.normal(size=(T, B, 4)),
           "e1": rng.normal(size=(T, B, 5))}
    grads, fp = _check_fd(net, inputs, lengths, cot)
    # there are events and silent units in both populations
    for n in ("e1", "e2"):
        assert 0 < fp.stats[n]["activity"] < 1
        assert "bwd_macs" in grads.stats[n] and "backward_sparsity" in grads.stats[n]
        assert "bwd_macs" not in fp.stats[n]
    # every parameter gets a non-zero gradient
    for k in ("e1.R", "e1.thr", "x->e1.W", "e1->e2.W", "e2.R", "e2->out.W", "out.b"):
        assert np.abs(grads[k]).max() > 0, k


def test_fd_embedding_gru_readout():
    net = Network(seed=1, dtype="float64")
    net.add(Embedding("tok", 7, 3))
    net.add(GRU("g", 4))
    net.add(Readout("out", 2))
    net.connect("tok", "g")
    net.connect("g", "out")
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 7, (5, 2))
    lengths = np.array([5, 3])
    cot = {"out": rng.normal(size=(5, 2, 2))}
    grads, _ = _check_fd(net, {"tok": ids}, lengths, cot)
    assert np.abs(grads["tok.E"]).max() > 0


def test_fd_egru_trace_output():
    net = Network(seed=2, dtype="float64")
    net.add(DenseInput("x", 2))
    net.add(EGRU("e", 4, support=SUPPORT, trace_alpha=0.8))
    net.add(Readout("out", 2))
    net.connect("x", "e", scale=2.0)
    net.connect("e", "out")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 2, 2))
    lengths = np.array([6, 6])
    thr = net.populations["e"].params["thr"]
    for _ in range(20):
        fp = net.forward({"x": x}, training=True)
        v = fp._runs["e"].saved.saved.v
        bad = np.abs(v - thr).min(axis=(0, 1)) < MARGIN
        if not bad.any():
            break
        thr[bad] = np.where(np.arange(bad.sum()) % 2, 5.0, -5.0)
    cot = {"out": rng.normal(size=(6, 2, 2)), "e.trace": rng.normal(size=(6, 2, 4))}
    _check_fd(net, {"x": x}, lengths, cot)


@pytest.mark.parametrize("paths", ["auto", "event-driven", "dense"])
def test_sparse_bptt_equals_dense_bptt(monkeypatch, paths):
    """The network's backward on the "cpu" backend equals the dense and reference
    backward, with the automatic switches, with every event-driven path forced
    and with every dense product forced; the counters show which path ran."""
    if paths == "event-driven":
        for name in ("DENSE_SWITCH_ACTIVITY", "BACKWARD_DENSE_SWITCH", "DR_DENSE_SWITCH"):
            monkeypatch.setattr(config, name, 2.0)
        monkeypatch.setattr(config, "GRAD_SOURCE_DENSE_SWITCH", 2.0)  # row-by-row dout W^T
    elif paths == "dense":
        for name in ("DENSE_SWITCH_ACTIVITY", "BACKWARD_DENSE_SWITCH", "DR_DENSE_SWITCH",
                     "GRAD_SOURCE_DENSE_SWITCH"):
            monkeypatch.setattr(config, name, -1.0)
    rng = np.random.default_rng(7)
    T, B = 8, 3
    x = rng.normal(size=(T, B, 3))
    lengths = np.array([8, 5, 2])
    cot = {"out": rng.normal(size=(T, B, 2)), "e1": rng.normal(size=(T, B, 5))}
    res = {}
    for backend in ("cpu", "dense", "reference"):
        net = _two_egru_net(backend=backend)
        fp = net.forward({"x": x}, lengths=lengths, training=True)
        res[backend] = (fp, net.backward(fp, cot))
    fp_s, g_s = res["cpu"]
    for other in ("dense", "reference"):
        fp_d, g_d = res[other]
        for k in fp_s.outputs:
            np.testing.assert_allclose(fp_s.outputs[k], fp_d.outputs[k], rtol=1e-10,
                                       atol=1e-12, err_msg=k)
        for k in g_s:
            np.testing.assert_allclose(g_s[k], g_d[k], rtol=1e-9, atol=1e-11, err_msg=k)
    st = g_s.stats["e2"]
    ps = g_s.projection_stats["e1->out"]
    fwd = fp_s.stats["e2"]
    if paths == "dense":  # e1 (dense input projection): all its work is the dense work
        assert g_s.stats["e1"]["bwd_macs"] == g_s.stats["e1"]["bwd_macs_dense"]
        assert fp_s.stats["e1"]["fwd_macs"] == fp_s.stats["e1"]["fwd_macs_dense"]
    else:  # the event-driven forward and backward did less work than the dense ones
        assert st["bwd_macs"] < st["bwd_macs_dense"]
        assert ps["bwd_macs"] < ps["bwd_macs_dense"]
    if paths == "event-driven":
        assert fwd["fwd_macs"] < fwd["fwd_macs_dense"]
    total = g_s.summary()
    assert total["bwd_macs"] == sum(st["bwd_macs"] for st in g_s.stats.values())


def test_sparse_projection_grads_equal_dense_projection():
    """Same weights as CSR and as a dense matrix: same outputs and gradients
    (dense dW restricted to the non-zeros)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 2, 3))
    cot = {"out": rng.normal(size=(6, 2, 2))}
    sparse_net = _two_egru_net(sparse=True)
    W = sparse_net.projections["e1->e2"].weight
    dense_net = _two_egru_net(sparse=False)
    dense_net.projections["e1->e2"].params["W"][...] = W.toarray()
    out = []
    for net in (sparse_net, dense_net):
        fp = net.forward({"x": x}, training=True)
        out.append((fp, net.backward(fp, cot)))
    (fs, gs), (fd, gd) = out
    np.testing.assert_array_equal(fs.outputs["e2"] != 0, fd.outputs["e2"] != 0)
    np.testing.assert_allclose(fs.outputs["out"], fd.outputs["out"], rtol=1e-12, atol=1e-12)
    dWd = gd["e1->e2.W"]
    rows, cols = W.nonzero()
    Wcsr = W.tocsr()
    Wcsr.sort_indices()
    rr = np.repeat(np.arange(W.shape[0]), np.diff(Wcsr.indptr))
    np.testing.assert_allclose(gs["e1->e2.W"], dWd[rr, Wcsr.indices], rtol=1e-10, atol=1e-12)
    for k in gs:
        if k != "e1->e2.W":
            np.testing.assert_allclose(gs[k], gd[k], rtol=1e-9, atol=1e-12, err_msg=k)


def _lif_reference(x, a_m, a_s, c, th, vr, damp, support, ds):
    """Plain NumPy LIF forward and surrogate backward (oracle); one current
    receptor entering the exactly integrated membrane with coefficient c."""
    T, B, N = x.shape
    i = np.zeros((B, N))
    v = np.zeros((B, N))
    s_all, u_all = np.zeros_like(x), np.zeros_like(x)
    for t in range(T):
        i = a_s * i + x[t]
        u = a_m * v + c * i
        s = (u > th).astype(float)
        v = (1 - s) * u + s * vr
        s_all[t], u_all[t] = s, u
    dx = np.zeros_like(x)
    dv = np.zeros((B, N))
    di = np.zeros((B, N))
    for t in reversed(range(T)):
        u, s = u_all[t], s_all[t]
        sg = damp * np.maximum(0, 1 - support * np.abs(u - th))
        dst = ds[t] + dv * (vr - u)
        du = dv * (1 - s) + dst * sg
        di = di + c * du
        dx[t] = di
        di = a_s * di
        dv = a_m * du
    return s_all, u_all, dx


def test_lif_network_backward_matches_reference():
    net = Network(seed=0, dtype="float64")
    net.add(DenseInput("x", 3))
    lif = net.add(LIF("lif", 4, tau_mem=5.0, tau_syn=2.0, support=0.5))
    net.add(Readout("out", 2))
    net.connect("x", "lif", scale=8.0)
    net.connect("lif", "out")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 2, 3))
    fp = net.forward({"x": x}, training=True)
    cot = {"out": rng.normal(size=(9, 2, 2))}
    g = net.backward(fp, cot)
    drive = (x.reshape(-1, 3) @ net.params()["x->lif.W"]).reshape(9, 2, 4)
    a_m, a_s = np.exp(-1 / 5.0), np.exp(-1 / 2.0)
    c = 2.0 / (2.0 - 5.0) * (a_s - a_m)
    ds = (cot["out"].reshape(-1, 2) @ net.params()["lif->out.W"].T).reshape(9, 2, 4)
    s, u, dx = _lif_reference(drive, a_m, a_s, c, 1.0, 0.0, lif.damp, 0.5, ds)
    np.testing.assert_array_equal(fp.outputs["lif"], s)
    assert 0 < s.mean() < 1
    dW = x.reshape(-1, 3).T @ dx.reshape(-1, 4)
    np.testing.assert_allclose(g["x->lif.W"], dW, rtol=1e-10, atol=1e-12)


def test_backward_errors():
    net = _two_egru_net()
    x = np.zeros((3, 1, 3))
    res = net.run({"x": x})
    with pytest.raises(ValueError, match="training=False"):
        net.backward(res, {})
    fp = net.forward({"x": x})
    with pytest.raises(KeyError, match="no such output"):
        net.backward(fp, {"nope": np.zeros((3, 1, 2))})
    with pytest.raises(ValueError, match="shape"):
        net.backward(fp, {"out": np.zeros((3, 1, 5))})
