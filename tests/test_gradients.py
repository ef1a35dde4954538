"""Gradients of the Numba CPU backends against finite differences, float64.

Central differences along a random direction per parameter,
``<t, J^T c> = <J t, c>`` (as jax's ``check_vjp``), for x, W, R, bx, br, thr,
h0 and y0:

* true finite differences, with every |v - thr| kept outside the surrogate
  band (support 1.0, and the language-model recipe damp = support = 3.6, where
  thresholds can sit between the v values);
* straight-through finite differences (see conftest.straight_through_forward),
  which check the surrogate terms with thresholds anywhere.
"""

import numpy as np
import pytest
from conftest import fd_check, make_problem, straight_through_check, with_margin

FLAGS = {
    "plain": {},
    "zoneout_mask": dict(zoneout_mask=True),
    "dropconnect_mask": dict(dropconnect_mask=True),
    "lengths": dict(lengths=np.array([3, 5, 1])),
    "trace": dict(trace_alpha=0.9),
    "everything": dict(zoneout_mask=True, dropconnect_mask=True, trace_alpha=0.8,
                       lengths=np.array([5, 2, 4])),
}


def _setup(flags, seed, T=5, B=3, I=3, H=7):  # noqa: E741
    rng = np.random.default_rng(seed)
    p = make_problem(T=T, B=B, I=I, H=H, seed=seed)
    kw = dict(FLAGS[flags])
    if kw.pop("zoneout_mask", False):
        kw["zoneout_mask"] = (rng.random((T, B, H)) < 0.7).astype(np.float64)
    if kw.pop("dropconnect_mask", False):
        kw["dropconnect_mask"] = (rng.random((H, 3 * H)) < 0.8) / 0.8
    return p, kw, rng


def _margin(p, kw, support):
    """Thresholds with |v - thr| >= 1/support + 0.02 at every simulated step."""
    return with_margin(p, 1.0 / support + 0.02, keep=kw.get("zoneout_mask"),
                       rmask=kw.get("dropconnect_mask"), lengths=kw.get("lengths"))


@pytest.mark.parametrize("backend", ["cpu", "dense"])
@pytest.mark.parametrize("flags", list(FLAGS))
@pytest.mark.parametrize("damp, support", [(None, None), (3.6, 3.6), (10.0, 10.0)])
def test_finite_differences(backend, flags, damp, support):
    p, kw, rng = _setup(flags, seed=len(flags))
    p = _margin(p, kw, support or 1.0)
    if damp is not None:
        kw.update(damp=damp, support=support)
    res, grads = fd_check(p, kw, backend, rng)
    assert 0 < res.c.mean() < 1  # firing and silent units both take part
    if support == 10.0:
        # The narrow band lets thresholds sit between the v values: some units
        # fire on some steps only.
        fired = res.c.reshape(-1, p.shape[3])
        assert np.any((fired.min(axis=0) == 0) & (fired.max(axis=0) == 1))


@pytest.mark.parametrize("backend", ["cpu", "dense"])
@pytest.mark.parametrize("flags", list(FLAGS))
@pytest.mark.parametrize("damp, support", [(0.7, 1.0), (3.6, 3.6)])
def test_straight_through_finite_differences(backend, flags, damp, support):
    """Surrogate terms, thresholds among the v values (no margin)."""
    p, kw, rng = _setup(flags, seed=10 + len(flags))
    kw.update(damp=damp, support=support)
    straight_through_check(p, kw, backend, rng)


@pytest.mark.parametrize("backend", ["cpu", "dense"])
@pytest.mark.parametrize("flags", ["plain", "zoneout_mask", "dropconnect_mask", "lengths",
                                   "trace"])
def test_gru_finite_differences(backend, flags):
    p, kw, rng = _setup(flags, seed=20 + len(flags))
    fd_check(p, kw, backend, rng, gru=True)


@pytest.mark.parametrize("backend", ["cpu", "dense"])
def test_finite_differences_batch1_T1_odd(backend):
    for T, B, H in ((1, 1, 5), (4, 1, 13), (1, 5, 3)):
        p, kw, rng = _setup("plain", seed=T + B + H, T=T, B=B, H=H)
        fd_check(_margin(p, kw, 3.6), dict(damp=3.6, support=3.6), backend, rng)
