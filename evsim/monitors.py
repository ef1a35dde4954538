"""Monitors: record events, state variables and activity while a network runs.

Three kinds, created through the network (``net.monitor(pop, kind, **options)``)
or directly:

* :class:`EventMonitor` (kind ``"events"``): one record per event (step, unit,
  sample, value); spike trains, counts, rates, a dense view; optional unit
  subset; bounded memory (``max_events``) and optional streaming to an HDF5
  file while the run goes on (``path``). It composes the pieces of
  :mod:`evsim.events`: a sink that stores the events as they come (in memory
  or in the file) and an :class:`~evsim.events.EventTable` that answers the
  queries and writes the file.
* :class:`StateMonitor` (kind ``"state"``): chosen variables (``"v"``, ``"h"``,
  ``"y"``, ...) of chosen units, every ``every`` steps.
* :class:`ActivityMonitor` (kind ``"activity"``): fraction of units active per
  step, and the backward sparsity of each training step.

The protocol the network drives (the same for all kinds)::

    monitor.start_run(pop_name, n_units, batch, n_steps, dtype, variables)
    monitor.record(t0, data)   # once per computed chunk of steps, t0 = first step
    monitor.end_run()

``data`` maps ``"y"`` (Tc, B, N) outputs (an event is ``y != 0``) and the state
variables of the population to arrays of the same shape (other entries, such
as the kernels' ``"events"`` lists, are ignored). Recording is vectorised: a
chunk costs a few NumPy calls, never a Python call per event or per step.

A compiled loop that never builds the dense chunk calls instead
``EventMonitor.record_events(t0, step, unit, batch, value)`` with event columns
(cost O(events)) and ``StateMonitor.record_units(t0, data)`` with the
monitor's units only, every step.

Several runs: by default each ``start_run`` clears what the monitor holds (and
rewrites its file). With ``append=True`` runs are concatenated along time: the
steps of the second run continue after the last step of the first, and
``run_starts`` holds the first step of each run.

Files: every monitor has ``save(path)`` (atomic) and a ``load(path)``
classmethod; :func:`load` opens any monitor file and :func:`load_events` an
event file. A foreign, truncated or newer file raises
:class:`evsim.io.FileFormatError` with the reason.
"""

import math
import os
import sys

import h5py
import numpy as np

from evsim.events import (
    EventTable,
    FileSink,
    MemorySink,
    MonitorOverflowError,
    check_event_columns,
    empty_columns,
    events_from_dense,
    header_attrs,
    read_header,
    reading,
    str_attr,
    units_attr,
)
from evsim.io import FileFormatError, atomic_h5, describe_unreadable

__all__ = ["EventMonitor", "StateMonitor", "ActivityMonitor", "MonitorOverflowError",
           "EventTable", "MONITOR_KINDS", "make_monitor", "load", "load_events"]

FILE_KINDS = {"events": "events", "state": "state_monitor", "activity": "activity_monitor"}


# --------------------------------------------------------------------------
# Helpers


def _units_array(units, name="units"):
    """Validate a unit subset: None, or distinct non-negative integers (returned sorted)."""
    if units is None:
        return None
    arr = np.asarray(units)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be None (all units) or a non-empty list of unit "
                         f"indices, got {units!r}")
    if arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative unit indices, got {arr.min()}")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} must not repeat a unit, got {units!r}")
    return np.sort(arr).astype(np.int64)


def _check_units_fit(units, n_units, pop_name, cls):
    if units is not None and units.max() >= n_units:
        raise ValueError(f"{cls} on {pop_name!r}: units holds index {int(units.max())} but "
                         f"the population has {n_units} units (indices 0..{n_units - 1})")


def _check_chunk(name, arr, batch, width, pop_name, note=""):
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[1:] != (batch, width):
        raise ValueError(f"monitor on {pop_name!r}: data[{name!r}] must have shape "
                         f"(steps, {batch}, {width}){note}, got {arr.shape}")
    return arr


