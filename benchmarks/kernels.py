"""Speed of the event-driven CPU kernels against dense BLAS and torch.nn.GRU.

For each batch size B, hidden size H and target activity, a shared threshold
is calibrated by bisection so that the event forward hits the activity; then
forward (inference) and backward (BPTT, at surrogate supports 1.0 and 3.6 with
damp = support) are timed for

* ``event``: the event-driven backend ("cpu", with its dense auto-switch),
* ``event (no switch)``: the same with the auto-switch off,
* ``dense``: the same kernels with a BLAS product every step ("dense"),
* ``torch``: ``torch.nn.GRU`` on CPU, when torch is installed, timed in its own
  process (torch and Numba in one process fight over the cores).

Timings interleave the variants and take medians of repeats. On a shared
machine, ``--quiet-wait`` waits (up to that many seconds) for the CPUs to be
idle before each timing. Prints a table of ratios (dense / event, torch /
event), the fraction of rows of R read (units firing in at least one sample of
the batch) and the backward sparsity; saves ``results/kernels.md`` and
``results/kernels.png``.

    python benchmarks/kernels.py            # full run (~10-15 min on 2 cores)
    python benchmarks/kernels.py --quick    # smoke run (< 60 s)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import evsim
from evsim import config
from evsim.functional import egru_backward, egru_forward

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------
# Helpers


def _cpu_idle():
    try:
        with open("/proc/stat") as f:
            p = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    return p[3] + p[4], sum(p)


def wait_quiet(max_wait, min_idle=0.85, window=0.2):
    """Wait until the CPUs are mostly idle (other jobs on a shared machine)."""
    t0 = time.time()
    while time.time() - t0 < max_wait:
        a = _cpu_idle()
        if a is None:
            return
        time.sleep(window)
        b = _cpu_idle()
        if (b[0] - a[0]) / max(b[1] - a[1], 1) >= min_idle:
            return


def make_problem(B, H, In, T, seed=0, w_scale=2.0, dtype=np.float32):
    """Random EGRU weights and inputs. ``w_scale`` widens the input drive so
    that the membrane values v spread beyond the surrogate band."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, In)).astype(dtype)
    W = (rng.normal(size=(In, 3 * H)) * w_scale / np.sqrt(In)).astype(dtype)
    R = (rng.normal(size=(H, 3 * H)) / np.sqrt(H)).astype(dtype)
    bx = np.zeros(3 * H, dtype)
    br = np.zeros(3 * H, dtype)
    return x, W, R, bx, br


def calibrate(prob, target, iters=18):
    """Shared threshold whose event forward has activity closest to ``target``."""
    x, W, R, bx, br = prob
    H = R.shape[0]
    if target >= 1.0:
        lo = -50.0
        return np.full(H, lo, x.dtype)
    lo, hi = -3.0, 3.0
    best = (np.inf, 0.0)
    for _ in range(iters):
        m = 0.5 * (lo + hi)
        act = egru_forward(x, W, R, bx, br, np.full(H, m, x.dtype), training=False,
                           backend="cpu").stats["activity"]
        best = min(best, (abs(act - target), m))
        if act > target:
            lo = m
        else:
            hi = m
    return np.full(H, best[1], x.dtype)


def rows_read_fraction(result):
    """Mean over steps of the fraction of units that fired in at least one sample
    (the rows of R a union-over-batch product would read)."""
    c = result.c  # (T, B, H)
    return float((c.max(axis=1) > 0).mean())


