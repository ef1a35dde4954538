"""evsim against Brian2 on Brian2's CUBA example (Vogels & Abbott 2005).

The network is Brian2's ``examples/CUBA.py``: 4000 leaky integrate-and-fire
cells (3200 excitatory, 800 inhibitory), current-based exponential synapses
(tau_e = 5 ms, tau_i = 10 ms), random connectivity p = 0.02 (about 80 inputs
per cell), refractory 5 ms, resting potential El = -49 mV above the threshold
Vt = -50 mV, initial v uniform in [Vr, Vt], dt = 0.1 ms, a SpikeMonitor on all
cells. ``--scale k`` multiplies both cell counts by k and divides p by k (same
in-degree): k = 10 is "a network 10x larger" (40,000 cells).

Measured per run (one seed, one tool or Brian2 mode):

* spikes, mean rate (spikes / cells / duration, Hz) and the median CV of the
  inter-spike intervals over cells with at least 3 spikes;
* wall seconds of the simulation only, without code generation or
  compilation:

  - Brian2 ``numpy`` / ``cython`` (runtime modes): the network is built, its
    state stored, a 20 ms warm-up ``run()`` generates and compiles (or loads
    from Cython's cache) every code object, the state is restored and the real
    ``run()`` is timed. "run s" is Brian2's own loop time
    (``device._last_run_time``, wall clock around the time-step loop), "call s"
    the whole second ``run()`` call (it generates code again, from caches);
    "compile s" is the network's construction (``Synapses.connect`` generates
    and compiles its own code) plus the warm-up call minus its loop time. For
    ``cython`` every invocation of this script gives its workers a new, empty
    Cython cache directory: the first seed's compile time is a cold one, later
    seeds load the modules it compiled;
  - Brian2 ``cpp_standalone``: ``set_device('cpp_standalone',
    build_on_run=False)``, then ``device.build()`` in a temporary directory.
    "run s" is wall time around the network run inside ``main`` (a
    ``clock_gettime`` pair inserted with ``device.insert_code``); "cpu s" is
    Brian2's ``device._last_run_time``, which standalone measures with
    ``std::clock`` (CPU time of the loop); "compile s" is ``device.build()``
    minus the binary's run (code generation + ``make``); the binary's own
    set-up (connecting the synapses, writing results) is its run minus "run s";
  - evsim: ``evsim.models.cuba(scale=k, seed=s, dtype=d)`` for each dtype of
    ``--evsim-dtypes`` (float32, evsim's default, and float64, Brian2's
    precision; ratios are against the first); a first
    network runs a short warm-up (Numba compilation or cache load), then a
    freshly built network with the same seed and event monitors on "E" and "I"
    is timed around ``net.run(steps=n, record_outputs=False)``;

* peak resident memory (``VmHWM``) of the process that simulates: for the
  runtime modes and evsim reset just before the timed run (``5 >
  /proc/self/clear_refs``), so it is the built network plus the run, not the
  compiler; for cpp_standalone the binary's whole life.

``--memory`` also runs evsim for 10 s (``--memory-duration``) in a fresh
process with both event monitors streaming to HDF5, after a warm-up on another
network: the resident set before the run and the peak during it.

Brian2 runs in its own virtual environment (it pins NumPy and brings sympy,
Cython and a C++ toolchain); this script calls itself there as a worker::

    python3 -m venv /work/brian2-venv
    /work/brian2-venv/bin/pip install "brian2==2.9.*" "numpy<2.3" cython setuptools
    g++ --version          # cpp_standalone and cython need a C++ compiler

    # one worker run (prints one JSON line):
    /work/brian2-venv/bin/python benchmarks/brian2_compare.py --worker brian2 \\
        --mode cython --duration 1 --scale 1 --seed 0

Usage (from the evsim dev environment)::

    python benchmarks/brian2_compare.py                           # 1 s, scale 1, seeds 0,1,2
    python benchmarks/brian2_compare.py --skip-evsim --seeds 0,1,2,3,4
    python benchmarks/brian2_compare.py --duration 10 --seeds 0 --modes cython,cpp_standalone
    python benchmarks/brian2_compare.py --scale 10 --seeds 0 --memory --save

Timings are single runs per seed; on a shared machine they are noisy. evsim
chooses its own Numba threads (BLAS single-threaded inside evsim calls); the
Brian2 runtime modes are single-threaded and ``cpp_standalone`` runs without
OpenMP (one thread). With the same seed, Brian2 2.9's cython and cpp_standalone
draw the same random numbers (initial v, connectivity: same spikes), numpy
others; compare rates over seeds, not a seed's spike count.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

N_EXC, N_INH, P_CONN = 3200, 800, 0.02
DT_MS = 0.1
WARMUP_MS = 20.0
MODES = ("numpy", "cython", "cpp_standalone")
BRIAN2_PYTHON = "/work/brian2-venv/bin/python"
RESULTS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "BRIAN2-RESULTS.md")
CUBA_EQS = """
dv/dt = (ge+gi-(v-El))/taum : volt (unless refractory)
dge/dt = -ge/taue : volt
dgi/dt = -gi/taui : volt
"""


# --------------------------------------------------------------------------- #
# Shared helpers (NumPy only: they run in both environments)
# --------------------------------------------------------------------------- #


def spike_stats(units, times_s, n_cells, duration_s):
    """Spike count, mean rate (Hz) and median CV of ISIs over cells with >= 3 spikes."""
    units = np.asarray(units, dtype=np.int64)
    times_s = np.asarray(times_s, dtype=np.float64)
    out = dict(n_spikes=int(units.size), rate_hz=units.size / n_cells / duration_s,
               cv_isi_median=None, n_cv_cells=0)
    if units.size < 3:
        return out
    order = np.lexsort((times_s, units))
    u, t = units[order], times_s[order]
    same = u[1:] == u[:-1]
    isi, owner = np.diff(t)[same], u[1:][same]
    count = np.bincount(owner, minlength=n_cells)
    keep = count >= 2  # >= 2 intervals: >= 3 spikes
    if not keep.any():
        return out
    mean = np.bincount(owner, isi, n_cells) / np.maximum(count, 1)
    dev = isi - mean[owner]
    std = np.sqrt(np.bincount(owner, dev * dev, n_cells) / np.maximum(count, 1))
    cv = std[keep] / mean[keep]
    out.update(cv_isi_median=float(np.median(cv)), n_cv_cells=int(keep.sum()))
    return out


def peak_rss_mb(field="VmHWM"):
    """This process's peak resident set (``VmHWM``) or current one (``VmRSS``) in
    MiB from /proc/self/status; ru_maxrss (the peak) where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux: ``5 > /proc/self/clear_refs``), so that a
    later :func:`peak_rss_mb` covers what follows only (not compilation before it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def n_cells(scale):
    return (N_EXC + N_INH) * scale


# --------------------------------------------------------------------------- #
# Brian2 worker (runs inside the Brian2 venv)
# --------------------------------------------------------------------------- #


def brian2_cuba(b2, scale):
    """Brian2's CUBA example with k = scale; returns (Network, SpikeMonitor).

    Objects carry fixed names so that generated code (and Cython's cache) is
    the same for every network built with the same mode.
    """
    ms, mV = b2.ms, b2.mV
    ns = dict(taum=20 * ms, taue=5 * ms, taui=10 * ms, Vt=-50 * mV, Vr=-60 * mV, El=-49 * mV,
              we=(60 * 0.27 / 10) * mV, wi=(-20 * 4.5 / 10) * mV, n_exc=N_EXC * scale)
    P = b2.NeuronGroup(n_cells(scale), CUBA_EQS, threshold="v>Vt", reset="v = Vr",
                       refractory=5 * ms, method="exact", namespace=ns, name="P")
    P.v = "Vr + rand() * (Vt - Vr)"
    P.ge = 0 * mV
    P.gi = 0 * mV
    Ce = b2.Synapses(P, P, on_pre="ge += we", namespace=ns, name="Ce")
    Ci = b2.Synapses(P, P, on_pre="gi += wi", namespace=ns, name="Ci")
    Ce.connect("i<n_exc", p=P_CONN / scale)
    Ci.connect("i>=n_exc", p=P_CONN / scale)
    s_mon = b2.SpikeMonitor(P, name="s_mon")
    return b2.Network(P, Ce, Ci, s_mon), s_mon


def brian2_runtime(b2, mode, duration, scale, seed, cython_cache=None):
    """Time Brian2's runtime mode ("numpy" or "cython") after a warm-up run.

    ``cython_cache``: Cython's cache directory (default Brian2's own); the
    compile time is a cold one when it is empty.
    """
    b2.prefs.codegen.target = mode
    cold_cache = False
    if mode == "cython" and cython_cache:
        os.makedirs(cython_cache, exist_ok=True)
        cold_cache = not os.listdir(cython_cache)
        b2.prefs.codegen.runtime.cython.cache_dir = cython_cache
    b2.defaultclock.dt = DT_MS * b2.ms
    b2.seed(seed)
    t0 = time.perf_counter()
    net, s_mon = brian2_cuba(b2, scale)
    build_s = time.perf_counter() - t0
    net.store("built")
    t0 = time.perf_counter()
    net.run(WARMUP_MS * b2.ms)
    warm_call_s = time.perf_counter() - t0
    warm_loop_s = b2.device._last_run_time
    net.restore("built")
    reset_peak_rss()
    t0 = time.perf_counter()
    net.run(duration * b2.second)
    call_s = time.perf_counter() - t0
    codeobj = type(net["P"].state_updater.codeobj).__name__
    return dict(run_s=b2.device._last_run_time, call_s=call_s, build_s=build_s,
                first_run_s=warm_call_s - warm_loop_s,
                compile_s=build_s + warm_call_s - warm_loop_s, cold_cache=cold_cache,
                codeobj=codeobj, peak_rss_mb=peak_rss_mb(),
                units=np.asarray(s_mon.i[:]), times=np.asarray(s_mon.t[:] / b2.second))


_TIMER_START = "struct timespec _bench_t0, _bench_t1; clock_gettime(CLOCK_MONOTONIC, &_bench_t0);"
_TIMER_STOP = """clock_gettime(CLOCK_MONOTONIC, &_bench_t1);
{
    std::ofstream _bench_out("%s");
    _bench_out.precision(9);
    _bench_out << (_bench_t1.tv_sec - _bench_t0.tv_sec)
                  + 1e-9 * (_bench_t1.tv_nsec - _bench_t0.tv_nsec) << std::endl;
    std::ifstream _bench_status("/proc/self/status");
    std::string _bench_line;
    while (std::getline(_bench_status, _bench_line))
        if (_bench_line.rfind("VmHWM:", 0) == 0) _bench_out << _bench_line << std::endl;
}"""


def brian2_standalone(b2, duration, scale, seed):
    """Build, compile and run Brian2's cpp_standalone project in a temporary directory."""
    b2.set_device("cpp_standalone", build_on_run=False)
    b2.defaultclock.dt = DT_MS * b2.ms
    b2.seed(seed)
    net, s_mon = brian2_cuba(b2, scale)
    with tempfile.TemporaryDirectory(prefix="brian2-standalone-") as tmp:
        timing = os.path.join(tmp, "bench_run.txt")
        b2.device.insert_code("main", _TIMER_START)
        net.run(duration * b2.second)
        b2.device.insert_code("main", _TIMER_STOP % timing)
        t0 = time.perf_counter()
        b2.device.build(directory=os.path.join(tmp, "project"), compile=True, run=True,
                        with_output=False)
        build_s = time.perf_counter() - t0
        with open(timing) as f:
            lines = f.read().split("\n")
        units, times = np.asarray(s_mon.i[:]), np.asarray(s_mon.t[:] / b2.second)
    binary_s = b2.device.timers["run_binary"]
    hwm = [ln for ln in lines if ln.startswith("VmHWM:")]
    return dict(run_s=float(lines[0]), cpu_s=float(b2.device._last_run_time),
                binary_s=binary_s, compile_s=build_s - binary_s,
                make_s=b2.device.timers["compile"]["make"],
                openmp_threads=b2.prefs.devices.cpp_standalone.openmp_threads,
                peak_rss_mb=int(hwm[0].split()[1]) / 1024 if hwm else None,
                units=units, times=times)


def _gxx_version():
    try:
        out = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True)
        return out.stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError):
        return None