def _is_count(value):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _check_dt(dt, name="dt"):
    """A finite step duration > 0, as a float; ValueError naming ``name`` otherwise."""
    try:
        value = float(dt)
    except (TypeError, ValueError):
        value = None
    if isinstance(dt, bool) or value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite step duration > 0, got {dt!r}")
    return value


class _Monitor:
    """Shared bookkeeping: the run protocol, run starts, append mode."""

    kind = None
    cls_name = "Monitor"

    def __init__(self, pop_name=None, append=False):
        self.pop_name = pop_name
        self.append = bool(append)
        self.n_units = None
        self.batch = None
        self.dtype = None
        self.run_starts = []
        self.n_steps = 0           # total steps of all runs held
        self._offset = 0           # first global step of the current run
        self._run_steps = 0        # steps announced for the current run
        self._running = False

    # variables the monitor needs besides "y" (always given); the network checks
    # them against ``pop.variables`` before a run
    required_variables = ()

    def _begin(self, pop_name, n_units, batch, n_steps, dtype, variables):
        """Common start_run checks; returns True when the held data must be reset."""
        if self.pop_name is None:
            self.pop_name = pop_name
        elif pop_name is not None and pop_name != self.pop_name:
            raise ValueError(f"{self.cls_name} was made for population {self.pop_name!r} "
                             f"but start_run names {pop_name!r}; use one monitor per population")
        if variables is not None:
            missing = [v for v in self.required_variables if v not in tuple(variables)]
            if missing:
                raise ValueError(
                    f"{self.cls_name} on {self.pop_name!r} asks for variable(s) {missing} but "
                    f"the population exposes {tuple(variables)}; choose from those")
        if n_steps is None or int(n_steps) < 0:
            raise ValueError(f"n_steps must be a number of steps >= 0, got {n_steps!r}")
        reset = not (self.append and self.n_units is not None)
        if not reset and (n_units != self.n_units or batch != self.batch):
            raise ValueError(
                f"{self.cls_name} on {self.pop_name!r} has append=True and holds runs with "
                f"{self.n_units} units x batch {self.batch}; this run has {n_units} units x "
                f"batch {batch}. Use a new monitor, or append=False to start afresh")
        return reset

    def _start_common(self, reset, n_units, batch, n_steps, dtype):
        if reset:
            self.run_starts = []
            self.n_steps = 0
        self.n_units = int(n_units)
        self.batch = int(batch)
        self.dtype = np.dtype(dtype)
        self._offset = self.n_steps
        self.run_starts.append(self._offset)
        self._run_steps = int(n_steps)
        self.n_steps = self._offset + int(n_steps)
        self._running = True

    def _need_run(self, method="record"):
        if self.n_units is None:
            raise RuntimeError(f"{self.cls_name}.{method}() called before start_run(); "
                               f"attach the monitor with net.monitor(...) or call start_run first")

    def _seen(self, t0, tc):
        """Extend the run length when a chunk goes past the announced n_steps."""
        end = self._offset + int(t0) + int(tc)
        if end > self.n_steps:
            self.n_steps = end

    def end_run(self):
        self._running = False

    def _header_attrs(self):
        return header_attrs(self.pop_name, self.n_units, self.batch, self.n_steps,
                            self.run_starts, self.dtype)

    def _read_header(self, f):
        head = read_header(f.attrs)
        self.pop_name, self.n_units, self.batch = head["pop_name"], head["n_units"], head["batch"]
        self.n_steps, self.run_starts = head["n_steps"], head["run_starts"]
        self.dtype, self.dt = head["dtype"], head["dt"]


# --------------------------------------------------------------------------
# Events


