"""evsim.torch.EGRU: gradients against the EGRU written in torch ops (autograd with
the same surrogate), gradcheck where the maths is smooth, loading torch.nn.GRU
weights, batch_first, RNG reproducibility and argument errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import evsim.torch as et  # noqa: E402
from evsim.convert import from_torch_gru  # noqa: E402

DAMP, SUPPORT = 0.7, 1.0


class _Spike(torch.autograd.Function):
    """Heaviside (strict) with evsim's surrogate derivative."""

    @staticmethod
    def forward(ctx, u, damp, support):
        ctx.save_for_backward(u)
        ctx.damp, ctx.support = damp, support
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        (u,) = ctx.saved_tensors
        return g * ctx.damp * torch.clamp(1 - ctx.support * u.abs(), min=0), None, None


def torch_egru(x, wih, whh, bih, bhh, thr, h0=None, y0=None, lengths=None, damp=DAMP,
               support=SUPPORT, keep=None):
    """The EGRU of DESIGN.md section 1 in torch ops, torch's layout (r, z, n).
    ``keep``: evaluation-mode zoneout factor (1 - p)."""
    T, B, _ = x.shape
    H = whh.shape[1]
    h = x.new_zeros(B, H) if h0 is None else h0
    y = x.new_zeros(B, H) if y0 is None else y0
    outs = []
    for t in range(T):
        gi = x[t] @ wih.T + bih
        gh = y @ whh.T + bhh
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        v = z * h + (1 - z) * n
        if keep is not None:
            v = keep * v + (1 - keep) * h
        c = _Spike.apply(v - thr, damp, support)
        y_new = c * v
        h_new = v - c * thr
        if lengths is not None:
            alive = (t < lengths).to(x.dtype)[:, None]
            y_new = alive * y_new
            h_new = alive * h_new + (1 - alive) * h
            y = alive * y_new + (1 - alive) * y
        else:
            y = y_new
        h = h_new
        outs.append(y_new)
    return torch.stack(outs), h, y


def _module(I=4, H=6, seed=0, **kw):
    torch.manual_seed(seed)
    m = et.EGRU(I, H, dtype=torch.float64, **kw)
    with torch.no_grad():  # larger weights: a mix of events, silence and the band
        for p in (m.weight_ih_l0, m.weight_hh_l0):
            p.mul_(3.0)
        m.threshold.copy_(torch.linspace(0.05, 0.6, H, dtype=torch.float64))
    return m


def _grads(m, x, hx, lengths, keep=None):
    """Gradients of a random linear loss on (output, h_n, y_n) through the module
    and through the torch reference."""
    T, B, _ = x.shape
    H = m.hidden_size
    g = torch.Generator().manual_seed(5)
    co = torch.randn(T, B, H, dtype=torch.float64, generator=g)
    ch = torch.randn(B, H, dtype=torch.float64, generator=g)
    cy = torch.randn(B, H, dtype=torch.float64, generator=g)
    leaves = [x] + list(m.parameters()) + ([] if hx is None else list(hx))
    out, (h_n, y_n) = m(x, hx, lengths=lengths)
    loss = (out * co).sum() + (h_n[0] * ch).sum() + (y_n[0] * cy).sum()
    got = torch.autograd.grad(loss, leaves)
    h0, y0 = (None, None) if hx is None else hx
    lt = None if lengths is None else torch.as_tensor(lengths)
    o2, h2, y2 = torch_egru(x, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0,
                            m.threshold, h0, y0, lt, m.damp, m.support, keep)
    loss2 = (o2 * co).sum() + (h2 * ch).sum() + (y2 * cy).sum()
    want = torch.autograd.grad(loss2, leaves)
    return (out, h_n[0], y_n[0]), (o2, h2, y2), got, want, m.last_stats


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_gradients_match_torch_autograd(with_hx, with_lengths):
    T, B, I, H = 7, 3, 4, 6
    m = _module(I, H)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=g, requires_grad=True)
    hx = None
    if with_hx:
        hx = (0.3 * torch.randn(B, H, dtype=torch.float64, generator=g),
              0.5 * torch.randn(B, H, dtype=torch.float64, generator=g))
        hx = tuple(t.requires_grad_() for t in hx)
    lengths = [7, 4, 1] if with_lengths else None
    outs, refs, got, want, stats = _grads(m, x, hx, lengths)
    for a, b in zip(outs, refs):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=0, atol=1e-12)
    names = ["input"] + [n for n, _ in m.named_parameters()] + ["h0", "y0"]
    for name, a, b in zip(names, got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-9, err_msg=name)
    # the case exercises events, silence and the surrogate band
    assert 0.05 < stats["activity"] < 0.95
    assert {"bwd_macs", "bwd_macs_event", "bwd_macs_dense", "backward_sparsity"} <= set(stats)
    assert stats["fwd_macs_event"] < stats["fwd_macs_dense"]


