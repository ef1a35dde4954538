"""The population protocol (evsim.protocol): a population model defined
outside evsim - a rectified-linear rate unit with a leak - runs in a network
(DAG and step-wise schedules, monitors), trains (backward, through a cycle
too) and saves and loads once registered."""

import numpy as np
import pytest

import evsim
from evsim import protocol
from evsim.populations import PopRun


class RateUnit(evsim.Population):
    """r_t = leak r_{t-1} + (1 - leak) relu(drive_t + b); output y_t = r_t.

    Written against evsim.protocol only: plain NumPy, no evsim internals.
    """

    variables = ("y", "u")

    def __init__(self, name, size, leak=0.5):
        super().__init__(name, size)
        self.leak = float(leak)
        self._kwargs.update(leak=self.leak)

    def _init_params(self, rng, dtype):
        self.params = {"b": np.ascontiguousarray(rng.normal(0, 0.1, self.size), dtype)}

    def _initial_state(self, B, dtype, rng=None):
        return {"r": np.zeros((B, self.size), dtype)}

    def _cell(self, u, r):
        return self.leak * r + (1 - self.leak) * np.maximum(u, 0)

    def _forward(self, drive, state, training, backend, lengths, rng):
        T, B, N = drive.shape
        u = drive + self.params["b"]
        alive = np.arange(T)[:, None] < lengths[None, :]
        r = state["r"].copy()
        y = np.zeros_like(u)
        for t in range(T):
            new = self._cell(u[t], r)
            keep = alive[t][:, None]
            r = np.where(keep, new, r)
            y[t] = np.where(keep, new, 0)
        n = int(np.count_nonzero(y))
        stats = dict(events=n, activity=n / (int(lengths.sum()) * N), fwd_macs=0,
                     fwd_macs_dense=0)
        return PopRun(y=y, state={"r": r}, saved=(u, lengths), stats=stats,
                      variables=lambda: {"y": y, "u": u})

    def _backward(self, run, dy, extra):
        u, lengths = run.saved
        T = dy.shape[0]
        ddrive = np.zeros_like(u)
        carry = None
        for t in range(T - 1, -1, -1):
            ddrive[t], _, carry = self._step_back(u[t], t < lengths, dy[t], carry)
        return ddrive, {"b": ddrive.reshape(-1, self.size).sum(0)}, {"bwd_macs": 0,
                                                                      "bwd_macs_dense": 0}

    def _step_back(self, u_t, alive, dy_t, carry):
        alive = alive[:, None]
        c = 0 if carry is None else carry
        dr = dy_t + c
        du = np.where(alive, (1 - self.leak) * dr * (u_t > 0), 0)
        return du, {"b": du.sum(0)}, np.where(alive, self.leak * dr, c)

    def _step(self, drive_t, state, alive, training, backend, rng):
        u = drive_t + self.params["b"]
        new = self._cell(u, state["r"])
        keep = alive[:, None]
        y = np.where(keep, new, 0)
        var = {"y": y, "u": np.where(keep, u, 0), "_u": u}
        return y, {"r": np.where(keep, new, state["r"])}, var, {
            "events": int(np.count_nonzero(y)), "fwd_macs": 0, "fwd_macs_dense": 0}

    def _saved_from_steps(self, y, extras, lengths):
        return extras["_u"], lengths

    def _step_backward(self, run, t, dy_t, carry):
        u, lengths = run.saved
        return self._step_back(u[t], t < lengths, dy_t, carry)


def _net(cycle=False, seed=0):
    net = evsim.Network(seed=seed, dtype="float64", progress=False)
    net.add(evsim.DenseInput("x", 3))
    net.add(RateUnit("rate", 5, leak=0.6))
    net.add(evsim.Readout("o", 2))
    net.connect("x", "rate", scale=2.0)
    net.connect("rate", "o")
    if cycle:
        net.connect("rate", "rate", delay=1, scale=0.8)
    return net


def _data(seed=1, T=6, B=2):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(T, B, 3))}, np.array([T, T - 2]), rng.normal(size=(T, B, 2))


def _loss(net, inputs, lengths, cot, schedule):
    fp = net.forward(inputs, lengths=lengths, schedule=schedule)
    return float(np.sum(fp.outputs["o"] * cot)), fp


