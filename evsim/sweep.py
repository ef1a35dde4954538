"""Parameter sweeps as Dask tasks: ``evsim sweep`` and :func:`run`.

Every point of a grid (the product of each parameter's values) runs as one
Dask task, on a local cluster of worker processes (one thread each, and
evsim capped at one thread per point, so that workers do not fight over
cores) or on an existing cluster (``client=`` / ``--scheduler``). What a point
runs is either ``evsim train`` with the point's options (:class:`TrainTask`)
or any picklable function of keyword arguments that returns a dict of
numbers.

Results go to one table, one row per point, written as points finish: a CSV
file and an HDF5 file beside it (same name, ``.h5``), each rewritten whole
through a temporary file and a rename, so a crash never leaves half a table.
A point that raises is recorded with ``status = "error"`` and its error; the
others go on. Re-running the same sweep skips the points whose row says
``ok`` (points that failed are run again), so a sweep killed half-way resumes
where it stopped. A worker process that dies mid-point loses only that
point, which Dask runs again on another worker.

Needs the ``sweep`` extra: ``pip install "evsim[sweep]"`` (``dask[distributed]``).
"""

import argparse
import csv
import inspect
import itertools
import math
import numbers
import os
import time
import traceback

__all__ = ["TrainTask", "grid_points", "parse_param", "read_table", "run"]

# evsim train options that a sweep neither sweeps nor passes through: a
# checkpoint path would be shared by every point, progress bars of points are
# off, and threads per point are the sweep's own setting.
_NOT_SWEPT = ("checkpoint", "resume", "no_progress", "threads", "show_defaults")
STATUS_OK = "ok"
STATUS_ERROR = "error"
_META = ("status", "error", "options", "wall_s", "worker")


def _train_actions():
    """dest -> argparse action of the options of one `evsim train` run."""
    from evsim import cli

    p = argparse.ArgumentParser(add_help=False)
    cli._add_train_options(p)
    return {a.dest: a for a in p._actions}


def _fmt(value):
    """A parameter value as the table writes it (the key that resume compares)."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class TrainTask:
    """A sweep point that runs ``evsim train``: the same code path as the command.

    Parameters
    ----------
    **options
        Options of ``evsim train`` fixed for every point, by their Python
        names (``epochs=2, hidden=32, task="copy"``); the swept ones come from
        the grid. ``checkpoint``, ``resume``, ``no_progress``, ``threads`` and
        ``show_defaults`` are not allowed.

    Calling the task with a point's options returns the test results of that
    training: ``test_accuracy`` (or ``test_perplexity``, ``test_mse``),
    ``test_loss``, ``activity``, ``backward_sparsity``, ``fwd_macs``,
    ``fwd_macs_dense``, ``bwd_macs``, ``bwd_macs_dense`` (and the
    event-driven counts when the kernels report them) and ``eval_wall_s``.
    The result is the same as ``evsim train`` with those options prints.
    """

    def __init__(self, **options):
        self.options = self.convert(options, "option")

    @staticmethod
    def convert(options, what):
        """``options`` with names checked and values cast as ``evsim train``
        parses them; a clear ``ValueError`` otherwise."""
        actions = _train_actions()
        out = {}
        for name, value in options.items():
            dest = name.replace("-", "_")
            if dest in _NOT_SWEPT:
                raise ValueError(f"{what} {name!r} cannot be set in a sweep")
            if dest not in actions or dest == "help":
                known = ", ".join(sorted(d for d in actions if d not in ("help",)))
                raise ValueError(f"unknown {what} {name!r} of evsim train; known: {known}")
            out[dest] = _cast(actions[dest], value, f"{what} {name}")
        return out

    def argv(self, point):
        """The ``evsim train`` command line of one point."""
        actions = _train_actions()
        argv = ["train", "--no-progress"]
        for dest, value in {**self.options, **point}.items():
            argv += [actions[dest].option_strings[0], str(value)]
        return argv

    def label(self):
        """The fixed options, as written in the table's ``options`` column."""
        actions = _train_actions()
        return "evsim train" + "".join(
            f" {actions[d].option_strings[0]} {v}" for d, v in sorted(self.options.items()))

    def __call__(self, **point):
        from evsim import cli

        args = cli.build_parser().parse_args(self.argv(point))
        r = cli.run_train(args, out=lambda *a, **k: None)
        metric = r.pop("metric")
        r.pop("total_wall_s")
        row = {f"test_{metric}": r.pop(metric), "test_loss": r.pop("loss")}
        if metric != "accuracy" and "accuracy" in r:
            row["test_accuracy"] = r.pop("accuracy")
        row["eval_wall_s"] = r.pop("wall_s")
        row.update(r)
        return row


