"""evsim.torch.EGRU against torch.nn.GRU on the CPU: forward, and forward plus
backward, at B = 1 and B = 16, H = 1024, T = 100, about 10 % activity.

The EGRU's thresholds are calibrated (one value for all units, by bisection)
so that about 10 % of unit-steps emit an event. Both layers run in float32 in
the same process, torch with its default threads. Forward runs under
``torch.no_grad()`` (nothing saved); forward + backward back-propagates
``output.sum() + h_n.sum()``. Prints a table of median milliseconds and the
ratio GRU time / EGRU time (> 1: the EGRU is faster).

Usage: ``python benchmarks/torch_layer.py [--repeats N] [--hidden H] [--steps T]``
"""

import argparse
import statistics
import time

import torch

import evsim.torch as et


def median_ms(layer, x, backward, repeats):
    run(layer, x, backward)  # warm-up (compiles evsim's kernels on the first call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(layer, x, backward)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def calibrate(egru, x, target, iters=14):
    """Set all thresholds to one value giving about ``target`` activity on ``x``."""
    lo, hi = 0.0, 1.0
    with torch.no_grad():
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            egru.threshold.fill_(mid)
            egru(x)
            if egru.last_stats["activity"] > target:
                lo = mid
            else:
                hi = mid
        egru.threshold.fill_(0.5 * (lo + hi))
        egru(x)
    return egru.last_stats["activity"]


def run(layer, x, backward):
    if not backward:
        with torch.no_grad():
            layer(x)
        return
    layer.zero_grad(set_to_none=True)
    out, hn = layer(x)
    hn = hn[0] if isinstance(hn, tuple) else hn
    (out.sum() + hn.sum()).backward()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--activity", type=float, default=0.10)
    args = ap.parse_args()
    H, T, In = args.hidden, args.steps, args.inputs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"H={H}, T={T}, I={In}, float32, median of {args.repeats}")
    rows = []
    for B in (1, 16):
        torch.manual_seed(0)
        gru = torch.nn.GRU(In, H)
        egru = et.EGRU(In, H)
        egru.load_state_dict(gru.state_dict(), strict=False)
        x = torch.randn(T, B, In)
        act = calibrate(egru, x, args.activity)
        for backward in (False, True):
            t_gru = median_ms(gru, x, backward, args.repeats)
            t_egru = median_ms(egru, x, backward, args.repeats)
            s = egru.last_stats
            rows.append((B, "fwd+bwd" if backward else "fwd", act, t_gru, t_egru,
                         s.get("backward_sparsity")))
    print(f"{'B':>3} {'pass':>8} {'activity':>9} {'GRU ms':>9} {'EGRU ms':>9} "
          f"{'GRU/EGRU':>9} {'bwd sparsity':>13}")
    for B, kind, act, tg, te, bs in rows:
        bs = "" if bs is None else f"{bs:.1%}"
        print(f"{B:>3} {kind:>8} {act:>9.1%} {tg:>9.1f} {te:>9.1f} {tg / te:>9.2f} {bs:>13}")


if __name__ == "__main__":
    main()
