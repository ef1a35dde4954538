"""Exchange networks with the Neuromorphic Intermediate Representation (NIR).

``to_nir(network)`` returns a :class:`nir.NIRGraph`; ``from_nir(graph_or_path,
dt)`` builds a :class:`evsim.Network` (float64 by default) from a graph or a
NIR file. Needs the optional package ``nir`` (``pip install evsim[nir]``).

Time
----
NIR is written in continuous time; evsim steps by ``dt`` (ms, the network's).
The value ``x_n`` that an edge carries in step n is read as an impulse of mass
``x_n dt`` at the start of the step, ``S(t) = sum_n x_n dt delta(t - n dt)``:
over a step it delivers what a signal held at ``x_n`` would (the Euler reading
of snnTorch's and Norse's exports, to first order in dt), and the linear
dynamics in between are integrated exactly. States start at zero (``v = 0``,
``I = 0``) unless a node's metadata holds ``v_init`` (written by ``to_nir``).

Nodes (a = exp(-dt / tau); the factor g multiplies the weights into a unit)
---------------------------------------------------------------------------
* ``LIF(tau, r, v_leak, v_threshold, v_reset)`` <-> :class:`evsim.LIF` with
  ``tau_mem = tau``, ``v_rest = v_leak``, ``v_th``, ``v_reset`` and one step
  current receptor ``Current(0)``; ``g = r dt a / (tau (1 - a))`` (the impulse
  ``r x dt / tau`` moves v at the step's start and decays by a within it; the
  step current adds ``(1 - a) w``).
* ``CubaLIF(tau_syn, tau_mem, r, v_leak, v_threshold, v_reset, w_in)`` <->
  :class:`evsim.LIF` with one exponential receptor ``Current(tau_syn)``
  (evsim's current is ``r I``); ``g = r w_in dt / tau_syn`` (the jump of I).
* ``LI(tau, r, v_leak)`` <-> :class:`evsim.Readout` with ``leak = a``,
  ``b = v_leak`` (plus any bias reaching it) and ``g`` as for LIF.
* ``Threshold(threshold)`` -> a LIF whose membrane forgets each step
  (``tau_mem = dt / 1000``, so a = 0 and the step current adds ``w x``): it fires
  where the input exceeds the threshold; exported back as ``Threshold``.
* ``Affine(W, b)``, ``Linear(W)``, ``Scale(s)`` and ``Delay(d)`` between two of
  the above compose into one projection ``W_evsim = (chain product)^T g``;
  ``Delay`` gives the projection's delay ``d / dt`` steps (a whole number, the
  same for every unit). A bias b is a constant signal: into a Readout it adds
  ``g b`` to ``b``; into a spiking population it comes from one always-on unit
  (a LIF ``"nir_bias"`` that fires every step) through a projection of weights
  ``g b``.
* ``Input`` <-> :class:`evsim.DenseInput` (``SpikeInput`` when the node's
  metadata says so); ``Output`` fed by a population marks it; fed through
  Affine/Linear nodes, it becomes a :class:`evsim.Readout` without leak.
* Cycles: NIR has no steps; as snnTorch's and Norse's recurrent cells do, a
  projection that closes a cycle (found depth-first from the inputs) with no
  ``Delay`` node on its path reaches its target one step later.

``to_nir`` writes each projection as a ``Linear`` node (weights unchanged:
``r`` and ``w_in`` are chosen so that g = 1; factors within 1e-14 of 1 are
taken as 1 on import, so evsim -> NIR -> evsim keeps weights bit for bit),
followed by a ``Delay`` node when its delay is not zero. Sparse projections go
out as dense ``Linear`` nodes (with a warning).

Not expressible, refused with a ValueError naming the population: EGRU, GRU,
Embedding and Poisson inputs, conductance receptors, several receptors with
different time constants, refractory periods, random initial potentials and
per-synapse delays. ``IF`` (no leak: evsim's LIF needs a finite ``tau_mem``),
``CubaLI`` (a Readout has one time constant), ``I``, convolutions, pooling,
``Flatten`` and nested graphs are refused on import with a clear error.
Parameters that evsim keeps per population (``tau``, ``v_leak``, thresholds)
must be equal across a node's units; ``r``, ``w_in`` and biases may vary.
"""

import math
import warnings
from pathlib import Path

import numpy as np

from evsim import populations as pops
from evsim.network import Network
from evsim.receptors import Conductance, Current

__all__ = ["to_nir", "from_nir"]

