"""Backend ``"reference"``: the plain NumPy oracle (:mod:`evsim.kernels.reference`)
behind the records of :mod:`evsim.kernels.contract`.

Only the EGRU (and GRU) has a NumPy oracle; the functional layer runs every
other kind of computation of a ``"reference"`` call on the CPU kernels. This
module is imported only when the reference backend is asked for: the
``"cpu"`` and ``"cuda"`` paths never load the oracle.
"""

import numpy as np

from evsim.kernels import reference
from evsim.kernels.contract import EGRUSaved

_SAVED = ("y", "h", "c", "v", "z", "r", "g", "qg")


def _inputs(args):
    """(x, W, bx) for the reference; the drive is fed through an identity W."""
    G = args.a.shape[2]
    return args.a, np.eye(G, dtype=args.a.dtype), np.zeros(G, args.a.dtype)


def _dense_keep(args):
    """Zoneout keep factors as a full (T, B, H) array, or None."""
    if args.keep_mode == 0:
        return None
    if args.keep_mode == 1:
        return args.keep
    return np.full(args.shape, args.keep[0, 0, 0], args.keep.dtype)


def egru_forward(args):
    """The backend contract of :func:`evsim.kernels.cpu_backend.egru_forward`
    (no event lists: None)."""
    x, W, bx = _inputs(args)
    out = reference.forward(x, W, args.R, bx, args.br, args.thr, args.h0, args.y0,
                            keep=_dense_keep(args), rmask=args.rmask, lengths=args.lengths,
                            dense_gru=args.dense_gru)
    T, B, H = args.shape
    steps = int(args.lengths.sum())
    stats = dict(events=int(out["c"].sum()), fwd_macs=steps * H * 3 * H,
                 fwd_macs_dense=steps * H * 3 * H)
    saved = EGRUSaved(**{k: out[k] for k in _SAVED}) if args.training else None
    return out, None, saved, stats


def egru_backward_active(args, saved):
    """(mask, counts) of the backward-active units (see cpu_backend)."""
    mask = reference.backward_active(saved.v, saved.c, args.thr, args.support)
    return mask, mask.sum(axis=2, dtype=np.int64)


def egru_backward(args, saved, events, active, rows, activity, dy, dh, dy_last):
    """Dense BPTT (the contract of :func:`evsim.kernels.cpu_backend.egru_backward`)."""
    x, W, _ = _inputs(args)
    T, B, H = args.shape
    alive = (np.arange(T)[:, None] < args.lengths[None, :])[..., None]
    # what the oracle saves besides the record: the state before each step
    hprev = np.where(alive, np.concatenate([args.h0[None], saved.h[:-1]]), 0)
    yprev = np.where(alive, np.concatenate([args.y0[None], saved.y[:-1]]), 0)
    rec = {k: getattr(saved, k) for k in _SAVED}
    rec.update(hprev=hprev, yprev=yprev)
    grads = reference.backward(x, W, args.R, args.thr, rec, dy, dh_last=dh, dy_last=dy_last,
                               keep=_dense_keep(args), rmask=args.rmask, damp=args.damp,
                               support=args.support, lengths=args.lengths,
                               dense_gru=args.dense_gru)
    dense = (2 * int(args.lengths.sum()) - B) * H * 3 * H
    return grads, dict(bwd_macs=dense, bwd_macs_event=dense, bwd_macs_dense=dense)


def output_trace(y, alpha, out):
    out[...] = reference.output_trace(y, alpha)


def output_trace_backward(dtrace, alpha, dy):
    dy += reference.output_trace_backward(dtrace, alpha)
