"""No data lost: one writer per stream path, interrupted streams say so, orphaned
temporary files are cleaned up; monitor options checked."""

import os
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from evsim.io import FileInUseError, FileLock, atomic_h5, remove_orphan_temps
from evsim.monitors import EventMonitor, load_events


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(code):
    """Run ``code`` in a new Python process; (return code, pid, stderr)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, proc.pid, err


def _holder(path, ready, release):
    """A second process that streams to ``path`` until ``release`` exists."""
    code = textwrap.dedent(f"""
        import os, time
        import numpy as np
        from evsim.monitors import EventMonitor
        mon = EventMonitor(path={str(path)!r})
        mon.start_run("pop", 4, 1, 10, "float64", None)
        mon.record(0, {{"y": np.ones((3, 1, 4))}})
        open({str(ready)!r}, "w").close()
        while not os.path.exists({str(release)!r}):
            time.sleep(0.02)
        mon.record(3, {{"y": np.ones((7, 1, 4))}})
        mon.end_run()
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=60):
    t = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < timeout
        time.sleep(0.02)


def test_second_process_streaming_to_one_path_is_refused(tmp_path):
    path, ready, release = tmp_path / "ev.h5", tmp_path / "ready", tmp_path / "release"
    proc = _holder(path, ready, release)
    try:
        _wait_for(ready, proc)
        mon = EventMonitor(path=path)
        with pytest.raises(FileInUseError, match=f"EventMonitor on 'pop' stream of process "
                                                 f"{proc.pid}") as err:
            mon.start_run("pop", 4, 1, 5, "float64", None)
        assert str(path) in str(err.value)
    finally:
        release.touch()
        out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0, errs
    back = load_events(path)  # the first recording is whole
    assert back.n_steps == 10 and back.n_events == 40
    assert not os.path.exists(str(path) + ".lock")


def test_two_monitors_of_one_process_on_one_path(tmp_path):
    path = tmp_path / "ev.h5"
    a, b = EventMonitor(path=path), EventMonitor(path=path)
    a.start_run("pop", 3, 1, 4, "float64", None)
    a.record(0, {"y": np.ones((4, 1, 3))})
    with pytest.raises(FileInUseError, match="this process"):
        b.start_run("pop", 3, 1, 4, "float64", None)
    a.end_run()
    assert load_events(path).n_events == 12
    b.start_run("pop", 3, 1, 4, "float64", None)  # free again after the first ended
    b.end_run()


def test_stale_lock_of_a_killed_writer_is_taken_over(tmp_path):
    path = tmp_path / "ev.h5"
    code = textwrap.dedent(f"""
        import os
        import numpy as np
        from evsim.monitors import EventMonitor
        mon = EventMonitor(path={str(path)!r})
        mon.start_run("pop", 4, 1, 10, "float64", None)
        mon.record(0, {{"y": np.ones((2, 1, 4))}})
        os._exit(3)
    """)
    rc, pid, err = _run(code)
    assert rc == 3, err
    assert os.path.exists(str(path) + ".lock")
    with pytest.warns(RuntimeWarning, match="2 steps recorded of the 10 planned"):
        assert load_events(path).n_events == 8
    mon = EventMonitor(path=path)
    with pytest.warns(RuntimeWarning, match=f"lock left by process {pid}"):
        mon.start_run("pop", 4, 1, 3, "float64", None)
    mon.end_run()
    assert not os.path.exists(str(path) + ".lock")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_stream_says_so(tmp_path, exc):
    path = tmp_path / "ev.h5"
    mon = EventMonitor(path=path)
    with pytest.raises(exc):
        try:
            mon.start_run("pop", 3, 2, 10, "float64", None)
            mon.record(0, {"y": np.ones((4, 2, 3))})
            raise exc()
        finally:
            mon.end_run()
    with h5py.File(path, "r") as f:
        assert not f.attrs["complete"]
        assert f.attrs["n_steps"] == 4 and f.attrs["n_steps_planned"] == 10
        assert f.attrs["interrupted"] == exc.__name__
    assert mon.n_steps == 4
    with pytest.warns(RuntimeWarning, match=f"interrupted by {exc.__name__}.*24 events of "
                                            f"the 4 steps recorded of the 10 planned"):
        back = load_events(path)
    assert back.n_steps == 4 and back.to_dense().shape == (4, 2, 3)


