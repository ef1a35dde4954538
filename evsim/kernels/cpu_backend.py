"""Adapter from the functional API's records (:mod:`evsim.kernels.contract`)
to the Numba CPU kernels.

Allocates every buffer once per call, picks the kernel and its threads
(:mod:`evsim.threads`), runs it, and turns the kernels' counters into
statistics. Two kernel families compute the same sums in the same order:

* :mod:`cpu_seq`: samples in tiles, each tile over the whole sequence (one
  parallel region per call): every batch size, and batch 1 on one thread;
* :mod:`cpu`: batch 1 with columns (forward) or units (backward) split over
  threads, one parallel region per step, for large H only
  (``config.COLUMN_SPLIT_MIN_H``, ``config.UNIT_SPLIT_MIN_H``).
"""

import os

import numpy as np
import scipy.sparse as sp

from evsim import _validate, config, threads
from evsim.kernels import cpu, cpu_dense, cpu_events, cpu_seq
from evsim.kernels import lif as klif
from evsim.kernels.contract import EGRUSaved
from evsim.kernels.cpu import output_trace, output_trace_backward  # noqa: F401 (backend API)

_SAVED = ("v", "z", "r", "g", "qg")


def forward_switch(B):
    """Fraction of active units above which a forward step uses the dense product."""
    level = config.DENSE_SWITCH_ACTIVITY
    return 2.0 if level is None else level


def backward_switch(B, H):
    """Backward-active fraction above which dq R^T is one BLAS product per tile
    and step (auto: H / 1024, fitted to measurements from H = 96 to 1024 at
    batch 1 to 32: a small R stays in cache, where BLAS beats row-by-row dot
    products of all but the sparsest backward; a large R is packed again by
    BLAS for every product, where the dot products of backward-active rows
    were as fast even with every unit active)."""
    level = config.BACKWARD_DENSE_SWITCH
    return H / 1024 if level is None else level


def dR_switch(B):
    """Activity above which dR is one GEMM instead of event by event."""
    level = config.DR_DENSE_SWITCH
    return 0.3 if level is None else level


def _step_blocks():
    """Unit blocks of the per-step kernels: the machine's cores. Fixed by the
    machine, not by the threads of a call, since the sums of their dense
    products depend on the blocks: under load the same blocks run on one
    thread and give the same bits."""
    return max(1, min(64, os.cpu_count() or 1))


def egru_backward_active(args, saved):
    """(mask (T, B, H) bool, counts (T, B) int64) of the backward-active units
    of a training forward pass, by a kernel."""
    v = saved.v
    T, B, H = v.shape
    mask = np.empty((T, B, H), np.bool_)
    counts = np.empty((T, B), np.int64)
    cpu.backward_active_mask(v, args.thr, v.dtype.type(args.support), args.dense_gru, mask,
                             counts)
    return mask, counts


def _events_feeding(ev_cnt, lengths):
    """Events that feed a simulated step (slot t feeds step t < length)."""
    T = ev_cnt.shape[0] - 1
    alive = np.arange(T)[:, None] < lengths[None, :]
    return int((ev_cnt[:T] * alive).sum())


