"""The functional layer (evsim.functional): one backend switch for every kind
of computation, checks at its boundary, and objects that call only it.

Projections, LIF and traces against NumPy formulas; argument checks (shapes,
dtypes, byte order, index ranges); a network's backend reaching every kind;
populations and projections importing no kernel module; the "cpu" path never
loading the NumPy oracle. (CUDA: tests/test_cuda.py.)
"""

import ast
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import evsim
from evsim import functional as F
from evsim.functional import _dispatch
from evsim.kernels import lif as klif

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sparse_y(rng, T, B, N, p=0.4):
    return np.ascontiguousarray(rng.normal(size=(T, B, N)) * (rng.random((T, B, N)) < p))


def _valid(lengths, T):
    return (np.arange(T)[:, None] < np.asarray(lengths)[None, :])[..., None]


# --------------------------------------------------------------------------
# Projections


@pytest.mark.parametrize("kind", ["dense", "sparse", "dense-source"])
@pytest.mark.parametrize("shift", [0, 2])
def test_propagate_equals_product(kind, shift):
    rng = np.random.default_rng(0)
    T, B, N, M = 6, 3, 5, 4
    y = _sparse_y(rng, T, B, N)
    lengths = np.array([6, 4, 1])
    y *= _valid(lengths, T)
    W = rng.normal(size=(N, M)) * (rng.random((N, M)) < (0.5 if kind == "sparse" else 1.0))
    out0 = rng.normal(size=(T, B, M))
    out = out0.copy()
    ev = F.compact_events(y, lengths)
    kw = dict(events=ev)
    if kind == "sparse":
        m = sp.csr_matrix(W)
        kw["csr"] = F.csr(m.indptr, m.indices, (N, M))
        weights = m.data
    else:
        weights = W
    if kind == "dense-source":
        kw = dict(event_driven=False)
    st = F.propagate(y, out, lengths, weights, shift=shift, **kw)
    want = out0.copy()
    want[shift:] += (y @ W)[:T - shift] * _valid(lengths, T)[:T - shift]
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    n_valid = int(lengths.sum())
    assert st["fwd_macs_dense"] == n_valid * (W.size if kind != "sparse" else m.nnz)
    if kind == "dense":
        assert st["fwd_macs"] == int(np.count_nonzero(y[:T - shift])) * M
    # backward: dW over the events, dsrc = dout W^T where the mask is set
    dout = rng.normal(size=(T, B, M))
    mask = rng.random((T, B, N)) < 0.6
    dW, dsrc, bst = F.propagate_backward(y, dout, lengths, weights, shift=shift, mask=mask,
                                         **kw)
    d = np.zeros_like(dout)
    d[:T - shift] = dout[shift:]
    d *= _valid(lengths, T)
    gW = np.einsum("tbn,tbm->nm", y, d)
    want_W = gW[m.nonzero()] if kind == "sparse" else gW
    np.testing.assert_allclose(dW, want_W, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dsrc, np.where(mask & _valid(lengths, T), d @ W.T, 0),
                               rtol=1e-12, atol=1e-12)
    assert bst["bwd_macs"] <= bst["bwd_macs_dense"]
    assert bst["bwd_macs_event"] <= bst["bwd_macs_dense"]


def test_propagate_per_synapse_delays():
    rng = np.random.default_rng(1)
    T, B, N, M = 7, 2, 4, 3
    y = _sparse_y(rng, T, B, N, 0.7)
    lengths = np.array([7, 5])
    y *= _valid(lengths, T)
    m = sp.random(N, M, density=0.6, random_state=3, format="csr")
    delays = rng.integers(0, 4, m.nnz)
    rec = F.csr(m.indptr, m.indices, (N, M), delays)
    out = np.zeros((T, B, M))
    F.propagate(y, out, lengths, m.data, csr=rec, shift=1, events=F.compact_events(y, lengths))
    want = np.zeros_like(out)
    rows = np.repeat(np.arange(N), np.diff(m.indptr))
    for k in range(m.nnz):
        for t in range(T):
            if t + delays[k] + 1 < T:
                want[t + delays[k] + 1, :, m.indices[k]] += y[t, :, rows[k]] * m.data[k]
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(NotImplementedError, match="per-synapse delays"):
        F.propagate_backward(y, out, lengths, m.data, csr=rec, events=F.compact_events(y, lengths))


