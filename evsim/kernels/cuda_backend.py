"""Backend ``"cuda"``: the adapter from the records of
:mod:`evsim.kernels.contract` to the numba.cuda kernels of
:mod:`evsim.kernels.cuda` (the same contract as
:mod:`evsim.kernels.cpu_backend`).

Host arrays in, host arrays out. An EGRU's saved state stays on the device
between forward and backward (:class:`EGRUSaved` of device arrays); its
event lists, the projections' and the LIF's outputs come back to the host,
where the network keeps them (monitors, outputs).

Every kind runs on the device, with one exception, on the host: one step of a
projection's backward in the step-wise schedule (a small product per step).
"""

import numpy as np

from evsim.kernels import cpu_backend
from evsim.kernels import cuda as kc
from evsim.kernels.contract import EGRUSaved

# --------------------------------------------------------------------------
# EGRU and GRU (saved state on the device)


def egru_forward(args):
    """Forward for :mod:`evsim.functional`: (host outputs ``y, h, c, h_last,
    y_last``; host event lists; :class:`EGRUSaved` of device arrays or None;
    stats)."""
    kc.require()
    dev = {n: kc._dev(getattr(args, n)) for n in ("a", "Reff", "br", "thr", "h0", "y0", "keep",
                                                "lengths")}
    d = kc.forward_device(
        dev["a"],
        dev["Reff"],
        dev["br"],
        dev["thr"],
        dev["h0"],
        dev["y0"],
        dev["keep"],
        args.keep_mode,
        dev["lengths"],
        args.dense_gru,
        args.training,
    )
    out = {n: d[n].copy_to_host() for n in ("y", "h", "c", "h_last", "y_last")}
    events = (d["ev_idx"].copy_to_host(), d["ev_cnt"].copy_to_host())
    saved = EGRUSaved(**{n: d[n] for n in kc._RECORD}) if args.training else None
    counts = d["counts"].copy_to_host()
    T, B, H = args.shape
    total = counts.sum(axis=0)
    stats = dict(
        events=int(total[0]),
        fwd_macs=int(total[1]),
        fwd_macs_dense=int(args.lengths.sum()) * H * 3 * H,
    )
    return out, events, saved, stats



def egru_backward_active(args, saved):
    """(mask (T, B, H) bool, counts (T, B) int64) of the backward-active units,
    computed on the device from the saved membrane values."""
    kc.require()
    v = saved.v
    T, B, H = v.shape
    mask = kc._zeros((T, B, H), np.uint8)
    kc._active(np.dtype(v.dtype), bool(args.dense_gru)).mask[kc._grid1(T * B * H)](
        v, kc._dev(args.thr), np.dtype(v.dtype).type(args.support), mask
    )
    host = mask.copy_to_host().astype(np.bool_)
    return host, host.sum(axis=2, dtype=np.int64)


def egru_backward(args, saved, events, active, rows, activity, dy, dh, dy_last):
    """Backward for :mod:`evsim.functional`: sparse BPTT on the device arrays of
    :func:`egru_forward`; returns (host gradients ``drive, R, br, thr, h0, y0``;
    stats)."""
    kc.require()
    rmask = None if args.rmask is None else kc._dev(args.rmask)
    res = kc.backward_device(
        kc._dev(args.Reff),
        kc._dev(args.thr),
        kc._dev(args.keep),
        args.keep_mode,
        kc._dev(args.lengths),
        args.dense_gru,
        args.damp,
        args.support,
        {n: getattr(saved, n) for n in kc._RECORD},
        kc._dev(args.h0),
        kc._dev(args.y0),
        kc._dev(dy),
        kc._dev(dh),
        kc._dev(dy_last),
        rmask,
    )
    T, B, H = args.shape
    G = 3 * H
    lengths = args.lengths
    done = int(res["active_rows"].copy_to_host().sum())
    dense_rows = int(np.maximum(lengths - 1, 0).sum()) * H
    stats = dict(
        bwd_macs=done * G + res["dR_events"] * G,
        bwd_macs_dense=dense_rows * G + int(lengths.sum()) * H * G,
    )
    return {n: res[n].copy_to_host() for n in ("drive", "R", "br", "thr", "h0", "y0")}, stats


def _trace_kernel(name, src, alpha, dst):
    """Run the trace kernel ``name`` (one thread per (b, h)) from src into dst
    (T, B, H); host or device arrays, dst updated."""
    kc.require()
    d_src, d_dst = kc._dev(src), kc._dev(dst)
    T, B, H = d_src.shape
    getattr(kc._common(np.dtype(d_src.dtype)), name)[kc._grid1(B * H)](d_src, alpha, d_dst)
    if d_dst is not dst:
        dst[...] = d_dst.copy_to_host()


def output_trace(y, alpha, trace):
    """trace (T, B, H) = output trace of y; host or device arrays (trace updated)."""
    _trace_kernel("trace_fwd", y, alpha, trace)


def output_trace_backward(dtrace, alpha, dy):
    """dy += gradient through the trace; host or device arrays (dy updated)."""
    _trace_kernel("trace_bwd", dtrace, alpha, dy)


# --------------------------------------------------------------------------
# Projections (evsim.functional.projection)


