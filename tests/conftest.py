"""Shared helpers for the EGRU tests: random problems, activity control,
threshold margins, cotangents, finite differences and tolerant comparisons.

Everything here is plain NumPy plus the public functional API, so the tests
built on it keep working when the kernels change underneath.
"""

import dataclasses

import numpy as np
import pytest

from evsim import egru_backward, egru_forward, gru_backward, gru_forward
from evsim.functional import GRAD_KEYS
from evsim.kernels import reference

PARAM_KEYS = ("x", "W", "R", "bx", "br", "thr", "h0", "y0")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------
# Random problems


@dataclasses.dataclass
class Problem:
    """One EGRU problem: inputs, parameters and the initial state (h0, y0 may be None)."""

    x: np.ndarray
    W: np.ndarray
    R: np.ndarray
    bx: np.ndarray
    br: np.ndarray
    thr: np.ndarray
    h0: np.ndarray | None
    y0: np.ndarray | None

    @property
    def shape(self):
        """(T, B, I, H)."""
        T, B, In = self.x.shape
        return T, B, In, self.R.shape[0]

    @property
    def dtype(self):
        return self.x.dtype

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def params(self):
        """The differentiable arrays as a dict (initial states filled with zeros)."""
        T, B, _, H = self.shape
        out = {k: getattr(self, k) for k in PARAM_KEYS}
        for k in ("h0", "y0"):
            if out[k] is None:
                out[k] = np.zeros((B, H), self.dtype)
        return out

    def astype(self, dtype):
        return self.replace(**{k: None if v is None else np.ascontiguousarray(v, dtype)
                               for k, v in dataclasses.asdict(self).items()})

    def forward(self, **kw):
        """egru_forward on this problem (keyword arguments passed through)."""
        return egru_forward(self.x, self.W, self.R, self.bx, self.br, self.thr, self.h0,
                            self.y0, **kw)

    def gru(self, **kw):
        """gru_forward on this problem (thr and y0 ignored)."""
        return gru_forward(self.x, self.W, self.R, self.bx, self.br, self.h0, **kw)


def make_problem(T=5, B=3, I=4, H=7, dtype=np.float64, seed=0, activity="mixed",  # noqa: E741
                 state=True, scale=1.0):
    """A random EGRU problem whose membrane values v spread over (-1, 1).

    activity : "mixed" (thresholds in [0.05, 0.5]: some units fire, some not),
        "none" (thresholds 10 and y0 = 0: no event at all, ever), "all"
        (thresholds -5: since v > -1 always, every unit fires every step).
    state : draw random h0 in (-0.5, 0.5) and a sparse y0 (else None).
    """
    rng = np.random.default_rng(seed)
    G = 3 * H

    def n(*shape, s=1.0):
        return np.ascontiguousarray(rng.normal(0.0, s, shape), dtype)

    x = n(T, B, I)
    W = n(I, G, s=scale * 1.2 / np.sqrt(I))
    R = n(H, G, s=scale * 1.2 / np.sqrt(H))
    bx = n(G, s=0.3)
    br = n(G, s=0.3)
    if activity == "mixed":
        thr = np.ascontiguousarray(rng.uniform(0.05, 0.5, H), dtype)
    elif activity == "none":
        thr = np.full(H, 10.0, dtype)
    elif activity == "all":
        thr = np.full(H, -5.0, dtype)
    else:
        raise ValueError(activity)
    h0 = y0 = None
    if state:
        h0 = np.ascontiguousarray(rng.uniform(-0.5, 0.5, (B, H)), dtype)
        y0 = np.ascontiguousarray(rng.uniform(0.2, 0.9, (B, H)) * (rng.random((B, H)) < 0.4),
                                  dtype)
        if activity == "none":
            y0 = np.zeros((B, H), dtype)
    return Problem(x, W, R, bx, br, thr, h0, y0)


# --------------------------------------------------------------------------
# Keeping v away from the threshold


def reference_v(p, keep=None, rmask=None, lengths=None):
    """Membrane values v (T, B, H) and event flags of the reference forward;
    entries past a sample's length are NaN (they are not simulated)."""
    T, B, _, H = p.shape
    q = p.params()
    out = reference.forward(q["x"], q["W"], q["R"], q["bx"], q["br"], q["thr"], q["h0"],
                            q["y0"], keep=keep, rmask=rmask, lengths=lengths)
    v = out["v"].copy()
    if lengths is not None:
        v[np.arange(T)[:, None] >= np.asarray(lengths)[None, :]] = np.nan
    return v, out


def threshold_margin(p, **kw):
    """Per-unit min over steps and samples of |v - thr| (reference forward)."""
    v, _ = reference_v(p, **kw)
    return np.nanmin(np.abs(v - p.thr), axis=(0, 1))


