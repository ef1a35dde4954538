"""Projections: weighted connections from one population to another.

A projection from a source of N units to a target with input width M (3H for
an EGRU or GRU target: gate blocks z, r, g; the size otherwise) holds a weight
``W`` (N, M), dense or sparse (scipy.sparse CSR, row i = source unit i).
It adds ``y_src W`` to the target's input drive.

* Event-emitting sources (EGRU, LIF, spike and Poisson inputs) propagate
  event by event: for each unit that fired, its weight row scaled by the
  event value (compiled kernels in :mod:`evsim.kernels.cpu_events`). Sparse
  weights are always used this way (for a dense source, every non-zero output
  is an "event").
* Dense sources with dense weights use one GEMM over the valid steps.

Backward: ``dW`` only over rows of units that fired (event by event); the
source gradient ``dsrc = dout W^T`` only for the source's backward-active
units (EGRU: fired or inside the surrogate band; LIF: inside the band): the
network passes a mask, and the multiply-adds counted are those done.

Initialisers (``init``): ``"uniform"`` (default, ``U(-k, k)`` with
``k = scale / sqrt(fan_in)``, fan_in = N for dense and ``p N`` for sparse:
the ``torch.nn.Linear`` rule), ``"normal"`` (std k), ``"zeros"``; or pass
``weight`` (an array (N, M), or a scipy.sparse matrix for kind="sparse").
"""

import time

import numpy as np
import scipy.sparse as sp

from evsim import config
from evsim.kernels import cpu_events as kev

__all__ = ["Projection"]

INITS = ("uniform", "normal", "zeros")


