"""Losses, optimisers and regularisers of evsim.training (pure NumPy)."""

import math

import numpy as np
import pytest

from evsim.training.losses import (
    accuracy_every_step,
    accuracy_last,
    cross_entropy_every_step,
    cross_entropy_last,
    mse,
    predict_last,
    select_last,
)
from evsim.training.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm
from evsim.training.regularizers import (
    activity_fraction,
    activity_regularizer,
    dropconnect_mask,
    dropout_mask,
    embedding_dropout_mask,
    zoneout_mask,
)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def check_grad(f, x, grad, rng, n_dirs=3, eps=1e-6, rtol=1e-6, atol=1e-10):
    """Central differences along random directions:
    <grad, d> == (f(x + eps d) - f(x - eps d)) / 2 eps."""
    for _ in range(n_dirs):
        d = rng.standard_normal(x.shape)
        fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
        an = float(np.sum(grad * d))
        assert an == pytest.approx(fd, rel=rtol, abs=atol)


LENGTHS = np.array([5, 2, 1, 4])  # T = 5, B = 4


def ce_ref(z, label):
    z = np.asarray(z, dtype=np.float64)
    return math.log(np.exp(z - z.max()).sum()) + z.max() - z[label]


# --------------------------------------------------------------------------- #
# cross entropy at the last step
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_cross_entropy_last_value_and_grad(lengths):
    rng = np.random.default_rng(0)
    T, B, C = 5, 4, 3
    logits = rng.standard_normal((T, B, C))
    labels = np.array([0, 2, 1, 2])
    loss, grad = cross_entropy_last(logits, labels, lengths)
    last = np.full(B, T) if lengths is None else lengths
    ref = np.mean([ce_ref(logits[last[b] - 1, b], labels[b]) for b in range(B)])
    assert loss == pytest.approx(ref, rel=1e-12)
    assert grad.shape == logits.shape and grad.dtype == np.float64
    for b in range(B):  # zero away from the last step; rows sum to zero
        other = np.delete(grad[:, b], last[b] - 1, axis=0)
        assert not other.any()
        assert grad[last[b] - 1, b].sum() == pytest.approx(0.0, abs=1e-15)
    check_grad(lambda x: cross_entropy_last(x, labels, lengths)[0], logits, grad, rng)


def test_cross_entropy_golden_and_stable():
    logits = np.zeros((2, 3, 4))
    loss, grad = cross_entropy_last(logits, np.array([0, 1, 3]))
    assert loss == pytest.approx(math.log(4), abs=1e-12)
    np.testing.assert_allclose(grad[1, 0], np.array([0.25 - 1, 0.25, 0.25, 0.25]) / 3)
    big = np.array([[[1e4, -1e4, 0.0]]])
    loss, grad = cross_entropy_last(big, np.array([1]))
    assert loss == pytest.approx(2e4)
    assert np.all(np.isfinite(grad))
    loss32, grad32 = cross_entropy_last(big.astype(np.float32), np.array([0]))
    assert loss32 == 0.0 and grad32.dtype == np.float32


@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_cross_entropy_every_step_value_and_grad(lengths):
    rng = np.random.default_rng(1)
    T, B, C = 5, 4, 6
    logits = rng.standard_normal((T, B, C)) * 3
    targets = rng.integers(0, C, size=(T, B))
    if lengths is not None:  # padded entries are ignored, whatever they hold
        targets[np.arange(T)[:, None] >= lengths[None, :]] = -7
    loss, grad = cross_entropy_every_step(logits, targets, lengths)
    lens = np.full(B, T) if lengths is None else lengths
    terms = [
        ce_ref(logits[t, b], targets[t, b]) for b in range(B) for t in range(lens[b])
    ]
    assert loss == pytest.approx(np.mean(terms), rel=1e-12)
    for b in range(B):
        assert not grad[lens[b] :, b].any()
    check_grad(
        lambda x: cross_entropy_every_step(x, targets, lengths)[0], logits, grad, rng
    )