def test_gradients_match_with_eval_zoneout_and_trace_free_paths():
    T, B, I, H = 5, 2, 4, 6
    m = _module(I, H, zoneout=0.25, dropconnect=0.3).eval()
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    outs, refs, got, want, _ = _grads(m, x, None, None, keep=0.75)
    for a, b in zip(outs + got, refs + want):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=0, atol=1e-9)
    with torch.no_grad():  # evaluation without gradients: same numbers
        out, _ = m(x)
    np.testing.assert_allclose(out.numpy(), outs[0].detach().numpy(), rtol=0, atol=1e-12)


def _smooth_module(I, H, seed=0):
    """Thresholds far from every membrane value: units 0, 2, .. fire every step
    with v - thr > 1 / support, the others never fire with thr - v > 1 / support.
    The Heaviside is flat there and the surrogate zero, so the module's
    gradient is the true derivative and finite differences can check it."""
    m = _module(I, H, seed)
    with torch.no_grad():
        m.threshold.copy_(torch.tensor([-2.5 if k % 2 == 0 else 3.0 for k in range(H)],
                                       dtype=torch.float64))
    return m


def test_gradcheck_smooth_configuration():
    T, B, I, H = 4, 2, 3, 4
    m = _smooth_module(I, H)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=g, requires_grad=True)
    h0 = (0.5 * torch.rand(B, H, dtype=torch.float64, generator=g) - 0.25).requires_grad_()
    y0 = torch.randn(B, H, dtype=torch.float64, generator=g).requires_grad_()
    params = list(m.parameters())

    def f(x, wih, whh, bih, bhh, thr, h0, y0):
        cfg = dict(damp=m.damp, support=m.support, training=True, zoneout=0.0,
                   dropconnect=0.0, trace_alpha=None, lengths=None, rng=None, backend="cpu",
                   stats={}, grad=True)
        return et._EGRUFunction.apply(x, wih, whh, bih, bhh, thr, h0, y0, cfg)

    out = f(x, *params, h0, y0)[0]
    fired = (out != 0).numpy()
    assert fired[:, :, 0::2].all() and not fired[:, :, 1::2].any()
    assert torch.autograd.gradcheck(f, (x, *params, h0, y0), eps=1e-6, atol=1e-7)


def test_load_state_dict_from_torch_gru():
    torch.manual_seed(3)
    gru = torch.nn.GRU(5, 7, dtype=torch.float64)
    m = et.EGRU(5, 7, dtype=torch.float64)
    thr = m.threshold.detach().clone()
    missing, unexpected = m.load_state_dict(gru.state_dict(), strict=False)
    assert missing == ["threshold"] and unexpected == []
    for name, p in gru.named_parameters():
        assert torch.equal(getattr(m, name), p)
    assert torch.equal(m.threshold, thr)
    # the weights land in the gates evsim.convert puts them in
    W, R, bx, br = from_torch_gru(gru)
    for got, want in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0),
                         (W, R, bx, br)):
        np.testing.assert_array_equal(et._to_evsim(got.detach().numpy()), want)
        np.testing.assert_array_equal(et._to_torch(want), got.detach().numpy())
    # and back: the module's state dict loads into a GRU
    gru2 = torch.nn.GRU(5, 7, dtype=torch.float64)
    gru2.load_state_dict({k: v for k, v in m.state_dict().items() if k != "threshold"})
    # An EGRU is not a GRU (its recurrence reads y, its state is v - thr), but
    # with zero recurrent weights and thresholds far below v (every unit fires,
    # y = v) one step of both is the same function of the input: the gates line up.
    with torch.no_grad():
        gru.weight_hh_l0.zero_()
        m.weight_hh_l0.zero_()
        m.threshold.fill_(-10.0)
    x = torch.randn(1, 3, 5, dtype=torch.float64)
    want, _ = gru(x)
    got, _ = m(x)
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), atol=1e-12)