def with_margin(p, margin, seed=0, max_rounds=None, **kw):
    """Return p with thresholds such that |v - thr| >= margin at every step.

    Units whose threshold comes too close are moved, one round at a time, to
    an extreme threshold: ``1 + margin + max|h0|`` (never fires: v stays in
    (-1, 1) for a silent unit) or ``-(1 + margin + max|h0|)`` (always fires:
    v > -1 whenever h > -1). Other units keep their mid thresholds, so a mix
    of silent, firing and mid units results when the margin allows. The
    margin is verified at the end. ``kw`` goes to :func:`reference_v` (keep,
    rmask, lengths).
    """
    rng = np.random.default_rng(seed)
    T, B, _, H = p.shape
    big = 1.0 + margin + (0.0 if p.h0 is None else float(np.abs(p.h0).max()))
    thr = p.thr.copy()
    rounds = max_rounds or 2 * H + 2
    for k in range(rounds):
        q = p.replace(thr=thr)
        v, _ = reference_v(q, **kw)
        bad = np.nanmin(np.abs(v - thr), axis=(0, 1)) < margin
        if not bad.any():
            return q
        thr = thr.copy()
        for j in np.flatnonzero(bad):
            # First rounds: move thr into the widest gap between this unit's
            # v values if it is wide enough (the unit then fires on some steps
            # only); later rounds: an extreme threshold, which always works.
            vals = np.sort(v[..., j][np.isfinite(v[..., j])])
            gaps = np.diff(vals)
            if k < H and gaps.size and gaps.max() > 2 * margin + 0.02:
                i = int(np.argmax(gaps))
                thr[j] = (vals[i] + vals[i + 1]) / 2
            else:
                thr[j] = big if rng.random() < 0.5 else -big
    raise AssertionError(f"could not keep a margin {margin} from the thresholds")


# --------------------------------------------------------------------------
# Cotangents, losses and finite differences


def cotangents(result, rng, trace=False, last=True):
    """Random dy (T, B, H), dh_last, dy_last (B, H) and dtrace, as keyword args."""
    T, B, H = result.y.shape
    dt = result.y.dtype
    out = dict(dy=rng.normal(size=(T, B, H)).astype(dt))
    if last:
        out["dh_last"] = rng.normal(size=(B, H)).astype(dt)
        out["dy_last"] = rng.normal(size=(B, H)).astype(dt)
    if trace:
        out["dtrace"] = rng.normal(size=(T, B, H)).astype(dt)
    return out


def loss_of(result, cot):
    """<dy, y> + <dh_last, h_last> + <dy_last, y_last> + <dtrace, trace>."""
    total = np.sum(cot["dy"] * result.y)
    if "dh_last" in cot:
        total += np.sum(cot["dh_last"] * result.h_last)
    if "dy_last" in cot:
        total += np.sum(cot["dy_last"] * result.y_last)
    if "dtrace" in cot:
        total += np.sum(cot["dtrace"] * result.trace)
    return float(total)


def backward(result, cot, gru=False):
    if gru:
        assert "dy_last" not in cot
        return gru_backward(result, cot["dy"], cot.get("dh_last"), dtrace=cot.get("dtrace"))
    return egru_backward(result, cot["dy"], cot.get("dh_last"), dy_last=cot.get("dy_last"),
                         dtrace=cot.get("dtrace"))


def directional_fd(loss, params, key, direction, eps=1e-6):
    """Central difference of loss(params) along ``direction`` for params[key]."""
    plus = dict(params, **{key: np.ascontiguousarray(params[key] + eps * direction)})
    minus = dict(params, **{key: np.ascontiguousarray(params[key] - eps * direction)})
    return (loss(plus) - loss(minus)) / (2 * eps)


