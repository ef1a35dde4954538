"""The compiled executor: a network of spiking populations runs its whole
time loop in one Numba kernel (:mod:`evsim.kernels.snn_loop`).

Eligible (``schedule="auto"`` picks it): every population is a
:class:`~evsim.populations.LIF` or an input, the run does not train and the
network's backend is "cpu".
The layout the kernel needs is built here at each run from the live
parameters: all units in one index, all receptor slots in one index, all
projections between spiking populations in one CSR over source units with a
delay per synapse, and one ring buffer of pending input. Inputs (spike
lists, Poisson trains, currents from dense inputs) are computed before the
loop, as a drive of shape (T, B, slots).

The loop runs in chunks of steps; between chunks (never per step) Python
hands the chunk's events to the event monitors and the probed values to the
state monitors, so memory stays bounded by one chunk. Per sample the loop
stops early, at a step boundary, if its event buffer could overflow; the
buffer then grows and the sample resumes.
"""

import time

import numpy as np

from evsim import config
from evsim import populations as pops
from evsim.kernels import snn_loop
from evsim.monitors import ActivityMonitor, EventMonitor

__all__ = ["why_not", "run_compiled"]

_EV_CAP_MIN = 1 << 16


def why_not(net, training):
    """Why the compiled executor cannot run ``net`` (a string), or ''."""
    if training:
        return "it runs forward only (training=False, i.e. net.run)"
    if net.backend != "cpu":
        return f"it is a CPU loop; the network's backend is {net.backend!r}"
    spiking = [p for p in net.populations.values() if not p.is_input]
    if not spiking:
        return "the network has no spiking population"
    other = [p.name for p in spiking if not isinstance(p, pops.LIF)]
    if other:
        return f"populations {other} are not LIF populations"
    return ""


class _Layout:
    """Global indices of units, receptor slots and synapses (see module doc)."""

    def __init__(self, net, order, delayed):
        dtype = net.dtype
        self.pops = [p for p in order if not p.is_input]
        P = len(self.pops)
        self.index = {p.name: i for i, p in enumerate(self.pops)}
        sizes = np.array([p.size for p in self.pops], np.int64)
        widths = np.array([p.in_size for p in self.pops], np.int64)
        self.n0 = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.s0 = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        self.pop_f = np.zeros((P, 5), dtype)
        self.pop_i = np.zeros((P, 2), np.int64)
        kinds, a, c, e, rec0 = [], [], [], [], [0]
        for i, p in enumerate(self.pops):
            a_m, k_, a_, c_, e_, cond = p.constants()
            self.pop_f[i] = (a_m, p.dt / p.tau_mem, p.v_rest, p.v_th, p.v_reset)
            self.pop_i[i] = (p.n_refractory, int(cond))
            kinds.append(k_)
            a.append(a_)
            c.append(c_)
            e.append(e_)
            rec0.append(rec0[-1] + len(k_))
        self.kinds = np.concatenate(kinds).astype(np.int64)
        self.a, self.c, self.e = (np.concatenate(x).astype(dtype) for x in (a, c, e))
        self.rec0 = np.array(rec0, np.int64)
        self._synapses(net, delayed, dtype)

    def _synapses(self, net, delayed, dtype):
        """One CSR over all source units: row g holds the synapses of unit g,
        projection by projection in the order they were added (no sort: each
        projection's rows are placed at their offsets)."""
        n = self.n_units
        projs = [p for p in net.projections.values()
                 if not (p.source.is_input or p.target.is_input)]
        csrs = [p.csr() for p in projs]
        counts = np.zeros(n, np.int64)
        for proj, (indptr, _, _) in zip(projs, csrs):
            a = self.n0[self.index[proj.source.name]]
            counts[a:a + proj.shape[0]] += np.diff(indptr)
        self.indptr = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=self.indptr[1:])
        nnz = int(self.indptr[-1])
        # 4-byte slots and delays: the loop reads 12 bytes per synapse, not 20
        if self.n_slots >= 2**31:
            raise ValueError(f"the network has {self.n_slots} receptor slots; the compiled "
                             f"loop indexes them with 32-bit integers")
        self.slot = np.empty(nnz, np.int32)
        self.w = np.empty(nnz, dtype)
        self.d = np.empty(nnz, np.int32)
        filled = np.zeros(n, np.int64)  # synapses already placed per source unit
        for proj, (indptr, indices, values) in zip(projs, csrs):
            delay = proj.delay
            delays = np.array([delay], np.int64) if np.isscalar(delay) else delay
            if proj.max_delay >= 2**31 - 1:
                raise ValueError(f"projection {proj.name!r}: delays must be below 2**31 - 1 "
                                 f"steps, got {proj.max_delay}")
            base = self.s0[self.index[proj.target.name]] + proj.columns.start
            snn_loop.place_synapses(self.indptr, filled, self.n0[self.index[proj.source.name]],
                                    indptr, indices, values, delays,
                                    int(proj.name in delayed), base, self.slot, self.w, self.d)
        if self.d.size and self.d.min() < 0:
            raise ValueError("projection delays must be >= 0 steps")
        self.ring_len = int(self.d.max(initial=0)) + 1
        if not np.all(np.isfinite(self.w)):
            raise ValueError("a projection's weights contain NaN or infinite values")

    @property
    def n_units(self):
        return int(self.n0[-1])

    @property
    def n_slots(self):
        return int(self.s0[-1])

    def units(self, pop):
        i = self.index[pop.name]
        return int(self.n0[i]), int(self.n0[i + 1])

    def slots(self, pop):
        i = self.index[pop.name]
        return int(self.s0[i]), int(self.s0[i + 1])