def test_interrupted_record_events_stream(tmp_path):
    path = tmp_path / "ev.h5"
    mon = EventMonitor(path=path)
    with pytest.raises(KeyboardInterrupt):
        try:
            mon.start_run("pop", 3, 1, 10, "float64", None)
            for t in range(5):
                mon.record_events(t, [0], [1], [0], [1.0])
            raise KeyboardInterrupt
        finally:
            mon.end_run()
    with h5py.File(path, "r") as f:
        assert not f.attrs["complete"] and f.attrs["n_steps"] == 5


def test_stream_mid_run_file_counts_recorded_steps(tmp_path):
    path = tmp_path / "ev.h5"
    mon = EventMonitor(path=path)
    mon.start_run("pop", 3, 1, 10, "float64", None)
    mon.record(0, {"y": np.ones((3, 1, 3))})
    mon.flush()
    live = mon._sink._file.attrs
    assert live["n_steps"] == 3 and live["n_steps_planned"] == 10 and not live["complete"]
    mon.record(3, {"y": np.ones((7, 1, 3))})
    mon.end_run()
    with h5py.File(path, "r") as f:
        assert f.attrs["n_steps"] == 10 and f.attrs["complete"]
        assert "interrupted" not in f.attrs


def test_completed_run_inside_an_except_block_is_complete(tmp_path):
    path = tmp_path / "ev.h5"
    mon = EventMonitor(path=path)
    try:
        raise ValueError("handled")
    except ValueError:
        mon.start_run("pop", 3, 1, 4, "float64", None)
        mon.record(0, {"y": np.ones((4, 1, 3))})
        mon.end_run()
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"]


def test_orphaned_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = _dead_pid()
    orphan = tmp_path / f".net.h5.{dead}.0badc0de.evsim-tmp"
    orphan.write_bytes(b"half a file")
    alive = tmp_path / ".net.h5.1.0badc0de.evsim-tmp"  # pid 1 always runs
    alive.write_bytes(b"someone else's")
    other = tmp_path / "notes.txt"
    other.write_text("keep")
    with atomic_h5(tmp_path / "net.h5", "network") as f:
        names = os.listdir(tmp_path)
        mine = [n for n in names if n.endswith(".evsim-tmp") and f".{os.getpid()}." in n]
        assert len(mine) == 1 and f.filename.endswith(mine[0])
    assert not orphan.exists() and alive.exists() and other.exists()
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, "net.h5", "notes.txt"])
    assert remove_orphan_temps(tmp_path) == []


def test_killed_atomic_save_leaves_a_temp_that_the_next_save_removes(tmp_path):
    path = tmp_path / "t.h5"
    code = textwrap.dedent(f"""
        import os
        from evsim.io import atomic_h5
        with atomic_h5({str(path)!r}, "network") as f:
            f.attrs["x"] = 1
            f.flush()
            os._exit(3)
    """)
    rc, pid, err = _run(code)
    assert rc == 3, err
    left = [n for n in os.listdir(tmp_path) if n.endswith(".evsim-tmp")]
    assert len(left) == 1 and f".{pid}." in left[0]
    with atomic_h5(path, "network"):
        pass
    assert os.listdir(tmp_path) == ["t.h5"]


def test_file_lock_in_one_process(tmp_path):
    target = tmp_path / "x"
    with FileLock(target, "a test"):
        with open(str(target) + ".lock") as fh:
            assert fh.read().split()[0] == str(os.getpid())
        with pytest.raises(FileInUseError, match="in use: a test of process"):
            FileLock(target, "another").acquire()
    assert not os.path.exists(str(target) + ".lock")


@pytest.mark.parametrize("dt", [float("nan"), float("inf"), -1.0, 0.0, "fast", None, True])
def test_event_monitor_bad_dt(dt):
    with pytest.raises(ValueError, match="dt must be a finite step duration > 0"):
        EventMonitor(dt=dt)


@pytest.mark.parametrize("chunk_size", [0, -5, 2.5, "16", True, None])
def test_event_monitor_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        EventMonitor(chunk_size=chunk_size)