_SNAP = 1e-14  # weight factors this close to 1 are 1 (exact round trips)
_FORGET = 1e-3  # tau_mem = _FORGET * dt: exp(-1000) == 0, a membrane without memory
_NEURONS = ("LIF", "CubaLIF", "LI", "Threshold")
_LINEAR = ("Affine", "Linear", "Scale", "Delay")
_REFUSED = {
    "IF": "NIR's IF has no leak; evsim's LIF needs a finite tau_mem",
    "I": "NIR's integrator I has no evsim population (no leak, no spikes)",
    "CubaLI": "evsim's Readout integrates with one time constant, CubaLI needs two",
    "NIRGraph": "nested NIR graphs are not supported; flatten the graph first",
}


def _nir():
    try:
        import nir
    except ImportError:
        raise ImportError("evsim.nir needs the package 'nir': pip install nir "
                          "(or pip install evsim[nir])") from None
    return nir


# --------------------------------------------------------------------------
# evsim -> NIR


def to_nir(network):
    """Export a network of LIF populations, inputs and readouts as a
    :class:`nir.NIRGraph` (the mapping: this module's docstring)."""
    nir = _nir()
    if not isinstance(network, Network):
        raise TypeError(f"to_nir takes an evsim.Network, got {type(network).__name__}")
    dt = network.dt
    nodes, edges, gains = {}, [], {}
    has_out = {p.source.name for p in network.projections.values()}
    for pop in network.populations.values():
        node, gain = _export_population(nir, pop, dt)
        nodes[pop.name] = node
        gains[pop.name] = gain
        if isinstance(pop, pops.Readout) and pop.leak is None:
            # an Affine into an Output of the readout's name: imported back as it
            nodes[f"{pop.name}.affine"] = nodes.pop(pop.name)
            nodes[pop.name] = nir.Output(output_type=np.array([pop.size]))
            edges.append((f"{pop.name}.affine", pop.name))
        elif isinstance(pop, pops.Readout) or (pop.name not in has_out and not pop.is_input):
            out = f"{pop.name}_output"
            nodes[out] = nir.Output(output_type=np.array([pop.size]))
            edges.append((pop.name, out))
    for proj in network.projections.values():
        name = proj.name
        if not np.isscalar(proj.delay):
            raise ValueError(f"projection {name!r}: per-synapse delays cannot be written to "
                             f"NIR (a Delay node delays a signal, not a synapse)")
        W = proj.weight
        if proj.kind == "sparse":
            warnings.warn(f"projection {name!r} is sparse ({proj.nnz} synapses): NIR has no "
                          f"sparse weights, it is written as a dense Linear node",
                          stacklevel=2)
            W = W.toarray()
        weight = np.array(W, np.float64).T / gains[proj.target.name]
        nodes[name] = nir.Linear(weight=weight)
        edges.append((proj.source.name, name))
        tgt = proj.target.name
        if isinstance(proj.target, pops.Readout) and proj.target.leak is None:
            tgt = f"{tgt}.affine"
        last = name
        if proj.delay or _reaches(network, proj.target.name, proj.source.name):
            # on a cycle even a delay of 0 is written, so that the import does
            # not add the step a cycle without Delay node gets
            nodes[f"{name}.delay"] = nir.Delay(
                delay=np.full(weight.shape[0], proj.delay * dt))
            edges.append((name, f"{name}.delay"))
            last = f"{name}.delay"
        edges.append((last, tgt))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": float(dt)},
                        type_check=False)


def _reaches(network, start, goal):
    """True when projections lead from population ``start`` to ``goal``."""
    todo, seen = [start], set()
    while todo:
        n = todo.pop()
        if n == goal:
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(p.target.name for p in network.projections.values()
                        if p.source.name == n)
    return False


