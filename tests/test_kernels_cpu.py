"""The Numba CPU backends ("cpu": event-driven, "dense": BLAS products)
against the NumPy reference on the same data, forward and backward, for
every flag and the corner cases; counters; and checks that the event-driven
paths really skip the rows of silent units.
"""

import numba
import numpy as np
import pytest
from conftest import (
    assert_close,
    assert_grads_equal,
    assert_results_equal,
    backward,
    cotangents,
    make_problem,
    reference_v,
    tol_for,
    with_margin,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evsim import _validate, config, egru_backward, threads
from evsim.functional import GRAD_KEYS, egru
from evsim.kernels import cpu, cpu_backend, cpu_seq, reference

FAST = ("cpu", "dense")


@pytest.fixture(autouse=True)
def _reset_config():
    yield
    config._reset()


def _masks(p, gen, zoneout_mask=False, dropconnect_mask=False, **kw):
    T, B, _, H = p.shape
    if zoneout_mask:
        kw["zoneout_mask"] = (gen.random((T, B, H)) < 0.7).astype(p.dtype)
    if dropconnect_mask:
        kw["dropconnect_mask"] = ((gen.random((H, 3 * H)) < 0.8) / 0.8).astype(p.dtype)
    return kw


# name: (make_problem keywords, forward keywords)
CASES = {
    "base": (dict(), dict()),
    "float32": (dict(dtype=np.float32), dict()),
    "no_events": (dict(activity="none"), dict()),
    "all_fire": (dict(activity="all"), dict()),
    "all_fire_f32": (dict(activity="all", dtype=np.float32), dict()),
    "T1": (dict(T=1), dict()),
    "batch1": (dict(B=1, H=13), dict()),
    "batch5_H13": (dict(B=5, H=13, I=2), dict()),
    "H1": (dict(H=1, B=2), dict()),
    "I1": (dict(I=1), dict()),
    "no_state": (dict(state=False), dict()),
    "lengths": (dict(B=3), dict(lengths=np.array([5, 2, 3]))),
    "lengths_T1": (dict(B=3, T=1), dict(lengths=np.array([1, 1, 1]))),
    "zoneout_mask": (dict(), dict(zoneout_mask=True)),
    "zoneout_random": (dict(), dict(zoneout=0.3, rng=5)),
    "dropconnect_mask": (dict(), dict(dropconnect_mask=True)),
    "dropconnect_random": (dict(), dict(dropconnect=0.25, rng=6)),
    "trace": (dict(), dict(trace_alpha=0.9)),
    "narrow_support": (dict(), dict(damp=3.6, support=3.6)),
    "wide_support": (dict(), dict(damp=0.2, support=0.3)),
    "everything_f32": (dict(dtype=np.float32, B=5),
                       dict(zoneout_mask=True, dropconnect_mask=True, trace_alpha=0.8,
                            lengths=np.array([5, 1, 4, 5, 2]), damp=3.6, support=3.6)),
    "everything": (dict(B=5),
                   dict(zoneout_mask=True, dropconnect_mask=True, trace_alpha=0.8,
                        lengths=np.array([5, 1, 4, 5, 2]))),
}


def _setup(case, seed=0):
    pkw, fkw = CASES[case]
    rng = np.random.default_rng(seed)
    p = make_problem(**dict(dict(T=5, B=3, I=3, H=7), **pkw), seed=seed)
    fkw = _masks(p, rng, **fkw)
    if p.dtype == np.float32 and CASES[case][0].get("activity") is None:
        # float32 and the reference round differently: keep v away from thr so
        # that no event flips between them.
        p = with_margin(p.astype(np.float64), 2e-3,
                        keep=None if "zoneout_mask" not in fkw else fkw["zoneout_mask"],
                        rmask=fkw.get("dropconnect_mask"),
                        lengths=fkw.get("lengths")).astype(np.float32)
    return p, fkw, rng


def _run_compare(p, fkw, rng, backends=FAST, gru=False, tol=None):
    """Forward and backward of each backend against the reference."""
    tol = tol or tol_for(p.dtype)
    run = p.gru if gru else p.forward
    ref = run(backend="reference", **fkw)
    cot = cotangents(ref, rng, trace="trace_alpha" in fkw)
    if gru:
        del cot["dy_last"]
    gref = backward(ref, cot, gru=gru)
    out = {}
    for backend in backends:
        res = run(backend=backend, **fkw)
        assert_results_equal(res, ref, tol)
        for k in ("y", "h", "c", "h_last", "y_last"):
            assert getattr(res, k).dtype == p.dtype
        grads = backward(res, cot, gru=gru)
        assert_grads_equal(grads, gref, tol if p.dtype == np.float64 else 5 * tol)
        out[backend] = (res, grads)
    return ref, gref, out


@pytest.mark.parametrize("case", list(CASES))
def test_fast_backends_match_reference(case):
    p, fkw, rng = _setup(case)
    ref, _, out = _run_compare(p, fkw, rng)
    pkw = CASES[case][0]
    if pkw.get("activity") == "none":
        assert ref.stats["events"] == 0 and np.all(out["cpu"][0].y == 0)
        assert out["cpu"][0].stats["fwd_macs"] == 0
    if pkw.get("activity") == "all":
        assert np.all(ref.c == 1)


@pytest.mark.parametrize("case", ["base", "float32", "all_fire", "lengths", "everything",
                                  "batch1", "narrow_support"])
def test_sparse_backward_equals_dense_backward(monkeypatch, case):
    """Sparse BPTT ("cpu", event paths forced: at these small sizes the
    automatic switch would take the dense product too) gives the dense BPTT
    ("dense") gradient to rounding."""
    p, fkw, rng = _setup(case, seed=1)
    a = p.forward(backend="cpu", **fkw)
    b = p.forward(backend="dense", **fkw)
    cot = cotangents(a, rng, trace="trace_alpha" in fkw)
    gb = backward(b, cot)
    _forced(monkeypatch, **PATHS["events"])
    ga = backward(a, cot)
    # the sparse path ran: it did exactly the work the event-driven path needs
    assert ga.stats["bwd_macs"] == ga.stats["bwd_macs_event"]
    assert gb.stats["bwd_macs"] == gb.stats["bwd_macs_dense"]
    assert "bwd_macs" not in a.stats  # the forward's statistics are left alone
    for k in GRAD_KEYS:
        assert_close(ga[k], gb[k], 1e-12 if p.dtype == np.float64 else 1e-5, k)


@pytest.mark.parametrize("case", ["base", "float32", "lengths", "zoneout_mask",
                                  "dropconnect_mask", "trace", "batch5_H13", "T1"])
def test_gru_mode_matches_reference(case):
    p, fkw, rng = _setup(case, seed=2)
    _run_compare(p, fkw, rng, gru=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [False, True])
def test_zoneout_evaluation_form(dtype, training):
    p = with_margin(make_problem(T=4, B=3, I=3, H=7, seed=9), 2e-3,
                    keep=np.full((4, 3, 7), 0.65)).astype(dtype)
    ref = p.forward(backend="reference", zoneout=0.35, training=False)
    for backend in FAST:
        res = p.forward(backend=backend, zoneout=0.35, training=False)
        assert_results_equal(res, ref, tol_for(dtype))
    # The same as a training run with keep factors fixed to 1 - p.
    res = p.forward(backend="cpu", zoneout_mask=np.full((4, 3, 7), 0.65, dtype))
    assert_results_equal(res, ref, tol_for(dtype))


@pytest.mark.parametrize("switch", [0.0, 1.0, 0.3])
def test_dense_switch_does_not_change_results(monkeypatch, switch):
    """The event path and the dense product inside "cpu" agree, wherever it switches."""
    monkeypatch.setattr(config, "DENSE_SWITCH_ACTIVITY", switch)
    for case in ("base", "all_fire", "everything"):
        p, fkw, rng = _setup(case, seed=3)
        _run_compare(p, fkw, rng, backends=("cpu",))


# Every way the CPU backend can split the work, forced: (threads, batch-1
# column split from H, tile samples, column block, minimum work to go parallel).
SPLITS = {
    "one_thread": dict(NUM_THREADS=1),
    "tiles_2_threads": dict(NUM_THREADS=2, PARALLEL_MIN_WORK=0),
    "tile_of_1": dict(NUM_THREADS=2, PARALLEL_MIN_WORK=0, TILE_SAMPLES=1),
    "tile_of_3": dict(NUM_THREADS=2, PARALLEL_MIN_WORK=0, TILE_SAMPLES=3),
    "column_split": dict(NUM_THREADS=2, PARALLEL_MIN_WORK=0, COLUMN_SPLIT_MIN_H=1,
                         UNIT_SPLIT_MIN_H=1),
    "batch_unit_split": dict(NUM_THREADS=2, PARALLEL_MIN_WORK=0, UNIT_SPLIT_MIN_H=1,
                             UNIT_SPLIT_MIN_ACTIVE=0.0),
}


def _forced(monkeypatch, **settings):
    """Apply config settings; return {kernel: [threads of each call]}, filled
    as the CPU kernels run (so a test can check that a path really ran)."""
    for name, value in settings.items():
        monkeypatch.setattr(config, name, value)
    monkeypatch.setattr(threads, "others_running", lambda: 0)  # no neighbour: no fallback
    calls = {}
    for module, name in ((cpu, "egru_forward"), (cpu, "egru_backward"),
                         (cpu, "egru_backward_dense"), (cpu_seq, "egru_forward"),
                         (cpu_seq, "egru_backward")):
        key = f"{module.__name__.split('.')[-1]}.{name}"
        calls[key] = []

        def spy(*args, _kernel=getattr(module, name), _key=key):
            calls[_key].append(numba.get_num_threads())
            return _kernel(*args)

        monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("split", list(SPLITS))
def test_work_splits_really_run(monkeypatch, split):
    """Each forced split runs the kernel it names, on the threads it names."""
    calls = _forced(monkeypatch, **SPLITS[split])
    p = make_problem(T=4, B=1 if split == "column_split" else 6, I=3, H=12, seed=2)
    res = p.forward(backend="cpu")
    egru_backward(res, np.ones_like(res.y))
    want = 1 if split == "one_thread" else min(2, numba.config.NUMBA_NUM_THREADS)
    ran = {k: v for k, v in calls.items() if v}
    if split == "column_split":
        assert set(ran) in ({"cpu.egru_forward", "cpu.egru_backward"},
                            {"cpu.egru_forward", "cpu.egru_backward_dense"})
    elif split == "batch_unit_split":
        assert set(ran) == {"cpu_seq.egru_forward", "cpu.egru_backward_dense"}
    else:
        assert set(ran) == {"cpu_seq.egru_forward", "cpu_seq.egru_backward"}
    assert all(v == [want] for v in ran.values()), ran


@pytest.mark.parametrize("split", list(SPLITS))
def test_work_splits_match_reference(monkeypatch, split):
    """Every work split (threads, tiles, column blocks, the batch-1 column
    split) gives the reference result, forward and backward."""
    _forced(monkeypatch, **SPLITS[split])
    for case in ("batch1", "base", "batch5_H13", "H1", "everything", "everything_f32"):
        p, fkw, rng = _setup(case, seed=13)
        _run_compare(p, fkw, rng)


PATHS = {  # forward switch, backward switch, dR switch: each path forced
    "events": dict(DENSE_SWITCH_ACTIVITY=2.0, BACKWARD_DENSE_SWITCH=2.0, DR_DENSE_SWITCH=2.0),
    "dense": dict(DENSE_SWITCH_ACTIVITY=-1.0, BACKWARD_DENSE_SWITCH=-1.0,
                  DR_DENSE_SWITCH=-1.0),
    "automatic": dict(),
}


def _run_bits(p):
    res = p.forward(backend="cpu")
    return res, backward(res, cotangents(res, np.random.default_rng(1)))


def _assert_same_bits(a, b, what):
    (ra, ga), (rb, gb) = a, b
    for k in ("y", "h", "c", "h_last", "y_last"):
        np.testing.assert_array_equal(getattr(ra, k), getattr(rb, k), err_msg=f"{what} {k}")
    for k in GRAD_KEYS:
        np.testing.assert_array_equal(ga[k], gb[k], err_msg=f"{what} grad {k}")


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("split", list(SPLITS))
@pytest.mark.parametrize("B", [1, 6, 17])
def test_results_do_not_depend_on_threads(monkeypatch, path, split, B):
    """Bit for bit the same outputs and gradients on 2 threads, on 1 thread,
    and with another program running (per-step kernels then run their blocks
    on one thread), for every work split and path (events, dense products,
    automatic)."""
    p = make_problem(T=6, B=B, I=5, H=40, seed=21).astype(np.float32)
    settings = dict(SPLITS[split], **PATHS[path])
    _forced(monkeypatch, **settings)
    two = _run_bits(p)
    assert two[0].stats["events"] > 0
    monkeypatch.setattr(threads, "others_running", lambda: 1)
    _assert_same_bits(two, _run_bits(p), "loaded")
    monkeypatch.setattr(config, "NUM_THREADS", 1)
    _assert_same_bits(two, _run_bits(p), "one thread")


def test_event_paths_agree_bit_for_bit_across_kernels(monkeypatch):
    """The event-driven sums are computed by one helper in list order: at
    batch 1 the tile kernels and the split-per-step kernels give the same bits."""
    p = make_problem(T=6, B=1, I=5, H=40, seed=21).astype(np.float32)
    _forced(monkeypatch, **PATHS["events"])
    tiles = _run_bits(p)
    _forced(monkeypatch, NUM_THREADS=2, PARALLEL_MIN_WORK=0, COLUMN_SPLIT_MIN_H=1,
            UNIT_SPLIT_MIN_H=1)
    _assert_same_bits(tiles, _run_bits(p), "split per step")


# --------------------------------------------------------------------------
# Counters


def _event_macs(res, y0, lengths, H):
    """3H times the events feeding each simulated step (y0 included)."""
    T, B, _ = res.y.shape
    yprev = np.concatenate([y0[None], res.y[:-1]])
    alive = np.arange(T)[:, None] < lengths[None, :]
    return int(((yprev != 0).sum(axis=2) * alive).sum()) * 3 * H


@pytest.mark.parametrize("case", ["base", "lengths", "everything", "no_events", "all_fire"])
def test_forward_counters(monkeypatch, case):
    p, fkw, rng = _setup(case, seed=4)
    T, B, _, H = p.shape
    lengths = fkw.get("lengths", np.full(B, T))
    y0 = p.params()["y0"]
    steps = int(lengths.sum())
    monkeypatch.setattr(config, "DENSE_SWITCH_ACTIVITY", 1.0)  # event path every step
    res = p.forward(backend="cpu", **fkw)
    s = res.stats
    assert s["events"] == int(res.c.sum()) == int((res.y != 0).sum())
    assert s["unit_steps"] == steps * H
    assert s["activity"] == pytest.approx(s["events"] / (steps * H))
    assert s["fwd_macs_dense"] == steps * H * 3 * H
    assert s["input_macs"] == steps * p.shape[2] * 3 * H
    assert s["fwd_macs"] == _event_macs(res, y0, lengths, H)
    assert s["fwd_macs_event"] == s["fwd_macs"]
    monkeypatch.setattr(config, "DENSE_SWITCH_ACTIVITY", -1.0)  # dense product every step
    res = p.forward(backend="cpu", **fkw)
    assert res.stats["fwd_macs"] == steps * H * 3 * H
    # what the event-driven path needs does not depend on the path taken
    assert res.stats["fwd_macs_event"] == s["fwd_macs_event"]
    dense = p.forward(backend="dense", **fkw)
    assert dense.stats["fwd_macs"] == dense.stats["fwd_macs_dense"] == steps * H * 3 * H
    assert dense.stats["events"] == s["events"]


def test_forward_counters_default_switch_low_activity():
    """With the default switch and low activity the event path runs by itself."""
    p = make_problem(T=6, B=4, I=3, H=16, seed=5)
    p = p.replace(thr=np.where(np.arange(16) % 4 == 0, 0.1, 5.0))  # <= 1/4 can fire
    res = p.forward(backend="cpu")
    assert res.stats["activity"] < cpu_backend.forward_switch(4)
    assert res.stats["events"] > 0
    assert res.stats["fwd_macs"] == _event_macs(res, p.y0, np.full(4, 6), 16)
    assert res.stats["fwd_macs"] < res.stats["fwd_macs_dense"]


def test_gru_counters():
    p = make_problem(T=4, B=2, I=3, H=5, seed=6)
    for backend in ("cpu", "dense", "reference"):
        res = p.gru(backend=backend)
        assert res.stats["events"] == 4 * 2 * 5
        assert res.stats["activity"] == 1.0


def test_backward_counters_and_support():
    p = make_problem(T=6, B=3, I=3, H=12, seed=7)
    T, B, _, H = p.shape
    v, _ = reference_v(p)
    sparsity = {}
    for support in (1.0, 3.6, 20.0):
        res = p.forward(backend="cpu", support=support, damp=support)
        before = dict(res.stats)
        s = egru_backward(res, np.ones_like(res.y)).stats
        assert res.stats == before
        for k in ("bwd_macs", "bwd_macs_dense", "backward_active", "backward_sparsity"):
            assert k in s
        # backward-active: fired or inside the band, at the steps t-1 >= 0 feeding t >= 1
        vp = v[:-1]
        active = (vp > p.thr) | (np.abs(vp - p.thr) * support < 1)
        assert s["backward_active"] == pytest.approx(active.mean())
        assert s["backward_sparsity"] == pytest.approx(1 - active.mean())
        assert s["bwd_macs"] <= s["bwd_macs_dense"]
        sparsity[support] = s["backward_sparsity"]
        dense = p.forward(backend="dense", support=support, damp=support)
        ds = egru_backward(dense, np.ones_like(dense.y)).stats
        # sparsity is a property of the model; the dense path does all the work anyway
        assert ds["backward_sparsity"] == pytest.approx(s["backward_sparsity"])
        assert ds["bwd_macs"] == ds["bwd_macs_dense"] == s["bwd_macs_dense"]
    assert sparsity[1.0] <= sparsity[3.6] <= sparsity[20.0]
    assert sparsity[1.0] < sparsity[20.0]


# --------------------------------------------------------------------------
# The event-driven paths really skip silent units


def _silent_problem(dtype=np.float64, seed=8):
    """H = 9 units, of which 0, 3, 6 may fire and the rest never fire (thr = 50,
    y0 = 0): activity stays below the dense switch."""
    p = make_problem(T=6, B=3, I=3, H=9, seed=seed, dtype=dtype)
    silent = np.arange(9) % 3 != 0
    thr = np.where(silent, 50.0, p.thr).astype(dtype)
    y0 = p.y0.copy()
    y0[:, silent] = 0
    return p.replace(thr=thr, y0=y0), silent


@pytest.fixture
def allow_nan_in_R(monkeypatch):
    """Let R through validation with NaN in it (the public API rightly refuses
    NaN weights); every other check stays."""
    original = _validate.float_array

    def float_array(name, value, shape=None, dtype=None, finite=True):
        return original(name, value, shape, dtype, finite=finite and name != "R")

    monkeypatch.setattr(_validate, "float_array", float_array)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_event_forward_reads_only_rows_of_fired_units(allow_nan_in_R, monkeypatch, dtype):
    """NaN in the rows of R of units that never fire must not reach anything:
    the event-driven forward adds rows of fired units only, the sparse backward
    computes dq R^T only for backward-active units (fired or within the band)
    and dR only over events. Only dL/dy0 needs every row."""
    for name in ("DENSE_SWITCH_ACTIVITY", "BACKWARD_DENSE_SWITCH", "DR_DENSE_SWITCH"):
        monkeypatch.setattr(config, name, 1.0)  # event-driven paths only
    p, silent = _silent_problem(dtype)
    rng = np.random.default_rng(0)
    R_nan = p.R.copy()
    R_nan[silent] = np.nan
    R_zero = p.R.copy()
    R_zero[silent] = 0
    ref = p.replace(R=R_zero).forward(backend="reference")
    res = p.replace(R=R_nan).forward(backend="cpu")
    assert res.stats["events"] > 0
    for k in ("y", "h", "c", "h_last", "y_last"):
        assert np.all(np.isfinite(getattr(res, k))), k
        assert_close(getattr(res, k), getattr(ref, k), tol_for(dtype), k)
    cot = cotangents(res, rng)
    gref = backward(ref, cot)
    grads = backward(res, cot)
    for k in GRAD_KEYS:
        g = grads[k][:, ~silent] if k == "y0" else grads[k]
        r = gref[k][:, ~silent] if k == "y0" else gref[k]
        assert np.all(np.isfinite(g)), k
        assert_close(g, r, tol_for(dtype) * (1 if dtype == np.float64 else 5), k)


@pytest.mark.parametrize("backend", ["cpu", "dense"])
def test_dR_rows_of_silent_units_are_exactly_zero(backend):
    p, silent = _silent_problem()
    res = p.forward(backend=backend)
    g = egru_backward(res, np.ones_like(res.y), np.ones_like(res.h_last),
                      dy_last=np.ones_like(res.y_last))
    assert np.all(g["R"][silent] == 0.0)
    assert np.any(g["R"][~silent] != 0.0)


def test_events_lists_match_outputs():
    p, fkw, _ = _setup("lengths", seed=10)
    res = p.forward(backend="cpu", **fkw)
    idx, cnt = res.events
    T, B, H = res.y.shape
    for t in range(T):
        for b in range(B):
            if t < fkw["lengths"][b]:
                np.testing.assert_array_equal(np.sort(idx[t + 1, b, :cnt[t + 1, b]]),
                                              np.flatnonzero(res.y[t, b]))
    for b in range(B):
        np.testing.assert_array_equal(np.sort(idx[0, b, :cnt[0, b]]), np.flatnonzero(p.y0[b]))


def test_repeatable_and_inputs_untouched():
    p, fkw, rng = _setup("everything", seed=11)
    before = {k: v.copy() for k, v in p.params().items()}
    a = p.forward(backend="cpu", **fkw)
    cot = cotangents(a, rng, trace=True)
    cot_before = {k: v.copy() for k, v in cot.items()}
    ga = backward(a, cot)
    b = p.forward(backend="cpu", **fkw)
    gb = backward(b, cot)
    for k in GRAD_KEYS:
        np.testing.assert_array_equal(ga[k], gb[k])
    np.testing.assert_array_equal(a.y, b.y)
    for k, v in p.params().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    for k, v in cot.items():
        np.testing.assert_array_equal(v, cot_before[k], err_msg=k)
    # Backward twice on the same result gives the same gradients.
    gc = backward(a, cot)
    for k in GRAD_KEYS:
        np.testing.assert_array_equal(ga[k], gc[k])


def test_saved_state_matches_reference():
    """What the forward saves for BPTT (v, z, r, g, qg) equals the reference."""
    p, fkw, _ = _setup("everything", seed=12)
    res = p.forward(backend="cpu", **fkw)
    q = p.params()
    out = reference.forward(q["x"], q["W"], q["R"], q["bx"], q["br"], q["thr"], q["h0"],
                            q["y0"], keep=fkw["zoneout_mask"], rmask=fkw["dropconnect_mask"],
                            lengths=fkw["lengths"])
    saved = res.saved
    alive = np.arange(5)[:, None] < fkw["lengths"][None, :]
    for k in ("v", "z", "r", "g", "qg"):
        assert_close(getattr(saved, k)[alive], out[k][alive], 1e-10, k)


# --------------------------------------------------------------------------
# Randomised property test


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 4), B=st.integers(1, 4), I=st.integers(1, 3), H=st.integers(1, 6),
       seed=st.integers(0, 2**16), activity=st.sampled_from(["mixed", "mixed", "none", "all"]),
       use_lengths=st.booleans(), zoneout=st.sampled_from([None, "mask", "eval"]),
       dropconnect=st.booleans(), trace=st.booleans(),
       support=st.sampled_from([1.0, 3.6]), state=st.booleans())
