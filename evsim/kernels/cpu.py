"""Numba CPU kernels: event-driven EGRU forward, sparse BPTT backward.

All kernels take plain arrays, run whole sequences (the loop over time is
compiled) and allocate nothing per step: the caller passes every output and
scratch buffer. Shapes use T steps, B samples, I inputs, H units, G = 3H.

Events are kept per step and per sample as a CSR-like list in a preallocated
buffer: ``ev_idx[s, b, :ev_cnt[s, b]]`` are the units of sample b with a non-zero
output at slot s, where slot 0 holds the initial output y0 and slot t + 1 the
output of step t. The recurrent drive of step t reads only the rows of R of the
units listed in slot t.

Parallel work is split over (sample, column block) pairs: at batch 1 the
columns are the only parallel axis, at larger batches the samples are.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from evsim import config
from evsim.kernels import _cell

_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=True)

# --------------------------------------------------------------------------
# exp: exact for float64, a branch-free polynomial for float32 that LLVM can
# vectorise (there is no SVML in this llvmlite, so libm calls stay scalar).


@intrinsic
def _int_bits_as_float32(typingctx, bits):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def _exp(x):  # pragma: no cover - replaced by the overload below in compiled code
    return math.exp(x)


@overload(_exp, inline="always")
def _exp_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32 and config.FAST_EXP_FLOAT32:

        def fast_exp32(x):
            # exp(x) = 2^n * exp(f), n = round(x / ln 2), |f| <= ln2 / 2
            x = min(max(x, np.float32(-87.0)), np.float32(88.0))
            n = np.float32(math.floor(x * np.float32(1.442695041) + np.float32(0.5)))
            f = x - n * np.float32(0.693145752) - n * np.float32(1.428606765e-06)
            p = np.float32(1.0 / 5040.0)
            p = p * f + np.float32(1.0 / 720.0)
            p = p * f + np.float32(1.0 / 120.0)
            p = p * f + np.float32(1.0 / 24.0)
            p = p * f + np.float32(1.0 / 6.0)
            p = p * f + np.float32(0.5)
            p = p * f + np.float32(1.0)
            p = p * f + np.float32(1.0)
            scale = _int_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))
            return p * scale

        return fast_exp32
    return lambda x: math.exp(x)


_cell_fns = _cell.build(numba.njit(inline="always", **_JIT), _exp)
# Numba resolves module globals, not attributes of a namespace object.
_gates = _cell_fns.gates
_fire = _cell_fns.fire
_cell_backward = _cell_fns.backward
_backward_active = _cell_fns.backward_active


# --------------------------------------------------------------------------
# Helpers


@numba.njit(**_JIT)
def _work_split(B, G, nthreads):
    """Number of column blocks per sample so every thread has work."""
    nblk = max(1, nthreads // B)
    return nblk, (G + nblk - 1) // nblk


@numba.njit(**_JIT)
def _compact_events(y_row, idx_row):
    """Write the indices of non-zero entries of y_row into idx_row; return count."""
    n = 0
    for j in range(y_row.shape[0]):
        if y_row[j] != 0:
            idx_row[n] = j
            n += 1
    return n


@numba.njit(**_JIT)
def _keep_value(keep, keep_mode, t, b, j):
    if keep_mode == 0:
        return 1.0
    if keep_mode == 1:
        return keep[t, b, j]
    return keep[0, 0, 0]


# --------------------------------------------------------------------------
# Forward


@numba.njit(parallel=True, **_JIT)
def egru_forward(a, R, br, thr, h0, y0, keep, keep_mode, lengths, dense_gru, dense_switch,
                 save, y, h, c, v, z, r, g, qg, h_last, y_last, ev_idx, ev_cnt, q, counts,
                 nthreads):
    """Event-driven EGRU forward over a whole sequence.

    Parameters (in: read only; out: written)
    ----------
    a : (T, B, G) in. Input drive x W + bx, computed by the caller.
    R : (H, G) in. Recurrent weights (DropConnect already applied).
    br : (G,) in. thr : (H,) in. h0, y0 : (B, H) in. Initial state.
    keep : (T, B, H) or (1, 1, 1) in. Zoneout keep factors, see ``keep_mode``
        (0: none, 1: per element, 2: the constant keep[0, 0, 0]).
    lengths : (B,) int64 in. Steps to run per sample; later outputs stay 0.
    dense_gru : bool. Plain GRU: every unit emits its state every step.
    dense_switch : float. Use one dense product for the batch when more than
        this fraction of (sample, unit) pairs emitted an event at t - 1.
    save : bool. Write v, z, r, g, qg for the backward pass (training).
    y, h, c : (T, B, H) out, zero-initialised. Outputs, states, event flags.
    v, z, r, g, qg : (T, B, H) out when ``save`` (else any shape). Saved values.
    h_last, y_last : (B, H) out. State after each sample's last step.
    ev_idx : (T + 1, B, H) int32 out. ev_cnt : (T + 1, B) int32 out. Events.
    q : (B, G) scratch. Recurrent drive of the current step.
    counts : (B, 3) int64 out. Per sample: events, recurrent multiply-adds
        done, dense-equivalent multiply-adds.
    nthreads : int. Threads to split the work over (numba.get_num_threads()).
    """
    T, B, G = a.shape
    H = G // 3
    nblk, bw = _work_split(B, G, nthreads)
    for b in range(B):
        ev_cnt[0, b] = _compact_events(y0[b], ev_idx[0, b])
        counts[b, 0] = 0
        counts[b, 1] = 0
        counts[b, 2] = lengths[b] * H * G
        h_last[b] = h0[b]
        y_last[b] = y0[b]
    for t in range(T):
        n_prev = 0
        for b in range(B):
            n_prev += ev_cnt[t, b]
        use_dense = n_prev > dense_switch * B * H
        if use_dense:
            yprev = y0 if t == 0 else y[t - 1]
            np.dot(yprev, R, q)
        # 1. recurrent drive: br + sum over events of y_i R[i, :]
        for w in prange(B * nblk):
            b = w // nblk
            lo = (w % nblk) * bw
            hi = min(G, lo + bw)
            if t >= lengths[b]:
                continue
            if use_dense:
                for k in range(lo, hi):
                    q[b, k] += br[k]
                continue
            yprev = y0[b] if t == 0 else y[t - 1, b]
            qb = q[b, lo:hi]
            qb[:] = br[lo:hi]
            for e in range(ev_cnt[t, b]):
                i = ev_idx[t, b, e]
                val = yprev[i]
                Ri = R[i, lo:hi]
                for k in range(hi - lo):
                    qb[k] += val * Ri[k]
        # 2. fused pointwise update and 3. event list of this step
        for b in prange(B):
            if t >= lengths[b]:
                continue
            counts[b, 1] += (H if use_dense else ev_cnt[t, b]) * G
            hprev = h0[b] if t == 0 else h[t - 1, b]
            ab, qb = a[t, b], q[b]
            az, ar, ag = ab[:H], ab[H:2 * H], ab[2 * H:]
            qz, qr, qgb = qb[:H], qb[H:2 * H], qb[2 * H:]
            yb, hb, cb = y[t, b], h[t, b], c[t, b]
            for j in range(H):
                kp = _keep_value(keep, keep_mode, t, b, j)
                zj, rj, gj, vj = _gates(az[j], ar[j], ag[j], qz[j], qr[j], qgb[j], hprev[j], kp)
                cj, yj, hj = _fire(vj, thr[j], dense_gru)
                yb[j] = yj
                hb[j] = hj
                cb[j] = cj
                if save:
                    v[t, b, j] = vj
                    z[t, b, j] = zj
                    r[t, b, j] = rj
                    g[t, b, j] = gj
                    qg[t, b, j] = qgb[j]
            n = _compact_events(yb, ev_idx[t + 1, b])
            ev_cnt[t + 1, b] = n
            counts[b, 0] += H if dense_gru else n
            h_last[b] = hb
            y_last[b] = yb


# --------------------------------------------------------------------------
# Backward


@numba.njit(parallel=True, **_JIT)
def _pointwise_backward(t, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                        c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b):
    """Backward of the fused pointwise update of step t, for every sample."""
    B, H = dh.shape
    for b in prange(B):
        if t >= lengths[b]:
            continue
        hprev = h0[b] if t == 0 else h[t - 1, b]
        dab, dqb = da[t, b], dq[t, b]
        dyt, dhb, dyn = dy[t, b], dh[b], dy_next[b]
        vt, ct, zt, rt, gt, qgt = v[t, b], c[t, b], z[t, b], r[t, b], g[t, b], qg[t, b]
        for j in range(H):
            kp = _keep_value(keep, keep_mode, t, b, j)
            dpz, dpr, dpg, dhp, dth = _cell_backward(
                dyt[j] + dyn[j], dhb[j], vt[j], ct[j], zt[j], rt[j], gt[j], qgt[j],
                hprev[j], thr[j], kp, damp, support, dense_gru)
            dab[j] = dpz
            dab[H + j] = dpr
            dab[2 * H + j] = dpg
            dqb[j] = dpz
            dqb[H + j] = dpr
            dqb[2 * H + j] = dpg * rt[j]
            dhb[j] = dhp
            dthr_b[b, j] += dth


@numba.njit(parallel=True, **_JIT)
def egru_backward(R, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                  c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b, counts,
                  nthreads):
    """Sparse BPTT through :func:`egru_forward` (all but the weight gradients).

    The pointwise backward runs for every unit (the state path is dense); the
    recurrent gradient ``dq_t R^T`` is computed only for units of step t - 1
    that are backward-active (fired or inside the surrogate band), since dL/dy
    of every other unit is multiplied by zero. dR is left to
    :func:`accumulate_dR`, dx, dW and the biases to the caller (GEMMs on ``da``).

    Parameters (in: read only; out: written; io: both)
    ----------
    R : (H, G) in. thr : (H,) in. h0 : (B, H) in.
    keep, keep_mode, lengths, dense_gru : as in :func:`egru_forward`.
    damp, support : float. Surrogate gradient shape.
    c, v, z, r, g, qg, h : (T, B, H) in. Saved by the forward pass.
    dy : (T, B, H) in. dL/dy_t from outside.
    dh : (B, H) io. In: dL/dh_last. Out: dL/dh0.
    dy_next : (B, H) io. In: dL/dy_last. Out: dL/dy0.
    da : (T, B, G) out. Gradient of the gate pre-activations (= input drive).
    dq : (T, B, G) out. Gradient of the recurrent drive q_t.
    dthr_b : (B, H) out. Per-sample threshold gradient (reduced by the caller).
    counts : (B, 2) int64 out. Per sample: rows of ``dq R^T`` computed for
        steps t >= 1 (backward-active units) and the dense equivalent.
    nthreads : int. Threads to split the work over.
    """
    T, B, G = dq.shape
    H = G // 3
    nblk, bw_units = _work_split(B, H, nthreads)
    dthr_b[:] = 0.0
    for b in range(B):
        counts[b, 0] = 0
        counts[b, 1] = max(lengths[b] - 1, 0) * H
    for t in range(T - 1, -1, -1):
        _pointwise_backward(t, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                            c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b)
        for w in prange(B * nblk):
            b = w // nblk
            lo = (w % nblk) * bw_units
            hi = min(H, lo + bw_units)
            if t >= lengths[b]:
                continue
            dqb = dq[t, b]
            n_active = 0
            for i in range(lo, hi):
                # dL/dy0 is always needed in full: y0 is an input of the sequence.
                active = True if t == 0 else _backward_active(v[t - 1, b, i], thr[i],
                                                                  support, dense_gru)
                acc = 0.0
                if active:
                    n_active += 1
                    Ri = R[i]
                    for k in range(G):
                        acc += dqb[k] * Ri[k]
                dy_next[b, i] = acc
            if t > 0:
                counts[b, 0] += n_active


@numba.njit(**_JIT)
def egru_backward_dense(R, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                        c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b, counts,
                        nthreads):
    """Dense BPTT baseline: same arguments as :func:`egru_backward`, but
    ``dq_t R^T`` is one BLAS product over all units each step."""
    T, B, G = dq.shape
    H = G // 3
    RT = np.ascontiguousarray(R.T)
    dy_prev = np.empty_like(dy_next)
    dthr_b[:] = 0.0
    for b in range(B):
        counts[b, 0] = max(lengths[b] - 1, 0) * H
        counts[b, 1] = counts[b, 0]
    for t in range(T - 1, -1, -1):
        _pointwise_backward(t, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                            c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b)
        np.dot(dq[t], RT, dy_prev)
        for b in range(B):
            if t < lengths[b]:  # finished samples keep their final-state gradient
                dy_next[b] = dy_prev[b]


@numba.njit(parallel=True, **_JIT)
def accumulate_dR(ev_idx, ev_cnt, y0, y, dq, lengths, dR):
    """dR = sum over events of y_{t-1, b, i} * dq[t, b, :], row by row.

    Builds a unit-major list of the events that fed each step, then splits
    the rows of dR over threads (rows are independent: no write conflicts).

    ev_idx, ev_cnt : in, as in :func:`egru_forward` (slot t feeds step t).
    y0 : (B, H) in. y : (T, B, H) in. dq : (T, B, G) in. lengths : (B,) in.
    dR : (H, G) out, overwritten.
    Returns the number of multiply-adds done.
    """
    T, B, G = dq.shape
    H = dR.shape[0]
    offsets = np.zeros(H + 1, np.int64)
    for t in range(T):
        for b in range(B):
            if t < lengths[b]:
                for e in range(ev_cnt[t, b]):
                    offsets[ev_idx[t, b, e] + 1] += 1
    for i in range(H):
        offsets[i + 1] += offsets[i]
    n_ev = offsets[H]
    fill = offsets[:H].copy()
    ev_tb = np.empty(n_ev, np.int64)
    ev_val = np.empty(n_ev, dR.dtype)
    for t in range(T):
        for b in range(B):
            if t < lengths[b]:
                yprev = y0[b] if t == 0 else y[t - 1, b]
                for e in range(ev_cnt[t, b]):
                    i = ev_idx[t, b, e]
                    ev_tb[fill[i]] = t * B + b
                    ev_val[fill[i]] = yprev[i]
                    fill[i] += 1
    dq2 = dq.reshape(T * B, G)
    for i in prange(H):
        row = dR[i]
        row[:] = 0.0
        for e in range(offsets[i], offsets[i + 1]):
            val = ev_val[e]
            src = dq2[ev_tb[e]]
            for k in range(G):
                row[k] += val * src[k]
    return n_ev * G


@numba.njit(parallel=True, **_JIT)
def output_trace(y, alpha, trace):
    """trace_t = alpha trace_{t-1} + (1 - alpha) y_t, trace_{-1} = 0.

    y : (T, B, H) in. trace : (T, B, H) out.
    """
    T, B, H = y.shape
    for b in prange(B):
        for j in range(H):
            acc = 0.0
            for t in range(T):
                acc = alpha * acc + (1 - alpha) * y[t, b, j]
                trace[t, b, j] = acc


@numba.njit(parallel=True, **_JIT)
def output_trace_backward(dtrace, alpha, dy):
    """dy += dL/dy through the trace, given dtrace = dL/dtrace (both (T, B, H))."""
    T, B, H = dtrace.shape
    for b in prange(B):
        for j in range(H):
            acc = 0.0
            for t in range(T - 1, -1, -1):
                acc = alpha * acc + dtrace[t, b, j]
                dy[t, b, j] += (1 - alpha) * acc
