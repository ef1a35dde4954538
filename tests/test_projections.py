"""Projection kernels: event propagation equals the dense product, CSR equals dense."""

import numpy as np
import pytest
import scipy.sparse as sp

from evsim.kernels import cpu_events as kev
from evsim.network import Network
from evsim.populations import EGRU, DenseInput, Readout, SpikeInput


def _events(y, lengths):
    T, B, N = y.shape
    idx = np.empty((T, B, N), np.int32)
    cnt = np.empty((T, B), np.int32)
    total = kev.compact_events(y, lengths, idx, cnt)
    return idx, cnt, total


def _sparse_y(rng, T, B, N, p, dtype=np.float64):
    return np.ascontiguousarray(rng.normal(size=(T, B, N)) * (rng.random((T, B, N)) < p), dtype)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("B", [1, 3])
def test_event_propagation_equals_dense_product(p, B):
    rng = np.random.default_rng(0)
    T, N, M = 5, 7, 11
    y = _sparse_y(rng, T, B, N, p)
    W = rng.normal(size=(N, M))
    lengths = np.full(B, T, np.int64)
    lengths[-1] = 3
    y[3:, -1] = 0  # a source's outputs past the length are zero
    idx, cnt, total = _events(y, lengths)
    assert total == np.count_nonzero(y)
    out = np.zeros((T, B, M))
    macs = kev.propagate_dense(idx, cnt, y, W, lengths, out)
    np.testing.assert_allclose(out, y @ W, rtol=1e-12, atol=1e-12)
    assert macs == total * M
    # weight gradient over rows of units that fired, event by event
    dout = rng.normal(size=(T, B, M))
    dW = np.empty_like(W)
    wmacs = kev.grad_weight_dense(idx, cnt, y, dout, lengths, dW)
    np.testing.assert_allclose(dW, y.reshape(-1, N).T @ dout.reshape(-1, M), rtol=1e-12,
                               atol=1e-12)
    assert wmacs == total * M
    # source gradient, all units and masked
    ds = np.empty_like(y)
    kev.grad_source_dense(dout, W, np.zeros((1, 1, 1), bool), False, lengths, ds)
    want = dout @ W.T
    want[3:, -1] = 0
    np.testing.assert_allclose(ds, want, rtol=1e-12, atol=1e-12)
    mask = rng.random((T, B, N)) < 0.5
    n = kev.grad_source_dense(dout, W, mask, True, lengths, ds)
    np.testing.assert_allclose(ds, np.where(mask, want, 0), rtol=1e-12, atol=1e-12)
    valid = (np.arange(T)[:, None] < lengths)[..., None]
    assert n == int((mask & valid).sum()) * M


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csr_kernels_equal_dense(dtype):
    rng = np.random.default_rng(1)
    T, B, N, M = 4, 2, 9, 6
    y = _sparse_y(rng, T, B, N, 0.4, dtype)
    Wd = (rng.normal(size=(N, M)) * (rng.random((N, M)) < 0.3)).astype(dtype)
    W = sp.csr_matrix(Wd)
    W.sort_indices()
    indptr, indices = W.indptr.astype(np.int64), W.indices.astype(np.int64)
    data = W.data.astype(dtype)
    lengths = np.full(B, T, np.int64)
    idx, cnt, _ = _events(y, lengths)
    out = np.zeros((T, B, M), dtype)
    macs = kev.propagate_csr(idx, cnt, y, indptr, indices, data, lengths, out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, y @ Wd, rtol=tol, atol=tol)
    assert macs == sum(int(np.diff(indptr)[i]) for i in np.nonzero(y)[2])
    dout = rng.normal(size=(T, B, M)).astype(dtype)
    ddata = np.empty_like(data)
    kev.grad_weight_csr(idx, cnt, y, dout, indptr, indices, lengths, ddata)
    dWd = y.reshape(-1, N).T @ dout.reshape(-1, M)
    rows = np.repeat(np.arange(N), np.diff(indptr))
    np.testing.assert_allclose(ddata, dWd[rows, indices], rtol=tol, atol=tol)
    ds = np.empty_like(y)
    kev.grad_source_csr(dout, indptr, indices, data, np.zeros((1, 1, 1), bool), False,
                        lengths, ds)
    np.testing.assert_allclose(ds, dout @ Wd.T, rtol=tol, atol=tol)


