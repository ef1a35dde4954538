"""Spiking networks: LIF maths against closed forms, delays, and the compiled
network loop against the step-wise reference.

Conventions checked here (evsim/kernels/lif.py): step t covers the time
interval [t dt, (t + 1) dt]; an input arriving in step t is present from the
START of that interval (it moves v in the same step); monitors report values
at the END of each step. A spike at step s resets v, which is then held at
v_reset during steps s+1 .. s+n_ref-1 (Brian2's ``refractory``) and integrates
again from step s+n_ref.

Every expected value is computed independently here (closed forms, a fine-step
RK4 integration, or the recurrence written out in plain Python), never with
evsim's own ``constants``.
"""

import functools
import math

import numpy as np
import pytest

import evsim
import evsim.network.compiled as compiled_mod
from evsim import config

DT = 0.1
SCHEDULES = ("dag", "stepwise", "compiled")
TRACE_ATOL = 1e-10  # mV: float64 recurrences over a few hundred steps


@pytest.fixture(autouse=True)
def _restore_config():
    yield
    config._reset()


# --------------------------------------------------------------------------
# helpers


def _net(seed=0):
    return evsim.Network(seed=seed, dt=DT, dtype="float64")


def _quiet_lif(name, n, receptors, tau_mem=20.0, v_rest=-70.0, **kw):
    """A LIF population that never reaches its threshold in these tests."""
    kw.setdefault("v_th", 1000.0)
    kw.setdefault("v_reset", -80.0)
    return evsim.LIF(name, n, tau_mem=tau_mem, v_rest=v_rest, receptors=receptors,
                     v_init=v_rest, **kw)


def _spikes(times, indices, batch=None):
    out = {"times": np.asarray(times, np.int64), "indices": np.asarray(indices, np.int64)}
    if batch is not None:
        out["batch"] = np.asarray(batch, np.int64)
    return out


def _end_times(T):
    """Time (ms) at the end of each step 0 .. T-1."""
    return (np.arange(T) + 1) * DT


# --------------------------------------------------------------------------
# 1a. A step current: v = v_rest + I (1 - exp(-t / tau_m))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("tau_mem", [20.0, 3.0])
def test_step_current_closed_form(schedule, tau_mem):
    T, t_on, K = 300, 4, 150
    amps = np.array([5.0, 12.0, -7.0])
    v_rest = -70.0
    net = _net()
    net.add(evsim.DenseInput("x", 3))
    net.add(_quiet_lif("n", 3, {"in": evsim.Current(0.0)}, tau_mem=tau_mem, v_rest=v_rest))
    net.connect("x", "n", weight=np.eye(3), receptor="in")
    mon = net.monitor("n", "state", variables=["v", "in"])
    x = np.zeros((T, 1, 3))
    x[t_on:t_on + K, 0, :] = amps
    res = net.run({"x": x}, schedule=schedule)
    assert res.schedule == schedule

    tau = _end_times(T)[:, None]  # end of each step
    start, stop = t_on * DT, (t_on + K) * DT
    on = amps * (1.0 - np.exp(-(tau - start) / tau_mem))
    peak = amps * (1.0 - np.exp(-(stop - start) / tau_mem))
    off = peak * np.exp(-(tau - stop) / tau_mem)
    expect = v_rest + np.where(tau <= start, 0.0, np.where(tau <= stop + 1e-12, on, off))
    v = mon.data["v"][:, 0, :]
    np.testing.assert_allclose(v, expect, rtol=0, atol=TRACE_ATOL)
    # a step current carries nothing over: its value after each step is 0
    assert np.all(mon.data["in"] == 0.0)
    assert not res.outputs["n"].any()


# --------------------------------------------------------------------------
# 1b. One spike into an exponential current receptor


def _psp_current(t, w, tau_s, tau_m):
    """v - v_rest for I(t) = w exp(-t / tau_s) switched on at t = 0."""
    t = np.asarray(t, float)
    if tau_s == tau_m:
        out = w * (t / tau_m) * np.exp(-t / tau_m)
    else:
        out = w * tau_s / (tau_s - tau_m) * (np.exp(-t / tau_s) - np.exp(-t / tau_m))
    return np.where(t > 0, out, 0.0)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("tau_s", [5.0, 20.0, 40.0])  # 20.0 == tau_m: the limit case
@pytest.mark.parametrize("delay", [0, 3])
def test_exponential_current_psp_closed_form(schedule, tau_s, delay):
    T, t0, w, tau_m, v_rest = 600, 2, 3.0, 20.0, -70.0
    t_a = t0 + delay  # the step the spike arrives in
    net = _net()
    net.add(evsim.SpikeInput("s", 1))
    net.add(_quiet_lif("n", 1, {"exc": evsim.Current(tau_s)}, tau_mem=tau_m, v_rest=v_rest))
    net.connect("s", "n", rule=evsim.OneToOne(), weight=w, receptor="exc", delay=delay)
    mon = net.monitor("n", "state", variables=["v", "exc"])
    res = net.run({"s": _spikes([t0], [0])}, steps=T, schedule=schedule)
    assert res.schedule == schedule

    since = _end_times(T) - t_a * DT  # time since arrival at the end of each step
    expect_v = v_rest + _psp_current(since, w, tau_s, tau_m)
    np.testing.assert_allclose(mon.data["v"][:, 0, 0], expect_v, rtol=0, atol=TRACE_ATOL)
    # the step of arrival already integrated one dt
    assert mon.data["v"][t_a - 1, 0, 0] == v_rest
    assert mon.data["v"][t_a, 0, 0] > v_rest
    expect_i = np.where(since > 0, w * np.exp(-since / tau_s), 0.0)
    np.testing.assert_allclose(mon.data["exc"][:, 0, 0], expect_i, rtol=1e-12, atol=1e-14)


def test_psp_superposes_linearly():
    """Two spikes give the sum of the two single-spike responses (current receptors)."""
    T, tau_s, tau_m, v_rest = 300, 5.0, 20.0, -65.0
    net = _net()
    net.add(evsim.SpikeInput("s", 2))
    net.add(_quiet_lif("n", 1, {"exc": evsim.Current(tau_s), "inh": evsim.Current(10.0)},
                       tau_mem=tau_m, v_rest=v_rest))
    net.connect("s", "n", weight=np.array([[2.0], [0.0]]), receptor="exc", delay=1)
    net.connect("s", "n", weight=np.array([[0.0], [-4.0]]), receptor="inh", delay=2)
    mon = net.monitor("n", "state", variables=["v"])
    net.run({"s": _spikes([3, 10], [0, 1])}, steps=T, schedule="compiled")
    end = _end_times(T)
    expect = (v_rest + _psp_current(end - 4 * DT, 2.0, tau_s, tau_m)
              + _psp_current(end - 12 * DT, -4.0, 10.0, tau_m))
    np.testing.assert_allclose(mon.data["v"][:, 0, 0], expect, rtol=0, atol=TRACE_ATOL)


