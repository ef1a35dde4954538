"""Event tables and sinks: the storage behind :class:`evsim.monitors.EventMonitor`.

An event is one row of four columns: ``step`` (int64), ``unit`` (int32, a
population index), ``batch`` (int32, the sample) and ``value`` (float, the
output). Rows are ordered by step, then sample, then unit.

* :class:`EventTable`: a recording. The columns with what is needed to read
  them (population size, batch, steps, recorded units, dt), the queries
  (spike trains, counts, rates, dense view) and the file format (save, load).
* Sinks take columns while a run goes on: :class:`MemorySink` grows arrays in
  memory, :class:`FileSink` streams to an HDF5 file, the live log of the run.
  Both keep at most ``max_events`` events; past it they warn once, or raise
  :class:`MonitorOverflowError` after keeping those that fit.

The file (kind ``"events"``): resizable, chunked 1-D datasets ``step``,
``unit``, ``batch``, ``value``; the evsim header (:mod:`evsim.io`) and the
attributes ``pop_name``, ``n_units``, ``batch``, ``n_steps``, ``run_starts``,
``value_dtype``, ``units``, ``n_dropped``, ``n_events`` (a reader trusts only
that many rows) and ``complete`` (False while a stream is being written, and
after a run interrupted by an exception, whose name is then in ``interrupted``).
While a stream is written (and after an interruption) ``n_steps`` counts the
steps recorded so far and ``n_steps_planned`` those the run announced.

A stream holds the lock file ``<path>.lock`` (:class:`evsim.io.FileLock`) from
its start to its end: a second writer of the same path is refused with
:class:`evsim.io.FileInUseError` before it touches the file.
"""

import contextlib
import os
import warnings

import h5py
import numpy as np

from evsim.io import FileFormatError, FileLock, atomic_h5, open_checked, write_header

__all__ = ["EventTable", "MemorySink", "FileSink", "MonitorOverflowError", "EVENT_FIELDS",
           "events_from_dense"]

EVENT_FIELDS = ("step", "unit", "batch", "value")
INDEX_DTYPES = {"step": np.int64, "unit": np.int32, "batch": np.int32}
EVENTS_KIND = "events"


class MonitorOverflowError(RuntimeError):
    """An :class:`EventMonitor` reached ``max_events`` with ``on_overflow="raise"``.

    The events that fit are kept: the monitor stays readable after the error.
    """


def column_dtypes(dtype):
    """The dtype of each column, ``value`` of ``dtype``."""
    return dict(INDEX_DTYPES, value=np.dtype(dtype))


def empty_columns(dtype=np.float32):
    return {k: np.empty(0, dt) for k, dt in column_dtypes(dtype).items()}


def units_attr(units, n_units):
    """{"units": units} for a file's attributes when a subset is recorded, else
    {}: readers take all units then (an attribute holds at most 64 KiB, about
    8000 unit indices, so the list of all units of a large population cannot be
    one)."""
    if units is None or (n_units is not None and units.size == n_units
                         and np.array_equal(units, np.arange(n_units))):
        return {}
    return {"units": np.asarray(units)}


def events_from_dense(y, units=None, dtype=None):
    """Event columns of dense outputs ``y`` (T, B, N): its non-zero entries.

    Steps count from 0. ``units``: sorted int array, keep only these columns
    (reported as population indices). One np.nonzero, no Python loop.
    """
    if units is not None:
        y = y[:, :, units]
    t, b, k = np.nonzero(y)
    value = y[t, b, k]
    unit = k if units is None else units[k]
    return dict(step=t.astype(np.int64), unit=unit.astype(np.int32), batch=b.astype(np.int32),
                value=value.astype(y.dtype if dtype is None else dtype))


