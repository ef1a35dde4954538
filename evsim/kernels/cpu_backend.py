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

from evsim import _validate, config, threads
from evsim.kernels import cpu, cpu_dense, cpu_events, cpu_seq
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
