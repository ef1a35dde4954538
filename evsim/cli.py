"""The ``evsim`` command.

``evsim train``
    Train an EGRU (or a dense GRU) on a built-in task and report test accuracy,
    activity, backward sparsity and the multiply-adds saved against a dense GRU
    of the same size. With no arguments: an EGRU on the 8x8 digits read row by
    row (a few minutes on two CPU cores).
``evsim sweep``
    Run ``evsim train`` at every point of a parameter grid as Dask tasks (a
    local cluster or ``--scheduler``) and write one table (CSV and HDF5).
``evsim info``
    Versions, CPU threads, CUDA availability and the default backend.
"""

import argparse
import math
import os
import platform
import sys
import time

__all__ = ["TASK_DEFAULTS", "build_parser", "main", "run_train"]

# Per-task defaults, chosen by measurement (see the module docstring of
# evsim.training.trainer and the report printed by `evsim train`).
TASK_DEFAULTS = {
    "digits": dict(hidden=96, epochs=20, batch_size=32, lr=1e-2, activity_target=0.05,
                   activity_strength=10.0),
    "digits-pixels": dict(hidden=64, epochs=30, batch_size=32, lr=5e-3, activity_target=0.05,
                          activity_strength=10.0),
    "fashion": dict(hidden=128, epochs=10, batch_size=64, lr=3e-3, activity_target=0.05,
                    activity_strength=10.0),
    # strength 30: 25 % activity at H = 128 (1 gave 44 %; benchmarks/TRAINING-RESULTS.md)
    "ptb": dict(hidden=256, epochs=5, batch_size=32, lr=2e-3, activity_target=0.05,
                activity_strength=30.0),
    "copy": dict(hidden=64, epochs=20, batch_size=32, lr=1e-2, activity_target=0.05,
                 activity_strength=1.0),
    "adding": dict(hidden=64, epochs=20, batch_size=32, lr=3e-3, activity_target=0.05,
                   activity_strength=1.0),
}
TASKS = tuple(TASK_DEFAULTS)


class CLIError(Exception):
    """A user error: printed as ``evsim: error: ...`` with exit status 2."""


def build_parser():
    """The argument parser of the ``evsim`` command."""
    parser = argparse.ArgumentParser(
        prog="evsim", description="Event-based GRU (EGRU) simulation and training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("info", help="print versions, CPU threads and available backends")

    t = sub.add_parser(
        "train", help="train an EGRU or GRU on a built-in task",
        description="Train an EGRU (or dense GRU) and report test accuracy, activity, "
                    "backward sparsity and multiply-adds against a dense GRU. Options left "
                    "out take the task's defaults (shown by --show-defaults).")
    _add_train_options(t)
    t.add_argument("--checkpoint", metavar="PATH", help="write a checkpoint after every epoch")
    t.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint when it exists")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=int, help="most threads to use (default: all cores; "
                   "the result is the same for every value)")
    t.add_argument("--show-defaults", action="store_true",
                   help="print the task's defaults and exit")

    w = sub.add_parser(
        "sweep", help="run `evsim train` over a parameter grid as Dask tasks",
        description="Run `evsim train` at every point of a grid (the product of the --param "
                    "values) as Dask tasks, on a local cluster of worker processes or on an "
                    "existing one (--scheduler), and write one row per point to --out (CSV, "
                    "and HDF5 next to it) as points finish. Points already in the table are "
                    "skipped, so a sweep resumes where it stopped. The other options are "
                    "those of `evsim train`, the same for every point.")
    w.add_argument("--param", action="append", metavar="NAME=V1,V2,...", required=True,
                   help="a swept option of `evsim train` and its values, e.g. seed=0,1,2 "
                        "(repeat for a grid)")
    w.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="address of a running Dask scheduler (default: a local cluster)")
    w.add_argument("--workers", type=int,
                   help="worker processes of the local cluster (default: cores / --threads)")
    w.add_argument("--out", default="sweep.csv", metavar="PATH.csv",
                   help="the results table (default sweep.csv; HDF5 beside it, .h5)")
    w.add_argument("--threads", type=int, default=1,
                   help="evsim threads per point (default 1: one core per worker)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.add_argument("--plot", action="store_true",
                   help="also draw accuracy (or perplexity) against activity and against "
                        "estimated energy, seeds aggregated, to PATH.png next to --out "
                        "(needs matplotlib)")
    _add_train_options(w)
    return parser