def check_event_columns(where, t0, cols, shape, dtype):
    """Check event columns given from outside; return them cast, steps still from ``t0``.

    ``cols``: ``step``, ``unit``, ``batch`` (integer arrays) and ``value`` (real),
    1-D, one entry per event, ordered by step, then sample, then unit, each
    event once; ``shape``: (T, B, N) of the run, so that ``t0 + step < T``,
    ``batch < B``, ``unit < N``. Cost O(events). A ValueError starting with
    ``where`` names the first problem.
    """
    if isinstance(t0, bool) or not isinstance(t0, (int, np.integer)) or t0 < 0:
        raise ValueError(f"{where}: t0 must be an integer step >= 0, got {t0!r}")
    cols = {k: np.asarray(cols[k]) for k in EVENT_FIELDS}
    m = len(cols["step"]) if cols["step"].ndim == 1 else None
    for k, c in cols.items():
        if c.ndim != 1:
            raise ValueError(f"{where}: {k} must be a 1-D array (one entry per event), "
                             f"got shape {c.shape}")
        if c.size != m:
            raise ValueError(f"{where}: {k} has {c.size} entries but step has {m}; "
                             f"every column needs one entry per event")
        if c.dtype.kind not in ("fiu" if k == "value" else "iu"):
            raise ValueError(f"{where}: {k} must be an array of "
                             f"{'real numbers' if k == 'value' else 'integers'}, "
                             f"got dtype {c.dtype}")
    T, B, N = shape
    limits = dict(step=(T - 1 - t0, f"steps >= 0 with t0 + step in the run's steps "
                                    f"0..{T - 1} (t0 = {t0})"),
                  unit=(N - 1, f"population indices 0..{N - 1}"),
                  batch=(B - 1, f"sample indices 0..{B - 1}"))
    for k, (hi, what) in limits.items():
        if m and (cols[k].min() < 0 or cols[k].max() > hi):
            raise ValueError(f"{where}: {k} must hold {what}, got values from "
                             f"{cols[k].min()} to {cols[k].max()}")
    out = {k: cols[k].astype(dt) for k, dt in column_dtypes(dtype).items()}
    s, b, u = out["step"], out["batch"], out["unit"]
    if m > 1:  # (step, sample, unit) strictly increasing, compared without overflow
        ds, db, du = np.diff(s), np.diff(b), np.diff(u)
        back = (ds < 0) | ((ds == 0) & ((db < 0) | ((db == 0) & (du <= 0))))
        if back.any():
            i = int(back.argmax()) + 1
            raise ValueError(f"{where}: events must be ordered by step, then sample, then "
                             f"unit, each once; event {i} (step {s[i]}, sample {b[i]}, unit "
                             f"{u[i]}) follows (step {s[i - 1]}, sample {b[i - 1]}, unit "
                             f"{u[i - 1]})")
    return out


# --------------------------------------------------------------------------
# File helpers (shared with the other monitors' files)


def str_attr(value):
    return value.decode() if isinstance(value, bytes) else value


def header_attrs(pop_name, n_units, batch, n_steps, run_starts, dtype):
    """The attributes every monitor file carries about its recording."""
    return dict(pop_name=pop_name or "", n_units=-1 if n_units is None else n_units,
                batch=-1 if batch is None else batch, n_steps=n_steps,
                run_starts=np.asarray(run_starts, np.int64),
                value_dtype="float32" if dtype is None else str(np.dtype(dtype)))


def read_header(attrs):
    """Inverse of :func:`header_attrs` (plus ``dt``), with the defaults of old files."""
    n_units, batch = int(attrs.get("n_units", -1)), int(attrs.get("batch", -1))
    return dict(pop_name=str_attr(attrs.get("pop_name", "")) or None,
                n_units=None if n_units < 0 else n_units, batch=None if batch < 0 else batch,
                n_steps=int(attrs.get("n_steps", 0)),
                run_starts=[int(s) for s in np.atleast_1d(attrs.get("run_starts", []))],
                dtype=np.dtype(str_attr(attrs.get("value_dtype", "float32"))),
                dt=float(attrs.get("dt", 1.0)))


@contextlib.contextmanager
def reading(path, kind):
    """open_checked, turning a damaged file met while reading into FileFormatError."""
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


def read_event_columns(path):
    """The columns (the first ``n_events`` rows) and the attributes of an event file."""
    with reading(path, EVENTS_KIND) as f:
        attrs = dict(f.attrs)
        missing = [k for k in EVENT_FIELDS if k not in f]
        if missing:
            raise FileFormatError(f"{os.fspath(path)} is an evsim events file without the "
                                  f"dataset(s) {missing}: damaged or written by other software")
        n = min(len(f[k]) for k in EVENT_FIELDS)
        n = min(n, int(attrs.get("n_events", n)))
        cols = {k: f[k][:n] for k in EVENT_FIELDS}
    return cols, attrs


# --------------------------------------------------------------------------
# The table


