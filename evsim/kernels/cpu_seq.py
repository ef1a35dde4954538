"""Numba CPU kernels over whole sequences, samples in parallel.

The batch is cut into tiles of a fixed number of samples (``tile``, chosen
from the batch size only, never from the thread count); one work item is one
tile, and it runs the whole time loop of its samples: one parallel region per
call, so a call waits for the other threads once, not once per step. Each
sample's arithmetic is the same whatever tile or thread runs it, so results do
not depend on the thread count.

Inside a tile, each sample adds the rows of R of its own events to its
recurrent drive (which stays in the core's L1 cache while the rows stream
in). Measured at B = 16, H = 1024 against two alternatives that read a row
fired by several samples only once (column blocks shared by the tile's
samples, and the tile's union of rows in the outer loop), this was the
fastest at every activity from 10 to 100 %, and faster than one BLAS product
per tile and step from 50 % up; ``dense_switch`` still selects that BLAS
product (BLAS single-threaded; see :mod:`evsim.threads`), for the "dense"
backend.

The backward computes ``dq_t R^T`` only for backward-active units (or, with
``sparse_dy`` False, as one BLAS product per tile and step), then the
pointwise backward of step t - 1; dR is left to the caller, as in
:mod:`evsim.kernels.cpu`.

Shapes, buffers and the per-unit maths are those of :mod:`evsim.kernels.cpu`
(whose argument documentation applies here); both modules share the exact
accumulation helpers (``_acc_rows``, ``_recurrent_grad``), so the event-driven
sums are computed the same way in both.
"""

import numba
import numpy as np
from numba import prange

from evsim.kernels.cpu import (
    _JIT,
    _acc_rows,
    _compact,
    _nonfinite,
    _pointwise_backward,
    _pointwise_forward,
    _recurrent_grad,
    _saved_rows,
)


@numba.njit(parallel=True, **_JIT)
def egru_forward(a, R, br, thr, h0, y0, keep, keep_mode, lengths, dense_gru, dense_switch,
                 save, y, h, c, v, z, r, g, qg, h_last, y_last, ev_idx, ev_cnt, q, counts,
                 tile):
    """Event-driven EGRU forward, one work item per tile of ``tile`` samples.

    Arguments as :func:`evsim.kernels.cpu.egru_forward` (``q`` (B, G) scratch,
    ``counts`` (B, 4) out), plus
    tile : int >= 1. Samples per work item (from the batch size only).
    """
    B = a.shape[1]
    n_tiles = (B + tile - 1) // tile
    for ti in prange(n_tiles):
        _forward_tile(ti * tile, min(B, ti * tile + tile), a, R, br, thr, h0, y0, keep,
                      keep_mode, lengths, dense_gru, dense_switch, save, y, h, c, v, z, r, g,
                      qg, h_last, y_last, ev_idx, ev_cnt, q, counts)