def test_batch_first_and_float32():
    T, B, I, H = 5, 3, 4, 6
    m = _module(I, H)
    mb = _module(I, H, batch_first=True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, (h, y) = m(x)
    outb, (hb, yb) = mb(x.transpose(0, 1))
    assert outb.shape == (B, T, H) and hb.shape == (1, B, H)
    np.testing.assert_array_equal(outb.transpose(0, 1).detach().numpy(),
                                  out.detach().numpy())
    np.testing.assert_array_equal(hb.detach().numpy(), h.detach().numpy())
    m32 = _module(I, H).float()
    x32 = x.float().requires_grad_()
    out32, _ = m32(x32)
    assert out32.dtype == torch.float32
    out32.sum().backward()
    assert x32.grad.dtype == torch.float32 and m32.threshold.grad.dtype == torch.float32
    np.testing.assert_allclose(out32.detach().numpy(), out.detach().numpy(), atol=1e-4)


def test_hx_forms_and_continuation():
    T, B, I, H = 6, 2, 4, 6
    m = _module(I, H)
    x = torch.randn(T, B, I, dtype=torch.float64)
    full, (h, y) = m(x)
    a, (h1, y1) = m(x[:3])
    b, (h2, y2) = m(x[3:], (h1, y1))
    np.testing.assert_allclose(torch.cat([a, b]).detach().numpy(), full.detach().numpy(),
                               atol=1e-13)
    np.testing.assert_allclose(h2.detach().numpy(), h.detach().numpy(), atol=1e-13)
    # a single tensor is h0 (y0 zeros), (B, H) accepted as well as (1, B, H)
    o1, _ = m(x, h1)
    o2, _ = m(x, (h1[0], torch.zeros(B, H, dtype=torch.float64)))
    assert torch.equal(o1, o2)


def test_zoneout_dropconnect_reproducible_under_manual_seed():
    m = _module(4, 6, zoneout=0.3, dropconnect=0.3)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    torch.manual_seed(11)
    a, _ = m(x)
    torch.manual_seed(11)
    b, _ = m(x)
    c, _ = m(x)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_errors():
    m = _module(4, 6)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="CPU tensors only.*meta"):
        m(torch.empty(5, 2, 4, dtype=torch.float64, device="meta"))
    with pytest.raises(TypeError, match="float32 or float64.*float16"):
        m(x.half())
    with pytest.raises(TypeError, match="float32 but the input is torch.float64"):
        _module(4, 6).float()(x)
    with pytest.raises(ValueError, match="input must have shape"):
        m(x[..., :3])
    with pytest.raises(ValueError, match="input must have shape"):
        m(x[0])
    with pytest.raises(ValueError, match="h0 must have shape"):
        m(x, torch.zeros(3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="pair"):
        m(x, (None, None, None))
    with pytest.raises(ValueError, match="lengths"):
        m(x, lengths=[9, 2])
    with pytest.raises(ValueError, match="hidden_size"):
        et.EGRU(4, 0)
    with pytest.raises(ValueError, match="zoneout"):
        et.EGRU(4, 3, zoneout=1.0)
    with pytest.raises(TypeError, match="dtype"):
        et.EGRU(4, 3, dtype=torch.float16)


def test_cuda_device_is_refused(monkeypatch):
    """A parameter on a GPU (mocked: the device check reads ``tensor.device``)."""
    m = _module(4, 6)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    real = torch.Tensor.device

    def fake(self):
        return torch.device("cuda", 0) if self is m.weight_hh_l0 else real.__get__(self)

    monkeypatch.setattr(torch.Tensor, "device", property(fake))
    with pytest.raises(ValueError, match="weight_hh_l0 is on cuda:0"):
        m(x)


def test_no_grad_saves_nothing():
    m = _module(4, 6)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    with torch.no_grad():
        out, _ = m(x)
    assert out.grad_fn is None and "bwd_macs" not in m.last_stats
    out, _ = m(x)
    out.sum().backward()
    assert "bwd_macs" in m.last_stats


def test_thresholds_clamped_only_on_request():
    m = _module(4, 6)
    with torch.no_grad():
        m.threshold[0] = -1.0
    m(torch.randn(3, 1, 4, dtype=torch.float64))
    assert m.threshold[0] == -1.0
    m.clamp_thresholds_()
    assert m.threshold.min() >= 0.01


def test_trace_output_gradients():
    T, B, I, H = 6, 2, 4, 6
    m = _module(I, H, trace_alpha=0.8)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    c = torch.randn(T, B, H, dtype=torch.float64)
    out, _ = m(x)
    got = torch.autograd.grad((out * c).sum(), [x] + list(m.parameters()))
    y, _, _ = torch_egru(x, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0,
                         m.threshold)
    tr, prev = [], torch.zeros(B, H, dtype=torch.float64)
    for t in range(T):
        prev = 0.8 * prev + 0.2 * y[t]
        tr.append(prev)
    tr = torch.stack(tr)
    np.testing.assert_allclose(out.detach().numpy(), tr.detach().numpy(), atol=1e-12)
    want = torch.autograd.grad((tr * c).sum(), [x] + list(m.parameters()))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-9)
