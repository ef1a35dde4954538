"""The NumPy reference (the oracle): golden steps by hand, zoneout in
evaluation mode, the output trace, and its backward pass against finite
differences in float64 for every gradient and every flag.

Two kinds of finite-difference checks:

* true finite differences, with thresholds chosen so that every |v - thr|
  stays outside the surrogate band (then the surrogate terms vanish and the
  backward is the exact derivative);
* "straight-through" finite differences, through a NumPy forward written in
  this file where the event flag is ``c = c0 + F(v - thr) - F(v0 - thr0)`` with
  c0, v0, thr0 frozen at the base point and F' the surrogate. That function
  equals the EGRU forward at the base point and its exact derivative is the
  surrogate gradient, so the surrogate terms of the backward are checked too,
  with thresholds anywhere.
"""

import numpy as np
import pytest
from conftest import (
    fd_check,
    make_problem,
    straight_through_check,
    with_margin,
)

from evsim import egru_backward, egru_forward
from evsim.kernels import reference

BACKENDS = ("reference", "cpu", "dense")


# --------------------------------------------------------------------------
# Golden steps, H = 2, I = 1, float64


def _golden_problem():
    # x_0 = 1, x_1 = 0.5. W drives only the g gates: a_g = x * (1, -0.5); all
    # biases 0. R row 0 = (0.2, 0 | 0.4, 0 | 0.6, -0.8); row 1 is large, but
    # unit 1 never fires so row 1 must never matter.
    x = np.array([[[1.0]], [[0.5]]])
    W = np.array([[0.0, 0.0, 0.0, 0.0, 1.0, -0.5]])
    R = np.array([[0.2, 0.0, 0.4, 0.0, 0.6, -0.8], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    z6 = np.zeros(6)
    thr = np.array([0.3, 0.5])
    return x, W, R, z6, z6.copy(), thr


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_two_steps(backend):
    x, W, R, bx, br, thr = _golden_problem()
    res = egru_forward(x, W, R, bx, br, thr, backend=backend, trace_alpha=0.9)
    # Step 0 (h = y = 0): q = br = 0, a = (0, 0 | 0, 0 | 1, -0.5).
    #   z = r = sigmoid(0) = 0.5; g = tanh(1, -0.5) = (0.761594156, -0.4621171573)
    #   v = 0.5 * 0 + 0.5 * g = (0.380797078, -0.2310585786)
    #   c = v > (0.3, 0.5) = (1, 0); y = (0.380797078, 0); h = v - c thr = (0.080797078, v_1)
    # Step 1: q = y_0,0 * R[0] = 0.380797078 * R[0]
    #       = (0.0761594156, 0 | 0.1523188312, 0 | 0.2284782468, -0.3046376624)
    #   a = 0.5 * W = (0, 0 | 0, 0 | 0.5, -0.25)
    #   z = (sigmoid(0.0761594156), 0.5) = (0.5190306562, 0.5)
    #   r = (sigmoid(0.1523188312), 0.5) = (0.5380062542, 0.5)
    #   g_0 = tanh(0.5 + 0.5380062542 * 0.2284782468) = tanh(0.6229227...) = 0.553159721
    #   g_1 = tanh(-0.25 + 0.5 * -0.3046376624) = tanh(-0.4023188312) = -0.3819312941
    #   v_0 = 0.5190306562 * 0.080797078 + 0.4809693438 * 0.553159721 = 0.3079890284
    #   v_1 = 0.5 * -0.2310585786 + 0.5 * -0.3819312941 = -0.3064949364
    #   c = (1, 0); y = (0.3079890284, 0); h = (0.0079890284, -0.3064949364)
    # Trace (alpha 0.9): tr_0 = 0.1 y_0; tr_1 = 0.9 tr_0 + 0.1 y_1.
    y = [[0.380797078, 0.0], [0.3079890284, 0.0]]
    h = [[0.080797078, -0.2310585786], [0.0079890284, -0.3064949364]]
    tr = [[0.0380797078, 0.0], [0.9 * 0.0380797078 + 0.1 * 0.3079890284, 0.0]]
    np.testing.assert_allclose(res.y[:, 0], y, atol=1e-6)
    np.testing.assert_allclose(res.h[:, 0], h, atol=1e-6)
    np.testing.assert_array_equal(res.c[:, 0], [[1, 0], [1, 0]])
    np.testing.assert_allclose(res.trace[:, 0], tr, atol=1e-6)
    np.testing.assert_allclose(res.h_last[0], h[1], atol=1e-6)
    np.testing.assert_allclose(res.y_last[0], y[1], atol=1e-6)
    assert res.stats["events"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_one_step_backward(backend):
    # One step, L = y_0,0 (dy = (1, 0), no state gradient). With
    # v = 0.380797078, thr = 0.3, damp 0.7, support 1:
    #   s = 0.7 * (1 - |v - thr|) = 0.6434420454
    #   dL/dthr_0 = -v s = -0.2450208508
    #   dv = c + v s = 1.2450208508
    #   dpg = dv (1 - z)(1 - g^2) = 0.2614384060;  dx = dpg * W_g0 = 0.2614384060
    #   dpz = dv (h_prev - g) z (1 - z) = -0.2370501510;  dpr = dpg q_g r (1 - r) = 0
    x, W, R, bx, br, thr = _golden_problem()
    res = egru_forward(x[:1], W, R, bx, br, thr, backend=backend)
    g = egru_backward(res, np.array([[[1.0, 0.0]]]))
    np.testing.assert_allclose(g["thr"], [-0.2450208508, 0.0], atol=1e-6)
    np.testing.assert_allclose(g["x"][0, 0], [0.2614384060], atol=1e-6)
    np.testing.assert_allclose(g["bx"], [-0.2370501510, 0, 0, 0, 0.2614384060, 0], atol=1e-6)
    np.testing.assert_allclose(g["br"], [-0.2370501510, 0, 0, 0, 0.2614384060 * 0.5, 0],
                               atol=1e-6)
    np.testing.assert_allclose(g["R"], 0.0, atol=0)  # y0 = 0: no recurrent product
    # dL/dh0 = dv z (zero for unit 1); dL/dy0 = dq R^T with dq = (dpz, 0 | 0, 0 | dpg r, 0)
    np.testing.assert_allclose(g["h0"][0], [1.2450208508 * 0.5, 0.0], atol=1e-6)
    dq = np.array([-0.2370501510, 0, 0, 0, 0.2614384060 * 0.5, 0])
    np.testing.assert_allclose(g["y0"][0], R @ dq, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_zoneout_evaluation_mixes_new_state(backend):
    # EvNN's evaluation zoneout dropped the new state; the correct form is
    # v = (1 - p) v_new + p h. One step with h0 = (0.2, -0.4), p = 0.25:
    #   v_new = 0.5 h0 + 0.5 g = (0.480797078, -0.4310585786)
    #   v = 0.75 v_new + 0.25 h0 = (0.4105978085, -0.4232939340)
    #   c = (1, 0); y = (0.4105978085, 0); h = (0.1105978085, -0.4232939340)
    x, W, R, bx, br, thr = _golden_problem()
    h0 = np.array([[0.2, -0.4]])
    res = egru_forward(x[:1], W, R, bx, br, thr, h0, backend=backend, training=False,
                       zoneout=0.25)
    np.testing.assert_allclose(res.y[0, 0], [0.4105978085, 0.0], atol=1e-6)
    np.testing.assert_allclose(res.h[0, 0], [0.1105978085, -0.4232939340], atol=1e-6)
    # Training mode with an all-ones keep mask is no zoneout at all; all-zeros keeps h.
    ones = np.ones((1, 1, 2))
    r1 = egru_forward(x[:1], W, R, bx, br, thr, h0, backend=backend, zoneout_mask=ones)
    np.testing.assert_allclose(r1.y[0, 0], [0.480797078, 0.0], atol=1e-6)
    r0 = egru_forward(x[:1], W, R, bx, br, thr, h0, backend=backend, zoneout_mask=0 * ones)
    np.testing.assert_allclose(r0.h[0, 0], h0[0], atol=1e-12)
    np.testing.assert_array_equal(r0.c, 0)


def test_reference_forward_zoneout_evaluation_general():
    """Evaluation zoneout equals the reference run with keep = 1 - p everywhere."""
    p = make_problem(T=4, B=2, I=3, H=5, seed=3)
    q = p.params()
    res = p.forward(backend="reference", training=False, zoneout=0.3)
    keep = np.full((4, 2, 5), 0.7)
    out = reference.forward(q["x"], q["W"], q["R"], q["bx"], q["br"], q["thr"], q["h0"],
                            q["y0"], keep=keep)
    np.testing.assert_allclose(res.y, out["y"], atol=1e-14)
    # and differs from the form that drops the new state (v = h at p, EvNN's bug)
    assert not np.allclose(res.h, p.forward(backend="reference").h)


def test_reference_trace_and_its_backward():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(6, 2, 3))
    alpha = 0.8
    tr = reference.output_trace(y, alpha)
    expect = np.zeros_like(y)
    for t in range(6):
        expect[t] = sum(alpha ** (t - s) * (1 - alpha) * y[s] for s in range(t + 1))
    np.testing.assert_allclose(tr, expect, atol=1e-14)
    # The trace is linear: its backward is the transpose.
    dtr = rng.normal(size=y.shape)
    dy = reference.output_trace_backward(dtr, alpha)
    assert np.isclose(np.sum(dtr * tr), np.sum(dy * y), rtol=1e-12)


def test_reference_lengths_freeze_state_and_zero_outputs():
    p = make_problem(T=5, B=3, I=2, H=4, seed=5)
    lengths = np.array([5, 2, 3])
    res = p.forward(backend="reference", lengths=lengths)
    for b, L in enumerate(lengths):
        assert np.all(res.y[L:, b] == 0) and np.all(res.h[L:, b] == 0)
        np.testing.assert_array_equal(res.h_last[b], res.h[L - 1, b])
        np.testing.assert_array_equal(res.y_last[b], res.y[L - 1, b])
        # same as running that sample alone for L steps
        alone = p.replace(x=np.ascontiguousarray(p.x[:L, b:b + 1]), h0=p.h0[b:b + 1],
                          y0=p.y0[b:b + 1]).forward(backend="reference")
        np.testing.assert_allclose(alone.y[:, 0], res.y[:L, b], atol=1e-14)


def test_reference_dense_gru_is_a_gru():
    p = make_problem(T=3, B=2, I=3, H=4, seed=2)
    res = p.gru(backend="reference")
    np.testing.assert_array_equal(res.c, 1)
    np.testing.assert_array_equal(res.y, res.h)


# --------------------------------------------------------------------------
# Backward against true finite differences (inputs away from the threshold)

CASES = {
    "plain": {},
    "zoneout_mask": dict(zoneout_mask=True),
    "dropconnect_mask": dict(dropconnect_mask=True),
    "lengths": dict(lengths=np.array([4, 1, 3])),
    "trace": dict(trace_alpha=0.85),
    "narrow_support": dict(damp=3.6, support=3.6),
    "everything": dict(zoneout_mask=True, dropconnect_mask=True,
                       lengths=np.array([2, 4, 3]), trace_alpha=0.7),
}


def _forward_kwargs(case, p, rng):
    """Turn a CASES entry into egru_forward keywords (masks drawn here)."""
    T, B, _, H = p.shape
    kw = dict(CASES[case])
    if kw.pop("zoneout_mask", False):
        kw["zoneout_mask"] = (rng.random((T, B, H)) < 0.7).astype(p.dtype)
    if kw.pop("dropconnect_mask", False):
        kw["dropconnect_mask"] = ((rng.random((H, 3 * H)) < 0.8) / 0.8).astype(p.dtype)
    return kw


def _margin_kwargs(kw):
    """Keywords of conftest.with_margin matching the forward keywords."""
    return dict(keep=kw.get("zoneout_mask"), rmask=kw.get("dropconnect_mask"),
                lengths=kw.get("lengths"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_backward_finite_differences(case):
    rng = np.random.default_rng(sum(map(ord, case)))
    p = make_problem(T=4, B=3, I=3, H=6, seed=11)
    kw = _forward_kwargs(case, p, rng)
    support = kw.get("support", 1.0)
    p = with_margin(p, 1.0 / support + 0.05, **_margin_kwargs(kw))
    res, _ = fd_check(p, kw, "reference", rng)
    # Both firing and silent units take part (otherwise the check is weak).
    assert 0 < res.c.mean() < 1


@pytest.mark.parametrize("case", ["plain", "zoneout_mask", "dropconnect_mask", "lengths",
                                  "trace"])
def test_reference_backward_dense_gru(case):
    rng = np.random.default_rng(7)
    p = make_problem(T=4, B=3, I=3, H=5, seed=4)
    kw = _forward_kwargs(case, p, rng)
    fd_check(p, kw, "reference", rng, gru=True)


# --------------------------------------------------------------------------
# Backward against straight-through finite differences (surrogate terms)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("damp, support", [(0.7, 1.0), (3.6, 3.6), (0.3, 0.5)])
def test_reference_backward_straight_through(case, damp, support):
    """Surrogate terms of the backward (thresholds among the v values, no margin)."""
    rng = np.random.default_rng(sum(map(ord, case)) + 1)
    p = make_problem(T=4, B=3, I=3, H=6, seed=13)
    kw = _forward_kwargs(case, p, rng)
    kw.update(damp=damp, support=support)
    straight_through_check(p, kw, "reference", rng)


def test_reference_backward_dtrace_only_equals_dy():
    """dtrace flows into dy through the transpose of the trace."""
    rng = np.random.default_rng(0)
    p = make_problem(T=5, B=2, I=2, H=4, seed=8)
    res = p.forward(backend="reference", trace_alpha=0.9)
    dtr = rng.normal(size=res.y.shape)
    g1 = egru_backward(res, None, dtrace=dtr)
    g2 = egru_backward(res, reference.output_trace_backward(dtr, 0.9))
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], atol=1e-13)