def brian2_worker(args):
    """Run one Brian2 simulation and print its result as one JSON line."""
    import brian2 as b2

    b2.prefs.logging.console_log_level = "WARNING"
    if args.mode == "cpp_standalone":
        res = brian2_standalone(b2, args.duration, args.scale, args.seed)
    else:
        res = brian2_runtime(b2, args.mode, args.duration, args.scale, args.seed,
                             args.cython_cache)
    units, times = res.pop("units"), res.pop("times")
    try:
        import Cython

        cython_version = Cython.__version__
    except ImportError:
        cython_version = None
    res.update(spike_stats(units, times, n_cells(args.scale), args.duration))
    res.update(tool="brian2", mode=args.mode, seed=args.seed, duration=args.duration,
               scale=args.scale, n_cells=n_cells(args.scale), version=b2.__version__,
               numpy=np.__version__, cython=cython_version, compiler=_gxx_version())
    print(json.dumps(res))


# --------------------------------------------------------------------------- #
# evsim side (runs in this interpreter)
# --------------------------------------------------------------------------- #


def evsim_cuba(scale, seed, dtype="float32"):
    """evsim's CUBA network, or a clear exit while evsim.models.cuba does not exist."""
    import evsim.models

    if not hasattr(evsim.models, "cuba"):
        sys.exit("evsim.models.cuba does not exist yet (it is being written); run with "
                 "--skip-evsim to measure Brian2 only")
    net = evsim.models.cuba(scale=scale, seed=seed, dtype=dtype)
    if abs(net.dt - DT_MS) > 1e-12:
        print(f"warning: evsim's CUBA runs at dt = {net.dt} ms, Brian2 at {DT_MS} ms",
              file=sys.stderr)
    return net


