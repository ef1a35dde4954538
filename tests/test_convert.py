"""Conversion to and from torch.nn.GRU weights: round trips, a NumPy
re-implementation of torch's GRU equations, and torch itself when installed."""

import numpy as np
import pytest

from evsim import gru_forward
from evsim.convert import from_torch_gru, to_torch_gru


def _evsim_weights(I=3, H=4, seed=0, dtype=np.float64):  # noqa: E741
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(0, 0.5, s).astype(dtype) for s in ((I, 3 * H), (H, 3 * H),
                                                                  (3 * H,), (3 * H,)))


def _torch_gru_numpy(x, sd, h0):
    """torch.nn.GRU (one layer, time-major) written out from its documentation:

        r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    with weight_ih_l0 = [W_ir; W_iz; W_in] (3H, I), weight_hh_l0 = [W_hr; W_hz; W_hn],
    bias_ih_l0 = [b_ir; b_iz; b_in], bias_hh_l0 = [b_hr; b_hz; b_hn].
    """
    Wi, Wh, bi, bh = (sd[k] for k in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                      "bias_hh_l0"))
    H = Wh.shape[1]
    sl = {"r": slice(0, H), "z": slice(H, 2 * H), "n": slice(2 * H, 3 * H)}

    def sig(u):
        return 1 / (1 + np.exp(-u))

    h = h0.copy()
    out = np.zeros(x.shape[:2] + (H,))
    for t in range(x.shape[0]):
        gi = x[t] @ Wi.T + bi
        gh = h @ Wh.T + bh
        r = sig(gi[:, sl["r"]] + gh[:, sl["r"]])
        z = sig(gi[:, sl["z"]] + gh[:, sl["z"]])
        n = np.tanh(gi[:, sl["n"]] + r * gh[:, sl["n"]])
        h = (1 - z) * n + z * h
        out[t] = h
    return out, h


