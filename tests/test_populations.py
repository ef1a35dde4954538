"""Each population's step against a hand-computed result."""

import numpy as np
import pytest

from evsim import config
from evsim.network import Network
from evsim.populations import (
    EGRU,
    GRU,
    LIF,
    DenseInput,
    Embedding,
    PoissonInput,
    Readout,
    SpikeInput,
)


def sig(x):
    return 1 / (1 + np.exp(-x))


def _one_to_one(pop, n_in, weight, dtype="float64"):
    net = Network(seed=0, dtype=dtype)
    net.add(DenseInput("x", n_in))
    net.add(pop)
    net.connect("x", pop.name, weight=weight)
    return net


def test_egru_two_steps_by_hand():
    H = 2
    pop = EGRU("e", H)
    net = _one_to_one(pop, 1, np.array([[0.5, -0.2, 0.1, 0.3, 1.0, 2.0]]))
    pop.params["R"][...] = np.arange(12).reshape(2, 6) / 10 - 0.5
    pop.params["bx"][...] = 0.1
    pop.params["br"][...] = -0.1
    pop.params["thr"][...] = [0.3, 0.2]
    x = np.array([[[1.5]], [[-0.5]]])
    res = net.run({"x": x})
    W = net.params()["x->e.W"]
    R, thr = pop.params["R"], pop.params["thr"]
    h = np.zeros(2)
    y = np.zeros(2)
    for t in range(2):
        a = x[t, 0] @ W + 0.1
        q = y @ R - 0.1
        z = sig(a[:2] + q[:2])
        r = sig(a[2:4] + q[2:4])
        g = np.tanh(a[4:] + r * q[4:])
        v = z * h + (1 - z) * g
        c = (v > thr).astype(float)
        y = c * v
        h = v - c * thr
        np.testing.assert_allclose(res.outputs["e"][t, 0], y, rtol=1e-6, atol=1e-6)
    # golden values (computed by hand): unit 1 fires at step 0, unit 0 sits
    # just under its threshold; nothing fires at step 1
    np.testing.assert_allclose(res.outputs["e"][:, 0], [[0.0, 0.57181409], [0.0, 0.0]],
                               atol=1e-6)


def test_gru_equals_torch_formula():
    rng = np.random.default_rng(0)
    H, In, T = 3, 2, 4
    Wt = rng.normal(size=(In, 3 * H))
    pop = GRU("g", H)
    net = _one_to_one(pop, In, Wt)
    x = rng.normal(size=(T, 1, In))
    res = net.run({"x": x})
    p = pop.params
    h = np.zeros(H)
    for t in range(T):
        a = x[t, 0] @ Wt + p["bx"]
        q = h @ p["R"] + p["br"]
        z = sig(a[:H] + q[:H])
        r = sig(a[H:2 * H] + q[H:2 * H])
        n = np.tanh(a[2 * H:] + r * q[2 * H:])
        h = (1 - z) * n + z * h
        np.testing.assert_allclose(res.outputs["g"][t, 0], h, rtol=1e-10, atol=1e-12)
    assert res.stats["g"]["events"] == T * H  # every unit emits every step


def test_gru_is_its_own_population_kind():
    """GRU and EGRU share a base (parameters R, br, bx; a recurrent cell that
    owns its recurrence), not an is-a: a GRU has no thresholds, no events, no
    surrogate and no trace."""
    from evsim.network import Network
    from evsim.populations import GatedRecurrent

    assert not issubclass(GRU, EGRU) and not issubclass(EGRU, GRU)
    assert issubclass(GRU, GatedRecurrent) and issubclass(EGRU, GatedRecurrent)
    g = GRU("g", 3, zoneout=0.1)
    assert g.config() == {"name": "g", "size": 3, "zoneout": 0.1, "dropconnect": 0.0}
    assert not g.emits_events and g.threshold_names == () and g.variables == ("y", "h")
    assert not hasattr(g, "thr_mean") and not hasattr(g, "trace_alpha")
    net = Network(seed=0)
    net.add(g)
    assert sorted(g.params) == ["R", "br", "bx"]
    with pytest.raises(ValueError, match="own their recurrent weights"):
        net.connect("g", "g")