def evsim_spikes(net, mon_e, mon_i):
    """Concatenated (cell index, time in s) of the E and I event monitors."""
    n_e = net.populations["E"].size
    units = np.concatenate([np.asarray(mon_e.unit), np.asarray(mon_i.unit) + n_e])
    steps = np.concatenate([np.asarray(mon_e.step), np.asarray(mon_i.step)])
    return units, steps * (net.dt / 1000.0)


def evsim_run(duration, scale, seed, dtype):
    """Time evsim's run of ``duration`` s after a warm-up on another network."""
    import numba

    import evsim

    warm = evsim_cuba(scale, seed, dtype)
    t0 = time.perf_counter()
    warm.run(steps=int(round(WARMUP_MS / warm.dt)), record_outputs=False)
    compile_s = time.perf_counter() - t0
    del warm
    net = evsim_cuba(scale, seed, dtype)
    mon_e, mon_i = (net.monitor(p, "events") for p in ("E", "I"))
    n_steps = int(round(duration * 1000.0 / net.dt))
    reset_peak_rss()
    t0 = time.perf_counter()
    net.run(steps=n_steps, record_outputs=False)
    run_s = time.perf_counter() - t0
    units, times = evsim_spikes(net, mon_e, mon_i)
    cells = sum(p.size for p in net.populations.values() if p.name in ("E", "I"))
    res = dict(tool="evsim", mode=f"cpu {dtype}", seed=seed, duration=duration, scale=scale,
               n_cells=cells, run_s=run_s, compile_s=compile_s, peak_rss_mb=peak_rss_mb(),
               version=evsim.__version__, numba_threads=numba.get_num_threads(),
               evsim_threads=evsim.config.NUM_THREADS)
    res.update(spike_stats(units, times, cells, duration))
    return res


