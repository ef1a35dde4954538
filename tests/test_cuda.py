"""The CUDA kernels (evsim.kernels.cuda) against the Numba CPU kernels and the
NumPy reference, forward and backward, and the event-driven projection kernels.

On a machine with a GPU the ``cuda``-marked tests run directly
(``pytest -m cuda tests/test_cuda.py``). Without one they are skipped in this
process and :func:`test_cuda_suite_in_simulator` runs them again in a
subprocess under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` must be
set before numba.cuda is imported), on tiny sizes. Threads per block and the
grid size are patched small so that several blocks, the event slices, the lane
reductions and the grid-stride loops all run.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import (
    assert_close,
    assert_results_equal,
    backward,
    cotangents,
    make_problem,
    tol_for,
    with_margin,
)

from evsim import config
from evsim.functional import GRAD_KEYS
from evsim.kernels import cuda as kc

SIM = kc.simulator()
RUNS = kc.available()  # a GPU, or the simulator
SIZES = [(3, 2, 3, 8)] if SIM else [(3, 2, 3, 8), (7, 5, 6, 70)]
# (threads per block, grid cap); None keeps the defaults
LAUNCH = [(16, 3)] if SIM else [(16, 3), (None, None)]


def cuda_test(fn):
    skip = pytest.mark.skipif(
        not RUNS, reason="no CUDA GPU here: run by test_cuda_suite_in_simulator under the simulator"
    )
    return pytest.mark.cuda(skip(fn))


@pytest.fixture(params=LAUNCH, ids=lambda p: f"tpb{p[0]}-grid{p[1]}")
def launch(request, monkeypatch):
    tpb, blocks = request.param
    # the CUDA kernels are always event-driven: compare with the CPU's event paths
    for name in ("BACKWARD_DENSE_SWITCH", "DR_DENSE_SWITCH"):
        monkeypatch.setattr(config, name, 1.0)
    if tpb is not None:
        monkeypatch.setattr(config, "THREADS_PER_BLOCK", tpb)
        monkeypatch.setattr(kc, "MAX_BLOCKS", blocks)
    return request.param


def _grads_close(grads, ref, tol, keys=GRAD_KEYS):
    for k in keys:
        assert grads[k].dtype == ref[k].dtype, k
        assert_close(grads[k], ref[k], tol, f"grad {k}")


def _run(p, backend, cot_seed=5, trace=False, **kw):
    res = p.forward(backend=backend, **kw)
    cot = cotangents(res, np.random.default_rng(cot_seed), trace=trace)
    return res, backward(res, cot)


# --------------------------------------------------------------------------
# Forward and backward against the CPU kernels and the reference


@cuda_test
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "TBIH" + "-".join(map(str, s)))
@pytest.mark.parametrize("activity", ["mixed", "none", "all"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_cpu_and_reference(launch, size, activity, dtype):
    T, B, In, H = size
    p = make_problem(T=T, B=B, I=In, H=H, dtype=np.float64, seed=3, activity=activity)
    if activity == "mixed":  # no event may flip between backends
        p = with_margin(p, 0.02)
    p = p.astype(dtype)
    # a narrow surrogate band, so that the sparse backward skips rows
    kw = dict(damp=4.0, support=4.0)
    res, grads = _run(p, "cuda", **kw)
    cpu, cpu_grads = _run(p, "cpu", **kw)
    ref, ref_grads = _run(p.astype(np.float64), "reference", **kw)
    tol = tol_for(dtype)
    assert_results_equal(res, cpu, tol)
    assert res.y.dtype == dtype
    # both compute float32 in float32 (exp implementations and sum orders
    # differ): the same float32 tolerance as every other comparison
    _grads_close(grads, cpu_grads, tol)
    if dtype == np.float64:
        assert_results_equal(res, ref, tol)
        _grads_close(grads, ref_grads, tol)
    # counters are what the kernels did, the same work as the CPU kernels
    # (the CPU kernel may switch to a dense product at high activity: compare
    # the forward work with the events read instead)
    for k in ("events", "fwd_macs_dense"):
        assert res.stats[k] == cpu.stats[k], k
    for k in ("bwd_macs", "bwd_macs_dense", "backward_active"):
        assert grads.stats[k] == cpu_grads.stats[k], k
    assert res.stats["fwd_macs"] == int(res.events[1][:T].sum()) * 3 * H
    if activity == "none":
        assert res.stats["events"] == 0 and res.stats["fwd_macs"] == 0
        assert not grads["R"].any()
    if activity == "all":
        assert res.stats["events"] == T * B * H
    # event lists equal the CPU's (ordered, per step and sample)
    idx, cnt = res.events
    cidx, ccnt = cpu.events
    np.testing.assert_array_equal(cnt, ccnt)
    for s in range(T + 1):
        for b in range(B):
            np.testing.assert_array_equal(idx[s, b, : cnt[s, b]], cidx[s, b, : ccnt[s, b]])
    # the saved state stays on the device between forward and backward
    assert hasattr(res.saved.v, "copy_to_host")


@cuda_test
def test_backward_skips_inactive_rows(launch):
    p = with_margin(make_problem(T=3, B=2, I=3, H=8, seed=7), 0.02)
    kw = dict(damp=10.0, support=10.0)
    res, grads = _run(p, "cuda", **kw)
    ref, ref_grads = _run(p, "reference", **kw)
    _grads_close(grads, ref_grads, tol_for(np.float64))
    assert 0.0 < grads.stats["backward_sparsity"] < 1.0
    assert grads.stats["bwd_macs"] < grads.stats["bwd_macs_dense"]
    assert "bwd_macs" not in res.stats


@cuda_test
@pytest.mark.parametrize("gru", [False, True])
def test_backward_active_on_cuda(launch, gru):
    """The backward-active set is there on CUDA too (computed on the device from
    the saved state) and equals the CPU's; none without training."""
    p = with_margin(make_problem(T=3, B=2, I=3, H=8, seed=7), 0.02)
    kw = {} if gru else dict(damp=4.0, support=4.0)
    run = p.gru if gru else p.forward
    res, cpu = run(backend="cuda", **kw), run(backend="cpu", **kw)
    mask = res.backward_active()
    assert mask is not None and mask.dtype == bool and mask.shape == res.y.shape
    np.testing.assert_array_equal(mask, cpu.backward_active())
    assert mask.all() if gru else 0 < mask.mean() < 1
    assert run(backend="cuda", training=False, **kw).backward_active() is None


