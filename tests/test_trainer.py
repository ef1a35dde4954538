"""Trainer and checkpoints: exact resume, loss goes down, clear errors, crash safety."""

import glob
import os

import numpy as np
import pytest

from evsim import data, models
from evsim.io import FileFormatError, atomic_h5
from evsim.training import (
    SGD,
    Adam,
    AdamW,
    CheckpointMismatchError,
    DivergenceError,
    Trainer,
    load_checkpoint,
    save_checkpoint,
)
from evsim.training.checkpoint import generator_from_state


@pytest.fixture(scope="module")
def digits():
    sp = data.load_digits(split=(96, 32, 32))
    return sp.train, sp.valid, sp.test


def make_net(hidden=8, seed=0, model="egru", **opts):
    return models.sequence_classifier(8, hidden, 10, model=model, seed=seed, **opts)


def make_trainer(net, **kw):
    opts = dict(lr=1e-2, batch_size=16, activity_target=0.05, activity_strength=1.0,
                progress=False)
    opts.update(kw)
    return Trainer(net, **opts)


class Boom(RuntimeError):
    pass


def strip_wall(history):
    return [{k: v for k, v in h.items() if k != "wall_s"} for h in history]


def assert_params_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --------------------------------------------------------------------------- #
# resume == uninterrupted


@pytest.mark.parametrize("noise", [False, True], ids=["plain", "zoneout+dropconnect"])
def test_resume_equals_uninterrupted_run(tmp_path, digits, noise):
    train, valid, _ = digits
    opts = dict(zoneout=0.1, dropconnect=0.1) if noise else {}
    kw = dict(lr_schedule="cosine", restore_best=True) if noise else {}
    straight = make_trainer(make_net(**opts), **kw)
    straight.fit(train, valid, epochs=3)

    path = tmp_path / "ckpt.h5"
    if noise:
        # the cosine schedule depends on the total number of epochs: interrupt a
        # 3-epoch run after the checkpoint of epoch 2 (as a kill would)
        def kill_after_two(msg):
            if msg.startswith("epoch   2"):
                raise Boom("killed")

        first = make_trainer(make_net(**opts), checkpoint=path, log=kill_after_two, **kw)
        with pytest.raises(Boom):
            first.fit(train, valid, epochs=3)
    else:
        first = make_trainer(make_net(**opts), checkpoint=path, **kw)
        first.fit(train, valid, epochs=2)
    assert load_checkpoint(path).epoch == 2
    # a fresh process: new network (same seed), new optimiser, new trainer
    second = make_trainer(make_net(**opts), checkpoint=path, **kw)
    second.fit(train, valid, epochs=3, resume=True)

    assert second.epoch == 3
    assert_params_equal(second.net.params(), straight.net.params())
    assert strip_wall(second.history) == strip_wall(straight.history)
    assert second.optimizer.num_steps == straight.optimizer.num_steps


def test_resume_without_file_starts_from_scratch(tmp_path, digits):
    train, valid, _ = digits
    msgs = []
    t = make_trainer(make_net(), checkpoint=tmp_path / "none.h5", log=msgs.append)
    t.fit(train, valid, epochs=1, resume=True)
    assert any("from scratch" in m for m in msgs)
    assert load_checkpoint(tmp_path / "none.h5").epoch == 1


def test_resume_needs_checkpoint_path(digits):
    train, valid, _ = digits
    with pytest.raises(ValueError, match="checkpoint"):
        make_trainer(make_net()).fit(train, valid, epochs=1, resume=True)


# --------------------------------------------------------------------------- #
# learning


def test_tiny_training_lowers_the_loss(digits):
    train, valid, _ = digits
    t = make_trainer(make_net(hidden=16), lr=2e-2)
    before = t.evaluate(train)["loss"]
    hist = t.fit(train, valid, epochs=4)
    after = t.evaluate(train)["loss"]
    assert after < before - 0.2
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert 0.0 < hist[-1]["train_activity"] < 1.0


def test_evaluate_reports_costs(digits):
    _, _, test = digits
    t = make_trainer(make_net())
    rng_before = t.net.rng_state()
    r = t.evaluate(test, measure_backward=True)
    for key in ("loss", "accuracy", "activity", "backward_sparsity", "fwd_macs",
                "fwd_macs_dense", "bwd_macs", "bwd_macs_dense", "wall_s"):
        assert key in r
    assert 0 < r["fwd_macs"] <= r["fwd_macs_dense"]
    assert 0 < r["bwd_macs"] <= r["bwd_macs_dense"]
    assert 0.0 <= r["backward_sparsity"] <= 1.0
    # the training-mode pass does not advance the network's random streams
    assert_params_equal(t.net.rng_state(), rng_before)
    assert np.isnan(t.evaluate(test)["backward_sparsity"])


