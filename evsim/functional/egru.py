"""EGRU and GRU populations: forward and backward on whole sequences.

Validates the arguments, draws the random masks, calls a backend's adapter
with the records of :mod:`evsim.kernels.contract`, and returns the outputs
with counters of the work the kernels really did.

Backends:

* ``"cpu"``: event-driven Numba kernels. The recurrent drive of each step is
  built from the list of events of the previous step; BPTT computes the
  recurrent gradient only for backward-active units and ``dR`` only over
  events (above ``config.DR_DENSE_SWITCH`` activity, as one product). Threads
  are chosen by :mod:`evsim.threads`.
* ``"dense"``: the same Numba kernels with dense BLAS products every step (the
  baseline the event-driven path is measured against).
* ``"reference"``: the plain NumPy oracle (:mod:`evsim.kernels.reference`).
* ``"cuda"``: numba.cuda kernels (:mod:`evsim.kernels.cuda`), when a GPU is present.

Shapes are time-major: ``x`` (T, B, I), weights as in DESIGN.md: ``W`` (I, 3H),
``R`` (H, 3H), ``bx``, ``br`` (3H,), ``thr`` (H,), states (B, H). Gate blocks are
ordered z, r, g.
"""

from dataclasses import dataclass, field

import numpy as np

from evsim import config, threads
from evsim.functional import _checks as check
from evsim.functional._dispatch import BACKENDS, adapter
from evsim.kernels import cpu_dense
from evsim.kernels.contract import EGRUArgs, EGRUSaved

GRAD_KEYS = ("x", "W", "R", "bx", "br", "thr", "h0", "y0")


class Gradients(dict):
    """Gradients of a backward pass: a dict name -> array, with the counters of
    the work the backward did in ``stats`` (the forward's statistics are left
    as they were)."""

    def __init__(self, grads=(), stats=None):
        super().__init__(grads)
        self.stats = {} if stats is None else stats

    def __repr__(self):
        return f"{type(self).__name__}({list(self)}, stats={self.stats})"


@dataclass
class EGRUResult:
    """Outputs of :func:`egru_forward`.

    Attributes
    ----------
    y : (T, B, H) graded events (zero where a unit did not fire).
    h : (T, B, H) internal states after the reset.
    c : (T, B, H) event flags (1.0 where a unit fired).
    h_last, y_last : (B, H) state after each sample's last step.
    trace : (T, B, H) output trace, or None when not requested.
    stats : dict of counters (see :func:`egru_forward`).
    events : event lists ``(idx, cnt)``: ``idx[t + 1, b, :cnt[t + 1, b]]`` are
        the units of sample b that fired at step t (slot 0 holds y0).
        Event-driven backends only; None otherwise.
    args : the checked arguments of the pass (:class:`evsim.kernels.contract.EGRUArgs`).
    saved : what the backend saved for the backward pass
        (:class:`evsim.kernels.contract.EGRUSaved`), None with ``training=False``.

    The arrays (``y``, ``h``, ``c``, ``h_last``, ``y_last``, ``trace`` and the
    event lists) are read-only views: the backward pass reads what the forward
    computed, and a training pass keeps private copies of the arguments it
    needs, so that changing the caller's arrays after the forward pass cannot
    change the gradients. Copy an output (``result.y.copy()``) to change it.
    """

    y: np.ndarray
    h: np.ndarray
    c: np.ndarray
    h_last: np.ndarray
    y_last: np.ndarray
    trace: np.ndarray | None
    stats: dict
    events: tuple | None = None
    args: EGRUArgs | None = field(default=None, repr=False)
    saved: EGRUSaved | None = field(default=None, repr=False)
    # the writable arrays behind the read-only views above (for the backward
    # pass and evsim's populations); see _expose
    _own: dict | None = field(default=None, repr=False)

    def _array(self, name):
        """The array behind the read-only view ``name`` (evsim-internal)."""
        return getattr(self, name) if self._own is None else self._own[name]

    def backward_active(self):
        """(T, B, H) bool: units whose output can carry a gradient (fired, or
        inside the surrogate band), on every backend. None when the forward
        saved nothing (``training=False``)."""
        if self.saved is None:
            return None
        if self.args.dense_gru:
            return np.ones(self.y.shape, bool)
        return _active_set(self)[0]


