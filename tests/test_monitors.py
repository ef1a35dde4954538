"""Monitors on synthetic data: no network needed.

The network drives monitors through start_run / record / end_run; these tests
do the same by hand with random outputs.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from evsim import monitors
from evsim.events import EventTable, FileSink
from evsim.io import FileFormatError
from evsim.monitors import (
    ActivityMonitor,
    EventMonitor,
    MonitorOverflowError,
    StateMonitor,
    load_events,
    make_monitor,
)


def random_y(T=30, B=3, N=11, p=0.2, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    mask = rng.random((T, B, N)) < p
    return (mask * rng.uniform(0.1, 2.0, (T, B, N))).astype(dtype)


def run(mon, y, chunks=1, variables=("y", "v", "h"), extra=None, end=True):
    """Drive a monitor over y (T, B, N) in ``chunks`` pieces."""
    T, B, N = y.shape
    mon.start_run("pop", N, B, T, y.dtype, variables)
    bounds = np.linspace(0, T, chunks + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        data = {"y": y[a:b]}
        for k, v in (extra or {}).items():
            data[k] = v[a:b]
        mon.record(int(a), data)
    if end:
        mon.end_run()
    return mon


def nonzero_columns(y, units=None):
    if units is not None:
        y = y[:, :, units]
    t, b, k = np.nonzero(y)
    unit = k if units is None else np.asarray(units)[k]
    return t, unit, b, y[t, b, k]


# --------------------------------------------------------------------------
# Event monitor: extraction


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(30, 3, 11), (7, 1, 5), (1, 5, 1)])
@pytest.mark.parametrize("chunks", [1, 4])
def test_events_equal_nonzero(dtype, shape, chunks):
    T = shape[0]
    y = random_y(*shape, dtype=dtype)
    mon = run(EventMonitor(), y, chunks=min(chunks, T))
    t, unit, b, val = nonzero_columns(y)
    np.testing.assert_array_equal(mon.step, t)
    np.testing.assert_array_equal(mon.unit, unit)
    np.testing.assert_array_equal(mon.batch_index, b)
    np.testing.assert_array_equal(mon.value, val)
    assert mon.value.dtype == dtype
    assert mon.step.dtype == np.int64 and mon.unit.dtype == np.int32
    assert mon.n_events == np.count_nonzero(y)
    assert mon.n_steps == T


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_no_events_and_all_events(p):
    y = random_y(p=p)
    mon = run(EventMonitor(), y)
    assert mon.n_events == np.count_nonzero(y)
    np.testing.assert_array_equal(mon.to_dense(), y)
    np.testing.assert_array_equal(mon.counts(), np.count_nonzero(y, axis=0))


def test_to_dense_counts_rates_round_trip():
    y = random_y(T=25, B=4, N=9)
    mon = run(EventMonitor(dt=0.5), y, chunks=3)
    np.testing.assert_array_equal(mon.to_dense(), y)
    np.testing.assert_array_equal(mon.counts(), np.count_nonzero(y, axis=0))
    np.testing.assert_allclose(mon.rates(), np.count_nonzero(y, axis=0) / (25 * 0.5))
    np.testing.assert_allclose(mon.rates(dt=1e-3), np.count_nonzero(y, axis=0) / 25e-3)


def test_spike_trains():
    y = random_y(T=20, B=2, N=6)
    mon = run(EventMonitor(), y)
    for b in range(2):
        trains = mon.spike_trains(batch=b)
        assert sorted(trains) == list(range(6))
        with_values = mon.spike_trains(batch=b, values=True)
        for u in range(6):
            want = np.nonzero(y[:, b, u])[0]
            np.testing.assert_array_equal(trains[u], want)
            steps, vals = with_values[u]
            np.testing.assert_array_equal(steps, want)
            np.testing.assert_array_equal(vals, y[want, b, u])
    with pytest.raises(ValueError, match="batch"):
        mon.spike_trains(batch=2)


def test_unit_subset():
    y = random_y(T=15, B=2, N=10)
    units = [2, 5, 7]
    mon = run(EventMonitor(units=[7, 2, 5]), y, chunks=2)  # kept sorted
    t, unit, b, val = nonzero_columns(y, units)
    np.testing.assert_array_equal(mon.step, t)
    np.testing.assert_array_equal(mon.unit, unit)
    np.testing.assert_array_equal(mon.value, val)
    np.testing.assert_array_equal(mon.units, units)
    np.testing.assert_array_equal(mon.to_dense(), y[:, :, units])
    np.testing.assert_array_equal(mon.counts(), np.count_nonzero(y[:, :, units], axis=0))
    assert sorted(mon.spike_trains(1)) == sorted(units)


def test_unit_subset_checks():
    with pytest.raises(ValueError, match="units"):
        EventMonitor(units=[1, 1])
    with pytest.raises(ValueError, match="units"):
        EventMonitor(units=[-1])
    mon = EventMonitor("pop", units=[3, 12])
    with pytest.raises(ValueError, match="12"):
        mon.start_run("pop", 10, 1, 5, "float32", ("y",))


def test_event_lists_in_data_are_ignored():
    y = random_y(T=6, B=2, N=4)
    mon = EventMonitor()
    mon.start_run("pop", 4, 2, 6, "float64", None)
    bad = (np.zeros((3, 2, 4), np.int32), np.zeros((3, 2), np.int32))
    mon.record(0, {"y": y, "events": bad})
    np.testing.assert_array_equal(mon.to_dense(), y)


def test_record_checks():
    mon = EventMonitor("pop")
    with pytest.raises(RuntimeError, match="start_run"):
        mon.record(0, {"y": np.zeros((2, 1, 3))})
    mon.start_run("pop", 3, 1, 2, "float32", None)
    with pytest.raises(ValueError, match=r"shape \(steps, 1, 3\)"):
        mon.record(0, {"y": np.zeros((2, 2, 3))})
    with pytest.raises(ValueError, match="one monitor per population"):
        mon.start_run("other", 3, 1, 2, "float32", None)


def test_runs_reset_or_append():
    y1, y2 = random_y(T=10, seed=1), random_y(T=7, seed=2)
    mon = EventMonitor()
    run(mon, y1)
    run(mon, y2)
    np.testing.assert_array_equal(mon.to_dense(), y2)
    assert mon.run_starts == [0]

    mon = EventMonitor(append=True)
    run(mon, y1)
    run(mon, y2)
    np.testing.assert_array_equal(mon.to_dense(), np.concatenate([y1, y2]))
    assert mon.run_starts == [0, 10] and mon.n_steps == 17
    with pytest.raises(ValueError, match="append=True"):
        run(mon, random_y(T=5, N=3))
    assert mon.n_steps == 17  # the refused run changed nothing


# --------------------------------------------------------------------------
# Event monitor: bounded memory


def test_overflow_warns_and_keeps_first_events():
    y = random_y(T=40, B=2, N=10, p=0.3)
    total = np.count_nonzero(y)
    mon = EventMonitor(max_events=50)
    with pytest.warns(RuntimeWarning, match="max_events=50"):
        run(mon, y, chunks=5)
    assert mon.n_events == 50 and mon.n_dropped == total - 50
    t, unit, b, val = nonzero_columns(y)
    np.testing.assert_array_equal(mon.step, t[:50])
    np.testing.assert_array_equal(mon.unit, unit[:50])
    np.testing.assert_array_equal(mon.value, val[:50])


def test_overflow_raise_keeps_data():
    y = random_y(T=40, B=2, N=10, p=0.3)
    mon = EventMonitor(max_events=30, on_overflow="raise")
    mon.start_run("pop", 10, 2, 40, "float64", None)
    with pytest.raises(MonitorOverflowError, match="max_events=30"):
        for t in range(40):
            mon.record(t, {"y": y[t:t + 1]})
    assert mon.n_events == 30
    np.testing.assert_array_equal(mon.value, nonzero_columns(y)[3][:30])


def test_buffer_grows_by_doubling():
    y = random_y(T=300, B=4, N=50, p=0.3)
    mon = EventMonitor()
    mon.start_run("pop", 50, 4, 300, "float64", None)
    caps = set()
    for t in range(300):
        mon.record(t, {"y": y[t:t + 1]})
        caps.add(mon._sink.capacity)
    assert len(caps) <= 10  # amortised: few reallocations for ~18000 events
    np.testing.assert_array_equal(mon.to_dense(), y)


# --------------------------------------------------------------------------
# Event monitor: HDF5


def test_save_load_round_trip(tmp_path):
    y = random_y(T=20, B=2, N=7).astype(np.float32)
    mon = run(EventMonitor(units=[1, 4, 6], dt=0.25), y)
    mon.save(tmp_path / "ev.h5")
    back = EventMonitor.load(tmp_path / "ev.h5")
    for k in ("step", "unit", "batch", "value"):
        np.testing.assert_array_equal(back.events[k], mon.events[k])
    np.testing.assert_array_equal(back.units, [1, 4, 6])
    assert back.dt == 0.25 and back.n_steps == 20 and back.pop_name == "pop"
    np.testing.assert_array_equal(back.to_dense(), y[:, :, [1, 4, 6]])
    assert back.value.dtype == np.float32
    assert isinstance(monitors.load(tmp_path / "ev.h5"), EventMonitor)


def test_save_empty(tmp_path):
    mon = run(EventMonitor(), random_y(p=0.0))
    mon.save(tmp_path / "empty.h5")
    back = load_events(tmp_path / "empty.h5")
    assert back.n_events == 0 and back.to_dense().shape == (30, 3, 11)


@pytest.mark.parametrize("flush_every", [1, 3])
def test_stream_round_trip(tmp_path, flush_every):
    y = random_y(T=30, B=3, N=11)
    path = tmp_path / "stream.h5"
    mon = run(EventMonitor(path=path, flush_every=flush_every), y, chunks=6)
    assert isinstance(mon._sink, FileSink)  # nothing held in memory
    with h5py.File(path, "r") as f:
        assert bool(f.attrs["complete"]) and int(f.attrs["n_events"]) == np.count_nonzero(y)
        assert f["step"].maxshape == (None,) and f["step"].chunks is not None
    back = load_events(path)
    np.testing.assert_array_equal(back.to_dense(), y)
    np.testing.assert_array_equal(mon.to_dense(), y)  # the live monitor reads its file


def test_stream_readable_mid_run(tmp_path):
    y = random_y(T=30, B=3, N=11)
    path = tmp_path / "live.h5"
    mon = EventMonitor(path=path)
    mon.start_run("pop", 11, 3, 30, "float64", None)
    mon.record(0, {"y": y[:10]})
    mon.record(10, {"y": y[10:20]})
    assert mon.n_events == np.count_nonzero(y[:20])
    copy = tmp_path / "copy.h5"
    shutil.copy(path, copy)  # what a reader sees while the run goes on
    with pytest.warns(RuntimeWarning, match="did not finish"):
        back = load_events(copy)
    np.testing.assert_array_equal(back.to_dense()[:20], y[:20])
    assert back.n_events == np.count_nonzero(y[:20])
    mon.record(20, {"y": y[20:]})
    mon.end_run()
    np.testing.assert_array_equal(load_events(path).to_dense(), y)


def test_stream_survives_crash(tmp_path):
    """A process killed mid-run leaves the file readable up to its last record."""
    path = tmp_path / "crash.h5"
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from evsim.monitors import EventMonitor
        y = np.zeros((10, 2, 5)); y[::2, 1, 3] = 1.5; y[1, 0, 0] = 0.5
        mon = EventMonitor(path={str(path)!r})
        mon.start_run("pop", 5, 2, 10, "float64", None)
        mon.record(0, {{"y": y[:4]}})
        mon.record(4, {{"y": y[4:8]}})
        os._exit(3)   # crash: no end_run, no close, no interpreter cleanup
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3, proc.stderr
    with pytest.warns(RuntimeWarning, match="did not finish"):
        back = load_events(path)
    assert back.n_events == 5  # steps 0, 2, 4, 6 of unit 3 and step 1 of unit 0
    np.testing.assert_array_equal(back.spike_trains(1)[3], [0, 2, 4, 6])
    np.testing.assert_array_equal(back.spike_trains(0, values=True)[0][1], [0.5])


def test_stream_locked_by_writer(tmp_path):
    """Reading a live stream from another process names the lock and the ways out."""
    path = tmp_path / "live.h5"
    mon = EventMonitor(path=path)
    mon.start_run("pop", 5, 1, 10, "float64", None)
    mon.record(0, {"y": np.ones((3, 1, 5))})
    code = textwrap.dedent(f"""
        from evsim.io import FileFormatError
        from evsim.monitors import load_events
        try:
            load_events({str(path)!r})
        except FileFormatError as err:
            print(err)
    """)
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    mon.end_run()
    if not proc.stdout:  # a file system without locks: the read simply worked
        assert proc.returncode == 0, proc.stderr
    else:
        assert "open for writing" in proc.stdout and "HDF5_USE_FILE_LOCKING" in proc.stdout


def test_stream_append_runs(tmp_path):
    y1, y2 = random_y(T=8, seed=1), random_y(T=5, seed=2)
    path = tmp_path / "runs.h5"
    mon = EventMonitor(path=path, append=True)
    run(mon, y1)
    run(mon, y2)
    back = load_events(path)
    np.testing.assert_array_equal(back.to_dense(), np.concatenate([y1, y2]))
    assert back.run_starts == [0, 8]


def test_stream_with_max_events(tmp_path):
    y = random_y(T=20, p=0.5)
    path = tmp_path / "cap.h5"
    mon = EventMonitor(path=path, max_events=40)
    with pytest.warns(RuntimeWarning, match="max_events"):
        run(mon, y, chunks=4)
    back = load_events(path)
    assert back.n_events == 40 and back.n_dropped == np.count_nonzero(y) - 40


# --------------------------------------------------------------------------
# Event monitor: event columns (record_events, the compiled loop's path)


def run_events(mon, y, chunks=1, end=True, index_dtype=np.int64):
    """Drive a monitor like ``run``, giving each chunk as the event columns of all units."""
    T, B, N = y.shape
    mon.start_run("pop", N, B, T, y.dtype, ("y",))
    bounds = np.linspace(0, T, chunks + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        t, unit, batch, value = nonzero_columns(y[a:b])
        mon.record_events(int(a), t.astype(index_dtype), unit.astype(index_dtype),
                          batch.astype(index_dtype), value)
    if end:
        mon.end_run()
    return mon


def assert_same_events(got, want):
    for k in ("step", "unit", "batch", "value"):
        np.testing.assert_array_equal(got.events[k], want.events[k])
        assert got.events[k].dtype == want.events[k].dtype
    assert (got.n_events, got.n_dropped, got.n_steps, got.run_starts) == \
        (want.n_events, want.n_dropped, want.n_steps, want.run_starts)
    np.testing.assert_array_equal(got.units, want.units)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(30, 3, 11), (7, 1, 9), (1, 4, 8)])
@pytest.mark.parametrize("p", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("units", [None, [2, 5, 7]])
def test_record_events_equals_record(dtype, shape, p, units):
    y = random_y(*shape, p=p, dtype=dtype)
    chunks = min(4, shape[0])
    want = run(EventMonitor(units=units), y, chunks=chunks)
    got = run_events(EventMonitor(units=units), y, chunks=chunks)
    assert_same_events(got, want)
    np.testing.assert_array_equal(got.to_dense(), want.to_dense())
    np.testing.assert_array_equal(got.counts(), want.counts())


@pytest.mark.parametrize("index_dtype", [np.int32, np.uint16, np.int64])
def test_record_events_index_dtypes_and_value_cast(index_dtype):
    y = random_y(T=12, B=2, N=6, dtype=np.float64)
    mon = EventMonitor(units=[0, 3])
    mon.start_run("pop", 6, 2, 12, "float32", None)
    t, unit, b, val = nonzero_columns(y)
    mon.record_events(0, t.astype(index_dtype), unit.astype(index_dtype),
                      b.astype(index_dtype), val)
    assert mon.value.dtype == np.float32 and mon.step.dtype == np.int64
    assert mon.unit.dtype == np.int32 and mon.batch_index.dtype == np.int32
    np.testing.assert_array_equal(mon.to_dense(), y[:, :, [0, 3]].astype(np.float32))


def test_record_events_steps_relative_to_t0_one_call_per_step():
    y = random_y(T=20, B=3, N=7)
    want = run(EventMonitor(), y, chunks=20)
    mon = EventMonitor()
    mon.start_run("pop", 7, 3, 20, y.dtype, None)
    for t in range(20):
        _, unit, b, val = nonzero_columns(y[t:t + 1])
        mon.record_events(t, np.zeros(unit.size, np.int64), unit, b, val)
    mon.end_run()
    assert_same_events(mon, want)


def test_record_events_copies_its_input():
    """The compiled loop may reuse its buffers after the call."""
    mon = EventMonitor()
    mon.start_run("pop", 4, 1, 3, "float64", None)
    step, unit, batch, value = (np.array([0, 1]), np.array([1, 2]), np.zeros(2, np.int32),
                                np.array([0.5, 1.5]))
    mon.record_events(0, step, unit, batch, value)
    for col in (step, unit, value):
        col[:] = 3
    np.testing.assert_array_equal(mon.unit, [1, 2])
    np.testing.assert_array_equal(mon.value, [0.5, 1.5])


def test_record_events_cost_does_not_grow_with_the_population():
    """Only the events are touched: a run of 1e9 units x 1000 samples x 1e6 steps is fine."""
    N, B, T = 10**9, 1000, 10**6
    for units in (None, [5, 10**9 - 1]):
        mon = EventMonitor(units=units)
        mon.start_run("pop", N, B, T, "float32", None)
        mon.record_events(T - 10, np.array([0, 0, 9]), np.array([5, 7, N - 1]),
                          np.array([999, 999, 0]), np.ones(3))
        mon.end_run()
        kept = [0, 1, 2] if units is None else [0, 2]
        np.testing.assert_array_equal(mon.step, np.array([T - 10, T - 10, T - 1])[kept])
        np.testing.assert_array_equal(mon.unit, np.array([5, 7, N - 1])[kept])
        if units is not None:
            assert mon.counts().shape == (B, 2) and mon.counts().sum() == 2


@pytest.mark.parametrize("flush_every", [1, 3])
@pytest.mark.parametrize("units", [None, [1, 4, 6]])
def test_record_events_streams_to_file(tmp_path, flush_every, units):
    y = random_y(T=30, B=3, N=11)
    want = run(EventMonitor(units=units, path=tmp_path / "a.h5", flush_every=flush_every), y,
               chunks=6)
    got = run_events(EventMonitor(units=units, path=tmp_path / "b.h5",
                                  flush_every=flush_every), y, chunks=6)
    assert isinstance(got._sink, FileSink)
    assert_same_events(got, want)
    assert_same_events(load_events(tmp_path / "b.h5"), load_events(tmp_path / "a.h5"))
    with h5py.File(tmp_path / "a.h5", "r") as fa, h5py.File(tmp_path / "b.h5", "r") as fb:
        assert sorted(fa.attrs) == sorted(fb.attrs) and bool(fb.attrs["complete"])
        assert int(fb.attrs["n_events"]) == want.n_events


def test_record_events_stream_readable_mid_run(tmp_path):
    y = random_y(T=30, B=3, N=11)
    path = tmp_path / "live.h5"
    mon = run_events(EventMonitor(path=path), y[:20], end=False)
    copy = tmp_path / "copy.h5"
    shutil.copy(path, copy)
    with pytest.warns(RuntimeWarning, match="did not finish"):
        back = load_events(copy)
    np.testing.assert_array_equal(back.to_dense(), y[:20])
    mon.end_run()


def test_record_events_append_after_record():
    y1, y2 = random_y(T=10, seed=1), random_y(T=7, seed=2)
    mon = EventMonitor(append=True)
    run(mon, y1)
    run_events(mon, y2, chunks=3)
    np.testing.assert_array_equal(mon.to_dense(), np.concatenate([y1, y2]))
    assert mon.run_starts == [0, 10] and mon.n_steps == 17


@pytest.mark.parametrize("units", [None, [0, 3, 8]])
def test_record_events_overflow_warns_like_record(units):
    y = random_y(T=40, B=2, N=10, p=0.3)
    with pytest.warns(RuntimeWarning, match="max_events=20"):
        want = run(EventMonitor(units=units, max_events=20), y, chunks=5)
    with pytest.warns(RuntimeWarning, match="max_events=20") as caught:
        got = run_events(EventMonitor(units=units, max_events=20), y, chunks=5)
    assert len(caught) == 1  # warned once
    assert caught[0].filename == __file__  # pointed at the caller of record_events
    assert got.n_events == 20 and got.n_dropped > 0
    assert_same_events(got, want)


def test_record_events_overflow_raise_keeps_data(tmp_path):
    y = random_y(T=40, B=2, N=10, p=0.3)
    for path in (None, tmp_path / "cap.h5"):
        mon = EventMonitor(max_events=30, on_overflow="raise", path=path, flush_every=5)
        mon.start_run("pop", 10, 2, 40, "float64", None)
        with pytest.raises(MonitorOverflowError, match="max_events=30"):
            for t in range(40):
                _, unit, b, val = nonzero_columns(y[t:t + 1])
                mon.record_events(t, np.zeros(unit.size, np.int64), unit, b, val)
        assert mon.n_events == 30
        np.testing.assert_array_equal(mon.value, nonzero_columns(y)[3][:30])
        mon.end_run()
        if path is not None:
            assert load_events(path).n_events == 30


GOOD = dict(step=np.array([0, 0, 1]), unit=np.array([1, 2, 0]), batch=np.array([0, 0, 1]),
            value=np.array([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("change, match", [
    (dict(t0=-1), "t0 must be an integer"),
    (dict(t0=1.0), "t0 must be an integer"),
    (dict(step=np.zeros((3, 1), np.int64)), "step must be a 1-D array"),
    (dict(unit=np.array([1, 2])), "unit has 2 entries but step has 3"),
    (dict(step=np.array([0.0, 0.0, 1.0])), "step must be an array of integers"),
    (dict(batch=np.array([0, 0, 1], np.float32)), "batch must be an array of integers"),
    (dict(value=np.array(["a", "b", "c"])), "value must be an array of real numbers"),
    (dict(unit=np.array([1, 2, 4])), r"unit must hold population indices 0..3, got .* 4"),
    (dict(unit=np.array([-1, 2, 3])), r"unit must hold population indices 0..3, got .*-1"),
    (dict(batch=np.array([0, 0, 2])), r"batch must hold sample indices 0..1"),
    (dict(step=np.array([0, 0, 5])), r"step must hold steps >= 0 with t0 \+ step in the "
                                     r"run's steps 0..5 \(t0 = 1\)"),
    (dict(step=np.array([-1, 0, 1])), "step must hold steps >= 0"),
    (dict(step=np.array([1, 1, 0])), r"ordered by step.*event 2 \(step 0, sample 1, unit 0\) "
                                     r"follows \(step 1, sample 0, unit 2\)"),
    (dict(batch=np.array([1, 0, 1])), "ordered by step, then sample"),
    (dict(unit=np.array([2, 1, 0])), "ordered by step, then sample, then unit"),
    (dict(unit=np.array([1, 1, 0])), "each once"),
])
def test_record_events_bad_input(change, match):
    mon = EventMonitor("pop", units=[0, 2])
    mon.start_run("pop", 4, 2, 6, "float64", None)
    args = dict(GOOD, t0=1, **change) if "t0" not in change else dict(GOOD, **change)
    with pytest.raises(ValueError, match=match) as err:
        mon.record_events(args["t0"], args["step"], args["unit"], args["batch"], args["value"])
    assert "record_events on 'pop'" in str(err.value)
    assert mon.n_events == 0  # nothing recorded
    mon.record_events(1, **GOOD)  # the same call with good columns is accepted
    np.testing.assert_array_equal(mon.step, [1, 2])
    np.testing.assert_array_equal(mon.unit, [2, 0])


def test_record_events_empty_and_before_start():
    mon = EventMonitor()
    with pytest.raises(RuntimeError, match=r"record_events\(\) called before start_run"):
        mon.record_events(0, [], [], [], [])
    mon.start_run("pop", 3, 2, 4, "float32", None)
    empty = np.empty(0, np.int64)
    mon.record_events(0, empty, empty, empty, np.empty(0))
    mon.end_run()
    assert mon.n_events == 0 and mon.to_dense().shape == (4, 2, 3)


# --------------------------------------------------------------------------
# The event table behind the monitor


def test_event_table_is_the_monitors_queries(tmp_path):
    y = random_y(T=20, B=2, N=7).astype(np.float32)
    mon = run(EventMonitor(units=[1, 4, 6], dt=0.25), y)
    table = mon.table
    assert isinstance(table, EventTable) and table.batch == 2 and table.n_units == 7
    np.testing.assert_array_equal(table.to_dense(), y[:, :, [1, 4, 6]])
    np.testing.assert_allclose(table.rates(), mon.rates())
    table.save(tmp_path / "t.h5")
    back = EventTable.load(tmp_path / "t.h5")
    assert_same_events(back, mon)
    assert back.dt == 0.25 and back.pop_name == "pop"
    assert_same_events(load_events(tmp_path / "t.h5"), mon)
    assert EventTable().n_events == 0
    with pytest.raises(RuntimeError, match="not recorded a run"):
        EventTable().counts()
    with pytest.raises(ValueError, match="one length"):
        EventTable(dict(step=[0], unit=[0, 1], batch=[0], value=[1.0]))


# --------------------------------------------------------------------------
# Foreign and damaged files


def test_plain_text_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not HDF5\n")
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        load_events(path)
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        monitors.load(path)


def test_foreign_hdf5(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("step", data=np.arange(3))
    with pytest.raises(FileFormatError, match="not one written by evsim"):
        load_events(path)
    with pytest.raises(FileFormatError, match="not an evsim file"):
        monitors.load(path)


def test_wrong_kind(tmp_path):
    y = random_y()
    st = run(StateMonitor(variables="v"), y, extra={"v": y})
    st.save(tmp_path / "state.h5")
    with pytest.raises(FileFormatError, match="expected 'events'"):
        load_events(tmp_path / "state.h5")


def test_truncated_file(tmp_path):
    y = random_y(T=200, B=4, N=50)
    path = tmp_path / "ev.h5"
    run(EventMonitor(), y).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError):
        load_events(path)


def test_events_file_missing_dataset(tmp_path):
    path = tmp_path / "ev.h5"
    run(EventMonitor(), random_y()).save(path)
    with h5py.File(path, "a") as f:
        del f["value"]
    with pytest.raises(FileFormatError, match="value"):
        load_events(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_events(tmp_path / "nope.h5")


# --------------------------------------------------------------------------
# State monitor


@pytest.mark.parametrize("every", [1, 3, 7])
@pytest.mark.parametrize("chunks", [1, 5, 23])
def test_state_every_k(every, chunks):
    rng = np.random.default_rng(0)
    T, B, N = 23, 2, 6
    v, h = rng.normal(size=(2, T, B, N))
    mon = run(StateMonitor(variables=["v", "h"], every=every), random_y(T, B, N),
              chunks=chunks, extra={"v": v, "h": h})
    np.testing.assert_array_equal(mon.times, np.arange(0, T, every))
    np.testing.assert_array_equal(mon.data["v"], v[::every])
    np.testing.assert_array_equal(mon["h"], h[::every])


def test_state_unit_subset_and_append():
    rng = np.random.default_rng(1)
    v1, v2 = rng.normal(size=(10, 2, 5)), rng.normal(size=(6, 2, 5))
    mon = StateMonitor(variables="v", units=[0, 4], every=2, append=True)
    run(mon, random_y(10, 2, 5), extra={"v": v1})
    run(mon, random_y(6, 2, 5), extra={"v": v2})
    both = np.concatenate([v1, v2])
    np.testing.assert_array_equal(mon.times, np.arange(0, 16, 2))
    np.testing.assert_array_equal(mon.data["v"], both[::2][:, :, [0, 4]])


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("chunks", [1, 5, 23])
@pytest.mark.parametrize("units", [None, [0, 4], [5]])
def test_state_record_units_equals_record(every, chunks, units):
    rng = np.random.default_rng(4)
    T, B, N = 23, 3, 6
    v, h = rng.normal(size=(2, T, B, N))
    want = run(StateMonitor(variables=["v", "h"], units=units, every=every),
               random_y(T, B, N), chunks=chunks, extra={"v": v, "h": h})
    got = StateMonitor(variables=["v", "h"], units=units, every=every)
    got.start_run("pop", N, B, T, "float64", ("y", "v", "h"))
    cols = got.units
    bounds = np.linspace(0, T, chunks + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        got.record_units(int(a), {"v": v[a:b][:, :, cols], "h": h[a:b][:, :, cols]})
    got.end_run()
    np.testing.assert_array_equal(got.times, want.times)
    for var in ("v", "h"):
        np.testing.assert_array_equal(got.data[var], want.data[var])
    assert got.n_steps == want.n_steps


def test_state_record_units_append_and_checks():
    rng = np.random.default_rng(5)
    v1, v2 = rng.normal(size=(10, 2, 5)), rng.normal(size=(6, 2, 5))
    mon = StateMonitor("pop", variables="v", units=[1, 3], every=4, append=True)
    with pytest.raises(RuntimeError, match=r"record_units\(\) called before start_run"):
        mon.record_units(0, {"v": v1[:, :, [1, 3]]})
    mon.start_run("pop", 5, 2, 10, "float64", ("v",))
    with pytest.raises(ValueError, match=r"shape \(steps, 2, 2\) \(the recorded units only\)"):
        mon.record_units(0, {"v": v1})
    with pytest.raises(ValueError, match=r"records \['v'\]"):
        mon.record_units(0, {"h": v1[:, :, [1, 3]]})
    for t in range(10):  # step by step, as a compiled loop may
        mon.record_units(t, {"v": v1[t:t + 1][:, :, [1, 3]]})
    mon.end_run()
    mon.start_run("pop", 5, 2, 6, "float64", ("v",))
    mon.record_units(0, {"v": v2[:, :, [1, 3]]})
    mon.end_run()
    np.testing.assert_array_equal(mon.times, [0, 4, 8, 12])
    np.testing.assert_array_equal(mon.data["v"], np.concatenate([v1, v2])[::4][:, :, [1, 3]])


def test_state_variables_of_different_lengths():
    mon = StateMonitor("pop", variables=["v", "h"])
    mon.start_run("pop", 3, 1, 5, "float64", None)
    with pytest.raises(ValueError, match="different numbers of steps"):
        mon.record(0, {"v": np.zeros((5, 1, 3)), "h": np.zeros((4, 1, 3))})


def test_state_unknown_variable_keeps_data():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(5, 1, 3))
    mon = run(StateMonitor("pop", variables="v"), random_y(5, 1, 3), extra={"v": v})
    bad = StateMonitor("pop", variables=["v", "w"])
    with pytest.raises(ValueError, match=r"'w'.*exposes \('y', 'v', 'h'\)"):
        bad.start_run("pop", 3, 1, 5, "float64", ("y", "v", "h"))
    # a monitor refused at start_run keeps what it held
    with pytest.raises(ValueError, match="exposes"):
        mon.start_run("pop", 3, 1, 5, "float64", ("y",))
    np.testing.assert_array_equal(mon.data["v"], v)
    # without a variables list, record() names what the population gave
    free = StateMonitor("pop", variables="i")
    free.start_run("pop", 3, 1, 5, "float64", None)
    with pytest.raises(ValueError, match=r"records \['i'\].*gave \['v', 'y'\]"):
        free.record(0, {"y": v, "v": v})


def test_state_options_checked():
    with pytest.raises(ValueError, match="every"):
        StateMonitor(every=0)
    with pytest.raises(ValueError, match="variables"):
        StateMonitor(variables=[])


def test_state_save_load(tmp_path):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(9, 2, 4)).astype(np.float32)
    mon = run(StateMonitor(variables=["v"], units=[1, 3], every=2), random_y(9, 2, 4),
              extra={"v": v})
    mon.save(tmp_path / "st.h5")
    back = StateMonitor.load(tmp_path / "st.h5")
    np.testing.assert_array_equal(back.data["v"], v[::2][:, :, [1, 3]])
    np.testing.assert_array_equal(back.times, mon.times)
    np.testing.assert_array_equal(back.units, [1, 3])
    assert isinstance(monitors.load(tmp_path / "st.h5"), StateMonitor)


# --------------------------------------------------------------------------
# Activity monitor


def test_activity():
    y = random_y(T=25, B=4, N=10, p=0.3)
    mon = run(ActivityMonitor(), y, chunks=5)
    frac = np.count_nonzero(y, axis=2) / 10
    np.testing.assert_allclose(mon.activity_per_sample, frac)
    np.testing.assert_allclose(mon.activity, frac.mean(axis=1))
    assert mon.mean_activity == pytest.approx(np.count_nonzero(y) / y.size)


def test_activity_backward_and_files(tmp_path):
    mon = run(ActivityMonitor(), random_y())
    mon.record_backward({"backward_sparsity": 0.75, "events": 3})
    mon.record_backward(0.5)
    assert mon.backward_sparsity == [0.75, 0.5]
    mon.record_backward({"events": 3})
    assert np.isnan(mon.backward_sparsity[-1])
    mon.backward_sparsity.pop()
    mon.save(tmp_path / "act.h5")
    back = ActivityMonitor.load(tmp_path / "act.h5")
    np.testing.assert_allclose(back.activity, mon.activity)
    assert back.backward_sparsity == [0.75, 0.5]
    assert isinstance(monitors.load(tmp_path / "act.h5"), ActivityMonitor)


# --------------------------------------------------------------------------
# Factory


def test_make_monitor():
    assert isinstance(make_monitor("events", "p", units=[0]), EventMonitor)
    st = make_monitor("state", "p", variables=["v"], every=2)
    assert isinstance(st, StateMonitor) and st.required_variables == ("v",)
    assert isinstance(make_monitor("activity", "p"), ActivityMonitor)
    with pytest.raises(ValueError, match="kind"):
        make_monitor("spikes", "p")
    with pytest.raises(TypeError, match="EventMonitor"):
        make_monitor("events", "p", variables=["v"])


def test_record_is_vectorised_not_per_event():
    """A large chunk records in about the time of np.nonzero on it (no Python loop)."""
    import time

    y = random_y(T=400, B=8, N=256, p=0.1, dtype=np.float32)
    mon = EventMonitor()
    mon.start_run("pop", 256, 8, 400, "float32", None)
    start = time.perf_counter()
    mon.record(0, {"y": y})
    took = time.perf_counter() - start
    assert mon.n_events == np.count_nonzero(y) > 50_000
    assert took < 0.5


# --------------------------------------------------------------------------
# Driven by a network (skipped while evsim.network is not there)


def _network_modules():
    net_mod = pytest.importorskip("evsim.network")
    pops = pytest.importorskip("evsim.populations")
    return net_mod, pops


@pytest.mark.parametrize("schedule", ["dag", "stepwise"])
def test_monitors_in_a_network(schedule, tmp_path):
    net_mod, pops = _network_modules()
    net = net_mod.Network(seed=0, dtype="float64", progress=False)
    net.add(pops.DenseInput("x", size=3))
    net.add(pops.EGRU("egru", size=12))
    net.connect("x", "egru")
    ev = net.monitor("egru", "events")
    sub = net.monitor("egru", "events", units=[1, 5], path=tmp_path / "s.h5")
    st = net.monitor("egru", "state", variables=["v", "h"], units=[0, 4], every=3)
    act = net.monitor("egru", "activity")
    x = np.random.default_rng(0).normal(size=(17, 2, 3))
    res = net.run({"x": x}, schedule=schedule)
    y = res.outputs["egru"]
    assert np.count_nonzero(y) > 0
    np.testing.assert_array_equal(ev.to_dense(), y)
    np.testing.assert_array_equal(load_events(tmp_path / "s.h5").to_dense(), y[:, :, [1, 5]])
    np.testing.assert_array_equal(sub.to_dense(), y[:, :, [1, 5]])
    assert st.data["v"].shape == (6, 2, 2)
    np.testing.assert_array_equal(st.times, np.arange(0, 17, 3))
    fired = y[::3][:, :, [0, 4]] != 0
    # v crossed the threshold where a unit fired: y = v there
    np.testing.assert_allclose(st.data["v"][fired], y[::3][:, :, [0, 4]][fired])
    np.testing.assert_allclose(act.activity, np.count_nonzero(y, axis=2).mean(1) / 12)
    assert ev.n_events == res.stats["egru"]["events"]


def test_network_monitor_unknown_variable():
    net_mod, pops = _network_modules()
    net = net_mod.Network(seed=0)
    net.add(pops.DenseInput("x", size=3))
    net.add(pops.LIF("lif", size=4))
    net.connect("x", "lif")
    with pytest.raises(ValueError, match="'h'"):
        net.monitor("lif", "state", variables=["h"])
    ev = net.monitor("lif", "events")
    net.run({"x": np.full((20, 1, 3), 2.0, np.float32)})
    assert ev.n_events > 0 and set(np.unique(ev.value)) == {1.0}


def test_activity_monitor_gets_backward_sparsity():
    net_mod, pops = _network_modules()
    net = net_mod.Network(seed=0, dtype="float64", progress=False)
    net.add(pops.DenseInput("x", size=3))
    net.add(pops.EGRU("egru", size=8, support=3.0, damp=3.0))
    net.connect("x", "egru")
    act = net.monitor("egru", "activity")
    x = np.random.default_rng(0).normal(size=(9, 2, 3))
    for _ in range(2):
        fp = net.forward({"x": x}, training=True)
        grads = net.backward(fp, {"egru": np.ones((9, 2, 8))})
    assert len(act.backward_sparsity) == 2
    assert act.backward_sparsity[-1] == grads.stats["egru"]["backward_sparsity"]
    assert 0.0 <= act.backward_sparsity[-1] <= 1.0


def test_truncated_event_file_is_reported_as_truncated(tmp_path):
    """An event file cut short (a copy interrupted, a full disk) says so."""
    import evsim

    net = evsim.Network(seed=0)
    net.add(evsim.SpikeInput("s", 4))
    mon = net.monitor("s", "events", path=tmp_path / "ev.h5")
    net.run({"s": {"times": np.arange(50) % 20, "indices": np.arange(50) % 4}}, steps=20)
    mon.close()
    data = (tmp_path / "ev.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated"):
        load_events(cut)
    with pytest.raises(FileFormatError, match="truncated"):
        monitors.load(cut)