def evsim_memory_worker(args):
    """Peak RSS of a long evsim run with both event monitors streaming to HDF5.

    A warm-up run on another network compiles first; the peak is then reset
    (where Linux allows) so that it covers the long run only.
    """
    warm = evsim_cuba(args.scale, args.seed)
    warm.run(steps=int(round(WARMUP_MS / warm.dt)), record_outputs=False)
    del warm
    net = evsim_cuba(args.scale, args.seed)
    with tempfile.TemporaryDirectory(prefix="evsim-cuba-") as tmp:
        mons = [net.monitor(p, "events", path=os.path.join(tmp, f"{p}.h5"))
                for p in "EI"]
        before_run = peak_rss_mb("VmRSS")
        peak_reset = reset_peak_rss()
        t0 = time.perf_counter()
        net.run(steps=int(round(args.duration * 1000.0 / net.dt)), record_outputs=False)
        run_s = time.perf_counter() - t0
        after_run = peak_rss_mb()
        for m in mons:
            m.close()
        file_mb = sum(os.path.getsize(os.path.join(tmp, f"{p}.h5")) for p in "EI") / 2**20
        n_spikes = sum(int(m.n_events) for m in mons)
    print(json.dumps(dict(duration=args.duration, scale=args.scale, seed=args.seed,
                          rss_before_run_mb=before_run, peak_rss_mb=after_run,
                          peak_reset=peak_reset, run_s=run_s, hdf5_mb=file_mb,
                          n_spikes=n_spikes)))


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #


