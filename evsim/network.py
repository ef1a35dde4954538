"""The network: factory and owner of populations, projections and monitors.

There is no hidden global network: everything is created through, and owned
by, a :class:`Network`::

    net = Network(seed=0)
    net.add(DenseInput("x", size=8))
    net.add(EGRU("egru", size=128))
    net.add(Readout("out", size=10))
    net.connect("x", "egru")
    net.connect("egru", "out")
    res = net.run({"x": x})          # x: (T, B, 8), time-major

Schedules
---------
When the populations form a directed acyclic graph (each EGRU/GRU owns its
recurrent weights; that is not a cycle), each population runs its whole
sequence at once in compiled kernels, in topological order ("dag"). When
projections form a cycle between different populations the network falls
back to a step-wise schedule ("stepwise"): a Python loop over steps, each
population one step at a time. The order is the topological order where it
exists; to break a cycle, the earliest added population that is still
waiting goes first, and its projections from populations not yet computed in
that step carry the source's output of the previous step (a delay of one
step). On a DAG both schedules compute the same thing (tested). Training
(``backward``) is supported for the DAG schedule only.

Random streams
--------------
One ``seed``: the initial weights of each population and projection and the
run-time randomness of each population (zoneout, DropConnect, Poisson spikes)
come from ``np.random.SeedSequence(seed, spawn_key=(crc32(name), stream))``,
so they depend on the seed and the object's name only, not on the order in
which objects are added.
"""

import json
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from evsim import _validate as check
from evsim import io as evio
from evsim import populations as pops
from evsim import threads
from evsim.projections import Projection

__all__ = ["Network", "ForwardPass", "RunResult"]

#: Show the progress bar (progress=None) when T * B * (total units) exceeds this.
PROGRESS_MIN_WORK = 50_000_000
BACKENDS = ("cpu", "dense", "reference", "cuda")
MONITOR_KINDS = {"events": "EventMonitor", "state": "StateMonitor",
                 "activity": "ActivityMonitor"}
POPULATION_CLASSES = {c.__name__: c for c in (
    pops.EGRU, pops.GRU, pops.LIF, pops.Readout, pops.DenseInput, pops.SpikeInput,
    pops.PoissonInput, pops.Embedding)}


@dataclass
class ForwardPass:
    """Result of :meth:`Network.forward` / :meth:`Network.run`.

    Attributes
    ----------
    outputs : dict population name -> (T, B, N) outputs (EGRU: graded events
        y; LIF and spike inputs: spikes; readout: values); zero past a
        sample's length. An EGRU with ``trace_alpha`` adds ``name + ".trace"``.
    stats : dict population name -> counters: ``events``, ``activity``,
        ``fwd_macs`` (multiply-adds done by the population and its incoming
        projections), ``fwd_macs_dense`` (the dense equivalent), ``wall_s``;
        after :meth:`Network.backward` also ``bwd_macs``, ``bwd_macs_dense``,
        ``backward_sparsity``, ``bwd_wall_s``.
    projection_stats : dict projection name -> ``fwd_macs``,
        ``fwd_macs_dense``, ``wall_s`` (and backward counters).
    lengths : (B,) int64. training : bool. schedule : "dag" or "stepwise".
    wall_s : wall-clock seconds of the whole run.
    """

    outputs: dict
    stats: dict
    projection_stats: dict
    lengths: np.ndarray
    training: bool
    schedule: str
    wall_s: float = 0.0
    _runs: dict = field(default_factory=dict, repr=False)
    _backward_done: bool = field(default=False, repr=False)

    def summary(self):
        """Totals over the network: events, forward (and backward) multiply-adds
        done and their dense equivalents, wall-clock seconds."""
        keys = ("events", "fwd_macs", "fwd_macs_event", "fwd_macs_dense", "bwd_macs",
                "bwd_macs_event", "bwd_macs_dense")
        out = {k: 0 for k in keys}
        for table in (self.stats, self.projection_stats):
            for st in table.values():
                for k in keys:
                    if k == "events" and table is self.projection_stats:
                        continue
                    out[k] += int(st.get(k, 0))
        out["wall_s"] = self.wall_s
        return out


RunResult = ForwardPass


def _stream_seed(seed, name, stream):
    return np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()), stream))