def egru_forward(args):
    """Run the forward kernel. Returns (outputs: dict of host arrays ``y, h, c,
    h_last, y_last``; events ``(ev_idx, ev_cnt)``; :class:`EGRUSaved` or None;
    stats)."""
    a = args.a
    T, B, H = args.shape
    dt = a.dtype
    out = {k: np.zeros((T, B, H), dt) for k in ("y", "h", "c")}
    save = args.training
    saved = {k: np.zeros((T, B, H) if save else (1, 1, 1), dt) for k in _SAVED}
    out["h_last"] = np.empty((B, H), dt)
    out["y_last"] = np.empty((B, H), dt)
    ev_idx = np.empty((T + 1, B, H), np.int32)
    ev_cnt = np.zeros((T + 1, B), np.int32)
    q = np.zeros((B, 3 * H), dt)
    counts = np.zeros((B, 4), np.int64)
    switch = -1.0 if args.backend == "dense" else forward_switch(B)
    args_in = (a, args.Reff, args.br, args.thr, args.h0, args.y0, args.keep, args.keep_mode,
               args.lengths, args.dense_gru, switch, save,
               out["y"], out["h"], out["c"], *(saved[k] for k in _SAVED),
               out["h_last"], out["y_last"], ev_idx, ev_cnt, q, counts)
    work = T * B * H * 3 * H
    # batch 1, large H: columns split per step; else tiles of samples (a column
    # split per step measured slower at B = 16)
    if B == 1 and H >= config.COLUMN_SPLIT_MIN_H:
        with threads.numba_threads(threads.per_step_threads(work)):
            cpu.egru_forward(*args_in, H, config.STEP_PARALLEL_MIN_WORK, _step_blocks())
    else:
        with threads.numba_threads(threads.plan(B, work)):
            cpu_seq.egru_forward(*args_in, threads.tile_size(B))
    total = counts.sum(axis=0)
    if total[3]:
        raise ValueError("R contains NaN or infinite values (in rows of units that fired; "
                         f"{int(total[3])} recurrent drives were not finite)")
    record = EGRUSaved(y=out["y"], h=out["h"], c=out["c"], **saved) if save else None
    # a GRU has no events: its outputs are dense, whatever their values
    needed = int(total[1]) if args.dense_gru else _events_feeding(ev_cnt, args.lengths) * 3 * H
    stats = dict(events=int(total[0]), fwd_macs=int(total[1]), fwd_macs_event=needed,
                 fwd_macs_dense=int(total[2]))
    return out, (ev_idx, ev_cnt), record, stats


def egru_backward(args, saved, events, active, rows, activity, dy, dh, dy_last):
    """Run the (sparse or dense) backward kernels.

    ``events``: the forward's event lists; ``active``, ``rows``: backward-active
    unit-steps among those BPTT needs; ``activity``: the forward's. Returns
    (gradients: ``drive`` (dL/da of the input drive), ``R, br, thr, h0, y0``;
    stats).
    """
    R, thr = args.R, args.thr
    T, B, G = args.a.shape
    H = R.shape[0]
    dt = R.dtype
    da = np.zeros((T, B, G), dt)
    dq = np.zeros((T, B, G), dt)
    dthr_b = np.zeros((B, H), dt)
    counts = np.zeros((B, 2), np.int64)
    lengths = args.lengths
    ev_idx, ev_cnt = events
    event_driven = args.backend != "dense"
    sparse_dy = event_driven and active <= backward_switch(B, H) * rows
    event_dR = event_driven and activity <= dR_switch(B)
    args_in = (args.Reff, thr, args.keep, args.keep_mode, lengths, args.dense_gru,
               dt.type(args.damp), dt.type(args.support))
    args_saved = (saved.c, saved.v, saved.z, saved.r, saved.g, saved.qg, args.h0, saved.h, dy,
                  dh, dy_last, da, dq, dthr_b, counts)
    work = T * B * H * G
    # Units split per step: at batch 1 from UNIT_SPLIT_MIN_H units; with a batch
    # when most units are backward-active (one BLAS product over the whole batch
    # per block and step, as a dense BPTT makes it); else tiles of samples.
    per_step = H >= config.UNIT_SPLIT_MIN_H and (
        B == 1 or (event_driven and active > config.UNIT_SPLIT_MIN_ACTIVE * rows))
    if per_step:
        kernel = cpu.egru_backward if sparse_dy and B == 1 else cpu.egru_backward_dense
        with threads.numba_threads(threads.per_step_threads(work)):
            kernel(*args_in, *args_saved, _step_blocks())
    else:
        with threads.numba_threads(threads.plan(B, work)):
            cpu_seq.egru_backward(*args_in, sparse_dy, *args_saved, np.empty((B, H), dt),
                                  threads.tile_size(B))
    # dR = sum over steps of y_{t-1}^T dq_t: the recurrent projection's weight
    # gradient, one product or event by event, rows split over threads either way
    yprev = np.concatenate([args.y0[None], saved.y[:-1]])
    with threads.numba_threads(threads.plan_product(work)):
        if not event_dR:
            dR = cpu_dense.matmul_at(yprev.reshape(T * B, H), dq.reshape(T * B, G))
            dR_macs = int(lengths.sum()) * H * G
        else:  # event by event: only rows of units that fired (slot t feeds step t)
            dR = np.empty_like(R)
            dR_macs = cpu_events.grad_weight_dense(ev_idx[:T], ev_cnt[:T], yprev, dq, lengths,
                                                   dR)
    if not _validate.all_finite(da):  # a non-finite row of R read only by the backward
        raise ValueError("the gradient is not finite: R contains NaN or infinite values in "
                         "rows of backward-active units, or the gradient overflowed")
    if args.rmask is not None:
        dR *= args.rmask
    rows_done, rows_dense = counts.sum(axis=0)
    done = int(rows_done) * G + dR_macs
    needed = done if args.dense_gru else (active + _events_feeding(ev_cnt, lengths)) * G
    stats = dict(bwd_macs=done, bwd_macs_event=needed,
                 bwd_macs_dense=int(rows_dense) * G + int(lengths.sum()) * H * G)
    grads = {
        "drive": da,
        "R": dR,
        "br": dq.reshape(T * B, G).sum(axis=0),
        "thr": dthr_b.sum(axis=0),
        "h0": dh,
        "y0": dy_last,
    }
    return grads, stats


