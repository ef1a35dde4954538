"""Losses and accuracy helpers for time-major network outputs.

Every loss returns ``(loss, grad)``: ``loss`` is a Python float (the mean
loss) and ``grad`` is the gradient of that mean with respect to the logits or
outputs, an array of the same shape and dtype as the input, zero wherever the
loss does not look (padded steps, steps other than the last one).

Arrays are time-major: logits and outputs are ``(T, B, N)``. Sequences of
unequal length are given by ``lengths`` (``(B,)`` integers in ``1..T``):
sample ``b`` is valid at steps ``t < lengths[b]`` and its last step is
``lengths[b] - 1``. ``lengths=None`` means every sample has length ``T``.

All functions are plain NumPy; the sums that make the loss value are
accumulated in float64, the gradient is computed in the input dtype.
"""

import numpy as np

__all__ = [
    "accuracy_every_step",
    "accuracy_last",
    "cross_entropy_every_step",
    "cross_entropy_last",
    "mse",
    "predict_last",
    "select_last",
]


# --------------------------------------------------------------------------- #
# validation helpers (also used by regularizers.py)
# --------------------------------------------------------------------------- #
def _as_float_array(x, name, ndim=None):
    """Return ``x`` as a floating ndarray, or raise naming ``name``."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    return arr


def _check_finite(arr, name):
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")


def _as_int_array(x, name, shape):
    """Return ``x`` as an int64 ndarray of the given shape, or raise naming ``name``."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _check_lengths(lengths, T, B):
    """Validate ``lengths`` against ``(T, B)``; return int64 ``(B,)`` (``None`` -> all ``T``)."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    lengths = _as_int_array(lengths, "lengths", (B,))
    if B and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(
            f"lengths must lie in 1..T={T}, got values in {lengths.min()}..{lengths.max()}"
        )
    return lengths


def _valid_mask(lengths, T):
    """Boolean ``(T, B)`` mask, True at steps ``t < lengths[b]``."""
    return np.arange(T)[:, None] < lengths[None, :]


def _check_labels(labels, n_classes, name, shape):
    labels = _as_int_array(labels, name, shape)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{name} must lie in 0..{n_classes - 1} (number of classes), "
            f"got values in {labels.min()}..{labels.max()}"
        )
    return labels


def _log_softmax_rows(z):
    """Numerically stable log-softmax along the last axis of a 2-D array (new array)."""
    out = z - z.max(axis=-1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=-1, keepdims=True))
    return out


# --------------------------------------------------------------------------- #
# classification
# --------------------------------------------------------------------------- #
def select_last(x, lengths=None):
    """Values at the last valid step of each sequence.

    Parameters
    ----------
    x : ndarray, shape (T, B, N)
        Time-major array (logits, outputs, states).
    lengths : array of int, shape (B,), optional
        Sequence lengths in ``1..T``; ``None`` means all ``T``.

    Returns
    -------
    ndarray, shape (B, N)
        ``x[lengths[b] - 1, b]`` for every ``b`` (a new array).
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, N), got {x.shape}")
    T, B = x.shape[:2]
    lengths = _check_lengths(lengths, T, B)
    return x[lengths - 1, np.arange(B)]