def _cast(action, value, what):
    """One value of a train option, cast and checked as argparse would."""
    kind = action.type
    if action.nargs == 0:
        raise ValueError(f"{what}: a flag without a value cannot be swept")
    if isinstance(value, str):
        try:
            value = kind(value) if kind is not None else value
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not a valid "
                             f"{getattr(kind, '__name__', kind)}") from None
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{what}: {value!r} is not an integer")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{what}: {value!r} is not a number")
        value = float(value)
    else:
        raise ValueError(f"{what}: {value!r} is not a string")
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{what}: {value!r} is not one of {tuple(action.choices)}")
    return value


def parse_param(text):
    """``"name=v1,v2"`` -> ``("name", ["v1", "v2"])`` (values as strings)."""
    name, eq, values = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise ValueError(f"--param {text!r}: write NAME=V1,V2,... (e.g. seed=0,1,2)")
    vals = [v.strip() for v in values.split(",")]
    if not values.strip() or any(v == "" for v in vals):
        raise ValueError(f"--param {text!r}: empty value; give one or more values, "
                         f"separated by commas")
    return name, vals


def _check_grid(fn, grid):
    """The grid with names and values checked (and cast for a TrainTask)."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError("the grid must be a non-empty dict {name: [values, ...]}")
    checked = {}
    for name, values in grid.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"grid parameter {name!r}: not a valid name")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"grid parameter {name!r}: give a list of values, "
                             f"got {values!r}")
        values = list(values)
        if not values:
            raise ValueError(f"grid parameter {name!r}: no values")
        for v in values:
            if v is not None and not isinstance(v, (str, numbers.Real)):
                raise ValueError(f"grid parameter {name!r}: value {v!r} is not a number "
                                 f"or a string (a table cell)")
        checked[name] = values
    if isinstance(fn, TrainTask):
        out = {}
        for name, values in checked.items():
            dest = name.replace("-", "_")
            if dest in fn.options:
                raise ValueError(f"grid parameter {name!r} is also a fixed option")
            out[dest] = [TrainTask.convert({dest: v}, "grid parameter")[dest] for v in values]
        checked = out
    else:
        _check_signature(fn, checked)
    for name, values in checked.items():
        keys = [_fmt(v) for v in values]
        if len(set(keys)) != len(keys):
            raise ValueError(f"grid parameter {name!r}: repeated values {values}")
    return checked


def _check_signature(fn, grid):
    if not callable(fn):
        raise TypeError(f"a sweep runs a callable or a TrainTask, got {fn!r}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for name, values in grid.items():
        if name not in names:
            raise ValueError(f"unknown grid parameter {name!r}: "
                             f"{getattr(fn, '__name__', fn)} takes {', '.join(names)}")
        default = params[name].default
        if default is inspect.Parameter.empty or default is None:
            continue
        want = (numbers.Real if isinstance(default, numbers.Real) and not isinstance(default, bool)
                else type(default))
        for v in values:
            if not isinstance(v, want) or (want is numbers.Real and isinstance(v, bool)):
                raise ValueError(f"grid parameter {name!r}: value {v!r} is a "
                                 f"{type(v).__name__}, the default {default!r} a "
                                 f"{type(default).__name__}")
    missing = [n for n, p in params.items()
               if p.default is p.empty and n not in grid
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        raise ValueError(f"grid gives no value for {', '.join(missing)} "
                         f"of {getattr(fn, '__name__', fn)}")


def grid_points(grid):
    """Every point of a grid as a dict, the last parameter varying fastest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*grid.values())]


def _label(fn):
    if isinstance(fn, TrainTask):
        return fn.label()
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# --------------------------------------------------------------------------- #
# One point (runs on a worker)
# --------------------------------------------------------------------------- #
def _run_point(fn, point, threads):
    """Run one point; never raises: an error becomes the row's status."""
    from evsim import threads as evthreads

    t0 = time.perf_counter()
    row = dict(point)
    try:
        with evthreads.limit(threads):
            result = fn(**point)
        if not isinstance(result, dict):
            result = {"result": result}
        result = {("fn_" + k if k in point or k in _META else k): v for k, v in result.items()}
        row.update(result)
        row["status"], row["error"] = STATUS_OK, ""
    except Exception as err:  # noqa: BLE001 (a failed point is a row, not a stop)
        row["status"] = STATUS_ERROR
        row["error"] = f"{type(err).__name__}: {err}"
        row["traceback"] = traceback.format_exc(limit=-3)
    row["wall_s"] = time.perf_counter() - t0
    row["worker"] = f"{os.uname().nodename}:{os.getpid()}"
    return row


