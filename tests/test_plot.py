"""Plots: each function returns Axes holding one mark per recorded point."""

import sys

import matplotlib as mpl  # in the `test` extra: a missing matplotlib fails, never skips
import numpy as np
import pytest

mpl.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from evsim import plot  # noqa: E402
from evsim.monitors import ActivityMonitor, EventMonitor, StateMonitor  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def recorded(T=30, B=2, N=8, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((T, B, N)) < 0.2) * rng.uniform(0.5, 1.0, (T, B, N))
    v = rng.normal(size=(T, B, N))
    ev, st, act = EventMonitor(), StateMonitor(variables=["v"], units=[1, 3, 5], every=2), \
        ActivityMonitor()
    for m in (ev, st, act):
        m.start_run("pop", N, B, T, "float64", ("y", "v"))
        m.record(0, {"y": y, "v": v})
        m.end_run()
    return y, v, ev, st, act


def n_points(ax):
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_raster_from_monitor_array_and_pair():
    y, _, ev, _, _ = recorded()
    for b in (0, 1):
        ax = plot.raster(ev, batch=b)
        assert isinstance(ax, plt.Axes)
        assert n_points(ax) == np.count_nonzero(y[:, b])
        x = ax.collections[0].get_offsets()[:, 0]
        assert set(x.astype(int)) <= set(np.nonzero(y[:, b])[0])
    assert n_points(plot.raster(y, batch=1)) == np.count_nonzero(y[:, 1])
    assert n_points(plot.raster(y[:, 0])) == np.count_nonzero(y[:, 0])
    t, u = np.nonzero(y[:, 0])
    assert n_points(plot.raster((t, u))) == t.size
    ax = plot.raster(ev, units=[0, 1], dt=0.5)
    assert n_points(ax) == np.count_nonzero(y[:, 0, :2])
    assert ax.get_xlabel() == "time"


def test_raster_on_given_axes_and_bad_input():
    y, _, ev, _, _ = recorded()
    fig, (a, b) = plt.subplots(2)
    assert plot.raster(ev, ax=b) is b
    with pytest.raises(ValueError, match="batch"):
        plot.raster(ev, batch=5)
    with pytest.raises(TypeError, match="raster expects"):
        plot.raster(np.zeros(5))


def test_state_traces():
    _, v, _, st, _ = recorded()
    ax = plot.state_traces(st, "v")
    assert isinstance(ax, plt.Axes)
    assert len(ax.lines) == 3
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), v[::2, 0, 3])
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), np.arange(0, 30, 2))
    ax = plot.state_traces(st, "v", units=[5], batch=1)
    assert len(ax.lines) == 1
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), v[::2, 1, 5])
    with pytest.raises(ValueError, match="not recorded"):
        plot.state_traces(st, "v", units=[2])
    with pytest.raises(ValueError, match="recorded"):
        plot.state_traces(st, "h")


def test_activity():
    y, _, _, _, act = recorded()
    ax = plot.activity(act)
    assert isinstance(ax, plt.Axes) and len(ax.lines) == 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.count_nonzero(y, axis=2).mean(1) / 8)
    ax = plot.activity([act, act], labels=["a", "b"])
    assert len(ax.lines) == 2
    ax = plot.activity(act, per_sample=True)
    assert len(ax.lines) == 2 and len(ax.lines[0].get_xdata()) == 30


def test_missing_matplotlib(monkeypatch):
    _, _, ev, _, _ = recorded()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install evsim\[plot\]"):
        plot.raster(ev)


def sweep_table():
    """Rows as evsim.sweep writes them: 2 settings x 2 seeds, and 2 dense GRU runs."""
    rows = []
    for strength, acc, act in ((0.0, (0.90, 0.92), (0.30, 0.34)),
                               (1.0, (0.80, 0.84), (0.10, 0.12))):
        for seed, a, s in zip((0, 1), acc, act, strict=True):
            rows.append(dict(model="egru", activity_strength=strength, seed=seed,
                             test_accuracy=a, activity=s, fwd_macs=100, fwd_macs_event=100 * s,
                             fwd_macs_dense=1000, backward_sparsity=0.5))
    for seed in (0, 1):
        rows.append(dict(model="gru", activity_strength=0.0, seed=seed, test_accuracy=0.95,
                         activity=1.0, fwd_macs=1000, fwd_macs_event=1000,
                         fwd_macs_dense=1000, backward_sparsity=0.0))
    return rows


