"""Event-driven EGRU forward on the GPU against a dense GPU baseline.

The baseline is cuDNN's GRU (``torch.nn.GRU`` on the device) when torch with
CUDA is installed, otherwise evsim's own kernel with every unit firing (a
dense product on the device). For each batch size and hidden size the event
forward is timed at several activities (fraction of units firing per step,
set by calibrating one threshold for all units), and the ratios
dense / event are printed with the crossover activity above which dense wins.

What is timed: the recurrent part of the forward pass over T steps, inference
(nothing saved for a backward pass), outputs left on the device. The input
drive x W + bx is precomputed for evsim; cuDNN gets an input of size
``--inputs`` (64 by default, so that its input GEMM is ~1.5 % of the work at
H = 1024 and less at 4096).

    python benchmarks/gpu.py --max-seconds 240            # full sweep
    python benchmarks/gpu.py --batch 1 --hidden 4096 --activity 0.1
    python benchmarks/gpu.py --compile-only               # PTX check, no GPU needed

Results go to ``--out`` (JSON), by default ``$OUT/gpu_bench.json`` when OUT is
set.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

ACTIVITIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


def _log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------
# PTX compile check (no GPU needed; numba-cuda with NVVM)


def compile_only():
    """Compile every kernel variant of evsim.kernels.cuda for sm_90 with the real
    NVVM compiler; exit status 1 on any failure."""
    import numba.cuda.dispatcher as disp
    from numba import cuda, typeof

    from evsim.kernels import cuda as kc

    class _Sm90:
        compute_capability = (9, 0)

    if not cuda.is_available():  # device functions ask the current device for its cc
        disp.get_current_device = lambda: _Sm90()
    T, B, H = 3, 2, 8
    G = 3 * H
    fails = 0

    def chk(name, k, *args):
        nonlocal fails
        sig = tuple(typeof(a) for a in args)
        try:
            cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
            _log("ok  ", name)
        except Exception as exc:  # report every failure, then fail at the end
            fails += 1
            _log("FAIL", name, type(exc).__name__, str(exc)[:3000])

    for dt in (np.float32, np.float64):
        f = lambda *s, dt=dt: np.zeros(s, dt)  # noqa: E731
        i32 = lambda *s: np.zeros(s, np.int32)  # noqa: E731
        L = np.full(B, T, np.int64)
        com = kc._common(np.dtype(dt))
        chk("fill", com.fill, f(5), 0)
        chk("fill int32", com.fill, i32(5), 0)
        chk("column_sums", com.column_sums, f(4, G), f(G))
        chk(
            "last_state",
            com.last_state,
            f(B, H),
            f(B, H),
            f(T, B, H),
            f(T, B, H),
            L,
            f(B, H),
            f(B, H),
        )
        chk("compact", com.compact, f(T, B, H), i32(T + 1, B, H), i32(T + 1, B), 0, 0)
        chk("propagate", com.propagate, i32(T, B, H), i32(T, B), 0, f(T, B, H), f(H, 5), f(T, B, 5))
        i64 = lambda *s: np.zeros(s, np.int64)  # noqa: E731
        chk("unit_count", com.unit_count, f(B, H), f(T, B, H), L, True, i64(H))
        chk("exclusive_scan", com.exclusive_scan, i64(H), i64(H + 1), 0)
        chk("unit_fill", com.unit_fill, f(B, H), f(T, B, H), L, True, i64(H + 1), i64(9), f(9))
        chk("outer_events", com.outer_events, i64(H + 1), i64(9), f(9), f(T * B, G), f(H, G))
        chk("scale", com.scale, f(H, G), f(H, G))
        chk("trace_fwd", com.trace_fwd, f(T, B, H), 0.9, f(T, B, H))
        chk("trace_bwd", com.trace_bwd, f(T, B, H), 0.9, f(T, B, H))
        for km in (0, 1, 2):
            keep = f(T, B, H) if km == 1 else f(1, 1, 1)
            for dg in (False, True):
                for save in (False, True):
                    k = kc._steps(np.dtype(dt), km, dg, save)
                    sv = [f(T, B, H) if save else f(1, 1, 1) for _ in range(5)]
                    chk(
                        f"fwd_step {np.dtype(dt)} keep{km} gru={dg} save={save}",
                        k.fwd_step,
                        0,
                        f(T, B, G),
                        f(H, G),
                        f(G),
                        f(H),
                        f(B, H),
                        f(B, H),
                        keep,
                        L,
                        f(T, B, H),
                        f(T, B, H),
                        f(T, B, H),
                        *sv,
                        i32(T + 1, B, H),
                        i32(T + 1, B),
                        i32(B),
                        np.zeros((B, 3), np.int64),
                        2,
                        0,
                    )
                chk(
                    f"bwd_step {np.dtype(dt)} keep{km} gru={dg}",
                    k.bwd_step,
                    0,
                    f(H, G),
                    f(H),
                    keep,
                    L,
                    0.7,
                    1.0,
                    *[f(T, B, H) for _ in range(6)],
                    f(B, H),
                    f(T, B, H),
                    f(T, B, H),
                    f(B, H),
                    f(B, H),
                    f(T, B, G),
                    f(T, B, G),
                    f(B, H),
                    np.zeros(B, np.int64),
                    4,
                    0,
                )
    _log("compile failures:", fails)
    return 1 if fails else 0


# --------------------------------------------------------------------------
# Benchmark


class Problem:
    """Device arrays of one (T, B, H) forward problem."""

    def __init__(self, T, B, H, dtype, seed=0):
        from numba import cuda

        rng = np.random.default_rng(seed)
        G = 3 * H
        self.T, self.B, self.H = T, B, H
        # Weak recurrence: v is driven mostly by the input, so that one
        # threshold sets the activity.
        a = rng.normal(0.0, 1.0, (T, B, G)).astype(dtype)
        self.a = cuda.to_device(a)
        self.R = cuda.to_device((rng.normal(0.0, 0.5 / math.sqrt(H), (H, G))).astype(dtype))
        self.br = cuda.to_device(np.zeros(G, dtype))
        self.h0 = cuda.to_device(np.zeros((B, H), dtype))
        self.y0 = cuda.to_device(np.zeros((B, H), dtype))
        self.keep = cuda.to_device(np.ones((1, 1, 1), dtype))
        self.lengths = cuda.to_device(np.full(B, T, np.int64))
        self.dtype = dtype

    def forward(self, thr_value, save=False):
        from numba import cuda

        from evsim.kernels import cuda as kc

        thr = cuda.to_device(np.full(self.H, thr_value, self.dtype))
        return kc.forward_device(
            self.a, self.R, self.br, thr, self.h0, self.y0, self.keep, 0, self.lengths, False, save
        )

    def calibrate(self, activity, rounds=4):
        """A threshold giving about ``activity`` events per unit and step."""
        if activity >= 1.0:
            return -1.0, 1.0  # v > -1 always: every unit fires
        thr = 0.0
        measured = None
        for _ in range(rounds):
            out = self.forward(thr, save=True)
            v = out["v"].copy_to_host().ravel()
            thr = float(np.quantile(v, 1.0 - activity))
            out = self.forward(thr)
            measured = float(out["counts"].copy_to_host()[:, 0].sum()) / (self.T * self.B * self.H)
            if abs(measured - activity) <= 0.1 * activity:
                break
        return thr, measured


def _time(fn, reps, sync):
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _torch_gru(T, B, H, inputs, dtype):
    """A timing function for cuDNN's GRU, or None when torch+CUDA is missing."""
    try:
        import torch
    except Exception:
        return None, "torch not installed"
    if not torch.cuda.is_available():
        return None, "torch has no CUDA"
    torch.backends.cudnn.enabled = True
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    gru = torch.nn.GRU(inputs, H, device="cuda", dtype=tdt).eval()
    x = torch.randn(T, B, inputs, device="cuda", dtype=tdt)

    def run():
        with torch.inference_mode():
            gru(x)

    return run, f"cuDNN {torch.backends.cudnn.version()} torch {torch.__version__}"


