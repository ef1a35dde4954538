"""Regularisers for event-based networks: activity penalty and dropout masks.

The activity penalty works on the graded outputs ``y`` of an EGRU population
(events are the entries with ``y != 0``). The masks are drawn from a
``numpy.random.Generator`` that the caller derives from the network seed; they
are plain arrays that the caller multiplies in (and multiplies into the
gradient in the backward pass).
"""

import numpy as np

from .losses import _as_float_array, _check_finite, _check_lengths, _valid_mask

__all__ = [
    "activity_fraction",
    "activity_regularizer",
    "dropconnect_mask",
    "dropout_mask",
    "embedding_dropout_mask",
    "zoneout_mask",
]


def activity_fraction(y, lengths=None):
    """Measured activity: fraction of valid ``(t, b, h)`` with an event (``y != 0``).

    Parameters
    ----------
    y : ndarray, shape (T, B, H)
        Graded outputs of a population.
    lengths : array of int, shape (B,), optional
        Sequence lengths; padded steps are not counted.

    Returns
    -------
    float
        In ``[0, 1]``. Not differentiable; use it to monitor, and
        :func:`activity_regularizer` to train.
    """
    y = _as_float_array(y, "y", ndim=3)
    T, B, H = y.shape
    if T == 0 or B == 0 or H == 0:
        raise ValueError(f"y must have non-empty T, B and H, got shape {y.shape}")
    mask = _valid_mask(_check_lengths(lengths, T, B), T)
    return float(np.count_nonzero(y[mask]) / (mask.sum() * H))


def activity_regularizer(
    y, target, strength, lengths=None, per_unit=True, two_sided=False
):
    """Penalty on the mean graded output, pushing activity down (or toward a level).

    The fraction of active units (``y != 0``) is piecewise constant in the
    network's state, so it has no useful gradient. The penalty is therefore
    placed on a differentiable proxy, the mean graded output

    ``m_h = (1 / n) * sum over valid (t, b) of y[t, b, h]``  (``n`` valid pairs),

    which is about ``rate_h * (mean event value of h)``. With ``per_unit=True``::

        penalty = strength / H * sum_h  relu(m_h - target)**2     (two_sided=False)
        penalty = strength / H * sum_h  (m_h - target)**2         (two_sided=True)

    and with ``per_unit=False`` the same on the single population mean
    ``m = mean_h m_h``. The gradient is exact (the function is once
    continuously differentiable in ``y``) and the same for every valid
    ``(t, b)`` of a unit: ``2 * strength / (H * n) * relu(m_h - target)``,
    zero at padded steps.

    Why this lowers activity: the backward pass carries ``dL/dy`` into the
    membrane through ``dy/dv = c + v * dc/dv`` (the surrogate). A positive
    ``dL/dy`` (a unit above target) therefore lowers ``v`` for units that fired
    and for silent units with ``v > 0`` inside the surrogate band, both of which
    move the unit away from (further below) its threshold. Silent units far from
    threshold get no gradient, as they should. It assumes positive thresholds
    (keep them so with the optimiser ``bounds``): then ``y >= 0`` and ``m_h`` is
    the mean output magnitude. Silent units with ``v < 0`` inside the band are
    pushed up instead; that is a property of the surrogate for ``y = c * v``.

    Parameters
    ----------
    y : ndarray, shape (T, B, H), float
        Graded outputs of one population.
    target : float
        Target level of the mean output, >= 0 (in the units of ``y``, not a
        fraction). To aim at a firing fraction ``f``, use
        ``target = f * typical event value`` (an event carries ``y = v > thr``,
        so somewhat above the thresholds). ``target = 0`` penalises all output.
    strength : float
        >= 0; ``0`` gives a zero penalty and gradient.
    lengths : array of int, shape (B,), optional
        Sequence lengths; padded steps are ignored.
    per_unit : bool, default True
        Penalise each unit's mean (every unit above target is pushed down) or
        only the population mean (units may trade activity among themselves).
    two_sided : bool, default False
        Also push units below the target up (only those within the surrogate
        band receive that push).

    Returns
    -------
    penalty : float
    grad : ndarray, shape (T, B, H), dtype of ``y``
        ``d penalty / d y``.
    """
    y = _as_float_array(y, "y", ndim=3)
    T, B, H = y.shape
    if T == 0 or B == 0 or H == 0:
        raise ValueError(f"y must have non-empty T, B and H, got shape {y.shape}")
    target = _nonneg_float(target, "target")
    strength = _nonneg_float(strength, "strength")
    lengths = _check_lengths(lengths, T, B)
    mask = _valid_mask(lengths, T)
    n = int(mask.sum())
    all_valid = n == T * B
    yv = y.reshape(T * B, H) if all_valid else y[mask]
    _check_finite(yv, "y")
    m = yv.sum(axis=0, dtype=np.float64) / n  # (H,)
    if not per_unit:
        m = np.array([m.mean()])
    d = m - target
    if not two_sided:
        d = np.maximum(d, 0.0)
    penalty = float(strength * np.mean(d * d))
    # d penalty / d m_k = 2 strength d_k / len(d); d m_h / d y = 1 / n (per unit)
    # or 1 / (n H) (population mean: m = sum of y / (n H)).
    scale = 2.0 * strength / (d.size * n)
    if not per_unit:
        scale /= H
    g_unit = (scale * d).astype(y.dtype)  # (H,) or (1,)
    grad = np.zeros_like(y)
    if all_valid:
        grad[...] = g_unit
    else:
        grad[mask] = g_unit
    return penalty, grad