def test_step_backward_equals_sequence_backward():
    rng = np.random.default_rng(2)
    B, N, M = 3, 5, 4
    y = _sparse_y(rng, 1, B, N)[0]
    dout = rng.normal(size=(B, M))
    m = sp.random(N, M, density=0.5, random_state=1, format="csr")
    for W, rec in ((m.toarray(), None), (m.data, F.csr(m.indptr, m.indices, (N, M)))):
        dW = np.zeros_like(W)
        dsrc = F.propagate_step_backward(y, dout, W, dW, csr=rec)
        gW, gsrc, _ = F.propagate_backward(y[None], dout[None], np.ones(B, np.int64), W, csr=rec,
                                           events=F.compact_events(y[None], np.ones(B, int)))
        np.testing.assert_allclose(dW, gW, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dsrc, gsrc[0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# Checks at the boundary


def _args(rng=None):
    rng = rng or np.random.default_rng(0)
    y = _sparse_y(rng, 4, 2, 3)
    lengths = np.array([4, 2])
    return y, np.zeros((4, 2, 5)), lengths, rng.normal(size=(3, 5))


def test_byte_order_is_checked_everywhere():
    y, out, lengths, W = _args()
    big = y.astype(">f8")
    with pytest.raises(TypeError, match=r"\by\b.*byte order"):
        F.propagate(big, out, lengths, W, event_driven=False)
    with pytest.raises(TypeError, match=r"\bW\b.*byte order"):
        F.propagate(y, out, lengths, W.astype(">f8"), event_driven=False)
    with pytest.raises(TypeError, match=r"\bx\b.*byte order"):
        evsim.egru_forward(big, np.zeros((3, 6)), np.zeros((2, 6)), np.zeros(6), np.zeros(6),
                           np.zeros(2))
    with pytest.raises(TypeError, match=r"\by\b.*byte order"):
        F.output_trace(big, 0.9)


def test_index_ranges_are_checked():
    y, out, lengths, W = _args()
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        F.csr(np.array([0, 1, 2, 3]), np.array([0, 5, 1]), (3, 5))
    with pytest.raises(ValueError, match="indptr"):
        F.csr(np.array([0, 2, 1, 3]), np.array([0, 1, 1]), (3, 5))
    with pytest.raises(ValueError, match=r"delays must lie in \[0"):
        F.csr(np.array([0, 1, 2, 3]), np.array([0, 1, 1]), (3, 5), np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 5\)"):
        F.propagate(y, out, np.array([5, 1]), W, event_driven=False)
    idx, cnt = F.compact_events(y, lengths)
    idx = idx.copy()
    idx[0, 0, 0] = 7
    cnt = cnt.copy()
    cnt[0, 0] = max(cnt[0, 0], 1)
    with pytest.raises(ValueError, match=r"ev_idx lists units outside \[0, 3\)"):
        F.propagate(y, out, lengths, W, events=(idx, cnt))
    with pytest.raises(ValueError, match="ev_cnt"):
        F.propagate(y, out, lengths, W, events=(idx, np.full((4, 2), 4, np.int32)))
    with pytest.raises(ValueError, match=r"\bout\b.*shape"):
        F.propagate(y, np.zeros((4, 3, 5)), lengths, W, event_driven=False)
    with pytest.raises(TypeError, match=r"\bout\b.*float64"):
        F.propagate(y, np.zeros((4, 2, 5), np.float32), lengths, W, event_driven=False)
    with pytest.raises(ValueError, match="backend"):
        F.propagate(y, out, lengths, W, event_driven=False, backend="gpu")


def test_lif_arguments_are_checked():
    cell = F.lif_cell(10.0, [(klif.EXP, 5.0, None)], 1.0)
    x = np.zeros((3, 2, 4))
    v0, I0, r0 = np.zeros((2, 4)), np.zeros((2, 4)), np.zeros((2, 4), np.int64)
    F.lif_forward(x, v0, I0, r0, np.array([3, 1]), cell)
    with pytest.raises(ValueError, match=r"\bv0\b"):
        F.lif_forward(x, np.zeros((2, 5)), I0, r0, np.array([3, 1]), cell)
    with pytest.raises(TypeError, match=r"\bx\b.*byte order"):
        F.lif_forward(x.astype(">f8"), v0, I0, r0, np.array([3, 1]), cell)
    with pytest.raises(ValueError, match=r"\br0\b.*\[0"):
        F.lif_forward(x, v0, I0, -np.ones((2, 4), np.int64), np.array([3, 1]), cell)
    with pytest.raises(ValueError, match="v_reset"):
        F.lif_cell(10.0, [(klif.EXP, 5.0, None)], 1.0, v_reset=2.0)
    with pytest.raises(TypeError, match="LIFCell"):
        F.lif_forward(x, v0, I0, r0, np.array([3, 1]), {"tau": 1})
    cond = F.lif_cell(10.0, [(klif.COND, 5.0, 0.0)], 1.0)
    res = F.lif_forward(x, v0, I0, r0, np.array([3, 1]), cond)
    with pytest.raises(NotImplementedError, match="conductance"):
        F.lif_backward(res.saved, np.zeros((3, 2, 4)))


def test_output_trace_against_formula():
    rng = np.random.default_rng(3)
    y = rng.normal(size=(5, 2, 3))
    tr = F.output_trace(y, 0.8)
    acc = np.zeros((2, 3))
    for t in range(5):
        acc = 0.8 * acc + 0.2 * y[t]
        np.testing.assert_allclose(tr[t], acc, rtol=1e-12)
    d = rng.normal(size=(5, 2, 3))
    dy = F.output_trace_backward(d, 0.8)
    eps, t_dir = 1e-6, rng.normal(size=y.shape)
    fd = (np.sum(d * F.output_trace(y + eps * t_dir, 0.8))
          - np.sum(d * F.output_trace(y - eps * t_dir, 0.8))) / (2 * eps)
    assert fd == pytest.approx(np.sum(dy * t_dir), rel=1e-7)


# --------------------------------------------------------------------------
# One backend for every kind; objects call only the functional layer


def _mixed_net(backend, dtype="float64"):
    net = evsim.Network(seed=2, dtype=dtype, backend=backend, progress=False)
    net.add(evsim.DenseInput("x", 3))
    net.add(evsim.EGRU("e", 6))
    net.add(evsim.LIF("l", 4, tau_mem=5.0, tau_syn=2.0))
    net.add(evsim.Readout("o", 2, leak=0.5))
    net.connect("x", "e")
    net.connect("x", "l", scale=6.0)
    net.connect("e", "o", kind="sparse", p=0.5)
    net.connect("l", "o")
    return net


def test_network_backend_reaches_every_kind(monkeypatch):
    calls = []
    real = _dispatch.adapter

    def spy(backend, kind):
        calls.append((backend, kind))
        return real(backend, kind)

    monkeypatch.setattr(_dispatch, "adapter", spy)
    for mod in ("egru", "lif", "projection", "trace"):
        monkeypatch.setattr(getattr(F, mod), "adapter", spy, raising=False)
    net = _mixed_net("dense")
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    fp = net.forward({"x": x}, schedule="dag")
    net.backward(fp, {"o": np.ones((5, 2, 2))})
    assert {b for b, _ in calls} == {"dense"}
    assert {k for _, k in calls} == {"egru", "lif", "projection", "trace"}


@pytest.mark.parametrize("module", ["populations.py", "projections.py"])
def test_objects_import_no_kernel_module(module):
    """Populations and projections reach the kernels only through evsim.functional."""
    tree = ast.parse(open(os.path.join(ROOT, "evsim", module)).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        bad = [n for n in names if n.startswith("evsim.kernels")]
        assert not bad, f"{module} imports {bad}"


def test_cpu_paths_never_load_the_oracle():
    code = """
import sys
import numpy as np
import evsim
net = evsim.Network(seed=0, dtype="float64", progress=False)
net.add(evsim.DenseInput("x", 3)); net.add(evsim.EGRU("e", 5)); net.add(evsim.GRU("g", 4))
net.add(evsim.LIF("l", 3)); net.add(evsim.Readout("o", 2, leak=0.5))
net.connect("x", "e"); net.connect("e", "g"); net.connect("x", "l"); net.connect("g", "o")
net.connect("l", "o")
fp = net.forward({"x": np.ones((4, 2, 3))})
net.backward(fp, {"o": np.ones((4, 2, 2))})
p = [np.ones(s) for s in ((4, 1, 3), (3, 6), (2, 6), (6,), (6,), (2,))]
evsim.egru_backward(evsim.egru_forward(*p), np.ones((4, 1, 2)))
assert "evsim.kernels.reference" not in sys.modules, "the oracle was loaded"
assert "evsim.kernels.reference_backend" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