def test_gru_model_trains_with_full_activity(digits):
    train, valid, _ = digits
    t = make_trainer(make_net(model="gru"), activity_strength=0.0)
    hist = t.fit(train, valid, epochs=1)
    assert hist[0]["train_activity"] == 1.0
    assert hist[0]["train_fwd_macs"] == hist[0]["train_fwd_macs_dense"]


def test_thresholds_are_bounded(digits):
    from evsim import config

    train, _, _ = digits
    net = make_net()
    net.params()["egru.thr"][:] = 50.0  # out of range: projected at construction
    t = make_trainer(net, optimizer=SGD(1.0))
    lo, hi = config.THRESHOLD_RANGE
    assert t.optimizer.bound_of("egru.thr") == (lo, hi)
    assert net.params()["egru.thr"].max() <= hi
    t.fit(train, epochs=1)
    thr = net.params()["egru.thr"]
    assert thr.min() >= lo and thr.max() <= hi


def test_early_stopping(digits):
    train, valid, _ = digits
    # a learning rate so small that float32 weights do not move: no improvement
    t = make_trainer(make_net(), lr=1e-12, patience=2, restore_best=True)
    hist = t.fit(train, valid, epochs=10)
    assert len(hist) == 3
    assert t._best["stopped"]


def test_regression_and_language_model_tasks():
    ds = data.adding_problem(48, T=6, seed=0)
    net = models.regressor(2, 8, 1)
    t = Trainer(net, task="regress", batch_size=16, progress=False)
    hist = t.fit(ds, ds, epochs=1)
    assert np.isfinite(hist[0]["train_mse"]) and np.isfinite(hist[0]["valid_mse"])

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, 400)
    lm = models.language_model(12, 6, 8)
    t = Trainer(lm, task="lm", batch_size=4, bptt=10, progress=False,
                activity_strength=1.0, activity_target=0.05)
    hist = t.fit(ids, ids[:120], epochs=1)
    assert 1.0 < hist[0]["valid_perplexity"] < 1000.0


# --------------------------------------------------------------------------- #
# bad input


def test_labels_out_of_range(digits):
    train, _, _ = digits
    bad = data.Dataset(train.x, np.full(len(train), 11), 12, "twelve-classes")
    with pytest.raises(ValueError, match="labels .* 0..9"):
        make_trainer(make_net()).fit(bad, epochs=1)


def test_input_size_and_type_mismatch(digits):
    train, _, _ = digits
    t = make_trainer(make_net())
    wide = data.Dataset(np.zeros((4, 8, 5)), np.zeros(4, int), 10)
    with pytest.raises(ValueError, match="5 input channels"):
        t.fit(wide, epochs=1)
    with pytest.raises(TypeError, match="Dataset"):
        t.fit(train.x, epochs=1)
    reg = data.adding_problem(8, 4)
    with pytest.raises(ValueError, match="class labels"):
        make_trainer(models.regressor(2, 4, 1), task="regress").fit(
            data.Dataset(reg.x, np.zeros(8, int), 3), epochs=1)


def test_sequences_longer_than_max_len(digits):
    train, _, _ = digits
    with pytest.raises(ValueError, match="max_len=4"):
        make_trainer(make_net(), max_len=4).fit(train, epochs=1)


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        data.Dataset(np.zeros((0, 8, 8)), np.zeros(0, int), 10)
    lm = models.language_model(12, 4, 4)
    t = Trainer(lm, task="lm", batch_size=2, progress=False)
    with pytest.raises(ValueError, match="empty"):
        t.fit(np.zeros(1, np.int64), epochs=1)
    with pytest.raises(ValueError, match="token ids"):
        t.fit(np.full(50, 12), epochs=1)


def test_bad_options():
    net = make_net()
    with pytest.raises(ValueError, match="task"):
        Trainer(net, task="nope")
    with pytest.raises(ValueError, match="readout='y'"):
        Trainer(net, readout="y")
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(net, batch_size=0)
    with pytest.raises(ValueError, match="activity_target"):
        Trainer(net, activity_target=-1)
    with pytest.raises(ValueError, match="lr_schedule"):
        Trainer(net, lr_schedule="linear")