@pytest.mark.parametrize("refractory", [0.0, 2.0])
def test_lif_golden_steps(refractory):
    """Steps computed by hand: exact integration of an exponential current
    (tau_syn != tau_mem), rest potential, reset and refractory hold."""
    pop = LIF("l", 1, tau_mem=2.0, tau_syn=1.0, v_th=0.5, v_reset=-0.1, v_rest=0.1,
              refractory=refractory)
    net = _one_to_one(pop, 1, np.array([[1.0]]))
    T = 12
    x = np.ones((T, 1, 1))
    mon = net.monitor("l", "state", variables=["v", "syn"])
    res = net.run({"x": x})
    am, as_ = np.exp(-1 / 2.0), np.exp(-1.0)
    c = 1.0 / (1.0 - 2.0) * (as_ - am)  # tau_s / (tau_s - tau_m) (a_s - a_m)
    i, v, hold = 0.0, 0.1, 0
    spikes, vs, cur = [], [], []
    for _t in range(T):
        i = i + 1.0  # arrival
        held = hold > 0
        if held:
            hold -= 1
            u = v
        else:
            u = 0.1 + (v - 0.1) * am + c * i
        s = float(u > 0.5 and not held)
        v = -0.1 if s else u
        hold = int(refractory) - 1 if s else hold
        i = as_ * i  # decay
        spikes.append(s)
        vs.append(v)
        cur.append(i)
    np.testing.assert_array_equal(res.outputs["l"][:, 0, 0], spikes)
    assert 1 < sum(spikes) < T
    np.testing.assert_allclose(mon["v"][:, 0, 0], vs, atol=1e-12)
    np.testing.assert_allclose(mon["syn"][:, 0, 0], cur, atol=1e-12)


def test_lif_errors():
    with pytest.raises(ValueError, match="below v_th"):
        LIF("l", 2, v_th=0.5, v_reset=0.5)
    with pytest.raises(ValueError, match="tau_mem"):
        LIF("l", 2, tau_mem=0)


@pytest.mark.parametrize("leak", [None, 0.6])
def test_readout_by_hand(leak):
    pop = Readout("r", 2, leak=leak)
    net = _one_to_one(pop, 2, np.array([[1.0, 2.0], [0.0, -1.0]]))
    pop.params["b"][...] = [0.5, -0.5]
    x = np.array([[[1.0, 1.0]], [[2.0, 0.0]], [[0.0, 0.0]]])
    res = net.run({"x": x}, lengths=np.array([2]))
    u = x[:, 0] @ np.array([[1.0, 2.0], [0.0, -1.0]]) + [0.5, -0.5]
    if leak is None:
        want = u.copy()
    else:
        want = np.zeros_like(u)
        acc = 0
        for t in range(3):
            acc = leak * acc + (1 - leak) * u[t]
            want[t] = acc
    want[2] = 0  # past the length
    np.testing.assert_allclose(res.outputs["r"][:, 0], want, atol=1e-12)


def test_spike_input_from_event_lists():
    net = Network(dtype="float64")
    net.add(SpikeInput("s", 3))
    ev = {"times": [0, 2, 2, 2], "indices": [1, 0, 2, 2], "batch": [0, 1, 1, 1],
          "values": [1.0, 0.5, 2.0, 1.0]}
    res = net.run({"s": ev}, steps=4, lengths=np.array([4, 4]))
    want = np.zeros((4, 2, 3))
    want[0, 0, 1] = 1.0
    want[2, 1, 0] = 0.5
    want[2, 1, 2] = 3.0  # duplicates add up
    np.testing.assert_array_equal(res.outputs["s"], want)
    assert res.stats["s"]["events"] == 3


def test_poisson_input_rates():
    net = Network(seed=1, dtype="float64", dt=0.5)
    net.add(PoissonInput("p", 4, rates=[0.0, 400.0, 1000.0, 2000.0]))
    y = net.run({}, steps=2000).outputs["p"]
    np.testing.assert_allclose(y.mean(axis=(0, 1)), [0.0, 0.2, 0.5, 1.0], atol=0.04)
    net2 = Network(seed=1)
    net2.add(PoissonInput("p", 2, unit="prob"))
    y2 = net2.run({"p": np.array([0.0, 1.0])}, steps=5).outputs["p"]
    assert not y2[..., 0].any() and y2[..., 1].all()
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        net2.run({"p": np.array([0.0, 2.0])}, steps=5)
    with pytest.raises(ValueError, match="'hz' or 'prob'"):
        PoissonInput("q", 2, unit="kHz")


def test_embedding_lookup():
    net = Network(seed=0, dtype="float64")
    emb = net.add(Embedding("tok", 5, 3))
    ids = np.array([[0, 4], [2, 2]])
    res = net.run({"tok": ids})
    np.testing.assert_array_equal(res.outputs["tok"], emb.params["E"][ids])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
        net.run({"tok": np.array([[5]])})
    with pytest.raises(ValueError, match="integer token ids"):
        net.run({"tok": np.zeros((2, 2))})


def test_egru_init_and_config():
    net = Network(seed=0)
    e = net.add(EGRU("e", 2000, thr_mean=0.3))
    thr = e.params["thr"]
    assert abs(thr.mean() - 0.3) < 0.01
    lo, hi = config.THRESHOLD_RANGE
    assert thr.min() >= lo and thr.max() <= hi
    k = 1 / np.sqrt(2000)
    assert np.abs(e.params["R"]).max() <= k
    assert e.params["R"].dtype == np.float32
    assert net.threshold_params() == ["e.thr"]
    again = EGRU(**e.config())
    assert again.config() == e.config()
    with pytest.raises(ValueError, match="zoneout"):
        EGRU("e", 3, zoneout=1.0)