class EventTable:
    """Event columns of one recording, and the queries on them.

    Parameters
    ----------
    columns : dict, optional
        ``step``, ``unit``, ``batch``, ``value``: 1-D arrays of one length,
        ordered by step, then sample, then unit (cast to the column dtypes).
        Default no events.
    n_units : int, optional
        Size of the population (None: nothing recorded yet).
    batch : int, optional
        Number of samples (None: nothing recorded yet).
    n_steps : int
        Steps covered (events have ``step < n_steps``).
    units : sequence of int, optional
        The recorded units, ascending (default all).
    dtype : dtype, optional
        Of ``value`` (default that of ``columns["value"]``, float32 without).
    dt, pop_name, run_starts, n_dropped
        Step duration, population name, first step of each run, events
        dropped past ``max_events``: carried into the file.

    Attributes
    ----------
    events : dict of the four columns; also ``step``, ``unit``,
        ``batch_index``, ``value`` (``batch`` is the number of samples).
    """

    def __init__(self, columns=None, *, n_units=None, batch=None, n_steps=0, units=None,
                 dtype=None, dt=1.0, pop_name=None, run_starts=(), n_dropped=0):
        if dtype is None:
            dtype = np.float32 if columns is None else np.asarray(columns["value"]).dtype
        self.dtype = np.dtype(dtype)
        if columns is None:
            columns = empty_columns(self.dtype)
        self.events = {k: np.asarray(columns[k], dt) for k, dt in column_dtypes(dtype).items()}
        shapes = {k: c.shape for k, c in self.events.items()}
        if len(set(shapes.values())) != 1 or self.step.ndim != 1:
            raise ValueError(f"event columns must be 1-D arrays of one length, got shapes "
                             f"{shapes}")
        self.n_units = None if n_units is None else int(n_units)
        self.batch = None if batch is None else int(batch)
        self.n_steps = int(n_steps)
        self._units = None if units is None else np.asarray(units, np.int64)
        self.dt = float(dt)
        self.pop_name = pop_name
        self.run_starts = [int(s) for s in run_starts]
        self.n_dropped = int(n_dropped)

    step = property(lambda self: self.events["step"])
    unit = property(lambda self: self.events["unit"])
    batch_index = property(lambda self: self.events["batch"])
    value = property(lambda self: self.events["value"])

    @property
    def units(self):
        """(n,) int64 the recorded units, ascending (all units when no subset)."""
        if self._units is None:
            return np.arange(self.n_units or 0, dtype=np.int64)
        return self._units

    @property
    def n_events(self):
        return len(self.step)

    def _need_run(self):
        if self.batch is None:
            raise RuntimeError("the EventMonitor has not recorded a run yet")

    def _column(self):
        """The column of each event's unit among the recorded units (no (n_units,) array)."""
        if self._units is None:
            return self.unit
        return np.searchsorted(self._units, self.unit)

    def spike_trains(self, batch=0, values=False):
        """Events of one sample, per recorded unit.

        Returns a dict ``unit -> steps`` (int64, sorted), or ``unit -> (steps,
        values)`` with ``values=True``. Every recorded unit is a key (silent
        units map to empty arrays). Multiply steps by ``dt`` for times.
        """
        self._need_run()
        if not 0 <= batch < self.batch:
            raise ValueError(f"batch must be a sample index in 0..{self.batch - 1}, got {batch}")
        sel = self.batch_index == batch
        unit, step, value = self.unit[sel], self.step[sel], self.value[sel]
        order = np.argsort(unit, kind="stable")
        unit, step, value = unit[order], step[order], value[order]
        starts = np.searchsorted(unit, self.units, side="left")
        ends = np.searchsorted(unit, self.units, side="right")
        out = {}
        for u, a, e in zip(self.units.tolist(), starts, ends, strict=True):
            out[u] = (step[a:e], value[a:e]) if values else step[a:e]
        return out

    def counts(self):
        """Events per sample and recorded unit: int64 (B, n_units recorded)."""
        self._need_run()
        n = self.units.size
        flat = self.batch_index.astype(np.int64) * n + self._column()
        return np.bincount(flat, minlength=self.batch * n).reshape(self.batch, n)

    def rates(self, dt=None):
        """Mean event rate per sample and unit: counts / (n_steps * dt).

        With ``dt`` in seconds the rate is in Hz (``dt=1e-3`` for 1 ms steps).
        Default ``dt`` is the table's own (1.0: events per step).
        """
        dt = self.dt if dt is None else float(dt)
        return self.counts() / (max(self.n_steps, 1) * dt)

    def to_dense(self):
        """The events as a dense array (n_steps, B, n_units recorded).

        Column j is unit ``units[j]``; the entries hold the event values.
        """
        self._need_run()
        out = np.zeros((self.n_steps, self.batch, self.units.size), self.dtype)
        out[self.step, self.batch_index, self._column()] = self.value
        return out

    def file_attrs(self):
        """The attributes of the file (all but ``n_events`` and ``complete``)."""
        return dict(header_attrs(self.pop_name, self.n_units, self.batch, self.n_steps,
                                 self.run_starts, self.dtype),
                    **units_attr(self.units, self.n_units), dt=self.dt,
                    n_dropped=self.n_dropped)

    def save(self, path, chunk_size=16384):
        """Write the table to an HDF5 event file (atomic)."""
        with atomic_h5(path, EVENTS_KIND, dt=self.dt) as f:
            for k in EVENT_FIELDS:
                col = self.events[k]
                f.create_dataset(k, data=col, maxshape=(None,),
                                 chunks=(max(1, min(chunk_size, len(col) or 1)),))
            for key, value in self.file_attrs().items():
                f.attrs[key] = value
            f.attrs["n_events"] = self.n_events
            f.attrs["complete"] = True

    @classmethod
    def load(cls, path):
        """Read an event file (saved, or streamed by a :class:`FileSink`).

        A stream whose run did not end (a crash) loads up to its last flushed
        record, with a warning.
        """
        cols, attrs = read_event_columns(path)
        head = read_header(attrs)
        n_units = head["n_units"]
        units = np.asarray(attrs.get("units", np.arange(n_units or 0)), np.int64)
        table = cls(cols, n_units=n_units, batch=head["batch"], n_steps=head["n_steps"],
                    units=units, dtype=head["dtype"], dt=head["dt"], pop_name=head["pop_name"],
                    run_starts=head["run_starts"], n_dropped=int(attrs.get("n_dropped", 0)))
        if not bool(attrs.get("complete", True)):
            why = str_attr(attrs.get("interrupted", ""))
            why = (f"was interrupted by {why}" if why else
                   "is still going on, or its process was killed")
            planned = attrs.get("n_steps_planned")
            planned = "" if planned is None else f" of the {int(planned)} planned"
            warnings.warn(f"{os.fspath(path)}: the recording did not finish (the run {why}); "
                          f"loaded the {table.n_events} events of the {table.n_steps} "
                          f"steps recorded{planned} (steps 0..{table.n_steps - 1})",
                          RuntimeWarning, stacklevel=3)
        return table

    def __repr__(self):
        return (f"EventTable({self.pop_name!r}, n_events={self.n_events}, "
                f"n_steps={self.n_steps})")


