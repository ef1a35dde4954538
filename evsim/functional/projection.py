"""Projections: a source's outputs through dense or sparse weights into a
target's input drive, event by event, with delays; and the backward pass.

Arrays (T steps, B samples, N source units, M target columns):

* ``y`` (T, B, N): the source's outputs; ``lengths`` (B,): valid steps per
  sample (later steps of a sample are skipped and cost nothing).
* weights: ``W`` (N, M) dense, or the values (nnz,) of a sparse matrix whose
  structure is a checked :class:`CSR` record (row i = source unit i).
* event lists (:func:`compact_events`): ``ev_idx[t, b, :ev_cnt[t, b]]`` are the
  units with a non-zero output at step t of sample b.

A delay ``shift`` (steps) puts the source's output of step t into row
``t + shift`` of the target's drive (rows past its end are dropped); a CSR
record may add a delay per synapse.

Every function checks its arguments (shapes, dtypes and byte order, index
ranges of event lists and lengths; a :class:`CSR` record is checked once, when
:func:`csr` makes it), runs the backend's kernels and returns the counters of
the work they did. Values are not scanned for NaN on every call (a step-wise
run calls these once per step): a NaN weight shows in the outputs.
"""

from dataclasses import dataclass

import numpy as np

from evsim import threads
from evsim.functional import _checks as check
from evsim.functional._dispatch import adapter, check_backend

__all__ = ["CSR", "csr", "compact_events", "propagate", "propagate_backward",
           "propagate_step_backward"]


@dataclass(frozen=True, eq=False)
class CSR:
    """The structure of a sparse weight matrix, checked by :func:`csr`.

    indptr : (N + 1,) int64, non-decreasing from 0 to nnz. indices : (nnz,)
    int64 target columns in [0, M). shape : (N, M). delays : (nnz,) int64
    per-synapse delays >= 0, or None.
    """

    indptr: np.ndarray
    indices: np.ndarray
    shape: tuple
    delays: np.ndarray | None = None

    @property
    def nnz(self):
        return int(self.indices.shape[0])


def csr(indptr, indices, shape, delays=None):
    """A checked :class:`CSR` record (ValueError/TypeError naming what is wrong)."""
    N, M = (check.size("shape[0]", shape[0], 0), check.size("shape[1]", shape[1], 0))
    indptr = check.int_array("indptr", np.asarray(indptr), (N + 1,), 0)
    nnz = int(indptr[-1])
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"indptr must rise from 0 (non-decreasing), got {indptr[0]} first "
                         f"and {int(np.diff(indptr).min(initial=0))} as the smallest step")
    indices = check.int_array("indices", np.asarray(indices), (nnz,), 0, M)
    if delays is not None:
        delays = check.int_array("delays", np.asarray(delays), (nnz,), 0)
    return CSR(indptr, indices, (N, M), delays)


def _weights(W, csr_, N, M, dtype):
    """Check the weights against the source (N) and target (M) widths."""
    if csr_ is None:
        return check.float_array("W", W, (N, M), dtype, finite=False)
    if not isinstance(csr_, CSR):
        raise TypeError(f"csr must be an evsim.functional.CSR record (see csr()), got "
                        f"{type(csr_).__name__}")
    if csr_.shape != (N, M):
        raise ValueError(f"csr has shape {csr_.shape}, the source and target imply {(N, M)}")
    return check.float_array("W", W, (csr_.nnz,), dtype, finite=False)


def _events(events, T, B, N):
    """Check event lists: ev_idx (T, B, N) int32, ev_cnt (T, B) int32, listed
    units in [0, N)."""
    if not isinstance(events, tuple) or len(events) != 2:
        raise TypeError(f"events must be a tuple (ev_idx, ev_cnt), got {type(events).__name__}")
    ev_idx, ev_cnt = events
    for name, arr, shape in (("ev_idx", ev_idx, (T, B, N)), ("ev_cnt", ev_cnt, (T, B))):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.int32:
            raise TypeError(f"events: {name} must be an int32 array")
        check.native(name, arr)
        check._shape(name, arr, shape)
    ev_cnt = check.int_array("ev_cnt", ev_cnt, (T, B), 0, N + 1, np.int32)
    listed = np.arange(N, dtype=np.int32) < ev_cnt[..., None]
    if listed.any():
        bad = listed & ((ev_idx < 0) | (ev_idx >= N))
        if bad.any():
            raise ValueError(f"events: ev_idx lists units outside [0, {N})")
    return np.ascontiguousarray(ev_idx), ev_cnt


def compact_events(y, lengths, *, backend="cpu"):
    """Event lists of the non-zero entries of ``y`` (T, B, N): host arrays
    ``(ev_idx (T, B, N) int32, ev_cnt (T, B) int32)``, no events past a
    sample's length."""
    check_backend(backend)
    y = check.float_array("y", y, (None, None, None), finite=False)
    T, B, N = y.shape
    lengths = check.step_lengths(lengths, T, B)
    with threads.owned():
        return adapter(backend, "projection").compact_events(y, lengths)


