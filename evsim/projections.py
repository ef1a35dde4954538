"""Projections: weighted connections from one population to another.

A projection from a source of N units to a target with input width M (3H for
an EGRU or GRU target: gate blocks z, r, g; the size otherwise) holds a weight
``W`` (N, M), dense or sparse (scipy.sparse CSR, row i = source unit i).
It adds ``y_src W`` to the target's input drive.

* Event-emitting sources (EGRU, LIF, spike and Poisson inputs) propagate
  event by event: for each unit that fired, its weight row scaled by the
  event value. Sparse weights are always used this way (for a dense source,
  every non-zero output is an "event").
* Dense sources with dense weights use one GEMM over the valid steps.

The computation is :mod:`evsim.functional.projection`, on the backend of the
projection's network (``Network(backend=...)``).

Backward: ``dW`` only over rows of units that fired (event by event); the
source gradient ``dsrc = dout W^T`` only for the source's backward-active
units (EGRU: fired or inside the surrogate band; LIF: inside the band): the
network passes a mask, and the multiply-adds counted are those done.

Spiking targets (:class:`~evsim.populations.LIF`) have named receptors: a
projection feeds one (``receptor=``, default the first), so W is (N, target
size) and fills that receptor's columns of the target's drive. Several
projections may join the same pair (one per receptor, or named with ``name=``),
and a population may project onto itself (with a delay of at least one step).

Connectivity rules (:mod:`evsim.connectivity`, ``rule=``) give sparse
projections any structure: fixed probability, fixed in-degree, one-to-one,
all-to-all or explicit lists. Weights are then per synapse: a number (the same
for all), an array (nnz,), or drawn by ``init``.

Delays (``delay=``, in steps): a source's output of step t reaches the target
at step t + delay; one number for the projection, or (sparse) one per synapse.
Default 0, and 1 for a projection onto the source population itself.

Initialisers (``init``): ``"uniform"`` (default, ``U(-k, k)`` with
``k = scale / sqrt(fan_in)``, fan_in = N for dense and ``p N`` for sparse:
the ``torch.nn.Linear`` rule), ``"normal"`` (std k), ``"zeros"``; or pass
``weight`` (an array (N, M), or a scipy.sparse matrix for kind="sparse").
"""

import time

import numpy as np
import scipy.sparse as sp

from evsim import _validate as check
from evsim import functional as F
from evsim.connectivity import Rule
from evsim.receptors import Conductance

__all__ = ["Projection"]

INITS = ("uniform", "normal", "zeros")