def test_sparse_connectivity_probability_and_seed():
    net = Network(seed=4)
    net.add(SpikeInput("s", 200))
    net.add(Readout("out", 300))
    proj = net.connect("s", "out", kind="sparse", p=0.1)
    W = proj.weight
    assert sp.issparse(W) and W.shape == (200, 300)
    assert abs(W.nnz / (200 * 300) - 0.1) < 0.01
    net2 = Network(seed=4)
    net2.add(SpikeInput("s", 200))
    net2.add(Readout("out", 300))
    W2 = net2.connect("s", "out", kind="sparse", p=0.1).weight
    assert (W != W2).nnz == 0
    net3 = Network(seed=4)
    net3.add(SpikeInput("s", 200))
    net3.add(Readout("out", 300))
    W3 = net3.connect("s", "out", kind="sparse", p=0.1, seed=99).weight
    assert W3.nnz != W.nnz or (W != W3).nnz > 0
    # the live values: editing params changes the matrix
    proj.params["W"][0] = 5.0
    assert proj.weight.data[0] == 5.0


def test_sparse_projection_equals_dense_in_network():
    rng = np.random.default_rng(3)
    Wd = rng.normal(size=(6, 12)) * (rng.random((6, 12)) < 0.4)
    x = rng.normal(size=(5, 2, 6))
    res = []
    for kind, w in (("sparse", sp.csr_matrix(Wd)), ("dense", Wd)):
        net = Network(seed=0, dtype="float64")
        net.add(DenseInput("x", 6))
        net.add(EGRU("e", 4))
        net.connect("x", "e", kind=kind, weight=w)
        res.append(net.run({"x": x}))
    np.testing.assert_array_equal(res[0].outputs["e"] != 0, res[1].outputs["e"] != 0)
    np.testing.assert_allclose(res[0].outputs["e"], res[1].outputs["e"], rtol=1e-12,
                               atol=1e-12)
    assert res[0].projection_stats["x->e"]["fwd_macs"] < res[1].projection_stats["x->e"][
        "fwd_macs"]


def test_initialisers():
    net = Network(seed=0, dtype="float64")
    net.add(DenseInput("x", 100))
    net.add(Readout("a", 50))
    net.add(Readout("b", 50))
    net.add(Readout("c", 50))
    wa = net.connect("x", "a").weight
    wb = net.connect("x", "b", init="normal", scale=2.0).weight
    wc = net.connect("x", "c", init="zeros").weight
    assert np.abs(wa).max() <= 0.1 and np.abs(wa).max() > 0.09
    assert abs(wb.std() - 0.2) < 0.01
    assert not wc.any()
    net.add(Readout("d", 5))
    with pytest.raises(ValueError, match="init must be one of"):
        net.connect("x", "d", init="xavier")
    with pytest.raises(ValueError, match="already exists"):
        net.connect("x", "a")


def test_projection_errors():
    net = Network(seed=0)
    net.add(DenseInput("x", 3))
    net.add(EGRU("e", 4))
    with pytest.raises(ValueError, match=r"\(3, 12\)"):
        net.connect("x", "e", weight=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="kind must be"):
        net.connect("x", "e", kind="diagonal")
    with pytest.raises(ValueError, match="p must be in"):
        net.connect("x", "e", kind="sparse", p=1.5)
    with pytest.raises(ValueError, match="kind='sparse' only"):
        net.connect("x", "e", p=0.5)