def _external_drive(net, lay, runs, T, B, lengths):
    """(T, B, slots) input from input populations, or None; projection stats."""
    pstats, ext = {}, None
    for proj in net.projections.values():
        if not proj.source.is_input or proj.target.is_input:
            continue
        if ext is None:
            ext = np.zeros((T, B, lay.n_slots), net.dtype)
        a, _ = lay.slots(proj.target)
        cols = slice(a + proj.columns.start, a + proj.columns.stop)
        pstats[proj.name] = proj._forward(runs[proj.source.name], ext[:, :, cols], lengths)
    return ext, pstats


def _probes(net, lay):
    """Probe list for the state monitors: (kind (K,), index (K,)) and, per
    monitor, {variable: columns of the probe array} ('y' is taken from events)."""
    kinds, idx, plans = [], [], []
    for name, mon in net.monitors:
        pop = net.populations[name]
        if pop.is_input or not hasattr(mon, "record_units"):
            continue
        a, _ = lay.units(pop)
        s, _ = lay.slots(pop)
        units = np.asarray(mon.units if mon._units is not None else np.arange(pop.size))
        cols = {}
        for var in mon.variables:
            if var == "y":
                cols[var] = None
                continue
            if var == "v":
                kinds.append(np.zeros(units.size, np.int64))
                idx.append(a + units)
            else:
                k = list(pop.receptors).index(var)
                kinds.append(np.ones(units.size, np.int64))
                idx.append(s + k * pop.size + units)
            start = sum(x.size for x in kinds) - units.size
            cols[var] = slice(start, start + units.size)
        plans.append((mon, pop, units, cols))
    if kinds:
        return np.concatenate(kinds), np.concatenate(idx).astype(np.int64), plans
    return np.zeros(0, np.int64), np.zeros(0, np.int64), plans


class _Events:
    """Per-sample event buffers that grow when a sample fills its buffer."""

    def __init__(self, B, n_units):
        self.cap = max(_EV_CAP_MIN, 4 * n_units)
        self.step = np.zeros((B, self.cap), np.int64)
        self.unit = np.zeros((B, self.cap), np.int32)

    def grow(self):
        self.cap *= 2
        self.step = np.zeros((self.step.shape[0], self.cap), np.int64)
        self.unit = np.zeros((self.unit.shape[0], self.cap), np.int32)