def test_cosine_schedule(digits):
    train, _, _ = digits
    t = make_trainer(make_net(), lr_schedule="cosine")
    hist = t.fit(train, epochs=4)
    lrs = [h["lr"] for h in hist]
    assert lrs[0] == pytest.approx(1e-2) and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] > 0.05e-2


# --------------------------------------------------------------------------- #
# checkpoints


def test_checkpoint_round_trip(tmp_path, digits):
    train, valid, _ = digits
    path = tmp_path / "c.h5"
    t = make_trainer(make_net(), checkpoint=path, patience=3, restore_best=True)
    t.fit(train, valid, epochs=2)
    ck = load_checkpoint(path)
    assert ck.epoch == 2
    assert strip_wall(ck.history) == strip_wall(t.history)
    assert ck.optimizer_name == "Adam"
    assert ck.model_config["populations"][1]["kwargs"]["size"] == 8
    assert_params_equal(ck.net_rng, t.net.rng_state())
    assert ck.best_params is not None and set(ck.best_params) == set(t.net.params())
    assert ck.trainer_state["epoch"] in (1, 2)
    gen = generator_from_state(ck.trainer_rng)
    assert gen.bit_generator.state == t._rng.bit_generator.state


def test_generator_state_round_trip():
    g = np.random.default_rng(123)
    g.random(7)
    h = generator_from_state(g.bit_generator.state)
    np.testing.assert_array_equal(g.random(5), h.random(5))


def test_checkpoint_from_another_model_shape(tmp_path, digits):
    train, _, _ = digits
    path = tmp_path / "c.h5"
    make_trainer(make_net(hidden=8), checkpoint=path).fit(train, epochs=1)
    other = make_trainer(make_net(hidden=12), checkpoint=path)
    before = {k: v.copy() for k, v in other.net.params().items()}
    with pytest.raises(CheckpointMismatchError, match=r"another model shape.*\(8, 24\)"):
        other.fit(train, epochs=2, resume=True)
    assert_params_equal(other.net.params(), before)  # nothing was changed
    gru = make_trainer(make_net(hidden=8, model="gru"), checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match="another model"):
        gru.load(path)
    sgd = make_trainer(make_net(hidden=8), optimizer=SGD(0.1))
    with pytest.raises(CheckpointMismatchError, match="Adam"):
        sgd.load(path)


def test_foreign_or_truncated_checkpoint(tmp_path):
    net = make_net()
    t = make_trainer(net)
    foreign = tmp_path / "net.h5"
    with atomic_h5(foreign, "network"):
        pass
    with pytest.raises(FileFormatError, match="expected 'checkpoint'"):
        t.load(foreign)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        t.load(junk)
    good = tmp_path / "good.h5"
    save_checkpoint(good, net, Adam(1e-3), epoch=0)
    raw = good.read_bytes()
    (tmp_path / "cut.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileFormatError):
        t.load(tmp_path / "cut.h5")
    with pytest.raises(FileNotFoundError):
        t.load(tmp_path / "missing.h5")


def test_killed_run_keeps_last_checkpoint(tmp_path, digits):
    train, valid, _ = digits
    path = tmp_path / "run.h5"
    net = make_net()
    t = make_trainer(net, checkpoint=path)
    real_backward = net.backward
    calls = {"n": 0}
    n_batches = -(-len(train) // 16)

    def dying_backward(fp, grads):
        calls["n"] += 1
        if calls["n"] == n_batches + 2:  # in the middle of epoch 2
            raise Boom("killed")
        return real_backward(fp, grads)

    net.backward = dying_backward
    with pytest.raises(Boom):
        t.fit(train, valid, epochs=3)
    ck = load_checkpoint(path)
    assert ck.epoch == 1 and len(ck.history) == 1
    assert glob.glob(os.path.join(tmp_path, "*.tmp")) == []

    # restart from the checkpoint: the same result as a run never interrupted
    resumed = make_trainer(make_net(), checkpoint=path)
    resumed.fit(train, valid, epochs=3, resume=True)
    straight = make_trainer(make_net())
    straight.fit(train, valid, epochs=3)
    assert_params_equal(resumed.net.params(), straight.net.params())


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, digits, monkeypatch):
    train, _, _ = digits
    path = tmp_path / "run.h5"
    t = make_trainer(make_net(), checkpoint=path)
    t.fit(train, epochs=1)
    import evsim.training.checkpoint as ckmod

    def broken(group, arrays):
        raise Boom("disk died mid-write")

    monkeypatch.setattr(ckmod, "save_arrays", broken)
    with pytest.raises(Boom):
        t.fit(train, epochs=2)
    assert load_checkpoint(path).epoch == 1
    assert glob.glob(os.path.join(tmp_path, "*.tmp")) == []


# --------------------------------------------------------------------------- #
# your own data: predict, optimiser names, activity target, divergence


def _ragged_task(n, seed):
    """Label = whether the first channel sums to > 0 over a sequence of 4..12 steps."""
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(int(rng.integers(4, 13)), 2)) for _ in range(n)]
    x, lengths = data.pad_sequences(seqs)
    y = np.array([int(s[:, 0].sum() > 0) for s in seqs])
    return data.Dataset.from_arrays(x, y, lengths=lengths, n_classes=2, name="ragged")