def propagate(y, out, lengths, W, *, csr=None, shift=0, events=None, event_driven=True,
              backend="cpu"):
    """``out[t + shift] += y[t] W`` over the valid steps (per-synapse delays of
    ``csr`` added to ``shift``), in place.

    Parameters
    ----------
    y : (T, B, N) source outputs. out : (T_out, B, M) target drive, updated in
        place (any strides: e.g. one receptor's columns of a wider drive).
    lengths : (B,) valid steps per sample (0 .. T).
    W : (N, M) dense weights, or (nnz,) values of the sparse matrix ``csr``.
    shift : delay in steps (>= 0). events : event lists of y
        (:func:`compact_events`), needed when ``event_driven``.
    event_driven : add the weight rows of the events only (sources that emit
        events, and every sparse projection); else one dense product (dense
        weights only).
    backend : see :mod:`evsim.functional`.

    Returns
    -------
    dict ``fwd_macs`` (multiply-adds done), ``fwd_macs_dense`` (a dense product
    over the valid steps).
    """
    check_backend(backend)
    y = check.float_array("y", y, (None, None, None), finite=False)
    T, B, N = y.shape
    out = check.out_array("out", out, (None, B, None), y.dtype)
    M = out.shape[2]
    W = _weights(W, csr, N, M, y.dtype)
    lengths = check.step_lengths(lengths, T, B)
    shift = check.size("shift", shift, 0)
    if event_driven:
        if events is None:
            raise ValueError("event_driven propagation needs the source's events "
                             "(compact_events(y, lengths))")
        events = _events(events, T, B, N)
    elif csr is not None:
        raise ValueError("sparse weights propagate event by event (event_driven=True)")
    n_valid = int(lengths.sum())
    dense = n_valid * (N * M if csr is None else csr.nnz)
    with threads.owned():
        macs = adapter(backend, "projection").propagate(y, out, lengths, W, csr, shift, events,
                                                        event_driven)
    return dict(fwd_macs=int(macs), fwd_macs_dense=dense)


def propagate_backward(y, dout, lengths, W, *, csr=None, shift=0, events=None,
                       event_driven=True, need_src=True, mask=None, backend="cpu"):
    """Backward of :func:`propagate`: the weight gradient and the source's.

    Parameters
    ----------
    y, lengths, W, csr, shift, events, event_driven, backend : as the forward
        (per-synapse delays are not supported).
    dout : (T, B, M) gradient of the target's drive rows that the forward
        wrote (row t + shift for the source's step t; rows past T are zero).
    need_src : compute ``dsrc = dout W^T`` (else None: an input source).
    mask : (T, B, N) bool or None: the source's backward-active units; the
        source gradient is computed (and counted) only there, zero elsewhere.

    Returns
    -------
    (dW, dsrc, stats): dW like W (event-driven: only rows of units that
    fired are non-zero), dsrc (T, B, N) or None, stats ``bwd_macs`` (done),
    ``bwd_macs_event`` (what event-driven BPTT needs), ``bwd_macs_dense``.
    """
    check_backend(backend)
    y = check.float_array("y", y, (None, None, None), finite=False)
    T, B, N = y.shape
    dout = check.out_array("dout", dout, (None, B, None), y.dtype)
    M = dout.shape[2]
    W = _weights(W, csr, N, M, y.dtype)
    if csr is not None and csr.delays is not None:
        raise NotImplementedError("back-propagation through per-synapse delays is not "
                                  "implemented; use one delay for the projection")
    lengths = check.step_lengths(lengths, T, B)
    shift = check.size("shift", shift, 0)
    if event_driven:
        if events is None:
            raise ValueError("event_driven backward needs the source's events")
        events = _events(events, T, B, N)
    if mask is not None:
        mask = check.bool_array("mask", mask, (T, B, N))
    # the source's step t drove the target's step t + shift
    if shift == 0 and dout.shape[0] == T:
        shifted = np.ascontiguousarray(dout)
    else:
        shifted = np.zeros((T, B, M), y.dtype)
        n = max(min(T, dout.shape[0] - shift), 0)
        shifted[:n] = dout[shift:shift + n]
    dense_w = int(lengths.sum()) * (N * M if csr is None else csr.nnz)
    # rows of dout W^T that sparse BPTT needs: the source's backward-active units
    n_active = None
    if need_src and mask is not None:
        valid = np.arange(T)[:, None, None] < lengths[None, :, None]
        n_active = int(np.count_nonzero(mask & valid))
    src_event = 0 if not need_src else dense_w if n_active is None else n_active * M
    with threads.owned():
        dW, dsrc, w_macs, src_macs = adapter(backend, "projection").propagate_backward(
            y, shifted, lengths, W, csr, events, event_driven, need_src, mask, n_active)
    stats = dict(bwd_macs=int(w_macs + src_macs), bwd_macs_event=int(w_macs + src_event),
                 bwd_macs_dense=dense_w * (2 if need_src else 1))
    return dW, dsrc, stats


def propagate_step_backward(y, dout, W, dW, *, csr=None, need_src=True, backend="cpu"):
    """One step of the backward of :func:`propagate` (the step-wise schedule).

    y (B, N): the source's output of the step; dout (B, M): the gradient of the
    target's drive row it fed. Adds ``y^T dout`` to ``dW`` (the weights'
    shape) and returns ``dout W^T`` (B, N), or None without ``need_src``.
    """
    check_backend(backend)
    y = check.float_array("y", y, (None, None), finite=False)
    B, N = y.shape
    dout = check.out_array("dout", dout, (B, None), y.dtype)
    W = _weights(W, csr, N, dout.shape[1], y.dtype)
    dW = check.out_array("dW", dW, W.shape, y.dtype)
    return adapter(backend, "projection").propagate_step_backward(y, dout, W, dW, csr,
                                                                  need_src)
