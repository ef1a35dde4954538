"""The population protocol: what a population model provides, and what the
network guarantees it. Follow it to add a model of your own.

A population is a subclass of :class:`evsim.Population` that the network
drives through the methods below. Their names start with an underscore
because the network calls them, not user code; they are the whole contract
(nothing else of a population is called by the network). The built-in kinds
(:class:`~evsim.EGRU`, :class:`~evsim.GRU`, :class:`~evsim.LIF`,
:class:`~evsim.Readout`) follow it, and a test
(``tests/test_protocol.py``) defines a rate unit outside evsim that runs,
trains and saves through it. The computation itself belongs in
:mod:`evsim.functional` (or plain NumPy for a model of your own); a
population only holds its parameters and metadata.

Notation: T steps, B samples, N = ``size`` units, D = ``in_size`` (the width
of the input drive). ``dtype`` is the network's float dtype (float32 or
float64). Arrays are time-major.

Attributes
----------
name, size, params
    Set by :class:`evsim.Population` (``super().__init__(name, size)``).
    ``params`` is a dict name -> array, created by :meth:`_init_params`;
    optimisers update these arrays in place, ``net.params()`` lists them as
    ``"<population>.<name>"``.
in_size (property)
    D, the width of the drive that projections into the population produce
    (default ``size``; an EGRU takes 3H: gate blocks).
variables (tuple of str)
    Names a :meth:`_forward` run can hand to state monitors; ``"y"`` (the
    output) first. Monitors may ask only for these.
emits_events (bool)
    True when the output is sparse (events): projections from it then
    propagate event by event.
is_input (bool)
    False for a population driven by projections (inputs: see below).
threshold_names (tuple of str)
    Parameters the optimiser keeps in ``config.THRESHOLD_RANGE``.
config()
    JSON-able keyword arguments that rebuild the population
    (``type(pop)(**pop.config())``); by default ``name`` and ``size``: add
    your own constructor arguments to ``self._kwargs``.

When a population is added (``net.add``), the network sets ``pop._dtype``
(numpy dtype) and ``pop.dt`` (ms), then calls :meth:`_init_params`.

Methods (``Population`` gives the defaults marked "optional")
-------------------------------------------------------------

``_init_params(rng, dtype)``
    Create ``self.params`` (C-contiguous arrays of ``dtype``). ``rng``: a
    ``numpy.random.Generator`` derived from the network seed and the
    population's name: the same seed gives the same parameters. Optional
    (default: no parameters).

``_initial_state(B, dtype, rng=None) -> dict``
    The state before the first step: name -> array with B rows. ``rng`` is
    the population's run-time stream (for random initial values). With
    ``net.run(..., reset=False)`` the network passes instead the final state
    of the previous run (``net.state[name]``) where its shapes match.
    Optional (default: no state).

``_forward(drive, state, training, backend, lengths, rng) -> PopRun``
    The whole sequence at once (the DAG schedule). The network guarantees:
    ``drive`` (T, B, D) C-contiguous ``dtype``, the sum of the incoming
    projections (zero rows past a sample's length); ``state`` as from
    :meth:`_initial_state`; ``training`` (bool): save what the backward needs;
    ``backend``: the network's (pass it to :mod:`evsim.functional`);
    ``lengths`` (B,) int64 in [1, T]; ``rng``: the run-time stream. Return a
    :class:`evsim.populations.PopRun` with

    * ``y`` (T, B, N) ``dtype``, C-contiguous, zero past each sample's length;
    * ``state``: the state after each sample's last step (same keys and
      shapes as the initial state);
    * ``saved``: anything :meth:`_backward` needs (with ``training``);
    * ``stats``: at least ``events`` (non-zero outputs), ``activity``
      (events per valid unit-step), ``fwd_macs`` and ``fwd_macs_dense``
      (multiply-adds done inside the population and the dense equivalent; 0
      when it does none); optional ``fwd_macs_event``;
    * ``variables``: a callable returning ``{name: (T, B, N) array}`` for the
      names in ``variables`` (called only when a monitor records);
    * ``events``: optional event lists ``(ev_idx, ev_cnt)`` of y (see
      :func:`evsim.functional.compact_events`), else computed when needed.

``_backward(run, dy, extra) -> (ddrive, grads, stats)``
    BPTT through a training ``_forward``. ``run``: the PopRun it returned;
    ``dy`` (T, B, N) ``dtype``: dL/dy (zeros if nothing depends on y), the
    population's own copy; ``extra``: gradients of sub-outputs
    (``net.backward(fp, {"name.trace": ...})`` gives ``{"trace": ...}``).
    Return ``ddrive`` (T, B, D): dL/d drive (zero past the lengths), ``grads``:
    ``{param name: gradient}`` of the shapes of ``params`` (missing ones are
    zero), ``stats``: at least ``bwd_macs`` and ``bwd_macs_dense``; optional
    ``bwd_macs_event`` and ``backward_sparsity``. The network calls it once,
    after every population that the output feeds (reverse run order).

``_backward_mask(run) -> (T, B, N) bool or None``
    Unit-steps whose output gradient can be non-zero (e.g. inside a spike
    surrogate's band); a projection from this population then computes the
    source gradient only there. None: all (default).

``_step(drive_t, state, alive, training, backend, rng) -> (y_t, state, variables, stats)``
    One step (the step-wise schedule: networks with cycles). ``drive_t``
    (B, D): the drive of this step (every projection into the population,
    delays applied); ``alive`` (B,) bool: samples still within their
    length. Return ``y_t`` (B, N) ``dtype`` (zero where not alive), the new
    state (samples not alive keep theirs), ``{name: (B, N)}`` for the
    monitors' variables (and any ``"_"``-prefixed arrays the step backward
    needs: the network stacks them over time while training), and ``stats``
    with ``events``, ``fwd_macs``, ``fwd_macs_dense`` of the step (summed by
    the network). Optional: without it the population runs in DAG networks only.

``_saved_from_steps(y, extras, lengths) -> saved``
    After a training step-wise run: what :meth:`_step_backward` needs, from
    the outputs ``y`` (T, B, N) and ``extras`` ``{"_name": (T, B, ...)}`` that
    the steps returned. Default: ``lengths``.

``_step_backward(run, t, dy_t, carry) -> (ddrive_t, grads, carry)``
    Step t of BPTT through a step-wise run (t = T - 1 down to 0). ``run.saved``
    is from :meth:`_saved_from_steps`; ``dy_t`` (B, N): dL/dy_t (complete:
    the network visits every consumer first); ``carry``: what step t + 1
    returned (None at t = T - 1). Return dL/d drive_t (B, D), the
    parameters' gradients of this step (summed by the network) and the
    carry for step t - 1 (e.g. dL/d state). Optional: without it the network
    refuses to train the population inside a cycle, before any work.

Inputs (``is_input = True``, fed by ``net.run({name: value})``) implement
instead ``_shape_hint(value) -> (T or None, B or None)``,
``_check(value, T, B, dtype) -> checked value`` and
``_forward(None, state, training, backend, lengths, rng, value=checked)``; their
``_backward`` returns ``(None, grads, stats)``. See
:class:`evsim.DenseInput` and :class:`evsim.Embedding`.

Saving and loading
------------------
``net.save`` writes each population's class name and :meth:`config`;
``Network.load`` rebuilds the class from that name. Built-in classes are
known; a class of your own must be registered first, in the program that
saves and in the one that loads::

    @evsim.register_population
    class RateUnit(evsim.Population):
        ...

Saving or loading a network with an unregistered class raises a clear
``ValueError`` (before anything is written or built).
"""

