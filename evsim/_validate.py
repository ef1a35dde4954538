"""Argument checks shared by the functional API and the object model.

Every error names the argument, what was expected and what was given.
"""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def float_array(name, value, shape=None, dtype=None, finite=True):
    """Check a floating-point, C-contiguous array of the given shape and dtype.

    ``shape`` may hold ``None`` for any size. Returns the array unchanged.
    """
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype.type not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)} like the other "
                        f"arrays, got {value.dtype}")
    if shape is not None:
        ok = value.ndim == len(shape) and all(
            want is None or want == got for want, got in zip(shape, value.shape))
        if not ok:
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {value.shape}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    if finite and not all_finite(value):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def all_finite(value):
    """True when no element is NaN or infinite.

    A sum is one fast pass and turns any NaN or inf into a non-finite result;
    only when it overflows (or is non-finite) is the exact elementwise test run.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(value.sum(dtype=np.float64)):
            return True
    return bool(np.all(np.isfinite(value)))


def positive(name, value, allow_zero=False):
    """Check a finite positive (or non-negative) scalar; return it as float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        want = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {want}, got {value}")
    return value


def probability(name, value, allow_one=False):
    """Check 0 <= value < 1 (or <= 1)."""
    value = positive(name, value, allow_zero=True)
    if value > 1 or (value == 1 and not allow_one):
        raise ValueError(f"{name} must be in [0, 1{']' if allow_one else ')'}, got {value}")
    return value


def size(name, value, minimum=1):
    """Check an integer size >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def lengths_array(lengths, T, B):
    """Check per-sample sequence lengths; return int64 (B,) (all T if None)."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    arr = np.asarray(lengths)
    if arr.shape != (B,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lengths must be {B} integers (one per sample), got "
                         f"shape {arr.shape} dtype {arr.dtype}")
    if arr.min() < 1 or arr.max() > T:
        raise ValueError(f"lengths must lie in [1, {T}] (the number of steps), got "
                         f"values from {arr.min()} to {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def available_memory():
    """Bytes of memory available to a new allocation (Linux: ``MemAvailable``
    of /proc/meminfo), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def require_memory(nbytes, what):
    """Raise a MemoryError naming ``what`` (the sizes) when about ``nbytes``
    (a lower estimate of what a call will allocate) exceed the memory
    available now: a clear error before allocating, instead of the operating
    system swapping or killing the process half-way through a run."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"{what} needs at least {nbytes / 2**30:.1f} GiB of memory, but only "
                          f"{avail / 2**30:.1f} GiB are available; use fewer steps, a "
                          f"smaller batch or fewer units (or split the sequence)")
