"""The :class:`Network` facade: building (add, connect, attach, monitor) and
parameters. Running, back-propagation, random streams and files are
delegated to the sibling modules (see :mod:`evsim.network`)."""

import numpy as np

from evsim import _validate as check
from evsim import populations as pops
from evsim.network import backprop, files, running, streams
from evsim.network.schedule import incoming, is_cyclic, plan
from evsim.projections import Projection

__all__ = ["Network", "BACKENDS", "MONITOR_KINDS"]

BACKENDS = ("cpu", "dense", "reference", "cuda")
MONITOR_KINDS = {"events": "EventMonitor", "state": "StateMonitor",
                 "activity": "ActivityMonitor"}


class Network:
    """A network of populations and projections.

    Parameters
    ----------
    seed : int. Drives every random stream (initial weights, zoneout,
        DropConnect, Poisson inputs).
    dtype : "float32" (default) or "float64" for all arrays.
    backend : the kernels of every population and projection (see
        :mod:`evsim.functional`): "cpu" (event-driven), "dense" and
        "reference" (the EGRU's dense products or its NumPy oracle; other
        kinds as "cpu") or "cuda".
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
        self._rngs = {}  # population name -> run-time Generator (evsim.network.streams)

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
        population._init_params(streams.init_rng(self.seed, name), self.dtype)
        self._rngs[name] = streams.runtime_rng(self.seed, name)
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
                weight=None, seed=None, rule=None, receptor=None, delay=None, name=None):
        """Connect two populations; return the :class:`Projection`.

        Parameters
        ----------
        source, target : population names (or objects). A spiking population
            may project onto itself (with ``delay >= 1``).
        kind : "dense" (an (N, M) matrix) or "sparse" (CSR; with ``p``, each
            weight present with probability p).
        rule : a connectivity rule from :mod:`evsim.connectivity`
            (``FixedProbability(0.02)``, ``FixedInDegree(80)``, ``OneToOne()``,
            ``AllToAll()``, ``FromList(i, j, weight, delay)``); makes the
            projection sparse with one weight per synapse.
        weight : explicit weights: an (N, M) array (or scipy.sparse for
            kind="sparse"); with a rule, a number (all synapses) or an array
            (nnz,). Default: drawn by ``init`` / ``scale``.
        receptor : the target's receptor fed by this projection (spiking
            targets; default their first receptor), e.g. "exc" or "inh".
        delay : steps from a source's output to the target: an int, or per
            synapse an int array (nnz,) (sparse). Default 0, and 1 onto itself.
        name : projection name (default ``"source->target"``, and
            ``"source->target:receptor"`` for a further receptor of the pair).
        seed : overrides the stream derived from the network seed.

        The weight has shape (source size, target input width): 3H for an EGRU
        or GRU target, the target size otherwise (one receptor's columns).
        """
        src = self._pop(source, "source population")
        tgt = self._pop(target, "target population")
        where = f"connect({src.name!r}, {tgt.name!r})"
        if src is tgt and isinstance(src, pops.GatedRecurrent):
            raise ValueError(f"{where}: EGRU and GRU populations own their recurrent "
                             f"weights (params '{src.name}.R'); they take no projection "
                             f"onto themselves")
        if tgt.is_input:
            raise ValueError(f"connect(..., {tgt.name!r}): {type(tgt).__name__} is an input "
                             f"population and takes no projection; connect it as a source")
        if name is None:
            name = f"{src.name}->{tgt.name}"
            first = next(iter(getattr(tgt, "receptors", {None: None})))
            if receptor is not None and receptor != first:
                name += f":{receptor}"
        elif not isinstance(name, str) or not name or "/" in name or "." in name:
            raise ValueError(f"{where}: name must be a non-empty string without '/' or '.', "
                             f"got {name!r}")
        if name in self.projections:
            raise ValueError(f"projection {name!r} already exists; give this one another "
                             f"receptor or a name (connect(..., name='...'))")
        proj = Projection(src, tgt, kind=kind, p=p, init=init, scale=scale, seed=seed,
                          rule=rule, receptor=receptor, delay=delay, name=name, network=self)
        if weight is not None and rule is None and getattr(weight, "shape", None) != proj.shape:
            raise ValueError(f"{where}: weight must have shape (source size, target input "
                             f"width) = {proj.shape}, got "
                             f"{getattr(weight, 'shape', type(weight).__name__)}")
        rng = (np.random.default_rng(seed) if seed is not None
               else streams.init_rng(self.seed, name))
        proj._init_weights(rng, self.dtype, weight)
        self.projections[name] = proj
        return proj

    def delays(self):
        """Live delays (steps) of every projection: name -> int or int64 array
        (nnz,); assign through ``net.projections[name].delay = ...``."""
        return {name: proj.delay for name, proj in self.projections.items()}

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
        "activity" (ActivityMonitor). Options go to the monitor's constructor.
        An event monitor's step duration ``dt`` defaults to the network's, in
        seconds (``net.dt / 1000``), so that its ``rates()`` are in Hz."""
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

        if kind == "events":
            options.setdefault("dt", self.dt / 1000.0)
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
        return streams.rng_state(self._rngs)

    def set_rng_state(self, state):
        """Restore the streams from :meth:`rng_state`."""
        streams.set_rng_state(self._rngs, state)

    # ------------------------------------------------------------------
    # Schedule

    def _incoming(self, pop):
        return incoming(self, pop)

    def _schedule(self):
        """(order, delayed projection names); see :func:`evsim.network.schedule.plan`."""
        return plan(self)

    @property
    def cyclic(self):
        """True when projections form a cycle between populations."""
        return is_cyclic(self)

    # ------------------------------------------------------------------
    # Running and back-propagation

    def run(self, inputs=None, lengths=None, steps=None, schedule="auto", progress=None,
            reset=True, record_outputs=True):
        """Evaluation run (``training=False``) over a batch; see :meth:`forward`."""
        return self.forward(inputs, lengths=lengths, training=False, steps=steps,
                            schedule=schedule, progress=progress, reset=reset,
                            record_outputs=record_outputs)

    def forward(self, inputs=None, lengths=None, training=True, steps=None, schedule="auto",
                progress=None, reset=True, record_outputs=True):
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
        schedule : "auto", "dag" (each population's whole sequence at once;
            error for a cyclic network), "stepwise" (a Python loop over steps:
            any network) or "compiled" (spiking networks, not training: the
            whole time loop in one compiled kernel). "auto" takes "compiled"
            where it can, else "dag" where it can, else "stepwise".
        progress : overrides the network's progress setting for this run.
        reset : start from the initial state (default) or from the final state
            of the previous run (``self.state``, same batch size).
        record_outputs : keep every population's outputs (T, B, N) in
            ``outputs``; False for long runs that record through monitors (the
            compiled loop then holds one chunk of steps at a time).

        Returns
        -------
        ForwardPass
        """
        return running.forward(self, inputs or {}, lengths, training, steps, schedule,
                               progress, reset, record_outputs)

    def backward(self, fp, grads):
        """BPTT through a ``training=True`` forward pass.

        Parameters
        ----------
        fp : ForwardPass from :meth:`forward` of this network (training=True),
            with the same parameter and structure arrays: a pass of another
            network, or one made before a parameter array was replaced, is
            refused with a ValueError. Values updated in place between forward
            and backward are not detected (update after backward, as the
            Trainer does).
        grads : dict population name -> dL/d outputs[name] (T, B, N); for an
            EGRU with a trace, ``name + ".trace"`` -> dL/d trace.

        Returns
        -------
        NetworkGradients
            A dict with the keys of :meth:`params`: true gradients (no
            clipping); the backward's counters are in its ``stats`` (per
            population) and ``projection_stats``. ``fp`` is not changed.
        """
        return backprop.backward(self, fp, grads)

    # ------------------------------------------------------------------
    # Save and load

    def structure(self):
        """JSON-able description of the network (classes and constructor arguments)."""
        return files.structure(self)

    def save(self, path):
        """Write structure, parameters, last state and random streams to one
        HDF5 file (atomic)."""
        files.save(self, path)

    @classmethod
    def load(cls, path):
        """Rebuild a network saved with :meth:`save`."""
        return files.load(cls, path)