def test_random_problems_cpu_matches_reference(T, B, I, H, seed, activity, use_lengths,  # noqa: E741
                                               zoneout, dropconnect, trace, support, state):
    rng = np.random.default_rng(seed)
    p = make_problem(T=T, B=B, I=I, H=H, seed=seed, activity=activity, state=state)
    kw = dict(damp=support, support=support)
    if use_lengths:
        kw["lengths"] = rng.integers(1, T + 1, B)
    if trace:
        kw["trace_alpha"] = 0.9
    training = zoneout != "eval"
    if zoneout == "mask":
        kw["zoneout_mask"] = (rng.random((T, B, H)) < 0.6).astype(np.float64)
    elif zoneout == "eval":
        kw["zoneout"] = 0.2
    if dropconnect and training:
        kw["dropconnect_mask"] = ((rng.random((H, 3 * H)) < 0.7) / 0.7)
    ref = p.forward(backend="reference", training=training, **kw)
    res = p.forward(backend="cpu", training=training, **kw)
    assert_results_equal(res, ref, 1e-10)
    if training:
        cot = cotangents(ref, rng, trace=trace)
        assert_grads_equal(backward(res, cot), backward(ref, cot), 1e-10)


@pytest.mark.parametrize("path", ["events", "dense"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("B", [1, 4])
def test_non_finite_rows_of_R_that_are_read_raise(monkeypatch, path, value, B):
    """The CPU kernels do not read all of R before a call; they check the
    drives they compute, so a non-finite weight in a row that is read raises,
    on every path and work split."""
    _forced(monkeypatch, NUM_THREADS=2, PARALLEL_MIN_WORK=0, COLUMN_SPLIT_MIN_H=1,
            UNIT_SPLIT_MIN_H=1, **PATHS[path])
    p, silent = _silent_problem()
    if B == 1:
        p = p.replace(x=np.ascontiguousarray(p.x[:, :1]), h0=p.h0[:1], y0=p.y0[:1])
    fired = np.flatnonzero(~silent)[0]
    R_bad = p.R.copy()
    R_bad[fired, 2] = value
    with pytest.raises(ValueError, match=r"\bR\b.*(NaN|infinite)"):
        p.replace(R=R_bad).forward(backend="cpu")


@pytest.mark.parametrize("case", ["base", "float32", "lengths", "narrow_support",
                                  "wide_support", "no_events", "all_fire"])
def test_backward_active_mask_matches_reference(case):
    """The kernel's backward-active set (computed once per forward pass and
    used by the sparse backward, the counters and projections) equals the
    NumPy reference's, and so does its count over the steps BPTT needs."""
    p, fkw, _ = _setup(case, seed=17)
    res = p.forward(backend="cpu", **fkw)
    args = res.args
    want = reference.backward_active(res.saved.v, res.c, args.thr, args.support)
    np.testing.assert_array_equal(res.backward_active(), want)
    assert egru._active_count(res) == reference.backward_active_count(
        res.saved.v, res.c, args.thr, args.support, args.lengths)


@pytest.mark.parametrize("backend", ["cpu", "dense", "reference"])
def test_backward_active_on_every_cpu_backend(backend):
    """Every backend fills the same saved record, so the backward-active set is
    there whatever the backend (CUDA: tests/test_cuda.py)."""
    p, fkw, _ = _setup("lengths", seed=5)
    res = p.forward(backend=backend, **fkw)
    want = p.forward(backend="cpu", **fkw).backward_active()
    np.testing.assert_array_equal(res.backward_active(), want)
    assert p.forward(backend=backend, training=False, **fkw).backward_active() is None


# -- the float32 exp of the CPU kernels (evsim.kernels.cpu._exp) ---------------------

def _exp32(x):
    import numba

    from evsim.kernels.cpu import _exp

    @numba.njit
    def run(x, out):
        for i in range(x.size):
            out[i] = _exp(x[i])

    out = np.empty_like(x)
    run(x, out)
    return out


def test_fast_exp_float32_accuracy():
    x = np.linspace(-87.0, 88.0, 200_001, dtype=np.float32)
    got = _exp32(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert got.dtype == np.float64 and np.all(np.isfinite(got))
    assert np.max(np.abs(got / want - 1)) < 1e-6  # a few float32 ulp


def test_fast_exp_float32_clamps_instead_of_overflowing():
    x = np.array([-1e4, -200.0, -88.0, 89.0, 200.0, 1e4], np.float32)
    got = _exp32(x)
    assert np.all(np.isfinite(got)) and np.all(got > 0)
    np.testing.assert_allclose(got[:3], np.exp(np.float32(-87.0)), rtol=1e-6)
    np.testing.assert_allclose(got[3:], np.exp(np.float32(88.0)), rtol=1e-6)
    # sigmoid and tanh built on it saturate correctly
    assert 1 / (1 + got[-1]) < 1e-30 and 1 / (1 + got[0]) == 1.0