def _active_set(result):
    """(mask, counts) of the backward-active units, computed by the backend
    once per forward pass and kept in the saved record."""
    saved = result.saved
    if saved.active is None:
        saved.active = _backend_module(result.args.backend).egru_backward_active(result.args,
                                                                                  saved)
    return saved.active


def _active_count(result):
    """(active, rows): backward-active unit-steps over the steps t - 1 whose
    recurrent gradient BPTT needs (t = 1 .. length - 1 of each sample), and
    all unit-steps there."""
    args = result.args
    T, _, H = args.shape
    alive = np.arange(1, T)[:, None] < args.lengths[None, :]  # steps t - 1 = 0 .. T - 2
    rows = int(alive.sum()) * H
    if args.dense_gru:
        return rows, rows
    counts = _active_set(result)[1]
    return int((counts[:-1] * alive).sum()), rows


def egru_forward(x, W, R, bx, br, thr, h0=None, y0=None, *, damp=None, support=None,
                 training=True, backend="cpu", zoneout=0.0, zoneout_mask=None,
                 dropconnect=0.0, dropconnect_mask=None, trace_alpha=None, lengths=None,
                 rng=None):
    """Run an EGRU population over a batch of sequences.

    Parameters
    ----------
    x : (T, B, I) float32 or float64 input sequence, time-major.
    W : (I, 3H) input weights. R : (H, 3H) recurrent weights.
    bx, br : (3H,) input and recurrent biases. thr : (H,) thresholds.
    h0, y0 : (B, H) initial state and initial output (default zeros).
    damp, support : surrogate gradient ``damp * max(0, 1 - support |v - thr|)``
        (defaults ``config.DAMP`` = 0.7, ``config.SUPPORT`` = 1.0).
    training : save what the backward pass needs and use training-mode zoneout
        and DropConnect. With ``training=False`` nothing is saved.
    backend : "cpu" (event-driven), "dense", "reference" or "cuda".
    zoneout : probability p of keeping the old state per unit and step.
        Training: ``v = m v + (1 - m) h`` with m ~ Bernoulli(1 - p) (or the
        given ``zoneout_mask`` (T, B, H) of keep factors m); evaluation:
        ``v = (1 - p) v + p h``.
    dropconnect : probability of dropping each recurrent weight during
        training, with inverted scaling by 1 / (1 - p); or pass
        ``dropconnect_mask`` (H, 3H) to multiply into R.
    trace_alpha : when given, also compute the output trace
        ``tr_t = alpha tr_{t-1} + (1 - alpha) y_t``.
    lengths : (B,) number of valid steps per sample (default all T). Steps
        past a sample's end cost nothing and output zeros.
    rng : numpy Generator or seed for the random masks.

    Returns
    -------
    EGRUResult
        With ``stats``: ``events``, ``activity`` (events per unit-step),
        ``fwd_macs`` (recurrent multiply-adds done; the CPU backend may take the
        dense product where that is faster), ``fwd_macs_event`` (what the
        event-driven path needs: 3H per event), ``fwd_macs_dense`` (the
        dense equivalent), ``input_macs``, ``unit_steps``.
    """
    with threads.owned():
        return _forward(x, W, R, bx, br, thr, h0, y0, damp, support, training, backend,
                        zoneout, zoneout_mask, dropconnect, dropconnect_mask, trace_alpha,
                        lengths, rng, dense_gru=False)


def gru_forward(x, W, R, bx, br, h0=None, *, training=True, backend="dense", zoneout=0.0,
                zoneout_mask=None, dropconnect=0.0, dropconnect_mask=None, trace_alpha=None,
                lengths=None, rng=None):
    """A plain GRU (every unit emits its state every step) on the same kernels.

    Arguments as :func:`egru_forward`; there are no thresholds and the output
    equals the state (``y = h``). The default backend is the dense one.
    """
    R = check.float_array("R", R, (None, None))
    thr = np.zeros(R.shape[0], dtype=R.dtype)
    with threads.owned():
        return _forward(x, W, R, bx, br, thr, h0, h0, 0.0, 1.0, training, backend, zoneout,
                        zoneout_mask, dropconnect, dropconnect_mask, trace_alpha, lengths, rng,
                        dense_gru=True)


