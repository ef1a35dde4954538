"""Network: schedules, equality with the functional kernels, seeds, stats,
monitors and clear errors."""

import numpy as np
import pytest

from evsim import egru_forward
from evsim.network import Network
from evsim.populations import EGRU, GRU, LIF, DenseInput, PoissonInput, Readout, SpikeInput


class FakeMonitor:
    def __init__(self):
        self.calls = []
        self.chunks = []

    def start_run(self, pop_name, n_units, batch, n_steps, dtype, variables):
        self.calls.append(("start", pop_name, n_units, batch, n_steps, variables))

    def record(self, t0, data):
        self.chunks.append((t0, {k: v for k, v in data.items()}))

    def end_run(self):
        self.calls.append(("end",))

    def y(self):
        return np.concatenate([d["y"] for _, d in self.chunks])


def _x(T=6, B=2, n=3, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=(T, B, n)).astype(dtype)


def _net(seed=0, dtype="float64", **kw):
    net = Network(seed=seed, dtype=dtype, **kw)
    net.add(DenseInput("x", 3))
    net.add(EGRU("e", 8))
    net.add(Readout("out", 2))
    net.connect("x", "e", scale=2.0)
    net.connect("e", "out")
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_single_egru_equals_functional(dtype):
    net = _net(dtype=dtype)
    x = _x(dtype=dtype)
    lengths = np.array([6, 4])
    res = net.run({"x": x}, lengths=lengths)
    p = net.params()
    ref = egru_forward(x, p["x->e.W"], p["e.R"], p["e.bx"], p["e.br"], p["e.thr"],
                       training=False, lengths=lengths)
    assert res.outputs["e"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(res.outputs["e"] != 0, ref.c != 0)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(res.outputs["e"], ref.y, rtol=tol, atol=tol)
    out = ref.y @ p["e->out.W"] + p["out.b"]
    out[4:, 1] = 0
    np.testing.assert_allclose(res.outputs["out"], out, rtol=tol, atol=tol)
    assert 0 < res.stats["e"]["activity"] < 1


def test_stats_pair_counts_with_time():
    net = _net()
    res = net.run({"x": _x()}, lengths=np.array([6, 3]))
    for name in ("x", "e", "out"):
        st = res.stats[name]
        for k in ("events", "activity", "fwd_macs", "fwd_macs_dense", "wall_s"):
            assert k in st, (name, k)
        assert st["wall_s"] >= 0
    e = res.stats["e"]
    assert e["events"] == np.count_nonzero(res.outputs["e"])
    assert e["fwd_macs"] < e["fwd_macs_dense"]
    # the event-driven readout projection touches only rows of fired units
    ps = res.projection_stats["e->out"]
    assert ps["fwd_macs"] == e["events"] * 2
    assert ps["fwd_macs_dense"] == 9 * 8 * 2
    s = res.summary()
    assert s["events"] >= e["events"] and s["wall_s"] > 0


def test_lengths_outputs_zero_and_finished_cost_nothing():
    net = _net()
    x = _x(T=8)
    short = net.run({"x": x}, lengths=np.array([8, 3]))
    for name in ("e", "out"):
        assert not short.outputs[name][3:, 1].any()
    full = net.run({"x": x})
    np.testing.assert_allclose(short.outputs["e"][:3], full.outputs["e"][:3])
    assert short.stats["e"]["fwd_macs_dense"] < full.stats["e"]["fwd_macs_dense"]


def _multi_net(seed=0):
    net = Network(seed=seed, dtype="float64")
    net.add(DenseInput("x", 3))
    net.add(SpikeInput("s", 4))
    net.add(PoissonInput("p", 5, rates=0.3, unit="prob"))
    net.add(EGRU("e1", 6))
    net.add(LIF("lif", 5, tau_mem=4.0, tau_syn=2.0))
    net.add(GRU("g", 3))
    net.add(EGRU("e2", 4))
    net.add(Readout("out", 2, leak=0.7))
    net.connect("x", "e1", scale=2.0)
    net.connect("s", "e1")
    net.connect("p", "lif", scale=6.0)
    net.connect("e1", "lif", scale=4.0)
    net.connect("e1", "g")
    net.connect("lif", "e2", kind="sparse", p=0.5, scale=2.0)
    net.connect("g", "e2")
    net.connect("e2", "out")
    net.connect("lif", "out")
    return net


def _multi_inputs(T=7, B=2):
    spikes = {"times": [0, 2, 2, 5], "indices": [1, 0, 3, 2], "batch": [0, 1, 0, 1],
              "values": [1.0, 0.5, 2.0, 1.0]}
    return {"x": _x(T, B), "s": spikes}


def test_dag_and_stepwise_give_the_same_events():
    lengths = np.array([7, 5])
    outs = []
    mons = []
    for schedule in ("dag", "stepwise"):
        net = _multi_net()
        mon = net.attach("e2", FakeMonitor())
        res = net.run(_multi_inputs(), lengths=lengths, schedule=schedule)
        assert res.schedule == schedule
        outs.append(res)
        mons.append(mon)
    a, b = outs
    assert set(a.outputs) == set(b.outputs)
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k] != 0, b.outputs[k] != 0, err_msg=k)
        np.testing.assert_allclose(a.outputs[k], b.outputs[k], rtol=1e-10, atol=1e-12,
                                   err_msg=k)
    assert a.stats["lif"]["events"] > 0 and a.stats["e2"]["events"] > 0
    assert a.stats["e2"]["events"] == b.stats["e2"]["events"]
    # monitors see the same data in chunks (whole sequence vs one step)
    assert len(mons[0].chunks) == 1 and len(mons[1].chunks) == 7
    np.testing.assert_allclose(mons[0].y(), mons[1].y())
    for var in ("h", "v", "c"):
        np.testing.assert_allclose(mons[0].chunks[0][1][var],
                                   np.concatenate([d[var] for _, d in mons[1].chunks]),
                                   atol=1e-12, err_msg=var)


