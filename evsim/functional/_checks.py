"""Argument checks at the boundary of the functional layer.

The float checks of :mod:`evsim._validate`, preceded by a byte-order check
(the compiled kernels read native-order arrays only), and checks of integer
index arrays with their ranges (kernels index with them: a bad index would
read or write out of bounds). Every error names the argument, what was
expected and what was given.
"""

import sys

import numpy as np

from evsim._validate import (  # noqa: F401 (re-exported: one place for the checks)
    FLOAT_DTYPES,
    all_finite,
    lengths_array,
    positive,
    probability,
    require_memory,
    size,
)
from evsim._validate import float_array as _float_array


def native(name, value):
    """Raise a TypeError unless ``value`` (an ndarray) is in the machine's byte order."""
    if isinstance(value, np.ndarray) and not value.dtype.isnative:
        raise TypeError(f"{name} must be in the machine's byte order ({sys.byteorder}-endian), "
                        f"got dtype {value.dtype.str!r}; pass {name}.astype("
                        f"{value.dtype.newbyteorder('=').str!r})")
    return value


def float_array(name, value, shape=None, dtype=None, finite=True):
    """A native-order, C-contiguous float32/float64 array of the given shape and
    dtype (see :func:`evsim._validate.float_array`); returned unchanged."""
    # fast path (step-wise runs call this a few times per step): all is well
    if (type(value) is np.ndarray and value.dtype.type in FLOAT_DTYPES
            and value.dtype.isnative and (dtype is None or value.dtype == dtype)
            and value.flags.c_contiguous and (shape is None or _shape_ok(value.shape, shape))
            and (not finite or all_finite(value))):
        return value
    return _float_array(name, native(name, value), shape, dtype, finite)


def _shape_ok(got, want):
    if len(got) != len(want):
        return False
    for w, g in zip(want, got):
        if w is not None and w != g:
            return False
    return True


def out_array(name, value, shape, dtype):
    """A writable float array of the given shape and dtype, any strides (an
    output buffer, e.g. a column block of a larger array)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    native(name, value)
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)} like the other arrays, "
                        f"got {value.dtype}")
    _shape(name, value, shape)
    if not value.flags.writeable:
        raise ValueError(f"{name} must be writable (it is updated in place)")
    return value


def _shape(name, value, shape):
    if not _shape_ok(value.shape, shape):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {value.shape}")


def int_array(name, value, shape, lo=None, hi=None, dtype=np.int64):
    """An integer array of the given shape with values in [lo, hi) (either
    bound may be None); returned as a C-contiguous array of ``dtype``."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    native(name, value)
    if value.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {value.dtype}")
    _shape(name, value, shape)
    if value.size:
        low, high = value.min(), value.max()
        if (lo is not None and low < lo) or (hi is not None and high >= hi):
            rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi})"
            raise ValueError(f"{name} must lie in {rng}, got values from {low} to {high}")
    return np.ascontiguousarray(value, dtype)


def step_lengths(lengths, T, B):
    """Per-sample valid steps for a kernel call: (B,) integers in [0, T] (0: a
    sample that takes no step, as in one step of a step-wise run)."""
    return int_array("lengths", np.asarray(lengths), (B,), 0, T + 1)


def bool_array(name, value, shape):
    """A bool array of the given shape (C-contiguous copy if needed)."""
    if not isinstance(value, np.ndarray) or value.dtype != np.bool_:
        got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise TypeError(f"{name} must be a bool array, got {got}")
    _shape(name, value, shape)
    return np.ascontiguousarray(value)