def run_compiled(net, order, delayed, values, T, B, lengths, training, states, show,
                 record_outputs=True):
    """The compiled executor (the executor contract: :mod:`evsim.network.executors`)."""
    from tqdm.auto import tqdm

    from evsim.network.executors import _has_monitor, _record

    t_all = time.perf_counter()
    runs, wall = {}, {}
    for pop in order:
        if pop.is_input:
            t0 = time.perf_counter()
            runs[pop.name] = pop._forward(None, states[pop.name], training, net.backend,
                                          lengths, net._rngs[pop.name], value=values[pop.name])
            wall[pop.name] = time.perf_counter() - t0
            if _has_monitor(net, pop):
                _record(net, pop, 0, dict(runs[pop.name].variables()))
    lay = _Layout(net, order, delayed)
    ext, pstats = _external_drive(net, lay, runs, T, B, lengths)
    v = np.zeros((B, lay.n_units), net.dtype)
    cur = np.zeros((B, lay.n_slots), net.dtype)
    ref = np.zeros((B, lay.n_units), np.int32)
    for pop in lay.pops:
        a, b = lay.units(pop)
        s, e = lay.slots(pop)
        st = states[pop.name]
        v[:, a:b], cur[:, s:e], ref[:, a:b] = st["v"], st["I"], st["r"]
    ring = np.zeros((B, lay.ring_len, lay.n_slots), net.dtype)
    probe_kind, probe_idx, plans = _probes(net, lay)
    ev = _Events(B, lay.n_units)
    ys = {p.name: np.zeros((T, B, p.size), net.dtype) for p in lay.pops} \
        if record_outputs else {}
    dense_mons = [(name, mon) for name, mon in net.monitors
                  if not net.populations[name].is_input and not hasattr(mon, "record_units")
                  and not hasattr(mon, "record_events")]  # e.g. a user's own monitor
    counts = np.zeros(len(lay.pops), np.int64)
    per_unit = np.zeros(lay.n_units, np.int64)
    K = probe_kind.size
    chunk = max(1, min(config.LOOP_CHUNK_STEPS,
                       config.LOOP_PROBE_VALUES // max(K * B, 1)))
    with tqdm(total=T, desc="evsim run (compiled)", disable=not show, leave=False) as bar:
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            ext_c = (np.ascontiguousarray(ext[t0:t1].transpose(1, 0, 2)) if ext is not None
                     else np.zeros((B, 1, lay.n_slots), net.dtype))
            probe = np.zeros((B, t1 - t0, K), net.dtype)
            step, unit, batch = _run_chunk(lay, t0, t1, ext_c, ext is not None, v, cur, ref,
                                           ring, ev, probe_kind, probe_idx, probe, lengths)
            _hand_out(net, lay, t0, t1, step, unit, batch, probe, plans, ys, counts,
                      dense_mons, B)
            per_unit += np.bincount(unit, minlength=lay.n_units)
            bar.update(t1 - t0)
    runs.update(_finish(lay, v, cur, ref, ys, counts, lengths))
    _spike_stats(net, lay, per_unit, lengths, pstats)
    loop_s = time.perf_counter() - t_all - sum(wall.values())
    for pop in lay.pops:  # one loop for all: wall time shared by size
        wall[pop.name] = loop_s * pop.size / max(lay.n_units, 1)
    return runs, pstats, wall


def _run_chunk(lay, t0, t1, ext_c, has_ext, v, cur, ref, ring, ev, probe_kind, probe_idx,
               probe, lengths):
    """Steps t0 .. t1-1 of every sample; returns the events (step, unit, batch)
    ordered by step, then sample, then unit."""
    B = v.shape[0]
    begin = np.full(B, t0, np.int64)
    end = np.minimum(lengths, t1)
    steps, units, batches = [], [], []
    done = np.zeros(B, np.int64)
    n_ev = np.zeros(B, np.int64)
    while np.any(begin < end):
        if B == 1:  # one sample: the serial body, no parallel region
            done[0], n_ev[0] = snn_loop.run_sample(
                begin[0], t1, t0, lay.n0, lay.s0, lay.rec0, lay.pop_f, lay.pop_i, lay.kinds,
                lay.a, lay.c, lay.e, lay.indptr, lay.slot, lay.w, lay.d, ext_c[0], has_ext,
                v[0], cur[0], ref[0], ring[0], ev.step[0], ev.unit[0], probe_kind, probe_idx,
                probe[0], lengths[0])
        else:
            snn_loop.run_batch(begin, t1, t0, lay.n0, lay.s0, lay.rec0, lay.pop_f, lay.pop_i,
                               lay.kinds, lay.a, lay.c, lay.e, lay.indptr, lay.slot, lay.w,
                               lay.d, ext_c, has_ext, v, cur, ref, ring, ev.step, ev.unit,
                               probe_kind, probe_idx, probe, lengths, done, n_ev)
        for b in range(B):
            if n_ev[b]:
                steps.append(ev.step[b, :n_ev[b]].copy())
                units.append(ev.unit[b, :n_ev[b]].copy())
                batches.append(np.full(n_ev[b], b, np.int32))
        begin += done
        if np.any(begin < end):  # a sample stopped early: its buffer was nearly full
            ev.grow()
    if not steps:
        e = np.zeros(0, np.int64)
        return e, e.astype(np.int32), e.astype(np.int32)
    step, unit, batch = np.concatenate(steps), np.concatenate(units), np.concatenate(batches)
    if B > 1:
        o = np.lexsort((unit, batch, step))
        step, unit, batch = step[o], unit[o], batch[o]
    return step, unit, batch


def _hand_out(net, lay, t0, t1, step, unit, batch, probe, plans, ys, counts, dense_mons, B):
    """Give one chunk's events and probed values to outputs and monitors."""
    for i, pop in enumerate(lay.pops):
        a, b = lay.units(pop)
        sel = (unit >= a) & (unit < b)
        st, un, ba = step[sel], (unit[sel] - a).astype(np.int32), batch[sel]
        counts[i] += st.size
        if pop.name in ys:
            ys[pop.name][st, ba, un] = 1.0
        for name, mon in net.monitors:
            if name != pop.name:
                continue
            if isinstance(mon, ActivityMonitor):
                mon.record_events(t0, st - t0, un, ba, np.ones(st.size, net.dtype), t1 - t0)
            elif isinstance(mon, EventMonitor):
                mon.record_events(t0, st - t0, un, ba, np.ones(st.size, net.dtype), t1 - t0)
            elif hasattr(mon, "record_events"):
                mon.record_events(t0, st - t0, un, ba, np.ones(st.size, net.dtype))
        if any(name == pop.name for name, _ in dense_mons):
            y = np.zeros((t1 - t0, B, pop.size), net.dtype)
            y[st - t0, ba, un] = 1.0
            for name, mon in dense_mons:
                if name == pop.name:
                    mon.record(t0, {"y": y})
    for mon, pop, units, cols in plans:
        data = {}
        for var, c in cols.items():
            if c is None:
                a, _ = lay.units(pop)
                y = np.zeros((t1 - t0, B, units.size), net.dtype)
                pos = np.full(pop.size, -1)
                pos[units] = np.arange(units.size)
                sel = (unit >= a) & (unit < a + pop.size)
                k = pos[unit[sel] - a]
                ok = k >= 0
                y[step[sel][ok] - t0, batch[sel][ok], k[ok]] = 1.0
                data[var] = y
            else:
                data[var] = probe[:, :, c].transpose(1, 0, 2)
        mon.record_units(t0, data)


def _finish(lay, v, cur, ref, ys, counts, lengths):
    """PopRun per spiking population: outputs, final state, counters."""
    runs = {}
    for i, pop in enumerate(lay.pops):
        a, b = lay.units(pop)
        s, e = lay.slots(pop)
        state = {"v": v[:, a:b].copy(), "I": cur[:, s:e].copy(),
                 "r": ref[:, a:b].astype(np.int64)}
        n = int(counts[i])
        stats = dict(events=n, activity=n / max(int(lengths.sum()) * pop.size, 1),
                     fwd_macs=0, fwd_macs_dense=0)
        runs[pop.name] = pops.PopRun(y=ys.get(pop.name), state=state, stats=stats)
    return runs


def _spike_stats(net, lay, per_unit, lengths, pstats):
    """Synaptic events delivered per projection (spikes times fan-out) and
    the dense equivalent (every weight every valid step)."""
    n_valid = int(lengths.sum())
    for proj in net.projections.values():
        if proj.source.is_input or proj.target.is_input:
            continue
        a, b = lay.units(proj.source)
        indptr = proj.csr()[0]
        done = int(per_unit[a:b] @ np.diff(indptr))
        pstats[proj.name] = dict(fwd_macs=done, fwd_macs_dense=n_valid * proj.nnz, wall_s=0.0)