@cuda_test
@pytest.mark.parametrize("flags", ["zoneout-dropconnect-lengths-trace", "eval-zoneout", "gru"])
def test_flags_match_reference(launch, flags):
    p = make_problem(T=3, B=3, I=3, H=8, seed=11)
    p = with_margin(p, 0.02) if flags == "eval-zoneout" else p
    rng = np.random.default_rng(2)
    T, B, _, H = p.shape
    if flags == "gru":
        res = p.gru(backend="cuda", trace_alpha=0.8)
        ref = p.gru(backend="reference", trace_alpha=0.8)
        cot = cotangents(res, rng, trace=True)
        cot.pop("dy_last")
        g, rg = backward(res, cot, gru=True), backward(ref, cot, gru=True)
        assert res.stats["events"] == T * B * H
    elif flags == "eval-zoneout":
        res = p.forward(backend="cuda", training=False, zoneout=0.3)
        ref = p.forward(backend="reference", training=False, zoneout=0.3)
        assert_results_equal(res, ref, 1e-10)
        return
    else:
        kw = dict(
            zoneout_mask=(rng.random((T, B, H)) > 0.3).astype(p.dtype),
            dropconnect_mask=(rng.random((H, 3 * H)) > 0.2) / 0.8,
            lengths=np.array([3, 1, 2]),
            trace_alpha=0.7,
        )
        res = p.forward(backend="cuda", **kw)
        ref = p.forward(backend="reference", **kw)
        cot = cotangents(res, rng, trace=True)
        g, rg = backward(res, cot), backward(ref, cot)
    assert_results_equal(res, ref, 1e-10)
    assert_close(res.trace, ref.trace, 1e-10, "trace")
    _grads_close(g, rg, 1e-10)


# --------------------------------------------------------------------------
# Projection kernels for the network


@cuda_test
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_projection_kernels(launch, dtype):
    rng = np.random.default_rng(4)
    T, B, N, K = 2, 2, 6, 5
    y = (rng.normal(size=(T, B, N)) * (rng.random((T, B, N)) < 0.4)).astype(dtype)
    y[1, 0] = 0  # a step without events
    W = rng.normal(size=(N, K)).astype(dtype)
    out0 = rng.normal(size=(T, B, K)).astype(dtype)
    ev_idx, ev_cnt = kc.compact_events(y)
    idx, cnt = ev_idx.copy_to_host(), ev_cnt.copy_to_host()
    for t in range(T):
        for b in range(B):
            np.testing.assert_array_equal(idx[t, b, : cnt[t, b]], np.flatnonzero(y[t, b]))
    out = kc._dev(out0.copy())
    kc.propagate_events(ev_idx, ev_cnt, y, W, out)
    tol = tol_for(dtype)
    assert_close(out.copy_to_host(), out0 + y @ W, tol, "propagate")
    dout = rng.normal(size=(T, B, K)).astype(dtype)
    dW, n_ev = kc.event_weight_grad(y, dout)
    assert n_ev == int((y != 0).sum())
    assert_close(dW.copy_to_host(), np.einsum("tbn,tbk->nk", y, dout), tol, "dW")


