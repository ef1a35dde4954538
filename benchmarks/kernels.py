"""Speed of evsim's event-driven CPU kernels against the fastest dense baseline.

For each batch size B, hidden size H and target activity, a shared threshold
is calibrated by bisection so that evsim's event forward hits the activity.
Then, at default settings (no thread environment variables; evsim chooses its
own threads), it times

* ``evsim``: the event-driven backend ("cpu"): forward (inference) and
  forward + backward (training forward + ``egru_backward``) at each surrogate
  support (1.0 and 3.6, damp = support);
* ``evsim dense``: evsim's own dense backend ("dense"), shown as a column
  only: it is never the baseline;
* ``NumPy``: a plain NumPy/BLAS dense EGRU with the same maths
  (``numpy_egru.py``: one GEMM for the input drive, one BLAS product per step,
  in-place pointwise maths; hand-written dense BPTT), on the same weights,
  inputs and thresholds, in its own process with BLAS at its default threads;
* ``torch``: ``torch.nn.GRU`` (forward under ``inference_mode``, and forward +
  backward with respect to x and all weights) in its own process at torch's
  default threads, when torch is installed.

Each ratio is baseline / evsim, where the baseline is the faster of NumPy and
torch for that measurement (named in the table): > 1 means evsim is faster.
"rows read" is the fraction of R's rows a union over the batch reads (at step
t, the units that fired in any sample at t - 1); for B > 1 the table adds the
memory-traffic floor of the event forward (those rows' bytes divided by the
row-read bandwidth measured in this run) and evsim's time over it.

``--busy`` repeats every timing (evsim and both baselines) with a busy-loop
neighbour process keeping one core busy, and prints the loaded tables and the
slowdown loaded / idle of each measurement.

    python benchmarks/kernels.py                  # full run (tens of minutes on 2 cores)
    python benchmarks/kernels.py --busy           # also under load
    python benchmarks/kernels.py --quick --busy   # smoke run (< 60 s)
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

import evsim
from evsim import config, threads
from evsim.functional import egru_backward, egru_forward

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import blas_info, busy_neighbour, run_json, time_interleaved  # noqa: E402

LOADS = ("idle", "busy")


# --------------------------------------------------------------------------
# Problem, calibration, counters


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
        return np.full(H, -50.0, x.dtype)
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


def rows_read(c):
    """Rows of R a union-over-batch product reads: at step t, the units that
    fired in at least one sample at t - 1 (none at t = 0, where y0 = 0).
    Returns (fraction of T * H, rows over the run)."""
    T, _, H = c.shape
    n = int(np.count_nonzero(c[:-1].max(axis=1) > 0))
    return n / (T * H), n


@numba.njit(parallel=True, cache=True)
def _sum_rows(R, parts):
    """Add up the rows of R, rows split over ``parts`` threads: a streaming
    read of the whole matrix, as an event-driven product reads fired rows."""
    n, m = R.shape
    acc = np.zeros((parts, m), R.dtype)
    for k in numba.prange(parts):
        for i in range(k * n // parts, (k + 1) * n // parts):
            for j in range(m):
                acc[k, j] += R[i, j]
    return acc


def row_bandwidth(H, repeats=20, min_time=0.25, dtype=np.float32):
    """Bytes per second reading all rows of an (H, 3H) matrix: the best pass
    of at least ``repeats`` passes and ``min_time`` seconds, on one thread and
    on all Numba threads, the higher of the two (a parallel pass on a loaded
    machine waits for a preempted thread; one thread still finds clean
    passes). The matrix stays in cache when it fits, as R does over a
    sequence. Returns (bandwidth, {threads: bandwidth})."""
    R = np.random.default_rng(0).random((H, 3 * H), dtype=dtype)
    nthreads = numba.get_num_threads()
    per = {}
    for n in sorted({1, nthreads}):
        numba.set_num_threads(n)
        try:
            _sum_rows(R, n)
            best, k, start = np.inf, 0, time.perf_counter()
            while k < repeats or time.perf_counter() - start < min_time:
                t0 = time.perf_counter()
                _sum_rows(R, n)
                best = min(best, time.perf_counter() - t0)
                k += 1
        finally:
            numba.set_num_threads(nthreads)
        per[n] = R.nbytes / best
    return max(per.values()), per


# --------------------------------------------------------------------------
# Baselines, each in its own process

_NUMPY_SCRIPT = f"""
import json, sys
sys.path.insert(0, {str(HERE)!r})
from numpy_egru import bench
print(json.dumps(bench(json.loads(sys.argv[1]))))
"""

_TORCH_SCRIPT = f"""
import json, sys
sys.path.insert(0, {str(HERE)!r})
from common import time_interleaved
import torch
p = json.loads(sys.argv[1])
T, In, out = p["T"], p["I"], []
for B, H in p["sizes"]:
    torch.manual_seed(0)
    gru = torch.nn.GRU(In, H)
    x = torch.randn(T, B, In)
    dy = torch.randn(T, B, H)

    def fwd():
        with torch.inference_mode():
            gru(x)

    def fb():
        xr = x.detach().requires_grad_(True)
        y, _ = gru(xr)
        y.backward(dy)
        gru.zero_grad(set_to_none=True)

    t = time_interleaved({{"fwd": fwd, "fb": fb}}, p["repeats"])
    out.append(dict(t, B=B, H=H, threads=torch.get_num_threads(), version=torch.__version__))