def test_cycle_runs_stepwise_and_refuses_training():
    net = Network(seed=0, dtype="float64")
    net.add(DenseInput("x", 3))
    net.add(EGRU("a", 4))
    net.add(EGRU("b", 4))
    net.connect("x", "a", scale=2.0)
    net.connect("a", "b", scale=2.0)
    net.connect("b", "a", scale=2.0)
    assert net.cyclic
    x = _x(T=5)
    res = net.run({"x": x})
    assert res.schedule == "stepwise"
    with pytest.raises(ValueError, match="cycle"):
        net.run({"x": x}, schedule="dag")
    # the cycle's back edge b->a carries b's output of the previous step
    p = net.params()
    ya = np.zeros((2, 4))
    ha = np.zeros((2, 4))
    yb = np.zeros((2, 4))
    hb = np.zeros((2, 4))
    for t in range(5):
        da = x[t] @ p["x->a.W"] + yb @ p["b->a.W"]
        ra = egru_forward(da[None], np.eye(12), p["a.R"], p["a.bx"], p["a.br"], p["a.thr"],
                          ha, ya, training=False)
        ya, ha = ra.y[0], ra.h[0]
        rb = egru_forward((ya @ p["a->b.W"])[None], np.eye(12), p["b.R"], p["b.bx"],
                          p["b.br"], p["b.thr"], hb, yb, training=False)
        yb, hb = rb.y[0], rb.h[0]
        np.testing.assert_allclose(res.outputs["a"][t], ya, atol=1e-12)
        np.testing.assert_allclose(res.outputs["b"][t], yb, atol=1e-12)
    fp = net.forward({"x": x}, training=True)
    with pytest.raises(NotImplementedError, match="step-wise"):
        net.backward(fp, {"b": np.ones((5, 2, 4))})


def test_seed_reproduces_and_name_streams():
    a, b, c = _multi_net(0), _multi_net(0), _multi_net(1)
    for k, v in a.params().items():
        np.testing.assert_array_equal(v, b.params()[k], err_msg=k)
    assert any(not np.array_equal(v, c.params()[k]) for k, v in a.params().items())
    ra, rb, rc = (n.run(_multi_inputs()) for n in (a, b, c))
    for k in ra.outputs:
        np.testing.assert_array_equal(ra.outputs[k], rb.outputs[k])
    assert not np.array_equal(ra.outputs["p"], rc.outputs["p"])
    # streams depend on names, not on the order of creation
    n1 = Network(seed=5)
    n1.add(EGRU("u", 3))
    n1.add(EGRU("w", 3))
    n2 = Network(seed=5)
    n2.add(EGRU("w", 3))
    n2.add(EGRU("u", 3))
    np.testing.assert_array_equal(n1.params()["u.R"], n2.params()["u.R"])


