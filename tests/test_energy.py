"""evsim.energy: operation counts and the energy estimate, checked by hand."""

import math

import numpy as np
import pytest

from evsim import data, energy, models
from evsim.training import Trainer, load_checkpoint

MAC_PJ = 3.7 + 0.9 + 5.0  # multiply + add + one weight read from SRAM (Horowitz 2014)


def test_estimate_of_given_counters_by_hand():
    stats = dict(fwd_macs=100, fwd_macs_event=40, fwd_macs_dense=200,
                 bwd_macs=50, bwd_macs_event=30, bwd_macs_dense=400)
    est = energy.estimate(stats)
    e, o = est["energy_j"], est["ops"]
    assert o["fwd_synops"] == 40 and o["bwd_synops"] == 30 and o["synops"] == 70
    assert o["fwd_macs"] == 100 and o["macs_dense"] == 600
    assert e["fwd"] == pytest.approx(40 * 9.6e-12)
    assert e["bwd"] == pytest.approx(30 * 9.6e-12)
    assert e["total"] == pytest.approx(70 * 9.6e-12)
    assert e["dense_fwd"] == pytest.approx(200 * 9.6e-12)
    assert e["dense_total"] == pytest.approx(600 * 9.6e-12)
    assert e["saving_fwd"] == pytest.approx(5.0)
    assert e["saving_total"] == pytest.approx(600 / 70)
    assert est["per_op_pj"]["mac"] == pytest.approx(MAC_PJ)
    assert "Horowitz" in est["assumptions"] and "estimate" in est["assumptions"].lower()


def test_dram_binary_and_override():
    stats = dict(fwd_macs_event=10, fwd_macs_dense=20)
    assert energy.estimate(stats, memory="dram")["energy_j"]["fwd"] == \
        pytest.approx(10 * (3.7 + 0.9 + 640) * 1e-12)
    binary = energy.estimate(stats, binary_events=True)["energy_j"]
    assert binary["fwd"] == pytest.approx(10 * (0.9 + 5.0) * 1e-12)
    assert binary["dense_fwd"] == pytest.approx(20 * MAC_PJ * 1e-12)
    assert energy.estimate(stats, pj={"sram32": 0.0})["energy_j"]["fwd"] == \
        pytest.approx(10 * 4.6e-12)
    with pytest.raises(ValueError, match="memory"):
        energy.estimate(stats, memory="hbm")
    with pytest.raises(ValueError, match="unknown"):
        energy.estimate(stats, pj={"fma": 1.0})
    with pytest.raises(TypeError):
        energy.estimate(3)
    with pytest.raises(ValueError, match="counters"):
        energy.estimate({"loss": 1.0})


def test_nothing_counted_gives_nan_saving_and_missing_event_counter_falls_back():
    e = energy.estimate(dict(fwd_macs=0, fwd_macs_dense=0))["energy_j"]
    assert e["total"] == 0.0 and math.isnan(e["saving_total"])
    # no *_event counter: what was done is what is needed
    assert energy.estimate(dict(fwd_macs=7, fwd_macs_dense=9))["ops"]["fwd_synops"] == 7


def tiny(model="egru"):
    net = models.sequence_classifier(3, 4, 2, model=model, seed=0, dtype="float64",
                                     **({"thr_mean": 0.01} if model == "egru" else {}))
    x = np.random.default_rng(0).normal(size=(5, 2, 3)) * 3.0  # T=5, B=2, I=3
    fp = net.forward({"x": x}, training=True)
    grads = net.backward(fp, {"out": np.ones((5, 2, 2))})
    return fp, grads


def test_tiny_egru_by_hand():
    fp, grads = tiny()
    y = fp.outputs["egru"]  # (T, B, H) = (5, 2, 4); events are its non-zeros
    # input projection: every input value drives 3H = 12 weights (dense input);
    # recurrent: an event at t-1 adds a row of 3H = 12; readout: a row of 2 per event
    needed = 10 * 3 * 12 + 12 * np.count_nonzero(y[:-1]) + 2 * np.count_nonzero(y)
    dense = 10 * (3 * 12 + 4 * 12 + 4 * 2)
    assert 0 < np.count_nonzero(y) < y.size
    est = energy.estimate([fp, grads])
    assert est["ops"]["fwd_synops"] == needed
    assert est["ops"]["fwd_macs_dense"] == dense == fp.summary()["fwd_macs_dense"]
    assert est["ops"]["bwd_synops"] == grads.summary()["bwd_macs_event"]
    assert est["ops"]["bwd_macs_dense"] == grads.summary()["bwd_macs_dense"]
    assert est["energy_j"]["fwd"] == pytest.approx(needed * MAC_PJ * 1e-12)
    assert est["energy_j"]["dense_fwd"] == pytest.approx(dense * MAC_PJ * 1e-12)
    assert est["energy_j"]["saving_fwd"] == pytest.approx(dense / needed)
    # per-population stats give the same as the summaries
    assert energy.estimate([fp.stats, grads.stats])["ops"] == est["ops"]


def test_dense_gru_saving_is_one():
    fp, grads = tiny("gru")
    est = energy.estimate([fp, grads])
    e = est["energy_j"]
    assert est["ops"]["fwd_synops"] == est["ops"]["fwd_macs_dense"]
    assert e["saving_fwd"] == pytest.approx(1.0)
    assert e["saving_bwd"] == pytest.approx(1.0)
    assert e["saving_total"] == pytest.approx(1.0)


def test_trainer_reports_and_checkpoints_energy(tmp_path):
    sp = data.load_digits(split=(48, 16, 32))
    net = models.sequence_classifier(8, 8, 10, seed=0)
    path = tmp_path / "ckpt.h5"
    t = Trainer(net, batch_size=16, progress=False, checkpoint=str(path))
    t.fit(sp.train, sp.valid, epochs=1)
    assert t.history[-1]["valid_energy_fwd_j"] > 0
    assert t.history[-1]["train_energy_j"] > 0
    r = t.evaluate(sp.test, measure_backward=True)
    want = energy.fields(r)
    for k in ("energy_fwd_j", "energy_bwd_j", "energy_j", "energy_dense_fwd_j",
              "energy_dense_j", "energy_saving", "synops_fwd"):
        assert r[k] == pytest.approx(want[k]), k
    assert r["energy_fwd_j"] == pytest.approx(r["fwd_macs_event"] * MAC_PJ * 1e-12)
    assert r["energy_dense_fwd_j"] == pytest.approx(r["fwd_macs_dense"] * MAC_PJ * 1e-12)
    assert r["energy_bwd_j"] > 0
    t.save(str(path))
    ckpt = load_checkpoint(str(path))
    assert ckpt.accounting["energy_j"] == pytest.approx(r["energy_j"])
    assert ckpt.accounting["fwd_macs"] == r["fwd_macs"]
    t2 = Trainer(models.sequence_classifier(8, 8, 10, seed=0), batch_size=16, progress=False)
    t2.load(str(path))
    assert t2.last_evaluation == ckpt.accounting