def _add_train_options(t):
    """The options of one training, shared by `evsim train` and `evsim sweep`."""
    t.add_argument("--task", choices=TASKS, default="digits",
                   help="digits (8x8 digits by rows, default), digits-pixels (pixel by "
                        "pixel), fashion (Fashion-MNIST by rows), ptb (Penn Treebank, word "
                        "level), copy (delayed recall), adding (adding problem)")
    t.add_argument("--model", choices=("egru", "gru"), default="egru")
    t.add_argument("--hidden", type=int, help="recurrent units")
    t.add_argument("--embed", type=int, help="embedding width (ptb; default: hidden)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="initial Adam learning rate")
    t.add_argument("--lr-schedule", choices=("cosine", "none"), default="cosine",
                   help="learning-rate decay over the epochs (default cosine, to 5 %%)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--backend", default="cpu", help="network backend (cpu, cuda)")
    t.add_argument("--support", type=float,
                   help="surrogate support (default 1.0; the narrow recipe is 3.6)")
    t.add_argument("--damp", type=float,
                   help="surrogate damping (default 0.7; use --damp 3.6 with --support 3.6)")
    t.add_argument("--thr-mean", type=float, help="mean of the initial thresholds")
    t.add_argument("--zoneout", type=float, default=0.0)
    t.add_argument("--dropconnect", type=float, default=0.0)
    t.add_argument("--activity-target", type=float,
                   help="target mean output of the activity regulariser")
    t.add_argument("--activity-strength", type=float,
                   help="strength of the activity regulariser (0: off)")
    t.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    t.add_argument("--patience", type=int, help="early stopping after this many epochs "
                   "without a better validation loss")
    t.add_argument("--bptt", type=int, default=35, help="window length (ptb)")
    t.add_argument("--max-len", type=int, help="refuse sequences longer than this")
    t.add_argument("--limit", type=int,
                   help="use at most N training samples (ptb: tokens), for quick runs")


# --------------------------------------------------------------------------- #
# evsim info
# --------------------------------------------------------------------------- #
def _version(module):
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return getattr(mod, "__version__", "?")


def cmd_info(args, out=print):
    import numba

    import evsim

    out(f"evsim     {evsim.__version__}")
    out(f"python    {platform.python_version()} ({platform.machine()}, {platform.system()})")
    for mod in ("numpy", "numba", "scipy", "h5py", "tqdm"):
        out(f"{mod:<9} {_version(mod)}")
    out(f"CPU       {os.cpu_count()} logical cores; numba uses {numba.get_num_threads()} "
        f"threads (threading layer: {numba.config.THREADING_LAYER})")
    try:
        from evsim.kernels import cuda as kcuda
    except ImportError as err:
        out(f"cuda      unavailable (no CUDA kernels: {err})")
    else:
        try:
            kcuda.require()
            sim = " (simulator)" if kcuda.simulator() else ""
            out(f"cuda      available{sim}")
        except RuntimeError as err:
            out(f"cuda      unavailable: {err}")
    out("backends  cpu (default, event-driven Numba), dense, reference, cuda")
    return 0


# --------------------------------------------------------------------------- #
# evsim train
# --------------------------------------------------------------------------- #
def _limit(ds, n):
    return ds if n is None or n >= len(ds) else ds.subset(slice(0, n))


def load_task(task, seed=0, limit=None, max_len=None):
    """(train, valid, test, kind) for a task of the CLI; kind is the Trainer task."""
    from evsim import data

    if task in ("digits", "digits-pixels"):
        sp = data.load_digits("rows" if task == "digits" else "pixels", max_len=max_len)
        return _limit(sp.train, limit), sp.valid, sp.test, "classify_last"
    if task == "fashion":
        n_train = 10000 if limit is None else limit
        sp = data.load_fashion_mnist(n_train=n_train, n_valid=2000, n_test=10000, seed=seed,
                                     max_len=max_len)
        return sp.train, sp.valid, sp.test, "classify_last"
    if task == "copy":
        n = 4000 if limit is None else limit
        mk = lambda m, s: data.delayed_copy(m, T=20, delay=5, seed=s, max_len=max_len)  # noqa: E731
        return mk(n, seed), mk(500, seed + 1), mk(1000, seed + 2), "classify_last"
    if task == "adding":
        n = 4000 if limit is None else limit
        mk = lambda m, s: data.adding_problem(m, T=50, seed=s, max_len=max_len)  # noqa: E731
        return mk(n, seed), mk(500, seed + 1), mk(1000, seed + 2), "regress"
    if task == "ptb":
        corpus = data.load_ptb()
        train = corpus.train if limit is None else corpus.train[:limit]
        return train, corpus.valid, corpus.test, "lm"
    raise CLIError(f"unknown task {task!r}; choose one of {TASKS}")


def _settings(args):
    """Task defaults overridden by the options given."""
    s = dict(TASK_DEFAULTS[args.task])
    for key in ("hidden", "epochs", "batch_size", "lr", "activity_target",
                "activity_strength"):
        value = getattr(args, key)
        if value is not None:
            s[key] = value
    for key in ("hidden", "epochs", "batch_size"):
        if s[key] < 1:
            raise CLIError(f"--{key.replace('_', '-')} must be >= 1, got {s[key]}")
    if not s["lr"] > 0:
        raise CLIError(f"--lr must be > 0, got {s['lr']}")
    if args.model == "gru":
        s["activity_strength"] = 0.0
    return s


def _build_net(args, s, train, kind, vocab=None):
    from evsim import models

    egru = {}
    if args.model == "egru":
        egru = dict(support=args.support, damp=args.damp, thr_mean=args.thr_mean)
    elif any(v is not None for v in (args.support, args.damp, args.thr_mean)):
        raise CLIError("--support, --damp and --thr-mean apply to --model egru only")
    egru.update(zoneout=args.zoneout, dropconnect=args.dropconnect)
    common = dict(model=args.model, seed=args.seed, dtype=args.dtype, backend=args.backend)
    if kind == "lm":
        return models.language_model(vocab, args.embed or s["hidden"], s["hidden"], **common,
                                     **egru)
    if kind == "regress":
        return models.regressor(train.n_inputs, s["hidden"], train.y.shape[1], **common,
                                **egru)
    return models.sequence_classifier(train.n_inputs, s["hidden"], train.n_classes,
                                      **common, **egru)


def _fmt_count(n):
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _ratio(done, dense):
    if not done:
        return "inf" if dense else "-"
    return f"{dense / done:.2f}x"


def report_table(result, metric, model):
    """Lines of the final report of `evsim train`."""
    r = result
    lines = ["", f"test results ({model})", "-" * 58]
    if metric == "perplexity":
        lines.append(f"  test perplexity            {r['perplexity']:.2f}")
    elif metric == "mse":
        lines.append(f"  test mean squared error    {r['mse']:.5f}")
    else:
        lines.append(f"  test accuracy              {100 * r['accuracy']:.2f} %")
    lines.append(f"  test loss                  {r['loss']:.4f}")
    lines.append(f"  activity                   {100 * r['activity']:.1f} % of unit-steps")
    bs = r["backward_sparsity"]
    lines.append("  backward sparsity          "
                 + ("n/a" if math.isnan(bs) else f"{100 * bs:.1f} % of unit-steps skipped"))
    lines.append("  multiply-adds              event-driven  dense GRU   saving   done")
    for label, key in (("forward ", "fwd_macs"), ("backward", "bwd_macs")):
        event = r.get(key + "_event", r[key])
        lines.append(f"    {label}                 {_fmt_count(event):<13} "
                     f"{_fmt_count(r[key + '_dense']):<11} "
                     f"{_ratio(event, r[key + '_dense']):<8} {_fmt_count(r[key])}")
    if "energy_fwd_j" in r:  # evsim.energy: an estimate from per-operation energies
        line = (f"  energy (estimate)          forward {r['energy_fwd_j'] * 1e3:.3g} mJ, dense "
                f"GRU {r['energy_dense_fwd_j'] * 1e3:.3g} mJ")
        if r.get("energy_bwd_j"):
            line += (f"; backward {r['energy_bwd_j'] * 1e3:.3g} mJ, dense GRU "
                     f"{r['energy_dense_bwd_j'] * 1e3:.3g} mJ")
        lines.append(line)
        lines.append("   (45 nm figures of Horowitz, ISSCC 2014: 3.7 pJ multiply + 0.9 pJ add + "
                     "5 pJ SRAM weight")
        lines.append("   read per multiply-add the event-driven algorithm needs; "
                     "evsim.energy.estimate)")
    lines.append("  (recurrent and event-driven projections on the test set; event-driven: what")
    lines.append("   propagating only events and back-propagating only through backward-active")
    lines.append("   units needs; done: what the kernels did, which take the dense product where")
    lines.append("   that measured faster; the backward counts come from one training-mode pass")
    lines.append("   over the test set, without an update)")
    return lines


def _check_checkpoint_path(path):
    """Refuse a --checkpoint path that cannot be written, naming it (before any work)."""
    shown = path
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise CLIError(f"--checkpoint {shown}: is a directory; give a file name, e.g. "
                       f"{os.path.join(shown, 'run.h5')}")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise CLIError(f"--checkpoint {shown}: the folder {folder} does not exist; "
                       f"create it first")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CLIError(f"--checkpoint {shown}: the file is not writable")
    probe = os.path.join(folder, f".evsim-write-test.{os.getpid()}")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise CLIError(f"--checkpoint {shown}: cannot write in the folder {folder} "
                       f"({err.strerror or err})") from None
    return path


def _check_backend(backend):
    """One clear error for a CUDA backend on a machine that cannot run it."""
    if backend != "cuda":
        return
    try:
        from evsim.kernels import cuda as kcuda

        kcuda.require()
    except (ImportError, RuntimeError) as err:
        raise CLIError(f"--backend cuda is not available here: "
                       f"{' '.join(str(err).split())}; use --backend cpu") from None


def cmd_train(args, out=print):
    if args.show_defaults:
        for task, d in TASK_DEFAULTS.items():
            out(f"{task:<14} " + " ".join(f"{k}={v}" for k, v in d.items()))
        return 0
    run_train(args, out)
    return 0


def run_train(args, out=print):
    """Run what `evsim train` runs for parsed arguments ``args`` (checks,
    training, evaluation, the report written through ``out``).

    Returns
    -------
    dict
        :meth:`Trainer.evaluate`'s results on the test set (with the backward
        measured), plus ``metric`` (``accuracy``, ``perplexity`` or ``mse``)
        and ``total_wall_s`` (the whole run, compilation included).
    """
    from evsim.io import FileLock
    from evsim.training import Trainer

    if args.resume and not args.checkpoint:
        raise CLIError("--resume needs --checkpoint PATH")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    s = _settings(args)
    _check_backend(args.backend)
    if args.checkpoint is None:
        return _train(args, s, out, Trainer)
    _check_checkpoint_path(args.checkpoint)
    # one training per checkpoint path: a second one would overwrite it
    with FileLock(args.checkpoint, "an evsim train run"):
        return _train(args, s, out, Trainer)


def _train(args, s, out, Trainer):
    t_start = time.perf_counter()
    train, valid, test, kind = load_task(args.task, seed=args.seed, limit=args.limit,
                                         max_len=args.max_len)
    vocab = None
    if kind == "lm":
        vocab = int(max(train.max(), valid.max(), test.max())) + 1
    net = _build_net(args, s, train, kind, vocab)
    trainer = Trainer(
        net, task=kind, lr=s["lr"], batch_size=s["batch_size"],
        activity_target=s["activity_target"], activity_strength=s["activity_strength"],
        clip=args.clip or None, progress=not args.no_progress, checkpoint=args.checkpoint,
        patience=args.patience, restore_best=True, max_len=args.max_len, bptt=args.bptt,
        lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule, log=out,
        threads=args.threads)
    size = len(train) if kind != "lm" else train.size
    out(f"evsim train: task {args.task} ({size} training {'tokens' if kind == 'lm' else 'samples'}"
        f"), model {args.model}, hidden {s['hidden']}, epochs {s['epochs']}, batch "
        f"{s['batch_size']}, lr {s['lr']:g}, seed {args.seed}"
        + (f", activity target {s['activity_target']:g} strength {s['activity_strength']:g}"
           if args.model == "egru" else ""))
    trainer.fit(train, valid, epochs=s["epochs"], resume=args.resume)
    result = trainer.evaluate(test, measure_backward=True)
    for line in report_table(result, trainer.metric, args.model):
        out(line)
    wall = time.perf_counter() - t_start
    out(f"  wall time                  {wall:.1f} s (including compilation)")
    return dict(result, metric=trainer.metric, total_wall_s=wall)


# --------------------------------------------------------------------------- #
def main(argv=None):
    """Entry point of the ``evsim`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from evsim.io import FileFormatError, FileInUseError

    try:
        if args.command == "info":
            return cmd_info(args)
        if args.command == "sweep":
            from evsim.sweep import cmd_sweep

            return cmd_sweep(args)
        return cmd_train(args)
    except (CLIError, FileInUseError) as err:
        print(f"evsim: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, FileFormatError,
            ModuleNotFoundError) as err:
        print(f"evsim: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

