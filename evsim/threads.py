"""Threads: the one place where evsim decides who runs on which core.

Three thread pools can share a machine's cores: Numba's (the kernels),
OpenBLAS's (NumPy's ``@`` and the BLAS products inside kernels) and, in user
scripts, torch's. When two of them are awake at once they fight: a kernel's
parallel region waits for a thread the operating system has lent to the other
pool (measured: one small forward pass 8 ms instead of 0.7 ms on 2 cores).

evsim therefore owns the pools for the whole of every public call (forward,
backward, a training step, a network run):

* BLAS runs single-threaded inside :func:`owned` (input products, projections,
  losses and optimiser steps are small; the kernels split their own work);
  the user's setting is restored when the outermost call returns, also after
  an exception and when several Python threads call evsim at once.
* Numba's thread count is chosen per call by :func:`plan` from the batch size
  and the work, capped by :data:`evsim.config.NUM_THREADS` (``None``: all the
  cores Numba was started with). Kernels split samples into tiles whose size
  depends on the batch size only, so results do not depend on the thread
  count.

A user who wants a fixed number of threads sets ``evsim.config.NUM_THREADS``
for the whole process, or ``with evsim.threads.limit(n):`` for a block
(``Trainer(threads=n)`` and ``evsim train --threads N`` use it). Results are
the same for every choice; only the time differs.
"""

import contextlib
import os
import sys
import threading
import time

import numba

from evsim import config

_lock = threading.Lock()
_local = threading.local()  # per Python thread: the cap set by limit()
_depth = 0  # nesting of owned() blocks, over all Python threads
_saved = []  # (controller, threads before the outermost block)
_blas = None
_blas_modules = 0  # len(sys.modules) when _blas was looked up


def _blas_controllers():
    """threadpoolctl controllers of every BLAS loaded in this process. Looked
    up again when modules were imported since the last look (a library such as
    torch may have brought its own BLAS)."""
    global _blas, _blas_modules
    if _blas is None or len(sys.modules) != _blas_modules:
        import scipy.linalg.cython_blas  # noqa: F401 (the BLAS Numba calls for np.dot)
        import threadpoolctl

        _blas = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
        _blas_modules = len(sys.modules)
    return _blas


@contextlib.contextmanager
def owned():
    """Run the block with BLAS single-threaded; restore it afterwards.

    Re-entrant and safe across Python threads: the first block to enter saves
    and limits the pools, the last one to leave restores them.
    """
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = [(lc, lc.num_threads) for lc in _blas_controllers()]
            for lc, _ in _saved:
                lc.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lc, n in _saved:
                    lc.set_num_threads(n)
                _saved = []


def _check_count(name, n):
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"{name} must be None or an integer >= 1, got {n!r}")
    return n


def available():
    """Threads evsim may use: the cap of :func:`limit`, else
    ``config.NUM_THREADS``, else all of Numba's threads."""
    most = numba.config.NUMBA_NUM_THREADS
    want = getattr(_local, "cap", None)
    if want is None:
        want = _check_count("config.NUM_THREADS", config.NUM_THREADS)
    return most if want is None else min(want, most)


@contextlib.contextmanager
def limit(n):
    """Cap evsim's threads at ``n`` in this Python thread inside the block
    (``None``: no cap beyond ``config.NUM_THREADS``)."""
    _check_count("threads", n)
    old = getattr(_local, "cap", None)
    _local.cap = n if n is not None else old
    try:
        yield
    finally:
        _local.cap = old


def tile_size(B):
    """Samples per work item of the whole-sequence kernels: from B alone."""
    # at most 63: the forward marks a tile's samples as bits of an int64
    return max(1, min(config.TILE_SAMPLES, 63, -(-B // config.MIN_TILES)))


def plan(B, work):
    """Numba threads for a call on a batch of B samples doing about ``work``
    multiply-adds: one when the call is too small to pay for waking a second
    thread (or, while another program runs, for waiting a scheduler time slice
    for it), else as many as there are tiles (up to :func:`available`)."""
    n_tiles = -(-B // tile_size(B))
    n = min(available(), n_tiles)
    if n < 2 or work < config.PARALLEL_MIN_WORK:
        return 1
    if work < config.PARALLEL_MIN_WORK_LOADED and others_running() > 0:
        return 1
    return n


_load = [-1.0, 0]  # (time read, tasks of other programs running then)


def plan_product(work):
    """Numba threads for one dense product of ``work`` multiply-adds (one
    parallel region): all available from ``config.PRODUCT_PARALLEL_MIN_WORK``
    up (and, while another program runs, from ``PARALLEL_MIN_WORK_LOADED``)."""
    n = available()
    if n < 2 or work < config.PRODUCT_PARALLEL_MIN_WORK:
        return 1
    if work < config.PARALLEL_MIN_WORK_LOADED and others_running() > 0:
        return 1
    return n


def others_running():
    """Tasks of other programs runnable right now (Linux: /proc/loadavg minus
    this process's running threads, read at most every 50 ms; 0 where
    unknown). A parallel region waits for all its threads: with another
    program on a core, one of them is often descheduled and the region waits a
    scheduler time slice (milliseconds) for it, so small and per-step parallel
    work runs on one thread instead."""
    now = time.monotonic()
    if now - _load[0] > 0.05:
        _load[:] = [now, _count_others()]
    return _load[1]


def _count_others():
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for task in os.scandir("/proc/self/task"):
            try:
                with open(os.path.join(task.path, "stat")) as f:
                    # the state follows the command name, which is in parentheses
                    own += f.read().rpartition(")")[2].split()[0] == "R"
            except OSError:
                pass
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - max(own, 1))


def per_step_threads(work):
    """Threads for a kernel with a parallel region per step (batch 1, split
    over columns): all available when the call is large and no other program
    is running, else one."""
    n = available()
    if n < 2 or work < config.PARALLEL_MIN_WORK or others_running() > 0:
        return 1
    return n


@contextlib.contextmanager
def numba_threads(n):
    """Run the block with ``n`` Numba threads in this Python thread (restored)."""
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)
