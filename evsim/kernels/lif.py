"""LIF neuron maths, written once, and its sequence kernels for one population.

A unit has a membrane potential ``v``, one state value per synaptic receptor
``k`` (a current ``I_k`` in volts, or a conductance ``g_k`` in units of the
leak conductance) and a refractory counter ``r``. Step t of one unit, with
``x_k`` the input that arrives at receptor k in this step:

1. arrival:  ``s_k = I_k + x_k`` (exponential receptors) or ``s_k = x_k``
   (step current: held for this step only, nothing carried over);
2. membrane, unless refractory (``r > 0``: ``v`` is held, ``r -= 1``):

   * current receptors only, exact integration of the linear dynamics
     ``tau_m dv/dt = -(v - v_rest) + sum_k I_k(t)`` over one step:
     ``u = v_rest + (v - v_rest) a_m + sum_k c_k s_k`` with ``a_m = exp(-dt/tau_m)``,
     ``c_k = tau_k / (tau_k - tau_m) (a_k - a_m)`` for a current decaying with
     ``tau_k`` and ``c_k = 1 - a_m`` for a step current;
   * with any conductance receptor, exponential Euler (``g`` and ``I`` held over
     the step): ``G = sum g_k``, ``v_inf = (v_rest + sum g_k E_k + sum I_k) / (1 + G)``,
     ``u = v_inf + (v - v_inf) exp(-dt (1 + G) / tau_m)``;
3. spike ``y = [u > v_th]`` (strict), reset ``v = v_reset`` and ``r = n_ref - 1``
   where it spiked, else ``v = u``;
4. decay: ``I_k = a_k s_k`` with ``a_k = exp(-dt / tau_k)`` (0 for step currents).

So a unit that spikes at step s is held during steps s+1 .. s+n_ref-1 and
integrates again from step s+n_ref (Brian2's ``refractory`` with
``(unless refractory)``), and an input that arrives in step t moves ``v`` in
the same step. :func:`constants` turns time constants into these factors; the
inline functions below are the only place the update is written, used by the
sequence kernels here and by the network loop (:mod:`evsim.kernels.snn_loop`).

Layouts: receptor-major, ``x[t, b, k * N + j]`` is the input of receptor k of
unit j; states ``I`` (B, R * N) the same.
"""

import math

import numba
import numpy as np
from numba import prange

_JIT = dict(cache=True, nogil=True, error_model="numpy")

STEP, EXP, COND = 0, 1, 2  # receptor kinds


def decay(tau, dt):
    """Per-step decay factor exp(-dt / tau) (0 when tau is 0)."""
    return 0.0 if tau == 0 else math.exp(-dt / tau)


def constants(tau_mem, receptors, dt):
    """Factors of one step for a population.

    receptors : sequence of (kind, tau, e_rev). Returns (a_m, kinds int64 (R,),
    a (R,), c (R,), e_rev (R,), conductance: bool). With a conductance receptor
    the currents enter exponential Euler raw (c = 1).
    """
    a_m = decay(tau_mem, dt)
    kinds = np.array([k for k, _, _ in receptors], np.int64)
    cond = bool(np.any(kinds == COND))
    a = np.array([decay(tau, dt) if kind != STEP else 0.0 for kind, tau, _ in receptors])
    c = np.ones(len(receptors))
    if not cond:
        for n, (kind, tau, _) in enumerate(receptors):
            if kind == STEP:
                c[n] = 1.0 - a_m
            elif abs(tau - tau_mem) <= 1e-9 * tau_mem:  # the limit tau_k -> tau_m
                c[n] = dt / tau_mem * a_m
            else:
                c[n] = tau / (tau - tau_mem) * (a[n] - a_m)
    e_rev = np.array([0.0 if e is None else float(e) for _, _, e in receptors])
    return a_m, kinds, a, c, e_rev, cond


# --------------------------------------------------------------------------
# The update, written once


@numba.njit(inline="always", **_JIT)
def arrive(kind, carried, arrived):
    """Receptor value in this step: carried state plus what arrived."""
    return arrived if kind == STEP else carried + arrived


@numba.njit(inline="always", **_JIT)
def membrane(v, acc, a_m, v_rest):
    """Exact step of the current-based membrane (acc = sum_k c_k s_k)."""
    return v_rest + (v - v_rest) * a_m + acc


@numba.njit(inline="always", **_JIT)
def membrane_cond(v, acc, G, GE, dt_tau, v_rest):
    """Exponential-Euler step with total conductance G and sum g_k E_k = GE."""
    g1 = 1.0 + G
    v_inf = (v_rest + GE + acc) / g1
    return v_inf + (v - v_inf) * math.exp(-dt_tau * g1)


@numba.njit(inline="always", **_JIT)
def surrogate(u, th, damp, support):
    """Pseudo-derivative of the spike: damp * max(0, 1 - support |u - th|)."""
    return damp * max(0.0, 1.0 - support * abs(u - th))


# --------------------------------------------------------------------------
# Sequence kernels for one population (network DAG and step-wise schedules)