class Projection:
    """Connection ``source -> target``; created by :meth:`Network.connect`.

    Parameters: ``W`` - the (N, M) dense matrix, or for kind="sparse" the
    values of the CSR matrix (nnz,) (its structure: ``indptr``, ``indices``).
    ``delay``: the delay in steps (a number, or an int64 array (nnz,) of
    per-synapse delays), readable and writable.
    """

    def __init__(self, source, target, kind="dense", p=None, init="uniform", scale=1.0,
                 seed=None, rule=None, receptor=None, delay=None, name=None, network=None):
        where = f"connect({source.name!r}, {target.name!r})"
        if rule is not None:
            if not isinstance(rule, Rule):
                raise TypeError(f"{where}: rule must be an evsim.connectivity rule (e.g. "
                                f"FixedProbability(0.02)), got {type(rule).__name__}")
            if p is not None:
                raise ValueError(f"{where}: give either rule or p, not both")
            kind = "sparse"
        if kind not in ("dense", "sparse"):
            raise ValueError(f"{where}: kind must be 'dense' or 'sparse', got {kind!r}")
        if init not in INITS:
            raise ValueError(f"{where}: init must be one of {INITS}, got {init!r}")
        if kind == "sparse" and rule is None:
            p = 0.1 if p is None else float(p)
            if not 0 < p <= 1:
                raise ValueError(f"{where}: connection probability p must be in (0, 1], "
                                 f"got {p}")
        elif p is not None:
            raise ValueError(f"{where}: p is for kind='sparse' only")
        self.scale = float(scale)
        if not np.isfinite(self.scale):
            raise ValueError(f"{where}: scale must be finite, got {scale}")
        if hasattr(target, "receptor_columns"):
            self.columns = target.receptor_columns(receptor)
            self.receptor = receptor if receptor is not None else next(iter(target.receptors))
        elif receptor is not None:
            raise ValueError(f"{where}: receptor={receptor!r}, but {type(target).__name__} "
                             f"populations have no receptors")
        else:
            self.columns = slice(0, target.in_size)
            self.receptor = None
        self.source = source
        self.target = target
        self.name = name if name is not None else f"{source.name}->{target.name}"
        self.kind = kind
        self.p = p
        self.rule = rule
        self.init = init
        self.seed = seed
        self.shape = (source.size, self.columns.stop - self.columns.start)
        self.params = {}
        self.indptr = self.indices = None
        self._delay_arg = delay
        self._delay = 0
        self._network = network
        self._csr_rec = None  # the checked CSR record of the live structure

    @property
    def backend(self):
        """Backend of this projection's kernels: its network's (``Network(backend=)``)."""
        return "cpu" if self._network is None else self._network.backend

    def config(self):
        return dict(source=self.source.name, target=self.target.name, kind=self.kind,
                    p=self.p, init=self.init, scale=self.scale, seed=self.seed,
                    name=self.name, receptor=self.receptor,
                    rule=None if self.rule is None else self.rule.config(),
                    delay=self._delay if np.isscalar(self._delay) else "per-synapse")

    def __repr__(self):
        return f"Projection({self.name!r}, kind={self.kind!r}, shape={self.shape})"

    @property
    def event_driven(self):
        return self.source.emits_events or self.kind == "sparse"

    # -- delays -------------------------------------------------------------
    @property
    def delay(self):
        """Delay in steps: an int, or an int64 array (nnz,) per synapse (live)."""
        return self._delay

    @delay.setter
    def delay(self, value):
        self._delay = self._check_delay(value)

    def _check_delay(self, value):
        where = f"delay of {self.name!r}"
        least = 1 if self.source is self.target else 0
        why = " (a projection onto its own population needs >= 1)" if least else ""
        if value is None:
            return least
        arr = np.asarray(value)
        if arr.ndim == 0:
            if not np.issubdtype(arr.dtype, np.integer) or int(arr) < least:
                raise ValueError(f"{where} must be an integer number of steps >= {least}"
                                 f"{why}, got {value!r}")
            return int(arr)
        if self.kind != "sparse" or arr.shape != (self.nnz,):
            raise ValueError(f"{where}: per-synapse delays need a sparse projection and one "
                             f"delay per synapse ({self.nnz},), got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer) or (arr.size and arr.min() < least):
            raise ValueError(f"{where} must be integers >= {least} steps{why}, got "
                             f"{arr.dtype} with minimum {arr.min() if arr.size else None}")
        return np.ascontiguousarray(arr, np.int64)

    @property
    def max_delay(self):
        d = self._delay
        return int(d) if np.isscalar(d) else int(d.max(initial=0))

    @property
    def min_delay(self):
        d = self._delay
        return int(d) if np.isscalar(d) else (int(d.min()) if d.size else 0)

    def synapse_delays(self):
        """(nnz,) int64 delays of every synapse (sparse) or of every weight (dense)."""
        n = self.params["W"].size
        d = self._delay
        return np.full(n, d, np.int64) if np.isscalar(d) else d

    # -- weights ------------------------------------------------------------
    def _init_weights(self, rng, dtype, weight=None):
        N, M = self.shape
        if self.rule is not None:
            self._init_rule(rng, dtype, weight)
        elif weight is not None:
            self._set_weight(weight, dtype)
        elif self.kind == "dense":
            self.params = {"W": self._draw(rng, (N, M), N, dtype)}
        else:
            mask = rng.random((N, M)) < self.p
            rows, cols = np.nonzero(mask)
            vals = self._draw(rng, rows.shape[0], max(self.p * N, 1.0), dtype)
            mat = sp.csr_matrix((vals, (rows, cols)), shape=(N, M))
            self._set_csr(mat, dtype)
        delay = self._delay_arg
        if delay is None and self.rule is not None and self.rule.delay is not None:
            delay = self.rule.delay
        self._delay = self._check_delay(delay)

    def _init_rule(self, rng, dtype, weight):
        """Structure from the connectivity rule; weights per synapse."""
        N, M = self.shape
        pre, post = self.rule.synapses(N, M, rng, self.source is self.target)
        nnz = pre.shape[0]
        if sp.issparse(weight):  # a saved network: the structure comes with the weights
            self._set_csr(weight, dtype)
            return
        if weight is None and self.rule.weight is not None:
            weight = self.rule.weight
        if weight is None:
            w = self._draw(rng, nnz, max(nnz / max(M, 1), 1.0), dtype)
        else:
            w = np.asarray(weight, float)
            if w.ndim == 0:
                w = np.full(nnz, float(w))
            if w.shape != (nnz,):
                raise ValueError(f"weight of {self.name!r} must be a number or one value per "
                                 f"synapse ({nnz},) (the rule made {nnz} synapses), got shape "
                                 f"{w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"weight of {self.name!r} contains NaN or infinite values")
        self.indptr = np.zeros(N + 1, np.int64)
        np.cumsum(np.bincount(pre, minlength=N), out=self.indptr[1:])
        self.indices = np.ascontiguousarray(post, np.int64)
        self.params = {"W": np.ascontiguousarray(w, dtype)}

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
        if not np.all(np.isfinite(mat.data)):
            raise ValueError(f"weight of {self.name!r} contains NaN or infinite values")
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

    def check_structure(self):
        """Raise a ValueError unless the live CSR structure, weights and delays
        are consistent (kernels index with them: a bad index would write out of
        bounds)."""
        W = self.params["W"]
        N, M = self.shape
        if self.kind == "sparse":
            self._csr_rec = None  # arrays may have been edited in place: check them again
            nnz = self._structure().nnz  # the functional layer's one CSR check
            if W.shape != (nnz,):
                raise ValueError(f"projection {self.name!r}: its sparse structure has {nnz} "
                                 f"entries but W has shape {W.shape}")
        elif W.shape != (N, M):
            raise ValueError(f"projection {self.name!r}: W has shape {W.shape}, expected "
                             f"{(N, M)}")
        self._check_delay(self._delay)
        if W.dtype.kind == "f" and not check.all_finite(W):
            bad = np.flatnonzero(~np.isfinite(W.reshape(-1)))
            raise ValueError(f"projection {self.name!r}: W holds NaN or infinite values "
                             f"({bad.size} of {W.size}, first at flat index {bad[0]})")
        rec = getattr(self.target, "receptors", {}).get(self.receptor)
        if isinstance(rec, Conductance) and W.size and W.min() < 0:
            raise ValueError(f"projection {self.name!r} feeds the conductance receptor "
                             f"{self.receptor!r}: its weights (conductances) must be >= 0, "
                             f"got {W.min()}; an inhibitory conductance has a low e_rev")

    def _structure(self):
        """The checked :class:`evsim.functional.CSR` of the live structure
        (sparse), or None (dense); checked again whenever an array is replaced."""
        if self.kind != "sparse":
            return None
        d = None if np.isscalar(self._delay) else self._delay
        rec = self._csr_rec
        if (rec is None or rec.indptr is not self.indptr or rec.indices is not self.indices
                or rec.delays is not d):
            try:
                rec = F.csr(self.indptr, self.indices, self.shape, d)
            except (TypeError, ValueError) as err:
                raise ValueError(f"projection {self.name!r}: {err}") from None
            self._csr_rec = rec
        return rec

    def csr(self):
        """(indptr, indices, values) of the weights as CSR rows of source units
        (dense weights: every entry)."""
        if self.kind == "sparse":
            return self.indptr, self.indices, self.params["W"]
        N, M = self.shape
        return (np.arange(N + 1, dtype=np.int64) * M, np.tile(np.arange(M, dtype=np.int64), N),
                self.params["W"].reshape(-1))

    # -- forward / backward -------------------------------------------------
    def _shift(self, extra_delay=0):
        """The uniform delay in steps (per-synapse delays are in the CSR record)."""
        return (self._delay if np.isscalar(self._delay) else 0) + extra_delay

    def _forward(self, src_run, out, lengths, extra_delay=0):
        """Add this projection's contribution to ``out`` (T_out, B, M): the
        source's output of step t lands in ``out[t + delay + extra_delay]``
        (dropped past the end). ``out`` may be a column slice of the target's
        drive. Return stats."""
        t0 = time.perf_counter()
        backend = self.backend
        events = _events(src_run, lengths, backend) if self.event_driven else None
        stats = F.propagate(src_run.y, out, lengths, self.params["W"], csr=self._structure(),
                            shift=self._shift(extra_delay), events=events,
                            event_driven=self.event_driven, backend=backend)
        stats["wall_s"] = time.perf_counter() - t0
        return stats

    def _no_synapse_delays(self):
        if not np.isscalar(self._delay):
            raise NotImplementedError(f"{self.name}: back-propagation through per-synapse "
                                      f"delays is not implemented; use one delay for the "
                                      f"projection")

    def _step_grads(self, y, dout, dW, need_src):
        """One step of BPTT for the step-wise schedule: y (B, N) the source's
        output, dout (B, M) the gradient of this projection's columns of the
        target's drive. Adds to dW (the parameter's shape); returns dL/dy or
        None. Per-synapse delays are handled by the caller's step index only
        when uniform."""
        self._no_synapse_delays()
        return F.propagate_step_backward(y, dout, self.params["W"], dW, csr=self._structure(),
                                         need_src=need_src, backend=self.backend)

    def _backward(self, src_run, dout, lengths, need_src, mask):
        """Return (dW, dsrc or None, stats). ``mask`` (T, B, N) bool or None
        restricts the source gradient to backward-active units. ``dout``: the
        gradient of this projection's columns of the target's drive."""
        t0 = time.perf_counter()
        self._no_synapse_delays()
        backend = self.backend
        events = _events(src_run, lengths, backend) if self.event_driven else None
        dW, dsrc, stats = F.propagate_backward(
            src_run.y, dout, lengths, self.params["W"], csr=self._structure(),
            shift=self._shift(), events=events, event_driven=self.event_driven,
            need_src=need_src, mask=mask, backend=backend)
        stats["bwd_wall_s"] = time.perf_counter() - t0
        return dW, dsrc, stats


def _events(src_run, lengths, backend):
    """Event lists of a source run (computed once and cached)."""
    if src_run.events is None:
        src_run.events = F.compact_events(src_run.y, lengths, backend=backend)
    return src_run.events
