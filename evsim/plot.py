"""Plots of recordings (event rasters, state traces, activity over time) and of
sweeps (accuracy against activity or estimated energy: :func:`tradeoff`).

Needs matplotlib (``pip install evsim[plot]``); it is imported only when a plot
function is called. Every function draws on ``ax`` (a new figure when None) and
returns the matplotlib Axes, so figures compose::

    fig, (a, b) = plt.subplots(2, sharex=True)
    evsim.plot.raster(event_monitor, ax=a)
    evsim.plot.activity(activity_monitor, ax=b)

Time is in steps unless ``dt`` is given (then in units of ``dt``).
"""

import numpy as np

__all__ = ["raster", "state_traces", "activity", "tradeoff"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("evsim.plot needs matplotlib, which is not installed: "
                          "pip install evsim[plot]  (or pip install matplotlib)") from err
    return plt


def _axes(ax):
    if ax is None:
        _, ax = _pyplot().subplots()
    else:
        _pyplot()
    return ax


def _events_of(source, batch):
    """(steps, units) of one sample from a monitor, a dense array or a pair of arrays."""
    from evsim.monitors import EventMonitor

    if isinstance(source, EventMonitor):
        if source.batch is not None and not 0 <= batch < source.batch:
            raise ValueError(f"batch must be a sample index in 0..{source.batch - 1}, "
                             f"got {batch}")
        ev = source.events
        sel = ev["batch"] == batch
        return ev["step"][sel], ev["unit"][sel]
    if isinstance(source, tuple) and len(source) == 2:
        steps, units = (np.asarray(a) for a in source)
        if steps.shape != units.shape or steps.ndim != 1:
            raise ValueError(f"raster expects (steps, units) as two 1-D arrays of one length, "
                             f"got shapes {steps.shape} and {units.shape}")
        return steps, units
    arr = np.asarray(source)
    if arr.ndim == 3:
        if not 0 <= batch < arr.shape[1]:
            raise ValueError(f"batch must be a sample index in 0..{arr.shape[1] - 1}, "
                             f"got {batch}")
        arr = arr[:, batch]
    if arr.ndim != 2:
        raise TypeError("raster expects an EventMonitor, a (T, B, N) or (T, N) array of "
                        f"outputs, or a (steps, units) pair; got {type(source).__name__} "
                        f"with shape {getattr(arr, 'shape', None)}")
    t, u = np.nonzero(arr)
    return t, u


def raster(events, ax=None, batch=0, dt=None, units=None, color="k", s=2.0, **scatter_kw):
    """Raster plot: one dot per event, time on x, unit on y.

    Parameters
    ----------
    events : EventMonitor, array (T, B, N) or (T, N) of outputs (events are the
        non-zero entries), or a pair ``(steps, units)`` of 1-D arrays.
    ax : matplotlib Axes, optional.
    batch : the sample to draw.
    dt : step duration; x is in steps when None.
    units : optional subset of units to draw.
    color, s, scatter_kw : passed to ``ax.scatter``.
    """
    ax = _axes(ax)
    steps, unit_ids = _events_of(events, batch)
    if units is not None:
        keep = np.isin(unit_ids, np.asarray(units))
        steps, unit_ids = steps[keep], unit_ids[keep]
    x = steps if dt is None else steps * float(dt)
    scatter_kw.setdefault("marker", ".")
    scatter_kw.setdefault("linewidths", 0)
    ax.scatter(x, unit_ids, s=s, c=color, **scatter_kw)
    ax.set_xlabel("step" if dt is None else "time")
    ax.set_ylabel("unit")
    return ax


def state_traces(state_monitor, var, units=None, ax=None, batch=0, dt=None, **plot_kw):
    """One line per unit: the recorded values of ``var`` over time.

    ``units`` are population indices among those the monitor recorded
    (default: all it recorded, at most 10).
    """
    ax = _axes(ax)
    if var not in state_monitor.variables:
        raise ValueError(f"the StateMonitor recorded {list(state_monitor.variables)}, "
                         f"not {var!r}")
    data = state_monitor.data[var]
    if not 0 <= batch < data.shape[1]:
        raise ValueError(f"batch must be a sample index in 0..{data.shape[1] - 1}, got {batch}")
    recorded = np.asarray(state_monitor.units)
    if units is None:
        units = recorded[:10]
    cols = []
    for u in np.atleast_1d(units):
        hit = np.nonzero(recorded == u)[0]
        if hit.size == 0:
            raise ValueError(f"unit {int(u)} was not recorded; the monitor recorded units "
                             f"{recorded.tolist()[:20]}{'...' if recorded.size > 20 else ''}")
        cols.append(int(hit[0]))
    times = state_monitor.times
    x = times if dt is None else times * float(dt)
    for u, c in zip(np.atleast_1d(units), cols, strict=True):
        ax.plot(x, data[:, batch, c], label=f"unit {int(u)}", **plot_kw)
    ax.set_xlabel("step" if dt is None else "time")
    ax.set_ylabel(var)
    if len(cols) <= 10:
        ax.legend(fontsize="small")
    return ax


def activity(monitors, ax=None, dt=None, per_sample=False, labels=None, **plot_kw):
    """Fraction of units active per step, one line per ActivityMonitor.

    ``monitors``: an ActivityMonitor or a list (one per population).
    ``per_sample``: draw one line per sample instead of the batch mean.
    """
    ax = _axes(ax)
    if not isinstance(monitors, (list, tuple)):
        monitors = [monitors]
    if labels is None:
        labels = [m.pop_name or f"population {i}" for i, m in enumerate(monitors)]
    for mon, label in zip(monitors, labels, strict=True):
        y = mon.activity_per_sample if per_sample else mon.activity
        x = np.arange(y.shape[0])
        if dt is not None:
            x = x * float(dt)
        lines = ax.plot(x, y, **plot_kw)
        lines[0].set_label(label)
    ax.set_xlabel("step" if dt is None else "time")
    ax.set_ylabel("fraction of units active")
    ax.legend(fontsize="small")
    return ax


#: columns of a sweep table that are results, not swept parameters
_RESULT_NAMES = {"loss", "accuracy", "perplexity", "mse", "activity", "events", "epoch",
                 "epochs", "epochs_run", "status", "error", "path", "checkpoint", "penalty",
                 "backward_sparsity", "lr", "run", "run_id", "name",
                 # a sweep table's bookkeeping (evsim.sweep): which worker, which options
                 "worker", "options", "metric", "backward_active"}
_RESULT_PARTS = ("macs", "energy", "synops", "wall_s", "sparsity", "accuracy", "perplexity",
                 "loss")


def _is_result(name):
    return (name in _RESULT_NAMES or name.startswith(("train_", "valid_", "test_"))
            or any(p in name for p in _RESULT_PARTS))


def _rows(table):
    """A list of row dicts from a dict of columns or a list of row dicts."""
    if isinstance(table, dict):
        cols = {k: list(np.asarray(v).tolist()) if np.ndim(v) else [v] for k, v in table.items()}
        n = {len(v) for v in cols.values()}
        if len(n) > 1:
            raise ValueError(f"table columns differ in length: "
                             f"{ {k: len(v) for k, v in cols.items()} }")
        return [{k: v[i] for k, v in cols.items()} for i in range(n.pop() if n else 0)]
    rows = list(table)
    if not all(isinstance(r, dict) for r in rows):
        raise TypeError("table must be a dict of columns or a list of row dicts")
    return rows


def _energy_of(row):
    from evsim import energy

    value = row.get("energy_j")
    if value is not None and np.isfinite(float(value)):
        return float(value)
    return energy.estimate(row)["energy_j"]["total"]


def _value(row, col):
    if col == "energy":
        return _energy_of(row)
    if col not in row:
        raise KeyError(f"the table has no column {col!r}; columns: {sorted(row)}")
    return float(row[col])


def _mean_err(values):
    v = np.asarray(values, float)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _is_dense(row, dense_rows):
    model = row.get("model")
    return dense_rows and isinstance(model, str) and model.lower() == "gru"


def tradeoff(table, metric="test_accuracy", x="activity", ax=None, group=None, seed="seed",
             dense=None, dense_rows=True, annotate=True, **errorbar_kw):
    """Metric against activity or estimated energy, one point per setting.

    Runs that differ only in ``seed`` are aggregated: each point is the mean
    over seeds, with error bars of one standard deviation (in x and y).

    Parameters
    ----------
    table : dict of columns or list of row dicts
        A sweep table (``evsim.sweep``'s, or any with one row per run): swept
        parameters (e.g. ``activity_strength``, ``seed``), the ``metric``
        column and ``activity`` or the counters. Rows with a ``status`` other
        than ``"ok"`` (a sweep's failed points) are left out.
    metric : str
        Column on the y axis (``test_accuracy``, ``test_perplexity``, ...).
    x : str
        ``"activity"``, ``"energy"`` (the ``energy_j`` column, or else the
        estimate of :func:`evsim.energy.estimate` from the row's counters:
        forward and, where measured, backward), or any other column.
    ax : matplotlib Axes, optional
    group : list of str, optional
        Columns that make a setting (one point each). Default: every column
        that is not a result (metrics, counters, energies, activity, ...) nor
        ``seed``.
    seed : str
        The column aggregated over.
    dense : float, dict, list of dicts or None
        The dense GRU reference: its metric (a horizontal line), or its row(s)
        (a marker at their mean x and a horizontal line at their mean metric).
    dense_rows : bool
        Take rows with ``model == "gru"`` of ``table`` as the dense reference.
    annotate : bool
        Write each point's setting next to it.
    **errorbar_kw
        Passed to ``Axes.errorbar``.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    # a sweep's failed points (status "error") have no results to draw
    rows = [r for r in _rows(table) if r.get("status", "ok") in ("ok", None, "")]
    if not rows:
        raise ValueError("the table has no rows (with status 'ok')")
    dense_list = [r for r in rows if _is_dense(r, dense_rows)]
    rows = [r for r in rows if not _is_dense(r, dense_rows)]
    if group is None:
        names = list(dict.fromkeys(k for r in rows for k in r))
        group = [k for k in names if k not in (seed, metric, x) and not _is_result(k)
                 and len({repr(r.get(k)) for r in rows}) > 1]
    elif isinstance(group, str):
        group = [group]
    settings = {}
    for r in rows:
        settings.setdefault(tuple(r.get(k) for k in group), []).append(r)
    kw = dict(fmt="o", capsize=3)
    kw.update(errorbar_kw)
    xs = []
    for key, runs in settings.items():
        xm, xe = _mean_err([_value(r, x) for r in runs])
        ym, ye = _mean_err([_value(r, metric) for r in runs])
        xs.append(xm)
        label = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                          for k, v in zip(group, key, strict=True))
        ax.errorbar([xm], [ym], xerr=[xe], yerr=[ye], label=label or None, **kw)
        if annotate and label:
            ax.annotate(label, (xm, ym), textcoords="offset points", xytext=(4, 4),
                        fontsize="x-small")
    if isinstance(dense, dict):
        dense = [dense]
    if isinstance(dense, (list, tuple)):
        dense_list = dense_list + list(dense)
        dense = None
    if dense_list:
        xm, xe = _mean_err([_value(r, x) for r in dense_list])
        ym, ye = _mean_err([_value(r, metric) for r in dense_list])
        ax.errorbar([xm], [ym], xerr=[xe], yerr=[ye], fmt="s", color="k", capsize=3,
                    label=f"dense GRU ({len(dense_list)} run{'s' * (len(dense_list) > 1)})")
        xs.append(xm)
        dense = ym
    if dense is not None:
        ax.axhline(float(dense), color="k", ls="--", lw=1,
                   label=None if dense_list else "dense GRU")
    if x == "energy":
        ax.set_xlabel("estimated energy (J, Horowitz 2014, 45 nm)")
        if xs and min(xs) > 0 and max(xs) > 10 * min(xs):  # log only over a decade or more
            ax.set_xscale("log")
    elif x == "activity":
        ax.set_xlabel("activity (fraction of unit-steps with an event)")
    else:
        ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if 0 < len(settings) + bool(dense_list) <= 10 and (group or dense_list):
        ax.legend(fontsize="small")
    return ax
