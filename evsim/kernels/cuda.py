"""numba.cuda kernels for the EGRU, LIF populations and event-driven projections.

Functions on device arrays; the backend adapter of the functional layer is
:mod:`evsim.kernels.cuda_backend`. The EGRU cell maths is the one of
:mod:`evsim.kernels._cell` and the LIF's the one of :mod:`evsim.kernels.lif`,
both compiled here as CUDA device functions: no formula is repeated in this
file.

Importing this module never fails, with or without a GPU; :func:`require`
raises a ``RuntimeError`` that says what is missing (the ``numba-cuda``
package, a driver, a GPU). Under ``NUMBA_ENABLE_CUDASIM=1`` the kernels run in
Numba's CUDA simulator (tests on tiny sizes).

Organisation (T steps, B samples, H units, G = 3H):

Forward, one launch per step (:func:`forward_device`):

* ``fwd_step`` -- a block owns a tile of U units of one sample and all three
  gate columns of each. Its threads form U lanes x S slices: slice s adds the
  weight rows of events s, s + S, ... of the previous step (coalesced reads of
  ``R[i, j0:j0 + U]``), the slices are summed in shared memory in a fixed
  order, and lane threads run the fused pointwise update. The last block to
  finish a sample (a counter with a memory fence) compacts the sample's
  outputs into the ordered event list of the next step, so the next launch
  reads only the rows of fired units. Deterministic: no float atomics.

Backward (sparse BPTT), one launch per step (:func:`backward_device`):

* ``bwd_step`` -- a group of L lanes owns one (sample, unit) row. For step t
  it first computes ``dL/dy_t[i] = dq_{t+1} . R[i, :]`` only when unit i is
  backward-active at t (fired or inside the surrogate band; skipped rows
  cost nothing), reduces the lanes in shared memory, then lane 0 runs the
  pointwise backward of step t. A final launch (t = -1) gives ``dL/dy0``.
* bias and threshold gradients: per-(sample, unit) accumulators owned by one
  thread, then column sums by one thread per column (no atomics on floats).
* ``dR = sum_t y_{t-1}^T dq_t`` over events only: a unit-major list of the
  events of each unit (count, scan, fill: deterministic order), then one
  thread per weight column and row sums over that unit's events.

Projections (for the network; all device arrays, all time-major):

* :func:`compact_events` ``(y) -> (ev_idx, ev_cnt)`` -- ordered event lists.
* :func:`propagate_events` ``(ev_idx, ev_cnt, y, W, out)`` --
  ``out[t, b, :] += sum_e y[t, b, i_e] W[i_e, :]`` over the events only;
  :func:`propagate_csr_events` and :func:`propagate_csr_delayed_events` through
  sparse weights (one thread owns each output row: no atomics).
* :func:`event_weight_grad` ``(y, dout) -> dW`` -- ``dW = sum_t y_t^T dout_t``
  over the events of y only; :func:`event_weight_grad_csr` for sparse weights.
* :func:`source_grad`, :func:`source_grad_csr` -- ``dout W^T`` for the
  backward-active source units only.

LIF (:func:`lif_forward_device`): one thread per (sample, unit) runs
:func:`evsim.kernels.lif._unit_forward` over the whole sequence.

Tunables: ``config.THREADS_PER_BLOCK`` (a power of two, read at every launch,
so tests can patch it small) and :data:`MAX_BLOCKS` (grid size cap; all
kernels use grid-stride loops).
"""

import functools
import math
from types import SimpleNamespace

import numpy as np

from evsim import config

try:  # importing numba's CUDA target must never make this module fail
    from numba import cuda
except Exception as _exc:  # pragma: no cover - depends on the installation
    cuda = None
    _CUDA_IMPORT_ERROR = _exc
else:
    _CUDA_IMPORT_ERROR = None

# Largest grid of any launch; every kernel loops (grid-stride) over what is
# left. Read at launch time: tests patch it small so that the loops run.
MAX_BLOCKS = 65535

_SAVED = ("v", "z", "r", "g", "qg")
_RECORD = ("y", "h", "c") + _SAVED  # the fields of EGRUSaved


# --------------------------------------------------------------------------
# Availability


def _cuda():
    exc = _CUDA_IMPORT_ERROR
    if cuda is None:
        raise RuntimeError(
            "backend 'cuda' needs numba's CUDA target, which failed to import "
            f"({type(exc).__name__}: {exc}). Install it with `pip install evsim[cuda]` "
            "(the numba-cuda package), or use backend='cpu'."
        ) from exc
    return cuda


def simulator():
    """True when numba runs CUDA kernels in its simulator (NUMBA_ENABLE_CUDASIM=1)."""
    from numba.core import config as nconfig

    return bool(nconfig.ENABLE_CUDASIM)


def available():
    """True when the CUDA kernels can run (a usable GPU, or the simulator)."""
    try:
        require()
    except RuntimeError:
        return False
    return True


def require():
    """Raise a ``RuntimeError`` naming what is missing unless the kernels can run."""
    _cuda()
    if simulator():
        return
    try:
        ok = cuda.is_available()
    except Exception:  # pragma: no cover - driver-dependent
        ok = False
    if ok:
        return
    reason = "no CUDA GPU was found"
    try:
        cuda.gpus[0]  # the driver's own words: library missing, no device, ...
    except Exception as exc:
        text = " ".join(str(exc).split()).rstrip(" :")
        if "driver" in text.lower() and "cannot be found" in text.lower():
            reason = "the NVIDIA CUDA driver library was not found"
        reason = f"{reason} ({type(exc).__name__}: {text})"
    raise RuntimeError(
        f"backend 'cuda' is not usable on this machine: {reason}. It needs an NVIDIA "
        "GPU with its driver and the numba-cuda package (`pip install evsim[cuda]`); "
        "use backend='cpu' otherwise."
    )


# --------------------------------------------------------------------------
# Launch geometry


def _tpb():
    tpb = int(config.THREADS_PER_BLOCK)
    if tpb < 1 or tpb > 1024 or tpb & (tpb - 1):
        raise ValueError(
            "config.THREADS_PER_BLOCK must be a power of two in [1, 1024], "
            f"got {config.THREADS_PER_BLOCK}"
        )
    return tpb