# --------------------------------------------------------------------------
# 1c. Refractoriness


def _climb_steps(v_reset, v_rest, v_th, tau_m):
    """Closed-form time (in steps) from v_reset to v_th, and the number of
    integrating steps until the first step that ends above v_th."""
    t_star = tau_m * math.log((v_reset - v_rest) / (v_th - v_rest)) / DT
    frac = t_star - math.floor(t_star)
    assert 1e-6 < frac < 1 - 1e-6, "choose parameters whose crossing is not on a step edge"
    return t_star, math.floor(t_star) + 1


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("refractory", [0.0, 0.1, 2.0, 5.0])
def test_refractory_clamp_and_tonic_period(schedule, refractory):
    tau_m, v_rest, v_th, v_reset = 20.0, -49.0, -50.0, -60.0
    T = 2000
    net = _net()
    net.add(evsim.LIF("n", 1, tau_mem=tau_m, v_rest=v_rest, v_th=v_th, v_reset=v_reset,
                      refractory=refractory, receptors={"exc": evsim.Current(5.0)},
                      v_init=v_reset))
    mon = net.monitor("n", "state", variables=["v"])
    ev = net.monitor("n", "events")
    res = net.run(steps=T, schedule=schedule)
    assert res.schedule == schedule

    n_ref = round(refractory / DT)
    held = max(n_ref, 1) - 1  # steps held at v_reset after a spike's step
    t_star, k_cross = _climb_steps(v_reset, v_rest, v_th, tau_m)
    spikes = np.flatnonzero(res.outputs["n"][:, 0, 0])
    np.testing.assert_array_equal(ev.step, spikes)
    assert spikes.size >= 3
    # from v_init = v_reset the unit integrates from step 0
    assert spikes[0] == k_cross - 1
    isi = np.diff(spikes)
    # ISI = refractory steps + the closed-form climb time, rounded to the step
    # where v first ends above v_th: n_ref - 1 held steps + ceil(t_star) steps
    assert np.all(isi == held + k_cross)
    assert np.all(isi == held + math.ceil(t_star))
    v = mon.data["v"][:, 0, 0]
    k = np.arange(1, k_cross)
    climb = v_rest + (v_reset - v_rest) * np.exp(-k * DT / tau_m)
    for s in spikes:
        # the spike's step ends at v_reset, then exactly `held` more steps at v_reset
        assert np.all(v[s:s + 1 + held] == v_reset)
        if s + 1 + held < T:
            assert v[s + 1 + held] > v_reset
        seg = v[s + held + 1: s + held + k_cross][: max(0, T - (s + held + 1))]
        np.testing.assert_allclose(seg, climb[:seg.size], rtol=0, atol=TRACE_ATOL)
    np.testing.assert_allclose(v[:k_cross - 1], climb, rtol=0, atol=TRACE_ATOL)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_receptors_integrate_while_v_is_clamped(schedule):
    """An input that arrives during the refractory period moves the receptor
    (which keeps decaying) but not v; once free, v follows the closed form
    from v_reset with the receptor's current at that time."""
    tau_m, tau_s, v_rest, v_th, v_reset = 20.0, 5.0, -70.0, -50.0, -75.0
    refractory, T = 2.0, 400
    n_ref = round(refractory / DT)
    net = _net()
    net.add(evsim.SpikeInput("s", 2))
    net.add(evsim.LIF("n", 1, tau_mem=tau_m, v_rest=v_rest, v_th=v_th, v_reset=v_reset,
                      refractory=refractory,
                      receptors={"kick": evsim.Current(0.0), "exc": evsim.Current(tau_s)},
                      v_init=v_rest))
    # a step current of 30 / (1 - exp(-dt/tau_m)) moves v by 30 mV in its step
    kick = 30.0 / (1.0 - math.exp(-DT / tau_m))
    net.connect("s", "n", weight=np.array([[kick], [0.0]]), receptor="kick")
    w = 4.0
    net.connect("s", "n", weight=np.array([[0.0], [w]]), receptor="exc")
    mon = net.monitor("n", "state", variables=["v", "exc"])
    t_kick, t_in = 2, 6
    res = net.run({"s": _spikes([t_kick, t_in], [0, 1])}, steps=T, schedule=schedule)
    assert np.flatnonzero(res.outputs["n"][:, 0, 0]).tolist() == [t_kick]
    v, cur = mon.data["v"][:, 0, 0], mon.data["exc"][:, 0, 0]
    free = t_kick + n_ref  # first integrating step
    assert np.all(v[t_kick:free] == v_reset)
    assert v[free] != v_reset
    end = _end_times(T)
    since_in = end - t_in * DT
    np.testing.assert_allclose(cur, np.where(since_in > 0, w * np.exp(-since_in / tau_s), 0),
                               rtol=1e-12, atol=1e-14)
    t_free = free * DT  # v leaves v_reset at the start of step `free`
    i_free = w * math.exp(-(t_free - t_in * DT) / tau_s)
    s = end[free:] - t_free
    expect = (v_rest + (v_reset - v_rest) * np.exp(-s / tau_m)
              + _psp_current(s, i_free, tau_s, tau_m))
    np.testing.assert_allclose(v[free:], expect, rtol=0, atol=TRACE_ATOL)


@pytest.mark.parametrize("refractory", [0.25, 2.05, 0.05])
def test_refractory_not_a_multiple_of_dt(refractory):
    net = _net()
    with pytest.raises(ValueError, match="refractory"):
        net.add(evsim.LIF("n", 2, refractory=refractory))


# --------------------------------------------------------------------------
# 1d. A conductance synapse