__all__ = ["register_population", "population_class", "population_class_name",
           "registered_populations"]

_REGISTRY = {}


def register_population(cls, name=None):
    """Make a population class known to :meth:`evsim.Network.save` and
    :meth:`~evsim.Network.load` under ``name`` (default: the class name).
    Returns the class (usable as a decorator). Registering the same class
    again is allowed; another class under a taken name is a ValueError."""
    from evsim.populations import Population

    if not (isinstance(cls, type) and issubclass(cls, Population)):
        raise TypeError(f"register_population takes a subclass of evsim.Population, got "
                        f"{cls!r}")
    name = cls.__name__ if name is None else name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a population class name must be an identifier, got {name!r}")
    old = _REGISTRY.get(name)
    if old is not None and old is not cls:
        raise ValueError(f"population class name {name!r} is taken by "
                         f"{old.__module__}.{old.__qualname__}; register "
                         f"{cls.__module__}.{cls.__qualname__} under another name "
                         f"(register_population(cls, name=...))")
    _REGISTRY[name] = cls
    return cls


def registered_populations():
    """Name -> class of every registered population class (a copy)."""
    _builtins()
    return dict(_REGISTRY)


def population_class(name):
    """The registered class called ``name``, or a ValueError saying how to register it."""
    _builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown population class {name!r}: a network that holds it can be "
                         f"loaded only after evsim.register_population({name}) (known: "
                         f"{sorted(_REGISTRY)})")
    return _REGISTRY[name]


def population_class_name(pop):
    """The name ``pop``'s class is registered under, or a ValueError."""
    _builtins()
    cls = type(pop)
    for name, known in _REGISTRY.items():
        if known is cls:
            return name
    raise ValueError(f"population {pop.name!r} is a {cls.__module__}.{cls.__qualname__}, "
                     f"which evsim cannot save: register the class with "
                     f"evsim.register_population({cls.__name__}) to save and load networks "
                     f"that hold it")


def _builtins():
    import evsim.populations  # noqa: F401 - registers the built-in classes