def test_training_zoneout_uses_the_network_streams():
    def make():
        net = Network(seed=3, dtype="float64")
        net.add(DenseInput("x", 3))
        net.add(EGRU("e", 6, zoneout=0.3, dropconnect=0.2))
        net.connect("x", "e", scale=2.0)
        return net

    a, b = make(), make()
    x = _x()
    ya = [a.forward({"x": x}).outputs["e"] for _ in range(2)]
    yb = [b.forward({"x": x}).outputs["e"] for _ in range(2)]
    np.testing.assert_array_equal(ya[0], yb[0])
    np.testing.assert_array_equal(ya[1], yb[1])
    assert not np.array_equal(ya[0], ya[1])
    state = a.rng_state()
    y1 = a.forward({"x": x}).outputs["e"]
    a.set_rng_state(state)
    np.testing.assert_array_equal(a.forward({"x": x}).outputs["e"], y1)


def test_reset_false_continues_from_the_last_state():
    x = _x(T=8)
    full = _net().run({"x": x})
    net = _net()
    net.run({"x": x[:5]})
    rest = net.run({"x": np.ascontiguousarray(x[5:])}, reset=False)
    np.testing.assert_allclose(rest.outputs["e"], full.outputs["e"][5:], atol=1e-12)


def test_monitors_through_the_network():
    net = _net()
    mon = net.monitor("e", "events")
    smon = net.monitor("e", "state", variables=["v", "h"])
    amon = net.monitor("e", "activity")
    res = net.run({"x": _x()})
    assert mon.n_events == res.stats["e"]["events"]
    np.testing.assert_allclose(smon["h"].shape[-1], 8)
    fp = net.forward({"x": _x()})
    net.backward(fp, {"out": np.ones((6, 2, 2))})
    assert len(amon.backward_sparsity) == 1
    with pytest.raises(ValueError, match="no variable 'u'"):
        net.monitor("e", "state", variables=["u"])
    with pytest.raises(ValueError, match="unknown monitor kind"):
        net.monitor("e", "raster")
    with pytest.raises(KeyError, match="unknown population 'nope'"):
        net.monitor("nope", "events")
    with pytest.raises(TypeError, match="start_run"):
        net.attach("e", object())


def test_progress_flag():
    net = _net(progress=True)
    net.run({"x": _x()})
    net.run({"x": _x()}, progress=False)


def test_errors_say_how_to_fix():
    net = _net()
    with pytest.raises(ValueError, match="already exists"):
        net.add(EGRU("e", 3))
    with pytest.raises(TypeError, match="takes a population"):
        net.add("e")
    with pytest.raises(ValueError, match="own their recurrent"):
        net.connect("e", "e")
    with pytest.raises(KeyError, match="unknown source population"):
        net.connect("zz", "e")
    with pytest.raises(ValueError, match="takes no projection"):
        net.connect("e", "x")
    with pytest.raises(ValueError, match=r"shape \(T, B, 3\)"):
        net.run({"x": np.zeros((4, 2, 5))})
    with pytest.raises(KeyError, match="missing input 'x'"):
        net.run({})
    with pytest.raises(KeyError, match="not an input population"):
        net.run({"x": _x(), "e": _x()})
    with pytest.raises(KeyError, match="not a population"):
        net.run({"x": _x(), "q": _x()})
    with pytest.raises(ValueError, match="NaN"):
        net.run({"x": np.full((2, 1, 3), np.nan)})
    with pytest.raises(ValueError, match="lengths"):
        net.run({"x": _x()}, lengths=np.array([7, 1]))
    with pytest.raises(ValueError, match="share"):
        net.run({"x": _x()}, lengths=np.array([3, 3, 3]))
    with pytest.raises(ValueError, match="population name"):
        EGRU("a.b", 3)
    with pytest.raises(ValueError, match="size must be >= 1"):
        EGRU("a", 0)
    with pytest.raises(TypeError, match="dtype must be"):
        Network(dtype="int32")
    sp_net = Network()
    sp_net.add(SpikeInput("s", 3))
    with pytest.raises(ValueError, match="steps=T"):
        sp_net.run({"s": {"times": [0], "indices": [1]}})
    with pytest.raises(ValueError, match=r"'indices' must be integers in \[0, 3\)"):
        sp_net.run({"s": {"times": [0], "indices": [3]}}, steps=2)