# --------------------------------------------------------------------------- #
# The table
# --------------------------------------------------------------------------- #
def _h5_path(path):
    root, ext = os.path.splitext(path)
    return (root if ext.lower() == ".csv" else path) + ".h5"


def _parse(text):
    """A CSV cell back to a number where it is one ('' -> None)."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_table(path):
    """The rows of a sweep table (CSV) as dicts, numbers parsed; [] when absent."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _columns(names, rows):
    cols = list(names)
    for row in rows:
        for k in row:
            if k not in cols and k not in _META and k != "traceback":
                cols.append(k)
    return cols + [c for c in _META if c != "error"] + ["error"]


def _write_table(path, names, rows):
    """Rewrite the CSV and the HDF5 table whole, each through a temporary file."""
    cols = _columns(names, rows)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({c: _fmt(row.get(c, "")) if row.get(c, "") is not None else ""
                        for c in cols})
    os.replace(tmp, path)
    _write_h5(_h5_path(path), cols, rows)


def _write_h5(path, cols, rows):
    import h5py
    import numpy as np

    tmp = f"{path}.tmp.{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        f.attrs["columns"] = cols
        for c in cols:
            values = [row.get(c) for row in rows]
            numeric = all(v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))
                          for v in values) and any(v is not None for v in values)
            if numeric:
                data = np.array([math.nan if v is None else v for v in values], dtype=float)
                if all(isinstance(v, numbers.Integral) for v in values):
                    data = data.astype(np.int64)
                f.create_dataset(c, data=data)
            else:
                f.create_dataset(c, data=["" if v is None else _fmt(v) for v in values],
                                 dtype=h5py.string_dtype())
    os.replace(tmp, path)


def _key(names, row):
    return tuple(_fmt(row.get(n, "")) for n in names)