# --------------------------------------------------------------------------
# Projections (evsim.functional.projection): event propagation and its backward


def compact_events(y, lengths):
    """Event lists (ev_idx (T, B, N) int32, ev_cnt (T, B) int32) of y."""
    T, B, N = y.shape
    ev_idx = np.empty((T, B, N), np.int32)
    ev_cnt = np.empty((T, B), np.int32)
    cpu_events.compact_events(y, lengths, ev_idx, ev_cnt)
    return ev_idx, ev_cnt


def propagate(y, out, lengths, W, csr, shift, events, event_driven):
    """out[t + shift] += y[t] W (see :func:`evsim.functional.propagate`);
    returns the multiply-adds done."""
    T, B, N = y.shape
    M = out.shape[2]
    if csr is not None and csr.delays is not None:
        ev_idx, ev_cnt = events
        delays = csr.delays + shift if shift else csr.delays
        return cpu_events.propagate_csr_delayed(ev_idx, ev_cnt, y, csr.indptr, csr.indices, W,
                                                delays, lengths, out)
    n_src = min(T, out.shape[0] - shift)  # source steps that land inside out
    if n_src <= 0:
        return 0
    o = out[shift:shift + n_src]
    lens = np.minimum(lengths, n_src)
    if not event_driven:
        _dense_forward(y[:n_src], W, lens, o)
        return int(lens.sum()) * N * M
    ev_idx, ev_cnt = events[0][:n_src], events[1][:n_src]
    if csr is None:
        return cpu_events.propagate_dense(ev_idx, ev_cnt, y[:n_src], W, lens, o)
    return cpu_events.propagate_csr(ev_idx, ev_cnt, y[:n_src], csr.indptr, csr.indices, W,
                                    lens, o)


def propagate_backward(y, dout, lengths, W, csr, events, event_driven, need_src, mask,
                       n_active):
    """dW, dsrc of :func:`propagate` with shift 0 (the caller aligned dout);
    ``n_active``: the valid unit-steps inside ``mask`` (None without a mask).
    Returns (dW, dsrc or None, weight multiply-adds, source multiply-adds done)."""
    T, B, N = y.shape
    M = dout.shape[2]
    dense_w = int(lengths.sum()) * (N * M if csr is None else csr.nnz)
    if event_driven:
        ev_idx, ev_cnt = events
        dW = np.empty_like(W)
        if csr is None:
            w_macs = cpu_events.grad_weight_dense(ev_idx, ev_cnt, y, dout, lengths, dW)
        else:
            w_macs = cpu_events.grad_weight_csr(ev_idx, ev_cnt, y, dout, csr.indptr,
                                                csr.indices, lengths, dW)
    else:
        rows = _valid_rows(lengths, T, B)
        y2, d2 = y.reshape(T * B, N), dout.reshape(T * B, M)
        dW = y2.T @ d2 if rows is None else y2[rows].T @ d2[rows]
        w_macs = dense_w
    if not need_src:
        return dW, None, w_macs, 0
    use_mask = mask is not None
    mask_arr = mask if use_mask else np.zeros((1, 1, 1), np.bool_)
    dsrc = np.empty_like(y)
    dense_src = not use_mask or n_active >= config.GRAD_SOURCE_DENSE_SWITCH * mask.size
    if csr is None and dense_src:
        # one BLAS product (then the mask) beats a row-by-row loop unless few
        # units are backward-active (measured: benchmarks/TRAINING-RESULTS.md)
        rows = _valid_rows(lengths, T, B)
        d2 = dout.reshape(T * B, M)
        if rows is None:
            dsrc = (d2 @ W.T).reshape(T, B, N)
        else:
            dsrc[:] = 0
            dsrc.reshape(T * B, N)[rows] = d2[rows] @ W.T
        if use_mask:
            dsrc *= mask
        src_macs = dense_w
    elif csr is None:
        src_macs = cpu_events.grad_source_dense(dout, W, mask_arr, use_mask, lengths, dsrc)
    else:
        src_macs = cpu_events.grad_source_csr(dout, csr.indptr, csr.indices, W, mask_arr,
                                              use_mask, lengths, dsrc)
    return dW, dsrc, w_macs, src_macs


