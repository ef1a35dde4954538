"""Populations: groups of units that a :class:`evsim.network.Network` runs.

A population is a thin object: a name, a size, its parameters (a dict of
arrays, created when it is added to a network) and the constructor arguments
(to save and rebuild it). The computation is in the functional layer
(:mod:`evsim.functional`), on the network's backend; the network feeds each
population its input drive, the sum of its incoming projections, of shape
(T, B, ``in_size``). What a population provides and what the network
guarantees it - the contract to follow to add a model of your own - is
:mod:`evsim.protocol`.

Kinds of population:

* :class:`EGRU` - event-based GRU (DESIGN.md section 1); emits graded events.
* :class:`GRU` - dense GRU baseline: emits its whole state every step (EGRU
  and GRU share :class:`GatedRecurrent`).
* :class:`LIF` - leaky integrate-and-fire with reset; emits spikes (1.0).
* inputs, fed by ``net.run({name: value})``: :class:`DenseInput` (analog
  values), :class:`SpikeInput` (event lists), :class:`PoissonInput` (rates),
  :class:`Embedding` (token ids).
* :class:`Readout` - linear readout with optional leaky integration.

Populations whose outputs are events (``emits_events``) propagate them
through projections event by event.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from evsim import _validate as check
from evsim import config
from evsim import functional as F
from evsim.functional import LIFSaved
from evsim.protocol import register_population
from evsim.receptors import Conductance, Current, receptor_from_config

__all__ = ["Population", "GatedRecurrent", "EGRU", "GRU", "LIF", "Readout", "DenseInput",
           "SpikeInput", "PoissonInput", "Embedding"]


@dataclass
class PopRun:
    """What one population computed in one run: the return value of
    ``_forward`` (see :mod:`evsim.protocol`).

    y : (T, B, N) outputs. events : (ev_idx, ev_cnt) with slot t = step t, or
    None (computed on demand). state : final state dict. saved : what the
    backward pass needs. stats : counters. variables : callable returning the
    state variables (T, B, N) for monitors.
    """

    y: np.ndarray
    events: tuple | None = None
    state: dict = field(default_factory=dict)
    saved: object = None
    stats: dict = field(default_factory=dict)
    variables: object = None


class Population:
    """Base class of every population. Subclasses set ``variables``,
    ``emits_events``, ``is_input`` and implement the methods of the
    population protocol (:mod:`evsim.protocol`); the defaults here are those
    the protocol calls optional."""

    variables = ("y",)
    emits_events = False
    is_input = False
    threshold_names = ()

    def __init__(self, name, size):
        if not isinstance(name, str) or not name or any(c in name for c in "/.>"):
            raise ValueError(f"population name must be a non-empty string without "
                             f"'/', '.' or '>', got {name!r}")
        self.name = name
        self.size = check.size(f"{name}: size", size)
        self.params = {}
        self._kwargs = {"name": name, "size": self.size}

    # -- metadata ---------------------------------------------------------
    @property
    def in_size(self):
        """Width of the input drive that projections into this population
        produce (0 for inputs, which take no projection)."""
        return self.size

    def config(self):
        """Constructor arguments (JSON-able) to rebuild this population."""
        return dict(self._kwargs)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, size={self.size})"

    # -- the population protocol (evsim.protocol) -------------------------
    def _init_params(self, rng, dtype):
        """Create ``self.params`` from the init stream ``rng``."""

    def _forward(self, drive, state, training, backend, lengths, rng):
        """The whole sequence: a :class:`PopRun` (see :mod:`evsim.protocol`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _forward "
                                  f"(see evsim.protocol)")

    def _step(self, drive_t, state, alive, training, backend, rng):
        """One step of the step-wise schedule: (y_t, state, variables, stats)."""
        raise NotImplementedError(
            f"{type(self).__name__} populations run in networks without a cycle only (DAG "
            f"schedule): they implement no _step (see evsim.protocol)")

    def _initial_state(self, B, dtype, rng=None):
        """Initial state for a batch of B; ``rng``: the run-time stream, for
        random initial values."""
        return {}

    def _backward_mask(self, run):
        """(T, B, N) bool: units whose output gradient can matter, or None (all)."""
        return None

    def _backward(self, run, dy, extra):
        """Return (d drive, {param: grad}, backward stats)."""
        raise NotImplementedError(f"{type(self).__name__} has no backward pass")

    def _saved_from_steps(self, y, extras, lengths):
        """What :meth:`_step_backward` needs, from a step-wise run's outputs
        and the private ``_``-variables its steps returned (T, B, ...)."""
        return lengths

    def _step_backward(self, run, t, dy_t, carry):
        """One step of BPTT for the step-wise schedule (networks with cycles):
        return (dL/d drive_t, {param: grad of this step}, carry to step t-1)."""
        raise NotImplementedError(
            f"{type(self).__name__} populations cannot be trained inside a network with a "
            f"cycle (step-wise schedule): they implement no _step_backward (see "
            f"evsim.protocol); LIF and Readout populations can")

    def _timed(self, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        return out, time.perf_counter() - t0


def _uniform(rng, shape, k, dtype):
    return np.ascontiguousarray(rng.uniform(-k, k, shape), dtype)


# --------------------------------------------------------------------------
# EGRU and GRU


class GatedRecurrent(Population):
    """What the EGRU and the GRU share: a gated recurrent cell (gate blocks z, r,
    g) that owns its recurrent weights, run by the functional layer's EGRU/GRU
    kernels. Parameters ``R`` (H, 3H), ``br``, ``bx`` (3H,), drawn like
    ``torch.nn.GRU``'s (uniform in ``±1/sqrt(H)``); state ``h``, ``y``
    (B, H); input drive of width 3H. Subclasses say how the cell runs
    (:meth:`_run`), what it emits and which parameters it adds.
    """

    variables = ("y", "h")

    def __init__(self, name, size, zoneout=0.0, dropconnect=0.0):
        super().__init__(name, size)
        self.zoneout = check.probability(f"{name}: zoneout", zoneout)
        self.dropconnect = check.probability(f"{name}: dropconnect", dropconnect)

    @property
    def in_size(self):
        return 3 * self.size

    def _init_params(self, rng, dtype):
        H = self.size
        k = 1.0 / np.sqrt(H)
        self.params = {"R": _uniform(rng, (H, 3 * H), k, dtype),
                       "br": _uniform(rng, 3 * H, k, dtype),
                       "bx": _uniform(rng, 3 * H, k, dtype)}

    def _initial_state(self, B, dtype, rng=None):
        return {"h": np.zeros((B, self.size), dtype), "y": np.zeros((B, self.size), dtype)}

    # -- what differs between the cells -------------------------------------
    def _run(self, a, state, training, backend, lengths, rng):
        """The cell over a sequence: an :class:`evsim.functional.EGRUResult`
        for the input drive ``a`` (T, B, 3H) (the projections' sum plus ``bx``)."""
        raise NotImplementedError

    def _membrane(self, h, c):
        """The membrane before the reset, v, from the state h after it."""
        return h

    def _events(self, res):
        """Event lists (slot t = step t) for the projections, or None."""
        return None

    def _step_events(self, y, alive):
        """Events emitted in one step (y (B, H), alive (B,) bool)."""
        return int(alive.sum()) * self.size

    def _param_grads(self, g):
        """Gradients of the parameters besides R, br and bx."""
        return {}

    # -- the population contract (see evsim.protocol) ------------------------
    def _forward(self, drive, state, training, backend, lengths, rng):
        res = self._run(drive + self.params["bx"], state, training, backend, lengths, rng)
        stats = {k: res.stats[k] for k in ("events", "activity", "fwd_macs", "fwd_macs_event",
                                           "fwd_macs_dense")}

        def variables():
            y, h, c = res._array("y"), res._array("h"), res._array("c")
            out = {"y": y, "h": h, "v": self._membrane(h, c), "c": c}
            if res.trace is not None:
                out["trace"] = res._array("trace")
            return out

        return PopRun(y=res._array("y"), events=self._events(res),
                      state={"h": res._array("h_last"), "y": res._array("y_last")},
                      saved=res, stats=stats, variables=variables)

    def _step(self, drive_t, state, alive, training, backend, rng):
        """One step for the step-wise schedule: drive_t (B, 3H)."""
        res = self._run(drive_t[None] + self.params["bx"], state, training, backend, None, rng)
        keep = alive[:, None]
        y = np.where(keep, res.y[0], 0).astype(drive_t.dtype)
        new = {"h": np.where(keep, res.h[0], state["h"]),
               "y": np.where(keep, res.y[0], state["y"])}
        v = self._membrane(res.h[0], res.c[0])
        var = {"y": y, "h": new["h"] * keep, "v": v * keep, "c": res.c[0] * keep}
        # counters of what the kernel did (it steps finished samples too)
        return y, new, var, {"events": self._step_events(y, alive),
                             "fwd_macs": res.stats["fwd_macs"],
                             "fwd_macs_dense": res.stats["fwd_macs_dense"]}

    def _backward(self, run, dy, extra):
        res = run.saved
        g = F.egru_backward(res, dy, dtrace=extra.get("trace"))
        grads = {"R": g["R"], "br": g["br"], "bx": g["drive"].reshape(-1, 3 * self.size).sum(0)}
        grads.update(self._param_grads(g))
        st = {k: g.stats[k] for k in ("bwd_macs", "bwd_macs_event", "bwd_macs_dense",
                                      "backward_sparsity")}
        return g["drive"], grads, st


class EGRU(GatedRecurrent):
    """Event-based GRU population (DESIGN.md section 1).

    Parameters
    ----------
    name, size : name and number of units H.
    thr_mean : mean of the Beta(10 m, 10 (1 - m)) threshold initialisation
        (default ``config.THRESHOLD_MEAN``), clipped to ``config.THRESHOLD_RANGE``.
    damp, support : surrogate gradient ``damp * max(0, 1 - support |v - thr|)``.
    zoneout, dropconnect : training regularisers (see :func:`evsim.egru_forward`).
    trace_alpha : when given, the population also computes the output trace;
        it is returned as ``outputs[name + ".trace"]`` and its gradient can be
        passed to ``backward`` under the same key.

    Parameters (``params``): ``R`` (H, 3H), ``br``, ``bx`` (3H,), ``thr`` (H,).
    Input weights live on the projections into the population (width 3H,
    gate blocks z, r, g). Init like ``torch.nn.GRU``: R and biases uniform in
    ``±1/sqrt(H)``. Output: graded events y.
    """

    variables = ("y", "h", "v", "c")
    emits_events = True
    threshold_names = ("thr",)

    def __init__(self, name, size, thr_mean=None, damp=None, support=None, zoneout=0.0,
                 dropconnect=0.0, trace_alpha=None):
        super().__init__(name, size, zoneout, dropconnect)
        self.thr_mean = config.THRESHOLD_MEAN if thr_mean is None else check.probability(
            f"{name}: thr_mean", thr_mean)
        if self.thr_mean <= 0:
            raise ValueError(f"{name}: thr_mean must be in (0, 1), got {thr_mean}")
        self.damp = config.DAMP if damp is None else check.positive(f"{name}: damp", damp,
                                                                    allow_zero=True)
        self.support = config.SUPPORT if support is None else check.positive(
            f"{name}: support", support)
        self.trace_alpha = None if trace_alpha is None else check.probability(
            f"{name}: trace_alpha", trace_alpha)
        self._kwargs.update(thr_mean=self.thr_mean, damp=self.damp, support=self.support,
                            zoneout=self.zoneout, dropconnect=self.dropconnect,
                            trace_alpha=self.trace_alpha)
        if self.trace_alpha is not None:
            self.variables = self.variables + ("trace",)

    def _init_params(self, rng, dtype):
        super()._init_params(rng, dtype)
        m = self.thr_mean
        thr = rng.beta(10 * m, 10 * (1 - m), self.size)
        lo, hi = config.THRESHOLD_RANGE
        self.params["thr"] = np.ascontiguousarray(np.clip(thr, lo, hi), dtype)

    def _run(self, a, state, training, backend, lengths, rng):
        p = self.params
        return F.egru_forward_drive(
            a, p["R"], p["br"], p["thr"], state["h"], state["y"], damp=self.damp,
            support=self.support, training=training, backend=backend, zoneout=self.zoneout,
            dropconnect=self.dropconnect, trace_alpha=self.trace_alpha, lengths=lengths,
            rng=rng)

    def _membrane(self, h, c):
        # v = h + c thr (the reset subtracted thr where the unit fired)
        return np.where(c != 0, h + self.params["thr"], h)

    def _events(self, res):
        ev = res._array("events")
        return None if ev is None else (ev[0][1:], ev[1][1:])

    def _step_events(self, y, alive):
        return int(np.count_nonzero(y))

    def _param_grads(self, g):
        return {"thr": g["thr"]}

    def _backward_mask(self, run):
        return run.saved.backward_active()  # None (all units) when nothing was saved


class GRU(GatedRecurrent):
    """Dense GRU baseline on the same kernels (dense path): every unit emits its
    state every step (y = h). Parameters ``R``, ``br``, ``bx``; init like
    ``torch.nn.GRU``. ``backend="cpu"`` runs the dense kernels (a GRU has no
    events to skip)."""

    def __init__(self, name, size, zoneout=0.0, dropconnect=0.0):
        super().__init__(name, size, zoneout, dropconnect)
        self._kwargs.update(zoneout=self.zoneout, dropconnect=self.dropconnect)

    def _run(self, a, state, training, backend, lengths, rng):
        p = self.params
        return F.gru_forward_drive(
            a, p["R"], p["br"], state["h"], training=training,
            backend="dense" if backend == "cpu" else backend, zoneout=self.zoneout,
            dropconnect=self.dropconnect, lengths=lengths, rng=rng)


# --------------------------------------------------------------------------
# LIF


class LIF(Population):
    """Leaky integrate-and-fire units with receptors, a rest potential, an
    absolute refractory period and a surrogate gradient.

    ``tau_mem dv/dt = -(v - v_rest) + sum of receptor currents`` (and
    conductances ``g_k (e_k - v)``); a unit spikes when ``v > v_th`` (strict),
    then ``v = v_reset`` and it is held there for ``refractory`` ms. The
    linear dynamics are integrated exactly over each step of ``dt`` (the
    network's); with a conductance receptor, by exponential Euler. The maths
    and the order of a step: :mod:`evsim.kernels.lif`.

    Parameters
    ----------
    name, size : name and number of units.
    tau_mem : membrane time constant (ms).
    tau_syn : time constant of the default receptor ``"syn"`` (a current;
        0: a step current) when ``receptors`` is not given.
    v_th, v_reset, v_rest : threshold, reset and rest (leak reversal) potential.
        ``v_rest`` may lie above ``v_th`` (a tonically firing unit).
    refractory : absolute refractory period (ms), a multiple of ``dt``.
    receptors : dict name -> :class:`evsim.Current` or :class:`evsim.Conductance`,
        e.g. ``{"exc": Current(5.0), "inh": Current(10.0)}``. Projections onto
        the population name one (the first is the default).
    v_init : initial membrane potential: a number, an array (size,), or a
        distribution drawn at the start of each run from the population's
        random stream: ``("uniform", low, high)`` or ``("normal", mean, std)``.
        Default ``v_rest``.
    damp, support : the surrogate gradient ``damp * max(0, 1 - support |u - v_th|)``
        (u: the membrane before the reset), as the EGRU's.

    Output: spikes (1.0). Variables for monitors: ``y``, ``v`` and one per
    receptor (its value after the step). No parameters of its own: weights are
    on projections. Training (BPTT) supports current receptors.
    """

    emits_events = True

    def __init__(self, name, size, tau_mem=20.0, tau_syn=None, v_th=1.0, v_reset=0.0,
                 v_rest=0.0, refractory=0.0, receptors=None, v_init=None, damp=None,
                 support=None):
        super().__init__(name, size)
        self.tau_mem = check.positive(f"{name}: tau_mem", tau_mem)
        self.v_th = _finite(f"{name}: v_th", v_th)
        self.v_reset = _finite(f"{name}: v_reset", v_reset)
        self.v_rest = _finite(f"{name}: v_rest", v_rest)
        if not self.v_reset < self.v_th:
            raise ValueError(f"{name}: v_reset ({v_reset}) must be below v_th ({v_th})")
        self.refractory = check.positive(f"{name}: refractory", refractory, allow_zero=True)
        if receptors is not None and tau_syn is not None:
            raise ValueError(f"{name}: give either tau_syn (one receptor 'syn') or receptors, "
                             f"not both")
        if receptors is None:
            receptors = {"syn": Current(5.0 if tau_syn is None else tau_syn)}
        if not isinstance(receptors, dict) or not receptors:
            raise ValueError(f"{name}: receptors must be a non-empty dict name -> "
                             f"evsim.Current(tau) or evsim.Conductance(tau, e_rev), got "
                             f"{receptors!r}")
        self.receptors = {}
        for key, rec in receptors.items():
            if not isinstance(key, str) or not key.isidentifier() or key in ("y", "v"):
                raise ValueError(f"{name}: receptor names must be identifiers other than "
                                 f"'y' and 'v', got {key!r}")
            try:
                self.receptors[key] = receptor_from_config(rec)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{name}: receptor {key!r}: {err}") from None
        self.v_init = _check_init(name, v_init, self.size)
        self.damp = config.DAMP if damp is None else check.positive(f"{name}: damp", damp,
                                                                    allow_zero=True)
        self.support = config.SUPPORT if support is None else check.positive(
            f"{name}: support", support)
        self.variables = ("y", "v") + tuple(self.receptors)
        self._kwargs.update(
            tau_mem=self.tau_mem, v_th=self.v_th, v_reset=self.v_reset, v_rest=self.v_rest,
            refractory=self.refractory, damp=self.damp, support=self.support,
            receptors={k: r.config() for k, r in self.receptors.items()},
            v_init=(self.v_init.tolist() if isinstance(self.v_init, np.ndarray)
                    else self.v_init))
        self.dt = 1.0

    # -- receptors and constants --------------------------------------------
    @property
    def in_size(self):
        return len(self.receptors) * self.size

    def receptor_columns(self, receptor=None):
        """Columns of the input drive that feed ``receptor`` (default: the first)."""
        names = list(self.receptors)
        if receptor is None:
            receptor = names[0]
        if receptor not in self.receptors:
            raise ValueError(f"population {self.name!r} has no receptor {receptor!r}; it has "
                             f"{names}")
        k = names.index(receptor)
        return slice(k * self.size, (k + 1) * self.size)

    @property
    def n_refractory(self):
        """Refractory period in steps of the network's dt."""
        return _steps(self.name, self.refractory, self.dt)

    @property
    def conductance_based(self):
        return any(isinstance(r, Conductance) for r in self.receptors.values())

    def cell(self):
        """The checked constants of a step at the network's dt
        (:class:`evsim.functional.LIFCell`); made again when an attribute changed."""
        key = (self.tau_mem, tuple(r.spec() for r in self.receptors.values()), self.dt,
               self.v_rest, self.v_th, self.v_reset, self.refractory, self.damp, self.support)
        cached = getattr(self, "_cell", None)
        if cached is None or cached[0] != key:
            cell = F.lif_cell(key[0], list(key[1]), self.dt, v_rest=self.v_rest,
                              v_th=self.v_th, v_reset=self.v_reset, n_ref=self.n_refractory,
                              damp=self.damp, support=self.support)
            self._cell = cached = (key, cell)
        return cached[1]

    def constants(self):
        """(a_m, kinds, a, c, e_rev, conductance) for the kernels at this dt."""
        c = self.cell()
        return c.a_m, c.kinds, c.a, c.c, c.e_rev, c.conductance

    def _init_params(self, rng, dtype):
        self.n_refractory  # noqa: B018 - checks the period against the network's dt

    def _initial_state(self, B, dtype, rng=None):
        N = self.size
        init = self.v_init
        if init is None:
            v = np.full((B, N), self.v_rest, dtype)
        elif isinstance(init, tuple):
            kind, p1, p2 = init
            gen = rng if rng is not None else np.random.default_rng(0)
            draw = gen.uniform(p1, p2, (B, N)) if kind == "uniform" else gen.normal(p1, p2, (B, N))
            v = np.ascontiguousarray(draw, dtype)
        else:
            v = np.ascontiguousarray(np.broadcast_to(init, (B, N)), dtype)
        return {"v": v, "I": np.zeros((B, self.in_size), dtype),
                "r": np.zeros((B, N), np.int64)}

    # -- runs ---------------------------------------------------------------
    def _run(self, drive, state, lengths, training, backend):
        return F.lif_forward(drive, state["v"], state["I"], state["r"], lengths, self.cell(),
                             training=training, backend=backend)

    def _variables(self, s, v, I_seq):
        out = {"y": s, "v": v}
        for k, name in enumerate(self.receptors):
            out[name] = I_seq[..., k * self.size:(k + 1) * self.size]
        return out

    def _forward(self, drive, state, training, backend, lengths, rng):
        res = self._run(drive, state, lengths, training, backend)
        n = res.spikes
        steps = int(lengths.sum()) * self.size
        stats = dict(events=n, activity=n / max(steps, 1), fwd_macs=0, fwd_macs_dense=0)
        return PopRun(y=res.s, state=res.state, saved=res.saved, stats=stats,
                      variables=lambda: self._variables(res.s, res.v, res.I))

    def _step(self, drive_t, state, alive, training, backend, rng):
        # samples past their length run 0 steps: their state passes through
        res = self._run(drive_t[None], state, alive.astype(np.int64), False, backend)
        var = {k: x[0] for k, x in self._variables(res.s, res.v, res.I).items()}
        var.update(_u=res.u[0], _held=res.held[0])  # what training saves (not for monitors)
        return res.s[0], res.state, var, {"events": res.spikes, "fwd_macs": 0,
                                          "fwd_macs_dense": 0}

    def _backward_mask(self, run):
        return F.lif_backward_active(run.saved)

    def _backward(self, run, dy, extra):
        dx, _ = F.lif_backward(run.saved, dy)
        return dx, {}, {"bwd_macs": 0, "bwd_macs_dense": 0, "backward_sparsity": 0.0}

    def _saved_from_steps(self, y, extras, lengths):
        # the step-wise backward runs one step at a time on the host kernels
        return LIFSaved(s=y, u=extras["_u"], held=extras["_held"], lengths=lengths,
                        cell=self.cell(), backend="cpu")

    def _step_backward(self, run, t, dy_t, carry):
        """Step t of BPTT for the step-wise schedule: (dL/d drive_t (B, R N),
        {}, carry to step t - 1)."""
        sv = run.saved
        step = LIFSaved(s=sv.s[t:t + 1], u=sv.u[t:t + 1], held=sv.held[t:t + 1],
                        lengths=(t < sv.lengths).astype(np.int64), cell=sv.cell,
                        backend=sv.backend)
        dx, carry = F.lif_backward(step, dy_t[None], carry)
        return dx[0], {}, carry


def _finite(name, value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _steps(name, duration, dt):
    """A duration (ms) as a whole number of steps of dt, or a clear error."""
    n = round(duration / dt)
    if abs(n * dt - duration) > 1e-6 * max(dt, duration):
        raise ValueError(f"{name}: refractory ({duration} ms) must be a multiple of the "
                         f"network's dt ({dt} ms)")
    return int(n)


def _check_init(name, v_init, size):
    """v_init: None, a number, an array (size,), or ("uniform"|"normal", a, b)."""
    if v_init is None:
        return None
    if isinstance(v_init, (tuple, list)) and v_init and isinstance(v_init[0], str):
        if len(v_init) != 3 or v_init[0] not in ("uniform", "normal"):
            raise ValueError(f"{name}: v_init must be ('uniform', low, high) or "
                             f"('normal', mean, std), got {v_init!r}")
        kind, p1, p2 = v_init[0], _finite(f"{name}: v_init", v_init[1]), _finite(
            f"{name}: v_init", v_init[2])
        if (kind == "uniform" and p2 < p1) or (kind == "normal" and p2 < 0):
            raise ValueError(f"{name}: v_init {v_init!r}: need low <= high (uniform) or "
                             f"std >= 0 (normal)")
        return (kind, p1, p2)
    arr = np.asarray(v_init, float)
    if arr.ndim == 0:
        return _finite(f"{name}: v_init", arr)
    if arr.shape != (size,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: v_init must be a number, {size} finite values or a "
                         f"distribution, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------
# Readout


class Readout(Population):
    """Linear readout: ``out_t = drive_t + b``, or with ``leak`` in (0, 1) the
    leaky integration ``out_t = leak out_{t-1} + (1 - leak) (drive_t + b)``.
    Outputs past a sample's length are zero. Parameter ``b`` (N,), zero init."""

    def __init__(self, name, size, leak=None):
        super().__init__(name, size)
        self.leak = None if leak is None else check.probability(f"{name}: leak", leak)
        self._kwargs.update(leak=self.leak)

    def _init_params(self, rng, dtype):
        self.params = {"b": np.zeros(self.size, dtype)}

    def _initial_state(self, B, dtype, rng=None):
        return {"out": np.zeros((B, self.size), dtype)}

    def _forward(self, drive, state, training, backend, lengths, rng):
        T, B, N = drive.shape
        u = drive + self.params["b"]
        if self.leak is None:
            y = u
        else:
            u0 = u.copy()
            u0[0] += self.leak / (1 - self.leak) * state["out"]  # carries out_{-1}
            y = F.output_trace(u0, self.leak, backend=backend)
        valid = _valid(lengths, T)
        if not valid.all():  # the readout's output can be large (T, B, vocabulary)
            y = np.where(valid[..., None], y, 0)
        y = y.astype(drive.dtype, copy=False)
        last = y[lengths - 1, np.arange(B)]
        return PopRun(y=y, state={"out": last}, saved=(lengths, backend),
                      stats=dict(events=0, activity=0.0, fwd_macs=0, fwd_macs_dense=0),
                      variables=lambda: {"y": y})

    def _step(self, drive_t, state, alive, training, backend, rng):
        u = drive_t + self.params["b"]
        y = u if self.leak is None else self.leak * state["out"] + (1 - self.leak) * u
        y = np.where(alive[:, None], y, 0).astype(drive_t.dtype)
        new = {"out": np.where(alive[:, None], y, state["out"])}
        return y, new, {"y": y}, {"events": 0, "fwd_macs": 0, "fwd_macs_dense": 0}

    def _backward(self, run, dy, extra):
        lengths, backend = run.saved
        T = dy.shape[0]
        valid = _valid(lengths, T)[..., None]
        g = dy if valid.all() else np.where(valid, dy, 0)
        if self.leak is not None:
            du = F.output_trace_backward(np.ascontiguousarray(g), self.leak, backend=backend)
            g = np.where(valid, du, 0).astype(dy.dtype)
        db = g.reshape(-1, self.size).sum(0)
        return g, {"b": db}, {"bwd_macs": 0, "bwd_macs_dense": 0, "backward_sparsity": 0.0}

    def _saved_from_steps(self, y, extras, lengths):
        return lengths, "cpu"

    def _step_backward(self, run, t, dy_t, carry):
        """Step t of BPTT for the step-wise schedule: (dL/d drive_t, {"b": ...},
        carry dL/d out_{t-1})."""
        lengths, _ = run.saved
        alive = (t < lengths)[:, None]
        g = np.where(alive, dy_t + (0 if carry is None else carry), 0).astype(dy_t.dtype)
        if self.leak is None:
            return g, {"b": g.sum(0)}, None
        du = (1 - self.leak) * g
        return du, {"b": du.sum(0)}, np.where(alive, self.leak * g, 0 if carry is None
                                               else carry).astype(dy_t.dtype)


def _valid(lengths, T):
    """(T, B) bool: step t of sample b is within its length."""
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


# --------------------------------------------------------------------------
# Inputs


class _Input(Population):
    is_input = True

    @property
    def in_size(self):
        return 0

    def _shape_hint(self, value):
        """(T, B) implied by the value, either possibly None."""
        return None, None

    def _forward(self, drive, state, training, backend, lengths, rng, value=None):
        y = self._values(value, lengths, rng)
        n = int(np.count_nonzero(y))
        steps = int(lengths.sum()) * self.size
        return PopRun(y=y, saved=value, stats=dict(events=n, activity=n / max(steps, 1),
                                                   fwd_macs=0, fwd_macs_dense=0),
                      variables=lambda: {"y": y})

    def _backward(self, run, dy, extra):
        return None, {}, {"bwd_macs": 0, "bwd_macs_dense": 0, "backward_sparsity": 0.0}


def _masked(y, lengths):
    T = y.shape[0]
    if np.all(lengths == T):
        return y
    return np.where(_valid(lengths, T)[..., None], y, 0).astype(y.dtype)


class DenseInput(_Input):
    """Analog input: ``run({name: x})`` with x of shape (T, B, size); or a
    constant per unit, x of shape (size,) (e.g. a constant current injected
    into a LIF population through a step-current receptor ``Current(0)``; pass
    ``steps=T``)."""

    def _shape_hint(self, value):
        value = np.asarray(value)
        return (value.shape[0], value.shape[1]) if value.ndim == 3 else (None, None)

    def _check(self, value, T, B, dtype):
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.number) and arr.shape == (self.size,):
            arr = np.broadcast_to(arr, (T, B, self.size))
        if not np.issubdtype(arr.dtype, np.number) or arr.shape != (T, B, self.size):
            raise ValueError(f"input {self.name!r} must be a numeric array of shape "
                             f"(T, B, {self.size}) = ({T}, {B}, {self.size}) (time-major) or "
                             f"({self.size},) (constant), got shape {arr.shape} dtype "
                             f"{arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"input {self.name!r} contains NaN or infinite values")
        return np.ascontiguousarray(arr, dtype)

    def _values(self, value, lengths, rng):
        return _masked(value, lengths)


class SpikeInput(_Input):
    """Spike input from event lists: ``run({name: events})`` where events is a
    dict with ``times`` (K,) step indices, ``indices`` (K,) unit indices,
    optional ``batch`` (K,) sample indices (default 0) and ``values`` (K,)
    (default 1.0); or a dense (T, B, size) array of event values. Events with
    equal (time, sample, unit) add up."""

    emits_events = True

    def _shape_hint(self, value):
        # event lists fix no shape (T comes from other inputs or steps=, B
        # from other inputs or lengths, else 1); their ranges are checked.
        if isinstance(value, dict):
            return None, None
        value = np.asarray(value)
        return (value.shape[0], value.shape[1]) if value.ndim == 3 else (None, None)

    def _check(self, value, T, B, dtype):
        if not isinstance(value, dict):
            return DenseInput._check(self, value, T, B, dtype)
        unknown = set(value) - {"times", "indices", "batch", "values"}
        if unknown or "times" not in value or "indices" not in value:
            raise ValueError(f"spike input {self.name!r}: expected a dict with 'times', "
                             f"'indices' and optional 'batch', 'values', got keys "
                             f"{sorted(value)}")
        times = np.asarray(value["times"])
        idx = np.asarray(value["indices"])
        K = times.shape[0] if times.ndim == 1 else -1
        batch = np.zeros(max(K, 0), np.int64) if value.get("batch") is None else np.asarray(
            value["batch"])
        vals = np.ones(max(K, 0)) if value.get("values") is None else np.asarray(
            value["values"], float)
        for nm, arr in (("indices", idx), ("batch", batch), ("values", vals)):
            if times.ndim != 1 or arr.shape != times.shape:
                raise ValueError(f"spike input {self.name!r}: 'times' and {nm!r} must be 1-d "
                                 f"of equal length, got {times.shape} and {arr.shape}")
        for nm, arr, hi in (("times", times, T), ("indices", idx, self.size),
                            ("batch", batch, B)):
            if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0
                             or arr.max() >= hi):
                raise ValueError(f"spike input {self.name!r}: {nm!r} must be integers in "
                                 f"[0, {hi}), got {arr.dtype} from {arr.min()} to {arr.max()}")
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"spike input {self.name!r}: 'values' contains NaN or inf")
        out = np.zeros((T, B, self.size), dtype)
        np.add.at(out, (times, batch, idx), vals.astype(dtype))
        return out

    _values = DenseInput._values


class PoissonInput(_Input):
    """Poisson spike trains from rates.

    rates : (size,) or scalar default rates. ``unit="hz"``: rates in Hz with
        the network's ``dt`` in ms, probability per step ``rate * dt / 1000``;
        ``unit="prob"``: rates are probabilities per step.
    ``run({name: r})`` may override the rates with r of shape (size,) or
    (T, B, size); otherwise the defaults are used. Spikes are drawn from the
    population's random stream (derived from the network seed).
    """

    emits_events = True

    def __init__(self, name, size, rates=0.0, unit="hz"):
        super().__init__(name, size)
        if unit not in ("hz", "prob"):
            raise ValueError(f"{name}: unit must be 'hz' or 'prob', got {unit!r}")
        self.unit = unit
        self.rates = np.broadcast_to(np.asarray(rates, float), (self.size,)).copy()
        self._kwargs.update(rates=self.rates.tolist(), unit=unit)
        self.dt = 1.0

    def _shape_hint(self, value):
        if value is not None and np.ndim(value) == 3:
            return np.shape(value)[:2]
        return None, None

    def _check(self, value, T, B, dtype):
        rates = self.rates if value is None else np.asarray(value, float)
        if rates.shape not in ((self.size,), (T, B, self.size)):
            raise ValueError(f"Poisson input {self.name!r}: rates must have shape "
                             f"({self.size},) or ({T}, {B}, {self.size}), got {rates.shape}")
        p = rates * self.dt / 1000.0 if self.unit == "hz" else rates
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            how = "rates * dt / 1000" if self.unit == "hz" else "rates"
            raise ValueError(f"Poisson input {self.name!r}: spike probabilities per step "
                             f"({how}) must lie in [0, 1], got {p.min()} to {p.max()}")
        return np.broadcast_to(p, (T, B, self.size))

    def _values(self, value, lengths, rng):
        y = (rng.random(value.shape) < value).astype(self._dtype)
        return _masked(y, lengths)


class Embedding(_Input):
    """Token embedding: ``run({name: ids})`` with int ids (T, B) in [0, vocab);
    output ``E[ids]`` (T, B, size). Parameter ``E`` (vocab, size), N(0, 1) init
    (like ``torch.nn.Embedding``); trainable."""

    def __init__(self, name, vocab, size):
        super().__init__(name, size)
        self.vocab = check.size(f"{name}: vocab", vocab)
        self._kwargs.update(vocab=self.vocab)

    def _init_params(self, rng, dtype):
        self.params = {"E": np.ascontiguousarray(rng.normal(0, 1, (self.vocab, self.size)),
                                                 dtype)}

    def _shape_hint(self, value):
        value = np.asarray(value)
        return (value.shape[0], value.shape[1]) if value.ndim == 2 else (None, None)

    def _check(self, value, T, B, dtype):
        ids = np.asarray(value)
        if ids.shape != (T, B) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"embedding input {self.name!r} must be integer token ids of "
                             f"shape (T, B) = ({T}, {B}), got shape {ids.shape} "
                             f"dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
            raise ValueError(f"embedding input {self.name!r}: ids must lie in "
                             f"[0, {self.vocab}), got {ids.min()} to {ids.max()}")
        return ids

    def _values(self, value, lengths, rng):
        return _masked(self.params["E"][value], lengths)

    def _backward(self, run, dy, extra):
        ids = run.saved
        dE = np.zeros_like(self.params["E"])
        np.add.at(dE, ids.reshape(-1), dy.reshape(-1, self.size))
        return None, {"E": dE}, {"bwd_macs": 0, "bwd_macs_dense": 0, "backward_sparsity": 0.0}


for _cls in (EGRU, GRU, LIF, Readout, DenseInput, SpikeInput, PoissonInput, Embedding):
    register_population(_cls)