def _rk4_conductance(g0, tau_g, e_rev, tau_m, v_rest, t_end, h):
    """tau_m dv/dt = -(v - v_rest) + g0 exp(-t / tau_g) (e_rev - v), v(0) = v_rest,
    by classic RK4 with step h; returns v at multiples of DT up to t_end."""
    def f(t, v):
        return (-(v - v_rest) + g0 * math.exp(-t / tau_g) * (e_rev - v)) / tau_m

    per = round(DT / h)
    n = round(t_end / DT)
    out = np.empty(n + 1)
    v, t = v_rest, 0.0
    out[0] = v
    for i in range(1, n + 1):
        for j in range(per):
            t = ((i - 1) * per + j) * h
            k1 = f(t, v)
            k2 = f(t + h / 2, v + h / 2 * k1)
            k3 = f(t + h / 2, v + h / 2 * k2)
            k4 = f(t + h, v + h * k3)
            v += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[i] = v
    return out


@functools.lru_cache(maxsize=None)
def _fine_reference(g0, tau_g, e_rev, tau_m, v_rest, n_steps):
    return _rk4_conductance(g0, tau_g, e_rev, tau_m, v_rest, n_steps * DT, DT / 1000)


def _exp_euler(T, t_a, g0, tau_g, e_rev, tau_m, v_rest, w_cur=0.0, t_cur=None, tau_c=5.0):
    """The exponential-Euler recurrence of lif.py written out: conductance and
    current held at their step-start values over each step."""
    v, g, i_c = v_rest, 0.0, 0.0
    out = np.empty(T)
    for t in range(T):
        g_s = g + (g0 if t == t_a else 0.0)
        i_s = i_c + (w_cur if t == t_cur else 0.0)
        big_g = g_s
        v_inf = (v_rest + g_s * e_rev + i_s) / (1.0 + big_g)
        v = v_inf + (v - v_inf) * math.exp(-DT * (1.0 + big_g) / tau_m)
        g = math.exp(-DT / tau_g) * g_s
        i_c = math.exp(-DT / tau_c) * i_s
        out[t] = v
    return out