# --------------------------------------------------------------------------
# The functional layer on CUDA: projections, LIF, traces, and a whole network


def _sparse(rng, shape, p):
    return np.ascontiguousarray(rng.normal(size=shape) * (rng.random(shape) < p))


@cuda_test
@pytest.mark.parametrize("kind", ["dense", "sparse", "delayed", "dense-source"])
def test_functional_projection_on_cuda(launch, kind):
    import scipy.sparse as sp

    from evsim import functional as F

    rng = np.random.default_rng(5)
    T, B, N, M = 4, 3, 5, 3
    lengths = np.array([4, 2, 3])
    y = _sparse(rng, (T, B, N), 0.5) * (np.arange(T)[:, None] < lengths)[..., None]
    m = sp.random(N, M, density=0.6, random_state=2, format="csr")
    kw = {}
    if kind == "dense" or kind == "dense-source":
        W = rng.normal(size=(N, M))
    else:
        W = m.data
        delays = rng.integers(0, 3, m.nnz) if kind == "delayed" else None
        kw["csr"] = F.csr(m.indptr, m.indices, (N, M), delays)
    out = {}
    for backend in ("cpu", "cuda"):
        ev = F.compact_events(y, lengths, backend=backend)
        if kind != "dense-source":
            kw["events"] = ev
        else:
            kw["event_driven"] = False
        o = rng.normal(size=(T, B, M)) * 0 + 1.0
        st = F.propagate(y, o, lengths, W, shift=1, backend=backend, **kw)
        out[backend] = (ev, o, st)
    (ev_c, o_c, st_c), (ev_g, o_g, st_g) = out["cpu"], out["cuda"]
    np.testing.assert_array_equal(ev_g[1], ev_c[1])
    assert_close(o_g, o_c, 1e-12, "out")
    if kind != "dense-source":
        assert st_g == st_c
    if kind == "delayed":
        return
    dout = rng.normal(size=(T, B, M))
    mask = rng.random((T, B, N)) < 0.5
    grads = {b: F.propagate_backward(y, dout, lengths, W, shift=1, mask=mask, backend=b, **kw)
             for b in ("cpu", "cuda")}
    (dW_c, ds_c, bs_c), (dW_g, ds_g, bs_g) = grads["cpu"], grads["cuda"]
    assert_close(dW_g, dW_c, 1e-12, "dW")
    assert_close(ds_g, ds_c, 1e-12, "dsrc")
    if kind != "dense-source":
        assert bs_g["bwd_macs_event"] == bs_c["bwd_macs_event"]


@cuda_test
def test_lif_forward_and_backward_on_cuda(launch):
    """One thread per unit runs the CPU's own per-unit loop (kernels/lif.py),
    compiled for CUDA: the same spikes and potentials."""
    from evsim import functional as F
    from evsim.kernels import lif as klif

    rng = np.random.default_rng(8)
    T, B, N = 6, 2, 3
    for receptors in ([(klif.COND, 3.0, 2.0), (klif.EXP, 4.0, None)],
                      [(klif.EXP, 2.0, None), (klif.STEP, 0.0, None)]):
        cell = F.lif_cell(5.0, receptors, 1.0, v_th=0.5, v_reset=-0.1, n_ref=2)
        R = len(receptors)
        x = np.abs(rng.normal(size=(T, B, R * N)))
        v0 = rng.uniform(0, 0.4, (B, N))
        I0 = np.zeros((B, R * N))
        r0 = np.zeros((B, N), np.int64)
        lengths = np.array([6, 4])
        a = F.lif_forward(x, v0, I0, r0, lengths, cell, backend="cpu")
        g = F.lif_forward(x, v0, I0, r0, lengths, cell, backend="cuda")
        assert a.spikes == g.spikes > 0
        np.testing.assert_array_equal(g.s, a.s)
        np.testing.assert_array_equal(g.held, a.held)
        np.testing.assert_array_equal(g.r_last, a.r_last)
        for k in ("u", "v", "I", "v_last", "I_last"):
            assert_close(getattr(g, k), getattr(a, k), 1e-12, k)
        dy = rng.normal(size=(T, B, N))
        if cell.conductance:
            with pytest.raises(NotImplementedError, match="conductance"):
                F.lif_backward(g.saved, dy)
            continue
        # the backward: the CPU's per-unit loop compiled for CUDA, the same gradients
        carry = (rng.normal(size=(B, N)), rng.normal(size=(B, R * N)))
        dx_c, (dv_c, dI_c) = F.lif_backward(a.saved, dy, carry)
        dx_g, (dv_g, dI_g) = F.lif_backward(g.saved, dy, carry)
        assert np.abs(dx_c).max() > 0
        for name, got, want in (("dx", dx_g, dx_c), ("dv0", dv_g, dv_c), ("dI0", dI_g, dI_c)):
            assert_close(got, want, 1e-12, name)


