"""One forward run: schedule and executor choice, monitors, threads, statistics.

:func:`forward` checks the inputs, picks the executor (:mod:`.executors`),
starts every monitor (and ends it, even on error), runs under the thread
plan and gathers outputs and counters into a :class:`ForwardPass`.
"""

import time

from evsim import _validate as check
from evsim import threads
from evsim.functional.egru import _read_only
from evsim.network import compiled
from evsim.network.executors import EXECUTORS
from evsim.network.inputs import check_inputs, initial_states
from evsim.network.result import ForwardPass, token
from evsim.network.schedule import incoming, is_cyclic, plan

__all__ = ["forward", "PROGRESS_MIN_WORK", "SCHEDULES"]

#: Show the progress bar (progress=None) when T * B * (total units) exceeds this.
PROGRESS_MIN_WORK = 50_000_000
SCHEDULES = ("auto", "dag", "stepwise", "compiled")


def forward(net, inputs, lengths, training, steps, schedule, progress, reset,
            record_outputs=True):
    """Run ``net`` over a batch; the arguments of :meth:`Network.forward`."""
    with threads.owned():
        return _forward(net, inputs, lengths, training, steps, schedule, progress, reset,
                        record_outputs)


def choose(net, schedule, training):
    """(executor name, order, delayed projections) for a run."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    cyclic = is_cyclic(net)
    if schedule == "dag" and cyclic:
        raise ValueError("the network has a cycle between populations (or a population "
                         "projecting onto itself); use schedule='stepwise' or 'auto'")
    if schedule == "compiled":
        why = compiled.why_not(net, training)
        if why:
            raise ValueError(f"schedule='compiled' cannot run this network: {why}")
    if schedule == "auto":
        if not compiled.why_not(net, training):
            schedule = "compiled"
        else:
            schedule = "stepwise" if cyclic else "dag"
    if schedule == "dag":
        order, delayed = plan(net, all_delays=True)
    else:
        order, delayed = plan(net)
    return schedule, order, delayed


def _forward(net, inputs, lengths, training, steps, schedule, progress, reset, record_outputs):
    t_start = time.perf_counter()
    kind, order, delayed = choose(net, schedule, training)
    tok = token(net)
    for proj in net.projections.values():  # kernels index with these: check them first
        proj.check_structure()
    values, T, B, lengths = check_inputs(net, inputs, lengths, steps)
    _check_memory(net, kind, order, T, B, training, record_outputs)
    states = initial_states(net, B, reset)
    n_units = sum(p.size for p in order)
    show = net.progress if progress is None else progress
    show = (T * B * n_units > PROGRESS_MIN_WORK) if show is None else bool(show)
    work = T * B * n_units * n_units  # about the multiply-adds of dense products
    if kind == "compiled":
        work = T * B * (n_units + sum(p.nnz for p in net.projections.values()))
    with threads.numba_threads(threads.plan(B, work)):
        runs, pstats, pop_wall = _run_monitored(net, EXECUTORS[kind], order, delayed, values,
                                                T, B, lengths, training, states, show,
                                                record_outputs)
    outputs, stats = {}, {}
    for pop in order:
        run = runs[pop.name]
        # read-only views: the backward pass reads these arrays
        if record_outputs:
            outputs[pop.name] = _read_only(run.y)
        if getattr(pop, "trace_alpha", None) is not None and run.variables is not None:
            outputs[pop.name + ".trace"] = _read_only(run.variables()["trace"])
        st = dict(run.stats, wall_s=pop_wall[pop.name])
        st.setdefault("fwd_macs_event", st["fwd_macs"])
        for proj in incoming(net, pop):
            st["fwd_macs"] += pstats[proj.name]["fwd_macs"]
            st["fwd_macs_event"] += pstats[proj.name]["fwd_macs"]
            st["fwd_macs_dense"] += pstats[proj.name]["fwd_macs_dense"]
        stats[pop.name] = st
        net.state[pop.name] = run.state
    return ForwardPass(outputs=outputs, stats=stats, projection_stats=pstats,
                       lengths=lengths, training=bool(training), schedule=kind,
                       wall_s=time.perf_counter() - t_start, _runs=runs,
                       _order=[p.name for p in order], _delayed=set(delayed),
                       _token=tok)


def _check_memory(net, kind, order, T, B, training, record_outputs):
    """A MemoryError before the run when its outputs and drives (and, in
    training, what the backward pass saves) cannot fit (a lower estimate)."""
    per_step = 0
    for pop in order:
        keep = record_outputs or kind != "compiled"
        per_step += pop.size * (keep + (not pop.is_input) * (1 + 4 * bool(training)))
    check.require_memory(T * B * per_step * net.dtype.itemsize,
                         f"a network run with T={T} steps, B={B} samples and "
                         f"{sum(p.size for p in order)} units ({net.dtype})")


def _run_monitored(net, executor, order, delayed, values, T, B, lengths, training, states,
                   show, record_outputs):
    """Run ``executor`` with every monitor started (and ended, even on error)."""
    started = []
    try:
        for name, mon in net.monitors:
            pop = net.populations[name]
            mon.start_run(name, pop.size, B, T, net.dtype, tuple(pop.variables))
            started.append(mon)
        if executor is EXECUTORS["compiled"]:
            return executor(net, order, delayed, values, T, B, lengths, training, states, show,
                            record_outputs=record_outputs)
        return executor(net, order, delayed, values, T, B, lengths, training, states, show)
    finally:
        for mon in started:  # a monitor that refused to start is not closed
            mon.end_run()