def test_cross_entropy_errors():
    logits = np.zeros((3, 2, 4))
    with pytest.raises(ValueError, match="labels"):
        cross_entropy_last(logits, np.array([0, 4]))
    with pytest.raises(ValueError, match="labels"):
        cross_entropy_last(logits, np.array([-1, 0]))
    with pytest.raises(ValueError, match="labels"):
        cross_entropy_last(logits, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="labels"):
        cross_entropy_last(logits, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="logits"):
        cross_entropy_last(np.zeros((3, 2, 4), dtype=np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match="logits"):
        cross_entropy_last(np.zeros((2, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="lengths"):
        cross_entropy_last(logits, np.array([0, 1]), lengths=np.array([0, 3]))
    with pytest.raises(ValueError, match="lengths"):
        cross_entropy_last(logits, np.array([0, 1]), lengths=np.array([4, 3]))
    with pytest.raises(ValueError, match="lengths"):
        cross_entropy_last(logits, np.array([0, 1]), lengths=np.array([3]))
    bad = logits.copy()
    bad[-1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="logits"):
        cross_entropy_last(bad, np.array([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        cross_entropy_every_step(logits, np.full((3, 2), 4))
    with pytest.raises(ValueError, match="targets"):
        cross_entropy_every_step(logits, np.zeros((2, 3), dtype=int))


# --------------------------------------------------------------------------- #
# mse and accuracy
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("lengths", [None, LENGTHS])
@pytest.mark.parametrize("every_step", [False, True])
def test_mse_value_and_grad(lengths, every_step):
    rng = np.random.default_rng(2)
    T, B, N = 5, 4, 3
    out = rng.standard_normal((T, B, N))
    lens = np.full(B, T) if lengths is None else lengths
    if every_step:
        tgt = rng.standard_normal((T, B, N))
        valid = np.arange(T)[:, None] < lens[None, :]
        tgt[~valid] = np.nan  # padding may hold anything
        ref = np.mean((out[valid] - tgt[valid]) ** 2)
    else:
        tgt = rng.standard_normal((B, N))
        ref = np.mean((out[lens - 1, np.arange(B)] - tgt) ** 2)
    loss, grad = mse(out, tgt, lengths, every_step=every_step)
    assert loss == pytest.approx(ref, rel=1e-12)
    assert np.all(np.isfinite(grad))
    check_grad(lambda x: mse(x, tgt, lengths, every_step=every_step)[0], out, grad, rng)


def test_mse_errors_and_dtype():
    out = np.ones((2, 3, 4), dtype=np.float32)
    loss, grad = mse(out, np.zeros((3, 4), dtype=np.float32))
    assert loss == 1.0 and grad.dtype == np.float32
    np.testing.assert_allclose(grad[1], 2.0 / 12)
    assert not grad[0].any()
    with pytest.raises(ValueError, match="targets"):
        mse(out, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="targets"):
        mse(out, np.zeros((3, 4)), every_step=True)
    with pytest.raises(ValueError, match="targets"):
        mse(out, np.full((3, 4), np.inf))
    with pytest.raises(TypeError, match="outputs"):
        mse(np.ones((2, 3, 4), dtype=int), np.zeros((3, 4)))


def test_accuracy_helpers():
    logits = np.zeros((3, 2, 3))
    logits[2, 0, 1] = 1.0  # sample 0, last step -> class 1
    logits[1, 1, 2] = 1.0  # sample 1, length 2 -> class 2
    logits[2, 1, 0] = 5.0  # sample 1 at a padded step: ignored with lengths
    lengths = np.array([3, 2])
    np.testing.assert_array_equal(predict_last(logits, lengths), [1, 2])
    np.testing.assert_array_equal(select_last(logits, lengths), logits[[2, 1], [0, 1]])
    assert accuracy_last(logits, np.array([1, 2]), lengths) == 1.0
    assert accuracy_last(logits, np.array([1, 2])) == 0.5
    targets = np.array([[0, 0], [0, 2], [1, 9]])  # 9 sits at a padded step
    assert accuracy_every_step(logits, targets, lengths) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels"):
        accuracy_last(logits, np.array([1, 3]))


# --------------------------------------------------------------------------- #
# activity regulariser
# --------------------------------------------------------------------------- #
def egru_like_outputs(rng, shape, p_event=0.3):
    """Graded outputs: zero for silent units, > thr = 0.3 for events."""
    y = rng.uniform(0.35, 1.2, size=shape)
    return np.where(rng.random(shape) < p_event, y, 0.0)


@pytest.mark.parametrize("per_unit", [True, False])
@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_activity_regularizer_grad(per_unit, two_sided, lengths):
    rng = np.random.default_rng(3)
    y = egru_like_outputs(rng, (5, 4, 7), p_event=0.4)
    target = 0.15
    pen, grad = activity_regularizer(
        y, target, 0.7, lengths=lengths, per_unit=per_unit, two_sided=two_sided
    )
    lens = np.full(4, 5) if lengths is None else lengths
    valid = np.arange(5)[:, None] < lens[None, :]
    m = y[valid].mean(axis=0)
    if not per_unit:
        m = np.array([m.mean()])
    d = m - target if two_sided else np.maximum(m - target, 0.0)
    assert pen == pytest.approx(0.7 * np.mean(d**2), rel=1e-12)
    assert not grad[~valid].any()
    if not two_sided:  # never pushes up; silent steps get the same push as events
        assert np.all(grad >= 0)
    check_grad(
        lambda x: activity_regularizer(
            x, target, 0.7, lengths=lengths, per_unit=per_unit, two_sided=two_sided
        )[0],
        y,
        grad,
        rng,
    )


def test_activity_regularizer_semantics():
    rng = np.random.default_rng(4)
    y = egru_like_outputs(rng, (6, 3, 5), p_event=0.5).astype(np.float32)
    y[:, :, 0] = 0.0  # a silent unit: below any positive target
    _, grad = activity_regularizer(y, 0.05, 1.0)
    assert grad.dtype == np.float32
    assert not grad[..., 0].any()  # one-sided: no push on a unit below target
    assert np.all(grad[..., 1:] > 0)  # units above target: positive dL/dy on every step
    pen_hi, grad_hi = activity_regularizer(y, 10.0, 1.0)
    assert pen_hi == 0.0 and not grad_hi.any()
    pen0, grad0 = activity_regularizer(y, 0.05, 0.0)
    assert pen0 == 0.0 and not grad0.any()
    # gradient descent on y lowers the mean output of the units above target
    _, g = activity_regularizer(y.astype(np.float64), 0.0, 1.0)
    pen_before = activity_regularizer(y.astype(np.float64), 0.0, 1.0)[0]
    assert activity_regularizer(y - 0.1 * g / np.abs(g).max(), 0.0, 1.0)[0] < pen_before
    assert activity_fraction(y) == pytest.approx(np.count_nonzero(y) / y.size)
    assert activity_fraction(y, lengths=np.array([1, 6, 6])) == pytest.approx(
        (np.count_nonzero(y[:1, 0]) + np.count_nonzero(y[:, 1:])) / ((1 + 12) * 5)
    )
    with pytest.raises(ValueError, match="target"):
        activity_regularizer(y, -0.1, 1.0)
    with pytest.raises(ValueError, match="strength"):
        activity_regularizer(y, 0.1, np.nan)
    with pytest.raises(ValueError, match="y"):
        activity_regularizer(y[0], 0.1, 1.0)
    with pytest.raises(TypeError, match="y"):
        activity_regularizer(y.astype(int), 0.1, 1.0)


# --------------------------------------------------------------------------- #
# masks
# --------------------------------------------------------------------------- #
def test_masks():
    rng = np.random.default_rng(5)
    z = zoneout_mask((20, 8, 50), 0.25, rng)
    assert z.dtype == np.float32 and set(np.unique(z)) <= {0.0, 1.0}
    assert z.mean() == pytest.approx(0.75, abs=0.02)
    assert zoneout_mask((3, 4), 0.0, rng).all()
    assert not zoneout_mask((3, 4), 1.0, rng).any()
    d = dropconnect_mask((64, 192), 0.5, rng, dtype=np.float64)
    assert set(np.unique(d)) == {0.0, 2.0}
    assert d.mean() == pytest.approx(1.0, abs=0.03)
    u = dropconnect_mask((64, 192), 0.5, rng, scale=False)
    assert set(np.unique(u)) == {0.0, 1.0}
    e = embedding_dropout_mask(1000, 0.2, rng)
    assert e.shape == (1000, 1) and set(np.unique(e)) == {0.0, np.float32(1.25)}
    E = np.ones((1000, 7), dtype=np.float32)
    dropped = (E * e == 0).all(axis=1)
    assert dropped.sum() == (e[:, 0] == 0).sum()  # whole rows
    locked = dropout_mask((1, 4, 6), 0.3, rng)
    assert locked.shape == (1, 4, 6)
    a = zoneout_mask((5, 5), 0.5, np.random.default_rng(9))
    b = zoneout_mask((5, 5), 0.5, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="rng"):
        zoneout_mask((2, 2), 0.1, np.random.RandomState(0))
    with pytest.raises(ValueError, match="p"):
        dropconnect_mask((2, 2), 1.0, rng)
    with pytest.raises(ValueError, match="p"):
        zoneout_mask((2, 2), -0.1, rng)
    with pytest.raises(ValueError, match="vocab"):
        embedding_dropout_mask(0, 0.1, rng)


# --------------------------------------------------------------------------- #
# optimisers: hand-computed steps
# --------------------------------------------------------------------------- #
G = [
    np.array([0.5, -1.0, 2.0]),
    np.array([-0.25, 0.75, 1.0]),
    np.array([1.0, 1.0, -3.0]),
]
P0 = np.array([1.0, -2.0, 0.5])


def run(opt, n=3, p0=P0, name="w"):
    params = {name: p0.copy()}
    for k in range(n):
        opt.step(params, {name: G[k]})
    return params[name]


def test_sgd_plain_and_weight_decay():
    np.testing.assert_allclose(run(SGD(0.1), 1), P0 - 0.1 * G[0], rtol=0, atol=1e-15)
    # golden numbers: p = [1, -2, 0.5], g = [0.5, -1, 2], lr 0.1, wd 0.01
    np.testing.assert_allclose(
        run(SGD(0.1, weight_decay=0.01), 1), [0.949, -1.898, 0.2995], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_sgd_momentum_by_hand(nesterov, wd):
    lr, mu = 0.1, 0.9
    p, buf = P0.copy(), None
    for k in range(3):
        g = G[k] + wd * p
        buf = g.copy() if buf is None else mu * buf + g
        p = p - lr * (g + mu * buf if nesterov else buf)
    got = run(SGD(lr, momentum=mu, weight_decay=wd, nesterov=nesterov))
    np.testing.assert_allclose(got, p, rtol=1e-14, atol=1e-15)
    if (
        not nesterov and wd == 0.0
    ):  # golden: p3 = p0 - lr (g1 + (mu g1 + g2) + (mu^2 g1 + mu g2 + g3))
        s = G[0] + (mu * G[0] + G[1]) + (mu * mu * G[0] + mu * G[1] + G[2])
        np.testing.assert_allclose(got, P0 - lr * s, rtol=1e-14)


def adam_by_hand(p, grads, lr, b1, b2, eps, wd, decoupled):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for k, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1**k)
        vhat = v / (1 - b2**k)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adam_by_hand(cls, wd):
    lr, betas, eps = 0.01, (0.8, 0.95), 1e-8
    got = run(cls(lr, betas=betas, eps=eps, weight_decay=wd))
    want = adam_by_hand(P0.copy(), G, lr, *betas, eps, wd, decoupled=cls is AdamW)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_adam_golden_first_step():
    # Step 1: m = 0.1 g, v = 0.001 g^2, both bias-corrected back to g and g^2,
    # so p1 = p0 - lr * g / (|g| + eps) = p0 - lr * sign(g) (to 1e-8 relative).
    got = run(Adam(0.1), 1)
    np.testing.assert_allclose(got, [0.9, -1.9, 0.4], rtol=1e-7)
    # AdamW default weight_decay 0.01: p0 * (1 - 0.1 * 0.01) first
    got = run(AdamW(0.1), 1)
    np.testing.assert_allclose(got, P0 * 0.999 - 0.1 * np.sign(G[0]), rtol=1e-7)
    # Adam's L2: g' = g + 0.5 p = [1, -2, 2.25], still sign(g') = sign(g)
    got = run(Adam(0.1, weight_decay=0.5), 1)
    np.testing.assert_allclose(got, [0.9, -1.9, 0.4], rtol=1e-7)


def test_no_decay_and_float32():
    params = {"egru.W": P0.copy(), "egru.thr": P0.copy(), "egru.bx": P0.copy()}
    grads = {k: np.zeros(3) for k in params}
    opt = AdamW(0.1, weight_decay=0.5, no_decay=("thr", ".bx"))
    opt.step(params, grads)
    np.testing.assert_allclose(params["egru.W"], P0 * 0.95)
    np.testing.assert_array_equal(params["egru.thr"], P0)
    np.testing.assert_array_equal(params["egru.bx"], P0)
    assert opt.decays("egru.W") and not opt.decays("thr") and opt.decays("egru.mythr")
    p32 = {"w": P0.astype(np.float32)}
    Adam(0.01).step(p32, {"w": G[0]})  # float64 gradient into a float32 parameter
    assert p32["w"].dtype == np.float32
    np.testing.assert_allclose(p32["w"], P0 - 0.01 * np.sign(G[0]), rtol=1e-6)


def test_bounds_projection():
    params = {
        "egru.thr": np.array([0.05, 0.5, 0.95]),
        "l2.thr": np.array([0.5]),
        "readout.W": np.array([5.0, -5.0]),
        "egru.mythr": np.array([-3.0]),
        "frozen.thr": np.array([-1.0, 2.0]),
    }
    grads = {
        "egru.thr": np.array([1.0, 0.0, -1.0]),
        "l2.thr": np.array([0.0]),
        "readout.W": np.array([0.0, 0.0]),
        "egru.mythr": np.array([0.0]),
    }
    opt = SGD(0.1, bounds={".thr": (0.01, 0.9), "readout.W": (None, 1.0)})
    opt.step(params, grads)
    np.testing.assert_allclose(params["egru.thr"], [0.01, 0.5, 0.9])
    np.testing.assert_array_equal(params["readout.W"], [1.0, -5.0])
    np.testing.assert_array_equal(
        params["egru.mythr"], [-3.0]
    )  # not a dot-aligned suffix
    np.testing.assert_array_equal(
        params["frozen.thr"], [0.01, 0.9]
    )  # projected without a grad
    opt.project(params)  # idempotent
    np.testing.assert_allclose(params["egru.thr"], [0.01, 0.5, 0.9])
    amb = SGD(0.1, bounds={"thr": (0.0, 1.0), "egru.thr": (0.1, 1.0)})
    before = params["egru.thr"].copy()
    with pytest.raises(ValueError, match="bounds"):
        amb.step(params, {"egru.thr": np.ones(3)})
    np.testing.assert_array_equal(params["egru.thr"], before)  # nothing touched
    with pytest.raises(ValueError, match="bounds"):
        SGD(0.1, bounds={"thr": (1.0, 0.0)})
    with pytest.raises(ValueError, match="bounds"):
        SGD(0.1, bounds={"thr": 1.0})


def test_optimizer_errors():
    params = {"a": np.ones(3), "b": np.ones(2)}
    opt = Adam(0.1)
    with pytest.raises(ValueError, match="grads"):
        opt.step(params, {"c": np.ones(3)})
    with pytest.raises(ValueError, match="grads"):
        opt.step(params, {"a": np.ones(2)})
    with pytest.raises(ValueError, match="grads"):  # nothing applied, not even to "a"
        opt.step(params, {"a": np.ones(3), "b": np.array([1.0, np.nan])})
    np.testing.assert_array_equal(params["a"], 1.0)
    assert opt.num_steps == 0 and not opt.state
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="params"):
        opt.step({"a": ro}, {"a": np.ones(3)})
    with pytest.raises(TypeError, match="params"):
        opt.step({"a": np.ones(3, dtype=int)}, {"a": np.ones(3)})
    with pytest.raises(ValueError, match="lr"):
        SGD(0.0)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0
    with pytest.raises(TypeError, match="lr"):
        SGD("0.1")
    with pytest.raises(ValueError, match="momentum"):
        SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW(0.1, weight_decay=-0.1)
    with pytest.raises(ValueError, match="betas"):
        Adam(0.1, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas"):
        Adam(0.1, betas=0.9)
    with pytest.raises(TypeError, match="no_decay"):
        Adam(0.1, no_decay=(1,))
    assert isinstance(opt, Optimizer)


def test_frozen_parameter_untouched():
    params = {"a": np.ones(3), "b": np.ones(2)}
    opt = SGD(0.1, momentum=0.9)
    opt.step(params, {"a": np.ones(3)})
    np.testing.assert_array_equal(params["b"], 1.0)
    assert "b" not in opt.state


# --------------------------------------------------------------------------- #
# state dict
# --------------------------------------------------------------------------- #
def hdf5_round_trip(d, path):
    """What a checkpoint does: every entry becomes an HDF5 dataset and is read back."""
    import h5py  # a dependency of evsim (checkpoints)

    with h5py.File(path, "w") as f:
        for k, v in d.items():
            f.create_dataset(k, data=v)
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def make_problem(dtype):
    rng = np.random.default_rng(7)
    params = {
        "egru.W": rng.standard_normal((4, 6)).astype(dtype),
        "egru.thr": rng.uniform(0.1, 0.5, 4).astype(dtype),
        "readout.W": rng.standard_normal((4, 2)).astype(dtype),
    }
    grads = [
        {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        for _ in range(6)
    ]
    return params, grads


OPTS = [
    lambda: SGD(
        0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, bounds={"thr": (0.1, 0.4)}
    ),
    lambda: Adam(0.01, weight_decay=1e-3, no_decay="thr", bounds={"thr": (0.1, 0.4)}),
    lambda: AdamW(
        0.01, betas=(0.85, 0.99), no_decay=("thr",), bounds={"thr": (0.1, None)}
    ),
]


@pytest.mark.parametrize("make_opt", OPTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_resume_bit_for_bit(make_opt, dtype, tmp_path):
    params, grads = make_problem(dtype)
    ref = {k: v.copy() for k, v in params.items()}
    opt = make_opt()
    for k in range(6):
        if k == 3:
            opt.lr = opt.lr * 0.5  # a schedule; the changed lr is part of the state
        opt.step(ref, grads[k])

    opt = make_opt()
    for k in range(3):
        opt.step(params, grads[k])
    opt.lr = opt.lr * 0.5
    saved = hdf5_round_trip(opt.state_dict(), tmp_path / "opt.h5")
    saved_params = hdf5_round_trip(params, tmp_path / "params.h5")
    for v in opt.state_dict().values():  # plain arrays and python scalars
        assert isinstance(v, (np.ndarray, int, float))
    opt2 = make_opt()
    opt2.load_state_dict(saved)
    assert opt2.state_dict().keys() == opt.state_dict().keys()
    for k in range(3, 6):
        opt2.step(saved_params, grads[k])
    for name, want in ref.items():
        assert saved_params[name].dtype == want.dtype
        assert saved_params[name].tobytes() == want.tobytes(), name


def test_state_dict_is_a_copy_and_checked():
    params, grads = make_problem(np.float64)
    opt = Adam(0.01)
    opt.step(params, grads[0])
    d = opt.state_dict()
    assert d["num_steps"] == 1 and d["state:egru.W:step"] == 1
    assert d["lr"] == 0.01 and d["beta1"] == 0.9
    opt.step(params, grads[1])
    assert d["state:egru.W:step"] == 1
    assert not np.shares_memory(
        d["state:egru.W:exp_avg"], opt.state["egru.W"]["exp_avg"]
    )
    with pytest.raises(ValueError, match="d"):
        SGD(0.1, momentum=0.9).load_state_dict(d)  # another optimiser's state
    bad = dict(d)
    bad["state:egru.W:foo"] = np.zeros(1)
    with pytest.raises(ValueError, match="foo"):
        Adam(0.01).load_state_dict(bad)
    bad = dict(d)
    del bad["state:egru.W:exp_avg_sq"]
    fresh = Adam(0.5)
    with pytest.raises(ValueError, match="egru.W"):
        fresh.load_state_dict(bad)
    assert fresh.lr == 0.5 and not fresh.state  # unchanged after a failed load
    bad = dict(d)
    del bad["lr"]
    with pytest.raises(ValueError, match="lr"):
        Adam(0.01).load_state_dict(bad)
    loaded = Adam(0.5)
    loaded.load_state_dict(d)
    shape_bad = {
        "egru.W": np.zeros((2, 2)),
        **{k: v for k, v in params.items() if k != "egru.W"},
    }
    with pytest.raises(ValueError, match="egru.W"):
        loaded.step(shape_bad, {"egru.W": np.zeros((2, 2))})


# --------------------------------------------------------------------------- #
# gradient clipping
# --------------------------------------------------------------------------- #
def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0], [4.0]])}
    total = clip_grad_norm(grads, 1.0)
    assert total == 5.0
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(grads["a"], [3.0 * coef, 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads["b"], [[0.0], [4.0 * coef]], rtol=1e-15)
    g32 = {"a": np.array([0.3, 0.4], dtype=np.float32)}
    assert clip_grad_norm(g32, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g32["a"], np.array([0.3, 0.4], dtype=np.float32))
    assert g32["a"].dtype == np.float32
    assert clip_grad_norm({"z": np.zeros(4)}, 1.0) == 0.0
    assert clip_grad_norm({}, 1.0) == 0.0
    with pytest.raises(ValueError, match="grads"):
        clip_grad_norm({"a": np.array([np.inf])}, 1.0)
    nan = {"a": np.array([np.nan, 1.0])}
    assert math.isnan(clip_grad_norm(nan, 1.0, error_if_nonfinite=False))
    assert nan["a"][1] == 1.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


# --------------------------------------------------------------------------- #
# against torch, when it is installed
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "ours, name, kwargs",
    [
        (
            lambda: SGD(0.1, momentum=0.9, weight_decay=0.01),
            "SGD",
            {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
        ),
        (
            lambda: SGD(0.1, momentum=0.9, nesterov=True),
            "SGD",
            {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        ),
        (
            lambda: Adam(0.01, weight_decay=0.1),
            "Adam",
            {"lr": 0.01, "weight_decay": 0.1},
        ),
        (
            lambda: AdamW(0.01, weight_decay=0.1),
            "AdamW",
            {"lr": 0.01, "weight_decay": 0.1},
        ),
    ],
)
def test_against_torch(ours, name, kwargs):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.tensor(P0, dtype=torch.float64))
    topt = getattr(torch.optim, name)([p], **kwargs)
    for g in G:
        p.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
    got = run(ours())
    np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-12, atol=1e-14)
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([4.0])}
    ts = [torch.tensor(v, requires_grad=True) for v in grads.values()]
    for t in ts:
        t.grad = t.detach().clone()
    ttotal = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    assert clip_grad_norm(grads, 1.0) == pytest.approx(float(ttotal))
    np.testing.assert_allclose(grads["a"], ts[0].grad.numpy(), rtol=1e-12)