# --------------------------------------------------------------------------- #
# masks
# --------------------------------------------------------------------------- #
def _nonneg_float(value, name):
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _check_p(p, upper_inclusive):
    p = _nonneg_float(p, "p")
    if p > 1.0 or (p == 1.0 and not upper_inclusive):
        raise ValueError(
            f"p must lie in [0, {'1]' if upper_inclusive else '1)'}, got {p}"
        )
    return p


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}"
        )


def _check_shape(shape):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must hold non-negative sizes, got {shape}")
    return shape


def _keep(shape, p, rng):
    """Boolean keep mask, True with probability ``1 - p`` (one uniform draw per entry)."""
    return rng.random(shape) >= p


def zoneout_mask(shape, p, rng, dtype=np.float32):
    """Zoneout keep mask ``m ~ Bernoulli(1 - p)``, not scaled.

    Used as ``v = m * v + (1 - m) * h_prev`` during training; at evaluation
    use the expectation ``v = (1 - p) * v + p * h_prev`` instead of a mask.

    Parameters
    ----------
    shape : tuple of int
        Usually ``(T, B, H)``: a fresh draw for every step, sample and unit.
    p : float
        Zoneout probability (probability that a unit keeps its previous
        state), in ``[0, 1]``.
    rng : numpy.random.Generator
    dtype : numpy dtype, default float32

    Returns
    -------
    ndarray of 0 and 1, given shape and dtype
    """
    _check_rng(rng)
    shape = _check_shape(shape)
    p = _check_p(p, upper_inclusive=True)
    return _keep(shape, p, rng).astype(dtype)


def dropout_mask(shape, p, rng, dtype=np.float32, scale=True):
    """Inverted-dropout mask: 0 with probability ``p``, else ``1 / (1 - p)``.

    Pass ``shape = (1, B, N)`` for a mask shared across time (variational or
    "locked" dropout, as AWD-LSTM on inputs and outputs); it broadcasts over
    ``(T, B, N)``.

    Parameters
    ----------
    shape : tuple of int
    p : float
        Drop probability, in ``[0, 1)``.
    rng : numpy.random.Generator
    dtype : numpy dtype, default float32
    scale : bool, default True
        Scale kept entries by ``1 / (1 - p)`` so the expectation is unchanged
        and evaluation uses no mask; ``False`` gives a 0/1 mask.

    Returns
    -------
    ndarray, given shape and dtype
    """
    _check_rng(rng)
    shape = _check_shape(shape)
    p = _check_p(p, upper_inclusive=False)
    mask = _keep(shape, p, rng).astype(dtype)
    if scale and p > 0.0:
        mask *= 1.0 / (1.0 - p)
    return mask


def dropconnect_mask(shape, p, rng, dtype=np.float32, scale=True):
    """DropConnect mask for a weight matrix (AWD-LSTM "weight drop" on ``R``).

    Draw it once per training batch (one mask for all steps and samples of
    the batch) and use ``R_eff = R * mask`` in the forward pass; in the
    backward pass ``dR = dR_eff * mask``. With ``scale=True`` kept weights
    are scaled by ``1 / (1 - p)`` as ``torch.nn.functional.dropout`` does in
    AWD-LSTM, so evaluation uses ``R`` unmasked.

    Parameters
    ----------
    shape : tuple of int
        Shape of the weight, e.g. ``(H, 3H)`` for ``R``.
    p : float
        Drop probability, in ``[0, 1)``.
    rng : numpy.random.Generator
    dtype : numpy dtype, default float32
    scale : bool, default True

    Returns
    -------
    ndarray, given shape and dtype
    """
    return dropout_mask(shape, p, rng, dtype=dtype, scale=scale)


def embedding_dropout_mask(vocab, p, rng, dtype=np.float32):
    """Embedding dropout (Gal and Ghahramani; AWD-LSTM): drop whole word vectors.

    Every row of the embedding matrix ``E`` (``(vocab, D)``) is zeroed with
    probability ``p`` and the kept rows are scaled by ``1 / (1 - p)``. Use
    ``E_eff = E * mask`` for one batch; backward ``dE = dE_eff * mask``. A
    dropped word is dropped at every position of the batch where it occurs.

    Parameters
    ----------
    vocab : int
        Number of rows of ``E``, > 0.
    p : float
        Drop probability, in ``[0, 1)``.
    rng : numpy.random.Generator
    dtype : numpy dtype, default float32

    Returns
    -------
    ndarray, shape (vocab, 1), given dtype
        Broadcasts over the embedding dimension.
    """
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
        raise TypeError(f"vocab must be an int, got {type(vocab).__name__}")
    if vocab < 1:
        raise ValueError(f"vocab must be >= 1, got {vocab}")
    return dropout_mask((int(vocab), 1), p, rng, dtype=dtype, scale=True)