class Network:
    """A network of populations and projections.

    Parameters
    ----------
    seed : int. Drives every random stream (initial weights, zoneout,
        DropConnect, Poisson inputs).
    dtype : "float32" (default) or "float64" for all arrays.
    backend : EGRU kernels: "cpu" (event-driven), "dense", "reference" or "cuda".
    progress : True / False / None (auto: a tqdm bar when a run is long).
    dt : step in ms (used by LIF time constants and Poisson rates in Hz).
    """

    def __init__(self, seed=0, dtype="float32", backend="cpu", progress=None, dt=1.0):
        self.seed = check.size("seed", seed, minimum=0)
        self.dtype = np.dtype(dtype)
        if self.dtype.type not in check.FLOAT_DTYPES:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.progress = progress
        self.dt = check.positive("dt", dt)
        self.populations = {}
        self.projections = {}
        self.monitors = []  # (population name, monitor)
        self.state = {}  # population name -> final state of the last run
        self._rngs = {}

    def __repr__(self):
        return (f"Network(seed={self.seed}, populations={list(self.populations)}, "
                f"projections={list(self.projections)})")

    # ------------------------------------------------------------------
    # Building

    def add(self, population):
        """Add a population (creating its parameters); return it."""
        if not isinstance(population, pops.Population):
            raise TypeError(f"add() takes a population (evsim.EGRU, evsim.DenseInput, ...), "
                            f"got {type(population).__name__}")
        name = population.name
        if name in self.populations:
            raise ValueError(f"a population named {name!r} already exists; choose another name")
        population._dtype = self.dtype
        population.dt = self.dt
        population._init_params(np.random.default_rng(_stream_seed(self.seed, name, 0)),
                                self.dtype)
        self._rngs[name] = np.random.default_rng(_stream_seed(self.seed, name, 1))
        self.populations[name] = population
        return population

    def _pop(self, name, what="population"):
        if isinstance(name, pops.Population):
            name = name.name
        if name not in self.populations:
            raise KeyError(f"unknown {what} {name!r}; the network has "
                           f"{sorted(self.populations)} (add it with net.add first)")
        return self.populations[name]

    def connect(self, source, target, kind="dense", p=None, init="uniform", scale=1.0,
                weight=None, seed=None):
        """Connect two populations; return the :class:`Projection`.

        The weight has shape (source size, target input width): 3H for an
        EGRU or GRU target, the target size otherwise. ``weight`` gives it
        explicitly (array, or scipy.sparse for ``kind="sparse"``); ``seed``
        overrides the stream derived from the network seed.
        """
        src = self._pop(source, "source population")
        tgt = self._pop(target, "target population")
        if src is tgt:
            raise ValueError(f"connect({src.name!r}, {tgt.name!r}): a population cannot "
                             f"project onto itself; EGRU and GRU populations own their "
                             f"recurrent weights (params '{src.name}.R')")
        if tgt.is_input:
            raise ValueError(f"connect(..., {tgt.name!r}): {type(tgt).__name__} is an input "
                             f"population and takes no projection; connect it as a source")
        name = f"{src.name}->{tgt.name}"
        if name in self.projections:
            raise ValueError(f"projection {name!r} already exists; there is at most one "
                             f"projection per pair of populations")
        proj = Projection(src, tgt, kind=kind, p=p, init=init, scale=scale, seed=seed)
        if weight is not None and getattr(weight, "shape", None) != proj.shape:
            raise ValueError(f"connect({src.name!r}, {tgt.name!r}): weight must have shape "
                             f"(source size, target input width) = {proj.shape}, got "
                             f"{getattr(weight, 'shape', type(weight).__name__)}")
        rng = np.random.default_rng(seed if seed is not None
                                    else _stream_seed(self.seed, name, 0))
        proj._init_weights(rng, self.dtype, weight)
        self.projections[name] = proj
        return proj

    def attach(self, population, monitor):
        """Attach any monitor object (``start_run``, ``record``, ``end_run``)."""
        pop = self._pop(population)
        for meth in ("start_run", "record", "end_run"):
            if not callable(getattr(monitor, meth, None)):
                raise TypeError(f"a monitor needs a method {meth}(); got "
                                f"{type(monitor).__name__}")
        self.monitors.append((pop.name, monitor))
        return monitor

    def monitor(self, population, kind, **options):
        """Create and attach a monitor: kind "events" (EventMonitor), "state"
        (StateMonitor; ``variables`` must be variables of the population) or
        "activity" (ActivityMonitor). Options go to the monitor's constructor."""
        pop = self._pop(population)
        if kind not in MONITOR_KINDS:
            raise ValueError(f"unknown monitor kind {kind!r}; choose one of "
                             f"{sorted(MONITOR_KINDS)}")
        if kind == "state":
            variables = options.get("variables", ["v"])
            if isinstance(variables, str):
                variables = [variables]
            for v in variables:
                if v not in pop.variables:
                    raise ValueError(f"population {pop.name!r} ({type(pop).__name__}) has no "
                                     f"variable {v!r}; it has {list(pop.variables)}")
        from evsim import monitors

        cls = getattr(monitors, MONITOR_KINDS[kind])
        return self.attach(pop, cls(pop.name, **options))

    # ------------------------------------------------------------------
    # Parameters and random streams

    def params(self):
        """Live parameter arrays: "pop.param" and "source->target.W"."""
        out = {}
        for pop in self.populations.values():
            for k, v in pop.params.items():
                out[f"{pop.name}.{k}"] = v
        for proj in self.projections.values():
            for k, v in proj.params.items():
                out[f"{proj.name}.{k}"] = v
        return out

    def threshold_params(self):
        """Names of the parameters that are thresholds (for optimiser bounds)."""
        return [f"{p.name}.{k}" for p in self.populations.values() for k in p.threshold_names]

    def rng_state(self):
        """State of every run-time random stream, as a flat dict of uint64 arrays."""
        out = {}
        for name, gen in self._rngs.items():
            st = gen.bit_generator.state
            if st["bit_generator"] != "PCG64":
                raise RuntimeError("rng_state supports the PCG64 generator only")
            s, inc = st["state"]["state"], st["state"]["inc"]
            m = (1 << 64) - 1
            out[name] = np.array([s >> 64, s & m, inc >> 64, inc & m, st["has_uint32"],
                                  st["uinteger"]], dtype=np.uint64)
        return out

    def set_rng_state(self, state):
        """Restore the streams from :meth:`rng_state`."""
        for name, arr in state.items():
            if name not in self._rngs:
                raise KeyError(f"rng state for unknown population {name!r}")
            a = [int(x) for x in np.asarray(arr, dtype=np.uint64)]
            if len(a) != 6:
                raise ValueError(f"rng state of {name!r} must hold 6 words, got {len(a)}")
            self._rngs[name].bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": (a[0] << 64) | a[1], "inc": (a[2] << 64) | a[3]},
                "has_uint32": a[4], "uinteger": a[5]}

    # ------------------------------------------------------------------
    # Schedule

    def _incoming(self, pop):
        return [p for p in self.projections.values() if p.target is pop]

    def _schedule(self):
        """(order, delayed projection names). Topological order when the graph
        is acyclic (no delays); otherwise cycles are broken as documented."""
        placed, order, delayed = set(), [], set()
        waiting = list(self.populations.values())
        while waiting:
            for pop in waiting:
                if all(p.source.name in placed for p in self._incoming(pop)):
                    break
            else:
                pop = waiting[0]
                for p in self._incoming(pop):
                    if p.source.name not in placed:
                        delayed.add(p.name)
            waiting.remove(pop)
            placed.add(pop.name)
            order.append(pop)
        return order, delayed

    @property
    def cyclic(self):
        """True when projections form a cycle between populations."""
        return bool(self._schedule()[1])

    # ------------------------------------------------------------------
    # Running

    def run(self, inputs, lengths=None, steps=None, schedule="auto", progress=None,
            reset=True):
        """Evaluation run (``training=False``) over a batch; see :meth:`forward`."""
        return self.forward(inputs, lengths=lengths, training=False, steps=steps,
                            schedule=schedule, progress=progress, reset=reset)

    def forward(self, inputs, lengths=None, training=True, steps=None, schedule="auto",
                progress=None, reset=True):
        """Run the network over a batch of sequences.

        Parameters
        ----------
        inputs : dict input population name -> value: DenseInput (T, B, N)
            floats, SpikeInput event dict or (T, B, N) array, PoissonInput
            rates (optional), Embedding (T, B) int ids.
        lengths : (B,) valid steps per sample (default all T). Outputs past a
            sample's length are zero; finished samples cost nothing more.
        training : save what :meth:`backward` needs; training-mode zoneout and
            DropConnect.
        steps : T, needed only when no input gives it (e.g. only spike lists).
        schedule : "auto", "dag" (error for a cyclic network) or "stepwise".
        progress : overrides the network's progress setting for this run.
        reset : start from zero state (default) or from the final state of the
            previous run (``self.state``, same batch size).

        Returns
        -------
        ForwardPass
        """
        with threads.owned():
            return self._forward(inputs, lengths, training, steps, schedule, progress, reset)

    def _forward(self, inputs, lengths, training, steps, schedule, progress, reset):
        t_start = time.perf_counter()
        order, delayed = self._schedule()
        if schedule not in ("auto", "dag", "stepwise"):
            raise ValueError(f"schedule must be 'auto', 'dag' or 'stepwise', got {schedule!r}")
        if schedule == "dag" and delayed:
            raise ValueError(f"the network has a cycle between populations (projections "
                             f"{sorted(delayed)} close it); use schedule='stepwise' or 'auto'")
        stepwise = schedule == "stepwise" or bool(delayed)
        values, T, B, lengths = self._check_inputs(inputs, lengths, steps)
        states = self._initial_states(B, reset)
        n_units = sum(p.size for p in order)
        show = self.progress if progress is None else progress
        show = (T * B * n_units > PROGRESS_MIN_WORK) if show is None else bool(show)
        work = T * B * n_units * n_units  # about the multiply-adds of dense products
        with threads.numba_threads(threads.plan(B, work)):
            runs, pstats, pop_wall = self._run_monitored(order, delayed, stepwise, values, T,
                                                         B, lengths, training, states, show)
        outputs, stats = {}, {}
        for pop in order:
            run = runs[pop.name]
            outputs[pop.name] = run.y
            if getattr(pop, "trace_alpha", None) is not None and run.variables is not None:
                outputs[pop.name + ".trace"] = run.variables()["trace"]
            st = dict(run.stats, wall_s=pop_wall[pop.name])
            st.setdefault("fwd_macs_event", st["fwd_macs"])
            for proj in self._incoming(pop):
                st["fwd_macs"] += pstats[proj.name]["fwd_macs"]
                st["fwd_macs_event"] += pstats[proj.name]["fwd_macs"]
                st["fwd_macs_dense"] += pstats[proj.name]["fwd_macs_dense"]
            stats[pop.name] = st
            self.state[pop.name] = run.state
        return ForwardPass(outputs=outputs, stats=stats, projection_stats=pstats,
                           lengths=lengths, training=bool(training),
                           schedule="stepwise" if stepwise else "dag",
                           wall_s=time.perf_counter() - t_start, _runs=runs)

    def _run_monitored(self, order, delayed, stepwise, values, T, B, lengths, training,
                       states, show):
        """Run the schedule with every monitor started (and ended, even on error)."""
        started = []
        try:
            for name, mon in self.monitors:
                pop = self.populations[name]
                mon.start_run(name, pop.size, B, T, self.dtype, tuple(pop.variables))
                started.append(mon)
            if stepwise:
                return self._run_stepwise(order, delayed, values, T, B, lengths, training,
                                          states, show)
            return self._run_dag(order, values, T, B, lengths, training, states, show)
        finally:
            for mon in started:  # a monitor that refused to start is not closed
                mon.end_run()

    def _check_inputs(self, inputs, lengths, steps):
        if not isinstance(inputs, dict):
            raise TypeError(f"inputs must be a dict input name -> array, got "
                            f"{type(inputs).__name__}")
        input_pops = {n: p for n, p in self.populations.items() if p.is_input}
        for name in inputs:
            if name not in input_pops:
                what = ("is not an input population" if name in self.populations
                        else "is not a population of this network")
                raise KeyError(f"inputs[{name!r}]: {name!r} {what}; the inputs are "
                               f"{sorted(input_pops)}")
        for name, pop in input_pops.items():
            if name not in inputs and not isinstance(pop, pops.PoissonInput):
                raise KeyError(f"missing input {name!r} ({type(pop).__name__}); pass "
                               f"inputs={{{name!r}: ...}}")
        T = None if steps is None else check.size("steps", steps)
        B = None if lengths is None else len(np.atleast_1d(lengths))
        src = {"T": "steps" if T is not None else None, "B": "lengths" if B else None}
        for name, value in inputs.items():
            t, b = input_pops[name]._shape_hint(value)
            for key, got in (("T", t), ("B", b)):
                if got is None:
                    continue
                have = T if key == "T" else B
                if have is not None and have != got:
                    raise ValueError(f"inputs[{name!r}] implies {key} = {got} but "
                                     f"{src[key]} implies {key} = {have}; all inputs must "
                                     f"share (T, B)")
                if key == "T":
                    T = got
                else:
                    B = got
                src[key] = f"inputs[{name!r}]"
        if T is None:
            raise ValueError("cannot tell the number of steps T from the inputs; pass steps=T")
        B = 1 if B is None else B
        if T < 1 or B < 1:
            raise ValueError(f"inputs must have T >= 1 steps and B >= 1 samples, got "
                             f"T = {T}, B = {B}")
        lengths = check.lengths_array(lengths, T, B)
        values = {name: pop._check(inputs.get(name), T, B, self.dtype)
                  for name, pop in input_pops.items()}
        return values, T, B, lengths

    def _initial_states(self, B, reset):
        states = {}
        for name, pop in self.populations.items():
            st = pop._initial_state(B, self.dtype)
            if not reset and name in self.state:
                old = self.state[name]
                for k in st:
                    if k in old and old[k].shape == st[k].shape:
                        st[k] = np.ascontiguousarray(old[k], self.dtype)
                    elif k in old:
                        raise ValueError(f"reset=False: the stored state of {name!r} has "
                                         f"batch {old[k].shape[0]}, this run has {B}")
            states[name] = st
        return states

    def _record(self, pop, t0, data):
        for name, mon in self.monitors:
            if name == pop.name:
                mon.record(t0, data)

    def _has_monitor(self, pop):
        return any(name == pop.name for name, _ in self.monitors)

    def _run_dag(self, order, values, T, B, lengths, training, states, show):
        from tqdm.auto import tqdm

        runs, pstats, wall = {}, {}, {}
        for pop in tqdm(order, desc="evsim run", disable=not show, leave=False):
            t0 = time.perf_counter()
            rng = self._rngs[pop.name]
            if pop.is_input:
                run = pop._forward(None, states[pop.name], training, self.backend, lengths,
                                   rng, value=values[pop.name])
            else:
                drive = np.zeros((T, B, pop.in_size), self.dtype)
                for proj in self._incoming(pop):
                    pstats[proj.name] = proj._forward(runs[proj.source.name], drive, lengths)
                run = pop._forward(drive, states[pop.name], training, self.backend, lengths,
                                   rng)
            wall[pop.name] = time.perf_counter() - t0
            runs[pop.name] = run
            if self._has_monitor(pop):
                data = dict(run.variables())
                if run.events is not None:
                    data["events"] = run.events
                self._record(pop, 0, data)
        return runs, pstats, wall

    def _run_stepwise(self, order, delayed, values, T, B, lengths, training, states, show):
        from tqdm.auto import tqdm

        runs, wall, ys, step_stats = {}, {}, {}, {}
        pstats = {name: dict(fwd_macs=0, fwd_macs_dense=0, wall_s=0.0)
                  for name in self.projections}
        for pop in order:
            wall[pop.name] = 0.0
            if pop.is_input:
                t0 = time.perf_counter()
                runs[pop.name] = pop._forward(None, states[pop.name], training, self.backend,
                                              lengths, self._rngs[pop.name],
                                              value=values[pop.name])
                ys[pop.name] = runs[pop.name].y
                wall[pop.name] = time.perf_counter() - t0
            else:
                ys[pop.name] = np.zeros((T, B, pop.size), self.dtype)
                step_stats[pop.name] = dict(events=0, fwd_macs=0, fwd_macs_dense=0)
        for t in tqdm(range(T), desc="evsim run (step-wise)", disable=not show, leave=False):
            alive = t < lengths
            for pop in order:
                if pop.is_input:
                    if self._has_monitor(pop):
                        self._record(pop, t, {k: v[t:t + 1] for k, v in
                                              runs[pop.name].variables().items()})
                    continue
                t0 = time.perf_counter()
                drive = np.zeros((1, B, pop.in_size), self.dtype)
                for proj in self._incoming(pop):
                    ts = t - 1 if proj.name in delayed else t
                    if ts < 0:
                        continue
                    src = pops.PopRun(y=ys[proj.source.name][ts:ts + 1])
                    ok = (ts < lengths).astype(np.int64)
                    st = proj._forward(src, drive, ok)
                    for k in st:
                        pstats[proj.name][k] += st[k]
                y, states[pop.name], var, st = pop._step(drive[0], states[pop.name], alive,
                                                         training, self.backend,
                                                         self._rngs[pop.name])
                ys[pop.name][t] = y
                for k in step_stats[pop.name]:
                    step_stats[pop.name][k] += st[k]
                wall[pop.name] += time.perf_counter() - t0
                if self._has_monitor(pop):
                    self._record(pop, t, {k: v[None] for k, v in var.items()})
        for pop in order:
            if pop.is_input:
                continue
            st = step_stats[pop.name]
            st["activity"] = st["events"] / max(int(lengths.sum()) * pop.size, 1)
            runs[pop.name] = pops.PopRun(y=ys[pop.name], state=states[pop.name], stats=st)
        return runs, pstats, wall

    # ------------------------------------------------------------------
    # Back-propagation through time

    def backward(self, fp, grads):
        """BPTT through a ``training=True`` forward pass.

        Parameters
        ----------
        fp : ForwardPass from :meth:`forward` (training=True, DAG schedule).
        grads : dict population name -> dL/d outputs[name] (T, B, N); for an
            EGRU with a trace, ``name + ".trace"`` -> dL/d trace.

        Returns
        -------
        dict with the keys of :meth:`params`: true gradients (no clipping).
        Adds the backward counters to ``fp.stats`` and ``fp.projection_stats``.
        """
        if not isinstance(fp, ForwardPass):
            raise TypeError(f"backward() takes the ForwardPass of net.forward, got "
                            f"{type(fp).__name__}")
        if not fp.training:
            raise ValueError("this forward pass ran with training=False (net.run); use "
                             "net.forward(inputs, training=True) to back-propagate")
        if fp.schedule != "dag":
            raise NotImplementedError("back-propagation through the step-wise schedule "
                                      "(a cycle between populations) is not supported; "
                                      "train networks whose populations form a DAG")
        if fp._backward_done:
            raise ValueError("backward() was already called on this forward pass")
        B = len(fp.lengths)
        T = int(np.max(fp.lengths))
        n_units = sum(self.populations[n].size for n in fp._runs)
        with threads.owned(), threads.numba_threads(threads.plan(B, T * B * n_units ** 2)):
            return self._backward(fp, grads)

    def _backward(self, fp, grads):
        order = [self.populations[n] for n in fp._runs]
        dys, extra = {}, {}
        for key, g in grads.items():
            base, _, sub = key.partition(".")
            if base not in fp.outputs or (sub and key not in fp.outputs):
                raise KeyError(f"grads[{key!r}]: no such output; outputs are "
                               f"{sorted(fp.outputs)}")
            want = fp.outputs[key].shape
            g = np.asarray(g)
            if not np.issubdtype(g.dtype, np.floating):
                raise TypeError(f"grads[{key!r}] must be a float array, got {g.dtype}")
            g = check.float_array(f"grads[{key!r}]", np.ascontiguousarray(g, self.dtype),
                                  want)
            if sub:
                extra.setdefault(base, {})[sub] = g
            else:
                dys[base] = g.copy()
        out = {k: np.zeros_like(v) for k, v in self.params().items()}
        lengths = fp.lengths
        for pop in reversed(order):
            t0 = time.perf_counter()
            run = fp._runs[pop.name]
            dy = dys.get(pop.name)
            if dy is None:
                dy = np.zeros_like(run.y)
            ddrive, pgrads, st = pop._backward(run, dy, extra.get(pop.name, {}))
            for k, g in pgrads.items():
                out[f"{pop.name}.{k}"] = g
            bst = dict(st)
            bst.setdefault("bwd_macs_event", bst["bwd_macs"])
            for proj in self._incoming(pop):
                src = proj.source
                need = (not src.is_input) or bool(src.params)
                mask = None if src.is_input else src._backward_mask(fp._runs[src.name])
                dW, dsrc, pst = proj._backward(fp._runs[src.name], ddrive, lengths, need, mask)
                out[f"{proj.name}.W"] = dW
                fp.projection_stats[proj.name].update(pst)
                bst["bwd_macs"] += pst["bwd_macs"]
                bst["bwd_macs_event"] += pst.get("bwd_macs_event", pst["bwd_macs"])
                bst["bwd_macs_dense"] += pst["bwd_macs_dense"]
                if dsrc is not None:
                    dys[src.name] = dsrc if src.name not in dys else dys[src.name] + dsrc
            bst["bwd_wall_s"] = time.perf_counter() - t0
            fp.stats[pop.name].update(bst)
            for name, mon in self.monitors:
                if name == pop.name and callable(getattr(mon, "record_backward", None)):
                    mon.record_backward(fp.stats[pop.name])
        fp._backward_done = True
        return out

    # ------------------------------------------------------------------
    # Save and load

    def structure(self):
        """JSON-able description of the network (classes and constructor arguments)."""
        return {
            "dtype": self.dtype.name, "backend": self.backend, "seed": self.seed,
            "dt": self.dt,
            "populations": [{"class": type(p).__name__, "kwargs": p.config()}
                            for p in self.populations.values()],
            "projections": [p.config() for p in self.projections.values()],
        }

    def save(self, path):
        """Write structure, parameters, last state and random streams to one
        HDF5 file (atomic)."""
        with evio.atomic_h5(path, "network", seed=self.seed, dt=self.dt,
                            structure=json.dumps(self.structure())) as f:
            evio.save_arrays(f.create_group("params"), self.params())
            sparse = {}
            for proj in self.projections.values():
                if proj.kind == "sparse":
                    sparse[f"{proj.name}.indptr"] = proj.indptr
                    sparse[f"{proj.name}.indices"] = proj.indices
            evio.save_arrays(f.create_group("sparse"), sparse)
            evio.save_arrays(f.create_group("rng"), self.rng_state())
            evio.save_arrays(f.create_group("state"), {
                f"{pop}.{k}": v for pop, st in self.state.items() for k, v in st.items()})

    @classmethod
    def load(cls, path):
        """Rebuild a network saved with :meth:`save`."""
        with evio.open_checked(path, "network") as f:
            try:
                struct = json.loads(f.attrs["structure"])
                params = evio.load_arrays(f["params"])
                sparse = evio.load_arrays(f["sparse"])
                rng = evio.load_arrays(f["rng"])
                state = evio.load_arrays(f["state"])
            except (KeyError, ValueError, TypeError, OSError) as err:
                raise evio.FileFormatError(f"{path}: corrupt evsim network file ({err!r}); "
                                           f"save the network again") from None
        try:
            net = cls(seed=struct["seed"], dtype=struct["dtype"], backend=struct["backend"],
                      dt=struct["dt"])
            for spec in struct["populations"]:
                if spec["class"] not in POPULATION_CLASSES:
                    raise ValueError(f"unknown population class {spec['class']!r}")
                net.add(POPULATION_CLASSES[spec["class"]](**spec["kwargs"]))
            for spec in struct["projections"]:
                name = f"{spec['source']}->{spec['target']}"
                W = params[f"{name}.W"]
                if spec["kind"] == "sparse":
                    src = net.populations[spec["source"]]
                    shape = (src.size, net.populations[spec["target"]].in_size)
                    W = sp.csr_matrix((W, sparse[f"{name}.indices"], sparse[f"{name}.indptr"]),
                                      shape=shape)
                net.connect(spec["source"], spec["target"], kind=spec["kind"], p=spec["p"],
                            init=spec["init"], scale=spec["scale"], weight=W, seed=spec["seed"])
            live = net.params()
            if set(live) != set(params):
                raise ValueError(f"parameters {sorted(set(live) ^ set(params))} do not match "
                                 f"the structure")
            for k, v in live.items():
                if v.shape != params[k].shape:
                    raise ValueError(f"parameter {k!r} has shape {params[k].shape}, the "
                                     f"structure implies {v.shape}")
                v[...] = params[k]
            net.set_rng_state(rng)
            for key, value in state.items():
                pop, _, k = key.rpartition(".")
                net.state.setdefault(pop, {})[k] = np.asarray(value)
        except (KeyError, ValueError, TypeError) as err:
            raise evio.FileFormatError(f"{path}: corrupt or incompatible evsim network file "
                                       f"({err}); save the network again") from None
        return net