def _export_population(nir, pop, dt):
    """(NIR node, weight factor g of its input) of one population."""
    N = pop.size
    full = np.full
    if isinstance(pop, (pops.DenseInput, pops.SpikeInput)):
        meta = {"evsim_population": "SpikeInput"} if isinstance(pop, pops.SpikeInput) else {}
        return nir.Input(input_type=np.array([N]), metadata=meta), 1.0
    if isinstance(pop, pops.Readout):
        b = np.array(pop.params["b"], np.float64)
        if pop.leak is None:
            return nir.Affine(weight=np.eye(N), bias=b), 1.0
        a = pop.leak
        tau = -dt / math.log(a)
        r = tau * (1 - a) / (a * dt)
        return nir.LI(tau=full(N, tau), r=full(N, r), v_leak=b), 1.0
    if not isinstance(pop, pops.LIF):
        raise ValueError(f"population {pop.name!r}: NIR cannot express {type(pop).__name__} "
                         f"populations (only LIF, Readout, DenseInput and SpikeInput)")
    where = f"LIF population {pop.name!r}"
    recs = list(pop.receptors.values())
    if any(isinstance(r, Conductance) for r in recs):
        raise ValueError(f"{where}: NIR has no conductance-based synapses (receptors "
                         f"{pop.receptors})")
    if len({r.tau for r in recs}) > 1:
        raise ValueError(f"{where}: NIR neurons have one synaptic time constant, this "
                         f"population has receptors {pop.receptors}")
    if pop.refractory:
        raise ValueError(f"{where}: NIR has no refractory period (refractory = "
                         f"{pop.refractory} ms)")
    v0 = pop.v_rest if pop.v_init is None else pop.v_init
    if isinstance(v0, tuple):
        raise ValueError(f"{where}: NIR has no random initial potential (v_init = {v0!r})")
    meta = {"v_init": np.broadcast_to(np.asarray(v0, np.float64), (N,)).copy()}
    tau, tau_syn = pop.tau_mem, recs[0].tau
    a = math.exp(-dt / tau)
    th, reset = full(N, pop.v_th), full(N, pop.v_reset)
    if tau_syn > 0:
        return nir.CubaLIF(tau_syn=full(N, tau_syn), tau_mem=full(N, tau), r=np.ones(N),
                           v_leak=full(N, pop.v_rest), v_threshold=th, v_reset=reset,
                           w_in=full(N, tau_syn / dt), metadata=meta), 1.0
    if a == 0.0:  # a membrane without memory: a threshold on its input
        if pop.v_rest != 0:
            raise ValueError(f"{where}: tau_mem ({tau} ms) is too short for NIR's LIF at "
                             f"dt = {dt} ms and v_rest = {pop.v_rest} is not 0, so it is "
                             f"no Threshold either")
        return nir.Threshold(threshold=th), 1.0
    r = tau * (1 - a) / (a * dt)
    return nir.LIF(tau=full(N, tau), r=full(N, r), v_leak=full(N, pop.v_rest),
                   v_threshold=th, v_reset=reset, metadata=meta), 1.0


# --------------------------------------------------------------------------
# NIR -> evsim


def from_nir(graph, dt, dtype="float64", seed=0):
    """Build an :class:`evsim.Network` from a :class:`nir.NIRGraph` or the path
    of a NIR file, stepping by ``dt`` (the mapping: this module's docstring).
    Population names are the node names (``'/'``, ``'.'`` and ``'>'`` replaced
    by ``'_'``)."""
    nir = _nir()
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise TypeError(f"from_nir: dt must be a number (ms), got {dt!r}") from None
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"from_nir: dt must be a finite number > 0 (ms), got {dt}")
    if isinstance(graph, (str, Path)):
        graph = _read(nir, graph)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir takes a nir.NIRGraph or the path of a NIR file, got "
                        f"{type(graph).__name__}")
    return _Importer(nir, graph, dt).build(dtype, seed)