print(json.dumps(out))
"""


def torch_times(sizes, args, busy):
    """{(B, H): {"fwd": s, "fb": s, "threads": n, "version": v}} of torch.nn.GRU,
    in one process, with or without the busy neighbour; {} without torch."""
    with busy_neighbour(busy):
        out = run_json(_TORCH_SCRIPT, dict(T=args.steps, I=args.inputs, sizes=sizes,
                                           repeats=args.repeats))
    return {(d["B"], d["H"]): d for d in out or []}


# --------------------------------------------------------------------------


def bench_config(B, H, target, prob, prob_npz, tmp, args, loads):
    """Calibrate, then time evsim and the NumPy baseline under each load."""
    thr = calibrate(prob, target)
    T = prob[0].shape[0]
    dy = np.load(prob_npz)["dy"]
    thr_npz = os.path.join(tmp, "thr.npz")
    np.savez(thr_npz, thr=thr)
    supports = args.supports

    def fwd(backend):
        return lambda: egru_forward(*prob, thr, training=False, backend=backend)

    def fb(backend, s):
        def f():
            r = egru_forward(*prob, thr, training=True, backend=backend, damp=s, support=s)
            return egru_backward(r, dy)  # gradients; their .stats hold the backward counters
        return f

    fns = {"fwd": fwd("cpu"), "dense_fwd": fwd("dense")}
    fns.update({f"fb_{s}": fb("cpu", s) for s in supports})
    fns["dense_fb"] = fb("dense", supports[0])

    res = fns["fwd"]()
    frac, nrows = rows_read(res.c)
    row = dict(B=B, H=H, T=T, target=target, thr=float(thr[0]),
               activity=res.stats["activity"], events=res.stats["events"],
               rows_read=frac, rows_read_total=nrows,
               floor_bytes=nrows * 3 * H * prob[2].itemsize)
    row["bwd_sparsity"] = {str(s): fns[f"fb_{s}"]().stats["backward_sparsity"]
                           for s in supports}
    payload = dict(npz=[prob_npz, thr_npz], supports=supports, repeats=args.repeats)
    for load in loads:
        with busy_neighbour(load == "busy"):
            t = time_interleaved(fns, args.repeats)
            base = run_json(_NUMPY_SCRIPT, payload)
        row[load] = dict(
            evsim=dict(fwd=t["fwd"], fb={str(s): t[f"fb_{s}"] for s in supports}),
            evsim_dense=dict(fwd=t["dense_fwd"], fb=t["dense_fb"]),
            numpy=base)
    if row[loads[0]]["numpy"] is not None:
        act = row[loads[0]]["numpy"]["activity"]
        if abs(act - row["activity"]) > 0.01:
            print(f"warning: B={B} H={H}: NumPy baseline activity {act:.4f} vs evsim "
                  f"{row['activity']:.4f}", file=sys.stderr)
    return row


# --------------------------------------------------------------------------
# Tables


def _ms(t):
    return "-" if t is None else f"{t * 1e3:.2f}"


def _best(cands):
    """(name, seconds) of the fastest available baseline, or (None, None)."""
    cands = [(t, n) for n, t in cands if t is not None]
    if not cands:
        return None, None
    t, n = min(cands)
    return n, t


def _ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"


def _baselines(r, tt, load, support=None):
    """Baseline times of row ``r`` under ``load``: forward, or forward +
    backward at ``support``."""
    npr, tor = r[load]["numpy"], (tt or {}).get(load)
    if support is None:
        return [("NumPy", npr and npr["fwd"]), ("torch", tor and tor["fwd"])]
    return [("NumPy", npr and npr["fb"][str(support)]), ("torch", tor and tor["fb"])]


def _md(head, lines):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c) + " |" for c in lines]
    return "\n".join(out)


def forward_table(rows, torch_t, load):
    head = ["B", "H", "activity", "rows read", "evsim ms", "evsim dense ms", "NumPy ms",
            "torch ms", "baseline", "baseline / evsim", "floor ms", "evsim / floor"]
    lines = []
    for r in rows:
        ev = r[load]["evsim"]["fwd"]
        base = _baselines(r, torch_t.get((r["B"], r["H"])), load)
        name, bt = _best(base)
        floor = r["floor_s"] if r["B"] > 1 else None
        lines.append([str(r["B"]), str(r["H"]), f"{r['activity']:.3f}",
                      f"{r['rows_read']:.3f}", _ms(ev), _ms(r[load]["evsim_dense"]["fwd"]),
                      _ms(base[0][1]), _ms(base[1][1]), name or "-", _ratio(bt, ev),
                      _ms(floor), _ratio(ev, floor)])
    return _md(head, lines)


def fb_table(rows, torch_t, load, supports):
    head = ["B", "H", "activity"]
    for s in supports:
        head += [f"bwd sparsity s={s}", f"evsim ms s={s}", f"NumPy ms s={s}"]
    head += ["evsim dense ms", "torch ms"]
    for s in supports:
        head += [f"baseline s={s}", f"baseline / evsim s={s}"]
    lines = []
    for r in rows:
        tt = torch_t.get((r["B"], r["H"]))
        cells = [str(r["B"]), str(r["H"]), f"{r['activity']:.3f}"]
        ratios = []
        for s in supports:
            ev = r[load]["evsim"]["fb"][str(s)]
            base = _baselines(r, tt, load, s)
            name, bt = _best(base)
            cells += [f"{r['bwd_sparsity'][str(s)]:.3f}", _ms(ev), _ms(base[0][1])]
            ratios += [name or "-", _ratio(bt, ev)]
        tor = (tt or {}).get(load)
        cells += [_ms(r[load]["evsim_dense"]["fb"]), _ms(tor and tor["fb"])]
        lines.append(cells + ratios)
    return _md(head, lines)


def slowdown_table(rows, torch_t, supports):
    """Loaded / idle time of every measurement."""

    def sl(a, b):
        return "-" if a is None or b is None else f"{a / b:.2f}"

    head = ["B", "H", "activity", "fwd evsim", "fwd evsim dense", "fwd NumPy", "fwd torch"]
    for s in supports:
        head += [f"fwd+bwd evsim s={s}", f"fwd+bwd NumPy s={s}"]
    head += ["fwd+bwd evsim dense", "fwd+bwd torch"]
    lines = []
    for r in rows:
        i, b = r["idle"], r["busy"]
        tt = torch_t.get((r["B"], r["H"])) or {}
        ti, tb = tt.get("idle"), tt.get("busy")
        npi, npb = i["numpy"] or {}, b["numpy"] or {}
        cells = [str(r["B"]), str(r["H"]), f"{r['activity']:.3f}",
                 sl(b["evsim"]["fwd"], i["evsim"]["fwd"]),
                 sl(b["evsim_dense"]["fwd"], i["evsim_dense"]["fwd"]),
                 sl(npb.get("fwd"), npi.get("fwd")),
                 sl(tb and tb["fwd"], ti and ti["fwd"])]
        for s in supports:
            cells += [sl(b["evsim"]["fb"][str(s)], i["evsim"]["fb"][str(s)]),
                      sl(npb.get("fb", {}).get(str(s)), npi.get("fb", {}).get(str(s)))]
        cells += [sl(b["evsim_dense"]["fb"], i["evsim_dense"]["fb"]),
                  sl(tb and tb["fb"], ti and ti["fb"])]
        lines.append(cells)
    return _md(head, lines)


def _loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def report(rows, torch_t, args, meta, bandwidth):
    """The whole markdown report (header and tables)."""
    tinfo = next((v["idle"] for v in torch_t.values() if v.get("idle")), None)
    npinfo = next((r["idle"]["numpy"] for r in rows if r["idle"]["numpy"]), None)
    bw = "; ".join(
        f"H={h} ({h * 3 * h * 4 / 2**20:.2f} MiB): " + ", ".join(
            f"{n} thread{'s' * (n != '1')} {b / 1e9:.3g} GB/s"
            for n, b in meta["bandwidth"][str(h)].items())
        for h in sorted(bandwidth))
    text = [
        f"evsim {evsim.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
        f"torch {tinfo['version'] if tinfo else 'not measured'}; Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}).",
        f"float32, T={args.steps}, I={args.inputs}, surrogate damp = support in "
        f"{args.supports}; median of {args.repeats} interleaved repeats.",
        f"Threads (defaults, no environment variables): evsim up to "
        f"{threads.available()} Numba threads chosen per call, BLAS single-threaded "
        f"inside evsim; NumPy baseline BLAS "
        f"{npinfo['blas_threads'] if npinfo else '-'} threads (own process); torch "
        f"{tinfo['threads'] if tinfo else '-'} threads (own process).",
        f"BLAS: {meta['blas']}.",
        f"evsim switches: DENSE_SWITCH_ACTIVITY={config.DENSE_SWITCH_ACTIVITY}, "
        f"BACKWARD_DENSE_SWITCH={config.BACKWARD_DENSE_SWITCH}, "
        f"DR_DENSE_SWITCH={config.DR_DENSE_SWITCH} (None: automatic).",
        f"Row-read bandwidth (all rows of an (H, 3H) float32 matrix, best pass; the "
        f"floor uses the higher): {bw}.",
        "1-minute load average before / after the run: "
        + " / ".join("-" if v is None else f"{v:.2f}" for v in meta["load_average"])
        + " (other jobs are not controlled: compare runs taken on a quiet machine).",
        "",
        "Ratios: baseline / evsim with baseline = the faster of NumPy (dense EGRU, "
        "same maths and data) and torch.nn.GRU for that measurement; > 1: evsim faster. "
        "evsim dense is shown for reference only. Floor (B > 1): bytes of the rows of R "
        "the forward must read (union over the batch) / row-read bandwidth.",
    ]
    titles = {"idle": "no added load", "busy": "one core kept busy by a neighbour process"}
    for load in meta["loads"]:
        text += ["", f"### Forward (inference), {titles[load]}", "",
                 forward_table(rows, torch_t, load), "",
                 f"### Forward + backward (training), {titles[load]}", "",
                 fb_table(rows, torch_t, load, args.supports)]
    if "busy" in meta["loads"]:
        text += ["", "### Slowdown under load (time with the neighbour / time without)", "",
                 slowdown_table(rows, torch_t, args.supports)]
    return "\n".join(text) + "\n"


def plot(rows, torch_t, supports, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["B"], r["H"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.8 * len(keys), 3.9), squeeze=False)
    for ax, (B, H) in zip(axes[0], keys):
        rs = sorted((r for r in rows if (r["B"], r["H"]) == (B, H)),
                    key=lambda r: r["activity"])
        act = [max(r["activity"], 1e-4) for r in rs]
        ax.plot(act, [r["idle"]["evsim"]["fwd"] * 1e3 for r in rs], "o-", label="evsim fwd")
        ax.plot(act, [r["idle"]["evsim_dense"]["fwd"] * 1e3 for r in rs], "s:",
                label="evsim dense fwd")
        if all(r["idle"]["numpy"] for r in rs):
            ax.plot(act, [r["idle"]["numpy"]["fwd"] * 1e3 for r in rs], "k-",
                    label="NumPy fwd")
        for s in supports:
            ax.plot(act, [r["idle"]["evsim"]["fb"][str(s)] * 1e3 for r in rs], "^--",
                    label=f"evsim fwd+bwd s={s}")
        if all(r["idle"]["numpy"] for r in rs):
            ax.plot(act, [r["idle"]["numpy"]["fb"][str(supports[0])] * 1e3 for r in rs],
                    "k--", label="NumPy fwd+bwd")
        tt = (torch_t.get((B, H)) or {}).get("idle")
        if tt:
            ax.axhline(tt["fwd"] * 1e3, color="tab:purple", lw=1, label="torch fwd")
            ax.axhline(tt["fb"] * 1e3, color="tab:purple", lw=1, ls="--",
                       label="torch fwd+bwd")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("activity")
        ax.set_ylabel("time (ms)")
        ax.set_title(f"B={B}, H={H}, T={rs[0]['T']}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke configuration (< 60 s)")
    p.add_argument("--busy", action="store_true",
                   help="repeat every timing with a busy-loop neighbour process")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--max-batched-hidden", type=int, default=1024,
                   help="hidden sizes above this run at B = 1 only")
    p.add_argument("--activity", type=float, nargs="+",
                   default=[0.01, 0.05, 0.1, 0.2, 0.5, 1.0])
    p.add_argument("--supports", type=float, nargs="+", default=[1.0, 3.6])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--inputs", type=int, default=64)
    p.add_argument("--w-scale", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--results-md", type=Path, default=None,
                   help="also write the report here (e.g. benchmarks/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.hidden, args.activity = [1, 16], [128], [0.1, 1.0]
        args.steps, args.repeats = 50, 3
    from tqdm import tqdm

    loads = LOADS if args.busy else LOADS[:1]
    bh = [(B, H) for B in args.batch for H in args.hidden
          if B == 1 or H <= args.max_batched_hidden]
    cfgs = [(B, H, a) for B, H in bh for a in args.activity]
    meta = dict(blas=blas_info(), loads=list(loads), load_average=[_loadavg()])
    bw_threads = {H: row_bandwidth(H) for H in sorted({H for _, H in bh})}
    bandwidth = {H: b for H, (b, _) in bw_threads.items()}
    meta["bandwidth"] = {str(H): {str(n): b for n, b in per.items()}
                         for H, (_, per) in bw_threads.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "kernels.partial.jsonl"
    partial.write_text("")
    rows, torch_t = [], {}
    bar = tqdm(total=len(cfgs), disable=args.no_progress, desc="kernels")
    if not args.no_torch:
        bar.set_postfix_str("torch.nn.GRU")
        per_load = {load: torch_times(bh, args, load == "busy") for load in loads}
        for key in bh:
            if key in per_load[loads[0]]:
                torch_t[key] = {load: per_load[load].get(key) for load in loads}
    with tempfile.TemporaryDirectory(prefix="evsim-bench-") as tmp:
        for B, H in bh:
            prob = make_problem(B, H, args.inputs, args.steps, w_scale=args.w_scale)
            dy = np.random.default_rng(1).normal(size=(args.steps, B, H)).astype(np.float32)
            prob_npz = os.path.join(tmp, "problem.npz")
            np.savez(prob_npz, **dict(zip(("x", "W", "R", "bx", "br"), prob)), dy=dy)
            for a in args.activity:
                bar.set_postfix_str(f"B={B} H={H} activity={a}")
                row = bench_config(B, H, a, prob, prob_npz, tmp, args, loads)
                row["floor_s"] = row["floor_bytes"] / bandwidth[H]
                rows.append(row)
                with partial.open("a") as f:  # rows as they come, for long runs
                    f.write(json.dumps(row) + "\n")
                bar.update()
    bar.close()
    meta["load_average"].append(_loadavg())
    md = report(rows, torch_t, args, meta, bandwidth)
    print(md)
    (args.out / "kernels.md").write_text(md)
    (args.out / "kernels.json").write_text(json.dumps(dict(
        meta=dict(meta, evsim=evsim.__version__, numba=numba.__version__, numpy=np.__version__,
                  threads=threads.available(), steps=args.steps, inputs=args.inputs,
                  repeats=args.repeats, supports=args.supports),
        rows=rows, torch={f"{b},{h}": v for (b, h), v in torch_t.items()}), indent=1))
    if args.results_md:
        args.results_md.write_text("# Kernel benchmark results\n\n" + md)
    try:
        plot(rows, torch_t, args.supports, args.out / "kernels.png")
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