@numba.njit(**_JIT)
def _unit_forward(b, j, x, kinds, a, c, e_rev, cond, a_m, dt_tau, v_rest, v_th, v_reset, n_ref,
                  v0, I0, r0, length, s, u, v, I, held, v_last, I_last, r_last):
    """One unit (b, j) of :func:`lif_forward`; returns its spikes."""
    T, B, N = s.shape
    R = kinds.shape[0]
    vv = v0[b, j]
    rr = r0[b, j]
    n = 0
    for k in range(R):
        I_last[b, k * N + j] = I0[b, k * N + j]
    for t in range(length):
        acc = 0.0
        G = 0.0
        GE = 0.0
        for k in range(R):
            sk = arrive(kinds[k], I_last[b, k * N + j], x[t, b, k * N + j])
            if kinds[k] == COND:
                G += sk
                GE += sk * e_rev[k]
            else:
                acc += c[k] * sk
            I_last[b, k * N + j] = a[k] * sk
            I[t, b, k * N + j] = a[k] * sk
        sp = 0.0
        if rr > 0:
            rr -= 1
            uu = vv
            held[t, b, j] = 1
        else:
            if cond:
                uu = membrane_cond(vv, acc, G, GE, dt_tau, v_rest)
            else:
                uu = membrane(vv, acc, a_m, v_rest)
            held[t, b, j] = 0
            if uu > v_th:
                sp = 1.0
        if sp != 0.0:
            vv = v_reset
            rr = n_ref - 1 if n_ref > 0 else 0  # (no int max: CUDA compiles this too)
            n += 1
        else:
            vv = uu
        s[t, b, j] = sp
        u[t, b, j] = uu
        v[t, b, j] = vv
    for t in range(length, T):
        s[t, b, j] = 0.0
        u[t, b, j] = 0.0
        v[t, b, j] = 0.0
        held[t, b, j] = 0
        for k in range(R):
            I[t, b, k * N + j] = 0.0
    v_last[b, j] = vv
    r_last[b, j] = rr
    return n


@numba.njit(parallel=True, **_JIT)
def lif_forward(x, kinds, a, c, e_rev, cond, a_m, dt_tau, v_rest, v_th, v_reset, n_ref,
                v0, I0, r0, lengths, s, u, v, I, held, v_last, I_last, r_last):
    """LIF population over a whole sequence.

    x : (T, B, R N) in, receptor inputs (receptor-major). kinds, a, c, e_rev :
    (R,) receptor factors from :func:`constants`; cond : bool (exponential
    Euler); a_m, dt_tau (= dt / tau_m), v_rest, v_th, v_reset : float;
    n_ref : int, refractory steps. v0 (B, N), I0 (B, R N), r0 (B, N) int64 in:
    initial state. lengths : (B,) in.
    s, u, v : (T, B, N) out: spikes, membrane before and after the reset
    (zero past a sample's length). I : (T, B, R N) out, receptor states after
    the step. held : (T, B, N) uint8 out, 1 where the unit was refractory.
    v_last (B, N), I_last (B, R N), r_last (B, N) out: state after each
    sample's last step. Returns the number of spikes.
    """
    T, B, N = s.shape
    counts = np.zeros(B * N, np.int64)
    for w in prange(B * N):
        counts[w] = _unit_forward(w // N, w % N, x, kinds, a, c, e_rev, cond, a_m, dt_tau,
                                  v_rest, v_th, v_reset, n_ref, v0, I0, r0, lengths[w // N],
                                  s, u, v, I, held, v_last, I_last, r_last)
    return counts.sum()


@numba.njit(**_JIT)
def _unit_backward(b, j, ds, s, u, held, kinds, a, c, a_m, v_th, v_reset, damp, support,
                   length, dv_in, dI_in, dx, dv0, dI0):
    """One unit (b, j) of :func:`lif_backward` (also compiled for CUDA)."""
    T = ds.shape[0]
    N = ds.shape[2]
    R = kinds.shape[0]
    dv = dv_in[b, j]
    for k in range(R):
        dI0[b, k * N + j] = dI_in[b, k * N + j]  # carries dL/dI_k backwards in time
    for t in range(T - 1, -1, -1):
        if t >= length:
            for k in range(R):
                dx[t, b, k * N + j] = 0.0
            continue
        du = 0.0
        if held[t, b, j] == 0:
            uu = u[t, b, j]
            sp = s[t, b, j]
            dsp = ds[t, b, j] + dv * (v_reset - uu)
            du = dv * (1.0 - sp) + dsp * surrogate(uu, v_th, damp, support)
            dv = a_m * du
        for k in range(R):
            g = c[k] * du + a[k] * dI0[b, k * N + j]  # dL/d(arrival value s_k)
            dx[t, b, k * N + j] = g
            dI0[b, k * N + j] = g if kinds[k] != STEP else 0.0
    dv0[b, j] = dv


@numba.njit(parallel=True, **_JIT)
def lif_backward(ds, s, u, held, kinds, a, c, a_m, v_th, v_reset, damp, support, lengths,
                 dv_in, dI_in, dx, dv0, dI0):
    """BPTT through :func:`lif_forward` (current receptors only) with the
    surrogate derivative; the reset's dependence on the spike is kept
    (``dv/du = (1 - y) + (v_reset - u) dy/du``).

    ds : (T, B, N) in, dL/dy. s, u, held : (T, B, N) in, saved by the forward.
    kinds, a, c : (R,) receptor factors. dv_in (B, N), dI_in (B, R N) in:
    gradients of the state after the last step (zero for a whole sequence;
    the carry when a step-wise schedule calls this one step at a time).
    dx : (T, B, R N) out, dL/dx (zero past a length). dv0 (B, N), dI0 (B, R N)
    out: gradients of the state before the first step.
    """
    T, B, N = ds.shape
    for w in prange(B * N):
        _unit_backward(w // N, w % N, ds, s, u, held, kinds, a, c, a_m, v_th, v_reset, damp,
                       support, lengths[w // N], dv_in, dI_in, dx, dv0, dI0)
