"""Helpers shared by the benchmark scripts: timing, the BLAS in use, a busy
neighbour process, and running a baseline in its own process.

Benchmarks run at default settings (no environment variables set for them);
each prints which BLAS kernel ran, because OpenBLAS picks its kernel by CPU
(``OPENBLAS_CORETYPE`` can override it) and that changes dense baselines.
"""

import contextlib
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time


def blas_info():
    """One line naming the BLAS libraries, their kernels and default threads."""
    import numpy  # noqa: F401  (load NumPy's BLAS)
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba calls)
    import threadpoolctl

    parts = []
    for info in threadpoolctl.threadpool_info():
        if info.get("user_api") != "blas":
            continue
        name = os.path.basename(info.get("filepath", "?"))
        parts.append(f"{info.get('internal_api')} {info.get('version')} "
                     f"kernel {info.get('architecture')} "
                     f"({info.get('num_threads')} threads, {name})")
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                      "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                      "NUMBA_NUM_THREADS") if k in os.environ}
    return "; ".join(parts) + (f"; environment {env}" if env else "")


def median_time(fn, repeats, warmup=1):
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_interleaved(fns, repeats, warmup=1):
    """Median seconds of each function of the dict ``fns``, repeats interleaved
    so that a slow moment of the machine hits every variant alike."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _spin(stop):
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


@contextlib.contextmanager
def busy_neighbour(enabled=True):
    """Keep one core busy with another process inside the block, as on a
    user's machine where something else is always running."""
    if not enabled:
        yield
        return
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_spin, args=(stop,), daemon=True)
    proc.start()
    time.sleep(0.2)  # let it start spinning
    try:
        yield
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def run_json(script, payload, timeout=3600):
    """Run ``python -c script payload_json`` in a fresh process (own thread
    pools, default settings); return the JSON its last output line holds, or
    None with the error on stderr (e.g. torch not installed)."""
    try:
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(payload)],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"baseline process failed: {exc}", file=sys.stderr)
        return None
    if proc.returncode != 0:
        if "No module named" not in proc.stderr:
            print("baseline process failed:\n" + proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])