def check_vjp(loss, params, grads, keys=PARAM_KEYS, seed=0, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Assert <t, grad> == d/de loss(params + e t) for a random t per key."""
    rng = np.random.default_rng(seed)
    for key in keys:
        t = rng.normal(size=params[key].shape)
        fd = directional_fd(loss, params, key, t, eps)
        an = float(np.sum(t * grads[key]))
        assert abs(fd - an) <= atol + rtol * max(abs(fd), abs(an)), (
            f"gradient of {key}: finite difference {fd!r}, backward {an!r}")


# --------------------------------------------------------------------------
# Comparisons


def tol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 2e-5


def assert_close(actual, desired, tol, name=""):
    """Elementwise |a - d| <= tol (|d| + max|d| / 10 + 1e-3): relative, with an
    absolute floor scaled to the array (float32 sums cancel)."""
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    assert actual.shape == desired.shape, f"{name}: shape {actual.shape} != {desired.shape}"
    scale = float(np.abs(desired).max()) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol * (scale / 10 + 1e-3),
                               err_msg=name)


def assert_results_equal(res, ref, tol):
    """Forward outputs of two EGRUResults agree (event flags exactly)."""
    np.testing.assert_array_equal(res.c, ref.c, err_msg="c")
    for k in ("y", "h", "h_last", "y_last"):
        assert_close(getattr(res, k), getattr(ref, k), tol, k)
    if ref.trace is None:
        assert res.trace is None
    else:
        assert_close(res.trace, ref.trace, tol, "trace")


def assert_grads_equal(grads, ref, tol):
    assert set(grads) >= set(GRAD_KEYS)
    for k in GRAD_KEYS:
        assert grads[k].dtype == ref[k].dtype, k
        assert_close(grads[k], ref[k], tol, f"grad {k}")


# --------------------------------------------------------------------------
# Gradient checks through any backend


def _run(params, kw, backend, gru):
    kwargs = dict(kw, backend=backend)
    if gru:
        return gru_forward(params["x"], params["W"], params["R"], params["bx"], params["br"],
                           params["h0"], **kwargs)
    return egru_forward(*(params[k] for k in PARAM_KEYS), **kwargs)


def fd_check(p, kw, backend, rng, gru=False, seed=0, rtol=1e-6):
    """True finite differences of a random linear loss of (y, h_last, y_last,
    trace) against the backend's backward, for every parameter. The caller
    keeps |v - thr| outside the surrogate band (see :func:`with_margin`), so
    that the surrogate terms vanish and no event flips. Returns (result, grads)."""
    params = p.params()
    res = _run(params, kw, backend, gru)
    cot = cotangents(res, rng, trace="trace_alpha" in kw)
    if gru:
        del cot["dy_last"]
    grads = backward(res, cot, gru=gru)
    keys = ("x", "W", "R", "bx", "br", "h0") if gru else PARAM_KEYS
    check_vjp(lambda q: loss_of(_run(q, kw, backend, gru), cot), params, grads, keys=keys,
              seed=seed, rtol=rtol)
    return res, grads


def surrogate_integral(u, damp, support):
    """F(u) with F' = damp * max(0, 1 - support |u|) and F(0) = 0."""
    a = np.minimum(np.abs(u), 1.0 / support)
    return np.sign(u) * damp * (a - support * a * a / 2)


def straight_through_forward(params, base, damp, support, keep=None, rmask=None,
                             lengths=None, trace_alpha=None):
    """The EGRU forward written out again in NumPy, with the event flag replaced
    by ``c = c0 + F(v - thr) - F(v0 - thr0)`` (c0, v0, thr0 from ``base``, frozen).

    At the base point this is the EGRU forward; it is smooth, and its exact
    derivative there is the surrogate gradient. Returns (y, h_last, y_last, trace).
    """
    x, W, R, bx, br, thr, h, y = (params[k] for k in PARAM_KEYS)
    T, B, _ = x.shape
    H = R.shape[0]
    R = R if rmask is None else R * rmask
    lengths = np.full(B, T) if lengths is None else lengths
    ys = np.zeros((T, B, H))
    for t in range(T):
        a = x[t] @ W + bx
        q = y @ R + br
        z = 1 / (1 + np.exp(-(a[:, :H] + q[:, :H])))
        r = 1 / (1 + np.exp(-(a[:, H:2 * H] + q[:, H:2 * H])))
        g = np.tanh(a[:, 2 * H:] + r * q[:, 2 * H:])
        v = z * h + (1 - z) * g
        if keep is not None:
            v = keep[t] * v + (1 - keep[t]) * h
        c = (base["c"][t] + surrogate_integral(v - thr, damp, support)
             - surrogate_integral(base["v"][t] - base["thr"], damp, support))
        alive = (t < lengths)[:, None]
        ys[t] = np.where(alive, c * v, 0)
        h = np.where(alive, v - c * thr, h)
        y = np.where(alive, c * v, y)
    tr = None if trace_alpha is None else reference.output_trace(ys, trace_alpha)
    return ys, h, y, tr


def straight_through_check(p, kw, backend, rng, seed=3):
    """Finite differences of :func:`straight_through_forward` against the
    backend's backward: checks the surrogate terms, thresholds anywhere.
    ``kw`` must give damp and support; masks as explicit arrays."""
    params = p.params()
    res = _run(params, kw, backend, False)
    assert 0 < res.c.mean() < 1, "want both firing and silent unit-steps"
    cot = cotangents(res, rng, trace="trace_alpha" in kw)
    grads = backward(res, cot)
    masks = dict(keep=kw.get("zoneout_mask"), rmask=kw.get("dropconnect_mask"),
                 lengths=kw.get("lengths"))
    v0, _ = reference_v(p, **masks)
    base = dict(c=res.c, v=np.nan_to_num(v0), thr=p.thr.copy())
    st_kw = dict(damp=kw["damp"], support=kw["support"], trace_alpha=kw.get("trace_alpha"),
                 **masks)

    def loss(q):
        ys, h_last, y_last, tr = straight_through_forward(q, base, **st_kw)
        total = np.sum(cot["dy"] * ys) + np.sum(cot["dh_last"] * h_last)
        total += np.sum(cot["dy_last"] * y_last)
        if tr is not None:
            total += np.sum(cot["dtrace"] * tr)
        return float(total)

    # At the base point the straight-through forward is the EGRU forward.
    ys, h_last, _, _ = straight_through_forward(params, base, **st_kw)
    np.testing.assert_allclose(ys, res.y, atol=1e-12)
    np.testing.assert_allclose(h_last, res.h_last, atol=1e-12)
    check_vjp(loss, params, grads, seed=seed, rtol=1e-5, atol=1e-8)
    return res, grads
