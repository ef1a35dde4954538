"""evsim's EGRU as a PyTorch module: :class:`EGRU`.

The parameters have the names and layouts of ``torch.nn.GRU`` (one layer):
``weight_ih_l0`` (3H, I), ``weight_hh_l0`` (3H, H), ``bias_ih_l0``,
``bias_hh_l0`` (3H,), gate blocks ordered r, z, n, plus ``threshold`` (H,). So
``egru.load_state_dict(gru.state_dict(), strict=False)`` starts an EGRU from a
trained GRU (the thresholds keep their initial values).

The forward pass and back-propagation through time run in evsim's
event-driven kernels (:func:`evsim.egru_forward`, :func:`evsim.egru_backward`)
through one ``torch.autograd.Function``: no torch operation touches the
recurrence. The function converts the parameters to evsim's layout (z, r, g
blocks, ``W`` (I, 3H); see :mod:`evsim.convert`) on the way in and the
gradients back to torch's layout on the way out. CPU tensors of float32 or
float64 only.

``import evsim.torch`` needs torch (``pip install evsim[torch]``); the rest of
evsim does not.
"""

import numpy as np
import torch
from torch import nn

from evsim import config
from evsim.convert import _TORCH_TO_EVSIM
from evsim.functional import egru_backward, egru_forward

__all__ = ["EGRU"]

_DTYPES = (torch.float32, torch.float64)
_PARAMS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "threshold")


# --------------------------------------------------------------------------
# layout conversion: one copy per array


def _to_evsim(a):
    """torch gate-major (3H, K) or (3H,) -> evsim (K, 3H) or (3H,), blocks
    r, z, n -> z, r, g; a new C-contiguous array (one copy)."""
    H = a.shape[0] // 3
    out = np.empty(a.shape[::-1], a.dtype)
    for k in range(3):
        j = _TORCH_TO_EVSIM[k]
        out[..., j * H:(j + 1) * H] = a[k * H:(k + 1) * H].T
    return out


def _to_torch(a):
    """evsim (K, 3H) or (3H,) -> torch (3H, K) or (3H,); inverse of :func:`_to_evsim`
    (the block map is its own inverse)."""
    H = a.shape[-1] // 3
    out = np.empty(a.shape[::-1], a.dtype)
    for k in range(3):
        j = _TORCH_TO_EVSIM[k]
        out[j * H:(j + 1) * H] = a[..., k * H:(k + 1) * H].T
    return out


def _numpy(t):
    """A C-contiguous NumPy view of a CPU tensor (a copy only when it is not contiguous)."""
    return t.detach().contiguous().numpy()


def _tensor(a):
    """A tensor sharing memory with a writable NumPy array (copied if read-only)."""
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a)


# --------------------------------------------------------------------------


class _EGRUFunction(torch.autograd.Function):
    """(x, weight_ih, weight_hh, bias_ih, bias_hh, threshold, h0, y0, cfg) ->
    (output, h_n, y_n), time-major, with evsim's forward and sparse BPTT.

    ``cfg`` is a dict of the keyword arguments of :func:`evsim.egru_forward`
    plus ``stats`` (a dict the backward fills with its counters) and ``grad``
    (whether autograd will call the backward: save for it). ``needs_input_grad``
    cannot tell: it is True under ``torch.no_grad()`` too."""

    @staticmethod
    def forward(ctx, x, wih, whh, bih, bhh, thr, h0, y0, cfg):
        stats = cfg["stats"]
        kwargs = {k: v for k, v in cfg.items() if k not in ("stats", "grad")}
        grad = cfg["grad"]
        training = kwargs.pop("training")
        if not training:  # evaluation mode: no DropConnect, zoneout by its expectation
            kwargs["dropconnect"] = 0.0
            if grad and kwargs["zoneout"] > 0:
                # saved state for the backward needs evsim's training mode: the
                # expectation v = (1 - p) v + p h as a constant keep mask
                p = kwargs.pop("zoneout")
                kwargs["zoneout_mask"] = np.full((x.shape[0], x.shape[1], thr.shape[0]),
                                                 1 - p, _numpy(x).dtype)
            training = grad
        res = egru_forward(_numpy(x), _to_evsim(_numpy(wih)), _to_evsim(_numpy(whh)),
                           _to_evsim(_numpy(bih)), _to_evsim(_numpy(bhh)), _numpy(thr),
                           None if h0 is None else _numpy(h0),
                           None if y0 is None else _numpy(y0), training=training, **kwargs)
        stats.clear()
        s = res.stats
        stats.update(activity=s["activity"], events=s["events"], fwd_macs=s["fwd_macs"],
                     fwd_macs_event=s["fwd_macs_event"], fwd_macs_dense=s["fwd_macs_dense"],
                     input_macs=s["input_macs"], unit_steps=s["unit_steps"])
        ctx.result = res if res.saved is not None else None
        ctx.stats = stats
        ctx.trace = res.trace is not None
        ctx.h0 = h0 is not None
        ctx.y0 = y0 is not None
        out = res.trace if ctx.trace else res.y
        # the outputs are new tensors sharing nothing the backward reads
        return _tensor(np.array(out)), _tensor(np.array(res.h_last)), \
            _tensor(np.array(res.y_last))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dh, dy):
        res = ctx.result
        if res is None:
            raise RuntimeError("evsim.torch.EGRU: the forward pass saved nothing for the "
                               "backward pass (it ran without gradients)")
        dout = _numpy(dout)
        grads = egru_backward(res, None if ctx.trace else dout, _numpy(dh), dy_last=_numpy(dy),
                              dtrace=dout if ctx.trace else None)
        s = grads.stats
        ctx.stats.update(bwd_macs=s["bwd_macs"], bwd_macs_event=s["bwd_macs_event"],
                         bwd_macs_dense=s["bwd_macs_dense"],
                         backward_sparsity=s["backward_sparsity"],
                         backward_active=s["backward_active"])
        return (torch.from_numpy(grads["x"]), torch.from_numpy(_to_torch(grads["W"])),
                torch.from_numpy(_to_torch(grads["R"])),
                torch.from_numpy(_to_torch(grads["bx"])),
                torch.from_numpy(_to_torch(grads["br"])), torch.from_numpy(grads["thr"]),
                torch.from_numpy(grads["h0"]) if ctx.h0 else None,
                torch.from_numpy(grads["y0"]) if ctx.y0 else None, None)