class EventMonitor(_Monitor):
    """Record every event of a population: step, unit, sample and value.

    Parameters
    ----------
    pop_name : str, optional
        The population (set by the network).
    units : sequence of int, optional
        Record only these units (population indices, kept in ascending order);
        default all.
    max_events : int, optional
        Upper bound on the events kept (memory, or file size with ``path``).
        Default unlimited.
    on_overflow : {"warn", "raise"}
        Past ``max_events``: keep the first ``max_events`` events and warn once
        (the rest are counted in ``n_dropped``), or raise
        :class:`MonitorOverflowError` after keeping those that fit.
    path : str or path, optional
        Stream the events to this HDF5 file as the run goes: each ``record``
        call appends to resizable datasets and flushes, so memory stays bounded
        by one chunk and a crash leaves the file readable up to the last
        record. The file is written in place (it is the live log of the run);
        its attribute ``complete`` becomes True at ``end_run``. Another process
        can read it mid-run from a copy (HDF5 locks a file open for writing),
        or with ``HDF5_USE_FILE_LOCKING=FALSE``.
    flush_every : int
        With ``path``: write to the file and flush once every ``flush_every``
        record calls (default every call). Raise it in step-by-step runs with
        few events per step to save the cost of a flush per step; a crash then
        loses at most the last ``flush_every - 1`` unflushed calls.
    append : bool
        Keep earlier runs (see the module docstring) instead of clearing them.
    dt : float
        Duration of a step (for :meth:`rates` and the file header).
    chunk_size : int
        HDF5 chunk length of the event datasets.

    Attributes
    ----------
    step, unit, batch, value : 1-D arrays, one entry per event, ordered by step,
        then sample, then unit. ``unit`` holds population indices.
    units : (n,) int64 the recorded units (all units when no subset).
    table : the recording as an :class:`~evsim.events.EventTable` (the
        queries below are its own).
    n_events, n_dropped, n_steps, run_starts.
    """

    kind = "events"
    cls_name = "EventMonitor"

    def __init__(self, pop_name=None, units=None, max_events=None, on_overflow="warn",
                 path=None, append=False, dt=1.0, flush_every=1, chunk_size=16384):
        super().__init__(pop_name, append)
        self._units = _units_array(units)
        if max_events is not None:
            if not _is_count(max_events) or max_events < 0:
                raise ValueError(f"max_events must be None or an integer >= 0, got "
                                 f"{max_events!r}")
            max_events = int(max_events)
        if on_overflow not in ("warn", "raise"):
            raise ValueError(f"on_overflow must be 'warn' or 'raise', got {on_overflow!r}")
        if not _is_count(flush_every) or flush_every < 1:
            raise ValueError(f"flush_every must be an integer >= 1, got {flush_every!r}")
        self.max_events = max_events
        self.on_overflow = on_overflow
        self.path = None if path is None else os.fspath(path)
        self.dt = _check_dt(dt)
        if not _is_count(chunk_size) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1 (the HDF5 chunk length of "
                             f"the event datasets), got {chunk_size!r}")
        self.flush_every = int(flush_every)
        self.chunk_size = int(chunk_size)
        self._sink = None  # MemorySink, or FileSink with path
        self._recorded = 0  # steps recorded (all runs held), <= n_steps

    # -- protocol ----------------------------------------------------------

    def start_run(self, pop_name, n_units, batch, n_steps, dtype="float32", variables=None):
        """Prepare for a run of ``n_steps`` steps (clears earlier runs unless append)."""
        reset = self._begin(pop_name, n_units, batch, n_steps, dtype, variables)
        _check_units_fit(self._units, n_units, self.pop_name, self.cls_name)
        if not reset and np.dtype(dtype) != self.dtype:
            raise ValueError(f"EventMonitor on {self.pop_name!r} holds {self.dtype} values; "
                             f"this run is {np.dtype(dtype)}. Use a new monitor")
        self._start_common(reset, n_units, batch, n_steps, dtype)
        self._recorded = self._offset
        if reset or self._sink is None:
            if self._sink is not None:
                self._sink.close()
            self._sink = self._new_sink()
        elif self.path is not None:
            self._sink.open(self._stream_attrs(), new=False)

    def record(self, t0, data):
        """Append the events of steps ``t0 .. t0 + Tc - 1`` of the current run.

        ``data["y"]`` (Tc, B, N): events are its non-zero entries (EGRU events
        carry v > thr > 0, spikes 1.0). Kernel event lists in ``data["events"]``
        are not needed: one scan of y measured 3-7 times faster than expanding
        the lists.
        """
        self._need_run()
        y = _check_chunk("y", data["y"], self.batch, self.n_units, self.pop_name)
        self._seen(t0, y.shape[0])
        self._recorded = max(self._recorded, self._offset + int(t0) + y.shape[0])
        cols = events_from_dense(y, self._units, self.dtype)
        cols["step"] += self._offset + int(t0)
        self._sink.append(cols, self._recorded)

    def record_events(self, t0, step, unit, batch, value, n_steps=None):
        """Append events given as columns: used by the network's compiled loop.

        The same as :meth:`record` on the dense equivalent, at a cost
        O(number of events): no (Tc, B, N) array is built.

        Parameters
        ----------
        t0 : int
            The step of the current run that ``step`` counts from (as in
            :meth:`record`).
        step : (m,) integer array
            Steps relative to ``t0``; ``t0 + step`` lies in the run announced
            by ``start_run`` (0 .. n_steps - 1).
        unit : (m,) integer array
            Population indices (0 .. n_units - 1), all units: the monitor
            keeps those of its ``units`` subset itself.
        batch : (m,) integer array
            Sample indices (0 .. B - 1).
        value : (m,) real array
            Event values (cast to the run's dtype).
        n_steps : int, optional
            The steps ``t0 .. t0 + n_steps - 1`` these events cover (all of
            them recorded, with or without events); default: up to the last
            event.

        One row per event, ordered by step, then sample, then unit. The
        monitor copies what it keeps, so the caller may reuse its buffers.

        Raises
        ------
        ValueError
            A column not 1-D, of another length than ``step``, of a
            non-integer (step, unit, batch) or non-real (value) dtype, or out
            of range; rows out of order or repeated. Nothing is recorded then.
        """
        self._need_run("record_events")
        cols = check_event_columns(
            f"EventMonitor.record_events on {self.pop_name!r}", t0,
            dict(step=step, unit=unit, batch=batch, value=value),
            (self._run_steps, self.batch, self.n_units), self.dtype)
        cols["step"] += self._offset + int(t0)
        # steps before t0 are done; the last event bounds this call's steps from below
        last = int(cols["step"][-1]) + 1 if cols["step"].size else 0
        if n_steps is not None:
            n_steps = int(n_steps)
            if n_steps < 0 or int(t0) + n_steps > self._run_steps:
                raise ValueError(f"EventMonitor.record_events on {self.pop_name!r}: steps "
                                 f"{t0} .. {int(t0) + n_steps - 1} lie outside the run's "
                                 f"{self._run_steps} steps")
            last = max(last, self._offset + int(t0) + n_steps)
        self._recorded = max(self._recorded, self._offset + int(t0), last)
        if self._units is not None:
            at = np.searchsorted(self._units, cols["unit"])
            keep = self._units[np.minimum(at, self._units.size - 1)] == cols["unit"]
            cols = {k: c[keep] for k, c in cols.items()}
        self._sink.append(cols, self._recorded)

    def end_run(self):
        """Finish the run: mark the stream file complete and close it.

        Called while an exception (an error, Ctrl-C) stops the run before its
        last step was recorded, the monitor keeps the steps recorded
        (``n_steps``) and the file stays incomplete, naming the exception.
        """
        exc = sys.exc_info()[0]
        interrupted = None
        if exc is not None and self._running and self._recorded < self.n_steps:
            interrupted = exc.__name__
            self.n_steps = self._recorded
        if isinstance(self._sink, FileSink):
            attrs = self._file_attrs()
            if interrupted is not None:
                attrs["n_steps_planned"] = self._offset + self._run_steps
            self._sink.finish(attrs, interrupted)
        super().end_run()

    # -- storage -----------------------------------------------------------

    @property
    def units(self):
        """The recorded units (population indices)."""
        if self._units is not None:
            return self._units
        return np.arange(self.n_units or 0, dtype=np.int64)

    def _new_sink(self):
        bound = dict(max_events=self.max_events, on_overflow=self.on_overflow,
                     name=f"EventMonitor on {self.pop_name!r}")
        if self.path is None:
            return MemorySink(self.dtype, **bound)
        sink = FileSink(self.path, self.dtype, self.flush_every, self.chunk_size, **bound)
        sink.open(self._stream_attrs(), new=True)
        return sink

    def _file_attrs(self):
        return dict(self._header_attrs(), **units_attr(self.units, self.n_units), dt=self.dt)

    def _stream_attrs(self):
        """The attributes of a stream file while its run goes on: steps recorded so far."""
        return dict(self._file_attrs(), n_steps=self._recorded,
                    n_steps_planned=self._offset + self._run_steps)

    def flush(self):
        """Write the pending records to the stream file and flush it to disk."""
        if self._sink is not None:
            self._sink.flush()

    def close(self):
        """Flush and close the stream file without marking the run complete."""
        if self._sink is not None:
            self._sink.close()

    @property
    def n_events(self):
        """Number of events held (in memory, or in the stream file with ``path``)."""
        return 0 if self._sink is None else self._sink.n_events

    @property
    def n_dropped(self):
        """Events not kept because of ``max_events``."""
        return 0 if self._sink is None else self._sink.n_dropped

    # -- queries (answered by the EventTable) ------------------------------

    @property
    def table(self):
        """The events held, as an :class:`~evsim.events.EventTable` (a snapshot)."""
        if self._sink is None:
            cols = empty_columns(np.float32 if self.dtype is None else self.dtype)
        else:
            cols = self._sink.columns()
        return EventTable(cols, n_units=self.n_units, batch=self.batch, n_steps=self.n_steps,
                          units=self._units, dtype=self.dtype, dt=self.dt,
                          pop_name=self.pop_name,
                          run_starts=self.run_starts, n_dropped=self.n_dropped)

    @property
    def events(self):
        """Dict of the four event columns ``step, unit, batch, value``."""
        return self.table.events

    step = property(lambda self: self.table.step)
    unit = property(lambda self: self.table.unit)
    batch_index = property(lambda self: self.table.batch_index)
    value = property(lambda self: self.table.value)

    def spike_trains(self, batch=0, values=False):
        return self.table.spike_trains(batch, values)

    def counts(self):
        return self.table.counts()

    def rates(self, dt=None):
        return self.table.rates(dt)

    def to_dense(self):
        return self.table.to_dense()

    spike_trains.__doc__ = EventTable.spike_trains.__doc__
    counts.__doc__ = EventTable.counts.__doc__
    rates.__doc__ = EventTable.rates.__doc__
    to_dense.__doc__ = EventTable.to_dense.__doc__

    # -- files -------------------------------------------------------------

    def save(self, path):
        """Write the recorded events to an HDF5 file (atomic)."""
        self.table.save(path, self.chunk_size)

    @classmethod
    def load(cls, path):
        """Read an event file (saved, or streamed by a monitor with ``path``).

        A stream whose run did not end (a crash) loads up to its last flushed
        record, with a warning.
        """
        table = EventTable.load(path)
        mon = cls(pop_name=table.pop_name, dt=table.dt)
        mon.n_units, mon.batch, mon.dtype = table.n_units, table.batch, table.dtype
        mon.n_steps, mon.run_starts = table.n_steps, list(table.run_starts)
        if mon.n_units is not None and not np.array_equal(table.units, np.arange(mon.n_units)):
            mon._units = table.units
        mon._sink = MemorySink(table.dtype, name=f"EventMonitor on {table.pop_name!r}",
                               capacity=max(1, table.n_events))
        mon._sink.append(table.events, table.n_steps)
        mon._sink.n_dropped = table.n_dropped
        return mon

    def __repr__(self):
        where = f", path={self.path!r}" if self.path else ""
        return (f"EventMonitor({self.pop_name!r}, n_events={self.n_events}, "
                f"n_steps={self.n_steps}{where})")