def run_worker(python, argv, timeout=7200):
    """Run this script as a worker with ``python``; return its JSON line or None."""
    cmd = [python, os.path.abspath(__file__)] + [str(a) for a in argv]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"worker failed: {' '.join(cmd)}: {exc}", file=sys.stderr)
        return None
    if proc.returncode != 0:
        print(f"worker failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_brian2(args, mode, seed, cython_cache):
    argv = ["--worker", "brian2", "--mode", mode, "--duration", args.duration,
            "--scale", args.scale, "--seed", seed]
    if mode == "cython":
        argv += ["--cython-cache", cython_cache]
    return run_worker(args.brian2_python, argv)


def _mean_std(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def _median_range(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def summary_rows(results):
    """One row per tool / mode: rates, CVs and times over seeds."""
    groups = {}
    for r in results:
        groups.setdefault((r["tool"], r["mode"], r["duration"], r["scale"]), []).append(r)
    evsim_s = {}  # the first evsim dtype of each configuration is the base of the ratios
    for k, v in groups.items():
        if k[0] == "evsim":
            evsim_s.setdefault((k[2], k[3]), statistics.median(x["run_s"] for x in v))
    rows = []
    for (tool, mode, duration, scale), rs in groups.items():
        wall = statistics.median(r["run_s"] for r in rs)
        compiles = [r["compile_s"] for r in rs if r.get("cold_cache")] or [
            r["compile_s"] for r in rs]
        base = evsim_s.get((duration, scale))
        rows.append([
            f"{tool} {mode}", f"{duration:g}", f"{scale:g} ({rs[0]['n_cells']})",
            ",".join(str(r["seed"]) for r in rs),
            _mean_std([r["rate_hz"] for r in rs], ".2f"),
            _mean_std([r["cv_isi_median"] for r in rs], ".3f"),
            _median_range([r["run_s"] for r in rs], ".3f"),
            _median_range(compiles, ".2f"),
            _median_range([r.get("peak_rss_mb") for r in rs], ".0f"),
            f"{wall / base:.2f}" if base else "n/a",
        ])
    return rows


def per_run_rows(results):
    rows = []
    for r in results:
        extra = []
        if r.get("call_s") is not None:
            extra.append(f"call {r['call_s']:.3f} s, build {r['build_s']:.2f} s, "
                         f"first-run overhead {r['first_run_s']:.2f} s")
        if r.get("cpu_s") is not None:
            extra.append(f"cpu {r['cpu_s']:.3f} s, binary {r['binary_s']:.2f} s, "
                         f"make {r['make_s']:.1f} s")
        if r.get("cold_cache"):
            extra.append("cold Cython cache")
        cv = r["cv_isi_median"]
        rows.append([f"{r['tool']} {r['mode']}", f"{r['duration']:g}", f"{r['scale']:g}",
                     str(r["seed"]), str(r["n_spikes"]), f"{r['rate_hz']:.3f}",
                     "n/a" if cv is None else f"{cv:.3f}", f"{r['run_s']:.3f}",
                     f"{r['compile_s']:.2f}", "; ".join(extra)])
    return rows


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


SUMMARY_HEADER = ["tool / mode", "duration s", "scale (cells)", "seeds", "rate Hz (mean ± sd)",
                  "median CV ISI", "wall s, run only (median, range)", "compile s",
                  "peak RSS MiB", "wall / evsim"]
RUN_HEADER = ["tool / mode", "duration s", "scale", "seed", "spikes", "rate Hz",
              "median CV ISI", "run s", "compile s", "notes"]


def environment_lines(results, skip_evsim):
    """Versions, threads and machine load, one bullet each."""
    lines = [f"- machine: {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end "
             "(cores shared with other work: timings are noisy)"]
    b2 = next((r for r in results if r["tool"] == "brian2"), None)
    if b2:
        lines.append(f"- Brian2 {b2['version']} (NumPy {b2['numpy']}, Cython {b2['cython']}, "
                     f"{b2['compiler']}): runtime modes single-threaded (no BLAS in CUBA's "
                     "loops); cpp_standalone without OpenMP (openmp_threads = 0, one thread)")
    ev = next((r for r in results if r["tool"] == "evsim"), None)
    if ev:
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from common import blas_info

            blas = blas_info()
        except Exception as exc:  # report only
            blas = f"unknown ({exc})"
        lines.append(f"- evsim {ev['version']}: its own Numba threads ({ev['numba_threads']} "
                     f"available, evsim.config.NUM_THREADS = {ev['evsim_threads']}); BLAS "
                     f"single-threaded inside evsim calls; {blas}")
    elif not skip_evsim:
        lines.append("- evsim: no result")
    return lines


def report(args, results, memory):
    """The markdown report: summary table, per-run table, environment."""
    parts = [f"Command: `python benchmarks/brian2_compare.py {' '.join(args.argv)}` "
             f"({datetime.date.today().isoformat()})", "",
             markdown_table(SUMMARY_HEADER, summary_rows(results)), "",
             markdown_table(RUN_HEADER, per_run_rows(results)), ""]
    if memory:
        parts += [f"evsim memory, {memory['duration']:g} s at scale {memory['scale']:g}, event "
                  f"monitors streaming to HDF5 ({memory['hdf5_mb']:.1f} MiB, "
                  f"{memory['n_spikes']} events): RSS {memory['rss_before_run_mb']:.0f} MiB "
                  f"before the run (network built, kernels compiled), peak "
                  f"{memory['peak_rss_mb']:.0f} MiB "
                  f"{'during the run' if memory['peak_reset'] else 'of the process'} "
                  f"(+{memory['peak_rss_mb'] - memory['rss_before_run_mb']:.0f} MiB), "
                  f"run {memory['run_s']:.1f} s.", ""]
    parts += environment_lines(results, args.skip_evsim)
    parts += ["", "wall s: Brian2 runtime modes `device._last_run_time` (the time-step loop) of "
              "a run after a 20 ms warm-up run of the same network; cpp_standalone wall clock "
              "around the network run inside the binary; evsim `net.run` after a warm-up on "
              "another network. compile s: Brian2 runtime network construction + first "
              "run() minus its loop (code generation + compilation; cython: cold cache), "
              "cpp_standalone code generation + make, evsim's warm-up run (Numba "
              "compilation or cache load)."]
    return "\n".join(parts) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=1.0, help="simulated seconds")
    ap.add_argument("--scale", type=int, default=1, help="k: 3200k E and 800k I cells, p/k")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--brian2-python", default=BRIAN2_PYTHON,
                    help="the Brian2 venv's python (default %(default)s)")
    ap.add_argument("--modes", default=",".join(MODES), help="Brian2 modes, comma-separated")
    ap.add_argument("--suite", action="store_true",
                    help="the issue's set: 1 s at --seeds in every mode, one 10 s run and one "
                         "network 10x larger (cython and cpp_standalone), evsim's memory on "
                         "a 10 s run; one report")
    ap.add_argument("--busy", action="store_true",
                    help="keep one core busy with another process during every run (a "
                         "user's machine is never idle)")
    ap.add_argument("--evsim-dtypes", default="float32,float64",
                    help="evsim runs in these dtypes (float32: evsim's default; float64: "
                         "Brian2's precision); ratios are against the first")
    ap.add_argument("--skip-evsim", action="store_true")
    ap.add_argument("--skip-brian2", action="store_true")
    ap.add_argument("--memory", action="store_true",
                    help="also evsim's peak RSS for a long run streaming events to HDF5")
    ap.add_argument("--memory-duration", type=float, default=10.0)
    ap.add_argument("--json", metavar="OUT", help="write every run's result to this JSON file")
    ap.add_argument("--save", nargs="?", const=RESULTS_MD, metavar="MD",
                    help="write the report as markdown (default benchmarks/BRIAN2-RESULTS.md)")
    # worker mode (internal)
    ap.add_argument("--worker", choices=("brian2", "evsim-memory"), help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cython-cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.evsim_dtype_list = [d.strip() for d in args.evsim_dtypes.split(",") if d.strip()]
    bad = set(args.mode_list) - set(MODES)
    if bad:
        ap.error(f"unknown Brian2 modes {sorted(bad)}; choose from {list(MODES)}")
    if args.duration == int(args.duration):
        args.duration = int(args.duration)  # "1" rather than "1.0" on worker command lines
    return args


def run_config(args):
    """evsim and Brian2 runs of one (duration, scale) over the seeds and modes."""
    results, memory = [], None
    if not args.skip_evsim:
        for dtype in args.evsim_dtype_list:
            for seed in args.seed_list:
                results.append(evsim_run(args.duration, args.scale, seed, dtype))
                print(f"evsim {dtype} seed {seed}: {results[-1]['run_s']:.3f} s",
                      file=sys.stderr)
        if args.memory:
            memory = run_worker(sys.executable, ["--worker", "evsim-memory", "--duration",
                                                 args.memory_duration, "--scale", args.scale,
                                                 "--seed", args.seed_list[0]])
    if not args.skip_brian2:
        if not os.path.exists(args.brian2_python):
            sys.exit(f"{args.brian2_python} not found: set up the Brian2 venv (see the module "
                     f"docstring) or pass --brian2-python, or use --skip-brian2")
        with tempfile.TemporaryDirectory(prefix="brian2-cython-cache-") as cython_cache:
            for mode in args.mode_list:
                for seed in args.seed_list:
                    res = run_brian2(args, mode, seed, cython_cache)
                    if res is not None:
                        results.append(res)
                        print(f"brian2 {mode} seed {seed}: {res['run_s']:.3f} s",
                              file=sys.stderr)
    return results, memory


def suite_configs(args):
    """The --suite set: (title, args) per configuration."""
    fast = [m for m in args.mode_list if m != "numpy"]
    one = argparse.Namespace(**vars(args))
    one.memory = True
    ten = argparse.Namespace(**vars(args), )
    ten.duration, ten.seed_list, ten.mode_list, ten.memory = 10.0, args.seed_list[:1], fast, False
    big = argparse.Namespace(**vars(args))
    big.scale, big.seed_list, big.mode_list, big.memory = 10, args.seed_list[:1], fast, False
    return [("1 s, 4000 cells", one), ("10 s, 4000 cells", ten),
            ("1 s, 40,000 cells (10x)", big)]


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "brian2":
        return brian2_worker(args)
    if args.worker == "evsim-memory":
        return evsim_memory_worker(args)
    from common import busy_neighbour  # benchmarks/common.py (this script's folder)

    configs = suite_configs(args) if args.suite else [(None, args)]
    texts, everything = [], []
    for title, cfg in configs:
        with busy_neighbour(args.busy):
            results, memory = run_config(cfg)
        if not results:
            sys.exit("no results")
        text = report(cfg, results, memory)
        if args.busy:
            text = "With one core kept busy by another process.\n\n" + text
        texts.append(text if title is None else f"## {title}\n\n{text}")
        print(texts[-1])
        everything.append(dict(title=title, results=results, memory=memory))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1)
    if args.save:
        with open(args.save, "w") as f:
            f.write("# evsim and Brian2 on Brian2's CUBA example\n\n" + "\n\n".join(texts))


if __name__ == "__main__":
    main()
