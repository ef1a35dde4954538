"""Optimisers on dictionaries of NumPy arrays, with torch.optim semantics.

Parameters are a dict ``name -> ndarray`` (float32 or float64) and gradients a
dict with the same keys and shapes. :meth:`Optimizer.step` updates the
parameter arrays **in place** (the dict is not rebound), so views held by a
network stay valid. A parameter without a gradient entry is left alone (frozen)
except for the bounds projection.

Two options shared by all optimisers:

``bounds``
    ``{pattern: (lo, hi)}``; after every step each matching parameter is
    clipped into ``[lo, hi]`` (either side may be ``None``). This is the
    projection that keeps EGRU thresholds valid, e.g. ``{"thr": (0.01, 1.0)}``.
``no_decay``
    Patterns of parameters excluded from weight decay (e.g. ``("thr", "bx",
    "br")``).

A pattern matches a parameter name when it equals the name or is a suffix of it
that starts at a dot: ``"thr"``, ``".thr"`` and ``"egru.thr"`` all match
``"egru.thr"``; ``"thr"`` does not match ``"egru.mythr"``.

State (:meth:`Optimizer.state_dict`) is a flat dict of NumPy arrays and Python
scalars, keys ``"lr"``, ``"num_steps"``, the other numeric hyperparameters, and
``"state:<param name>:<slot>"`` for the per-parameter buffers; every value
survives an HDF5 round trip exactly, so a resumed run continues bit for bit.
"""

import math

import numpy as np

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm"]

_STATE_PREFIX = "state:"


def _pattern_matches(name, pattern):
    """True when ``pattern`` is ``name`` or a dot-aligned suffix of it."""
    p = pattern.lstrip(".")
    return name == p or name.endswith("." + p)


