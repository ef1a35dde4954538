"""Numba CPU kernels for the object model: event propagation through
projections (dense and CSR weights), over whole sequences. (The LIF
population's kernels: :mod:`evsim.kernels.lif`.)

Conventions (T steps, B samples, N source units, M target inputs):

* Event lists are per step and sample: ``ev_idx[t, b, :ev_cnt[t, b]]`` are the
  source units with a non-zero output at step t (int32). Note the EGRU
  kernels keep y0 in slot 0; callers pass their slots ``1:`` here.
* ``lengths`` (B,) int64: steps t >= lengths[b] are skipped (cost nothing).
* Every kernel returns the number of multiply-adds it really did.

Parallel loops run over (t, b) pairs when each pair writes its own output row
(no write conflicts), and over source rows for weight gradients (each thread
owns whole rows of dW, after an unit-major regrouping of the events).
"""


import numba
import numpy as np
from numba import prange

# no nnan/ninf: a NaN or inf must propagate (those flags make it undefined behaviour)
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "nsz", "arcp"})


# --------------------------------------------------------------------------
# Event lists


@numba.njit(parallel=True, **_JIT)
def compact_events(y, lengths, ev_idx, ev_cnt):
    """Event lists of the non-zero entries of y.

    y : (T, B, N) in. lengths : (B,) in.
    ev_idx : (T, B, N) int32 out. ev_cnt : (T, B) int32 out (0 past a length).
    Returns the total number of events.
    """
    T, B, N = y.shape
    total = 0
    for w in prange(T * B):
        t = w // B
        b = w % B
        n = 0
        if t < lengths[b]:
            row = y[t, b]
            idx = ev_idx[t, b]
            for j in range(N):
                if row[j] != 0:
                    idx[n] = j
                    n += 1
        ev_cnt[t, b] = n
        total += n
    return total


@numba.njit(**_JIT)
def _unit_major(ev_idx, ev_cnt, y, lengths, N):
    """Regroup the events by source unit: offsets (N + 1,), flat (t * B + b)
    positions and event values, for row-parallel weight gradients."""
    T, B = ev_cnt.shape
    offsets = np.zeros(N + 1, np.int64)
    for t in range(T):
        for b in range(B):
            if t < lengths[b]:
                for e in range(ev_cnt[t, b]):
                    offsets[ev_idx[t, b, e] + 1] += 1
    for i in range(N):
        offsets[i + 1] += offsets[i]
    fill = offsets[:N].copy()
    pos = np.empty(offsets[N], np.int64)
    val = np.empty(offsets[N], y.dtype)
    for t in range(T):
        for b in range(B):
            if t < lengths[b]:
                for e in range(ev_cnt[t, b]):
                    i = ev_idx[t, b, e]
                    pos[fill[i]] = t * B + b
                    val[fill[i]] = y[t, b, i]
                    fill[i] += 1
    return offsets, pos, val


# --------------------------------------------------------------------------
# Dense weights, event-driven source


@numba.njit(parallel=True, **_JIT)
def propagate_dense(ev_idx, ev_cnt, y, W, lengths, out):
    """out[t, b, :] += sum over events i of y[t, b, i] * W[i, :].

    ev_idx, ev_cnt : in, events of the source. y : (T, B, N) in, source values.
    W : (N, M) in. lengths : (B,) in. out : (T, B, M) io.
    """
    T, B, N = y.shape
    M = W.shape[1]
    n_ev = 0
    for w in prange(T * B):
        t = w // B
        b = w % B
        if t >= lengths[b]:
            continue
        o = out[t, b]
        yb = y[t, b]
        for e in range(ev_cnt[t, b]):
            i = ev_idx[t, b, e]
            val = yb[i]
            Wi = W[i]
            for k in range(M):
                o[k] += val * Wi[k]
        n_ev += ev_cnt[t, b]
    return n_ev * M


@numba.njit(parallel=True, **_JIT)
def grad_weight_dense(ev_idx, ev_cnt, y, dout, lengths, dW):
    """dW[i, :] = sum over events (t, b, i) of y[t, b, i] * dout[t, b, :]:
    only rows of units that fired, event by event.

    dout : (T, B, M) in. dW : (N, M) out, overwritten.
    """
    T, B, N = y.shape
    M = dout.shape[2]
    offsets, pos, val = _unit_major(ev_idx, ev_cnt, y, lengths, N)
    d2 = dout.reshape(T * B, M)
    for i in prange(N):
        row = dW[i]
        row[:] = 0.0
        for e in range(offsets[i], offsets[i + 1]):
            v = val[e]
            src = d2[pos[e]]
            for k in range(M):
                row[k] += v * src[k]
    return offsets[N] * M