def test_own_ragged_data_trains_and_predict_honours_lengths():
    ds = _ragged_task(400, 0)
    train, valid, test = ds.split(seed=0)
    net = models.sequence_classifier(2, 24, 2, seed=0)
    t = Trainer(net, optimizer="adam", lr=1e-2, batch_size=32, progress=False)
    t.fit(train, valid, epochs=4)
    r = t.evaluate(test)
    assert r["accuracy"] > 0.75
    labels = t.predict(test)
    probs = t.predict(test, output="probs", batch_size=7)
    assert labels.shape == (len(test),) and labels.dtype == np.int64
    assert probs.shape == (len(test), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    # predict agrees with evaluate's accuracy
    assert np.mean(labels == test.y) == pytest.approx(r["accuracy"])
    # arrays with lengths == the Dataset; garbage in the padding changes nothing
    x = test.x.copy()
    for k, n in enumerate(test.lengths):
        x[k, n:] = 1e3
    np.testing.assert_allclose(t.predict(x, lengths=test.lengths, output="logits"),
                               t.predict(test, output="logits"), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        t.predict(x.transpose(1, 0, 2), lengths=test.lengths, layout="TBI"), labels)
    # without the lengths the padding is read: another answer
    assert not np.allclose(t.predict(x, output="logits"), t.predict(test, output="logits"))


def test_predict_regression_and_errors(digits):
    d = data.adding_problem(40, T=10, seed=0)
    t = Trainer(models.regressor(d.n_inputs, 8, 1, seed=0), task="regress", progress=False)
    out = t.predict(d)
    assert out.shape == (40, 1) and np.all(np.isfinite(out))
    tc = make_trainer(make_net())
    with pytest.raises(ValueError, match="input channels"):
        tc.predict(np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match="output must be"):
        tc.predict(digits[2], output="classes")
    with pytest.raises(ValueError, match="a Dataset carries its own"):
        tc.predict(digits[2], lengths=np.ones(len(digits[2]), int))


@pytest.mark.parametrize("name, cls", [("adam", Adam), ("AdamW", AdamW), ("sgd", SGD)])
def test_optimizer_by_name(name, cls):
    t = Trainer(make_net(), optimizer=name, lr=0.05, progress=False)
    assert type(t.optimizer) is cls and t.optimizer.lr == 0.05


def test_optimizer_errors_are_clear():
    net = make_net()
    with pytest.raises(ValueError, match=r"one of \['adam', 'adamw', 'sgd'\].*'rmsprop'"):
        Trainer(net, optimizer="rmsprop")
    with pytest.raises(TypeError, match="the class itself"):
        Trainer(net, optimizer=Adam)
    with pytest.raises(TypeError, match="Optimizer"):
        Trainer(net, optimizer=object())


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_activity_target_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"activity_target must lie in \[0, 1\].*mean graded"):
        Trainer(make_net(), activity_target=bad)
    with pytest.raises(TypeError, match="activity_target"):
        Trainer(make_net(), activity_target="0.05")


def test_activity_target_default_agrees_with_the_cli():
    from evsim.cli import TASK_DEFAULTS

    t = Trainer(make_net(), progress=False)
    assert {d["activity_target"] for d in TASK_DEFAULTS.values()} == {t.activity_target}
    assert t.activity_strength == 0.0  # off unless asked for (the CLI presets switch it on)
    for ok in (0, 1, 0.3):
        assert Trainer(make_net(), activity_target=ok).activity_target == ok