def time_interleaved(fns, repeats, quiet):
    """Median seconds of each function, repeats interleaved."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            if quiet:
                wait_quiet(quiet)
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------
# torch baseline, in its own process

_TORCH_SCRIPT = r"""
import json, sys, time, statistics
import torch
cfgs, repeats, In, T = json.loads(sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
out = []
for B, H in cfgs:
    torch.manual_seed(0)
    gru = torch.nn.GRU(In, H)
    x = torch.randn(T, B, In)
    fwd, fb = [], []
    for i in range(repeats + 1):
        with torch.no_grad():
            t0 = time.perf_counter(); gru(x); t1 = time.perf_counter()
        xr = x.clone().requires_grad_(True)
        t2 = time.perf_counter()
        y, _ = gru(xr)
        y.sum().backward()
        t3 = time.perf_counter()
        if i:
            fwd.append(t1 - t0); fb.append(t3 - t2)
    f, b = statistics.median(fwd), statistics.median(fb)
    out.append([B, H, f, max(b - f, 0.0)])
print(json.dumps(out))
"""


def torch_times(cfgs, repeats, In, T, threads):
    """{(B, H): (forward s, backward s)} or {} when torch is missing."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TORCH_SCRIPT, json.dumps([cfgs, repeats, In, T]),
             str(threads)], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        if "No module named 'torch'" not in proc.stderr:
            print("torch baseline failed:\n" + proc.stderr[-2000:], file=sys.stderr)
        return {}
    return {(b, h): (f, bw) for b, h, f, bw in json.loads(proc.stdout.strip().splitlines()[-1])}


# --------------------------------------------------------------------------


def bench_config(B, H, target, args):
    prob = make_problem(B, H, args.inputs, args.steps, w_scale=args.w_scale)
    thr = calibrate(prob, target)

    def fwd(backend, switch=None, training=False, support=None):
        def f():
            old = config.DENSE_SWITCH_ACTIVITY
            if switch is not None:
                config.DENSE_SWITCH_ACTIVITY = switch
            try:
                return egru_forward(*prob, thr, training=training, backend=backend,
                                    damp=support, support=support)
            finally:
                config.DENSE_SWITCH_ACTIVITY = old
        return f

    fns = {"event": fwd("cpu"), "event_noswitch": fwd("cpu", switch=2.0),
           "dense": fwd("dense")}
    for f in fns.values():  # warm-up (compilation, caches)
        f()
    res = fns["event"]()
    row = dict(B=B, H=H, target=target, activity=res.stats["activity"],
               events=res.stats["events"], rows_read=rows_read_fraction(res))
    row.update({f"fwd_{k}": v for k, v in time_interleaved(fns, args.repeats,
                                                           args.quiet_wait).items()})
    for support in args.supports:
        bfns, sparsity = {}, None
        for name, backend in (("event", "cpu"), ("dense", "dense")):
            r = fwd(backend, training=True, support=support)()
            dy = np.random.default_rng(1).normal(size=r.y.shape).astype(r.y.dtype)
            egru_backward(r, dy)  # warm-up

            def b(r=r, dy=dy):
                egru_backward(r, dy)
            bfns[name] = b
            if name == "event":
                egru_backward(r, dy)
                sparsity = r.stats["backward_sparsity"]
        t = time_interleaved(bfns, args.repeats, args.quiet_wait)
        row[f"bwd_sparsity_{support}"] = sparsity
        row[f"bwd_event_{support}"] = t["event"]
        row[f"bwd_dense_{support}"] = t["dense"]
    return row


def _fmt_ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"