def _fd_check(net, inputs, lengths, cot, schedule):
    _, fp = _loss(net, inputs, lengths, cot, schedule)
    grads = net.backward(fp, {"o": cot})
    rng = np.random.default_rng(3)
    for key, p in net.params().items():
        d = rng.normal(size=p.shape)
        keep = p.copy()
        p += 1e-6 * d
        lp, _ = _loss(net, inputs, lengths, cot, schedule)
        p[...] = keep - 1e-6 * d
        lm, _ = _loss(net, inputs, lengths, cot, schedule)
        p[...] = keep
        fd = (lp - lm) / 2e-6
        an = float(np.sum(d * grads[key]))
        assert abs(fd - an) <= 1e-7 + 1e-6 * abs(fd), (key, fd, an)
        assert np.abs(grads[key]).max() > 0, key
    return fp, grads


def test_custom_population_runs_and_trains_in_a_dag():
    net = _net()
    inputs, lengths, cot = _data()
    mon = net.monitor("rate", "state", variables=["u"])
    fp, grads = _fd_check(net, inputs, lengths, cot, "dag")
    assert fp.schedule == "dag"
    y = fp.outputs["rate"]
    assert 0 < np.count_nonzero(y[:, 0]) and not y[4:, 1].any()  # zero past the length
    assert mon["u"].shape[-1] == 5
    assert set(grads.stats) >= {"rate", "o"} and grads.stats["rate"]["bwd_macs"] >= 0


def test_custom_population_stepwise_equals_dag():
    inputs, lengths, cot = _data(seed=2)
    out = {}
    for schedule in ("dag", "stepwise"):
        net = _net()
        fp = net.forward(inputs, lengths=lengths, schedule=schedule)
        out[schedule] = (fp, net.backward(fp, {"o": cot}), net.state["rate"]["r"])
    (fd, gd, rd), (fs, gs, rs) = out["dag"], out["stepwise"]
    assert fs.schedule == "stepwise"
    for k in fd.outputs:
        np.testing.assert_allclose(fs.outputs[k], fd.outputs[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rs, rd, rtol=1e-12)
    for k in gd:
        np.testing.assert_allclose(gs[k], gd[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_custom_population_trains_through_a_cycle():
    net = _net(cycle=True)
    assert net.cyclic
    inputs, lengths, cot = _data(seed=4)
    fp, _ = _fd_check(net, inputs, lengths, cot, "auto")
    assert fp.schedule == "stepwise"
    # a few steps of gradient descent lower a regression loss
    target = 0.3 * cot
    losses = []
    for _ in range(20):
        fp = net.forward(inputs, lengths=lengths)
        err = fp.outputs["o"] - target
        losses.append(float(np.mean(err ** 2)))
        grads = net.backward(fp, {"o": 2 * err / err.size})
        for k, p in net.params().items():
            p -= 0.5 * grads[k]
    assert losses[-1] < 0.8 * losses[0]


def test_saving_needs_a_registered_class(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "_REGISTRY", dict(protocol.registered_populations()))
    net = _net()
    inputs, lengths, _ = _data()
    path = tmp_path / "net.h5"
    with pytest.raises(ValueError, match=r"register_population\(RateUnit\)"):
        net.save(path)
    assert not path.exists()
    assert evsim.register_population(RateUnit) is RateUnit
    assert evsim.register_population(RateUnit) is RateUnit  # again: fine
    net.save(path)
    back = evsim.Network.load(path)
    assert isinstance(back.populations["rate"], RateUnit)
    assert back.populations["rate"].leak == 0.6
    for k, v in net.params().items():
        np.testing.assert_array_equal(back.params()[k], v)
    np.testing.assert_array_equal(back.run(inputs, lengths=lengths).outputs["o"],
                                  net.run(inputs, lengths=lengths).outputs["o"])
    # a program that did not register the class: a clear error, not a corrupt-file one
    del protocol._REGISTRY["RateUnit"]
    with pytest.raises(ValueError, match=r"class 'RateUnit'.*register_population\(RateUnit\)"):
        evsim.Network.load(path)


def test_register_population_checks():
    with pytest.raises(TypeError, match="subclass of evsim.Population"):
        evsim.register_population(dict)

    class LIF(evsim.Population):  # a name taken by a built-in class
        pass

    with pytest.raises(ValueError, match="'LIF' is taken"):
        evsim.register_population(LIF)
    assert protocol.population_class("LIF") is evsim.LIF