def test_divergence_stops_with_a_clear_error_and_no_checkpoint(tmp_path):
    d = data.adding_problem(64, T=10, seed=0)
    ckpt = tmp_path / "run.h5"
    t = Trainer(models.regressor(d.n_inputs, 8, 1, seed=0), task="regress", optimizer="sgd",
                lr=1e3, clip=None, batch_size=16, progress=False, checkpoint=ckpt)
    with pytest.raises(DivergenceError, match=r"diverged.*lr=1000.*lower it"):
        with np.errstate(over="ignore", invalid="ignore"):
            t.fit(d, epochs=20)
    if ckpt.exists():  # earlier, finite epochs may have been saved
        ck = load_checkpoint(ckpt)
        assert ck.epoch == t.epoch
        for v in ck.params.values():
            assert np.all(np.isfinite(v))


def test_nan_gradient_stops_before_the_step(digits, tmp_path, monkeypatch):
    train, _, _ = digits
    ckpt = tmp_path / "run.h5"
    t = make_trainer(make_net(), checkpoint=ckpt)
    before = {k: v.copy() for k, v in t.params.items()}
    real_backward = t.net.backward

    def nan_backward(fp, out_grads):
        g = real_backward(fp, out_grads)
        next(iter(g.values()))[...] = np.nan
        return g

    monkeypatch.setattr(t.net, "backward", nan_backward)
    with pytest.raises(DivergenceError, match=r"gradient of .* NaN.*learning rate lr=0.01"):
        t.fit(train, epochs=1)
    assert_params_equal(t.params, before)
    assert not ckpt.exists() and t.epoch == 0


def test_nan_loss_is_divergence(digits):
    train, _, _ = digits
    t = make_trainer(make_net())
    t.params["out.b"][...] = np.nan
    with pytest.raises(DivergenceError, match="readout 'out' output is NaN"):
        t.fit(train, epochs=1)


def test_stepwise_training_of_a_cycle_with_ragged_lengths(monkeypatch):
    """A recurrent LIF layer (a cycle: step-wise schedule) trained through the
    Trainer on padded sequences; every training forward must be step-wise."""
    from evsim import LIF, DenseInput, Network, Readout

    ds = _ragged_task(256, 3)
    train, valid = ds.subset(slice(0, 192)), ds.subset(slice(192, 256))
    net = Network(seed=0)
    net.add(DenseInput("x", 2))
    net.add(LIF("lif", 32, tau_mem=5.0, tau_syn=2.0, support=0.5))
    net.add(Readout("out", 2, leak=0.8))
    net.connect("x", "lif", scale=6.0)
    net.connect("lif", "lif", delay=1)
    net.connect("lif", "out")
    schedules = []
    real_forward = net.forward

    def recording_forward(*args, **kw):
        fp = real_forward(*args, **kw)
        if kw.get("training"):
            schedules.append(fp.schedule)
        return fp

    monkeypatch.setattr(net, "forward", recording_forward)
    t = Trainer(net, lr=1e-2, batch_size=32, progress=False)
    before = t.evaluate(valid)["loss"]
    t.fit(train, epochs=3)
    after = t.evaluate(valid)["loss"]
    assert schedules and set(schedules) == {"stepwise"}
    assert after < before - 0.05, (before, after)
    assert t.predict(valid).shape == (64,)


def test_resume_with_other_trainer_settings_is_refused(tmp_path):
    """A checkpoint stores the Trainer's settings; loading it into a Trainer
    with another learning rate or batch size lists the differences."""
    from evsim.training.checkpoint import CheckpointMismatchError

    splits = data.load_digits(seed=0)
    path = tmp_path / "run.h5"
    net = models.sequence_classifier(8, 16, 10, seed=0)
    Trainer(net, lr=1e-2, batch_size=32, progress=False).fit(splits.train, epochs=1)
    Trainer(net, lr=1e-2, batch_size=32, progress=False).save(path)
    other = Trainer(models.sequence_classifier(8, 16, 10, seed=0), lr=3e-3, batch_size=64,
                    progress=False)
    with pytest.raises(CheckpointMismatchError) as err:
        other.load(path)
    assert "lr" in str(err.value) and "batch_size" in str(err.value)
    same = Trainer(models.sequence_classifier(8, 16, 10, seed=0), lr=1e-2, batch_size=32,
                   progress=False)
    same.load(path)