def _blocks(n):
    return int(max(1, min(n, int(MAX_BLOCKS))))


def _fwd_lanes(tpb):
    """Forward tile: U unit lanes x S event slices = tpb threads."""
    U = max(1, min(32, tpb // 8))
    return U, tpb // U


def _bwd_lanes(tpb):
    """Backward: L lanes per (sample, unit) row, P rows per block."""
    L = max(1, min(32, tpb // 4))
    return L, tpb // L


# --------------------------------------------------------------------------
# Kernels, compiled per dtype and feature flags (flags are compile-time
# constants: the unused branches are not in the compiled variant).


@functools.lru_cache(maxsize=None)
def _cell_device(dtype):
    """The cell maths as device functions with constants of ``dtype``: float32
    kernels compute in float32 (a Python float constant is a float64 and would
    promote every gate to float64; ``math.exp`` of a float32 is ``expf``)."""
    from evsim.kernels import _cell

    _cuda()
    return _cell.build(cuda.jit(device=True, inline=True), math.exp,
                       real=np.dtype(dtype).type)


@functools.lru_cache(maxsize=None)
def _common(dtype):
    """Kernels that depend only on the float dtype."""
    import numba

    _cuda()
    FT = numba.from_dtype(np.dtype(dtype))
    i32 = numba.int32
    i64 = numba.int64
    ZERO = np.dtype(dtype).type(0)

    @cuda.jit(device=True)
    def block_scan(shi, base, tid, tpb):
        """Inclusive prefix sum of shi[base:base + tpb] in place; all threads call."""
        off = 1
        while off < tpb:
            val = shi[base + tid]
            if tid >= off:
                val += shi[base + tid - off]
            cuda.syncthreads()
            shi[base + tid] = val
            cuda.syncthreads()
            off *= 2

    @cuda.jit(device=True)
    def block_compact(src, t, b, n, out, slot, shi, base, tid, tpb):
        """Ordered list of j with src[t, b, j] != 0 into out[slot, b, :]; returns
        the count (same value in every thread). All threads of the block call."""
        per = (n + tpb - 1) // tpb
        lo = tid * per
        hi = min(n, lo + per)
        cnt = 0
        for j in range(lo, hi):
            if src[t, b, j] != 0:
                cnt += 1
        shi[base + tid] = cnt
        cuda.syncthreads()
        block_scan(shi, base, tid, tpb)
        pos = shi[base + tid] - cnt
        for j in range(lo, hi):
            if src[t, b, j] != 0:
                out[slot, b, pos] = j
                pos += 1
        total = shi[base + tpb - 1]
        cuda.syncthreads()
        return total

    @cuda.jit
    def fill(arr, value):
        """arr (N,) out: every entry set to value."""
        for k in range(cuda.grid(1), arr.shape[0], cuda.gridsize(1)):
            arr[k] = value

    @cuda.jit
    def column_sums(src, out):
        """out[k] = sum_s src[s, k] in order of s; src (S, K) in, out (K,) out."""
        for k in range(cuda.grid(1), src.shape[1], cuda.gridsize(1)):
            acc = ZERO
            for s in range(src.shape[0]):
                acc += src[s, k]
            out[k] = acc

    @cuda.jit
    def last_state(h0, y0, h, y, lengths, h_last, y_last):
        """h_last, y_last (B, H) out: state after each sample's last step."""
        T, B, H = h.shape
        for w in range(cuda.grid(1), B * H, cuda.gridsize(1)):
            b = w // H
            j = w % H
            L = lengths[b]
            if L == 0:
                h_last[b, j] = h0[b, j]
                y_last[b, j] = y0[b, j]
            else:
                h_last[b, j] = h[L - 1, b, j]
                y_last[b, j] = y[L - 1, b, j]

    @cuda.jit
    def compact(src, out, cnt, slot0, ioff):
        """Event lists of src (T, B, N) in: out[slot0 + t, b, :cnt[slot0 + t, b]]
        (int32 out) are the j with src[t, b, j] != 0, in increasing order.
        One block per (t, b) row (grid-stride). Shared memory: ioff + tpb int32."""
        T, B, N = src.shape
        tid = cuda.threadIdx.x
        tpb = cuda.blockDim.x
        shi = cuda.shared.array(0, i32)
        for w in range(cuda.blockIdx.x, T * B, cuda.gridDim.x):
            t = w // B
            b = w % B
            n = block_compact(src, t, b, N, out, slot0 + t, shi, ioff, tid, tpb)
            if tid == 0:
                cnt[slot0 + t, b] = n

    @cuda.jit
    def propagate(ev_idx, ev_cnt, slot0, y, W, out):
        """out[t, b, k] += sum_e y[t, b, i_e] W[i_e, k] over the events
        i_e = ev_idx[slot0 + t, b, e], e < ev_cnt[slot0 + t, b].
        y (T, B, N) in, W (N, K) in, out (T, B, K) io. Thread per (t, b, k)."""
        T, B, K = out.shape
        for w in range(cuda.grid(1), T * B * K, cuda.gridsize(1)):
            k = w % K
            tb = w // K
            t = tb // B
            b = tb % B
            acc = ZERO
            for e in range(ev_cnt[slot0 + t, b]):
                i = ev_idx[slot0 + t, b, e]
                acc += y[t, b, i] * W[i, k]
            out[t, b, k] += acc

    @cuda.jit(device=True)
    def source(y0, y, lengths, shift, t, b, i):
        """Value of unit i that feeds step t of sample b (0 past its end)."""
        if t >= lengths[b]:
            return ZERO
        if shift:
            return y0[b, i] if t == 0 else y[t - 1, b, i]
        return y[t, b, i]

    @cuda.jit
    def unit_count(y0, y, lengths, shift, cnt):
        """cnt[i] (int64 out): non-zero source values of unit i over all (t, b)."""
        T, B, N = y.shape
        for i in range(cuda.grid(1), N, cuda.gridsize(1)):
            n = 0
            for s in range(T * B):
                if source(y0, y, lengths, shift, s // B, s % B, i) != 0:
                    n += 1
            cnt[i] = n

    @cuda.jit
    def exclusive_scan(cnt, off, ioff):
        """off[0] = 0, off[i + 1] = cnt[0] + ... + cnt[i]; one block. int64
        counts, offsets and shared partial sums: a total of events may pass 2**31."""
        tid = cuda.threadIdx.x
        tpb = cuda.blockDim.x
        shi = cuda.shared.array(0, i64)
        if cuda.blockIdx.x != 0:
            return
        N = cnt.shape[0]
        per = (N + tpb - 1) // tpb
        lo = tid * per
        hi = min(N, lo + per)
        part = 0
        for i in range(lo, hi):
            part += cnt[i]
        shi[ioff + tid] = part
        cuda.syncthreads()
        block_scan(shi, ioff, tid, tpb)
        acc = shi[ioff + tid] - part
        if tid == 0:
            off[0] = 0
        for i in range(lo, hi):
            acc += cnt[i]
            off[i + 1] = acc

    @cuda.jit
    def unit_fill(y0, y, lengths, shift, off, ev_s, ev_v):
        """Unit-major event list: ev_s[off[i]:off[i + 1]] (int64 out) are the
        rows s = t * B + b where unit i fed a non-zero value, in increasing s,
        ev_v the values."""
        T, B, N = y.shape
        for i in range(cuda.grid(1), N, cuda.gridsize(1)):
            pos = off[i]
            for s in range(T * B):
                val = source(y0, y, lengths, shift, s // B, s % B, i)
                if val != 0:
                    ev_s[pos] = s
                    ev_v[pos] = val
                    pos += 1

    @cuda.jit
    def outer_events(off, ev_s, ev_v, dout, dW):
        """dW[i, k] = sum_e ev_v[e] dout[ev_s[e], k] over unit i's events.
        dout (S, K) in, dW (N, K) out. Thread per (i, k): rows independent."""
        N, K = dW.shape
        for w in range(cuda.grid(1), N * K, cuda.gridsize(1)):
            i = w // K
            k = w % K
            acc = ZERO
            for e in range(off[i], off[i + 1]):
                acc += ev_v[e] * dout[ev_s[e], k]
            dW[i, k] = acc

    @cuda.jit
    def scale(dW, mask):
        """dW *= mask elementwise (2-D)."""
        N, K = dW.shape
        for w in range(cuda.grid(1), N * K, cuda.gridsize(1)):
            dW[w // K, w % K] *= mask[w // K, w % K]

    @cuda.jit
    def trace_fwd(y, alpha, trace):
        """trace_t = alpha trace_{t-1} + (1 - alpha) y_t; (T, B, H) in / out."""
        T, B, H = y.shape
        for w in range(cuda.grid(1), B * H, cuda.gridsize(1)):
            b = w // H
            j = w % H
            acc = ZERO
            for t in range(T):
                acc = alpha * acc + (1 - alpha) * y[t, b, j]
                trace[t, b, j] = acc

    @cuda.jit
    def trace_bwd(dtrace, alpha, dy):
        """dy += dL/dy through the trace given dtrace (T, B, H)."""
        T, B, H = dtrace.shape
        for w in range(cuda.grid(1), B * H, cuda.gridsize(1)):
            b = w // H
            j = w % H
            acc = ZERO
            for t in range(T - 1, -1, -1):
                acc = alpha * acc + dtrace[t, b, j]
                dy[t, b, j] += (1 - alpha) * acc

    return SimpleNamespace(
        FT=FT,
        block_compact=block_compact,
        fill=fill,
        column_sums=column_sums,
        last_state=last_state,
        compact=compact,
        propagate=propagate,
        unit_count=unit_count,
        exclusive_scan=exclusive_scan,
        unit_fill=unit_fill,
        outer_events=outer_events,
        scale=scale,
        trace_fwd=trace_fwd,
        trace_bwd=trace_bwd,
    )


@functools.lru_cache(maxsize=None)
def _steps(dtype, keep_mode, dense_gru, save):
    """The per-step forward and backward kernels for one feature combination."""
    import numba

    _cuda()
    cell = _cell_device(dtype)
    gates, fire, cell_backward, backward_active = (
        cell.gates,
        cell.fire,
        cell.backward,
        cell.backward_active,
    )
    com = _common(dtype)
    block_compact = com.block_compact
    FT = com.FT
    i32 = numba.int32
    ZERO = np.dtype(dtype).type(0)
    ONE = np.dtype(dtype).type(1)

    @cuda.jit(device=True)
    def keep_value(keep, t, b, j):
        if keep_mode == 1:
            return keep[t, b, j]
        if keep_mode == 2:
            return keep[0, 0, 0]
        return ONE

    @cuda.jit
    def fwd_step(
        t,
        a,
        R,
        br,
        thr,
        h0,
        y0,
        keep,
        lengths,
        y,
        h,
        c,
        v,
        z,
        r,
        g,
        qg,
        ev_idx,
        ev_cnt,
        done,
        counts,
        U,
        ioff,
    ):
        """Step t of the event-driven forward.

        a (T, B, G) in: input drive. R (H, G) in. br (G,) in. thr (H,) in.
        h0, y0 (B, H) in. keep: zoneout keep factors (per keep_mode) in.
        lengths (B,) int64 in. y, h, c (T, B, H) out at step t (zero beyond).
        v, z, r, g, qg (T, B, H) out when saving (else any shape).
        ev_idx (T + 1, B, H) int32 io: slot t is read, slot t + 1 written.
        ev_cnt (T + 1, B) int32 io. done (B,) int32 scratch, zero between steps.
        counts (B, 3) int64 io: events, recurrent multiply-adds done.
        U: unit lanes per block (blockDim.x = U * S). ioff: int32 offset of the
        int shared region (after 3 * blockDim.x floats).
        """
        T, B, G = a.shape
        H = G // 3
        tid = cuda.threadIdx.x
        tpb = cuda.blockDim.x
        S = tpb // U
        lane = tid % U
        sl = tid // U
        ntiles = (H + U - 1) // U
        shf = cuda.shared.array(0, FT)
        shi = cuda.shared.array(0, i32)
        for w in range(cuda.blockIdx.x, B * ntiles, cuda.gridDim.x):
            b = w // ntiles
            if t >= lengths[b]:
                continue  # block-uniform
            j = (w % ntiles) * U + lane
            qz = ZERO
            qr = ZERO
            qgj = ZERO
            if j < H:
                for e in range(sl, ev_cnt[t, b], S):
                    i = ev_idx[t, b, e]
                    val = y0[b, i] if t == 0 else y[t - 1, b, i]
                    qz += val * R[i, j]
                    qr += val * R[i, H + j]
                    qgj += val * R[i, 2 * H + j]
            shf[tid] = qz
            shf[tpb + tid] = qr
            shf[2 * tpb + tid] = qgj
            cuda.syncthreads()
            if sl == 0 and j < H:
                qz = br[j]
                qr = br[H + j]
                qgj = br[2 * H + j]
                for s in range(S):
                    qz += shf[s * U + lane]
                    qr += shf[tpb + s * U + lane]
                    qgj += shf[2 * tpb + s * U + lane]
                hprev = h0[b, j] if t == 0 else h[t - 1, b, j]
                zj, rj, gj, vj = gates(
                    a[t, b, j],
                    a[t, b, H + j],
                    a[t, b, 2 * H + j],
                    qz,
                    qr,
                    qgj,
                    hprev,
                    keep_value(keep, t, b, j),
                )
                cj, yj, hj = fire(vj, thr[j], dense_gru)
                y[t, b, j] = yj
                h[t, b, j] = hj
                c[t, b, j] = cj
                if save:
                    v[t, b, j] = vj
                    z[t, b, j] = zj
                    r[t, b, j] = rj
                    g[t, b, j] = gj
                    qg[t, b, j] = qgj
            # The last block of sample b to finish builds its event list.
            cuda.threadfence()
            cuda.syncthreads()
            if tid == 0:
                old = cuda.atomic.add(done, b, 1)
                shi[ioff] = 1 if old == ntiles - 1 else 0
            cuda.syncthreads()
            if shi[ioff] == 1:
                n = block_compact(y, t, b, H, ev_idx, t + 1, shi, ioff + 1, tid, tpb)
                if tid == 0:
                    ev_cnt[t + 1, b] = n
                    done[b] = 0
                    counts[b, 0] += H if dense_gru else n
                    counts[b, 1] += ev_cnt[t, b] * G
            cuda.syncthreads()

    @cuda.jit
    def bwd_step(
        t,
        R,
        thr,
        keep,
        lengths,
        damp,
        support,
        c,
        v,
        z,
        r,
        g,
        qg,
        h0,
        h,
        dy,
        dh,
        dy_next,
        da,
        dq,
        dthr_b,
        counts,
        L,
        ioff,
    ):
        """Step t of the sparse BPTT (t = -1: only dL/dy0).

        R (H, G) in. thr (H,) in. keep, lengths as in fwd_step.
        c, v, z, r, g, qg, h (T, B, H) in: saved by the forward pass.
        dy (T, B, H) in: dL/dy_t from outside.
        dh (B, H) io: dL/dh_t in, dL/dh_{t-1} out.
        dy_next (B, H) io: in, dL/dy_last; out, dL/dy_t (recurrent part), then
            after t = -1, dL/dy0. Rows where step t + 1 ran are overwritten with
            dq_{t+1} . R[i, :] for backward-active units and 0 for the others.
        da, dq (T, B, G) io: row t written (gate and recurrent-drive gradients),
            row t + 1 read. dthr_b (B, H) io: per-sample threshold gradient.
        counts (B,) int64 io: rows of dq R^T computed (t >= 0).
        L: lanes per row (blockDim.x = L * P). ioff: int32 shared offset.
        """
        T, B, H = v.shape
        G = 3 * H
        tid = cuda.threadIdx.x
        tpb = cuda.blockDim.x
        P = tpb // L
        lane = tid % L
        rl = tid // L
        tn = t + 1
        ntiles = (B * H + P - 1) // P
        shf = cuda.shared.array(0, FT)
        shi = cuda.shared.array(0, i32)
        for w in range(cuda.blockIdx.x, ntiles, cuda.gridDim.x):
            row = w * P + rl
            b = row // H
            i = row % H
            need = False
            active = False
            part = ZERO
            if row < B * H and tn < lengths[b]:
                need = True
                active = t < 0 or backward_active(v[t, b, i], thr[i], support, dense_gru)
                if active:
                    for k in range(lane, G, L):
                        part += dq[tn, b, k] * R[i, k]
            shf[tid] = part
            cuda.syncthreads()
            s = L // 2
            while s > 0:
                if lane < s:
                    shf[tid] += shf[tid + s]
                cuda.syncthreads()
                s //= 2
            if lane == 0:
                shi[ioff + rl] = 1 if (active and t >= 0) else 0
                if need:
                    dy_next[b, i] = shf[tid]
                if row < B * H and t >= 0 and t < lengths[b]:
                    hprev = h0[b, i] if t == 0 else h[t - 1, b, i]
                    rt = r[t, b, i]
                    dpz, dpr, dpg, dhp, dth = cell_backward(
                        dy[t, b, i] + dy_next[b, i],
                        dh[b, i],
                        v[t, b, i],
                        c[t, b, i],
                        z[t, b, i],
                        rt,
                        g[t, b, i],
                        qg[t, b, i],
                        hprev,
                        thr[i],
                        keep_value(keep, t, b, i),
                        damp,
                        support,
                        dense_gru,
                    )
                    da[t, b, i] = dpz
                    da[t, b, H + i] = dpr
                    da[t, b, 2 * H + i] = dpg
                    dq[t, b, i] = dpz
                    dq[t, b, H + i] = dpr
                    dq[t, b, 2 * H + i] = dpg * rt
                    dh[b, i] = dhp
                    dthr_b[b, i] += dth
            cuda.syncthreads()
            if tid == 0:  # per-block count of computed rows, one atomic per sample
                cur = -1
                n = 0
                for p in range(P):
                    if shi[ioff + p] == 1:
                        bb = (w * P + p) // H
                        if bb != cur:
                            if n > 0:
                                cuda.atomic.add(counts, cur, n)
                            cur = bb
                            n = 0
                        n += 1
                if n > 0:
                    cuda.atomic.add(counts, cur, n)
            cuda.syncthreads()

    return SimpleNamespace(fwd_step=fwd_step, bwd_step=bwd_step)


@functools.lru_cache(maxsize=None)
def _active(dtype, dense_gru):
    """The backward-active mask kernel (the cell's test, as the backward applies it)."""
    _cuda()
    backward_active = _cell_device(dtype).backward_active

    @cuda.jit
    def mask(v, thr, support, out):
        """out[t, b, i] (uint8 out) = 1 where unit i of sample b at step t fired
        or sat inside the surrogate band. v (T, B, H) in, thr (H,) in."""
        T, B, H = v.shape
        for w in range(cuda.grid(1), T * B * H, cuda.gridsize(1)):
            i = w % H
            tb = w // H
            t = tb // B
            b = tb % B
            out[t, b, i] = 1 if backward_active(v[t, b, i], thr[i], support, dense_gru) else 0

    return SimpleNamespace(mask=mask)


@functools.lru_cache(maxsize=None)
def _projection(dtype):
    """Kernels of sparse projections and of the source gradient."""
    _cuda()
    ZERO = np.dtype(dtype).type(0)

    @cuda.jit
    def propagate_csr(ev_idx, ev_cnt, y, indptr, indices, data, out, macs):
        """One thread per (t, b) row of out (T, B, M) io: adds the non-zeros of
        the rows of the events, in event order. macs (T * B,) int64 out."""
        T, B, M = out.shape
        for w in range(cuda.grid(1), T * B, cuda.gridsize(1)):
            t = w // B
            b = w % B
            n = 0
            for e in range(ev_cnt[t, b]):
                i = ev_idx[t, b, e]
                val = y[t, b, i]
                for k in range(indptr[i], indptr[i + 1]):
                    out[t, b, indices[k]] += val * data[k]
                n += indptr[i + 1] - indptr[i]
            macs[w] = n

    @cuda.jit
    def propagate_csr_delayed(ev_idx, ev_cnt, y, indptr, indices, data, delays, lengths, out,
                              macs):
        """One thread per sample b (it owns out[:, b, :]): event of step t adds
        to row t + delays[k] (dropped past T_out). macs (B,) int64 out."""
        T, B, N = y.shape
        T_out = out.shape[0]
        for b in range(cuda.grid(1), B, cuda.gridsize(1)):
            n = 0
            steps = T if lengths[b] > T else lengths[b]
            for t in range(steps):
                for e in range(ev_cnt[t, b]):
                    i = ev_idx[t, b, e]
                    val = y[t, b, i]
                    for k in range(indptr[i], indptr[i + 1]):
                        td = t + delays[k]
                        if td < T_out:
                            out[td, b, indices[k]] += val * data[k]
                    n += indptr[i + 1] - indptr[i]
            macs[b] = n

    @cuda.jit
    def outer_events_csr(off, ev_s, ev_v, dout, rows, indices, ddata):
        """ddata[k] = sum over the events e of unit rows[k] of
        ev_v[e] dout[ev_s[e], indices[k]]; one thread per non-zero k."""
        for k in range(cuda.grid(1), ddata.shape[0], cuda.gridsize(1)):
            i = rows[k]
            col = indices[k]
            acc = ZERO
            for e in range(off[i], off[i + 1]):
                acc += ev_v[e] * dout[ev_s[e], col]
            ddata[k] = acc

    @cuda.jit
    def source_dense(dout, W, mask, use_mask, lengths, dsrc):
        """dsrc[t, b, i] (out) = dout[t, b, :] . W[i, :] where needed, else 0."""
        T, B, M = dout.shape
        N = W.shape[0]
        for w in range(cuda.grid(1), T * B * N, cuda.gridsize(1)):
            i = w % N
            tb = w // N
            t = tb // B
            b = tb % B
            acc = ZERO
            if t < lengths[b] and (not use_mask or mask[t, b, i] != 0):
                for k in range(M):
                    acc += dout[t, b, k] * W[i, k]
            dsrc[t, b, i] = acc

    @cuda.jit
    def source_csr(dout, indptr, indices, data, mask, use_mask, lengths, dsrc):
        """dsrc[t, b, i] (out) = sum over row i of data[k] dout[t, b, indices[k]]."""
        T, B, _ = dout.shape
        N = indptr.shape[0] - 1
        for w in range(cuda.grid(1), T * B * N, cuda.gridsize(1)):
            i = w % N
            tb = w // N
            t = tb // B
            b = tb % B
            acc = ZERO
            if t < lengths[b] and (not use_mask or mask[t, b, i] != 0):
                for k in range(indptr[i], indptr[i + 1]):
                    acc += data[k] * dout[t, b, indices[k]]
            dsrc[t, b, i] = acc

    return SimpleNamespace(propagate_csr=propagate_csr,
                           propagate_csr_delayed=propagate_csr_delayed,
                           outer_events_csr=outer_events_csr, source_dense=source_dense,
                           source_csr=source_csr)


@functools.lru_cache(maxsize=1)
def _lif():
    """The LIF sequence kernel: :func:`evsim.kernels.lif._unit_forward`, the
    CPU's own per-unit loop, compiled as a CUDA device function with the
    inline maths it calls (``arrive``, ``membrane``, ``membrane_cond``)
    compiled for CUDA too: the update is written once, in kernels/lif.py."""
    import types

    from evsim.kernels import lif as klif

    _cuda()
    device = cuda.jit(device=True)
    maths = {n: device(getattr(klif, n).py_func)
             for n in ("arrive", "membrane", "membrane_cond", "surrogate")}

    def on_device(fn):
        src = fn.py_func
        scope = dict(src.__globals__, **maths)
        return device(types.FunctionType(src.__code__, scope, src.__name__, src.__defaults__,
                                         src.__closure__))

    unit_forward = on_device(klif._unit_forward)
    unit_backward = on_device(klif._unit_backward)

    @cuda.jit
    def forward(x, kinds, a, c, e_rev, cond, a_m, dt_tau, v_rest, v_th, v_reset, n_ref, v0, I0,
                r0, lengths, s, u, v, I, held, v_last, I_last, r_last, counts):  # noqa: E741
        """One thread per (b, j) unit (grid-stride); counts (B N,) int64 out:
        spikes per unit. The other arguments: :func:`evsim.kernels.lif.lif_forward`."""
        T, B, N = s.shape
        for w in range(cuda.grid(1), B * N, cuda.gridsize(1)):
            b = w // N
            counts[w] = unit_forward(b, w % N, x, kinds, a, c, e_rev, cond, a_m, dt_tau, v_rest,
                                     v_th, v_reset, n_ref, v0, I0, r0, lengths[b], s, u, v, I,
                                     held, v_last, I_last, r_last)

    @cuda.jit
    def backward(ds, s, u, held, kinds, a, c, a_m, v_th, v_reset, damp, support, lengths, dv_in,
                 dI_in, dx, dv0, dI0):
        """One thread per (b, j) unit (grid-stride); the arguments of
        :func:`evsim.kernels.lif.lif_backward`."""
        T, B, N = ds.shape
        for w in range(cuda.grid(1), B * N, cuda.gridsize(1)):
            b = w // N
            unit_backward(b, w % N, ds, s, u, held, kinds, a, c, a_m, v_th, v_reset, damp,
                          support, lengths[b], dv_in, dI_in, dx, dv0, dI0)

    return SimpleNamespace(forward=forward, backward=backward)


# --------------------------------------------------------------------------
# Device-array helpers


def _zeros(shape, dtype):
    """A zero-filled device array (no host allocation of its size)."""
    _cuda()
    arr = cuda.device_array(shape, dtype=dtype)
    n = int(np.prod(shape))
    if n:
        flat = arr.reshape(n)
        _common(np.dtype(np.float64)).fill[_blocks((n + _tpb() - 1) // _tpb()), _tpb()](flat, 0)
    return arr


def _dev(x):
    """A device array for x (device arrays pass through, host arrays are copied)."""
    if hasattr(x, "copy_to_host"):
        return x
    return _cuda().to_device(np.ascontiguousarray(x))


def _grid1(n):
    tpb = _tpb()
    return _blocks((n + tpb - 1) // tpb), tpb


def _int_shared(tpb, fbytes_per_thread):
    """(int32 offset, dynamic shared bytes) for fbytes_per_thread float bytes
    per thread followed by tpb + 1 int32 values."""
    fbytes = tpb * fbytes_per_thread
    fbytes = (fbytes + 3) // 4 * 4
    return fbytes // 4, fbytes + 4 * (tpb + 1)


# --------------------------------------------------------------------------
# Forward and backward on device arrays


def forward_device(a, R, br, thr, h0, y0, keep, keep_mode, lengths, dense_gru=False, save=True):
    """Run the event-driven forward on device arrays; returns a dict of device
    arrays ``y, h, c, h_last, y_last, v, z, r, g, qg, ev_idx, ev_cnt, counts``.

    a (T, B, G), R (H, G), br (G,), thr (H,), h0, y0 (B, H), keep ((T, B, H) or
    (1, 1, 1)) with keep_mode 0 (none), 1 (per element), 2 (constant);
    lengths (B,) int64. Nothing is copied to the host.
    """
    T, B, G = a.shape
    H = G // 3
    dt = np.dtype(a.dtype)
    tpb = _tpb()
    k = _steps(dt, int(keep_mode), bool(dense_gru), bool(save))
    com = _common(dt)
    out = {n: _zeros((T, B, H), dt) for n in ("y", "h", "c")}
    for n in _SAVED:
        out[n] = _zeros((T, B, H) if save else (1, 1, 1), dt)
    ev_idx = _zeros((T + 1, B, H), np.int32)
    ev_cnt = _zeros((T + 1, B), np.int32)
    done = _zeros((B,), np.int32)
    counts = _zeros((B, 3), np.int64)
    ioff0, shm0 = _int_shared(tpb, 0)
    com.compact[_blocks(B), tpb, 0, shm0](y0.reshape(1, B, H), ev_idx, ev_cnt, 0, ioff0)
    U, _ = _fwd_lanes(tpb)
    ioff, shm = _int_shared(tpb, 3 * dt.itemsize)
    grid = _blocks(B * ((H + U - 1) // U))
    for t in range(T):
        k.fwd_step[grid, tpb, 0, shm](
            t,
            a,
            R,
            br,
            thr,
            h0,
            y0,
            keep,
            lengths,
            out["y"],
            out["h"],
            out["c"],
            *(out[n] for n in _SAVED),
            ev_idx,
            ev_cnt,
            done,
            counts,
            U,
            ioff,
        )
    out["h_last"] = _zeros((B, H), dt)
    out["y_last"] = _zeros((B, H), dt)
    com.last_state[_grid1(B * H)](h0, y0, out["h"], out["y"], lengths, out["h_last"], out["y_last"])
    out.update(ev_idx=ev_idx, ev_cnt=ev_cnt, counts=counts)
    return out


def backward_device(
    R,
    thr,
    keep,
    keep_mode,
    lengths,
    dense_gru,
    damp,
    support,
    saved,
    h0,
    y0,
    dy,
    dh,
    dy_next,
    rmask=None,
):
    """Sparse BPTT on device arrays.

    saved: the dict of :func:`forward_device` (c, v, z, r, g, qg, h, y).
    dy (T, B, H) in; dh, dy_next (B, H) io (in: gradients of the final state;
    out: of the initial state). Returns a dict of device arrays ``drive`` (da),
    ``dq``, ``R``, ``br``, ``thr``, ``h0``, ``y0`` and ``active_rows`` (B,)
    int64, and the host int ``dR_events``.
    """
    T, B, H = saved["v"].shape
    G = 3 * H
    dt = np.dtype(saved["v"].dtype)
    tpb = _tpb()
    k = _steps(dt, int(keep_mode), bool(dense_gru), True)
    damp, support = dt.type(damp), dt.type(support)  # a Python float would be float64
    com = _common(dt)
    da = _zeros((T, B, G), dt)
    dq = _zeros((T, B, G), dt)
    dthr_b = _zeros((B, H), dt)
    active = _zeros((B,), np.int64)
    L, P = _bwd_lanes(tpb)
    ioff, shm = _int_shared(tpb, dt.itemsize)
    grid = _blocks((B * H + P - 1) // P)
    s = saved
    for t in range(T - 1, -2, -1):
        k.bwd_step[grid, tpb, 0, shm](
            t,
            R,
            thr,
            keep,
            lengths,
            damp,
            support,
            s["c"],
            s["v"],
            s["z"],
            s["r"],
            s["g"],
            s["qg"],
            h0,
            s["h"],
            dy,
            dh,
            dy_next,
            da,
            dq,
            dthr_b,
            active,
            L,
            ioff,
        )
    dbr = _zeros((G,), dt)
    com.column_sums[_grid1(G)](dq.reshape(T * B, G), dbr)
    dthr = _zeros((H,), dt)
    com.column_sums[_grid1(H)](dthr_b, dthr)
    dR, n_ev = _event_weight_grad(y0, s["y"], lengths, True, dq.reshape(T * B, G), dt)
    if rmask is not None:
        com.scale[_grid1(H * G)](dR, rmask)
    return dict(
        drive=da,
        dq=dq,
        R=dR,
        br=dbr,
        thr=dthr,
        h0=dh,
        y0=dy_next,
        active_rows=active,
        dR_events=n_ev,
    )


def _unit_major(y0, y, lengths, shift, dt):
    """Unit-major event list of the non-zero source values (src = y, or y
    shifted by one step after y0 when shift): offsets ``off`` (N + 1,) int64,
    rows ``ev_s`` (t * B + b, int64) and values ``ev_v``, and the number of
    events (int64 throughout: T * B * N may pass 2**31)."""
    T, B, N = y.shape
    com = _common(dt)
    tpb = _tpb()
    cnt = _zeros((N,), np.int64)
    com.unit_count[_grid1(N)](y0, y, lengths, shift, cnt)
    off = _zeros((N + 1,), np.int64)
    com.exclusive_scan[1, tpb, 0, 8 * (tpb + 1)](cnt, off, 0)
    n_ev = int(off[N : N + 1].copy_to_host()[0])
    ev_s = _zeros((max(n_ev, 1),), np.int64)
    ev_v = _zeros((max(n_ev, 1),), dt)
    com.unit_fill[_grid1(N)](y0, y, lengths, shift, off, ev_s, ev_v)
    return off, ev_s, ev_v, n_ev


def _event_weight_grad(y0, y, lengths, shift, dout2, dt):
    """dW (N, K) = sum over (t, b) of src[t, b, :]^T dout2[t * B + b, :] over the
    non-zero src values only (src = y shifted by one step after y0 when shift)."""
    N = y.shape[2]
    K = dout2.shape[1]
    off, ev_s, ev_v, n_ev = _unit_major(y0, y, lengths, shift, dt)
    dW = _zeros((N, K), dt)
    _common(dt).outer_events[_grid1(N * K)](off, ev_s, ev_v, dout2, dW)
    return dW, n_ev


# --------------------------------------------------------------------------
# Projections: event propagation for the network (device arrays in and out)


def compact_events(y):
    """Ordered event lists of y (T, B, N) (device or host): returns device arrays
    ``ev_idx`` (T, B, N) int32 and ``ev_cnt`` (T, B) int32 with
    ``ev_idx[t, b, :ev_cnt[t, b]]`` the units j with ``y[t, b, j] != 0``."""
    require()
    y = _dev(y)
    T, B, N = y.shape
    tpb = _tpb()
    ev_idx = _zeros((T, B, N), np.int32)
    ev_cnt = _zeros((T, B), np.int32)
    ioff, shm = _int_shared(tpb, 0)
    _common(np.dtype(y.dtype)).compact[_blocks(T * B), tpb, 0, shm](y, ev_idx, ev_cnt, 0, ioff)
    return ev_idx, ev_cnt


def propagate_events(ev_idx, ev_cnt, y, W, out, slot0=0):
    """Event-driven projection: ``out[t, b, :] += sum_e y[t, b, i_e] W[i_e, :]``.

    ev_idx (S, B, N) int32, ev_cnt (S, B) int32: event lists, slot
    ``slot0 + t`` for step t (slot0 = 1 for the lists of :func:`forward_device`,
    whose slot 0 holds y0; 0 for :func:`compact_events`). y (T, B, N) source
    values, W (N, K) weights, out (T, B, K) device array, updated in place.
    Work: one multiply-add per event and output column.
    """
    require()
    T, B, K = out.shape
    dt = np.dtype(out.dtype)
    _common(dt).propagate[_grid1(T * B * K)](
        _dev(ev_idx), _dev(ev_cnt), int(slot0), _dev(y), _dev(W), out
    )
    return out


def _lengths(lengths, T, B):
    return _dev(np.full(B, T, np.int64) if lengths is None else np.asarray(lengths, np.int64))


def event_weight_grad(y, dout, lengths=None):
    """Weight gradient of an event-driven projection: ``dW = sum_t y_t^T dout_t``
    over the events (non-zero entries) of y only, at steps t < lengths[b].
    y (T, B, N), dout (T, B, K), lengths (B,) (default all T); returns a device
    array (N, K) and the number of events used."""
    require()
    y, dout = _dev(y), _dev(dout)
    T, B, N = y.shape
    K = dout.shape[2]
    dt = np.dtype(dout.dtype)
    y0 = _zeros((B, N), dt)
    return _event_weight_grad(y0, y, _lengths(lengths, T, B), False, dout.reshape(T * B, K), dt)


def propagate_csr_events(ev_idx, ev_cnt, y, indptr, indices, data, out):
    """Sparse event-driven projection: for each event i of step t,
    ``out[t, b, indices[k]] += y[t, b, i] data[k]`` over the non-zeros k of
    row i. ev_idx (T, B, N) int32, ev_cnt (T, B) int32 (zero past a length);
    indptr (N + 1,), indices (nnz,) int64, data (nnz,); out (T, B, M) device
    array, updated in place (one thread owns each (t, b) row: no races).
    Returns the multiply-adds done (host int)."""
    require()
    T, B, M = out.shape
    dt = np.dtype(out.dtype)
    macs = _zeros((T * B,), np.int64)
    _projection(dt).propagate_csr[_grid1(T * B)](
        _dev(ev_idx), _dev(ev_cnt), _dev(y), _dev(indptr), _dev(indices), _dev(data), out, macs
    )
    return int(macs.copy_to_host().sum())


def propagate_csr_delayed_events(ev_idx, ev_cnt, y, indptr, indices, data, delays, lengths,
                                 out):
    """:func:`propagate_csr_events` with a delay per non-zero: the event of step
    t adds to ``out[t + delays[k]]`` (dropped past the end of out (T_out, B, M)).
    One thread per sample. Returns the multiply-adds done."""
    require()
    T_out, B, M = out.shape
    dt = np.dtype(out.dtype)
    macs = _zeros((B,), np.int64)
    _projection(dt).propagate_csr_delayed[_grid1(B)](
        _dev(ev_idx), _dev(ev_cnt), _dev(y), _dev(indptr), _dev(indices), _dev(data),
        _dev(delays), _dev(lengths), out, macs
    )
    return int(macs.copy_to_host().sum())


def event_weight_grad_csr(y, dout, indptr, indices, lengths=None):
    """Gradient of the values of a sparse projection: ``ddata[k] = sum over
    events (t, b, i) of y[t, b, i] dout[t, b, indices[k]]`` for the non-zeros k
    of row i. Returns a device array (nnz,) and the multiply-adds done."""
    require()
    y, dout = _dev(y), _dev(dout)
    T, B, N = y.shape
    M = dout.shape[2]
    dt = np.dtype(dout.dtype)
    indptr_h = np.asarray(indptr, np.int64)
    rows = np.repeat(np.arange(N, dtype=np.int64), np.diff(indptr_h))
    off, ev_s, ev_v, _ = _unit_major(_zeros((B, N), dt), y, _lengths(lengths, T, B), False, dt)
    nnz = rows.shape[0]
    ddata = _zeros((max(nnz, 1),), dt)
    if nnz:
        _projection(dt).outer_events_csr[_grid1(nnz)](
            off, ev_s, ev_v, dout.reshape(T * B, M), _dev(rows), _dev(indices), ddata
        )
    per_unit = np.diff(off.copy_to_host().astype(np.int64))
    return ddata[:nnz], int(per_unit @ np.diff(indptr_h))


def source_grad(dout, W, mask, lengths):
    """``dsrc[t, b, i] = dout[t, b, :] . W[i, :]`` where ``mask[t, b, i]`` (all
    units when mask is None) and t < lengths[b]; zero elsewhere. dout
    (T, B, M), W (N, M); returns a device array (T, B, N)."""
    require()
    dout = _dev(dout)
    T, B, M = dout.shape
    N = W.shape[0]
    dt = np.dtype(dout.dtype)
    use = mask is not None
    m = _dev(np.ascontiguousarray(mask, np.uint8) if use else np.zeros((1, 1, 1), np.uint8))
    dsrc = _zeros((T, B, N), dt)
    _projection(dt).source_dense[_grid1(T * B * N)](dout, _dev(W), m, use, _dev(lengths), dsrc)
    return dsrc


def source_grad_csr(dout, indptr, indices, data, mask, lengths):
    """:func:`source_grad` through a sparse matrix: ``dsrc[t, b, i] = sum over
    the non-zeros k of row i of data[k] dout[t, b, indices[k]]``."""
    require()
    dout = _dev(dout)
    T, B, M = dout.shape
    N = len(indptr) - 1
    dt = np.dtype(dout.dtype)
    use = mask is not None
    m = _dev(np.ascontiguousarray(mask, np.uint8) if use else np.zeros((1, 1, 1), np.uint8))
    dsrc = _zeros((T, B, N), dt)
    _projection(dt).source_csr[_grid1(T * B * N)](
        dout, _dev(indptr), _dev(indices), _dev(data), m, use, _dev(lengths), dsrc
    )
    return dsrc


# --------------------------------------------------------------------------
# LIF populations: the sequence maths of evsim.kernels.lif on the device


def lif_forward_device(x, kinds, a, c, e_rev, cond, a_m, dt_tau, v_rest, v_th, v_reset, n_ref,
                       v0, I0, r0, lengths):  # noqa: E741
    """A LIF population over a whole sequence, one thread per (sample, unit):
    the arguments and outputs of :func:`evsim.kernels.lif.lif_forward` (device
    or host arrays in). Returns a dict of device arrays ``s, u, v, I, held,
    v_last, I_last, r_last`` and the number of spikes (host int)."""
    require()
    x = _dev(x)
    T, B, RN = x.shape
    N = v0.shape[1]
    dt = np.dtype(x.dtype)
    out = {n: _zeros((T, B, N), dt) for n in ("s", "u", "v")}
    out["I"] = _zeros((T, B, RN), dt)
    out["held"] = _zeros((T, B, N), np.uint8)
    out["v_last"] = _zeros((B, N), dt)
    out["I_last"] = _zeros((B, RN), dt)
    out["r_last"] = _zeros((B, N), np.int64)
    counts = _zeros((B * N,), np.int64)
    _lif().forward[_grid1(B * N)](
        x, _dev(kinds), _dev(a), _dev(c), _dev(e_rev), bool(cond), float(a_m), float(dt_tau),
        float(v_rest), float(v_th), float(v_reset), int(n_ref), _dev(v0), _dev(I0), _dev(r0),
        _dev(lengths), out["s"], out["u"], out["v"], out["I"], out["held"], out["v_last"],
        out["I_last"], out["r_last"], counts
    )
    return out, int(counts.copy_to_host().sum())


def lif_backward_device(ds, s, u, held, kinds, a, c, a_m, v_th, v_reset, damp, support, lengths,
                        dv_in, dI_in):
    """BPTT through :func:`lif_forward_device`, one thread per (sample, unit):
    the arguments of :func:`evsim.kernels.lif.lif_backward` (device or host
    arrays in). Returns device arrays (dx, dv0, dI0)."""
    require()
    ds = _dev(ds)
    T, B, N = ds.shape
    RN = dI_in.shape[1]
    dt = np.dtype(ds.dtype)
    dx = _zeros((T, B, RN), dt)
    dv0 = _zeros((B, N), dt)
    dI0 = _zeros((B, RN), dt)
    _lif().backward[_grid1(B * N)](
        ds, _dev(s), _dev(u), _dev(held), _dev(kinds), _dev(a), _dev(c), float(a_m),
        float(v_th), float(v_reset), float(damp), float(support), _dev(lengths), _dev(dv_in),
        _dev(dI_in), dx, dv0, dI0
    )
    return dx, dv0, dI0