@cuda_test
def test_network_on_cuda_runs_every_kind_on_cuda(launch, monkeypatch):
    """Network(backend="cuda"): the projections' kernels are the CUDA ones, and
    forward and backward equal the CPU network's."""
    import evsim
    from evsim.kernels import cuda_backend

    used = set()
    for name in ("propagate", "propagate_backward", "compact_events", "lif_forward",
                 "output_trace", "output_trace_backward", "egru_forward", "egru_backward"):
        real = getattr(cuda_backend, name)

        def spy(*a, _real=real, _name=name, **k):
            used.add(_name)
            return _real(*a, **k)

        monkeypatch.setattr(cuda_backend, name, spy)

    def net(backend, lif):
        n = evsim.Network(seed=4, dtype="float64", backend=backend, progress=False)
        n.add(evsim.DenseInput("x", 2))
        n.add(evsim.EGRU("e", 4, damp=3.0, support=3.0))
        n.add(evsim.Readout("o", 2, leak=0.5))
        n.connect("x", "e")
        n.connect("e", "o", kind="sparse", p=0.6)
        if lif:
            n.add(evsim.LIF("l", 3, tau_mem=4.0, tau_syn=2.0))
            n.connect("x", "l", scale=5.0)
            n.connect("e", "l")
        return n

    x = np.random.default_rng(1).normal(size=(4, 2, 2))
    runs = {}
    for backend in ("cpu", "cuda"):
        res = net(backend, True).run({"x": x}, lengths=np.array([4, 3]), schedule="dag")
        n = net(backend, False)
        fp = n.forward({"x": x}, lengths=np.array([4, 3]), schedule="dag")
        g = n.backward(fp, {"o": np.ones((4, 2, 2))})
        runs[backend] = (res, fp, g)
    (rc, fc, gc), (rg, fg, gg) = runs["cpu"], runs["cuda"]
    for k in rc.outputs:
        assert_close(rg.outputs[k], rc.outputs[k], 1e-10, k)
    for k in fc.outputs:
        assert_close(fg.outputs[k], fc.outputs[k], 1e-10, k)
    for k in gc:
        assert_close(gg[k], gc[k], 1e-10, k)
    assert used == {"propagate", "propagate_backward", "compact_events", "lif_forward",
                    "output_trace", "output_trace_backward", "egru_forward", "egru_backward"}


# --------------------------------------------------------------------------
# Without a GPU: a clear error, and the whole suite under the simulator


@pytest.mark.skipif(RUNS, reason="a GPU or the simulator is present")
def test_clear_error_without_gpu():
    from evsim import egru_forward

    p = make_problem(T=2, B=1, I=2, H=3)
    with pytest.raises(RuntimeError, match=r"backend 'cuda'.*evsim\[cuda\]"):
        egru_forward(p.x, p.W, p.R, p.bx, p.br, p.thr, backend="cuda")
    assert not kc.available()


@pytest.mark.skipif(RUNS, reason="the cuda tests run directly in this process")
def test_cuda_suite_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        os.path.abspath(__file__),
        "-m",
        "cuda",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
    ]
    proc = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.skipif(RUNS, reason="a GPU compiles the kernels itself")
def test_kernels_compile_for_gpu():
    """Every kernel variant compiles to PTX with NVIDIA's real compiler (numba-cuda
    with NVVM, no GPU needed): the simulator does not type-check like it."""
    pytest.importorskip("numba_cuda")
    script = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu.py"
    )
    proc = subprocess.run(
        [sys.executable, script, "--compile-only"], capture_output=True, text=True, timeout=900
    )
    if "NVVM" in proc.stdout + proc.stderr and "not found" in proc.stdout + proc.stderr:
        pytest.skip("numba-cuda without NVVM")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


@cuda_test
def test_device_cell_keeps_float32_in_float32():
    """The float32 kernels' cell maths has float32 constants: no float64
    promotion (the simulator runs the device functions as Python)."""
    cell = kc._cell_device(np.float32)
    f = np.float32
    for value in (cell.sigmoid(f(0.3)), cell.tanh(f(-0.7)), cell.surrogate(f(0.4), f(0.3),
                                                                           f(0.7), f(1.0))):
        assert type(value) is np.float32, type(value)
    out = cell.backward(*([f(0.2)] * 11), f(0.7), f(1.0), False)
    assert all(type(v) is np.float32 for v in out), [type(v) for v in out]
    assert type(kc._cell_device(np.float64).sigmoid(0.3)) in (float, np.float64)
