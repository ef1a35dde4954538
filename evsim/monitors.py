"""Monitors: record events, state variables and activity while a network runs.

Three kinds, created through the network (``net.monitor(pop, kind, **options)``)
or directly:

* :class:`EventMonitor` (kind ``"events"``): one record per event (step, unit,
  sample, value); spike trains, counts, rates, a dense view; optional unit
  subset; bounded memory (``max_events``) and optional streaming to an HDF5
  file while the run goes on (``path``).
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

Several runs: by default each ``start_run`` clears what the monitor holds (and
rewrites its file). With ``append=True`` runs are concatenated along time: the
steps of the second run continue after the last step of the first, and
``run_starts`` holds the first step of each run.

Files: every monitor has ``save(path)`` (atomic) and a ``load(path)``
classmethod; :func:`load` opens any monitor file and :func:`load_events` an
event file. A foreign, truncated or newer file raises
:class:`evsim.io.FileFormatError` with the reason.
"""

import contextlib
import os
import warnings

import h5py
import numpy as np

from evsim.io import FileFormatError, atomic_h5, open_checked, write_header

__all__ = ["EventMonitor", "StateMonitor", "ActivityMonitor", "MonitorOverflowError",
           "MONITOR_KINDS", "make_monitor", "load", "load_events"]

EVENT_FIELDS = ("step", "unit", "batch", "value")
_FIELD_DTYPES = {"step": np.int64, "unit": np.int32, "batch": np.int32}
FILE_KINDS = {"events": "events", "state": "state_monitor", "activity": "activity_monitor"}


class MonitorOverflowError(RuntimeError):
    """An :class:`EventMonitor` reached ``max_events`` with ``on_overflow="raise"``.

    The events that fit are kept: the monitor stays readable after the error.
    """


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


def _check_chunk(name, arr, batch, n_units, pop_name):
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[1:] != (batch, n_units):
        raise ValueError(f"monitor on {pop_name!r}: data[{name!r}] must have shape "
                         f"(steps, {batch}, {n_units}), got {arr.shape}")
    return arr


def _str_attr(value):
    return value.decode() if isinstance(value, bytes) else value


class _Growable:
    """Parallel 1-D arrays grown by amortised doubling."""

    def __init__(self, dtypes, capacity=1024):
        self.dtypes = dict(dtypes)
        self.n = 0
        self.arrays = {k: np.empty(capacity, dt) for k, dt in self.dtypes.items()}

    def append(self, cols):
        m = len(next(iter(cols.values())))
        need = self.n + m
        cap = len(next(iter(self.arrays.values())))
        if need > cap:
            new_cap = max(need, 2 * cap)
            for k, arr in self.arrays.items():
                grown = np.empty(new_cap, arr.dtype)
                grown[:self.n] = arr[:self.n]
                self.arrays[k] = grown
        for k, col in cols.items():
            self.arrays[k][self.n:need] = col
        self.n = need

    def view(self):
        return {k: arr[:self.n] for k, arr in self.arrays.items()}


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

    def _need_run(self):
        if self.n_units is None:
            raise RuntimeError(f"{self.cls_name}.record() called before start_run(); "
                               f"attach the monitor with net.monitor(...) or call start_run first")

    def _seen(self, t0, tc):
        """Extend the run length when a chunk goes past the announced n_steps."""
        end = self._offset + int(t0) + int(tc)
        if end > self.n_steps:
            self.n_steps = end

    def end_run(self):
        self._running = False

    def _header_attrs(self):
        return dict(pop_name=self.pop_name or "", n_units=-1 if self.n_units is None
                    else self.n_units, batch=-1 if self.batch is None else self.batch,
                    n_steps=self.n_steps, run_starts=np.asarray(self.run_starts, np.int64),
                    value_dtype=str(self.dtype or np.dtype(np.float32)))

    def _read_header(self, f):
        a = f.attrs
        self.pop_name = _str_attr(a.get("pop_name", "")) or None
        n_units, batch = int(a.get("n_units", -1)), int(a.get("batch", -1))
        self.n_units = None if n_units < 0 else n_units
        self.batch = None if batch < 0 else batch
        self.n_steps = int(a.get("n_steps", 0))
        self.run_starts = [int(s) for s in np.atleast_1d(a.get("run_starts", []))]
        self.dtype = np.dtype(_str_attr(a.get("value_dtype", "float32")))
        self.dt = float(a.get("dt", 1.0))


