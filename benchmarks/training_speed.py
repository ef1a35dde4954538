"""Training speed at small sizes: evsim's Trainer against torch.nn.GRU on CPU.

Three measurements (and, with ``--busy``, the first two again next to a
busy-loop neighbour process that keeps one core busy):

1. **Digits epoch** (the task of ``evsim train`` with its defaults: 8x8 digits
   read by rows, hidden 96, batch 32, Adam lr 0.01 with the cosine schedule,
   gradient-norm clip 1.0, activity target 0.05 and strength 10 for the EGRU,
   0 for the GRU). The network, settings and Trainer are built the way
   ``evsim train`` builds them (``evsim.cli``). Timed: the training pass of
   each epoch (no validation; ``history[i]["wall_s"]``), median over epochs
   2..N (epoch 1 is a warm-up that includes Numba compilation or cache
   loading). Models: evsim EGRU, evsim GRU, and ``torch.nn.GRU`` + an
   ``nn.Linear`` readout on the last step, in its own process at torch's
   default threads, on the same training samples, batch size, shuffling per
   epoch, ``torch.optim.Adam`` (same lr and schedule), clipping 1.0 and
   cross-entropy on the last step (the loss and accuracy read back per batch,
   as the Trainer does). Per step = epoch time / batches.
2. **One larger step**: B = 16, H = 1024, T = 100, I = 64, float32; one
   forward (training mode) + backward (BPTT, dense random dL/dy) + Adam update
   of an EGRU with random weights and a shared threshold calibrated by
   bisection so that about 10 % of the unit-steps fire, called through
   ``evsim.egru_forward`` / ``evsim.egru_backward`` and
   ``evsim.training.optim.Adam``; against ``torch.nn.GRU`` forward + backward
   + ``torch.optim.Adam`` step of the same sizes in its own process. Median
   per-step times (and their forward / backward / update parts).
3. **Where an evsim epoch goes**: one more digits epoch of each evsim model
   with timers around the calls of the recurrent Numba kernels (the module
   attributes ``evsim.kernels.cpu_seq.egru_forward`` etc. are wrapped for that
   epoch; nothing on disk changes): kernels against the rest. Then one more
   epoch under cProfile. Every function's own time is given to the innermost
   category on its call path (categories: the forward and backward Numba
   kernels, the kernel adapters (buffers, dR, counters), the event kernels,
   the functional API, Network and populations, projections, losses, the
   activity regulariser, optimiser and clipping, thread-pool bookkeeping, the
   trainer loop); a function outside every category inherits the mix of its
   callers, weighted by the time each caller spent in it. Profiling slows
   Python (every call is recorded) but not the compiled kernels, so Python
   shares are overstated (hence the unprofiled kernels-vs-rest split).

Goal (issue "Training at small sizes"): the default ``evsim train`` (EGRU)
per-epoch time <= 1.2x torch.nn.GRU's; next to a busy neighbour <= 1.5x
torch's under the same load.

Usage::

    python benchmarks/training_speed.py --quick            # smoke run, < 60 s
    python benchmarks/training_speed.py --quick --busy     # + under load
    python benchmarks/training_speed.py --busy --results-md benchmarks/TRAINING-SPEED.md

Writes ``benchmarks/results/training_speed.md`` and ``.json`` (``--out``;
git-ignored). Runs at default settings (no thread environment variables);
``--threads N`` is passed to the Trainer (and caps the large step).
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import blas_info, busy_neighbour, run_json  # noqa: E402

GOAL_IDLE = 1.2  # evsim EGRU epoch / torch epoch
GOAL_BUSY = 1.5  # the same, both next to a busy neighbour
STEP = dict(B=16, H=1024, T=100, I=64, activity=0.10)

# --------------------------------------------------------------------------- #
# torch baseline, in its own process (torch and Numba in one process fight
# over the cores). Payload: {"digits": {...}} or {"step": {...}}.
# --------------------------------------------------------------------------- #
_TORCH_SCRIPT = r"""
import json, math, statistics, sys, time
import numpy as np
import torch
import torch.nn.functional as F

p = json.loads(sys.argv[1])
if p.get("threads"):
    torch.set_num_threads(int(p["threads"]))
torch.manual_seed(p["seed"])
out = dict(torch=torch.__version__, threads=torch.get_num_threads(),
           interop_threads=torch.get_num_interop_threads())