# --------------------------------------------------------------------------- #
# The sweep
# --------------------------------------------------------------------------- #
def default_workers(threads=1):
    """Worker processes of a local cluster: the cores this process may use / threads."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        cores = os.cpu_count() or 1
    return max(1, cores // threads)


def run(fn_or_task, grid, *, client=None, workers=None, out="sweep.csv", progress=True,
        threads=1):
    """Run ``fn_or_task`` at every point of ``grid`` as Dask tasks.

    Parameters
    ----------
    fn_or_task : TrainTask or callable
        A :class:`TrainTask` (``evsim train`` with fixed options), ``"train"``
        (the same with the task defaults) or a picklable function of keyword
        arguments returning a dict of numbers (or one number, column
        ``result``).
    grid : dict of {str: list}
        Parameter name -> values (numbers or strings). Checked before
        anything runs: unknown names, empty or repeated values and values of
        the wrong type raise ``ValueError``.
    client : distributed.Client, optional
        Run on this cluster. Default: a local cluster of ``workers`` worker
        processes of one thread each, closed at the end.
    workers : int, optional
        Worker processes of the local cluster (default: cores / ``threads``,
        at most the number of points to run).
    out : str
        The CSV table (the HDF5 one is beside it, ``.h5``). Rows already there
        with status ``ok`` and the same fixed options are not run again.
    progress : bool
        A tqdm progress bar.
    threads : int
        evsim threads per point (default 1).

    Returns
    -------
    list of dict
        The table's rows (old and new), in grid order.
    """
    if fn_or_task == "train":
        fn_or_task = TrainTask()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    grid = _check_grid(fn_or_task, grid)
    names = list(grid)
    points = grid_points(grid)
    label = _label(fn_or_task)
    out = os.path.abspath(os.path.expanduser(out))
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f"out {out}: the folder does not exist")

    old = read_table(out)
    if old and any(n not in old[0] for n in names):
        raise ValueError(f"{out} holds a sweep over other parameters "
                         f"({', '.join(k for k in old[0] if k not in _META)}); "
                         f"choose another out")
    wanted = {_key(names, p) for p in points}
    done = {_key(names, r): r for r in old
            if r.get("status") == STATUS_OK and r.get("options") == label}
    # rows of other points or other options stay in the table; failed rows of
    # this grid are replaced when their point runs again
    keep = [r for r in old if _key(names, r) in done or _key(names, r) not in wanted
            or r.get("options") != label]
    todo = [p for p in points if _key(names, p) not in done]
    rows = list(keep)
    if not todo:
        return _ordered(names, rows, points)

    from distributed import as_completed
    from tqdm.auto import tqdm

    own_cluster = client is None
    cluster = None
    if own_cluster:
        from distributed import Client, LocalCluster

        n = min(workers or default_workers(threads), len(todo))
        one = str(threads)
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
            env={"NUMBA_NUM_THREADS": one, "OMP_NUM_THREADS": one,
                 "OPENBLAS_NUM_THREADS": one, "MKL_NUM_THREADS": one})
        client = Client(cluster)
    bar = tqdm(total=len(points), initial=len(points) - len(todo), disable=not progress,
               desc="evsim sweep", unit="point")
    try:
        futures = {}
        for p in todo:
            fut = client.submit(_run_point, fn_or_task, p, threads, pure=False)
            futures[fut] = p
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except Exception as err:  # noqa: BLE001 (e.g. KilledWorker: the point failed)
                row = dict(futures[fut], status=STATUS_ERROR,
                           error=f"{type(err).__name__}: {err}")
            row["options"] = label
            rows = [r for r in rows if _key(names, r) != _key(names, row)
                    or r.get("options") != label] + [row]
            _write_table(out, names, _ordered(names, rows, points))
            bar.update(1)
    finally:
        bar.close()
        if own_cluster:
            client.close()
            cluster.close()
    return _ordered(names, rows, points)


def _ordered(names, rows, points):
    """Rows of the grid in grid order, then any other rows of the table."""
    order = {_key(names, p): i for i, p in enumerate(points)}
    return sorted(rows, key=lambda r: order.get(_key(names, r), len(order)))


# --------------------------------------------------------------------------- #
# evsim sweep
# --------------------------------------------------------------------------- #
def cmd_sweep(args, out=print):
    """``evsim sweep``: parsed arguments -> exit status."""
    from evsim.cli import CLIError

    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    if args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if args.scheduler and args.workers is not None:
        raise CLIError("--workers sets the local cluster; a --scheduler's cluster has its own")
    grid = {}
    try:
        for text in args.param:
            name, values = parse_param(text)
            if name.replace("-", "_") in {k.replace("-", "_") for k in grid}:
                raise ValueError(f"--param {name} given twice")
            grid[name] = values
        actions = _train_actions()
        fixed = {d: getattr(args, d) for d in actions
                 if d not in _NOT_SWEPT and d != "help"
                 and getattr(args, d) != actions[d].default}
        for name in grid:
            if name.replace("-", "_") in fixed:
                raise ValueError(f"--{name.replace('_', '-')} is both fixed and swept")
        task = TrainTask(**fixed)
        grid = _check_grid(task, grid)
    except ValueError as err:
        raise CLIError(str(err)) from None
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise CLIError('evsim sweep needs Dask: pip install "evsim[sweep]" '
                       '(or pip install "dask[distributed]")') from None
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    try:
        rows = run(task, grid, client=client, workers=args.workers, out=args.out,
                   progress=not args.no_progress, threads=args.threads)
    finally:
        if client is not None:
            client.close()
    n_err = sum(r.get("status") != STATUS_OK for r in rows)
    out(f"evsim sweep: {len(rows)} points, {n_err} failed; table {os.path.abspath(args.out)} "
        f"and {_h5_path(os.path.abspath(args.out))}")
    for r in rows:
        if r.get("status") != STATUS_OK:
            out("  failed: " + " ".join(f"{n}={r.get(n)}" for n in grid) + f": {r.get('error')}")
    if getattr(args, "plot", False) and n_err < len(rows):
        out(f"evsim sweep: figure {plot_table(rows, args.out)}")
    return 1 if n_err else 0


def plot_table(rows, out):
    """Draw :func:`evsim.plot.tradeoff` against activity and against estimated
    energy for a sweep's rows; save it next to the table (``.png``)."""
    from evsim import plot

    plt = plot._pyplot()
    metric = next((m for m in ("test_accuracy", "test_perplexity", "test_mse")
                   if any(m in r for r in rows)), "test_accuracy")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot.tradeoff(rows, metric=metric, x="activity", ax=axes[0])
    plot.tradeoff(rows, metric=metric, x="energy", ax=axes[1])
    fig.tight_layout()
    path = os.path.splitext(os.path.abspath(out))[0] + ".png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