def _valid_events(events, lengths):
    """Event lists with no event past a sample's length (the device kernels
    read the counts only)."""
    ev_idx, ev_cnt = events
    T = ev_cnt.shape[0]
    alive = np.arange(T)[:, None] < lengths[None, :]
    return ev_idx, np.where(alive, ev_cnt, 0).astype(np.int32)


def compact_events(y, lengths):
    """Event lists (host int32 arrays) of y, compacted on the device."""
    ev_idx, ev_cnt = kc.compact_events(y)
    return _valid_events((ev_idx.copy_to_host(), ev_cnt.copy_to_host()), lengths)


def propagate(y, out, lengths, W, csr, shift, events, event_driven):
    """out[t + shift] += y[t] W, event by event on the device (a dense source
    too: its non-zero outputs are its events); returns the multiply-adds done."""
    T, B, N = y.shape
    M = out.shape[2]
    if events is None:
        events = compact_events(y, lengths)
    if csr is not None and csr.delays is not None:
        ev_idx, ev_cnt = _valid_events(events, lengths)
        delays = csr.delays + shift if shift else csr.delays
        d_out = kc._dev(np.ascontiguousarray(out))
        macs = kc.propagate_csr_delayed_events(ev_idx, ev_cnt, y, csr.indptr, csr.indices, W,
                                               delays, lengths, d_out)
        out[...] = d_out.copy_to_host()
        return macs
    n_src = min(T, out.shape[0] - shift)  # source steps that land inside out
    if n_src <= 0:
        return 0
    o = out[shift:shift + n_src]
    lens = np.minimum(lengths, n_src)
    ev_idx, ev_cnt = _valid_events((events[0][:n_src], events[1][:n_src]), lens)
    d_out = kc._dev(np.ascontiguousarray(o))
    ys = np.ascontiguousarray(y[:n_src])
    if csr is None:
        kc.propagate_events(ev_idx, ev_cnt, ys, W, d_out)
        macs = int(ev_cnt.sum()) * M
    else:
        macs = kc.propagate_csr_events(ev_idx, ev_cnt, ys, csr.indptr, csr.indices, W, d_out)
    o[...] = d_out.copy_to_host()
    return macs


def propagate_backward(y, dout, lengths, W, csr, events, event_driven, need_src, mask,
                       n_active):
    """(dW, dsrc or None, weight multiply-adds, source multiply-adds done) on
    the device: dW over the non-zero source values only, dsrc only where
    ``mask`` (see :func:`evsim.kernels.cpu_backend.propagate_backward`)."""
    T, B, N = y.shape
    M = dout.shape[2]
    if csr is None:
        dW, n_ev = kc.event_weight_grad(y, dout, lengths)
        dW, w_macs = dW.copy_to_host(), n_ev * M
    else:
        dW, w_macs = kc.event_weight_grad_csr(y, dout, csr.indptr, csr.indices, lengths)
        dW = dW.copy_to_host()
    if not need_src:
        return dW, None, w_macs, 0
    if csr is None:
        dsrc = kc.source_grad(dout, W, mask, lengths).copy_to_host()
        per_row = np.full(N, M, np.int64)
    else:
        dsrc = kc.source_grad_csr(dout, csr.indptr, csr.indices, W, mask, lengths).copy_to_host()
        per_row = np.diff(csr.indptr)
    need = np.arange(T)[:, None, None] < lengths[None, :, None]
    if mask is not None:
        need = need & mask
    src_macs = int(need.sum(axis=(0, 1)) @ per_row)
    return dW, dsrc, w_macs, src_macs


def propagate_step_backward(y, dout, W, dW, csr, need_src):
    """One step of a projection's BPTT (step-wise schedule): on the host."""
    return cpu_backend.propagate_step_backward(y, dout, W, dW, csr, need_src)


# --------------------------------------------------------------------------
# LIF populations (evsim.functional.lif)


def lif_forward(x, v0, I0, r0, lengths, cell):  # noqa: E741
    """(s, u, v, I, held, v_last, I_last, r_last, spikes) of one LIF sequence,
    computed on the device (host arrays back)."""
    dt = x.dtype
    out, n = kc.lif_forward_device(x, cell.kinds, cell.a.astype(dt), cell.c.astype(dt),
                                   cell.e_rev.astype(dt), cell.conductance, cell.a_m,
                                   cell.dt_tau, cell.v_rest, cell.v_th, cell.v_reset, cell.n_ref,
                                   v0, I0, r0, lengths)
    host = [out[k].copy_to_host() for k in ("s", "u", "v", "I", "held", "v_last", "I_last",
                                            "r_last")]
    return (*host, n)


def lif_backward(saved, dy, dv, dI):
    """(dL/dx (T, B, R N), (dL/dv0, dL/dI0)) through a LIF sequence, computed on
    the device (host arrays back)."""
    cell = saved.cell
    dt = np.dtype(dy.dtype)
    dx, dv0, dI0 = kc.lif_backward_device(
        dy, saved.s, saved.u, saved.held, cell.kinds, cell.a.astype(dt), cell.c.astype(dt),
        cell.a_m, cell.v_th, cell.v_reset, cell.damp, cell.support, saved.lengths, dv, dI)
    return dx.copy_to_host(), (dv0.copy_to_host(), dI0.copy_to_host())