class EGRU(nn.Module):
    """An event-based GRU layer with the parameters of ``torch.nn.GRU``.

    Parameters
    ----------
    input_size, hidden_size : I and H.
    batch_first : inputs and outputs are (B, T, .) instead of (T, B, .).
    damp, support : surrogate gradient ``damp * max(0, 1 - support |v - thr|)``.
    zoneout : probability of keeping the old state per unit and step (training:
        random masks; evaluation: the expectation).
    dropconnect : probability of dropping each recurrent weight in training.
    thr_mean : mean of the Beta(10 m, 10 (1 - m)) initialisation of ``threshold``.
    trace_alpha : when given, ``output`` is the output trace
        ``tr_t = alpha tr_{t-1} + (1 - alpha) y_t`` instead of the events ``y``.

    Parameters (``nn.Parameter``) are ``weight_ih_l0`` (3H, I), ``weight_hh_l0``
    (3H, H), ``bias_ih_l0``, ``bias_hh_l0`` (3H,), gate order r, z, n as in
    ``torch.nn.GRU`` and initialised like it, and ``threshold`` (H,). Keep the
    thresholds in a valid range with :meth:`clamp_thresholds_` after an
    optimiser step; ``forward`` never changes parameters.

    Zoneout and DropConnect masks come from a NumPy generator seeded from
    torch's global generator, so ``torch.manual_seed`` makes runs reproducible.

    After each call, :attr:`last_stats` holds the counters of the forward pass
    (``activity``, ``events``, ``fwd_macs`` done, ``fwd_macs_event`` needed by
    the event-driven path, ``fwd_macs_dense``), and after ``backward`` those of
    BPTT (``bwd_macs``, ``bwd_macs_event``, ``bwd_macs_dense``,
    ``backward_sparsity``).
    """

    def __init__(self, input_size, hidden_size, *, batch_first=False, damp=0.7, support=1.0,
                 zoneout=0.0, dropconnect=0.0, thr_mean=0.3, trace_alpha=None, dtype=None):
        super().__init__()
        for name, n in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
        if not 0.0 < thr_mean < 1.0:
            raise ValueError(f"thr_mean must be in (0, 1), got {thr_mean}")
        for name, p in (("zoneout", zoneout), ("dropconnect", dropconnect)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if damp < 0 or support <= 0:
            raise ValueError(f"damp must be >= 0 and support > 0, got damp={damp}, "
                             f"support={support}")
        if trace_alpha is not None and not 0.0 <= trace_alpha <= 1.0:
            raise ValueError(f"trace_alpha must be in [0, 1] or None, got {trace_alpha}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.batch_first = bool(batch_first)
        self.damp, self.support = float(damp), float(support)
        self.zoneout, self.dropconnect = float(zoneout), float(dropconnect)
        self.thr_mean = float(thr_mean)
        self.trace_alpha = None if trace_alpha is None else float(trace_alpha)
        H, In = hidden_size, input_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * H, In, dtype=dtype))
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * H, H, dtype=dtype))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * H, dtype=dtype))
        self.bias_hh_l0 = nn.Parameter(torch.empty(3 * H, dtype=dtype))
        self.threshold = nn.Parameter(torch.empty(H, dtype=dtype))
        self.last_stats = {}
        self.reset_parameters()

    def reset_parameters(self):
        """Weights and biases uniform in +-1/sqrt(H) (as torch.nn.GRU); thresholds
        from Beta(10 m, 10 (1 - m)), clipped to ``config.THRESHOLD_RANGE``."""
        bound = 1.0 / self.hidden_size ** 0.5
        with torch.no_grad():
            for name in _PARAMS[:4]:
                getattr(self, name).uniform_(-bound, bound)
            m = self.thr_mean
            beta = torch.distributions.Beta(torch.tensor(10 * m, dtype=torch.float64),
                                            torch.tensor(10 * (1 - m), dtype=torch.float64))
            thr = beta.sample((self.hidden_size,)).clamp(*config.THRESHOLD_RANGE)
            self.threshold.copy_(thr)

    def clamp_thresholds_(self, lo=None, hi=None):
        """Project the thresholds into [lo, hi] (default ``config.THRESHOLD_RANGE``)
        in place: call it after ``optimizer.step()``."""
        dlo, dhi = config.THRESHOLD_RANGE
        with torch.no_grad():
            self.threshold.clamp_(dlo if lo is None else lo, dhi if hi is None else hi)
        return self

    def extra_repr(self):
        s = (f"{self.input_size}, {self.hidden_size}, damp={self.damp}, "
             f"support={self.support}")
        if self.batch_first:
            s += ", batch_first=True"
        for name in ("zoneout", "dropconnect"):
            if getattr(self, name):
                s += f", {name}={getattr(self, name)}"
        if self.trace_alpha is not None:
            s += f", trace_alpha={self.trace_alpha}"
        return s

    # ---------------------------------------------------------------------

    def _check(self, name, t, shape=None):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ValueError(f"evsim.torch.EGRU runs on CPU tensors only: {name} is on "
                             f"{t.device}; move the module and inputs with .cpu()")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
        return t

    def _state(self, name, t, B, H, dtype):
        if t is None:
            return None
        self._check(name, t)
        if t.dim() == 3 and t.shape[0] == 1:
            t = t[0]
        if tuple(t.shape) != (B, H):
            raise ValueError(f"{name} must have shape (1, B, H) or (B, H) = (1, {B}, {H}), "
                             f"got {tuple(t.shape)}")
        if t.dtype != dtype:
            raise TypeError(f"{name} must have the input's dtype {dtype}, got {t.dtype}")
        return t

    def forward(self, input, hx=None, lengths=None):
        """Run the layer over a batch of sequences.

        Parameters
        ----------
        input : (T, B, I), or (B, T, I) with ``batch_first``; float32 or float64 on CPU.
        hx : initial state: a tensor h0, or a pair (h0, y0) of the state and the
            last output (each (1, B, H) or (B, H); None means zeros).
        lengths : (B,) number of valid steps per sample (sequence or tensor of
            ints); steps past a sample's end output zeros, and (h_n, y_n) is
            the state after each sample's last step.

        Returns
        -------
        output : (T, B, H) (or (B, T, H)) graded events, or the output trace
            when ``trace_alpha`` is set.
        (h_n, y_n) : (1, B, H) final state and final output, as ``torch.nn.GRU``'s h_n.
        """
        x = self._check("input", input)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"input must have shape ({'B, T' if self.batch_first else 'T, B'}"
                             f", I={self.input_size}), got {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        T, B, _ = x.shape
        H = self.hidden_size
        dtype = x.dtype
        params = []
        for name in _PARAMS:
            p = self._check(name, getattr(self, name))
            if p.dtype != dtype:
                raise TypeError(f"{name} is {p.dtype} but the input is {dtype}; convert the "
                                f"module with .to({dtype}) or the input")
            params.append(p)
        h0 = y0 = None
        if hx is not None:
            if isinstance(hx, (tuple, list)):
                if len(hx) != 2:
                    raise ValueError(f"hx must be a tensor h0 or a pair (h0, y0), got a "
                                     f"sequence of {len(hx)}")
                h0, y0 = hx
            else:
                h0 = hx
        h0 = self._state("h0", h0, B, H, dtype)
        y0 = self._state("y0", y0, B, H, dtype)
        if lengths is not None:
            lengths = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor)
                                 else lengths)
        training = self.training
        rng = None
        if training and (self.zoneout > 0 or self.dropconnect > 0):
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))
        self.last_stats = stats = {}
        grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, *params, h0, y0))
        cfg = dict(damp=self.damp, support=self.support, training=training,
                   zoneout=self.zoneout, dropconnect=self.dropconnect,
                   trace_alpha=self.trace_alpha, lengths=lengths, rng=rng, backend="cpu",
                   stats=stats, grad=grad)
        out, h_n, y_n = _EGRUFunction.apply(x, *params, h0, y0, cfg)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (h_n.unsqueeze(0), y_n.unsqueeze(0))
