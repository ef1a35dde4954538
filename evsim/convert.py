"""Weight conversion to and from the layout of ``torch.nn.GRU`` (pure NumPy).

torch keeps, per layer l, ``weight_ih_l{l}`` (3H, I), ``weight_hh_l{l}`` (3H, H),
``bias_ih_l{l}`` and ``bias_hh_l{l}`` (3H,), with the gate blocks ordered
r, z, n, and computes

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

evsim keeps ``W`` (I, 3H), ``R`` (H, 3H), ``bx``, ``br`` (3H,) with the blocks
ordered z, r, g, and computes ``g = tanh(a_g + r * q_g)`` with ``q_g = h R_g + br_g``
and ``v = z h + (1 - z) g``: the same cell, with the reset gate applied after
the recurrent product *and* its bias. So the conversion only reorders blocks
(r, z, n -> z, r, g) and transposes the matrices; no bias moves between the
input and the recurrent side.
"""

import numpy as np

# position of torch's block k (r, z, n) in evsim's order (z, r, g)
_TORCH_TO_EVSIM = (1, 0, 2)


def _to_numpy(value, name):
    """A torch tensor (any device, with or without grad) or array-like as ndarray."""
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "cpu"):
        value = value.cpu()
    if hasattr(value, "numpy"):
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point numbers, got dtype {arr.dtype}")
    return arr


def _blocks(a, H, axis, name):
    if a.shape[axis] != 3 * H:
        raise ValueError(f"{name} must have 3H = {3 * H} entries along axis {axis}, "
                         f"got shape {a.shape}")
    return np.split(a, 3, axis=axis)


def _reorder(a, H, axis, name):
    """Swap the first two gate blocks (r, z <-> z, r) along ``axis``; the map is
    its own inverse."""
    b = _blocks(a, H, axis, name)
    return np.concatenate([b[_TORCH_TO_EVSIM[k]] for k in range(3)], axis=axis)


def to_torch_gru(W, R, bx, br, *, layer=0, suffix=""):
    """evsim EGRU/GRU weights as a ``torch.nn.GRU`` state dict of NumPy arrays.

    Parameters
    ----------
    W : (I, 3H) input weights. R : (H, 3H) recurrent weights.
    bx, br : (3H,) input and recurrent biases. Gate order z, r, g.
    layer : layer index of the keys (``weight_ih_l{layer}`` ...).
    suffix : appended to every key (``"_reverse"`` for the backward direction
        of a bidirectional GRU).

    Returns
    -------
    dict with ``weight_ih_l{layer}`` (3H, I), ``weight_hh_l{layer}`` (3H, H),
    ``bias_ih_l{layer}``, ``bias_hh_l{layer}`` (3H,), gate order r, z, n, as
    C-contiguous arrays of the input dtype. To load into torch:
    ``gru.load_state_dict({k: torch.from_numpy(v) for k, v in d.items()}, strict=False)``.
    """
    W = _to_numpy(W, "W")
    R = _to_numpy(R, "R")
    bx = _to_numpy(bx, "bx")
    br = _to_numpy(br, "br")
    if R.ndim != 2 or R.shape[1] != 3 * R.shape[0]:
        raise ValueError(f"R must have shape (H, 3H), got {R.shape}")
    H = R.shape[0]
    if W.ndim != 2 or W.shape[1] != 3 * H:
        raise ValueError(f"W must have shape (I, 3H) = (I, {3 * H}), got {W.shape}")
    for name, b in (("bx", bx), ("br", br)):
        if b.shape != (3 * H,):
            raise ValueError(f"{name} must have shape (3H,) = ({3 * H},), got {b.shape}")
    key = f"l{layer}{suffix}"
    return {
        f"weight_ih_{key}": np.ascontiguousarray(_reorder(W, H, 1, "W").T),
        f"weight_hh_{key}": np.ascontiguousarray(_reorder(R, H, 1, "R").T),
        f"bias_ih_{key}": np.ascontiguousarray(_reorder(bx, H, 0, "bx")),
        f"bias_hh_{key}": np.ascontiguousarray(_reorder(br, H, 0, "br")),
    }


def from_torch_gru(state, *, layer=0, suffix="", prefix="", dtype=None):
    """evsim weights ``(W, R, bx, br)`` from ``torch.nn.GRU`` weights.

    Parameters
    ----------
    state : a state dict (mapping of names to tensors or arrays), an object
        with a ``state_dict()`` method (a ``torch.nn.GRU``), or a sequence
        ``(weight_ih, weight_hh, bias_ih, bias_hh)`` (biases may be None).
        A GRU made with ``bias=False`` has no bias keys: the biases are zero.
    layer, suffix : which layer and direction (``"_reverse"``) to take.
    prefix : prefix of the keys in a larger model's state dict (``"rnn."``).
    dtype : dtype of the result (default: that of the weights; evsim accepts
        float32 or float64).

    Returns
    -------
    W (I, 3H), R (H, 3H), bx (3H,), br (3H,): C-contiguous, gate order z, r, g.
    """
    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    if hasattr(state, "keys"):
        key = f"l{layer}{suffix}"
        names = [f"{prefix}{kind}_{key}" for kind in ("weight_ih", "weight_hh", "bias_ih",
                                                       "bias_hh")]
        for name in names[:2]:
            if name not in state:
                raise ValueError(f"state has no {name!r}; its keys are {sorted(state)}")
        arrays = [state.get(name) for name in names]
    else:
        arrays = list(state)
        if len(arrays) not in (2, 4):
            raise ValueError("state must be a state dict or (weight_ih, weight_hh, bias_ih, "
                             f"bias_hh), got a sequence of {len(arrays)}")
        arrays += [None] * (4 - len(arrays))
    wih = _to_numpy(arrays[0], "weight_ih")
    whh = _to_numpy(arrays[1], "weight_hh")
    if whh.ndim != 2 or whh.shape[0] != 3 * whh.shape[1]:
        raise ValueError(f"weight_hh must have shape (3H, H), got {whh.shape}")
    H = whh.shape[1]
    if wih.ndim != 2 or wih.shape[0] != 3 * H:
        raise ValueError(f"weight_ih must have shape (3H, I) = ({3 * H}, I), got {wih.shape}")
    dtype = np.dtype(dtype or np.result_type(wih.dtype, whh.dtype))
    biases = []
    for name, b in (("bias_ih", arrays[2]), ("bias_hh", arrays[3])):
        b = np.zeros(3 * H, dtype) if b is None else _to_numpy(b, name)
        if b.shape != (3 * H,):
            raise ValueError(f"{name} must have shape (3H,) = ({3 * H},), got {b.shape}")
        biases.append(b)
    W = _reorder(wih, H, 0, "weight_ih").T
    R = _reorder(whh, H, 0, "weight_hh").T
    bx = _reorder(biases[0], H, 0, "bias_ih")
    br = _reorder(biases[1], H, 0, "bias_hh")
    return tuple(np.ascontiguousarray(a, dtype) for a in (W, R, bx, br))