def crossover(acts, ratios):
    """Lowest activity where dense / event falls to 1 (linear in log activity)."""
    prev = None
    for a, r in zip(acts, ratios, strict=True):
        if r is None:
            continue
        if r <= 1.0:
            if prev is None:
                return a
            a0, r0 = prev
            w = (r0 - 1.0) / (r0 - r) if r0 != r else 0.0
            return float(math.exp(math.log(a0) + w * (math.log(a) - math.log(a0))))
        prev = (a, r)
    return None


def bench(args):
    from numba import cuda

    from evsim.kernels import cuda as kc

    kc.require()
    dev = "simulator" if kc.simulator() else cuda.get_current_device().name
    dev = dev.decode() if isinstance(dev, bytes) else str(dev)
    _log(
        f"device: {dev}; numba.cuda: {getattr(cuda, 'implementation', '?')}; "
        f"threads per block {kc.config.THREADS_PER_BLOCK}"
    )
    dtype = np.dtype(args.dtype).type
    start = time.perf_counter()
    results = dict(
        device=dev, steps=args.steps, dtype=args.dtype, inputs=args.inputs, rows=[], crossover={}
    )
    # the goal configuration first, so it is measured within any budget
    configs = [(b, h) for h in args.hidden for b in args.batch]
    configs.sort(key=lambda bh: (bh != (1, 4096), bh[0] * bh[1]))
    for B, H in configs:
        if time.perf_counter() - start > args.max_seconds:
            _log(f"time budget of {args.max_seconds} s spent: stopping before B={B} H={H}")
            break
        T = args.steps
        try:
            prob = Problem(T, B, H, dtype)
        except Exception as exc:
            _log(f"B={B} H={H}: cannot allocate ({type(exc).__name__}: {exc})")
            continue
        dense_fn, dense_name = (
            (None, "torch disabled") if args.no_torch else _torch_gru(T, B, H, args.inputs, dtype)
        )
        if dense_fn is None:
            _log(f"  dense baseline: evsim kernel at 100 % activity ({dense_name})")
            dense_name = "evsim dense (all units fire)"
            dense_fn = lambda p=prob: p.forward(-1.0)  # noqa: E731
        t_dense = _time(dense_fn, args.reps, cuda.synchronize)
        _log(f"B={B:4d} H={H:5d} T={T}: dense [{dense_name}] {t_dense * 1e3:9.3f} ms")
        acts, ratios = [], []
        for act in args.activity:
            if time.perf_counter() - start > args.max_seconds:
                _log("  time budget spent")
                break
            thr, measured = prob.calibrate(act)
            t_ev = _time(lambda thr=thr, p=prob: p.forward(thr), args.reps, cuda.synchronize)
            ratio = t_dense / t_ev
            acts.append(measured)
            ratios.append(ratio)
            results["rows"].append(
                dict(
                    batch=B,
                    hidden=H,
                    steps=T,
                    target_activity=act,
                    activity=measured,
                    event_ms=t_ev * 1e3,
                    dense_ms=t_dense * 1e3,
                    dense=dense_name,
                    speedup=ratio,
                )
            )
            _log(
                f"   activity {measured * 100:6.2f} %  event {t_ev * 1e3:9.3f} ms  "
                f"dense/event {ratio:7.2f}x"
            )
        cross = crossover(acts, ratios)
        results["crossover"][f"B{B}_H{H}"] = cross
        _log(
            f"   crossover (dense wins above): "
            f"{'none in range' if cross is None else f'{cross * 100:.1f} %'}"
        )
        prob = dense_fn = None  # free the device memory before the next size
    _log("\nsummary: dense / event (higher = event faster)")
    for row in results["rows"]:
        _log(
            f"  B={row['batch']:4d} H={row['hidden']:5d} act={row['activity'] * 100:6.2f} % "
            f"{row['speedup']:7.2f}x"
        )
    for k, v in results["crossover"].items():
        _log(f"  crossover {k}: {'none in range' if v is None else f'{v * 100:.1f} %'}")
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 256])
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--activity", type=float, nargs="+", default=list(ACTIVITIES))
    ap.add_argument("--steps", type=int, default=50, help="sequence length T")
    ap.add_argument("--inputs", type=int, default=64, help="input size of the cuDNN GRU")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--no-torch", action="store_true", help="use evsim's dense baseline")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    ap.add_argument(
        "--compile-only",
        action="store_true",
        help="only compile every kernel to PTX (no GPU needed)",
    )
    args = ap.parse_args(argv)
    if args.compile_only:
        return compile_only()
    results = bench(args)
    out = args.out or (
        os.path.join(os.environ["OUT"], "gpu_bench.json") if os.environ.get("OUT") else None
    )
    if out:
        with open(out, "w") as fh:
            json.dump(results, fh, indent=1)
        _log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