def table(rows, torch_t, supports):
    head = ["B", "H", "activity", "rows read", "fwd event ms", "fwd no-switch ms",
            "fwd dense ms", "dense/event", "dense/no-switch", "torch/event"]
    for s in supports:
        head += [f"bwd sparsity s={s}", f"bwd event ms s={s}", f"bwd dense ms s={s}",
                 f"bwd dense/event s={s}", f"torch bwd/event s={s}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tt = torch_t.get((r["B"], r["H"]))
        cells = [str(r["B"]), str(r["H"]), f"{r['activity']:.3f}", f"{r['rows_read']:.3f}",
                 f"{r['fwd_event'] * 1e3:.2f}", f"{r['fwd_event_noswitch'] * 1e3:.2f}",
                 f"{r['fwd_dense'] * 1e3:.2f}", _fmt_ratio(r["fwd_dense"], r["fwd_event"]),
                 _fmt_ratio(r["fwd_dense"], r["fwd_event_noswitch"]),
                 _fmt_ratio(tt and tt[0], r["fwd_event"])]
        for s in supports:
            ev, de = r[f"bwd_event_{s}"], r[f"bwd_dense_{s}"]
            cells += [f"{r[f'bwd_sparsity_{s}']:.3f}", f"{ev * 1e3:.2f}", f"{de * 1e3:.2f}",
                      _fmt_ratio(de, ev), _fmt_ratio(tt and tt[1], ev)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, torch_t, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["B"], r["H"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    for ax, (B, H) in zip(axes[0], keys, strict=True):
        rs = sorted((r for r in rows if (r["B"], r["H"]) == (B, H)), key=lambda r: r["events"])
        ev = [max(r["events"], 1) for r in rs]
        ax.plot(ev, [r["fwd_event"] * 1e3 for r in rs], "o-", label="event fwd")
        ax.plot(ev, [r["fwd_event_noswitch"] * 1e3 for r in rs], "x:", label="event fwd, no switch")
        ax.plot(ev, [r["fwd_dense"] * 1e3 for r in rs], "s-", label="dense fwd")
        for key in [k for k in rs[0] if k.startswith("bwd_event_")]:
            s = key.split("_")[-1]
            ax.plot(ev, [r[key] * 1e3 for r in rs], "^--", label=f"event bwd s={s}")
            ax.plot(ev, [r[f"bwd_dense_{s}"] * 1e3 for r in rs], "v--", label=f"dense bwd s={s}")
        if (B, H) in torch_t:
            ax.axhline(torch_t[(B, H)][0] * 1e3, color="k", lw=1, label="torch fwd")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events per run")
        ax.set_ylabel("time (ms)")
        ax.set_title(f"B={B}, H={H}, T={rs[0].get('T', '')}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke configuration (< 60 s)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--activity", type=float, nargs="+",
                   default=[0.01, 0.05, 0.1, 0.2, 0.5, 1.0])
    p.add_argument("--supports", type=float, nargs="+", default=[1.0, 3.6])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--inputs", type=int, default=64)
    p.add_argument("--w-scale", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quiet-wait", type=float, default=5.0,
                   help="max seconds to wait for idle CPUs before each timing (0: off)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--results-md", type=Path, default=None,
                   help="also write the table here (e.g. benchmarks/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.hidden, args.activity = [1], [256], [0.1, 1.0]
        args.steps, args.repeats, args.quiet_wait = 50, 3, 0.0
    import numba
    from tqdm import tqdm

    cfgs = [(B, H, a) for B in args.batch for H in args.hidden for a in args.activity]
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "kernels.partial.jsonl"
    partial.write_text("")
    for B, H, a in tqdm(cfgs, disable=args.no_progress, desc="kernels"):
        row = bench_config(B, H, a, args)
        row["T"] = args.steps
        rows.append(row)
        with partial.open("a") as f:  # rows as they come, for long runs
            f.write(json.dumps(row) + "\n")
    torch_t = {}
    if not args.no_torch:
        bh = sorted({(B, H) for B, H, _ in cfgs})
        torch_t = torch_times(bh, args.repeats, args.inputs, args.steps,
                              numba.get_num_threads())
    md = table(rows, torch_t, args.supports)
    header = (f"evsim {evsim.__version__}, float32, T={args.steps}, I={args.inputs}, "
              f"{numba.get_num_threads()} threads, numba {numba.__version__}, "
              f"DENSE_SWITCH_ACTIVITY={config.DENSE_SWITCH_ACTIVITY}; "
              f"median of {args.repeats}. Ratios > 1: event path faster. "
              f"torch: {'torch.nn.GRU' if torch_t else 'not measured'}.\n\n")
    print(header + md)
    (args.out / "kernels.md").write_text(header + md + "\n")
    (args.out / "kernels.json").write_text(json.dumps(
        dict(rows=rows, torch={f"{b},{h}": v for (b, h), v in torch_t.items()}), indent=1))
    if args.results_md:
        args.results_md.write_text("# Kernel benchmark results\n\n" + header + md + "\n")
    try:
        plot(rows, torch_t, args.out / "kernels.png")
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