def cross_entropy_last(logits, labels, lengths=None):
    """Softmax cross-entropy at the last step of each sequence, mean over the batch.

    Parameters
    ----------
    logits : ndarray, shape (T, B, C), float
        Unnormalised class scores at every step.
    labels : array of int, shape (B,)
        Class of each sequence, in ``0..C-1``.
    lengths : array of int, shape (B,), optional
        Sequence lengths; the loss is taken at step ``lengths[b] - 1``.
        ``None`` means step ``T - 1`` for every sample.

    Returns
    -------
    loss : float
        ``mean_b [logsumexp(z_b) - z_b[labels[b]]]`` with ``z_b`` the logits of
        sample ``b`` at its last step.
    grad : ndarray, shape (T, B, C), dtype of ``logits``
        ``d loss / d logits``: ``(softmax(z_b) - onehot(labels[b])) / B`` at
        the last step of each sample, zero elsewhere.

    Raises
    ------
    ValueError
        Bad shapes, labels outside ``0..C-1``, lengths outside ``1..T``,
        non-finite logits at the last steps.
    TypeError
        Non-floating logits or non-integer labels/lengths.
    """
    logits = _as_float_array(logits, "logits", ndim=3)
    T, B, C = logits.shape
    if B == 0 or C == 0 or T == 0:
        raise ValueError(
            f"logits must have non-empty T, B and C, got shape {logits.shape}"
        )
    labels = _check_labels(labels, C, "labels", (B,))
    lengths = _check_lengths(lengths, T, B)
    rows = np.arange(B)
    z = logits[lengths - 1, rows]
    _check_finite(z, "logits")
    logp = _log_softmax_rows(z)
    loss = -float(logp[rows, labels].sum(dtype=np.float64)) / B
    g = np.exp(logp)
    g[rows, labels] -= 1
    g /= B
    grad = np.zeros_like(logits)
    grad[lengths - 1, rows] = g
    return loss, grad


def cross_entropy_every_step(logits, targets, lengths=None):
    """Softmax cross-entropy at every valid step, mean over all valid ``(t, b)``.

    This is the language-modelling loss; ``exp(loss)`` is the perplexity.

    Parameters
    ----------
    logits : ndarray, shape (T, B, C), float
        Unnormalised class scores.
    targets : array of int, shape (T, B)
        Target class at every step, in ``0..C-1``. Entries at padded steps
        (``t >= lengths[b]``) are ignored and may hold any value.
    lengths : array of int, shape (B,), optional
        Sequence lengths; ``None`` means every step is valid.

    Returns
    -------
    loss : float
        ``sum_valid [logsumexp(z_tb) - z_tb[targets[t, b]]] / n_valid``.
    grad : ndarray, shape (T, B, C), dtype of ``logits``
        ``(softmax(z_tb) - onehot(targets[t, b])) / n_valid`` at valid steps,
        zero at padded steps.

    Raises
    ------
    ValueError
        Bad shapes, targets outside ``0..C-1`` at valid steps, lengths outside
        ``1..T``, non-finite logits at valid steps.
    TypeError
        Non-floating logits or non-integer targets/lengths.
    """
    logits = _as_float_array(logits, "logits", ndim=3)
    T, B, C = logits.shape
    if B == 0 or C == 0 or T == 0:
        raise ValueError(
            f"logits must have non-empty T, B and C, got shape {logits.shape}"
        )
    targets = _as_int_array(targets, "targets", (T, B))
    lengths = _check_lengths(lengths, T, B)
    mask = _valid_mask(lengths, T)
    all_valid = bool(mask.all())
    if all_valid:
        z = logits.reshape(T * B, C)
        tgt = targets.reshape(T * B)
    else:
        z = logits[mask]
        tgt = targets[mask]
    _check_labels(tgt, C, "targets", tgt.shape)
    _check_finite(z, "logits")
    n = z.shape[0]
    logp = _log_softmax_rows(z)
    rows = np.arange(n)
    loss = -float(logp[rows, tgt].sum(dtype=np.float64)) / n
    g = np.exp(logp, out=logp)
    g[rows, tgt] -= 1
    g /= n
    if all_valid:
        return loss, g.reshape(T, B, C)
    grad = np.zeros_like(logits)
    grad[mask] = g
    return loss, grad


def predict_last(logits, lengths=None):
    """Predicted class (argmax) at the last valid step of each sequence.

    Parameters
    ----------
    logits : ndarray, shape (T, B, C)
    lengths : array of int, shape (B,), optional

    Returns
    -------
    ndarray of int64, shape (B,)
        Ties go to the lowest class index.
    """
    logits = _as_float_array(logits, "logits", ndim=3)
    return select_last(logits, lengths).argmax(axis=-1).astype(np.int64)