def load_events(path):
    """Load an event file into an :class:`EventMonitor` (see :meth:`EventMonitor.load`)."""
    return EventMonitor.load(path)


# --------------------------------------------------------------------------
# State variables


class StateMonitor(_Monitor):
    """Record chosen variables of chosen units every ``every`` steps.

    Parameters
    ----------
    pop_name : str, optional
    variables : str or sequence of str
        Names the population exposes (EGRU ``"v"``, ``"h"``, ``"y"``; LIF ``"v"``,
        ``"i"``, ``"y"``...). Asking for one it lacks raises a ValueError at
        ``start_run``, before anything held is touched.
    units : sequence of int, optional
        Default all units. Kept in ascending order (the last axis of ``data``).
    every : int
        Record steps 0, every, 2*every, ... (global steps in append mode).

    Attributes
    ----------
    data : dict var -> (n_records, B, n_units recorded)
    times : (n_records,) int64 the recorded steps.
    """

    kind = "state"
    cls_name = "StateMonitor"

    def __init__(self, pop_name=None, variables=("v",), units=None, every=1, append=False):
        super().__init__(pop_name, append)
        if isinstance(variables, str):
            variables = (variables,)
        variables = tuple(variables)
        if not variables or not all(isinstance(v, str) for v in variables):
            raise ValueError(f"variables must be a name or a non-empty list of names, got "
                             f"{variables!r}")
        self.variables = variables
        self._units = _units_array(units)
        if not _is_count(every) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (record one step in every), "
                             f"got {every!r}")
        self.every = int(every)
        self._data = {}
        self._times = np.empty(0, np.int64)
        self._filled = 0

    @property
    def required_variables(self):
        return self.variables

    @property
    def units(self):
        if self._units is not None:
            return self._units
        return np.arange(self.n_units or 0, dtype=np.int64)

    def start_run(self, pop_name, n_units, batch, n_steps, dtype="float32", variables=None):
        reset = self._begin(pop_name, n_units, batch, n_steps, dtype, variables)
        _check_units_fit(self._units, n_units, self.pop_name, self.cls_name)
        self._start_common(reset, n_units, batch, n_steps, dtype)
        if reset:
            self._data = {v: np.empty((0, self.batch, self.units.size), self.dtype)
                          for v in self.variables}
            self._times = np.empty(0, np.int64)
            self._filled = 0
        self._grow_to(self.n_steps)

    def _grow_to(self, n_steps):
        """Make room for every recorded step below ``n_steps`` (global)."""
        n_rec = -(-n_steps // self.every)
        have = self._times.size
        if n_rec <= have:
            return
        for v, arr in self._data.items():
            grown = np.zeros((n_rec,) + arr.shape[1:], arr.dtype)
            grown[:have] = arr
            self._data[v] = grown
        self._times = np.arange(n_rec, dtype=np.int64) * self.every

    def record(self, t0, data):
        """Store the variables of steps ``t0 .. t0 + Tc - 1`` taken every ``every`` steps.

        ``data[var]`` (Tc, B, N) for each recorded variable, all units.
        """
        self._need_run()
        self._check_given(data)
        chunks = {v: _check_chunk(v, data[v], self.batch, self.n_units, self.pop_name)
                  for v in self.variables}
        self._store(t0, chunks, self._units)

    def record_units(self, t0, data):
        """Store values of the recorded units only: used by the network's compiled loop.

        The same as :meth:`record` on the full arrays, but ``data[var]`` is
        already restricted to the monitor's ``units`` (in their ascending
        order): shape (Tc, B, len(units)), one row for every step
        ``t0 .. t0 + Tc - 1``. The monitor keeps every ``every``-th step itself.
        """
        self._need_run("record_units")
        self._check_given(data)
        width = self.n_units if self._units is None else self._units.size
        chunks = {v: _check_chunk(v, data[v], self.batch, width, self.pop_name,
                                  " (the recorded units only)") for v in self.variables}
        self._store(t0, chunks, None)

    def _check_given(self, data):
        missing = [v for v in self.variables if v not in data]
        if missing:
            raise ValueError(f"StateMonitor on {self.pop_name!r} records {missing} but the "
                             f"population gave {sorted(k for k in data if k != 'events')}; "
                             f"choose variables from those")

    def _store(self, t0, chunks, columns):
        """Copy the rows of the recorded steps (of ``columns`` when not None) into ``data``."""
        steps = {v: arr.shape[0] for v, arr in chunks.items()}
        if len(set(steps.values())) != 1:
            raise ValueError(f"StateMonitor on {self.pop_name!r}: the variables cover "
                             f"different numbers of steps {steps}; give one chunk of steps")
        tc = steps[self.variables[0]]
        first = self._offset + int(t0)
        self._seen(t0, tc)
        self._grow_to(first + tc)
        skip = (-first) % self.every
        rows = len(range(skip, tc, self.every))
        if rows == 0:
            return
        row0 = (first + skip) // self.every
        for v, arr in chunks.items():
            chunk = arr[skip::self.every]
            self._data[v][row0:row0 + rows] = chunk if columns is None else chunk[:, :, columns]
        self._filled = max(self._filled, row0 + rows)

    @property
    def data(self):
        """dict var -> (n_records, B, n_units recorded) recorded values."""
        n = self._filled
        return {v: arr[:n] for v, arr in self._data.items()}

    @property
    def times(self):
        """(n_records,) steps at which the values were taken."""
        return self._times[:self._filled]

    def __getitem__(self, var):
        return self.data[var]

    def save(self, path):
        """Write the recorded values to an HDF5 file (atomic)."""
        with atomic_h5(path, FILE_KINDS["state"]) as f:
            for key, value in self._header_attrs().items():
                f.attrs[key] = value
            f.attrs["variables"] = list(self.variables)
            for key, value in units_attr(self.units, self.n_units).items():
                f.attrs[key] = value
            f.attrs["every"] = self.every
            f.create_dataset("times", data=self.times)
            g = f.create_group("data")
            for v, arr in self.data.items():
                g.create_dataset(v, data=arr)

    @classmethod
    def load(cls, path):
        with reading(path, FILE_KINDS["state"]) as f:
            variables = [str_attr(v) for v in f.attrs["variables"]]
            mon = cls(variables=variables, every=int(f.attrs["every"]))
            mon._read_header(f)
            units = np.asarray(f.attrs.get("units", np.arange(mon.n_units or 0)), np.int64)
            if mon.n_units is not None and not np.array_equal(units, np.arange(mon.n_units)):
                mon._units = units
            mon._times = f["times"][:]
            mon._data = {v: f["data"][v][:] for v in variables}
            mon._filled = mon._times.size
        return mon

    def __repr__(self):
        return (f"StateMonitor({self.pop_name!r}, variables={list(self.variables)}, "
                f"every={self.every}, n_records={self._filled})")


# --------------------------------------------------------------------------
# Activity


class ActivityMonitor(_Monitor):
    """Fraction of units active (``y != 0``) per step, and backward sparsity.

    Attributes
    ----------
    activity : (n_steps,) fraction of units active per step, mean over samples.
    activity_per_sample : (n_steps, B) the same per sample.
    backward_sparsity : list of the values given to :meth:`record_backward`
        (one per training step; each a float or an array). Kept across runs:
        it is the history of training, not of one run.
    """

    kind = "activity"
    cls_name = "ActivityMonitor"

    def __init__(self, pop_name=None, append=False):
        super().__init__(pop_name, append)
        self._counts = np.zeros((0, 0), np.int64)
        self.backward_sparsity = []
        self.backward_stats = []

    def start_run(self, pop_name, n_units, batch, n_steps, dtype="float32", variables=None):
        reset = self._begin(pop_name, n_units, batch, n_steps, dtype, variables)
        self._start_common(reset, n_units, batch, n_steps, dtype)
        if reset:
            self._counts = np.zeros((0, self.batch), np.int64)
        self._grow_to(self.n_steps)

    def _grow_to(self, n_steps):
        have = self._counts.shape[0]
        if n_steps > have:
            grown = np.zeros((n_steps, self.batch), np.int64)
            grown[:have] = self._counts
            self._counts = grown

    def record(self, t0, data):
        self._need_run()
        y = _check_chunk("y", data["y"], self.batch, self.n_units, self.pop_name)
        first = self._offset + int(t0)
        self._seen(t0, y.shape[0])
        self._grow_to(first + y.shape[0])
        self._counts[first:first + y.shape[0]] = np.count_nonzero(y, axis=2)

    def record_events(self, t0, step, unit, batch, value, n_steps):
        """Count the events of steps ``t0 .. t0 + n_steps - 1`` given as columns
        (``step`` relative to t0; events with value 0 are not counted). Used by
        the network's compiled loop: O(events), no dense array."""
        self._need_run()
        step = np.asarray(step, np.int64)
        batch = np.asarray(batch, np.int64)
        if step.size and (step.min() < 0 or step.max() >= n_steps or batch.min() < 0
                          or batch.max() >= self.batch):
            raise ValueError(f"ActivityMonitor.record_events on {self.pop_name!r}: steps must "
                             f"lie in [0, {n_steps}) and samples in [0, {self.batch})")
        first = self._offset + int(t0)
        self._seen(t0, n_steps)
        self._grow_to(first + n_steps)
        live = np.asarray(value) != 0
        flat = np.bincount(step[live] * self.batch + batch[live],
                           minlength=n_steps * self.batch)
        self._counts[first:first + n_steps] = flat.reshape(n_steps, self.batch)

    def record_backward(self, stats):
        """Store the backward sparsity of one training step.

        ``stats``: a population's stats dict (its ``"backward_sparsity"`` entry
        is kept, NaN when absent; the whole dict goes to ``backward_stats``) or
        a number. :meth:`Network.backward` calls it for attached monitors.
        """
        if isinstance(stats, dict):
            # a population without the counter (an input) records NaN, never an error
            self.backward_stats.append(dict(stats))
            self.backward_sparsity.append(stats.get("backward_sparsity", float("nan")))
        else:
            self.backward_sparsity.append(float(stats))

    @property
    def counts(self):
        """(n_steps, B) number of active units per step and sample."""
        return self._counts[:self.n_steps]

    @property
    def activity_per_sample(self):
        return self.counts / max(self.n_units or 0, 1)

    @property
    def activity(self):
        per = self.activity_per_sample
        return per.mean(axis=1) if per.shape[1] else np.zeros(per.shape[0])

    @property
    def mean_activity(self):
        """Fraction of unit-steps with an event over everything recorded."""
        a = self.activity
        return float(a.mean()) if a.size else 0.0

    def save(self, path):
        with atomic_h5(path, FILE_KINDS["activity"]) as f:
            for key, value in self._header_attrs().items():
                f.attrs[key] = value
            f.create_dataset("counts", data=self.counts)
            f.create_dataset("backward_sparsity",
                             data=np.asarray([np.mean(b) for b in self.backward_sparsity],
                                             np.float64))

    @classmethod
    def load(cls, path):
        with reading(path, FILE_KINDS["activity"]) as f:
            mon = cls()
            mon._read_header(f)
            mon._counts = f["counts"][:]
            mon.backward_sparsity = [float(b) for b in f["backward_sparsity"][:]]
        return mon

    def __repr__(self):
        return (f"ActivityMonitor({self.pop_name!r}, n_steps={self.n_steps}, "
                f"mean_activity={self.mean_activity:.4f})")


# --------------------------------------------------------------------------
# Factory and loading


MONITOR_KINDS = {"events": EventMonitor, "state": StateMonitor, "activity": ActivityMonitor}


def make_monitor(kind, pop_name, **options):
    """Create a monitor of ``kind`` ("events", "state" or "activity") for a population."""
    try:
        cls = MONITOR_KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"monitor kind must be one of {sorted(MONITOR_KINDS)}, "
                         f"got {kind!r}") from None
    try:
        return cls(pop_name, **options)
    except TypeError as err:
        raise TypeError(f"{cls.__name__} options: {err}") from None


def load(path):
    """Load any monitor file (events, state or activity) into its monitor class."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with h5py.File(path, "r") as f:
            kind = str_attr(f.attrs.get("evsim_format"))
    except OSError as err:
        raise FileFormatError(describe_unreadable(path, err)) from None
    by_file_kind = {v: MONITOR_KINDS[k] for k, v in FILE_KINDS.items()}
    if kind not in by_file_kind:
        what = "not an evsim file" if kind is None else f"an evsim {kind!r} file"
        raise FileFormatError(f"{path} is {what}, not a monitor recording "
                              f"(kinds {sorted(by_file_kind)})")
    return by_file_kind[kind].load(path)
