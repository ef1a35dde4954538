"""Where the time of one event-driven forward pass goes (batch 1 by default).

Times, at default settings and in one run, the parts of ``evsim.egru_forward``:

* the whole call (inference) at the target activity;
* the input product ``x W + bx`` (one BLAS GEMM for all steps);
* argument checks (everything but the kernel and the input product);
* the kernel with no events at all (thresholds out of reach): the floor set
  by the pointwise gate maths, event compaction and per-step bookkeeping;
* the kernel at the target activity; the difference to the floor is the cost
  of adding the rows of R of the units that fired, reported as bytes of R
  read per second against a streaming copy of the same bytes.

    python benchmarks/where_time_goes.py                 # B=1, H=1024, T=100, 1 % and 10 %
    python benchmarks/where_time_goes.py --batch 16 --hidden 1024 --activity 0.1
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import blas_info, median_time  # noqa: E402

import evsim  # noqa: E402
from evsim import functional, threads  # noqa: E402
from evsim.kernels import cpu_backend  # noqa: E402


def problem(B, H, In, T, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, In)).astype(np.float32)
    W = (rng.normal(size=(In, 3 * H)) * 2 / np.sqrt(In)).astype(np.float32)
    R = (rng.normal(size=(H, 3 * H)) / np.sqrt(H)).astype(np.float32)
    z = np.zeros(3 * H, np.float32)
    return x, W, R, z, z.copy()


def calibrate(prob, target, iters=16):
    H = prob[2].shape[0]
    lo, hi, best = -3.0, 3.0, (np.inf, 0.0)
    for _ in range(iters):
        m = 0.5 * (lo + hi)
        act = evsim.egru_forward(*prob, np.full(H, m, np.float32),
                                 training=False).stats["activity"]
        best = min(best, (abs(act - target), m))
        lo, hi = (m, hi) if act > target else (lo, m)
    return np.full(H, best[1], np.float32)


def kernel_only(prob, thr):
    """A function running just the backend's forward on a prepared context."""
    x, W, R, bx, br = prob
    res = evsim.egru_forward(x, W, R, bx, br, thr, training=False)

    def run():
        with threads.owned():
            cpu_backend.egru_forward(res.args)
    return run


def streaming_bandwidth(nbytes):
    """Bytes per second of a copy of ``nbytes`` (read + write counted once)."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    t = median_time(lambda: np.copyto(b, a), 9)
    return nbytes / t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--inputs", type=int, default=64)
    p.add_argument("--activity", type=float, nargs="+", default=[0.01, 0.1])
    p.add_argument("--repeats", type=int, default=21)
    args = p.parse_args(argv)
    B, H, T, In = args.batch, args.hidden, args.steps, args.inputs
    prob = problem(B, H, In, T)
    x, W, R, bx, br = prob
    print(f"evsim {evsim.__version__}; B={B} H={H} T={T} I={In}; float32; "
          f"threads available {threads.available()}")
    print("BLAS: " + blas_info())
    with threads.owned():
        t_gemm = median_time(lambda: functional.egru._input_drive(x, W, bx), args.repeats)
    silent = np.full(H, 1e3, np.float32)
    t_floor = median_time(kernel_only(prob, silent), args.repeats)
    bw = streaming_bandwidth(R.nbytes)
    print(f"streaming copy of R's size ({R.nbytes / 1e6:.1f} MB): {bw / 1e9:.1f} GB/s")
    print("| activity | whole call ms | input GEMM ms | checks & Python ms | kernel, no events ms "
          "| kernel ms | rows of R added ms | R rows read GB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for target in args.activity:
        thr = calibrate(prob, target)
        res = evsim.egru_forward(*prob, thr, training=False)
        t_call = median_time(lambda thr=thr: evsim.egru_forward(*prob, thr, training=False),
                             args.repeats)
        t_kernel = median_time(kernel_only(prob, thr), args.repeats)
        rows_bytes = res.stats["fwd_macs"] * 4  # each multiply-add reads one float of R
        t_rows = max(t_kernel - t_floor, 1e-9)
        print(f"| {res.stats['activity']:.3f} | {t_call * 1e3:.2f} | {t_gemm * 1e3:.2f} | "
              f"{(t_call - t_kernel - t_gemm) * 1e3:.2f} | {t_floor * 1e3:.2f} | "
              f"{t_kernel * 1e3:.2f} | {t_rows * 1e3:.2f} | {rows_bytes / t_rows / 1e9:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