def egru_forward_drive(drive, R, br, thr, h0=None, y0=None, *, damp=None, support=None,
                       training=True, backend="cpu", zoneout=0.0, zoneout_mask=None,
                       dropconnect=0.0, dropconnect_mask=None, trace_alpha=None,
                       lengths=None, rng=None, gru=False):
    """Like :func:`egru_forward`, but given the input drive ``drive`` (T, B, 3H)
    = sum of all input projections plus ``bx``, as a network computes it.
    :func:`egru_backward` then returns its gradient under ``"drive"``, and no
    ``x``, ``W`` or ``bx``. (``gru=True`` is :func:`gru_forward_drive`.)"""
    if gru:
        return gru_forward_drive(drive, R, br, h0, training=training, backend=backend,
                                 zoneout=zoneout, zoneout_mask=zoneout_mask,
                                 dropconnect=dropconnect, dropconnect_mask=dropconnect_mask,
                                 trace_alpha=trace_alpha, lengths=lengths, rng=rng)
    with threads.owned():
        return _forward(None, None, R, None, br, thr, h0, y0, damp, support, training,
                        backend, zoneout, zoneout_mask, dropconnect, dropconnect_mask,
                        trace_alpha, lengths, rng, dense_gru=False, a=drive)


def gru_forward_drive(drive, R, br, h0=None, *, training=True, backend="dense", zoneout=0.0,
                      zoneout_mask=None, dropconnect=0.0, dropconnect_mask=None,
                      trace_alpha=None, lengths=None, rng=None):
    """A plain GRU given its input drive ``drive`` (T, B, 3H) (see
    :func:`egru_forward_drive` and :func:`gru_forward`)."""
    R = check.float_array("R", R, (None, None), finite=False)  # checked in _forward
    thr = np.zeros(R.shape[0], dtype=R.dtype)
    with threads.owned():
        return _forward(None, None, R, None, br, thr, h0, h0, 0.0, 1.0, training, backend,
                        zoneout, zoneout_mask, dropconnect, dropconnect_mask, trace_alpha,
                        lengths, rng, dense_gru=True, a=drive)


def egru_backward(result, dy, dh_last=None, *, dy_last=None, dtrace=None):
    """Back-propagate through time for a result of :func:`egru_forward`.

    Parameters
    ----------
    result : EGRUResult from a ``training=True`` forward pass.
    dy : (T, B, H) gradient of the loss with respect to ``result.y`` (or None).
    dh_last, dy_last : (B, H) gradients with respect to the final state.
    dtrace : (T, B, H) gradient with respect to ``result.trace``.

    Returns
    -------
    Gradients
        A dict with keys ``x, W, R, bx, br, thr, h0, y0`` and ``drive`` (dL/d
        of the input drive x W + bx): true gradients (no clipping). Its
        ``stats`` hold the backward's counters: ``bwd_macs`` (done),
        ``bwd_macs_event`` (needed by sparse BPTT), ``bwd_macs_dense``,
        ``backward_active`` (fraction of unit-steps whose recurrent gradient
        can be non-zero: fired or inside the surrogate band) and
        ``backward_sparsity`` (1 - backward_active). ``result`` is not changed.
        For a GRU result, ``h0`` holds the whole gradient of the initial state.
    """
    if not isinstance(result, EGRUResult):
        raise TypeError(f"result must be the EGRUResult of a forward pass, got "
                        f"{type(result).__name__}")
    with threads.owned():
        return _backward(result, dy, dh_last, dy_last, dtrace)