CONDUCTANCE_CASES = [  # (g, tau_g, e_rev, v_rest)
    (0.5, 5.0, 0.0, -70.0),     # excitatory: ~9 mV PSP
    (1.0, 10.0, -80.0, -55.0),  # inhibitory, shunting
]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("g0, tau_g, e_rev, v_rest", CONDUCTANCE_CASES)
def test_conductance_synapse(schedule, g0, tau_g, e_rev, v_rest):
    T, t0, delay, tau_m = 300, 2, 1, 20.0
    t_a = t0 + delay
    net = _net()
    net.add(evsim.SpikeInput("s", 1))
    net.add(_quiet_lif("n", 1, {"g": evsim.Conductance(tau_g, e_rev=e_rev)}, tau_mem=tau_m,
                       v_rest=v_rest))
    net.connect("s", "n", rule=evsim.OneToOne(), weight=g0, receptor="g", delay=delay)
    mon = net.monitor("n", "state", variables=["v", "g"])
    res = net.run({"s": _spikes([t0], [0])}, steps=T, schedule=schedule)
    assert res.schedule == schedule
    v = mon.data["v"][:, 0, 0]

    # (1) exactly the exponential-Euler recurrence of the docstring
    np.testing.assert_allclose(v, _exp_euler(T, t_a, g0, tau_g, e_rev, tau_m, v_rest),
                               rtol=0, atol=1e-12)
    since = _end_times(T) - t_a * DT
    np.testing.assert_allclose(mon.data["g"][:, 0, 0],
                               np.where(since > 0, g0 * np.exp(-since / tau_g), 0.0),
                               rtol=1e-12, atol=1e-15)

    # (2) close to the true solution (RK4 at dt/1000, the spike arriving at the
    # start of step t_a). Exponential Euler holds g at its step-start value, so
    # over a step it overestimates the conductance by about dt / (2 tau_g)
    # (1 % for tau_g = 5 ms): the error stays below dt / tau_g of the PSP's
    # amplitude (twice the first-order estimate).
    ref = _fine_reference(g0, tau_g, e_rev, tau_m, v_rest, T - t_a)
    assert np.all(v[:t_a] == v_rest)
    err = np.abs(v[t_a:] - ref[1:])
    amp = np.abs(ref - v_rest).max()
    assert amp > 1.0
    assert err.max() <= DT / tau_g * amp, (err.max(), amp)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_conductance_population_currents_enter_raw(schedule):
    """With a conductance receptor present, current receptors enter the
    exponential-Euler step as raw currents (held over the step)."""
    T, tau_m, v_rest, e_rev, tau_g = 200, 20.0, -60.0, -80.0, 10.0
    net = _net()
    net.add(evsim.SpikeInput("s", 2))
    net.add(_quiet_lif("n", 1, {"exc": evsim.Current(5.0),
                                "inh": evsim.Conductance(tau_g, e_rev=e_rev)},
                       tau_mem=tau_m, v_rest=v_rest))
    net.connect("s", "n", weight=np.array([[6.0], [0.0]]), receptor="exc", delay=2)
    net.connect("s", "n", weight=np.array([[0.0], [0.3]]), receptor="inh", delay=1)
    mon = net.monitor("n", "state", variables=["v"])
    net.run({"s": _spikes([3, 20], [0, 1])}, steps=T, schedule=schedule)
    expect = _exp_euler(T, 21, 0.3, tau_g, e_rev, tau_m, v_rest, w_cur=6.0, t_cur=5,
                        tau_c=5.0)
    np.testing.assert_allclose(mon.data["v"][:, 0, 0], expect, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------
# 2. Delays


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("delay", [0, 1, 4, 9])
def test_delay_from_input(schedule, delay):
    T, t0, w, tau_s = 40, 5, 1.5, 5.0
    net = _net()
    net.add(evsim.SpikeInput("s", 2))
    net.add(_quiet_lif("n", 2, {"exc": evsim.Current(tau_s)}))
    net.connect("s", "n", rule=evsim.OneToOne(), weight=w, receptor="exc", delay=delay)
    mon = net.monitor("n", "state", variables=["exc"])
    res = net.run({"s": _spikes([t0, t0 + 3], [0, 1])}, steps=T, schedule=schedule)
    assert res.schedule == schedule
    cur = mon.data["exc"][:, 0, :]
    for unit, ts in ((0, t0), (1, t0 + 3)):
        arrive = ts + delay
        assert np.all(cur[:arrive, unit] == 0.0)
        k = np.arange(T - arrive) + 1
        np.testing.assert_allclose(cur[arrive:, unit], w * np.exp(-k * DT / tau_s), rtol=1e-12)


def test_spike_past_the_end_is_dropped():
    net = _net()
    net.add(evsim.SpikeInput("s", 1))
    net.add(_quiet_lif("n", 1, {"exc": evsim.Current(5.0)}))
    net.connect("s", "n", rule=evsim.OneToOne(), weight=1.0, delay=5)
    mon = net.monitor("n", "state", variables=["exc", "v"])
    for schedule in SCHEDULES:
        net.run({"s": _spikes([6], [0])}, steps=10, schedule=schedule)
        assert np.all(mon.data["exc"] == 0) and np.all(mon.data["v"] == -70.0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_per_synapse_delays_from_list(schedule):
    T, tau_s = 40, 5.0
    pre = [0, 0, 1, 1, 0]
    post = [0, 1, 1, 2, 2]
    weight = [1.0, 2.0, 3.0, 4.0, 5.0]
    delay = [1, 2, 3, 7, 4]
    net = _net()
    net.add(evsim.SpikeInput("s", 2))
    net.add(_quiet_lif("n", 3, {"exc": evsim.Current(tau_s)}))
    proj = net.connect("s", "n", rule=evsim.FromList(pre, post, weight=weight, delay=delay),
                       receptor="exc")
    assert not np.isscalar(proj.delay)
    mon = net.monitor("n", "state", variables=["exc"])
    t_spk = {0: 2, 1: 10}
    res = net.run({"s": _spikes([t_spk[0], t_spk[1]], [0, 1])}, steps=T, schedule=schedule)
    assert res.schedule == schedule
    expect = np.zeros((T, 3))
    steps = np.arange(T)
    for i, j, wt, d in zip(pre, post, weight, delay):
        a = t_spk[i] + d
        expect[:, j] += np.where(steps >= a, wt * np.exp(-(steps - a + 1) * DT / tau_s), 0.0)
    np.testing.assert_allclose(mon.data["exc"][:, 0, :], expect, rtol=1e-12, atol=1e-14)
    # the first arrival at each unit is at exactly the stated step
    for j in range(3):
        first = min(t_spk[i] + d for i, jj, d in zip(pre, post, delay) if jj == j)
        assert np.all(mon.data["exc"][:first, 0, j] == 0) and mon.data["exc"][first, 0, j] > 0


def _kick_weight(jump, tau_m=20.0):
    """Weight on a step-current receptor that moves v by ``jump`` mV in one step."""
    return jump / (1.0 - math.exp(-DT / tau_m))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("hetero", [False, True])
def test_delays_between_spiking_populations(schedule, hetero):
    """A spike of population a at step s reaches b's receptor at s + d
    (d = 0: in the same step, b running after a)."""
    T, tau_s = 40, 5.0
    net = _net()
    net.add(evsim.SpikeInput("s", 3))
    net.add(evsim.LIF("a", 3, tau_mem=20.0, v_rest=-70.0, v_th=-50.0, v_reset=-70.0,
                      refractory=1.0, receptors={"kick": evsim.Current(0.0)}, v_init=-70.0))
    net.add(_quiet_lif("b", 3, {"exc": evsim.Current(tau_s)}))
    net.connect("s", "a", rule=evsim.OneToOne(), weight=_kick_weight(30.0), receptor="kick")
    delays = np.array([0, 2, 5]) if hetero else np.array([3, 3, 3])
    rule = evsim.FromList([0, 1, 2], [0, 1, 2], weight=[1.0, 1.0, 1.0])
    proj = net.connect("a", "b", rule=rule, receptor="exc", delay=None if hetero else 3)
    if hetero:  # FromList's own delays must be >= 1: set per-synapse delays (0 too) here
        proj.delay = delays
    mon = net.monitor("b", "state", variables=["exc"])
    t_spk = np.array([4, 9, 15])
    res = net.run({"s": _spikes(t_spk, [0, 1, 2])}, steps=T, schedule=schedule)
    assert res.schedule == schedule
    cur = mon.data["exc"][:, 0, :]
    for j in range(3):
        assert np.flatnonzero(res.outputs["a"][:, 0, j]).tolist() == [t_spk[j]]
        arrive = t_spk[j] + delays[j]
        assert np.all(cur[:arrive, j] == 0) and cur[arrive, j] == pytest.approx(
            math.exp(-DT / tau_s), rel=1e-12)


@pytest.mark.parametrize("schedule", ["stepwise", "compiled"])
@pytest.mark.parametrize("delay", [1, 6])
def test_self_projection_delay(schedule, delay):
    T = 40
    net = _net()
    net.add(evsim.SpikeInput("s", 1))
    net.add(evsim.LIF("n", 1, tau_mem=20.0, v_rest=-70.0, v_th=-50.0, v_reset=-70.0,
                      refractory=1.0, receptors={"kick": evsim.Current(0.0),
                                                 "fb": evsim.Current(5.0)}, v_init=-70.0))
    net.connect("s", "n", rule=evsim.OneToOne(), weight=_kick_weight(30.0), receptor="kick")
    net.connect("n", "n", rule=evsim.OneToOne(), weight=0.5, receptor="fb", delay=delay)
    mon = net.monitor("n", "state", variables=["fb"])
    res = net.run({"s": _spikes([3], [0])}, steps=T, schedule=schedule)
    assert res.schedule == schedule
    assert np.flatnonzero(res.outputs["n"][:, 0, 0]).tolist() == [3]
    fb = mon.data["fb"][:, 0, 0]
    assert np.all(fb[:3 + delay] == 0) and fb[3 + delay] == pytest.approx(
        0.5 * math.exp(-DT / 5.0), rel=1e-12)


@pytest.mark.parametrize("schedule", ["stepwise", "compiled"])
@pytest.mark.parametrize("per_synapse", [False, True])
def test_delays_in_a_cycle_between_populations(schedule, per_synapse):
    """A -> B -> A, each with a delay of 3 steps: B spikes 3 steps after A,
    and B's spike reaches A 3 steps later (no extra cycle-breaking step:
    neither projection ties a step's source to the same step's target)."""
    cells = dict(tau_mem=20.0, v_rest=-70.0, v_th=-50.0, v_reset=-70.0, refractory=1.0,
                 v_init=-70.0,
                 receptors={"kick": evsim.Current(0.0), "fb": evsim.Current(5.0)})
    net = _net()
    net.add(evsim.SpikeInput("s", 1))
    net.add(evsim.LIF("A", 1, **cells))
    net.add(evsim.LIF("B", 1, **cells))
    net.connect("s", "A", weight=np.array([[_kick_weight(30.0)]]), receptor="kick")
    d = np.array([3]) if per_synapse else 3
    ab = net.connect("A", "B", rule=evsim.FromList([0], [0], weight=[_kick_weight(30.0)]),
                     receptor="kick", delay=d)
    ba = net.connect("B", "A", rule=evsim.FromList([0], [0], weight=[1.0]), receptor="fb",
                     delay=d)
    mon = net.monitor("A", "state", variables=["fb"])
    res = net.run({"s": _spikes([4], [0])}, steps=20, schedule=schedule)
    assert np.flatnonzero(res.outputs["A"][:, 0, 0]).tolist() == [4]
    assert np.flatnonzero(res.outputs["B"][:, 0, 0]).tolist() == [7]
    assert int(np.flatnonzero(mon.data["fb"][:, 0, 0])[0]) == 10
    assert ab.min_delay == ba.min_delay == 3


def test_dag_refuses_a_self_projection():
    net = _net()
    net.add(evsim.SpikeInput("s", 1))
    net.add(evsim.LIF("n", 2, v_th=-50.0, v_reset=-70.0, v_rest=-70.0))
    net.connect("s", "n")
    net.connect("n", "n", delay=1)
    with pytest.raises(ValueError, match="cycle"):
        net.run({"s": _spikes([1], [0])}, steps=5, schedule="dag")


# --------------------------------------------------------------------------
# 3. The compiled loop equals the step-wise reference


def _recurrent_net(seed, cond=True, zero_cross=False, inputs="both", refractory=(2.0, 1.0)):
    """Two LIF populations E, I with self and cross projections, several
    receptors (a conductance one when ``cond``), heterogeneous delays 1..5,
    Poisson and/or spike inputs. ``zero_cross``: E <-> I with delay 0 (a cycle
    the schedule breaks with one step of extra delay)."""
    rng = np.random.default_rng(1000 + seed)
    net = _net(seed)
    nE, nI = 40, 12
    net.add(evsim.LIF("E", nE, tau_mem=20.0, v_rest=-52.0, v_th=-50.0, v_reset=-60.0,
                      refractory=refractory[0],
                      receptors={"exc": evsim.Current(5.0),
                                 "inh": (evsim.Conductance(10.0, e_rev=-80.0) if cond
                                         else evsim.Current(10.0)),
                                 "drive": evsim.Current(0.0)},
                      v_init=("uniform", -60.0, -50.0)))
    net.add(evsim.LIF("I", nI, tau_mem=10.0, v_rest=-55.0, v_th=-50.0, v_reset=-58.0,
                      refractory=refractory[1],
                      receptors={"exc": evsim.Current(3.0), "inh": evsim.Current(20.0)},
                      v_init=("normal", -55.0, 2.0)))
    if inputs in ("both", "poisson"):
        net.add(evsim.PoissonInput("p", 20, rates=rng.uniform(100.0, 400.0, 20)))
        net.connect("p", "E", rule=evsim.FixedProbability(0.3), weight=3.0, receptor="exc")
        proj = net.connect("p", "I", rule=evsim.FixedProbability(0.3), weight=1.5,
                           receptor="exc")
        proj.delay = rng.integers(1, 6, proj.nnz)
    if inputs in ("both", "spikes"):
        net.add(evsim.SpikeInput("s", 6))
        net.connect("s", "E", rule=evsim.FixedProbability(0.5), receptor="drive",
                    weight=_kick_weight(12.0), delay=2)
    inh_w = 0.05 if cond else -2.0
    for src, tgt, rec, w in (("E", "E", "exc", 1.0), ("E", "I", "exc", 1.5),
                             ("I", "E", "inh", inh_w), ("I", "I", "inh", -1.0)):
        proj = net.connect(src, tgt, rule=evsim.FixedProbability(0.2), receptor=rec,
                           weight=w if src != "E" else None, init="uniform", scale=2.0,
                           delay=0 if (zero_cross and src != tgt) else None)
        if src == "E":  # drawn weights, made positive
            proj.params["W"][:] = np.abs(proj.params["W"]) * w
        if not (zero_cross and src != tgt):
            proj.delay = rng.integers(1, 6, proj.nnz)
    return net


def _random_spike_dict(rng, T, B, n, k):
    return {"times": rng.integers(0, T, k), "indices": rng.integers(0, n, k),
            "batch": rng.integers(0, B, k)}


def _run_fresh(build, schedule, inputs, steps, lengths=None, monitors=()):
    """Build a fresh network (same seed: same weights, initial values and
    random input draws) and run it with ``schedule``."""
    net = build()
    mons = {}
    for i, (pop, kind, opts) in enumerate(monitors):
        mons[(pop, kind, i)] = net.monitor(pop, kind, **opts)
    res = net.run(inputs, steps=steps, lengths=lengths, schedule=schedule)
    assert res.schedule == schedule
    return net, res, mons


def _assert_same(a, b, names, with_r=True):
    (net_a, res_a, mons_a), (net_b, res_b, mons_b) = a, b
    for name in names:
        np.testing.assert_array_equal(res_a.outputs[name], res_b.outputs[name], err_msg=name)
        for key in ("v", "I"):
            np.testing.assert_allclose(net_a.state[name][key], net_b.state[name][key],
                                       rtol=0, atol=1e-10, err_msg=f"{name}.{key}")
        if with_r:
            np.testing.assert_array_equal(net_a.state[name]["r"], net_b.state[name]["r"])
    for key, mon in mons_a.items():
        other = mons_b[key]
        if key[1] == "events":
            for col in ("step", "unit", "batch_index"):
                np.testing.assert_array_equal(getattr(mon, col), getattr(other, col))
        else:
            for var, arr in mon.data.items():
                np.testing.assert_allclose(arr, other.data[var], rtol=0, atol=1e-10,
                                           err_msg=f"{key} {var}")


RECURRENT_MONITORS = (("E", "events", {}), ("I", "events", {}),
                      ("E", "events", {"units": [0, 3, 17, 39]}),
                      ("E", "state", {"variables": ["v", "exc", "inh", "y"]}),
                      ("I", "state", {"variables": ["v", "inh"], "units": [1, 4, 7]}),
                      ("I", "state", {"variables": ["exc", "y"], "every": 3}))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("B", [1, 3])
def test_compiled_equals_stepwise_recurrent(seed, cond, B):
    T = 400
    rng = np.random.default_rng(seed)
    lengths = None if B == 1 else np.array([T, T - 37, T // 2])
    inputs = {"s": _random_spike_dict(rng, T, B, 6, 30)}
    build = functools.partial(_recurrent_net, seed, cond=cond)
    runs = [_run_fresh(build, sch, inputs, T, lengths, RECURRENT_MONITORS)
            for sch in ("compiled", "stepwise")]
    _assert_same(*runs, ("E", "I"))
    res = runs[0][1]
    nE = res.outputs["E"].sum()
    assert 20 < nE < 0.5 * res.outputs["E"].size, "want a moderately active network"
    assert res.outputs["I"].sum() > 5
    if lengths is not None:
        for b, n in enumerate(lengths):
            assert not res.outputs["E"][n:, b].any()
    # auto picks the compiled loop for an all-LIF network that does not train
    net = build()
    assert net.run(inputs, steps=T, lengths=lengths).schedule == "compiled"


@pytest.mark.parametrize("inputs", ["poisson", "spikes"])
def test_compiled_equals_stepwise_zero_delay_cycle(inputs):
    """E <-> I with delay 0: the cycle is broken (one extra step of delay on
    the projection into the first population) the same way by both."""
    T, B = 300, 2
    rng = np.random.default_rng(7)
    values = {} if inputs == "poisson" else {"s": _random_spike_dict(rng, T, B, 6, 40)}
    build = functools.partial(_recurrent_net, 3, zero_cross=True, inputs=inputs)
    runs = [_run_fresh(build, sch, values, T, np.array([T, 250]), RECURRENT_MONITORS)
            for sch in ("compiled", "stepwise")]
    _assert_same(*runs, ("E", "I"))
    assert runs[0][1].outputs["I"].sum() > 0


def test_compiled_refractory_zero_matches_stepwise():
    T = 300
    build = functools.partial(_recurrent_net, 5, refractory=(0.0, 0.0), inputs="poisson")
    runs = [_run_fresh(build, sch, {}, T, None, RECURRENT_MONITORS)
            for sch in ("compiled", "stepwise")]
    # the counters may read -1 (step-wise) or 0 (compiled) after a spike with
    # n_ref = 0: both mean "not refractory"; everything observable is equal
    _assert_same(*runs, ("E", "I"), with_r=False)
    for name in ("E", "I"):
        for net, _, _ in runs:
            assert np.all(net.state[name]["r"] <= 0)


def test_compiled_equals_stepwise_when_continuing():
    """reset=False continues from net.state (v, receptors, refractory counters)."""
    runs = {}
    for sch in ("compiled", "stepwise"):
        net = _recurrent_net(0, inputs="poisson")
        first = net.run({}, steps=150, lengths=[150, 100], schedule=sch)
        second = net.run({}, steps=150, lengths=[150, 120], schedule=sch, reset=False)
        assert second.schedule == sch
        runs[sch] = (net, first, second)
    for name in ("E", "I"):
        for k in (1, 2):
            np.testing.assert_array_equal(runs["compiled"][k].outputs[name],
                                          runs["stepwise"][k].outputs[name])
        for key in ("v", "I", "r"):
            np.testing.assert_allclose(runs["compiled"][0].state[name][key],
                                       runs["stepwise"][0].state[name][key], rtol=0,
                                       atol=1e-10)
    assert runs["compiled"][2].outputs["E"].sum() > 0


def _feedforward_net(seed):
    """Inputs -> A -> B -> C, per-synapse delays, no cycle: every schedule runs it."""
    rng = np.random.default_rng(seed)
    net = _net(seed)
    net.add(evsim.PoissonInput("p", 15, rates=300.0))
    net.add(evsim.DenseInput("x", 4))
    for name, n in (("A", 20), ("B", 10), ("C", 6)):
        net.add(evsim.LIF(name, n, tau_mem=10.0, v_rest=-60.0, v_th=-50.0, v_reset=-65.0,
                          refractory=1.0,
                          receptors={"exc": evsim.Current(5.0),
                                     "inh": evsim.Conductance(8.0, e_rev=-75.0),
                                     "dc": evsim.Current(0.0)},
                          v_init=("uniform", -65.0, -52.0)))
    net.connect("x", "A", weight=rng.uniform(0, 2, (4, 20)), receptor="dc")
    p = net.connect("p", "A", rule=evsim.FixedProbability(0.4), weight=4.0, receptor="exc")
    p.delay = rng.integers(0, 4, p.nnz)
    net.connect("B", "C", weight=rng.uniform(-1.0, 6.0, (10, 6)), receptor="dc", delay=2)
    for src, tgt in (("A", "B"), ("B", "C"), ("A", "C")):
        e = net.connect(src, tgt, rule=evsim.FixedProbability(0.5), weight=5.0,
                        receptor="exc")
        e.delay = rng.integers(0, 6, e.nnz)
        i = net.connect(src, tgt, rule=evsim.FixedProbability(0.3), weight=0.1,
                        receptor="inh")
        i.delay = rng.integers(1, 4, i.nnz)
    return net


@pytest.mark.parametrize("B", [1, 3])
def test_acyclic_network_all_schedules_agree(B):
    T = 300
    rng = np.random.default_rng(11)
    lengths = None if B == 1 else np.array([T, 123, 250])
    inputs = {"x": rng.uniform(0, 10, (T, B, 4))}
    mons = (("A", "events", {}), ("C", "events", {}),
            ("B", "state", {"variables": ["v", "exc", "inh", "dc"]}))
    build = functools.partial(_feedforward_net, 2)
    runs = {sch: _run_fresh(build, sch, inputs, T, lengths, mons) for sch in SCHEDULES}
    for sch in ("dag", "stepwise"):
        _assert_same(runs["compiled"], runs[sch], ("A", "B", "C"))
    out = runs["compiled"][1].outputs
    assert out["A"].sum() > 10 and out["C"].sum() > 0


def _small_cuba():
    return evsim.models.cuba(seed=0, dtype="float64", n_exc=400, n_inh=100, p=0.1)


@pytest.mark.parametrize("build", [functools.partial(evsim.models.cuba, seed=0,
                                                     dtype="float64"), _small_cuba],
                         ids=["cuba", "cuba-small"])
def test_cuba_compiled_equals_stepwise(build):
    T = 2000
    mons = (("E", "events", {}), ("I", "state", {"variables": ["v"], "units": [0, 5]}))
    runs = [_run_fresh(build, sch, {}, T, None, mons) for sch in ("compiled", "stepwise")]
    _assert_same(*runs, ("E", "I"))
    n = runs[0][1].outputs["E"].sum()
    assert n > 100


def test_forced_schedules_ran():
    build = functools.partial(_feedforward_net, 4)
    x = np.ones((20, 1, 4))
    for sch in SCHEDULES + ("auto",):
        res = build().run({"x": x}, schedule=sch)
        assert res.schedule == ("compiled" if sch == "auto" else sch)
    with pytest.raises(ValueError, match="schedule"):
        build().run({"x": x}, schedule="fast")


# --------------------------------------------------------------------------
# 4. Event-buffer growth and chunking in the compiled loop


def _tonic_net(seed=0):
    """A recurrent network plus a population that spikes at every step."""
    net = _recurrent_net(seed, inputs="poisson")
    net.add(evsim.LIF("T", 30, tau_mem=1.0, v_rest=100.0, v_th=0.0, v_reset=-1.0,
                      receptors={"exc": evsim.Current(2.0)}, v_init=0.0))
    net.connect("T", "E", rule=evsim.FixedProbability(0.05), weight=0.05, receptor="exc",
                delay=3)
    return net


def _count_kernel_calls(monkeypatch):
    """Count the calls of the compiled loop's kernels (one per resume)."""
    calls = []
    for fn in ("run_sample", "run_batch"):
        orig = getattr(compiled_mod.snn_loop, fn)

        def wrapper(*args, _orig=orig, **kw):
            calls.append(1)
            return _orig(*args, **kw)

        monkeypatch.setattr(compiled_mod.snn_loop, fn, wrapper)
    return calls


EVENT_MONITORS = (("T", "events", {}), ("E", "events", {}),
                  ("E", "state", {"variables": ["v", "exc"]}))


@pytest.mark.parametrize("B", [1, 3])
def test_event_buffer_stop_and_resume(monkeypatch, B):
    """_EV_CAP_MIN = 1 leaves a buffer of 4 events per unit: the loop stops
    after a few steps (at a step boundary), the buffer grows and the loop
    resumes; nothing changes."""
    T = 200
    lengths = None if B == 1 else np.array([T, 150, 90])
    base = _run_fresh(_tonic_net, "compiled", {}, T, lengths, EVENT_MONITORS)
    assert base[1].outputs["T"][:90].all()  # every unit, every step
    monkeypatch.setattr(compiled_mod, "_EV_CAP_MIN", 1)
    calls = _count_kernel_calls(monkeypatch)
    small = _run_fresh(_tonic_net, "compiled", {}, T, lengths, EVENT_MONITORS)
    assert len(calls) > 2  # one chunk of 200 steps, stopped and resumed (the buffer grows)
    _assert_same(base, small, ("E", "I", "T"))
    ref = _run_fresh(_tonic_net, "stepwise", {}, T, lengths, EVENT_MONITORS)
    _assert_same(small, ref, ("E", "I", "T"))


@pytest.mark.parametrize("B", [1, 3])
def test_event_buffer_growth(monkeypatch, B):
    """A buffer smaller than one step's possible events must grow (a sample
    that cannot make progress); results unchanged."""
    T = 120
    lengths = None if B == 1 else np.array([T, 100, 61])
    base = _run_fresh(_tonic_net, "compiled", {}, T, lengths, EVENT_MONITORS)
    orig_init, orig_grow = compiled_mod._Events.__init__, compiled_mod._Events.grow
    grown = []

    def tiny_init(self, B, n_units):
        orig_init(self, B, n_units)
        self.cap = 1
        self.step = np.zeros((B, 1), np.int64)
        self.unit = np.zeros((B, 1), np.int32)

    def counting_grow(self):
        orig_grow(self)
        grown.append(self.cap)

    monkeypatch.setattr(compiled_mod, "_EV_CAP_MIN", 1)
    monkeypatch.setattr(compiled_mod._Events, "__init__", tiny_init)
    monkeypatch.setattr(compiled_mod._Events, "grow", counting_grow)
    small = _run_fresh(_tonic_net, "compiled", {}, T, lengths, EVENT_MONITORS)
    n_units = sum(small[0].populations[p].size for p in ("E", "I", "T"))
    assert grown and grown[-1] >= n_units
    _assert_same(base, small, ("E", "I", "T"))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("chunk", [7, 1])
def test_chunking_gives_identical_results(monkeypatch, B, chunk):
    T = 150
    lengths = None if B == 1 else np.array([T, 100, 13])
    mons = (("E", "events", {}), ("I", "events", {}),
            ("E", "state", {"variables": ["v", "exc", "inh", "drive"]}),
            ("I", "state", {"variables": ["v", "y"], "units": [0, 3], "every": 3}))
    rng = np.random.default_rng(3)
    inputs = {"s": _random_spike_dict(rng, T, B, 6, 25)}
    build = functools.partial(_recurrent_net, 1)
    base = _run_fresh(build, "compiled", inputs, T, lengths, mons)
    monkeypatch.setattr(config, "LOOP_CHUNK_STEPS", chunk)
    chunked = _run_fresh(build, "compiled", inputs, T, lengths, mons)
    _assert_same(base, chunked, ("E", "I"))
    for key, mon in base[2].items():
        if key[1] == "state":
            for var, arr in mon.data.items():
                np.testing.assert_array_equal(arr, chunked[2][key].data[var])


# --------------------------------------------------------------------------
# 5. Bad input: clear errors naming the argument


def _pair(target_receptors=None):
    net = _net()
    net.add(evsim.SpikeInput("s", 4))
    net.add(evsim.LIF("n", 5, v_rest=-70.0, v_th=-50.0, v_reset=-70.0,
                      receptors=target_receptors or {"exc": evsim.Current(5.0),
                                                     "inh": evsim.Current(10.0)}))
    return net


@pytest.mark.parametrize("delay", [0, -1, -3])
def test_self_projection_needs_delay_at_least_one(delay):
    net = _pair()
    with pytest.raises(ValueError, match=r"delay.*>= 1"):
        net.connect("n", "n", rule=evsim.FixedProbability(0.5), weight=0.5, delay=delay)
    with pytest.raises(ValueError, match="delay"):
        net.connect("n", "n", rule=evsim.FromList([0, 1], [1, 0], delay=[1, delay]))


@pytest.mark.parametrize("delay", [-1, 1.5, 2.0, "3", np.array([1.0, 2.0])])
def test_bad_projection_delay(delay):
    net = _pair()
    with pytest.raises((ValueError, TypeError), match="delay"):
        net.connect("s", "n", rule=evsim.FromList([0, 1], [1, 2]), weight=1.0, delay=delay)


def test_per_synapse_delay_wrong_length():
    net = _pair()
    with pytest.raises(ValueError, match="delay"):
        net.connect("s", "n", rule=evsim.FromList([0, 1], [1, 2]), weight=1.0,
                    delay=np.array([1, 2, 3]))
    proj = net.connect("s", "n", rule=evsim.FromList([0, 1, 3], [1, 2, 4]), weight=1.0)
    with pytest.raises(ValueError, match="delay"):
        proj.delay = np.array([1, 2], np.int64)
    with pytest.raises(ValueError, match="delay"):
        proj.delay = np.array([1, -2, 3], np.int64)
    with pytest.raises(ValueError, match="delay"):
        evsim.FromList([0, 1], [1, 2], delay=[1, 2, 3])
    with pytest.raises(TypeError, match="delay"):
        evsim.FromList([0, 1], [1, 2], delay=[1.0, 2.5])
    dense = net.connect("s", "n", weight=np.ones((4, 5)), receptor="inh")
    with pytest.raises(ValueError, match="delay"):
        dense.delay = np.ones(20, np.int64)  # per-synapse delays need a sparse projection
    proj.delay = np.array([2, 3, 4], np.int64)  # a valid one is accepted
    assert proj.max_delay == 4


@pytest.mark.parametrize("make, word", [
    (lambda: evsim.LIF("n", 2, tau_mem=-5.0), "tau_mem"),
    (lambda: evsim.LIF("n", 2, tau_mem=0.0), "tau_mem"),
    (lambda: evsim.Current(-1.0), "tau"),
    (lambda: evsim.Conductance(-2.0, e_rev=0.0), "tau"),
    (lambda: evsim.Conductance(0.0, e_rev=0.0), "tau"),
    (lambda: evsim.Conductance(5.0, e_rev=float("nan")), "e_rev"),
    (lambda: evsim.LIF("n", 2, receptors={"exc": {"type": "current", "tau": -1.0}}), "tau"),
    (lambda: evsim.LIF("n", 2, refractory=-1.0), "refractory"),
    (lambda: evsim.LIF("n", 2, v_th=-50.0, v_reset=-40.0), "v_reset"),
])
def test_bad_time_constants_and_potentials(make, word):
    with pytest.raises(ValueError, match=word):
        make()


def test_unknown_receptor():
    net = _pair()
    with pytest.raises(ValueError, match=r"receptor 'ampa'"):
        net.connect("s", "n", weight=np.ones((4, 5)), receptor="ampa")
    with pytest.raises(ValueError, match=r"receptor 'ampa'"):
        net.connect("s", "n", rule=evsim.FixedProbability(0.5), weight=1.0, receptor="ampa")


def test_weights_of_the_wrong_shape():
    net = _pair()
    with pytest.raises(ValueError, match="weight"):
        net.connect("s", "n", rule=evsim.FromList([0, 1, 2], [0, 1, 2]),
                    weight=np.ones(4))
    with pytest.raises(ValueError, match="weight"):
        net.connect("s", "n", rule=evsim.FixedProbability(0.5), weight=np.ones(3))
    with pytest.raises(ValueError, match="weight"):
        net.connect("s", "n", weight=np.ones((5, 4)))
    with pytest.raises(ValueError, match="weight"):
        net.connect("s", "n", weight=np.ones((4, 10)))  # both receptors' columns
    with pytest.raises(ValueError, match="weight"):
        evsim.FromList([0, 1], [1, 2], weight=[1.0])


@pytest.mark.parametrize("times", [[10], [3, 12], [-1], [2.5]])
def test_spike_times_outside_the_run(times):
    net = _pair()
    net.connect("s", "n", rule=evsim.FromList([0], [0]), weight=1.0)
    with pytest.raises(ValueError, match="times"):
        net.run({"s": {"times": np.asarray(times), "indices": [0] * len(times)}}, steps=10)


def test_spike_indices_and_batch_outside():
    net = _pair()
    net.connect("s", "n", rule=evsim.FromList([0], [0]), weight=1.0)
    with pytest.raises(ValueError, match="indices"):
        net.run({"s": _spikes([1], [4])}, steps=10)
    with pytest.raises(ValueError, match="batch"):
        net.run({"s": _spikes([1], [0], batch=[2])}, steps=10, lengths=[10, 10])


def test_receptor_on_egru_target():
    net = _net()
    net.add(evsim.DenseInput("x", 3))
    net.add(evsim.EGRU("g", 4))
    with pytest.raises(ValueError, match="receptor"):
        net.connect("x", "g", receptor="exc")


def test_compiled_refused_for_egru_or_training():
    net = _net()
    net.add(evsim.DenseInput("x", 3))
    net.add(evsim.EGRU("g", 4))
    net.connect("x", "g")
    x = np.zeros((5, 1, 3))
    with pytest.raises(ValueError, match=r"compiled.*'g'"):
        net.run({"x": x}, schedule="compiled")
    assert net.run({"x": x}).schedule == "dag"  # auto falls back

    lif = _pair()
    lif.connect("s", "n", rule=evsim.FromList([0], [0]), weight=1.0)
    with pytest.raises(ValueError, match=r"compiled.*train"):
        lif.forward({"s": _spikes([1], [0])}, steps=5, training=True, schedule="compiled")
    assert lif.forward({"s": _spikes([1], [0])}, steps=5, training=True).schedule == "dag"


def test_negative_conductance_weights_are_refused():
    net = _net()
    net.add(evsim.SpikeInput("s", 2))
    net.add(evsim.LIF("n", 2, v_th=-50.0, v_reset=-70.0, v_rest=-70.0,
                      receptors={"g": evsim.Conductance(5.0, e_rev=-80.0)}))
    net.connect("s", "n", rule=evsim.OneToOne(), weight=-0.1)
    with pytest.raises(ValueError, match="conductances.*>= 0"):
        net.run({"s": _spikes([1], [0])}, steps=5)
