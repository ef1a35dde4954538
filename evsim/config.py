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
# Where the event-driven paths hand over to dense BLAS products. Each is a
# fraction; None means "automatic". Both paths give the same result to
# rounding; only time differs.
# Forward: a dense product for a step when more than this fraction of the
# batch's units emitted an event at the previous step (auto: never; adding the
# rows of every event measured as fast as a BLAS product even at 100 %
# activity, see evsim/kernels/cpu_seq.py).
DENSE_SWITCH_ACTIVITY = None
# Backward: dense dq R^T (one BLAS product per tile and step) when more than
# this fraction of unit-steps is backward-active (auto: H / 1024; see
# evsim.kernels.cpu_backend.backward_switch for the measurements).
BACKWARD_DENSE_SWITCH = None
# Backward: dR as one product (rows split over threads) when more than this
# fraction of unit-steps fired (auto: 0.3, measured); event by event below,
# each thread owning whole rows of dR.
DR_DENSE_SWITCH = None

# Threads (evsim.threads decides, in one place). NUM_THREADS caps the Numba
# threads of every call (None: all Numba's threads); BLAS runs single-threaded
# inside evsim's calls whatever this says.
NUM_THREADS = None
# Whole-sequence kernels split the batch into tiles of at most TILE_SAMPLES
# samples, and into at least MIN_TILES tiles when B allows (tile size depends
# on B only, so results do not depend on the thread count).
TILE_SAMPLES = 8
MIN_TILES = 2
# A call doing fewer multiply-adds (dense equivalent) than this runs on one
# thread: waking a second one costs more than it saves. While another program
# is running, the bar is PARALLEL_MIN_WORK_LOADED: a parallel region may then
# wait a scheduler time slice (milliseconds) for a descheduled thread.
PARALLEL_MIN_WORK = 30_000_000
PARALLEL_MIN_WORK_LOADED = 1_000_000_000
# One-shot dense products (the input drive x W, dx, dW, a dense dR) split their
# rows over threads from this many multiply-adds up.
PRODUCT_PARALLEL_MIN_WORK = 4_000_000
# At batch 1 the columns (forward) and units (backward) are the only parallel
# axis, with one parallel region per step: used from this many units up (while
# another program runs, the same kernel runs its blocks on one thread, with the
# same result). The forward reads only the fired rows, so a step pays for the
# split only when H is large; the backward's dq R^T reads the rows of every
# backward-active unit and pays from a few hundred units.
COLUMN_SPLIT_MIN_H = 2048
UNIT_SPLIT_MIN_H = 512
# With a batch, the backward splits units per step (one BLAS product over the
# whole batch per unit block, as dense BPTT does) when more than this fraction
# of unit-steps is backward-active; below, tiles of samples do fewer products.
UNIT_SPLIT_MIN_ACTIVE = 0.9
# In the column-split forward, a step with fewer multiply-adds than this runs
# on the calling thread (at low activity the step is shorter than a wake-up).
STEP_PARALLEL_MIN_WORK = 500_000

# Backward through a dense projection from an event source: dout W^T as one
# BLAS product followed by the backward-active mask when at least this fraction
# of source unit-steps is active (a 128 x 10000 readout: BLAS won from 20 % up).
GRAD_SOURCE_DENSE_SWITCH = 0.1

# CUDA kernels
THREADS_PER_BLOCK = 256

# --------------------------------------------------------------------------
# Compiled network loop (evsim.network.compiled)

#: Steps per call of the compiled loop; between calls the chunk's events and
#: probed values go to the monitors, so memory is bounded by one chunk.
LOOP_CHUNK_STEPS = 2000
#: Upper bound on probed state values (steps x samples x probes) held per chunk.
LOOP_PROBE_VALUES = 4_000_000

_DEFAULTS = {k: v for k, v in dict(globals()).items() if k.isupper()}


def _reset():
    """Restore every tunable to its default."""
    globals().update(_DEFAULTS)