@numba.njit(parallel=True, **_JIT)
def grad_source_dense(dout, W, mask, use_mask, lengths, dsrc):
    """dsrc[t, b, i] = dout[t, b, :] . W[i, :] for units with mask[t, b, i]
    (all units when ``use_mask`` is False); zero elsewhere.

    dout : (T, B, M) in. W : (N, M) in. mask : (T, B, N) bool in (or any
    shape when unused). dsrc : (T, B, N) out, overwritten.
    """
    T, B, M = dout.shape
    N = W.shape[0]
    n_rows = 0
    for w in prange(T * B):
        t = w // B
        b = w % B
        d = dsrc[t, b]
        d[:] = 0.0
        if t >= lengths[b]:
            continue
        g = dout[t, b]
        n = 0
        for i in range(N):
            if use_mask and not mask[t, b, i]:
                continue
            Wi = W[i]
            acc = 0.0
            for k in range(M):
                acc += g[k] * Wi[k]
            d[i] = acc
            n += 1
        n_rows += n
    return n_rows * M


# --------------------------------------------------------------------------
# CSR weights (row i = source unit i: indices are target columns)


@numba.njit(parallel=True, **_JIT)
def propagate_csr(ev_idx, ev_cnt, y, indptr, indices, data, lengths, out):
    """out[t, b, indices[k]] += y[t, b, i] * data[k] for the non-zeros k of
    row i, over the events i. Returns the multiply-adds done (non-zeros touched)."""
    T, B, N = y.shape
    n_mac = 0
    for w in prange(T * B):
        t = w // B
        b = w % B
        if t >= lengths[b]:
            continue
        o = out[t, b]
        yb = y[t, b]
        n = 0
        for e in range(ev_cnt[t, b]):
            i = ev_idx[t, b, e]
            val = yb[i]
            for k in range(indptr[i], indptr[i + 1]):
                o[indices[k]] += val * data[k]
            n += indptr[i + 1] - indptr[i]
        n_mac += n
    return n_mac


@numba.njit(parallel=True, **_JIT)
def propagate_csr_delayed(ev_idx, ev_cnt, y, indptr, indices, data, delays, lengths, out):
    """:func:`propagate_csr` with a delay per non-zero: the event of step t
    adds to ``out[t + delays[k]]`` (dropped past the end of ``out``).
    out : (T_out, B, M). Parallel over samples (each owns its rows of out).
    Returns the multiply-adds done."""
    T, B, N = y.shape
    T_out = out.shape[0]
    n_mac = 0
    for b in prange(B):
        n = 0
        for t in range(min(T, lengths[b])):
            for e in range(ev_cnt[t, b]):
                i = ev_idx[t, b, e]
                val = y[t, b, i]
                for k in range(indptr[i], indptr[i + 1]):
                    td = t + delays[k]
                    if td < T_out:
                        out[td, b, indices[k]] += val * data[k]
                n += indptr[i + 1] - indptr[i]
        n_mac += n
    return n_mac


@numba.njit(parallel=True, **_JIT)
def grad_weight_csr(ev_idx, ev_cnt, y, dout, indptr, indices, lengths, ddata):
    """Gradient of the CSR values: ddata[k] = sum over events (t, b, i) of
    y[t, b, i] * dout[t, b, indices[k]] for the non-zeros k of row i."""
    T, B, N = y.shape
    M = dout.shape[2]
    offsets, pos, val = _unit_major(ev_idx, ev_cnt, y, lengths, N)
    d2 = dout.reshape(T * B, M)
    n_mac = 0
    for i in prange(N):
        for k in range(indptr[i], indptr[i + 1]):
            ddata[k] = 0.0
        for e in range(offsets[i], offsets[i + 1]):
            v = val[e]
            src = d2[pos[e]]
            for k in range(indptr[i], indptr[i + 1]):
                ddata[k] += v * src[indices[k]]
        n_mac += (offsets[i + 1] - offsets[i]) * (indptr[i + 1] - indptr[i])
    return n_mac


@numba.njit(parallel=True, **_JIT)
def grad_source_csr(dout, indptr, indices, data, mask, use_mask, lengths, dsrc):
    """dsrc[t, b, i] = sum over non-zeros k of row i of data[k] * dout[t, b, indices[k]],
    for units with mask[t, b, i] (all when ``use_mask`` is False)."""
    T, B, M = dout.shape
    N = indptr.shape[0] - 1
    n_mac = 0
    for w in prange(T * B):
        t = w // B
        b = w % B
        d = dsrc[t, b]
        d[:] = 0.0
        if t >= lengths[b]:
            continue
        g = dout[t, b]
        n = 0
        for i in range(N):
            if use_mask and not mask[t, b, i]:
                continue
            acc = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                acc += data[k] * g[indices[k]]
            d[i] = acc
            n += indptr[i + 1] - indptr[i]
        n_mac += n
    return n_mac


# --------------------------------------------------------------------------
# Leaky integrate-and-fire population
#
#   i_t = a_syn i_{t-1} + x_t                 synaptic current (x: input drive)
#   u_t = a_mem v_{t-1} + (1 - a_mem) i_t     membrane before the spike
#   s_t = 1 if u_t > v_th else 0              spike (strict, like the EGRU)
#   v_t = (1 - s_t) u_t + s_t v_reset         reset
#   ds/du ~ damp * max(0, 1 - support |u - v_th|)   (same triangle as the EGRU)