class Projection:
    """Connection ``source -> target``; created by :meth:`Network.connect`.

    Parameters: ``W`` - the (N, M) dense matrix, or for kind="sparse" the
    values of the CSR matrix (nnz,) (its structure: ``indptr``, ``indices``).
    """

    def __init__(self, source, target, kind="dense", p=None, init="uniform", scale=1.0,
                 seed=None):
        if kind not in ("dense", "sparse"):
            raise ValueError(f"connect {source.name!r} -> {target.name!r}: kind must be "
                             f"'dense' or 'sparse', got {kind!r}")
        if init not in INITS:
            raise ValueError(f"connect {source.name!r} -> {target.name!r}: init must be one "
                             f"of {INITS}, got {init!r}")
        if kind == "sparse":
            p = 0.1 if p is None else float(p)
            if not 0 < p <= 1:
                raise ValueError(f"connect {source.name!r} -> {target.name!r}: connection "
                                 f"probability p must be in (0, 1], got {p}")
        elif p is not None:
            raise ValueError(f"connect {source.name!r} -> {target.name!r}: p is for "
                             f"kind='sparse' only")
        self.source = source
        self.target = target
        self.name = f"{source.name}->{target.name}"
        self.kind = kind
        self.p = p
        self.init = init
        self.scale = float(scale)
        self.seed = seed
        self.shape = (source.size, target.in_size)
        self.params = {}
        self.indptr = self.indices = None

    def config(self):
        return dict(source=self.source.name, target=self.target.name, kind=self.kind,
                    p=self.p, init=self.init, scale=self.scale, seed=self.seed)

    def __repr__(self):
        return f"Projection({self.name!r}, kind={self.kind!r}, shape={self.shape})"

    @property
    def event_driven(self):
        return self.source.emits_events or self.kind == "sparse"

    # -- weights ------------------------------------------------------------
    def _init_weights(self, rng, dtype, weight=None):
        N, M = self.shape
        if weight is not None:
            self._set_weight(weight, dtype)
            return
        if self.kind == "dense":
            self.params = {"W": self._draw(rng, (N, M), N, dtype)}
            return
        mask = rng.random((N, M)) < self.p
        rows, cols = np.nonzero(mask)
        vals = self._draw(rng, rows.shape[0], max(self.p * N, 1.0), dtype)
        mat = sp.csr_matrix((vals, (rows, cols)), shape=(N, M))
        self._set_csr(mat, dtype)

    def _draw(self, rng, shape, fan_in, dtype):
        k = self.scale / np.sqrt(fan_in)
        if self.init == "uniform":
            w = rng.uniform(-k, k, shape)
        elif self.init == "normal":
            w = rng.normal(0, k, shape)
        else:
            w = np.zeros(shape)
        return np.ascontiguousarray(w, dtype)

    def _set_weight(self, weight, dtype):
        N, M = self.shape
        if weight.shape != (N, M):
            raise ValueError(f"weight of {self.name!r} must have shape (source size, target "
                             f"input width) = ({N}, {M}), got {weight.shape}")
        if self.kind == "sparse":
            self._set_csr(sp.csr_matrix(weight), dtype)
        else:
            w = weight.toarray() if sp.issparse(weight) else np.asarray(weight)
            if not np.all(np.isfinite(w)):
                raise ValueError(f"weight of {self.name!r} contains NaN or infinite values")
            self.params = {"W": np.ascontiguousarray(w, dtype)}

    def _set_csr(self, mat, dtype):
        mat = sp.csr_matrix(mat)
        mat.sum_duplicates()
        mat.sort_indices()
        self.indptr = np.ascontiguousarray(mat.indptr, np.int64)
        self.indices = np.ascontiguousarray(mat.indices, np.int64)
        self.params = {"W": np.ascontiguousarray(mat.data, dtype)}

    @property
    def weight(self):
        """The weight matrix: an ndarray (dense) or a scipy CSR matrix (sparse)
        sharing the live values."""
        if self.kind == "dense":
            return self.params["W"]
        return sp.csr_matrix((self.params["W"], self.indices, self.indptr), shape=self.shape,
                             copy=False)

    @property
    def nnz(self):
        return self.params["W"].size

    # -- forward / backward -------------------------------------------------
    def _forward(self, src_run, out, lengths):
        """Add this projection's contribution to ``out`` (T, B, M); return stats."""
        t0 = time.perf_counter()
        y = src_run.y
        T, B, N = y.shape
        M = self.shape[1]
        n_valid = int(lengths.sum())
        dense_macs = n_valid * (N * M if self.kind == "dense" else self.nnz)
        if self.event_driven:
            ev_idx, ev_cnt = _events(src_run, lengths)
            if self.kind == "dense":
                macs = kev.propagate_dense(ev_idx, ev_cnt, y, self.params["W"], lengths, out)
            else:
                macs = kev.propagate_csr(ev_idx, ev_cnt, y, self.indptr, self.indices,
                                         self.params["W"], lengths, out)
        else:
            rows = _valid_rows(lengths, T, B)
            y2, o2 = y.reshape(T * B, N), out.reshape(T * B, M)
            if rows is None:
                o2 += y2 @ self.params["W"]
            else:
                o2[rows] += y2[rows] @ self.params["W"]
            macs = dense_macs
        return dict(fwd_macs=int(macs), fwd_macs_dense=dense_macs,
                    wall_s=time.perf_counter() - t0)

    def _backward(self, src_run, dout, lengths, need_src, mask):
        """Return (dW, dsrc or None, stats). ``mask`` (T, B, N) bool or None
        restricts the source gradient to backward-active units."""
        t0 = time.perf_counter()
        y = src_run.y
        T, B, N = y.shape
        M = self.shape[1]
        n_valid = int(lengths.sum())
        dense_w = n_valid * (N * M if self.kind == "dense" else self.nnz)
        W = self.params["W"]
        use_mask = mask is not None
        mask_arr = mask if use_mask else np.zeros((1, 1, 1), np.bool_)
        dsrc = None
        src_macs = 0
        if self.event_driven:
            ev_idx, ev_cnt = _events(src_run, lengths)
            dW = np.empty_like(W)
            if self.kind == "dense":
                w_macs = kev.grad_weight_dense(ev_idx, ev_cnt, y, dout, lengths, dW)
            else:
                w_macs = kev.grad_weight_csr(ev_idx, ev_cnt, y, dout, self.indptr,
                                             self.indices, lengths, dW)
        else:
            rows = _valid_rows(lengths, T, B)
            y2, d2 = y.reshape(T * B, N), dout.reshape(T * B, M)
            dW = y2.T @ d2 if rows is None else y2[rows].T @ d2[rows]
            w_macs = dense_w
        src_macs_event = 0
        if need_src:
            dsrc = np.empty_like(y)
            # rows of dout W^T that sparse BPTT needs: the source's backward-active units
            n_active = int(np.count_nonzero(mask & _valid(lengths, T, B))) if use_mask else None
            src_macs_event = dense_w if n_active is None else n_active * M
            dense_src = not use_mask or n_active >= config.GRAD_SOURCE_DENSE_SWITCH * mask.size
            if self.kind == "dense" and dense_src:
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
            elif self.kind == "dense":
                src_macs = kev.grad_source_dense(dout, W, mask_arr, use_mask, lengths, dsrc)
            else:
                src_macs = kev.grad_source_csr(dout, self.indptr, self.indices, W, mask_arr,
                                               use_mask, lengths, dsrc)
        stats = dict(bwd_macs=int(w_macs + src_macs),
                     bwd_macs_event=int(w_macs + src_macs_event),
                     bwd_macs_dense=dense_w * (2 if need_src else 1),
                     bwd_wall_s=time.perf_counter() - t0)
        return dW, dsrc, stats


def _valid(lengths, T, B):
    """(T, B, 1) bool: steps within each sample's length."""
    return (np.arange(T)[:, None] < np.asarray(lengths)[None, :B])[:, :, None]


def _valid_rows(lengths, T, B):
    """Flat (t * B + b) indices of valid steps, or None when all are valid."""
    if np.all(lengths == T):
        return None
    return np.flatnonzero(np.arange(T)[:, None] < lengths[None, :])


def _events(src_run, lengths):
    """Event lists of a source run (computed once and cached)."""
    if src_run.events is None:
        y = src_run.y
        T, B, N = y.shape
        ev_idx = np.empty((T, B, N), np.int32)
        ev_cnt = np.empty((T, B), np.int32)
        kev.compact_events(y, lengths, ev_idx, ev_cnt)
        src_run.events = (ev_idx, ev_cnt)
    return src_run.events
