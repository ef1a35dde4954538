"""Backend dispatch: the adapter module that runs a kind of computation.

Adapters (:mod:`evsim.kernels.cpu_backend`, :mod:`evsim.kernels.cuda_backend`,
:mod:`evsim.kernels.reference_backend`) take the records of
:mod:`evsim.kernels.contract` and plain arrays. They are imported on first
use: the ``"cpu"`` and ``"cuda"`` paths never load the NumPy oracle.

=========  ==================  ==================  =====================
backend    EGRU, GRU           LIF                 projections, traces
=========  ==================  ==================  =====================
cpu        event-driven Numba  Numba               event-driven Numba
dense      dense-product Numba Numba               event-driven Numba
reference  NumPy oracle        Numba               event-driven Numba
cuda       numba.cuda          numba.cuda (fwd)    numba.cuda
=========  ==================  ==================  =====================
"""

BACKENDS = ("cpu", "dense", "reference", "cuda")
KINDS = ("egru", "lif", "projection", "trace")


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def adapter(backend, kind):
    """The adapter module running ``kind`` on ``backend`` (see the table)."""
    check_backend(backend)
    if backend == "cuda":
        from evsim.kernels import cuda, cuda_backend

        cuda.require()
        return cuda_backend
    if backend == "reference" and kind == "egru":
        from evsim.kernels import reference_backend

        return reference_backend
    from evsim.kernels import cpu_backend

    return cpu_backend