# --------------------------------------------------------------------------
# Sinks


class _Sink:
    """What both sinks share: at most ``max_events`` events, then warn or raise.

    ``name`` starts the overflow message ("EventMonitor on 'pop'").
    """

    def __init__(self, dtype, max_events=None, on_overflow="warn", name="EventMonitor"):
        self.dtype = np.dtype(dtype)
        self.max_events = max_events
        self.on_overflow = on_overflow
        self.name = name
        self.n_dropped = 0
        self._warned = False

    def append(self, cols, n_steps):
        """Keep the events of ``cols`` that fit; the recording now covers ``n_steps``.

        Called by a monitor's ``record``: a warning points at its caller.
        """
        m = len(cols["step"])
        held = self.n_events
        overflow = self.max_events is not None and held + m > self.max_events
        if overflow:
            room = max(self.max_events - held, 0)
            self.n_dropped += m - room
            cols = {k: v[:room] for k, v in cols.items()}
        self._write(cols, n_steps)
        if not overflow:
            return
        msg = (f"{self.name} reached max_events={self.max_events}: kept the first "
               f"{self.max_events} events, dropped {self.n_dropped} so far. Raise "
               f"max_events, record fewer units, or stream to a file with path=...")
        if self.on_overflow == "raise":
            self.flush()
            raise MonitorOverflowError(msg)
        if not self._warned:
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            self._warned = True

    def flush(self):
        """Make every appended event readable (no-op in memory)."""

    def close(self):
        """Release the sink's resources (no-op in memory)."""


class MemorySink(_Sink):
    """Event columns in memory, grown by amortised doubling."""

    def __init__(self, dtype, max_events=None, on_overflow="warn", name="EventMonitor",
                 capacity=1024):
        super().__init__(dtype, max_events, on_overflow, name)
        self._arrays = {k: np.empty(capacity, dt) for k, dt in column_dtypes(dtype).items()}
        self.n_events = 0

    @property
    def capacity(self):
        return len(self._arrays["step"])

    def _write(self, cols, n_steps):
        n, need = self.n_events, self.n_events + len(cols["step"])
        if need > self.capacity:
            new_cap = max(need, 2 * self.capacity)
            for k, arr in self._arrays.items():
                grown = np.empty(new_cap, arr.dtype)
                grown[:n] = arr[:n]
                self._arrays[k] = grown
        for k, col in cols.items():
            self._arrays[k][n:need] = col
        self.n_events = need

    def columns(self):
        """The columns held (views, valid until the next append)."""
        return {k: arr[:self.n_events] for k, arr in self._arrays.items()}