def _reading(path, kind):
    """open_checked, turning a damaged file met while reading into FileFormatError."""
    @contextlib.contextmanager
    def ctx():
        try:
            f = open_checked(path, kind)
        except FileFormatError as err:
            if "lock" not in str(err):
                raise
            raise FileFormatError(
                f"{os.fspath(path)} is open for writing by another process (a monitor "
                f"streaming to it during a run?). Read it after the run, read a copy of it, "
                f"or set the environment variable HDF5_USE_FILE_LOCKING=FALSE") from None
        try:
            yield f
        except (OSError, KeyError, ValueError, TypeError) as err:
            if isinstance(err, FileFormatError):
                raise
            raise FileFormatError(f"{os.fspath(path)} is an evsim {kind!r} file but could not "
                                  f"be read ({type(err).__name__}: {err}); it may be truncated "
                                  f"or damaged. Re-record it or restore a copy.") from None
        finally:
            f.close()
    return ctx()


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

    Attributes
    ----------
    step, unit, batch, value : 1-D arrays, one entry per event, ordered by step,
        then sample, then unit. ``unit`` holds population indices.
    units : (n,) int64 the recorded units (all units when no subset).
    n_events, n_dropped, n_steps, run_starts.
    """

    kind = "events"
    cls_name = "EventMonitor"

    def __init__(self, pop_name=None, units=None, max_events=None, on_overflow="warn",
                 path=None, append=False, dt=1.0, flush_every=1, chunk_size=16384):
        super().__init__(pop_name, append)
        self._units = _units_array(units)
        if max_events is not None:
            if isinstance(max_events, bool) or not isinstance(max_events, (int, np.integer)) \
                    or max_events < 0:
                raise ValueError(f"max_events must be None or an integer >= 0, got "
                                 f"{max_events!r}")
            max_events = int(max_events)
        if on_overflow not in ("warn", "raise"):
            raise ValueError(f"on_overflow must be 'warn' or 'raise', got {on_overflow!r}")
        self.max_events = max_events
        self.on_overflow = on_overflow
        self.path = None if path is None else os.fspath(path)
        self.dt = float(dt)
        self.chunk_size = int(chunk_size)
        if isinstance(flush_every, bool) or not isinstance(flush_every, (int, np.integer)) \
                or flush_every < 1:
            raise ValueError(f"flush_every must be an integer >= 1, got {flush_every!r}")
        self.flush_every = int(flush_every)
        self._pending = []
        self.n_dropped = 0
        self._buf = None
        self._n_file = 0
        self._file = None
        self._warned = False

    # -- protocol ----------------------------------------------------------

    def start_run(self, pop_name, n_units, batch, n_steps, dtype="float32", variables=None):
        """Prepare for a run of ``n_steps`` steps (clears earlier runs unless append)."""
        reset = self._begin(pop_name, n_units, batch, n_steps, dtype, variables)
        _check_units_fit(self._units, n_units, self.pop_name, self.cls_name)
        if not reset and np.dtype(dtype) != self.dtype:
            raise ValueError(f"EventMonitor on {self.pop_name!r} holds {self.dtype} values; "
                             f"this run is {np.dtype(dtype)}. Use a new monitor")
        self._start_common(reset, n_units, batch, n_steps, dtype)
        if reset:
            self.n_dropped = 0
            self._warned = False
            self._buf = _Growable(self._dtypes())
            if self.path is not None:
                self._close_file()
                self._open_stream(new=True)
        elif self.path is not None and self._file is None:
            self._open_stream(new=False)
        if self._file is not None:
            self._write_attrs(complete=False)
            self._file.flush()

    def record(self, t0, data):
        """Append the events of steps ``t0 .. t0 + Tc - 1`` of the current run.

        ``data["y"]`` (Tc, B, N): events are its non-zero entries (EGRU events
        carry v > thr > 0, spikes 1.0). Kernel event lists in ``data["events"]``
        are not needed: one scan of y measured 3-7 times faster than expanding
        the lists.
        """
        self._need_run()
        y = _check_chunk("y", data["y"], self.batch, self.n_units, self.pop_name)
        tc = y.shape[0]
        self._seen(t0, tc)
        cols = self._extract(y)
        cols["step"] += self._offset + int(t0)
        self._store(cols)

    def end_run(self):
        """Finish the run: mark the stream file complete and close it."""
        if self._file is not None:
            self.flush()
            self._write_attrs(complete=True)
            self._close_file()
        super().end_run()

    # -- extraction and storage --------------------------------------------

    def _dtypes(self):
        return dict(_FIELD_DTYPES, value=self.dtype)

    @property
    def units(self):
        """The recorded units (population indices)."""
        if self._units is not None:
            return self._units
        return np.arange(self.n_units or 0, dtype=np.int64)

    def _extract(self, y):
        """Event columns of a chunk: one np.nonzero over (Tc, B, n) outputs."""
        if self._units is not None:
            y = y[:, :, self._units]
        t, b, k = np.nonzero(y)
        value = y[t, b, k]
        unit = k if self._units is None else self._units[k]
        return dict(step=t.astype(np.int64), unit=unit.astype(np.int32),
                    batch=b.astype(np.int32), value=value.astype(self.dtype))

    def _store(self, cols):
        m = len(cols["step"])
        held = self.n_events
        overflow = False
        if self.max_events is not None and held + m > self.max_events:
            room = max(self.max_events - held, 0)
            self.n_dropped += m - room
            cols = {k: v[:room] for k, v in cols.items()}
            overflow = True
        if self._file is not None:
            self._pending.append(cols)
            if len(self._pending) >= self.flush_every:
                self.flush()
        else:
            self._buf.append(cols)
        if overflow:
            msg = (f"EventMonitor on {self.pop_name!r} reached max_events={self.max_events}: "
                   f"kept the first {self.max_events} events, dropped {self.n_dropped} so far. "
                   f"Raise max_events, record fewer units, or stream to a file with path=...")
            if self.on_overflow == "raise":
                self.flush()
                raise MonitorOverflowError(msg)
            if not self._warned:
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                self._warned = True

    # -- streaming file ----------------------------------------------------

    def _open_stream(self, new):
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        if new:
            f = h5py.File(self.path, "w")
            write_header(f, FILE_KINDS["events"], dt=self.dt)
            for k, dt in self._dtypes().items():
                f.create_dataset(k, shape=(0,), maxshape=(None,), dtype=dt,
                                 chunks=(self.chunk_size,))
            self._n_file = 0
        else:
            f = h5py.File(self.path, "a")
            self._n_file = int(f.attrs["n_events"])
        self._file = f

    def flush(self):
        """Write the pending records to the stream file and flush it to disk."""
        if self._file is None:
            return
        pending, self._pending = self._pending, []
        if len(pending) == 1:
            cols = pending[0]
        elif pending:
            cols = {k: np.concatenate([c[k] for c in pending]) for k in EVENT_FIELDS}
        else:
            cols = {k: np.empty(0, dt) for k, dt in self._dtypes().items()}
        self._append_file(cols)

    def _append_file(self, cols):
        m = len(cols["step"])
        f = self._file
        if m:
            n = self._n_file
            for k, col in cols.items():
                ds = f[k]
                ds.resize((n + m,))
                ds[n:n + m] = col
            self._n_file = n + m
        # n_events last: a reader trusts only what this attribute covers
        f.attrs["n_steps"] = self.n_steps
        f.attrs["n_dropped"] = self.n_dropped
        f.attrs["n_events"] = self._n_file
        f.flush()

    def _write_attrs(self, complete):
        f = self._file
        for key, value in self._header_attrs().items():
            f.attrs[key] = value
        f.attrs["units"] = self.units
        f.attrs["dt"] = self.dt
        f.attrs["n_dropped"] = self.n_dropped
        f.attrs["n_events"] = self._n_file
        f.attrs["complete"] = bool(complete)

    def _close_file(self):
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.flush()
            self._file.close()
            self._file = None

    def close(self):
        """Flush and close the stream file without marking the run complete."""
        self.flush()
        self._close_file()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    # -- data access -------------------------------------------------------

    @property
    def n_events(self):
        """Number of events held (in memory, or in the stream file with ``path``)."""
        if self.path is not None:
            return self._n_file + sum(len(c["step"]) for c in self._pending)
        return 0 if self._buf is None else self._buf.n

    def _columns(self):
        if self._pending:
            self.flush()
        if self.path is not None and self._n_file:
            if self._file is not None:
                return {k: self._file[k][:self._n_file] for k in EVENT_FIELDS}
            return _read_event_columns(self.path)[0]
        if self.path is None and self._buf is not None:
            return self._buf.view()
        dtype = self.dtype if self.dtype is not None else np.float32
        return {k: np.empty(0, dt) for k, dt in dict(_FIELD_DTYPES, value=dtype).items()}

    @property
    def events(self):
        """Dict of the four event columns ``step, unit, batch, value``."""
        return self._columns()

    @property
    def step(self):
        return self._columns()["step"]

    @property
    def unit(self):
        return self._columns()["unit"]

    @property
    def batch_index(self):
        return self._columns()["batch"]

    @property
    def value(self):
        return self._columns()["value"]

    def _col_of_unit(self):
        col = np.full(self.n_units, -1, np.int64)
        col[self.units] = np.arange(self.units.size)
        return col

    def spike_trains(self, batch=0, values=False):
        """Events of one sample, per recorded unit.

        Returns a dict ``unit -> steps`` (int64, sorted), or ``unit -> (steps,
        values)`` with ``values=True``. Every recorded unit is a key (silent
        units map to empty arrays). Multiply steps by ``dt`` for times.
        """
        self._check_batch(batch)
        ev = self._columns()
        sel = ev["batch"] == batch
        unit, step, value = ev["unit"][sel], ev["step"][sel], ev["value"][sel]
        order = np.argsort(unit, kind="stable")
        unit, step, value = unit[order], step[order], value[order]
        bounds = np.searchsorted(unit, self.units, side="left")
        ends = np.searchsorted(unit, self.units, side="right")
        out = {}
        for u, a, e in zip(self.units.tolist(), bounds, ends, strict=True):
            out[u] = (step[a:e], value[a:e]) if values else step[a:e]
        return out

    def _check_batch(self, batch):
        if self.batch is None:
            raise RuntimeError("the EventMonitor has not recorded a run yet")
        if not 0 <= batch < self.batch:
            raise ValueError(f"batch must be a sample index in 0..{self.batch - 1}, got {batch}")

    def counts(self):
        """Events per sample and recorded unit: int64 (B, n_units recorded)."""
        if self.batch is None:
            raise RuntimeError("the EventMonitor has not recorded a run yet")
        ev = self._columns()
        n = self.units.size
        col = self._col_of_unit()[ev["unit"]]
        flat = ev["batch"].astype(np.int64) * n + col
        return np.bincount(flat, minlength=self.batch * n).reshape(self.batch, n)

    def rates(self, dt=None):
        """Mean event rate per sample and unit: counts / (n_steps * dt).

        With ``dt`` in seconds the rate is in Hz (``dt=1e-3`` for 1 ms steps).
        Default ``dt`` is the monitor's own (1.0: events per step).
        """
        dt = self.dt if dt is None else float(dt)
        steps = max(self.n_steps, 1)
        return self.counts() / (steps * dt)

    def to_dense(self):
        """The recorded events as a dense array (n_steps, B, n_units recorded).

        Column j is unit ``units[j]``; the entries hold the event values.
        """
        if self.batch is None:
            raise RuntimeError("the EventMonitor has not recorded a run yet")
        ev = self._columns()
        out = np.zeros((self.n_steps, self.batch, self.units.size), self.dtype)
        out[ev["step"], ev["batch"], self._col_of_unit()[ev["unit"]]] = ev["value"]
        return out

    # -- files -------------------------------------------------------------

    def save(self, path):
        """Write the recorded events to an HDF5 file (atomic)."""
        ev = self._columns()
        with atomic_h5(path, FILE_KINDS["events"], dt=self.dt) as f:
            for k in EVENT_FIELDS:
                f.create_dataset(k, data=ev[k], maxshape=(None,),
                                 chunks=(max(1, min(self.chunk_size, len(ev[k]) or 1)),))
            for key, value in self._header_attrs().items():
                f.attrs[key] = value
            f.attrs["units"] = self.units
            f.attrs["n_dropped"] = self.n_dropped
            f.attrs["n_events"] = len(ev["step"])
            f.attrs["complete"] = True

    @classmethod
    def load(cls, path):
        """Read an event file (saved, or streamed by a monitor with ``path``).

        A stream whose run did not end (a crash) loads up to its last flushed
        record, with a warning.
        """
        cols, attrs = _read_event_columns(path)
        mon = cls(units=None, dt=float(attrs.get("dt", 1.0)))
        fake = _AttrsFile(attrs)
        mon._read_header(fake)
        units = np.asarray(attrs.get("units", np.arange(max(mon.n_units or 0, 0))), np.int64)
        if mon.n_units is not None and not np.array_equal(units, np.arange(mon.n_units)):
            mon._units = units
        mon.n_dropped = int(attrs.get("n_dropped", 0))
        mon._buf = _Growable(dict(_FIELD_DTYPES, value=mon.dtype), capacity=max(
            1, len(cols["step"])))
        mon._buf.append(cols)
        if not bool(attrs.get("complete", True)):
            warnings.warn(f"{os.fspath(path)}: the recording did not finish (the run is "
                          f"still going on, or was interrupted); loaded the "
                          f"{len(cols['step'])} events flushed so far, steps "
                          f"0..{mon.n_steps - 1}", RuntimeWarning, stacklevel=2)
        return mon

    def __repr__(self):
        where = f", path={self.path!r}" if self.path else ""
        return (f"EventMonitor({self.pop_name!r}, n_events={self.n_events}, "
                f"n_steps={self.n_steps}{where})")


class _AttrsFile:
    """A stand-in with an ``attrs`` mapping, for _read_header on copied attributes."""

    def __init__(self, attrs):
        self.attrs = attrs


def _read_event_columns(path):
    with _reading(path, FILE_KINDS["events"]) as f:
        attrs = dict(f.attrs)
        missing = [k for k in EVENT_FIELDS if k not in f]
        if missing:
            raise FileFormatError(f"{os.fspath(path)} is an evsim events file without the "
                                  f"dataset(s) {missing}: damaged or written by other software")
        n = min(len(f[k]) for k in EVENT_FIELDS)
        n = min(n, int(attrs.get("n_events", n)))
        cols = {k: f[k][:n] for k in EVENT_FIELDS}
    return cols, attrs


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
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
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
        self._need_run()
        missing = [v for v in self.variables if v not in data]
        if missing:
            raise ValueError(f"StateMonitor on {self.pop_name!r} records {missing} but the "
                             f"population gave {sorted(k for k in data if k != 'events')}; "
                             f"choose variables from those")
        first = self._offset + int(t0)
        tc = None
        for v in self.variables:
            arr = _check_chunk(v, data[v], self.batch, self.n_units, self.pop_name)
            if tc is None:
                tc = arr.shape[0]
                self._seen(t0, tc)
                self._grow_to(first + tc)
                skip = (-first) % self.every
                row0 = (first + skip) // self.every
                local = np.arange(skip, tc, self.every)
            if local.size == 0:
                continue
            chunk = arr[local] if self._units is None else arr[local][:, :, self._units]
            self._data[v][row0:row0 + local.size] = chunk
        if tc is not None and local.size:
            self._filled = max(self._filled, row0 + local.size)

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
            f.attrs["units"] = self.units
            f.attrs["every"] = self.every
            f.create_dataset("times", data=self.times)
            g = f.create_group("data")
            for v, arr in self.data.items():
                g.create_dataset(v, data=arr)

    @classmethod
    def load(cls, path):
        with _reading(path, FILE_KINDS["state"]) as f:
            variables = [_str_attr(v) for v in f.attrs["variables"]]
            mon = cls(variables=variables, every=int(f.attrs["every"]))
            mon._read_header(f)
            units = np.asarray(f.attrs["units"], np.int64)
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
        with _reading(path, FILE_KINDS["activity"]) as f:
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
            kind = _str_attr(f.attrs.get("evsim_format"))
    except OSError as err:
        raise FileFormatError(f"{path} is not a readable HDF5 file (truncated or foreign?): "
                              f"{err}") from None
    by_file_kind = {v: MONITOR_KINDS[k] for k, v in FILE_KINDS.items()}
    if kind not in by_file_kind:
        what = "not an evsim file" if kind is None else f"an evsim {kind!r} file"
        raise FileFormatError(f"{path} is {what}, not a monitor recording "
                              f"(kinds {sorted(by_file_kind)})")
    return by_file_kind[kind].load(path)
