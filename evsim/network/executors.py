"""Executors: run every population of a network over a batch of sequences.

An executor is a function

    executor(net, order, delayed, values, T, B, lengths, training, states, show)
        -> (runs, projection_stats, wall)

net: the Network; order: populations in run order; delayed: names of the
projections that carry the previous step's output (cycle breaking, see
:mod:`evsim.network.schedule`); values: checked input values per input
population; T, B: steps and samples; lengths: (B,) int64; training: bool;
states: population name -> initial state (updated in place by step-wise
executors); show: progress bar. It returns runs (population name ->
``PopRun``), projection name -> forward counters, and population name ->
wall-clock seconds. Monitors are started and ended by the caller; executors
only ``record``.

``dag``: each population runs its whole sequence at once, in topological
order (``delayed`` must be empty). ``stepwise``: a Python loop over steps,
each population one step at a time (any graph).
"""

import time

import numpy as np

from evsim import populations as pops
from evsim.network.compiled import run_compiled
from evsim.network.schedule import incoming, outgoing

__all__ = ["run_dag", "run_stepwise", "EXECUTORS"]


def _has_monitor(net, pop):
    return any(name == pop.name for name, _ in net.monitors)


def _record(net, pop, t0, data):
    for name, mon in net.monitors:
        if name == pop.name:
            mon.record(t0, data)


def run_dag(net, order, delayed, values, T, B, lengths, training, states, show):
    """Whole sequences per population, in topological order (no delays)."""
    from tqdm.auto import tqdm

    if delayed:
        raise ValueError(f"the DAG executor cannot run delayed projections {sorted(delayed)}")
    runs, pstats, wall = {}, {}, {}
    for pop in tqdm(order, desc="evsim run", disable=not show, leave=False):
        t0 = time.perf_counter()
        rng = net._rngs[pop.name]
        if pop.is_input:
            run = pop._forward(None, states[pop.name], training, net.backend, lengths,
                               rng, value=values[pop.name])
        else:
            drive = np.zeros((T, B, pop.in_size), net.dtype)
            for proj in incoming(net, pop):
                pstats[proj.name] = proj._forward(runs[proj.source.name],
                                                  drive[..., proj.columns], lengths)
            run = pop._forward(drive, states[pop.name], training, net.backend, lengths, rng)
        wall[pop.name] = time.perf_counter() - t0
        runs[pop.name] = run
        if _has_monitor(net, pop):
            data = dict(run.variables())
            if run.events is not None:
                data["events"] = run.events
            _record(net, pop, 0, data)
    return runs, pstats, wall


def run_stepwise(net, order, delayed, values, T, B, lengths, training, states, show):
    """A Python loop over steps, each population one step in ``order``.

    Each target has a pending drive (T, B, in_size): a source's output of step
    t is added at once to the target's row t + delay (+1 for a delayed
    projection), and the target reads row t when its turn in step t comes.
    This is the reference the compiled loop is tested against."""
    from tqdm.auto import tqdm

    runs, wall, ys, step_stats, pending, extras = {}, {}, {}, {}, {}, {}
    pstats = {name: dict(fwd_macs=0, fwd_macs_dense=0, wall_s=0.0)
              for name in net.projections}

    def deliver(proj, src_run, t, ok):
        tgt = proj.target.name
        if tgt not in pending:
            return
        st = proj._forward(src_run, pending[tgt][t:, :, proj.columns], ok,
                           extra_delay=int(proj.name in delayed))
        for k in st:
            pstats[proj.name][k] += st[k]

    for pop in order:
        wall[pop.name] = 0.0
        if not pop.is_input:
            ys[pop.name] = np.zeros((T, B, pop.size), net.dtype)
            pending[pop.name] = np.zeros((T, B, pop.in_size), net.dtype)
            step_stats[pop.name] = dict(events=0, fwd_macs=0, fwd_macs_dense=0)
    for pop in order:
        if pop.is_input:
            t0 = time.perf_counter()
            runs[pop.name] = pop._forward(None, states[pop.name], training, net.backend,
                                          lengths, net._rngs[pop.name],
                                          value=values[pop.name])
            ys[pop.name] = runs[pop.name].y
            for proj in outgoing(net, pop):
                deliver(proj, runs[pop.name], 0, lengths)
            wall[pop.name] = time.perf_counter() - t0
    for t in tqdm(range(T), desc="evsim run (step-wise)", disable=not show, leave=False):
        alive = t < lengths
        ok = alive.astype(np.int64)
        for pop in order:
            if pop.is_input:
                if _has_monitor(net, pop):
                    _record(net, pop, t, {k: v[t:t + 1] for k, v in
                                          runs[pop.name].variables().items()})
                continue
            t0 = time.perf_counter()
            y, states[pop.name], var, st = pop._step(pending[pop.name][t], states[pop.name],
                                                     alive, training, net.backend,
                                                     net._rngs[pop.name])
            ys[pop.name][t] = y
            if training:  # what a population's step backward will need
                for k in [k for k in var if k.startswith("_")]:
                    ex = extras.setdefault(pop.name, {})
                    if k not in ex:
                        ex[k] = np.zeros((T,) + var[k].shape, var[k].dtype)
                    ex[k][t] = var[k]
            var = {k: x for k, x in var.items() if not k.startswith("_")}
            for proj in outgoing(net, pop):
                deliver(proj, pops.PopRun(y=ys[pop.name][t:t + 1]), t, ok)
            for k in step_stats[pop.name]:
                step_stats[pop.name][k] += st[k]
            wall[pop.name] += time.perf_counter() - t0
            if _has_monitor(net, pop):
                _record(net, pop, t, {k: v[None] for k, v in var.items()})
    for pop in order:
        if pop.is_input:
            continue
        st = step_stats[pop.name]
        st["activity"] = st["events"] / max(int(lengths.sum()) * pop.size, 1)
        saved = (pop._saved_from_steps(ys[pop.name], extras.get(pop.name, {}), lengths)
                 if training else None)
        runs[pop.name] = pops.PopRun(y=ys[pop.name], state=states[pop.name], stats=st,
                                     saved=saved)
    return runs, pstats, wall


#: schedule name -> executor
EXECUTORS = {"dag": run_dag, "stepwise": run_stepwise, "compiled": run_compiled}