def propagate_step_backward(y, dout, W, dW, csr, need_src):
    """One step of BPTT through a projection: dW += y^T dout; returns dout W^T
    (or None). NumPy on the host (a step is small)."""
    if csr is None:
        dW += y.T @ dout
        return dout @ W.T if need_src else None
    N, M = csr.shape
    rows = np.repeat(np.arange(N), np.diff(csr.indptr))
    dW += np.einsum("bk,bk->k", y[:, rows], dout[:, csr.indices])
    if not need_src:
        return None
    mat = sp.csr_matrix((W, csr.indices, csr.indptr), shape=csr.shape, copy=False)
    return np.asarray(dout @ mat.T)


def _dense_forward(y, W, lengths, out):
    """out += y @ W over the valid steps (out may be a strided view)."""
    T, B, N = y.shape
    rows = _valid_rows(lengths, T, B)
    y2 = y.reshape(T * B, N)
    if out.flags.c_contiguous:
        o2 = out.reshape(T * B, W.shape[1])
        if rows is None:
            o2 += y2 @ W
        else:
            o2[rows] += y2[rows] @ W
        return
    prod = (y2 @ W).reshape(T, B, W.shape[1])
    if rows is not None:
        prod *= _valid(lengths, T, B)
    out += prod


def _valid(lengths, T, B):
    """(T, B, 1) bool: steps within each sample's length."""
    return (np.arange(T)[:, None] < np.asarray(lengths)[None, :B])[:, :, None]


def _valid_rows(lengths, T, B):
    """Flat (t * B + b) indices of valid steps, or None when all are valid."""
    if np.all(lengths == T):
        return None
    return np.flatnonzero(np.arange(T)[:, None] < lengths[None, :])


# --------------------------------------------------------------------------
# LIF populations (evsim.functional.lif): the sequence kernels of kernels.lif


def lif_forward(x, v0, I0, r0, lengths, cell):  # noqa: E741
    """(s, u, v, I, held, v_last, I_last, r_last, spikes) of one LIF sequence."""
    T, B, RN = x.shape
    N = v0.shape[1]
    dt = x.dtype
    s, u, v = (np.empty((T, B, N), dt) for _ in range(3))
    I_seq = np.empty((T, B, RN), dt)
    held = np.empty((T, B, N), np.uint8)
    v_last, I_last, r_last = np.empty((B, N), dt), np.empty((B, RN), dt), np.empty((B, N),
                                                                                  np.int64)
    n = klif.lif_forward(x, cell.kinds, cell.a.astype(dt), cell.c.astype(dt),
                         cell.e_rev.astype(dt), cell.conductance, cell.a_m, cell.dt_tau,
                         cell.v_rest, cell.v_th, cell.v_reset, cell.n_ref, v0, I0, r0, lengths,
                         s, u, v, I_seq, held, v_last, I_last, r_last)
    return s, u, v, I_seq, held, v_last, I_last, r_last, int(n)


def lif_backward(saved, dy, dv, dI):
    """(dL/dx (T, B, R N), (dL/dv0, dL/dI0)) through a LIF sequence."""
    cell = saved.cell
    T, B, N = saved.s.shape
    dt = saved.s.dtype
    RN = dI.shape[1]
    dx = np.empty((T, B, RN), dt)
    dv0 = np.empty((B, N), dt)
    dI0 = np.empty((B, RN), dt)
    klif.lif_backward(dy, saved.s, saved.u, saved.held, cell.kinds, cell.a.astype(dt),
                      cell.c.astype(dt), cell.a_m, cell.v_th, cell.v_reset, cell.damp,
                      cell.support, saved.lengths, dv, dI, dx, dv0, dI0)
    return dx, (dv0, dI0)