def _backward(result, dy, dh_last, dy_last, dtrace):
    args = result.args
    if result.saved is None:
        raise ValueError("result comes from a forward pass with training=False; "
                         "run egru_forward(..., training=True) to back-propagate")
    T, B, H = result.y.shape
    dtype = result.y.dtype
    dy = np.zeros((T, B, H), dtype) if dy is None else check.float_array(
        "dy", dy, (T, B, H), dtype)
    dh = np.zeros((B, H), dtype) if dh_last is None else check.float_array(
        "dh_last", dh_last, (B, H), dtype)
    dyl = np.zeros((B, H), dtype) if dy_last is None else check.float_array(
        "dy_last", dy_last, (B, H), dtype)
    # gradients of the drive and of x; the backward's per-step buffers
    check.require_memory(T * B * H * 6 * dtype.itemsize,
                         f"an EGRU backward pass with T={T}, B={B}, H={H} ({dtype})")
    backend = _backend_module(args.backend)
    if dtrace is not None:
        if result.trace is None:
            raise ValueError("dtrace given but the forward pass computed no trace; "
                             "pass trace_alpha to egru_forward")
        check.float_array("dtrace", dtrace, (T, B, H), dtype)
        dy = dy.copy()
        backend.output_trace_backward(dtrace, args.trace_alpha, dy)
    active, rows = _active_count(result)
    grads, stats = backend.egru_backward(args, result.saved, result._array("events"), active,
                                         rows,
                                         result.stats["activity"], dy, dh.copy(), dyl.copy())
    stats.setdefault("bwd_macs_event", stats["bwd_macs"])
    stats.update(backward_active=active / max(rows, 1),
                 backward_sparsity=1.0 - active / max(rows, 1))
    grads = Gradients({k: grads[k] for k in ("drive", "R", "br", "thr", "h0", "y0")}, stats)
    if args.x is not None:
        grads.update(_input_drive_backward(args.x, args.W, grads["drive"]))
    if args.dense_gru:
        grads["h0"] = grads["h0"] + grads["y0"]
        grads["y0"] = np.zeros_like(grads["y0"])
    return grads


# --------------------------------------------------------------------------


def _forward(x, W, R, bx, br, thr, h0, y0, damp, support, training, backend, zoneout,
             zoneout_mask, dropconnect, dropconnect_mask, trace_alpha, lengths, rng,
             dense_gru, a=None):
    """Validate, draw masks, run the backend. Either (x, W, bx) or the input
    drive ``a`` = x W + bx (T, B, 3H) is given."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    first = "x" if a is None else "drive"
    lead = check.float_array(first, x if a is None else a, (None, None, None))
    T, B, In = lead.shape
    for name, n in (("steps T", T), ("batch B", B), ("inputs I", In)):
        if n < 1:
            raise ValueError(f"{first}: {name} must be >= 1, got shape {lead.shape}")
    dt = lead.dtype
    # The CPU kernels check the rows of R they read (a non-finite weight shows up
    # in the recurrent drive); reading all of R on every call would cost more
    # than a sparse forward pass. Other backends check R here.
    R = check.float_array("R", R, (None, None), dt, finite=backend not in ("cpu", "dense"))
    H = R.shape[0]
    if H < 1 or R.shape[1] != 3 * H:
        raise ValueError(f"R must have shape (H, 3H) with H >= 1, got {R.shape}")
    if a is None:
        W = check.float_array("W", W, (In, 3 * H), dt)
        bx = check.float_array("bx", bx, (3 * H,), dt)
    elif In != 3 * H:
        raise ValueError(f"drive must have shape (T, B, 3H) = (T, B, {3 * H}), got {a.shape}")
    br = check.float_array("br", br, (3 * H,), dt)
    thr = check.float_array("thr", thr, (H,), dt)
    # outputs y, h, c; the input drive; in training what the backward pass saves
    per = 3 + (3 if a is None else 0) + (6 if training else 0) + (trace_alpha is not None)
    check.require_memory(T * B * H * per * dt.itemsize,
                         f"an EGRU forward pass with T={T}, B={B}, H={H} ({dt})")
    h0 = np.zeros((B, H), dt) if h0 is None else check.float_array("h0", h0, (B, H), dt)
    y0 = np.zeros((B, H), dt) if y0 is None else check.float_array("y0", y0, (B, H), dt)
    damp = config.DAMP if damp is None else check.positive("damp", damp, allow_zero=True)
    support = config.SUPPORT if support is None else check.positive("support", support)
    zoneout = check.probability("zoneout", zoneout)
    dropconnect = check.probability("dropconnect", dropconnect)
    lengths = check.lengths_array(lengths, T, B)
    if trace_alpha is not None:
        trace_alpha = check.probability("trace_alpha", trace_alpha)
    rng = np.random.default_rng(rng)
    if training:  # the backward pass must not see later changes to the caller's arrays
        x, W, R, bx, br, thr, h0, y0, a = (None if v is None else v.copy()
                                           for v in (x, W, R, bx, br, thr, h0, y0, a))
        if zoneout_mask is not None:
            zoneout_mask = np.array(zoneout_mask, copy=True)
        if dropconnect_mask is not None:
            dropconnect_mask = np.array(dropconnect_mask, copy=True)

    keep, keep_mode = _zoneout_keep(zoneout, zoneout_mask, training, (T, B, H), dt, rng)
    rmask = _dropconnect_mask(dropconnect, dropconnect_mask, training, R.shape, dt, rng)
    a = _input_drive(x, W, bx) if a is None else a
    args = EGRUArgs(backend=backend, a=a, R=R, Reff=R if rmask is None else R * rmask,
                    rmask=rmask, br=br, thr=thr, h0=h0, y0=y0, keep=keep, keep_mode=keep_mode,
                    lengths=lengths, damp=damp, support=support, dense_gru=dense_gru,
                    training=bool(training), trace_alpha=trace_alpha, x=x, W=W)
    module = _backend_module(backend)
    out, events, saved, fstats = module.egru_forward(args)
    trace = None
    if trace_alpha is not None:
        trace = np.zeros_like(out["y"])
        module.output_trace(out["y"], trace_alpha, trace)
    unit_steps = int(lengths.sum()) * H
    fstats.setdefault("fwd_macs_event", fstats["fwd_macs"])
    stats = dict(fstats, unit_steps=unit_steps, activity=fstats["events"] / unit_steps,
                 input_macs=int(lengths.sum()) * In * 3 * H if x is not None else 0)
    own = dict(y=out["y"], h=out["h"], c=out["c"], h_last=out["h_last"], y_last=out["y_last"],
               trace=trace, events=events)
    view = {k: _read_only(v) for k, v in own.items()}
    return EGRUResult(**view, stats=stats, args=args, saved=saved, _own=own)


def _read_only(value):
    """A read-only view of a host array (a tuple of them for event lists)."""
    if isinstance(value, tuple):
        return tuple(_read_only(v) for v in value)
    if isinstance(value, np.ndarray):
        value = value.view()
        value.flags.writeable = False
    return value


def _input_drive(x, W, bx):
    """a = x W + bx for all steps at once: one dense product (T, B, 3H), split
    over evsim's threads when it is large enough to pay for them."""
    T, B, In = x.shape
    x2 = x.reshape(T * B, In)
    with _gemm_threads(T * B * In * W.shape[1]):
        a = cpu_dense.matmul(x2, W)
    a += bx
    return a.reshape(T, B, W.shape[1])