# The body of a work item is its own (serial) function: compiled inside the
# parallel loop, the same code ran up to 3x slower (its loops did not vectorise).
@numba.njit(**_JIT)
def _forward_tile(b0, b1, a, R, br, thr, h0, y0, keep, keep_mode, lengths, dense_gru,
                  dense_switch, save, y, h, c, v, z, r, g, qg, h_last, y_last, ev_idx, ev_cnt,
                  q, counts):
    """Samples [b0, b1) of :func:`egru_forward`, over the whole sequence."""
    T, B, G = a.shape
    H = G // 3
    per_elem = keep_mode == 1
    for b in range(b0, b1):
        ev_cnt[0, b] = _compact(y0[b], ev_idx[0, b])
        h_last[b] = h0[b]
        y_last[b] = y0[b]
        counts[b, 0] = 0
        counts[b, 1] = 0
        counts[b, 2] = lengths[b] * H * G
        counts[b, 3] = 0
    for t in range(T):
        n_prev = 0
        n_alive = 0
        for b in range(b0, b1):
            if t < lengths[b]:
                n_alive += 1
                n_prev += ev_cnt[t, b]
        if n_alive == 0:
            break
        yprev = y0 if t == 0 else y[t - 1]
        hprev = h0 if t == 0 else h[t - 1]
        qt = q[b0:b1]
        if n_prev > dense_switch * n_alive * H:
            np.dot(yprev[b0:b1], R, qt)
            for b in range(b0, b1):
                if t < lengths[b]:
                    counts[b, 1] += H * G
        else:
            for b in range(b0, b1):
                qt[b - b0] = 0
            for b in range(b0, b1):
                if t < lengths[b]:
                    _acc_rows(qt[b - b0], R, 0, G, ev_idx[t, b], ev_cnt[t, b], yprev[b])
            for b in range(b0, b1):
                if t < lengths[b]:
                    counts[b, 1] += ev_cnt[t, b] * G
        for b in range(b0, b1):
            if t >= lengths[b]:
                continue
            counts[b, 3] += _nonfinite(qt[b - b0])
            krow = keep[t, b] if per_elem else keep[0, 0]
            vr, zr, rr, gr, qgr = _saved_rows(v, z, r, g, qg, t, b, save)
            _pointwise_forward(a[t, b], qt[b - b0], br, thr, hprev[b], krow, per_elem,
                               dense_gru, save, y[t, b], h[t, b], c[t, b], vr, zr, rr,
                               gr, qgr, 0, H)
            ev_cnt[t + 1, b] = _compact(y[t, b], ev_idx[t + 1, b])
            counts[b, 0] += H if dense_gru else ev_cnt[t + 1, b]
            if t == lengths[b] - 1:
                h_last[b] = h[t, b]
                y_last[b] = y[t, b]


@numba.njit(parallel=True, **_JIT)
def egru_backward(R, thr, keep, keep_mode, lengths, dense_gru, damp, support, sparse_dy,
                  c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b, counts, scratch,
                  tile):
    """BPTT through :func:`egru_forward`, one work item per tile of samples.

    Arguments as :func:`evsim.kernels.cpu.egru_backward`, plus
    sparse_dy : bool. ``dq_t R^T`` only for backward-active units (True) or as
        one BLAS product per tile and step (False).
    scratch : (B, H) scratch for the BLAS product.
    tile : int >= 1. Samples per work item.
    """
    B = dq.shape[1]
    n_tiles = (B + tile - 1) // tile
    for ti in prange(n_tiles):
        _backward_tile(ti * tile, min(B, ti * tile + tile), R, thr, keep, keep_mode, lengths,
                       dense_gru, damp, support, sparse_dy, c, v, z, r, g, qg, h0, h, dy, dh,
                       dy_next, da, dq, dthr_b, counts, scratch)


@numba.njit(**_JIT)
def _backward_tile(b0, b1, R, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                   sparse_dy, c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b, counts,
                   scratch):
    """Samples [b0, b1) of :func:`egru_backward`, over the whole sequence."""
    T, B, G = dq.shape
    H = G // 3
    per_elem = keep_mode == 1
    for b in range(b0, b1):
        dthr_b[b] = 0
        counts[b, 0] = 0
        counts[b, 1] = max(lengths[b] - 1, 0) * H
        if T - 1 < lengths[b]:
            _pointwise_backward(T - 1, b, 0, H, thr, keep, per_elem, dense_gru, damp,
                                support, c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq,
                                dthr_b)
    for t in range(T - 1, -1, -1):
        if not sparse_dy:
            out = scratch[b0:b1]
            np.dot(dq[t, b0:b1], R.T, out)
        for b in range(b0, b1):
            if t >= lengths[b]:
                continue  # finished samples keep their final-state gradient
            if sparse_dy:
                # dL/dy0 is always needed in full: y0 is an input of the sequence.
                vprev = v[t - 1, b] if t > 0 else v[0, b]
                n = _recurrent_grad(dq[t, b], R, vprev, thr, support, dense_gru, t == 0,
                                    0, H, dy_next[b])
            else:
                dy_next[b] = scratch[b]
                n = H
            if t >= 1:
                counts[b, 0] += n
        for b in range(b0, b1):
            if t >= 1 and t - 1 < lengths[b]:
                _pointwise_backward(t - 1, b, 0, H, thr, keep, per_elem, dense_gru, damp,
                                    support, c, v, z, r, g, qg, h0, h, dy, dh, dy_next,
                                    da, dq, dthr_b)
