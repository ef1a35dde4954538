"""Dense products split over evsim's own threads.

evsim runs BLAS single-threaded during its calls (see :mod:`evsim.threads`),
so a large one-shot product such as the input drive ``x W`` would use one core
only. Here the rows of the left operand are cut into chunks of a size set by
the shapes
and the chunks are shared among Numba's threads, each calling BLAS on its
chunk. The chunking depends on the shapes only, so the result does not
depend on the number of threads.
"""

import numba
import numpy as np
from numba import prange

from evsim.kernels.cpu import _JIT

# Rows per chunk: at least MIN_ROWS (BLAS packs the right operand again for
# every chunk), and at most 1/CHUNKS of the rows (work for several threads).
# Measured on 2 cores: x (100 x 64) @ W (64 x 3072) 0.39 ms on 2 threads in
# chunks of 64 rows against 0.48 ms in one product; (1600 x 64) @ W 4.6 ms in
# chunks of 200 against 7.6 ms.
MIN_ROWS = 64
CHUNKS = 8


@numba.njit(parallel=True, **_JIT)
def _matmul_rows(A, B, out, chunk):
    """out = A @ B, rows of A in chunks of ``chunk``.

    A : (M, K) in, C-contiguous. B : (K, N) in, C- or F-contiguous.
    out : (M, N) out, C-contiguous.
    """
    M = A.shape[0]
    n_chunks = (M + chunk - 1) // chunk
    for k in prange(n_chunks):
        r0 = k * chunk
        r1 = min(M, r0 + chunk)
        np.dot(A[r0:r1], B, out[r0:r1])


def matmul(A, B):
    """A @ B for 2-D float arrays of one dtype (A C-contiguous), split over
    the calling thread's Numba threads."""
    out = np.empty((A.shape[0], B.shape[1]), A.dtype)
    if A.shape[0] == 0 or B.shape[1] == 0:
        return out
    if A.shape[1] == 0:
        out[:] = 0
        return out
    if not (B.flags.c_contiguous or B.flags.f_contiguous):
        B = np.ascontiguousarray(B)
    M = A.shape[0]
    _matmul_rows(np.ascontiguousarray(A), B, out, max(MIN_ROWS, -(-M // CHUNKS)))
    return out


def matmul_at(A, B):
    """A^T @ B (A (K, M), B (K, N)): the weight-gradient form, e.g.
    dR = yprev^T dq. A^T is copied to rows first (a copy of A, small next to
    the product) so that its rows can be split like :func:`matmul`'s."""
    return matmul(np.ascontiguousarray(A.T), B)