def _read(nir, path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NIR file at {str(path)!r}")
    try:
        return nir.read(path, type_check=False)
    except Exception as err:  # h5py's OSError, a KeyError for a missing group, ...
        raise ValueError(f"{str(path)!r} is not a NIR file (nir.read failed: "
                         f"{type(err).__name__}: {err})") from None


def _uniform(node_name, field, value):
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size == 0 or not np.all(arr == arr[0]):
        raise ValueError(f"NIR node {node_name!r}: evsim keeps {field} per population, but "
                         f"its units have different values ({arr.min()} to {arr.max()})")
    return float(arr[0])


def _snap(g):
    g = np.asarray(g, np.float64)
    return np.where(np.abs(g - 1.0) <= _SNAP, 1.0, g)


def _pop_name(name):
    out = "".join("_" if c in "/.>" else c for c in str(name))
    return out or "_"


class _Importer:
    def __init__(self, nir, graph, dt):
        self.nir, self.g, self.dt = nir, graph, dt
        self.nodes = dict(graph.nodes)
        for name, node in self.nodes.items():
            kind = type(node).__name__
            if kind in _REFUSED:
                raise ValueError(f"NIR node {name!r} ({kind}): {_REFUSED[kind]}")
            if kind not in _NEURONS + _LINEAR + ("Input", "Output"):
                raise ValueError(f"NIR node {name!r}: evsim does not know NIR {kind} nodes "
                                 f"(it imports Input, Output, Affine, Linear, Scale, Delay, "
                                 f"LIF, CubaLIF, LI and Threshold)")
        self.succ = {n: [] for n in self.nodes}
        for a, b in graph.edges:
            for end in (a, b):
                if end not in self.nodes:
                    raise ValueError(f"NIR edge ({a!r}, {b!r}) names no node {end!r}")
            self.succ[a].append(b)

    # -- node kinds ---------------------------------------------------------
    def _kind(self, name):
        return type(self.nodes[name]).__name__

    def _is_pop(self, name):
        return self._kind(name) in _NEURONS + ("Input",)

    def _size(self, name):
        node = self.nodes[name]
        kind = self._kind(name)
        if kind == "Input":
            shape = np.asarray(node.input_type["input"]).reshape(-1)
        elif kind in ("LIF", "LI"):
            shape = np.shape(node.tau)
        elif kind == "CubaLIF":
            shape = np.shape(node.tau_mem)
        elif kind == "Threshold":
            shape = np.shape(node.threshold)
        else:
            return None
        if len(shape) != 1:
            raise ValueError(f"NIR node {name!r} ({kind}): evsim populations are 1-d, got "
                             f"shape {tuple(int(s) for s in shape)}")
        return int(shape[0])

    def _gain(self, name):
        """(evsim population, per-unit weight factor g, parameter dict)."""
        node, dt, kind = self.nodes[name], self.dt, self._kind(name)
        pname, N = _pop_name(name), self._size(name)
        meta = getattr(node, "metadata", None) or {}
        if kind == "Input":
            cls = pops.SpikeInput if meta.get("evsim_population") in (
                "SpikeInput", b"SpikeInput") else pops.DenseInput
            return cls(pname, N), np.ones(N), {}
        if kind == "Threshold":
            th = _uniform(name, "threshold", node.threshold)
            return pops.LIF(pname, N, tau_mem=_FORGET * dt, v_th=th, v_reset=th - 1.0,
                            v_rest=0.0, receptors={"syn": Current(0.0)}), np.ones(N), {}
        v_init = meta.get("v_init")
        v_init = 0.0 if v_init is None else np.asarray(v_init, np.float64)
        if kind == "LI":
            tau = _uniform(name, "tau", node.tau)
            a = math.exp(-dt / tau)
            g = np.asarray(node.r, np.float64) * (dt * a / (tau * (1 - a)))
            pop = pops.Readout(pname, N, leak=a)
            return pop, _snap(g), {"b": np.asarray(node.v_leak, np.float64)}
        th = _uniform(name, "v_threshold", node.v_threshold)
        reset = _uniform(name, "v_reset", node.v_reset)
        leak = _uniform(name, "v_leak", node.v_leak)
        if kind == "LIF":
            tau = _uniform(name, "tau", node.tau)
            a = math.exp(-dt / tau)
            g = np.asarray(node.r, np.float64) * (dt * a / (tau * (1 - a)))
            rec = Current(0.0)
        else:
            tau = _uniform(name, "tau_mem", node.tau_mem)
            tau_syn = _uniform(name, "tau_syn", node.tau_syn)
            g = np.asarray(node.r, np.float64) * np.asarray(node.w_in, np.float64) * (
                dt / tau_syn)
            rec = Current(tau_syn)
        pop = pops.LIF(pname, N, tau_mem=tau, v_th=th, v_reset=reset, v_rest=leak,
                       receptors={"syn": rec}, v_init=v_init)
        return pop, _snap(g), {}

    # -- paths through linear nodes ---------------------------------------
    def _walk(self, start, signal, delay, explicit, seen, out, src):
        """Follow edges from ``start`` carrying ``signal`` (a matrix from the
        source's output, or a bias vector); collect (src, target, matrix,
        delay steps, explicit delay) where a population or Output is reached."""
        for nxt in self.succ[start]:
            kind = self._kind(nxt)
            if self._is_pop(nxt) or kind == "Output":
                if kind == "Input":
                    raise ValueError(f"NIR edge into the Input node {nxt!r}")
                out.append((src, nxt, signal, delay, explicit))
                continue
            if nxt in seen:
                raise ValueError(f"NIR graph: a cycle through linear nodes only "
                                 f"({' -> '.join([*seen, nxt])}) has no neuron to step it")
            node = self.nodes[nxt]
            d, exp = delay, explicit
            try:
                if kind in ("Affine", "Linear"):
                    sig = np.asarray(node.weight, np.float64) @ signal
                elif kind == "Scale":
                    s = np.asarray(node.scale, np.float64)
                    sig = s * signal if signal.ndim == 1 else s[:, None] * signal
                else:
                    steps = _uniform(nxt, "delay", node.delay) / self.dt
                    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or steps < 0:
                        raise ValueError(f"NIR node {nxt!r}: delay {steps * self.dt} is not "
                                         f"a whole number of steps of dt = {self.dt}")
                    sig, d, exp = signal, delay + int(round(steps)), True
            except ValueError as err:
                if "NIR node" in str(err):
                    raise
                raise ValueError(f"NIR node {nxt!r} ({kind}): shapes do not match the "
                                 f"signal reaching it ({err})") from None
            self._walk(nxt, sig, d, exp, seen + [nxt], out, src)

    def _back_edges(self, pairs):
        """Population edges (src, tgt) that close a cycle, depth-first from the inputs."""
        succ = {}
        for s, t in pairs:
            succ.setdefault(s, []).append(t)
        order = sorted(self.nodes, key=lambda n: self._kind(n) != "Input")
        state, back = {}, set()

        def visit(n):
            state[n] = 1
            for m in succ.get(n, []):
                if state.get(m) == 1:
                    back.add((n, m))
                elif m not in state:
                    visit(m)
            state[n] = 2

        for n in order:
            if n not in state:
                visit(n)
        return back

    # -- the network -------------------------------------------------------
    def build(self, dtype, seed):
        contribs, biases = [], []
        for name in self.nodes:
            if self._is_pop(name):
                N = self._size(name)
                self._walk(name, np.eye(N), 0, False, [name], contribs, name)
            elif self._kind(name) == "Affine":
                b = np.asarray(self.nodes[name].bias, np.float64)
                if np.any(b != 0):
                    self._walk(name, b, 0, False, [name], biases, None)
        back = self._back_edges({(s, t) for s, t, *_ in contribs})
        net = Network(seed=seed, dtype=dtype, dt=self.dt)
        gains, extra = {}, {}
        outputs = {t for _, t, *_ in contribs if self._kind(t) == "Output"}
        for name in self.nodes:
            if self._is_pop(name):
                pop, g, params = self._gain(name)
                net.add(pop)
                gains[name], extra[name] = g, params
        for name in outputs:
            direct = [s for s, t, M, d, _ in contribs if t == name]
            if all(self._is_pop(s) and name in self.succ[s] for s in direct) and not any(
                    t == name for _, t, *_ in biases):
                continue  # fed by populations directly: it marks them as outputs
            N = int(np.asarray(self.nodes[name].output_type["output"]).reshape(-1)[0])
            net.add(pops.Readout(_pop_name(name), N))
            gains[name], extra[name] = np.ones(N), {"b": np.zeros(N)}
        # biases: into a readout they join b; into a spiking population they
        # come from one always-on unit
        bias_in = {}
        for _, tgt, vec, _, _ in biases:
            if tgt in gains:
                bias_in[tgt] = bias_in.get(tgt, 0) + vec
        for tgt, vec in bias_in.items():
            pop = net.populations[_pop_name(tgt)]
            if isinstance(pop, pops.Readout):
                extra[tgt]["b"] = extra[tgt]["b"] + gains[tgt] * vec
                continue
            if "nir_bias" not in net.populations:
                net.add(pops.LIF("nir_bias", 1, tau_mem=_FORGET * self.dt, v_rest=1.0,
                                 v_th=0.0, v_reset=-1.0, receptors={"syn": Current(0.0)}))
            net.connect("nir_bias", _pop_name(tgt), weight=(gains[tgt] * vec)[None, :],
                        name=f"nir_bias->{_pop_name(tgt)}")
        for name, params in extra.items():
            for k, v in params.items():
                net.populations[_pop_name(name)].params[k][...] = v
        # projections: one per (source, target, delay)
        merged = {}
        for s, t, M, d, explicit in contribs:
            if t not in gains:
                continue
            if (s, t) in back and not explicit:
                d += 1
            key = (s, t, d)
            merged[key] = merged.get(key, 0) + M
        count = {}
        for s, t, _ in merged:
            count[(s, t)] = count.get((s, t), 0) + 1
        for (s, t, d), M in merged.items():
            src, tgt = _pop_name(s), _pop_name(t)
            if s == t and d == 0:
                raise ValueError(f"NIR graph: {s!r} feeds itself through a Delay of 0 steps; "
                                 f"evsim needs at least one step")
            name = f"{src}->{tgt}" + (f"@{d}" if count[(s, t)] > 1 else "")
            net.connect(src, tgt, weight=np.ascontiguousarray(M.T * gains[t]), delay=d,
                        name=name)
        return net
