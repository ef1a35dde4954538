"""Tunables in one place: numeric defaults and kernel switches.

Kernels never hold literals like ``0.9``; they read these values (through the
functional API's defaults) or take them as arguments. ``_reset()`` restores
every value, for tests that patch them.
"""

# EGRU defaults (DESIGN.md section 1)
DAMP = 0.7
SUPPORT = 1.0
TRACE_ALPHA = 0.9
THRESHOLD_MEAN = 0.3  # mean of the Beta initialisation of thresholds
THRESHOLD_RANGE = (0.01, 2.0)  # kept by the optimiser's projection step

# CPU kernels
# Use a vectorisable polynomial exp for float32 (relative error ~2e-7); float64
# always uses libm's exact exp.
FAST_EXP_FLOAT32 = True
# The event-driven forward switches to the dense product above this fraction
# of units active at the previous step (measured break-even, see benchmarks).
DENSE_SWITCH_ACTIVITY = 0.6

# Run OpenBLAS single-threaded while the CPU kernels run: their dense products
# are split over Numba's threads, and two thread pools on the same cores fight.
BLAS_SINGLE_THREAD_IN_KERNELS = True

# CUDA kernels
THREADS_PER_BLOCK = 256

_DEFAULTS = {k: v for k, v in dict(globals()).items() if k.isupper()}


def _reset():
    """Restore every tunable to its default."""
    globals().update(_DEFAULTS)