def accuracy_last(logits, labels, lengths=None):
    """Fraction of sequences whose last-step argmax equals the label.

    Parameters
    ----------
    logits : ndarray, shape (T, B, C)
    labels : array of int, shape (B,)
    lengths : array of int, shape (B,), optional

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    logits = _as_float_array(logits, "logits", ndim=3)
    _, B, C = logits.shape
    if B == 0:
        raise ValueError("logits must have a non-empty batch")
    labels = _check_labels(labels, C, "labels", (B,))
    return float(np.mean(predict_last(logits, lengths) == labels))


def accuracy_every_step(logits, targets, lengths=None):
    """Fraction of valid ``(t, b)`` whose argmax equals the target.

    Parameters
    ----------
    logits : ndarray, shape (T, B, C)
    targets : array of int, shape (T, B)
        Entries at padded steps are ignored.
    lengths : array of int, shape (B,), optional

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    logits = _as_float_array(logits, "logits", ndim=3)
    T, B, C = logits.shape
    if B == 0 or T == 0:
        raise ValueError(
            f"logits must have non-empty T and B, got shape {logits.shape}"
        )
    targets = _as_int_array(targets, "targets", (T, B))
    mask = _valid_mask(_check_lengths(lengths, T, B), T)
    tgt = targets[mask]
    _check_labels(tgt, C, "targets", tgt.shape)
    return float(np.mean(logits[mask].argmax(axis=-1) == tgt))


# --------------------------------------------------------------------------- #
# regression
# --------------------------------------------------------------------------- #
def mse(outputs, targets, lengths=None, every_step=False):
    """Mean squared error, at the last step or at every valid step.

    Parameters
    ----------
    outputs : ndarray, shape (T, B, N), float
        Network outputs.
    targets : ndarray, float
        ``every_step=False``: shape ``(B, N)``, compared with the outputs at
        the last valid step of each sequence. ``every_step=True``: shape
        ``(T, B, N)``; entries at padded steps are ignored (they may be NaN).
    lengths : array of int, shape (B,), optional
        Sequence lengths; ``None`` means all ``T``.
    every_step : bool, default False
        Which variant, see ``targets``.

    Returns
    -------
    loss : float
        Mean of ``(outputs - targets)**2`` over the compared elements
        (``B * N`` of them for the last-step variant, ``n_valid * N`` for the
        every-step variant), as ``torch.nn.MSELoss()`` on those elements.
    grad : ndarray, shape (T, B, N), dtype of ``outputs``
        ``2 (outputs - targets) / n_elements`` where compared, zero elsewhere.
    """
    outputs = _as_float_array(outputs, "outputs", ndim=3)
    T, B, N = outputs.shape
    if T == 0 or B == 0 or N == 0:
        raise ValueError(
            f"outputs must have non-empty T, B and N, got shape {outputs.shape}"
        )
    lengths = _check_lengths(lengths, T, B)
    grad = np.zeros_like(outputs)
    if every_step:
        targets = _as_float_array(targets, "targets")
        if targets.shape != outputs.shape:
            raise ValueError(
                f"targets must have the shape of outputs {outputs.shape} when "
                f"every_step=True, got {targets.shape}"
            )
        mask = _valid_mask(lengths, T)
        o, t = outputs[mask], targets[mask]
    else:
        targets = _as_float_array(targets, "targets")
        if targets.shape != (B, N):
            raise ValueError(
                f"targets must have shape (B, N) = {(B, N)} when every_step=False, "
                f"got {targets.shape}"
            )
        rows = np.arange(B)
        o, t = outputs[lengths - 1, rows], targets
    _check_finite(o, "outputs")
    _check_finite(t, "targets")
    diff = (o - t).astype(outputs.dtype, copy=False)
    loss = float(np.square(diff, dtype=np.float64).sum() / diff.size)
    g = diff * (2.0 / diff.size)
    if every_step:
        grad[mask] = g
    else:
        grad[lengths - 1, rows] = g
    return loss, grad