if "digits" in p:
    d = p["digits"]
    data = np.load(d["path"])
    x = torch.from_numpy(np.ascontiguousarray(data["x"], dtype=np.float32))
    y = torch.from_numpy(data["y"].astype(np.int64))
    N, T, I = x.shape
    B, H, lr, clip, epochs = d["batch_size"], d["hidden"], d["lr"], d["clip"], d["epochs"]
    gru = torch.nn.GRU(I, H)
    lin = torch.nn.Linear(H, d["classes"])
    params = [*gru.parameters(), *lin.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(p["seed"])
    epoch_s, accs = [], []
    for e in range(epochs):
        for group in opt.param_groups:  # the Trainer's cosine schedule
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * e / epochs)))
        t0 = time.perf_counter()
        order = torch.randperm(N, generator=gen)
        loss_sum = hits = 0.0
        for s in range(0, N, B):
            idx = order[s:s + B]
            xb = x[idx].transpose(0, 1).contiguous()  # (T, B, I), as evsim's batches
            yb = y[idx]
            hs, _ = gru(xb)
            logits = lin(hs[-1])
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            loss_sum += loss.item() * len(idx)
            hits += (logits.argmax(1) == yb).sum().item()
        epoch_s.append(time.perf_counter() - t0)
        accs.append(hits / N)
    out.update(epoch_s=epoch_s, batches=-(-N // B), train_accuracy=accs[-1],
               train_loss=loss_sum / N)

if "step" in p:
    c = p["step"]
    B, H, T, I = c["B"], c["H"], c["T"], c["I"]
    gru = torch.nn.GRU(I, H)
    opt = torch.optim.Adam(gru.parameters(), lr=1e-3)
    x = torch.randn(T, B, I)
    dy = torch.randn(T, B, H)
    parts = []
    for i in range(c["warmup"] + c["repeats"]):
        t0 = time.perf_counter()
        hs, _ = gru(x)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        hs.backward(dy)
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= c["warmup"]:
            parts.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
    med = [statistics.median(v) for v in zip(*parts)]
    out.update(forward_s=med[0], backward_s=med[1], update_s=med[2], step_s=med[3],
               step_times=[q[3] for q in parts])
print(json.dumps(out))
"""


def torch_run(payload):
    return run_json(_TORCH_SCRIPT, payload)


# --------------------------------------------------------------------------- #
# evsim: the digits task as `evsim train` builds it
# --------------------------------------------------------------------------- #
def digits_task(seed):
    """(train set, Trainer task) of `evsim train` on digits."""
    from evsim import cli

    train, _, _, kind = cli.load_task("digits", seed=seed)
    return train, kind


def _cli_model(model, seed):
    from evsim import cli

    args = cli.build_parser().parse_args(["train", "--task", "digits", "--model", model,
                                          "--seed", str(seed)])
    return args, cli._settings(args)


def digits_settings(seed):
    """The CLI's digits settings (EGRU; the GRU differs by strength 0) and clip."""
    args, s = _cli_model("egru", seed)
    s = {k: v for k, v in s.items() if k != "epochs"}  # --epochs here
    return dict(s, clip=args.clip or None)


def evsim_trainer(model, train, kind, seed, threads):
    from evsim import cli
    from evsim.training import Trainer

    args, s = _cli_model(model, seed)
    net = cli._build_net(args, s, train, kind)
    return Trainer(net, task=kind, lr=s["lr"], batch_size=s["batch_size"],
                   activity_target=s["activity_target"],
                   activity_strength=s["activity_strength"], clip=args.clip or None,
                   progress=False, lr_schedule=None if args.lr_schedule == "none" else
                   args.lr_schedule, max_len=args.max_len, threads=threads)


def evsim_digits(model, train, kind, epochs, seed, threads, profile=False):
    """Per-epoch times of the training pass; with ``profile``, one more epoch with
    kernel timers and one more under cProfile."""
    trainer = evsim_trainer(model, train, kind, seed, threads)
    hist = trainer.fit(train, None, epochs=epochs)
    batches = -(-len(train) // trainer.batch_size)
    res = dict(model=model, epoch_s=[r["wall_s"] for r in hist], batches=batches,
               train_accuracy=hist[-1]["train_accuracy"], train_loss=hist[-1]["train_loss"],
               activity=hist[-1]["train_activity"],
               backward_sparsity=hist[-1]["train_backward_sparsity"])
    if profile:
        import cProfile
        import pstats

        with kernel_timers() as acc:
            trainer.fit(train, None, epochs=epochs + 1)
        res["split"] = dict(epoch_s=trainer.history[-1]["wall_s"],
                            **{f"{k}_s": v[0] for k, v in acc.items()},
                            **{f"{k}_calls": v[1] for k, v in acc.items()})
        prof = cProfile.Profile()
        prof.enable()
        trainer.fit(train, None, epochs=epochs + 2)
        prof.disable()
        res["profile"] = breakdown(pstats.Stats(prof).stats)
        res["profile"]["epoch_s"] = trainer.history[-1]["wall_s"]
    return res


@contextlib.contextmanager
def kernel_timers():
    """Inside the block, time every call of the recurrent Numba kernels (the
    module attributes through which the kernel adapters call them are wrapped;
    nothing is edited on disk). Yields {"forward"|"backward": [seconds, calls]}."""
    from evsim.kernels import cpu, cpu_seq

    acc = {"forward": [0.0, 0], "backward": [0.0, 0]}
    saved = []
    for mod in (cpu_seq, cpu):
        for name, key in (("egru_forward", "forward"), ("egru_backward", "backward"),
                          ("egru_backward_dense", "backward")):
            fn = getattr(mod, name, None)
            if fn is None:
                continue

            def timed(*a, _fn=fn, _key=key, **kw):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    acc[_key][0] += time.perf_counter() - t0
                    acc[_key][1] += 1

            saved.append((mod, name, fn))
            setattr(mod, name, timed)
    try:
        yield acc
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


# --------------------------------------------------------------------------- #
# breakdown of a profiled epoch
# --------------------------------------------------------------------------- #
# (category, [(path suffix or folder, function name or None = any)]); first match wins
CATEGORIES = [
    ("forward kernel (Numba)", [("evsim/kernels/cpu_seq.py", "egru_forward"),
                                ("evsim/kernels/cpu.py", "egru_forward")]),
    ("backward kernel (Numba)", [("evsim/kernels/cpu_seq.py", "egru_backward"),
                                 ("evsim/kernels/cpu.py", "egru_backward"),
                                 ("evsim/kernels/cpu.py", "egru_backward_dense")]),
    ("event kernels: dR, event projections (Numba)", [("evsim/kernels/cpu_events.py", None)]),
    ("other kernels (Numba, cpu.py / cpu_seq.py)", [("evsim/kernels/cpu.py", None),
                                                    ("evsim/kernels/cpu_seq.py", None)]),
    ("kernel adapters: buffers, dR GEMM, counters", [("evsim/kernels/", None)]),
    ("functional API: checks, input drive x W, dW, dx", [("evsim/functional.py", None),
                                                          ("evsim/_validate.py", None)]),
    ("projections", [("evsim/projections.py", None)]),
    ("Network + populations", [("evsim/network.py", None), ("evsim/populations.py", None),
                               ("evsim/monitors.py", None)]),
    ("losses", [("evsim/training/losses.py", None)]),
    ("activity regulariser", [("evsim/training/regularizers.py", None)]),
    ("optimiser + clipping", [("evsim/training/optim.py", None)]),
    ("thread pools (evsim.threads, threadpoolctl)", [("evsim/threads.py", None),
                                                     ("threadpoolctl.py", None)]),
    ("trainer loop, batches, metrics (Python per batch)", [("evsim/training/trainer.py", None),
                                                           ("evsim/data.py", None)]),
]
OTHER = "other"
TOP_FUNCTIONS = 12


def _category(func):
    path = func[0].replace("\\", "/")
    for cat, rules in CATEGORIES:
        for suffix, name in rules:
            hit = path.endswith(suffix) if suffix.endswith(".py") else f"/{suffix}" in path
            if hit and (name is None or func[2] == name):
                return cat
    return None


def breakdown(stats):
    """Seconds per category from a pstats ``stats`` dict (see the module docstring)."""
    memo = {}

    def mix(func):
        if func in memo:
            return memo[func]
        cat = _category(func)
        if cat is not None:
            memo[func] = {cat: 1.0}
            return memo[func]
        memo[func] = {OTHER: 1.0}  # cycle guard
        callers = stats[func][4] if func in stats else {}
        weights = {c: (v[2] if len(v) > 2 else 0.0) for c, v in callers.items()}
        total = sum(weights.values())
        if total <= 0:  # no time measured per caller: weigh by calls
            weights = {c: float(v[0] if isinstance(v, tuple) else v) for c, v in callers.items()}
            total = sum(weights.values())
        if total > 0:
            acc = {}
            for c, w in weights.items():
                for k, share in mix(c).items():
                    acc[k] = acc.get(k, 0.0) + share * w / total
            memo[func] = acc
        return memo[func]

    secs = dict.fromkeys([c for c, _ in CATEGORIES] + [OTHER], 0.0)
    for func, (_, _, tt, _, _) in stats.items():
        for k, share in mix(func).items():
            secs[k] += tt * share
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:TOP_FUNCTIONS]
    top = [dict(function=_func_name(f), own_s=v[2], calls=v[1], category=_label(mix(f)))
           for f, v in top]
    return dict(seconds=secs, total_s=sum(secs.values()), top=top)


def _label(mix):
    cat, share = max(mix.items(), key=lambda kv: kv[1])
    return cat if share >= 0.8 else f"mixed, {100 * share:.0f} % {cat}"


def _func_name(func):
    path, line, name = func
    path = path.replace("\\", "/")
    i = path.rfind("evsim/")
    short = path[i:] if i >= 0 else os.path.basename(path)
    return f"{name}" if path == "~" else f"{short}:{line}({name})"


# --------------------------------------------------------------------------- #
# evsim: one larger step
# --------------------------------------------------------------------------- #
def evsim_step(cfg, repeats, warmup, iters, threads, seed=0):
    import evsim
    from evsim import threads as evthreads
    from evsim.training.optim import Adam

    B, H, T, In = cfg["B"], cfg["H"], cfg["T"], cfg["I"]
    rng = np.random.default_rng(seed)
    f32 = np.float32
    x = rng.normal(size=(T, B, In)).astype(f32)
    params = dict(W=(rng.normal(size=(In, 3 * H)) * 2.0 / np.sqrt(In)).astype(f32),
                  R=(rng.normal(size=(H, 3 * H)) / np.sqrt(H)).astype(f32),
                  bx=np.zeros(3 * H, f32), br=np.zeros(3 * H, f32), thr=np.zeros(H, f32))
    dy = rng.normal(size=(T, B, H)).astype(f32)

    def forward(training):
        p = params
        return evsim.egru_forward(x, p["W"], p["R"], p["bx"], p["br"], p["thr"],
                                  training=training)

    with evthreads.limit(threads):
        lo, hi, best = -3.0, 3.0, (math.inf, 0.0, 0.0)
        for _ in range(iters):  # shared threshold: activity closest to the target
            params["thr"][:] = 0.5 * (lo + hi)
            act = forward(False).stats["activity"]
            best = min(best, (abs(act - cfg["activity"]), 0.5 * (lo + hi), act))
            lo, hi = (0.5 * (lo + hi), hi) if act > cfg["activity"] else (lo, 0.5 * (lo + hi))
        params["thr"][:] = best[1]
        opt = Adam(1e-3)
        parts, stats = [], {}
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            res = forward(True)
            t1 = time.perf_counter()
            g = evsim.egru_backward(res, dy)
            t2 = time.perf_counter()
            opt.step(params, {k: g[k] for k in params})
            t3 = time.perf_counter()
            if i >= warmup:
                parts.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
            stats = dict(res.stats, **g.stats)
    med = [statistics.median(v) for v in zip(*parts)]
    return dict(forward_s=med[0], backward_s=med[1], update_s=med[2], step_s=med[3],
                step_times=[q[3] for q in parts], threshold=float(best[1]),
                activity=float(stats["activity"]),
                backward_sparsity=float(stats.get("backward_sparsity", float("nan"))))


# --------------------------------------------------------------------------- #
# running and reporting
# --------------------------------------------------------------------------- #
def timed_epochs(res):
    """Median of epochs 2..N (all epochs when only one was run)."""
    e = res["epoch_s"]
    return statistics.median(e[1:] if len(e) > 1 else e)


def run_load(load, args, train, kind, npz, settings, bar, log):
    """Every measurement of one load (``"idle"`` or ``"busy"``)."""
    out = {"digits": {}, "step": {}, "loadavg": [os.getloadavg()[0]]}
    profile = load == "idle" and not args.no_profile
    with busy_neighbour(load == "busy"):
        for model in ("egru", "gru"):
            bar.set_description(f"{load}: evsim {model.upper()} digits")
            r = evsim_digits(model, train, kind, args.epochs, args.seed, args.threads,
                             profile=profile)
            out["digits"][f"evsim {model.upper()}"] = r
            log(f"[{load}] evsim {model.upper()} digits: {timed_epochs(r):.3f} s/epoch "
                f"(epochs {', '.join(f'{t:.3f}' for t in r['epoch_s'])})")
            bar.update(1)
        bar.set_description(f"{load}: torch GRU digits")
        t = torch_run(dict(seed=args.seed, threads=args.torch_threads, digits=dict(
            path=npz, batch_size=settings["batch_size"], hidden=settings["hidden"],
            lr=settings["lr"], clip=settings["clip"], epochs=args.epochs,
            classes=int(train.n_classes))))
        if t is not None:
            out["digits"]["torch GRU"] = t
            out["torch"] = {k: t[k] for k in ("torch", "threads", "interop_threads")}
            log(f"[{load}] torch GRU digits: {timed_epochs(t):.3f} s/epoch "
                f"(epochs {', '.join(f'{x:.3f}' for x in t['epoch_s'])})")
        bar.update(1)
        if not args.no_step:
            cfg = dict(STEP)
            bar.set_description(f"{load}: evsim EGRU step")
            out["step"]["evsim EGRU"] = evsim_step(cfg, args.repeats, 1, args.calib_iters,
                                                   args.threads, args.seed)
            log(f"[{load}] evsim EGRU step: {1e3 * out['step']['evsim EGRU']['step_s']:.1f} ms")
            bar.update(1)
            bar.set_description(f"{load}: torch GRU step")
            t = torch_run(dict(seed=args.seed, threads=args.torch_threads,
                               step=dict(cfg, repeats=args.repeats, warmup=1)))
            if t is not None:
                out["step"]["torch GRU"] = t
                log(f"[{load}] torch GRU step: {1e3 * t['step_s']:.1f} ms")
            bar.update(1)
    out["loadavg"].append(os.getloadavg()[0])
    return out


def _ratio(a, b):
    return "-" if a is None or b is None or not b else f"{a / b:.2f}x"


def report(results, args, header):
    """Markdown lines: header, the three tables, the goal verdicts."""
    loads = list(results)
    lines = ["# Training speed at small sizes: evsim against torch.nn.GRU", "",
             *[f"* {h}" for h in header], ""]

    lines += ["## Digits (`evsim train` defaults), training pass per epoch", "",
              f"Median over epochs 2..{args.epochs} (epoch 1: warm-up incl. Numba "
              "compilation / cache); per step = epoch / batches. 'vs torch': against "
              "torch.nn.GRU under the same load; 'vs idle': against the same model idle.", "",
              "| load | model | s / epoch | ms / step | vs torch | vs idle | warm-up epoch s | "
              "train acc (last epoch) | activity |",
              "|---|---|---|---|---|---|---|---|---|"]
    for load in loads:
        d = results[load]["digits"]
        tt = timed_epochs(d["torch GRU"]) if "torch GRU" in d else None
        for name, r in d.items():
            t = timed_epochs(r)
            idle = results.get("idle", {}).get("digits", {}).get(name)
            act = r.get("activity")
            lines.append(
                f"| {load} | {name} | {t:.3f} | {1e3 * t / r['batches']:.2f} | "
                f"{_ratio(t, tt) if name != 'torch GRU' else '1'} | "
                f"{_ratio(t, timed_epochs(idle)) if idle and load != 'idle' else '-'} | "
                f"{r['epoch_s'][0]:.2f} | {100 * r['train_accuracy']:.1f} % | "
                f"{'-' if act is None else f'{100 * act:.1f} %'} |")
    lines.append("")

    if any(results[load]["step"] for load in loads):
        c = STEP
        lines += [f"## One larger step: B={c['B']}, H={c['H']}, T={c['T']}, I={c['I']}, "
                  f"float32, ~{100 * c['activity']:.0f} % activity", "",
                  f"Forward (training) + backward (BPTT, dense dL/dy) + Adam update; median of "
                  f"{args.repeats} steps after 1 warm-up.", "",
                  "| load | implementation | forward ms | backward ms | update ms | step ms | "
                  "vs torch | vs idle | activity | backward sparsity |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for load in loads:
            s = results[load]["step"]
            ts = s["torch GRU"]["step_s"] if "torch GRU" in s else None
            for name, r in s.items():
                idle = results.get("idle", {}).get("step", {}).get(name)
                act = r.get("activity")
                bs = r.get("backward_sparsity")
                lines.append(
                    f"| {load} | {name} | {1e3 * r['forward_s']:.1f} | "
                    f"{1e3 * r['backward_s']:.1f} | {1e3 * r['update_s']:.1f} | "
                    f"{1e3 * r['step_s']:.1f} | "
                    f"{_ratio(r['step_s'], ts) if name != 'torch GRU' else '1'} | "
                    f"{_ratio(r['step_s'], idle['step_s']) if idle and load != 'idle' else '-'}"
                    f" | {'-' if act is None else f'{100 * act:.1f} %'} | "
                    f"{'-' if bs is None or bs != bs else f'{100 * bs:.1f} %'} |")
        lines.append("")

    idle = results.get("idle", {}).get("digits", {})
    split = {n: r["split"] for n, r in idle.items() if "split" in r}
    if split:
        lines += ["## Where an evsim digits epoch goes", "",
                  "### Kernels against the rest (one more epoch, not profiled)", "",
                  "Timers around the calls of the recurrent Numba kernels (forward: "
                  "`egru_forward`; backward: `egru_backward`, without dR); the rest is "
                  "everything else the epoch does (Network, projections, dR, losses, "
                  "optimiser, Python per batch).", "",
                  "| model | epoch ms | forward kernel ms | backward kernel ms | rest ms | "
                  "rest share | rest ms / batch | kernel calls / batch (fwd, bwd) |",
                  "|---|---|---|---|---|---|---|---|"]
        for n, sp in split.items():
            nb = idle[n]["batches"]
            rest = sp["epoch_s"] - sp["forward_s"] - sp["backward_s"]
            lines.append(f"| {n} | {1e3 * sp['epoch_s']:.1f} | {1e3 * sp['forward_s']:.1f} | "
                         f"{1e3 * sp['backward_s']:.1f} | {1e3 * rest:.1f} | "
                         f"{100 * rest / sp['epoch_s']:.0f} % | {1e3 * rest / nb:.3f} | "
                         f"{sp['forward_calls'] / nb:.1f}, {sp['backward_calls'] / nb:.1f} |")
        lines.append("")
    prof = {n: r["profile"] for n, r in idle.items() if "profile" in r}
    if prof:
        names = list(prof)
        lines += ["### Breakdown (one more epoch under cProfile)", "",
                  "Own time of every function given to the innermost category on its call "
                  "path. cProfile records every Python call, so the Python shares are "
                  "overstated; the kernels' times are not.", "",
                  "| part | " + " | ".join(f"{n} ms / epoch | share | ms / batch"
                                           for n in names) + " |",
                  "|---|" + "---|---|---|" * len(names)]
        cats = [c for c, _ in CATEGORIES] + [OTHER]
        for cat in cats:
            if all(prof[n]["seconds"][cat] < 5e-5 for n in names):
                continue
            cells = []
            for n in names:
                p, nb = prof[n], idle[n]["batches"]
                sec = p["seconds"][cat]
                cells.append(f"{1e3 * sec:.1f} | {100 * sec / p['total_s']:.1f} % | "
                             f"{1e3 * sec / nb:.3f}")
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
        cells = []
        for n in names:
            p, nb = prof[n], idle[n]["batches"]
            cells.append(f"{1e3 * p['total_s']:.1f} | 100 % | {1e3 * p['total_s'] / nb:.3f}")
        lines += [f"| **profiled total** | {' | '.join(cells)} |", ""]
        for n in names:
            nb = idle[n]["batches"]
            lines += [f"Functions with the most own time ({n}, profiled epoch):", "",
                      "| function | calls / batch | own ms / epoch | share | category |",
                      "|---|---|---|---|---|"]
            for f in prof[n]["top"]:
                lines.append(f"| `{f['function']}` | {f['calls'] / nb:.1f} | "
                             f"{1e3 * f['own_s']:.1f} | "
                             f"{100 * f['own_s'] / prof[n]['total_s']:.1f} % | "
                             f"{f['category']} |")
            lines.append("")

    lines += ["## Goal", ""]
    for load, goal in (("idle", GOAL_IDLE), ("busy", GOAL_BUSY)):
        d = results.get(load, {}).get("digits", {})
        if "evsim EGRU" in d and "torch GRU" in d:
            r = timed_epochs(d["evsim EGRU"]) / timed_epochs(d["torch GRU"])
            lines.append(f"* {load}: evsim EGRU / torch.nn.GRU per epoch = {r:.2f} "
                         f"(goal <= {goal}): {'met' if r <= goal else 'NOT met'}")
    if args.quick:
        lines.append("* --quick: few epochs and steps; indicative only.")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, help="digits epochs per model, the first a warm-up "
                   "(default 6; --quick 3)")
    p.add_argument("--repeats", type=int, help="timed large steps (default 10; --quick 3)")
    p.add_argument("--quick", action="store_true", help="smoke run (< 60 s; with --busy twice)")
    p.add_argument("--busy", action="store_true",
                   help="also measure next to a busy-loop neighbour process (one core busy)")
    p.add_argument("--threads", type=int, help="Trainer(threads=N) and the large step's cap "
                   "(default: evsim decides)")
    p.add_argument("--torch-threads", type=int,
                   help="torch.set_num_threads in the baseline (default: torch's default)")
    p.add_argument("--no-step", action="store_true", help="skip the larger step")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile breakdown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results"),
                   help="folder for training_speed.md and training_speed.json "
                        "(default benchmarks/results/, git-ignored)")
    p.add_argument("--results-md", metavar="PATH", help="also write the tables to PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.quick else 6
    if args.repeats is None:
        args.repeats = 3 if args.quick else 10
    args.calib_iters = 10 if args.quick else 16
    for name in ("epochs", "repeats", "threads", "torch_threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import numba
    from tqdm.auto import tqdm

    import evsim
    from evsim import config

    t_start = time.perf_counter()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    train, kind = digits_task(args.seed)
    settings = digits_settings(args.seed)

    def log(msg):
        tqdm.write(f"{datetime.datetime.now():%H:%M:%S} {msg}")

    header = [
        f"evsim {evsim.__version__}, numpy {np.__version__}, numba {numba.__version__}, "
        f"python {platform.python_version()} ({platform.machine()}), "
        f"{os.cpu_count()} logical CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; started {started}",
        f"BLAS: {blas_info()}",
        f"threads: numba {numba.get_num_threads()} (evsim.config.NUM_THREADS "
        f"{config.NUM_THREADS}), Trainer threads={args.threads} "
        f"({'evsim decides' if args.threads is None else 'cap'}); torch: see below",
        f"digits ({len(train)} training samples, {train.n_steps} steps of {train.n_inputs}): "
        + ", ".join(f"{k}={v}" for k, v in settings.items())
        + "; GRU: activity strength 0; lr schedule cosine; seed " + str(args.seed),
    ]
    for h in header:
        print(h, flush=True)

    loads = ["idle"] + (["busy"] if args.busy else [])
    per_load = 3 + (0 if args.no_step else 2)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, \
            tqdm(total=per_load * len(loads), unit="config", disable=args.no_progress,
                 dynamic_ncols=True) as bar:
        npz = os.path.join(tmp, "digits_train.npz")
        np.savez(npz, x=train.x, y=train.y)
        for load in loads:
            results[load] = run_load(load, args, train, kind, npz, settings, bar, log)
    torch_info = next((r["torch"] for r in results.values() if "torch" in r), None)
    header.append("torch: " + ("not measured (torch missing or failed)" if torch_info is None
                               else f"{torch_info['torch']}, {torch_info['threads']} threads "
                                    f"({torch_info['interop_threads']} inter-op), own process"))
    header.append("1-min load average before / after the measurements: " + "; ".join(
        f"{load} {r['loadavg'][0]:.2f} / {r['loadavg'][1]:.2f}" for load, r in results.items())
        + " ('idle': no neighbour started by this script; other jobs are not controlled)")
    if args.busy:
        header.append("busy: a busy-loop neighbour process (benchmarks/common.busy_neighbour) "
                      "keeps one core busy during every busy measurement, evsim's and torch's")
    header.append(f"wall time of this run {time.perf_counter() - t_start:.0f} s"
                  + (" (--quick)" if args.quick else ""))
    lines = report(results, args, header)
    text = "\n".join(lines) + "\n"
    print("\n" + text)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "training_speed.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "training_speed.json"), "w") as f:
        json.dump(dict(header=header, settings=settings, step=STEP,
                       args={k: v for k, v in vars(args).items()}, results=results),
                  f, indent=1, default=float)
    if args.results_md:
        with open(args.results_md, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