def test_round_trip_evsim_torch_evsim():
    W, R, bx, br = _evsim_weights()
    sd = to_torch_gru(W, R, bx, br)
    assert sd["weight_ih_l0"].shape == (12, 3) and sd["weight_hh_l0"].shape == (12, 4)
    assert sd["bias_ih_l0"].shape == sd["bias_hh_l0"].shape == (12,)
    assert all(a.flags.c_contiguous for a in sd.values())
    back = from_torch_gru(sd)
    for a, b in zip(back, (W, R, bx, br), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.flags.c_contiguous and a.dtype == b.dtype


def test_round_trip_torch_evsim_torch_and_block_order():
    rng = np.random.default_rng(1)
    H, In = 3, 2
    sd = {"weight_ih_l0": rng.normal(size=(3 * H, In)), "weight_hh_l0": rng.normal(size=(3 * H, H)),
          "bias_ih_l0": rng.normal(size=3 * H), "bias_hh_l0": rng.normal(size=3 * H)}
    W, R, bx, br = from_torch_gru(sd)
    # torch r block -> evsim r block (second), torch z -> evsim first
    np.testing.assert_array_equal(W[:, :H], sd["weight_ih_l0"][H:2 * H].T)
    np.testing.assert_array_equal(W[:, H:2 * H], sd["weight_ih_l0"][:H].T)
    np.testing.assert_array_equal(R[:, 2 * H:], sd["weight_hh_l0"][2 * H:].T)
    np.testing.assert_array_equal(br[:H], sd["bias_hh_l0"][H:2 * H])
    again = to_torch_gru(W, R, bx, br)
    for k in sd:
        np.testing.assert_array_equal(again[k], sd[k])


def test_input_forms_and_keys():
    W, R, bx, br = _evsim_weights(dtype=np.float32)
    sd = to_torch_gru(W, R, bx, br, layer=2, suffix="_reverse")
    assert set(sd) == {"weight_ih_l2_reverse", "weight_hh_l2_reverse", "bias_ih_l2_reverse",
                       "bias_hh_l2_reverse"}
    prefixed = {"rnn." + k: v for k, v in sd.items()}
    for got in (from_torch_gru(sd, layer=2, suffix="_reverse"),
                from_torch_gru(prefixed, prefix="rnn.", layer=2, suffix="_reverse"),
                from_torch_gru(list(sd.values()))):
        for a, b in zip(got, (W, R, bx, br), strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == np.float32
    # no biases (torch.nn.GRU(bias=False)) and dtype conversion
    nb = from_torch_gru({k: v for k, v in sd.items() if "weight" in k}, layer=2,
                        suffix="_reverse", dtype=np.float64)
    assert nb[0].dtype == np.float64 and not nb[2].any() and not nb[3].any()


def test_conversion_errors():
    W, R, bx, br = _evsim_weights()
    with pytest.raises(ValueError, match=r"\bW\b"):
        to_torch_gru(W[:, :-1], R, bx, br)
    with pytest.raises(ValueError, match=r"\bR\b"):
        to_torch_gru(W, R[:, :-1], bx, br)
    with pytest.raises(ValueError, match=r"\bbr\b"):
        to_torch_gru(W, R, bx, br[:-1])
    with pytest.raises(TypeError, match=r"\bW\b"):
        to_torch_gru(W.astype(int), R, bx, br)
    sd = to_torch_gru(W, R, bx, br)
    with pytest.raises(ValueError, match=r"weight_ih_l1"):
        from_torch_gru(sd, layer=1)
    with pytest.raises(ValueError, match=r"\bweight_ih\b"):
        from_torch_gru(dict(sd, weight_ih_l0=sd["weight_ih_l0"][:-1]))
    with pytest.raises(ValueError, match=r"\bbias_hh\b"):
        from_torch_gru(dict(sd, bias_hh_l0=sd["bias_hh_l0"][:-1]))


@pytest.mark.parametrize("backend", ["reference", "dense", "cpu"])
def test_gru_forward_equals_torch_equations(backend):
    rng = np.random.default_rng(2)
    T, B, In, H = 6, 3, 3, 5
    sd = {"weight_ih_l0": rng.normal(0, 0.6, (3 * H, In)),
          "weight_hh_l0": rng.normal(0, 0.6, (3 * H, H)),
          "bias_ih_l0": rng.normal(0, 0.3, 3 * H), "bias_hh_l0": rng.normal(0, 0.3, 3 * H)}
    x = rng.normal(size=(T, B, In))
    h0 = rng.normal(0, 0.5, (B, H))
    expect, h_last = _torch_gru_numpy(x, sd, h0)
    res = gru_forward(x, *from_torch_gru(sd), h0, backend=backend)
    np.testing.assert_allclose(res.y, expect, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.h_last, h_last, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_forward_equals_torch(dtype):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    T, B, In, H = 5, 2, 3, 6
    gru = torch.nn.GRU(In, H).to(torch.float32 if dtype == np.float32 else torch.float64)
    x = np.random.default_rng(3).normal(size=(T, B, In)).astype(dtype)
    h0 = np.random.default_rng(4).normal(0, 0.5, (B, H)).astype(dtype)
    with torch.no_grad():
        out, hn = gru(torch.from_numpy(x), torch.from_numpy(h0)[None])
    W, R, bx, br = from_torch_gru(gru)  # module, tensors with requires_grad
    assert W.dtype == dtype
    res = gru_forward(x, W, R, bx, br, h0, backend="cpu")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(res.y, out.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(res.h_last, hn[0].numpy(), rtol=tol, atol=tol)
    # and back: evsim weights loaded into a fresh torch GRU give the same outputs
    gru2 = torch.nn.GRU(In, H).to(gru.weight_hh_l0.dtype)
    gru2.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_gru(W, R, bx, br).items()})
    with torch.no_grad():
        out2, _ = gru2(torch.from_numpy(x), torch.from_numpy(h0)[None])
    np.testing.assert_array_equal(out2.numpy(), out.numpy())