class FileSink(_Sink):
    """Event columns streamed to an HDF5 event file while a run goes on.

    Each ``append`` queues its columns; every ``flush_every`` appends (and at
    :meth:`flush`) they go to the resizable datasets, then the attributes
    ``n_steps``, ``n_dropped`` and ``n_events`` (last: a reader trusts only the
    rows it covers) are written and the file is flushed. Memory stays bounded
    by ``flush_every`` appends and a crash leaves the file readable up to the
    last flush. The file is written in place (it is the live log of the run);
    ``complete`` stays False until :meth:`finish`. HDF5 locks a file open for
    writing: another process reads it from a copy, or with
    ``HDF5_USE_FILE_LOCKING=FALSE``.
    """

    def __init__(self, path, dtype, flush_every=1, chunk_size=16384, max_events=None,
                 on_overflow="warn", name="EventMonitor"):
        super().__init__(dtype, max_events, on_overflow, name)
        self.path = os.fspath(path)
        self.flush_every = int(flush_every)
        self.chunk_size = int(chunk_size)
        self._pending = []
        self._n_file = 0
        self._n_steps = 0
        self._file = None
        self._lock = FileLock(self.path, f"an {name} stream")

    def open(self, attrs, new):
        """Start a new file (``new``) or continue this one; mark it incomplete.

        ``attrs``: the file attributes of the recording (:meth:`EventTable.file_attrs`
        less ``n_dropped``).
        """
        if new:
            self.close()
            self._lock.acquire()  # before the file is touched: refuse a second writer
            try:
                f = h5py.File(self.path, "w")
            except BaseException:
                self._lock.release()
                raise
            write_header(f, EVENTS_KIND, dt=attrs["dt"])
            for k, dt in column_dtypes(self.dtype).items():
                f.create_dataset(k, shape=(0,), maxshape=(None,), dtype=dt,
                                 chunks=(self.chunk_size,))
            self._file, self._n_file = f, 0
        elif self._file is None:
            self._lock.acquire()
            try:
                self._file = h5py.File(self.path, "a")
            except BaseException:
                self._lock.release()
                raise
            self._n_file = int(self._file.attrs["n_events"])
        self._write_attrs(attrs, complete=False)

    @property
    def n_events(self):
        return self._n_file + sum(len(c["step"]) for c in self._pending)

    def _write(self, cols, n_steps):
        self._n_steps = n_steps
        self._pending.append(cols)
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self):
        """Write the pending columns to the file and flush it to disk."""
        if self._file is None:
            return
        pending, self._pending = self._pending, []
        m = sum(len(c["step"]) for c in pending)
        f, n = self._file, self._n_file
        if m:
            for k in EVENT_FIELDS:
                ds = f[k]
                ds.resize((n + m,))
                ds[n:n + m] = pending[0][k] if len(pending) == 1 else \
                    np.concatenate([c[k] for c in pending])
            self._n_file = n + m
        f.attrs["n_steps"] = self._n_steps
        f.attrs["n_dropped"] = self.n_dropped
        f.attrs["n_events"] = self._n_file  # last: a reader trusts only what it covers
        f.flush()

    def _write_attrs(self, attrs, complete):
        f = self._file
        for key, value in attrs.items():
            f.attrs[key] = value
        self._n_steps = attrs["n_steps"]
        f.attrs["n_dropped"] = self.n_dropped
        f.attrs["n_events"] = self._n_file
        f.attrs["complete"] = bool(complete)
        f.flush()

    def finish(self, attrs, interrupted=None):
        """End of a run: flush, write ``attrs``, mark the file complete and close it.

        ``interrupted``: the name of the exception that stopped the run; the
        file is then left incomplete with that name in ``interrupted``.
        """
        if self._file is not None:
            self.flush()
            self._write_attrs(attrs, complete=interrupted is None)
            if interrupted is not None:
                self._file.attrs["interrupted"] = interrupted
                self._file.flush()
            self._release()

    def close(self):
        """Flush and close the file without marking it complete."""
        self.flush()
        self._release()

    def _release(self):
        try:
            if self._file is not None:
                with contextlib.suppress(Exception):
                    self._file.flush()
                self._file.close()
                self._file = None
        finally:
            self._lock.release()

    def columns(self):
        """The columns written so far (read back from the file)."""
        if self._pending:
            self.flush()
        if not self._n_file:
            return empty_columns(self.dtype)
        if self._file is not None:
            return {k: self._file[k][:self._n_file] for k in EVENT_FIELDS}
        return read_event_columns(self.path)[0]

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()