def _check_scalar(value, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """Return ``value`` as a float; raise, naming ``name``, unless a finite number in range."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


def _check_patterns(patterns, name):
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        patterns = (patterns,)
    patterns = tuple(patterns)
    for p in patterns:
        if not isinstance(p, str) or not p.lstrip("."):
            raise TypeError(f"{name} must hold non-empty strings, got {p!r}")
    return patterns


def _check_bounds(bounds):
    if bounds is None:
        return {}
    if not isinstance(bounds, dict):
        raise TypeError(
            f"bounds must be a dict pattern -> (lo, hi), got {type(bounds).__name__}"
        )
    out = {}
    for pattern, rng in bounds.items():
        if not isinstance(pattern, str) or not pattern.lstrip("."):
            raise TypeError(f"bounds keys must be non-empty strings, got {pattern!r}")
        try:
            lo, hi = rng
        except (TypeError, ValueError):
            raise ValueError(
                f"bounds[{pattern!r}] must be a pair (lo, hi), got {rng!r}"
            ) from None
        lo = -math.inf if lo is None else float(lo)
        hi = math.inf if hi is None else float(hi)
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(
                f"bounds[{pattern!r}] must satisfy lo <= hi, got ({lo}, {hi})"
            )
        out[pattern] = (lo, hi)
    return out


class Optimizer:
    """Base class: validation, bounds projection, weight-decay exclusion, state.

    Subclasses define ``_hyper`` (names of the numeric hyperparameters kept in
    the state dict), ``_slots`` (names of the per-parameter buffers; ``"step"``
    is an int, every other slot an array of the parameter's shape and dtype)
    and ``_update(name, p, g, state, wd)``.

    Parameters
    ----------
    lr : float
        Learning rate, > 0. May be changed between steps (schedules).
    weight_decay : float
        >= 0; how it is applied depends on the subclass.
    bounds : dict str -> (float or None, float or None), optional
        Projection ranges, see the module docstring.
    no_decay : str or sequence of str, optional
        Patterns of parameters that get no weight decay.
    """

    _hyper = ("lr", "weight_decay")
    _slots = ()

    def __init__(self, lr, weight_decay=0.0, bounds=None, no_decay=()):
        self.lr = lr
        self.weight_decay = _check_scalar(weight_decay, "weight_decay", lo=0.0)
        self.bounds = _check_bounds(bounds)
        self.no_decay = _check_patterns(no_decay, "no_decay")
        self.num_steps = 0
        self.state = {}  # name -> {slot: ndarray or int}

    # -- hyperparameters ---------------------------------------------------- #
    @property
    def lr(self):
        """Learning rate (float > 0); assignable, e.g. by a schedule."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _check_scalar(value, "lr", lo=0.0, lo_open=True)

    def decays(self, name):
        """Whether parameter ``name`` receives weight decay."""
        return not any(_pattern_matches(name, p) for p in self.no_decay)

    def bound_of(self, name):
        """``(lo, hi)`` for parameter ``name``, or ``None`` if it is unbounded.

        Raises ValueError when two patterns with different ranges match.
        """
        found = None
        for pattern, rng in self.bounds.items():
            if _pattern_matches(name, pattern):
                if found is not None and found != rng:
                    raise ValueError(
                        f"bounds: parameter {name!r} matches patterns with different "
                        f"ranges {found} and {rng}"
                    )
                found = rng
        return found

    # -- stepping ----------------------------------------------------------- #
    def project(self, params):
        """Clip every parameter with a bound into its range, in place.

        Called at the end of :meth:`step`; call it once after initialisation
        too if the initial values may lie outside the bounds.
        """
        for p, (lo, hi) in self._bounded(params):
            np.clip(p, lo, hi, out=p)

    def _bounded(self, params):
        """``[(array, (lo, hi))]`` for the parameters that have a bound."""
        if not self.bounds:
            return []
        out = []
        for name, p in params.items():
            rng = self.bound_of(name)
            if rng is not None:
                out.append((p, rng))
        return out

    def step(self, params, grads):
        """Apply one update to ``params`` in place, then project onto the bounds.

        Parameters
        ----------
        params : dict str -> ndarray (float32 or float64)
            Updated in place. Must be writable.
        grads : dict str -> ndarray
            Same keys (a subset is allowed: parameters without a gradient are
            not updated) and shapes; cast to the parameter dtype. Must be finite.

        Raises
        ------
        ValueError
            Unknown gradient names, shape mismatch, non-finite gradients, a
            state buffer whose shape does not match its parameter.
        TypeError
            Non-dict arguments, non-floating or read-only parameters.
        """
        if not isinstance(params, dict):
            raise TypeError(
                f"params must be a dict name -> ndarray, got {type(params).__name__}"
            )
        if not isinstance(grads, dict):
            raise TypeError(
                f"grads must be a dict name -> ndarray, got {type(grads).__name__}"
            )
        unknown = sorted(set(grads) - set(params))
        if unknown:
            raise ValueError(f"grads has names not in params: {unknown}")
        checked = []
        for name, g in grads.items():
            p = params[name]
            if not isinstance(p, np.ndarray) or not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"params[{name!r}] must be a floating-point ndarray")
            if not p.flags.writeable:
                raise TypeError(f"params[{name!r}] is read-only; step updates in place")
            g = np.asarray(g)
            if g.shape != p.shape:
                raise ValueError(
                    f"grads[{name!r}] has shape {g.shape}, params[{name!r}] has {p.shape}"
                )
            if not np.all(np.isfinite(g)):
                raise ValueError(f"grads[{name!r}] contains NaN or infinite values")
            st = self.state.get(name)
            if st is not None:
                for slot, buf in st.items():
                    if isinstance(buf, np.ndarray) and buf.shape != p.shape:
                        raise ValueError(
                            f"optimiser state {slot!r} of {name!r} has shape {buf.shape}, "
                            f"the parameter has {p.shape}"
                        )
            checked.append((name, p, g.astype(p.dtype, copy=False)))
        bounded = self._bounded(params)  # raises on ambiguous bounds before any update
        # all checks passed: only now touch anything
        for name, p, g in checked:
            wd = self.weight_decay if self.decays(name) else 0.0
            self._update(name, p, g, self.state.setdefault(name, {}), wd)
        self.num_steps += 1
        for p, (lo, hi) in bounded:
            np.clip(p, lo, hi, out=p)

    def _update(self, name, p, g, state, wd):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state -------------------------------------------------------------- #
    def state_dict(self):
        """Flat, HDF5-serialisable snapshot of the optimiser state (copies).

        Returns
        -------
        dict
            ``"num_steps"`` (int), each numeric hyperparameter in ``_hyper``
            (float), and ``"state:<name>:<slot>"`` (ndarray, or int for
            ``step``). ``bounds`` and ``no_decay`` are construction
            options, not state: rebuild the optimiser with the same options,
            then load.
        """
        d = {"num_steps": int(self.num_steps)}
        for h in self._hyper:
            d[h] = float(getattr(self, h))
        for name, st in self.state.items():
            for slot, buf in st.items():
                key = f"{_STATE_PREFIX}{name}:{slot}"
                d[key] = buf.copy() if isinstance(buf, np.ndarray) else int(buf)
        return d

    def load_state_dict(self, d):
        """Restore a snapshot from :meth:`state_dict` (hyperparameters included, as torch).

        Values may be NumPy scalars or 0-d arrays (as read back from HDF5).
        The snapshot must come from the same optimiser class: missing or
        unknown keys raise ValueError, and nothing is changed then.
        """
        if not isinstance(d, dict):
            raise TypeError(f"d must be a dict, got {type(d).__name__}")
        required = {"num_steps", *self._hyper}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"d is missing keys {missing} for {type(self).__name__}")
        hyper = {}
        for h in self._hyper:
            hyper[h] = _check_scalar(np.asarray(d[h]).item(), f"d[{h!r}]")
        num_steps = np.asarray(d["num_steps"])
        if not np.issubdtype(num_steps.dtype, np.integer) or num_steps.ndim != 0:
            raise ValueError(
                f"d['num_steps'] must be an integer, got {d['num_steps']!r}"
            )
        state = {}
        for key, value in d.items():
            if key in required:
                continue
            if (
                not key.startswith(_STATE_PREFIX)
                or ":" not in key[len(_STATE_PREFIX) :]
            ):
                raise ValueError(
                    f"d has an unknown key {key!r} for {type(self).__name__}"
                )
            name, slot = key[len(_STATE_PREFIX) :].rsplit(":", 1)
            if slot not in self._slots:
                raise ValueError(f"d has an unknown state slot {slot!r} in key {key!r}")
            if slot == "step":
                v = np.asarray(value)
                if not np.issubdtype(v.dtype, np.integer) or v.ndim != 0:
                    raise ValueError(f"d[{key!r}] must be an integer, got {value!r}")
                value = int(v)
            else:
                value = np.array(value, copy=True)
                if not np.issubdtype(value.dtype, np.floating):
                    raise ValueError(f"d[{key!r}] must be a floating-point array")
            state.setdefault(name, {})[slot] = value
        for name, st in state.items():
            if set(st) != set(self._slots):
                raise ValueError(
                    f"d holds slots {sorted(st)} for {name!r}, expected {sorted(self._slots)}"
                )
        for h, v in hyper.items():
            setattr(self, h, v)  # lr goes through its validating setter
        self.num_steps = int(num_steps)
        self.state = state

    def __repr__(self):
        hp = ", ".join(f"{h}={getattr(self, h)!r}" for h in self._hyper)
        return f"{type(self).__name__}({hp})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD`` (dampening 0).

    Per parameter, with ``wd`` the weight decay (0 for ``no_decay`` names)::

        g = g + wd * p
        buf = g                       (first step)
        buf = momentum * buf + g      (later steps)
        g = g + momentum * buf        if nesterov, else g = buf
        p = p - lr * g

    Without momentum no buffer is kept and ``p = p - lr * (g + wd * p)``.

    Parameters
    ----------
    lr : float
        > 0.
    momentum : float, default 0.0
        In ``[0, 1)``.
    weight_decay : float, default 0.0
        L2 penalty coefficient added to the gradient.
    nesterov : bool, default False
        Nesterov momentum; requires ``momentum > 0``.
    bounds, no_decay
        See :class:`Optimizer`.
    """

    _hyper = ("lr", "momentum", "weight_decay")
    _slots = ("momentum_buffer",)

    def __init__(
        self,
        lr,
        momentum=0.0,
        weight_decay=0.0,
        nesterov=False,
        bounds=None,
        no_decay=(),
    ):
        super().__init__(lr, weight_decay, bounds, no_decay)
        self.momentum = _check_scalar(
            momentum, "momentum", lo=0.0, hi=1.0, hi_open=True
        )
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
        if nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True requires momentum > 0, got momentum=0.0")
        self.nesterov = bool(nesterov)

    def _update(self, name, p, g, state, wd):
        if wd != 0.0:
            g = g + wd * p
        if self.momentum != 0.0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``amsgrad=False``): L2 weight decay added to the gradient.

    Per parameter, with step count ``k`` (per parameter, from 1)::

        g = g + wd * p
        m = m + (1 - beta1) * (g - m)          (torch's lerp; m starts at 0)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**k) * m / (sqrt(v) / sqrt(1 - beta2**k) + eps)

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in ``[0, 1)``.
    eps : float, default 1e-8
        >= 0.
    weight_decay : float, default 0.0
    bounds, no_decay
        See :class:`Optimizer`.
    """

    _hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    _slots = ("step", "exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(
        self,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        bounds=None,
        no_decay=(),
    ):
        super().__init__(lr, weight_decay, bounds, no_decay)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(
                f"betas must be a pair (beta1, beta2), got {betas!r}"
            ) from None
        self.beta1 = _check_scalar(b1, "betas[0]", lo=0.0, hi=1.0, hi_open=True)
        self.beta2 = _check_scalar(b2, "betas[1]", lo=0.0, hi=1.0, hi_open=True)
        self.eps = _check_scalar(eps, "eps", lo=0.0)

    @property
    def betas(self):
        """``(beta1, beta2)``."""
        return (self.beta1, self.beta2)

    def _update(self, name, p, g, state, wd):
        if wd != 0.0:
            if self._decoupled:
                p *= 1.0 - self.lr * wd
            else:
                g = g + wd * p
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        k = state["step"]
        m += (1.0 - self.beta1) * (g - m)
        v *= self.beta2
        v += (1.0 - self.beta2) * (g * g)
        step_size = self.lr / (1.0 - self.beta1**k)
        denom = np.sqrt(v)
        denom /= math.sqrt(1.0 - self.beta2**k)
        denom += self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: decoupled weight decay.

    Before the Adam update (without L2 term) each decayed parameter is shrunk:
    ``p = p * (1 - lr * wd)``.

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.01
    bounds, no_decay
        See :class:`Optimizer`.
    """

    _decoupled = True

    def __init__(
        self,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.01,
        bounds=None,
        no_decay=(),
    ):
        super().__init__(lr, betas, eps, weight_decay, bounds, no_decay)


def clip_grad_norm(grads, max_norm, error_if_nonfinite=True):
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: ``total = sqrt(sum_k ||g_k||^2)``;
    if ``max_norm / (total + 1e-6) < 1`` every gradient is multiplied by that
    factor. The norm is accumulated in float64.

    Parameters
    ----------
    grads : dict str -> ndarray (floating, writable)
        Modified in place.
    max_norm : float
        > 0.
    error_if_nonfinite : bool, default True
        Raise ValueError when the total norm is NaN or infinite. When False,
        the gradients are then left untouched (torch would fill them with NaN)
        and the non-finite norm is returned.

    Returns
    -------
    float
        The total norm before clipping.
    """
    if not isinstance(grads, dict):
        raise TypeError(
            f"grads must be a dict name -> ndarray, got {type(grads).__name__}"
        )
    max_norm = _check_scalar(max_norm, "max_norm", lo=0.0, lo_open=True)
    sq = 0.0
    for name, g in grads.items():
        if not isinstance(g, np.ndarray) or not np.issubdtype(g.dtype, np.floating):
            raise TypeError(f"grads[{name!r}] must be a floating-point ndarray")
        g64 = g.astype(np.float64, copy=False).ravel()
        sq += float(np.dot(g64, g64))
    total = math.sqrt(sq)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise ValueError(f"grads: the total gradient norm is {total}")
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= coef
    return total