def _input_drive_backward(x, W, drive_grad):
    """Gradients of x, W and bx from the gradient of the input drive."""
    T, B, In = x.shape
    da = drive_grad.reshape(T * B, -1)
    with _gemm_threads(T * B * In * da.shape[1]):
        dx = cpu_dense.matmul(da, W.T)
        dW = cpu_dense.matmul_at(x.reshape(T * B, In), da)
    return {"x": dx.reshape(T, B, In), "W": dW, "bx": da.sum(axis=0)}


def _gemm_threads(work):
    return threads.numba_threads(threads.plan_product(work))


def _zoneout_keep(p, mask, training, shape, dtype, rng):
    """Keep factors for zoneout and the kernel's keep_mode (0 none, 1 array, 2 constant)."""
    if mask is not None:
        if not training:
            raise ValueError("zoneout_mask applies to training only; evaluation uses "
                             "the expectation (1 - zoneout)")
        return check.float_array("zoneout_mask", mask, shape, dtype), 1
    if p == 0:
        return np.ones((1, 1, 1), dtype), 0
    if training:
        return (rng.random(shape) >= p).astype(dtype), 1
    return np.full((1, 1, 1), 1 - p, dtype), 2


def _dropconnect_mask(p, mask, training, shape, dtype, rng):
    if not training:
        if mask is not None:
            raise ValueError("dropconnect_mask applies to training only")
        return None
    if mask is not None:
        return check.float_array("dropconnect_mask", mask, shape, dtype)
    if p == 0:
        return None
    return ((rng.random(shape) >= p) / (1 - p)).astype(dtype)


def _backend_module(name):
    """The adapter running EGRU computations on backend ``name``."""
    return adapter(name, "egru")


def gru_backward(result, dy, dh_last=None, *, dtrace=None):
    """BPTT for a result of :func:`gru_forward`; the gradient of the initial
    state is under ``h0``. See :func:`egru_backward`."""
    return egru_backward(result, dy, dh_last, dtrace=dtrace)