def points(ax):
    """(x, y) of the error-bar markers, in drawing order."""
    return [tuple(line.get_xydata()[0]) for line in ax.lines if line.get_marker() in "os"]


def test_tradeoff_aggregates_seeds_against_activity():
    ax = plot.tradeoff(sweep_table())
    pts = points(ax)
    assert len(pts) == 3  # two settings and the dense reference
    assert pts[0] == pytest.approx((0.32, 0.91))
    assert pts[1] == pytest.approx((0.11, 0.82))
    assert pts[2] == pytest.approx((1.0, 0.95))
    assert ax.get_ylabel() == "test_accuracy" and "activity" in ax.get_xlabel()
    # the dense reference is also a horizontal line
    assert any(np.allclose(line.get_ydata(), 0.95) and line.get_linestyle() == "--"
               for line in ax.lines)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "activity_strength=0" in labels[0] and "dense GRU" in labels[-1]


def test_tradeoff_energy_from_column_or_counters_and_columns_dict():
    from evsim import energy

    rows = sweep_table()
    ax = plot.tradeoff(rows, x="energy")
    e = [energy.estimate(r)["energy_j"]["total"] for r in rows[:2]]
    assert points(ax)[0][0] == pytest.approx(np.mean(e))
    assert ax.get_xscale() == "log"
    for r in rows:
        r["energy_j"] = 2.0 * r["activity"]
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    ax = plot.tradeoff(cols, x="energy", ax=plt.figure().gca())
    assert points(ax)[0][0] == pytest.approx(0.64)


def test_tradeoff_dense_value_group_and_errors():
    rows = [r for r in sweep_table() if r["model"] == "egru"]
    ax = plot.tradeoff(rows, dense=0.97, group=[])  # one point over everything
    assert len(points(ax)) == 1
    assert any(np.allclose(line.get_ydata(), 0.97) for line in ax.lines)
    ax = plot.tradeoff(rows, dense=sweep_table()[-1], ax=plt.figure().gca())
    assert points(ax)[-1] == pytest.approx((1.0, 0.95))
    with pytest.raises(KeyError, match="test_perplexity"):
        plot.tradeoff(rows, metric="test_perplexity")
    with pytest.raises(ValueError, match="no rows"):
        plot.tradeoff([])
    failed = dict(rows[0], status="error", test_accuracy=float("nan"))
    ax = plot.tradeoff([dict(r, status="ok") for r in rows] + [failed], ax=plt.figure().gca())
    assert points(ax)[0] == pytest.approx((0.32, 0.91))
    with pytest.raises(ValueError, match="length"):
        plot.tradeoff({"activity": [0.1, 0.2], "test_accuracy": [0.5]})


def test_sweep_plot_table_aggregates_seeds(tmp_path):
    """`evsim sweep --plot`: a sweep table's bookkeeping columns (worker, options)
    do not split the points; seeds are aggregated; the figure is written."""
    from evsim import sweep

    rows = [dict(activity_strength=s, seed=k, test_accuracy=0.8 - 0.01 * s + 0.01 * k,
                 activity=0.3 - 0.01 * s, fwd_macs_event=1e6, fwd_macs_dense=3e6,
                 fwd_macs=1e6, bwd_macs_event=0, bwd_macs_dense=0, bwd_macs=0,
                 status="ok", worker=f"w{k}", options="{}", wall_s=1.0)
            for s in (0, 10) for k in (0, 1)]
    path = sweep.plot_table(rows, str(tmp_path / "sweep.csv"))
    assert path.endswith("sweep.png") and (tmp_path / "sweep.png").stat().st_size > 0
    ax = plot.tradeoff(rows)
    assert len(ax.get_legend().get_texts()) == 2  # one point per strength, seeds pooled
