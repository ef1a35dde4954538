"""Plots of recordings: event rasters, state traces, activity over time.

Needs matplotlib (``pip install evsim[plot]``); it is imported only when a plot
function is called. Every function draws on ``ax`` (a new figure when None) and
returns the matplotlib Axes, so figures compose::

    fig, (a, b) = plt.subplots(2, sharex=True)
    evsim.plot.raster(event_monitor, ax=a)
    evsim.plot.activity(activity_monitor, ax=b)

Time is in steps unless ``dt`` is given (then in units of ``dt``).
"""

import numpy as np

__all__ = ["raster", "state_traces", "activity"]


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
