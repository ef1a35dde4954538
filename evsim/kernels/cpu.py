"""Numba CPU kernels: event-driven EGRU forward, sparse BPTT backward.

All kernels take plain arrays, run whole sequences (the loop over time is
compiled) and allocate nothing per step: the caller passes every output and
scratch buffer. Shapes use T steps, B samples, I inputs, H units, G = 3H.

Events are kept per step and per sample as a CSR-like list in a preallocated
buffer: ``ev_idx[s, b, :ev_cnt[s, b]]`` are the units of sample b with a non-zero
output at slot s, where slot 0 holds the initial output y0 and slot t + 1 the
output of step t. The recurrent drive of step t reads only the rows of R of the
units listed in slot t.

Parallel work: the H units are cut into P blocks (one per thread); a work item
is a unit block (forward: for every sample) or a (sample, unit block) pair
(backward). A forward item adds the rows of R of every sample's events for its
columns only, chunk by chunk so that a row fired by several samples is read
from memory once, then runs the pointwise update of its units, which needs no
other item's columns: one parallel region per step. (The sample-parallel
kernels of :mod:`cpu_seq` have one region per call; the backend picks.)
Dense steps (the "dense" backend, or the auto-switch at high activity) make
one BLAS product per unit block for the whole batch, with BLAS running
single-threaded inside Numba's threads (see :mod:`evsim.threads`).
"""

import inspect
import math
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload

from evsim import config
from evsim.kernels import _cell

# Fast-math flags without reassociation: sums keep the order written here, so
# the event-driven accumulation of a sample gives the same bits whatever the
# work split (threads, tiles, row groups). ``contract`` lets LLVM fuse a * b + c
# into FMAs (the same in every code path), ``nsz`` ignores the sign of zero.
_FASTMATH = {"contract", "nsz"}
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=_FASTMATH)

# Numba's IR inliner reports a harmless pedantic check on the inlined cell
# functions (their names start with build's locals); keep it out of users' logs.
warnings.filterwarnings("ignore", message=r"variable 'build__locals__",
                        category=numba.core.errors.NumbaIRAssumptionWarning)

# --------------------------------------------------------------------------
# exp: exact for float64, a branch-free polynomial for float32 that LLVM can
# vectorise (there is no SVML in this llvmlite, so libm calls stay scalar).


@intrinsic
def _int_bits_as_float32(typingctx, bits):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def _exp(x):  # pragma: no cover - replaced by the overload below in compiled code
    return math.exp(x)


@overload(_exp, inline="always")
def _exp_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32 and config.FAST_EXP_FLOAT32:

        def fast_exp32(x):
            # exp(x) = 2^n * exp(f), n = round(x / ln 2), |f| <= ln2 / 2
            x = min(max(x, np.float32(-87.0)), np.float32(88.0))
            n = np.floor(x * np.float32(1.442695041) + np.float32(0.5))
            f = x - n * np.float32(0.693145752) - n * np.float32(1.428606765e-06)
            p = np.float32(1.0 / 5040.0)
            p = p * f + np.float32(1.0 / 720.0)
            p = p * f + np.float32(1.0 / 120.0)
            p = p * f + np.float32(1.0 / 24.0)
            p = p * f + np.float32(1.0 / 6.0)
            p = p * f + np.float32(0.5)
            p = p * f + np.float32(1.0)
            p = p * f + np.float32(1.0)
            scale = _int_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))
            return p * scale

        return fast_exp32
    return lambda x: math.exp(x)


# The cell maths, built twice: with float64 and with float32 constants, so that
# float32 kernels never promote to float64 (which halves the vector width and
# blocks vectorisation of the pointwise loops). ``_gates`` & co. pick the build
# that matches the argument dtype at compile time.
_cell64 = _cell.build(numba.njit(inline="always", **_JIT), _exp)
_cell32 = _cell.build(numba.njit(inline="always", **_JIT), _exp, real=np.float32)


def _dispatch(name):
    """A function that runs the float32 or the float64 build of cell function
    ``name``, chosen at compile time by the type of its first argument. The
    build's Python source is inlined where it is called (a call per element
    would keep the pointwise loops from vectorising)."""
    f32, f64 = getattr(_cell32, name).py_func, getattr(_cell64, name).py_func

    def stub(*args):  # pragma: no cover - only its overload runs, in compiled code
        raise NotImplementedError

    def typer(*args):
        return f32 if args[0] == types.float32 else f64

    params = inspect.signature(f64).parameters
    typer.__signature__ = inspect.Signature(list(params.values()))
    stub.__signature__ = typer.__signature__
    # the overload compiles with its own options: give it the kernels' (with
    # Python's error model, a division check per element blocks vectorisation)
    overload(stub, inline="always",
             jit_options=dict(error_model="numpy", fastmath=_FASTMATH))(typer)
    return stub


_gates = _dispatch("gates")
_fire = _dispatch("fire")
_cell_backward = _dispatch("backward")
_backward_active = _dispatch("backward_active")


# --------------------------------------------------------------------------
# Work split. Units are cut into P contiguous blocks (P = number of threads);
# block k owns units [lo, hi) and the matching columns of the three gate blocks
# of R, q, da and dq, so the pointwise update of a block needs only what the
# same work item computed: one parallel region per step. Event lists are kept
# per block during the run (``ev_idx[s, b, lo:lo + n_k]``) and compacted into
# the public CSR-like format at the end.


@numba.njit(**_JIT)
def _block(H, P, k):
    bw = (H + P - 1) // P
    lo = min(H, k * bw)
    return lo, min(H, lo + bw)


@numba.njit(**_JIT)
def _compact_block(y_row, idx_row, lo, hi):
    """Events of units [lo, hi) written to idx_row[lo:lo + n]; return n."""
    n = 0
    for j in range(lo, hi):
        if y_row[j] != 0:
            idx_row[lo + n] = j
            n += 1
    return n


@numba.njit(**_JIT)
def _pack_blocks(R, P, Rp):
    """Copy R (H, 3H) into Rp (H * 3H,) as P contiguous (H, 3 w_k) column blocks:
    block k holds the z, r, g columns of units [lo_k, hi_k) side by side."""
    H = R.shape[0]
    for k in range(P):
        lo, hi = _block(H, P, k)
        w = hi - lo
        blk = Rp[3 * H * lo:3 * H * hi].reshape(H, 3 * w)
        for i in range(H):
            for gate in range(3):
                blk[i, gate * w:(gate + 1) * w] = R[i, gate * H + lo:gate * H + hi]


# --------------------------------------------------------------------------
# Forward


@numba.njit(**_JIT)
def _compact(y_row, idx_row):
    """Units with a non-zero output written to idx_row[:n] (ascending); return n."""
    n = 0
    for j in range(y_row.shape[0]):
        if y_row[j] != 0:
            idx_row[n] = j
            n += 1
    return n


@numba.njit(**_JIT)
def _nonfinite(row):
    """Number of NaN or infinite entries of a row (an integer sum: vectorises).

    The kernels check the recurrent drives and gradients they computed instead
    of reading all of R before every call: a non-finite weight in a row that
    is read shows up there, and a row that is never read cannot change the
    result."""
    n = 0
    big = np.finfo(row.dtype).max
    for j in range(row.shape[0]):
        n += 0 if abs(row[j]) <= big else 1
    return n


@numba.njit(**_JIT)
def _acc_rows(qs, R, c0, c1, ev, n, yprev):
    """qs (c1 - c0,) += yprev[i] * R[i, c0:c1] for the n events i = ev[:n].

    The only place the forward's event-driven sums are computed. The events are
    added one after the other in list order (four rows per pass over qs, each
    added in turn), so every element gets the same sequence of rounded
    operations whatever rows share a pass or which kernel calls this.
    """
    w = c1 - c0
    e = 0
    while e + 4 <= n:
        i0, i1, i2, i3 = ev[e], ev[e + 1], ev[e + 2], ev[e + 3]
        v0, v1, v2, v3 = yprev[i0], yprev[i1], yprev[i2], yprev[i3]
        r0 = R[i0, c0:c1]
        r1 = R[i1, c0:c1]
        r2 = R[i2, c0:c1]
        r3 = R[i3, c0:c1]
        for j in range(w):
            acc = qs[j] + v0 * r0[j]
            acc = acc + v1 * r1[j]
            acc = acc + v2 * r2[j]
            qs[j] = acc + v3 * r3[j]
        e += 4
    while e < n:
        i0 = ev[e]
        v0 = yprev[i0]
        r0 = R[i0, c0:c1]
        for j in range(w):
            qs[j] = qs[j] + v0 * r0[j]
        e += 1


@numba.njit(inline="always", **_JIT)
def _saved_rows(v, z, r, g, qg, t, b, save):
    """Rows of the saved arrays for (t, b); a dummy row when nothing is saved."""
    if save:
        return v[t, b], z[t, b], r[t, b], g[t, b], qg[t, b]
    return v[0, 0], z[0, 0], r[0, 0], g[0, 0], qg[0, 0]


@numba.njit(**_JIT)
def _pointwise_forward(at, qk, br, thr, hprev, keep_row, per_elem, dense_gru, save,
                       yrow, hrow, crow, vrow, zrow, rrow, grow, qgrow, lo, hi):
    """Fused gate update of units [lo, hi) of one sample at one step.

    at : (3H,) input drive. qk : (3w,) recurrent drive without bias, z | r | g
    columns of the block. keep_row : (H,) keep factors when ``per_elem``, else
    keep_row[0] is the constant factor. Outputs are rows (H,) of y, h, c and,
    when ``save``, of v, z, r, g, qg.
    Whole rows indexed with offsets (not slices) and the two variants as
    separate loops: LLVM then vectorises them (slices of one row look like
    different arrays to it, and too many possibly aliasing arrays stop it).
    """
    H = hprev.shape[0]
    w = hi - lo
    kc = keep_row[0]
    if save:  # two loops: with eight output rows in one, LLVM does not vectorise it
        for j in range(w):
            u = lo + j
            kp = keep_row[u] if per_elem else kc
            qgj = qk[2 * w + j] + br[2 * H + u]
            zj, rj, gj, vj = _gates(at[u], at[H + u], at[2 * H + u], qk[j] + br[u],
                                    qk[w + j] + br[H + u], qgj, hprev[u], kp)
            vrow[u] = vj
            zrow[u] = zj
            rrow[u] = rj
            grow[u] = gj
            qgrow[u] = qgj
        for u in range(lo, hi):
            cj, yj, hj = _fire(vrow[u], thr[u], dense_gru)
            yrow[u] = yj
            hrow[u] = hj
            crow[u] = cj
    else:
        for j in range(w):
            u = lo + j
            kp = keep_row[u] if per_elem else kc
            zj, rj, gj, vj = _gates(at[u], at[H + u], at[2 * H + u], qk[j] + br[u],
                                    qk[w + j] + br[H + u], qk[2 * w + j] + br[2 * H + u],
                                    hprev[u], kp)
            cj, yj, hj = _fire(vj, thr[u], dense_gru)
            yrow[u] = yj
            hrow[u] = hj
            crow[u] = cj


@numba.njit(**_JIT)
def _update_block(t, k, P, lo, hi, qb, a, br, thr, hprev_all, keep, keep_mode, lengths,
                  dense_gru, save, y, h, c, v, z, r, g, qg, ev_idx, blk_cnt, bad):
    """Pointwise update of units [lo, hi) (block k of P) of every running sample
    at step t, given their recurrent drives qb (B, 3w); writes the block's
    events and counts non-finite drives in bad[b * P + k]."""
    per_elem = keep_mode == 1
    for b in range(qb.shape[0]):
        if t >= lengths[b]:
            continue
        bad[b * P + k] += _nonfinite(qb[b])
        krow = keep[t, b] if per_elem else keep[0, 0]
        vr, zr, rr, gr, qgr = _saved_rows(v, z, r, g, qg, t, b, save)
        _pointwise_forward(a[t, b], qb[b], br, thr, hprev_all[b], krow, per_elem, dense_gru,
                           save, y[t, b], h[t, b], c[t, b], vr, zr, rr, gr, qgr, lo, hi)
        blk_cnt[t + 1, b, k] = _compact_block(y[t, b], ev_idx[t + 1, b], lo, hi)


@numba.njit(**_JIT)
def _event_block(t, k, P, B, H, qf, R, yprev_all, a, br, thr, hprev_all, keep, keep_mode,
                 lengths, dense_gru, save, y, h, c, v, z, r, g, qg, ev_idx, blk_cnt, bad, macs,
                 col_block):
    """Work item k of an event-driven step: add the event rows of every sample
    for the columns of unit block k (chunk by chunk, so that a row fired by
    several samples is read from memory once), then the block's update."""
    G = 3 * H
    lo, hi = _block(H, P, k)
    w = hi - lo
    qb = qf[3 * B * lo:3 * B * hi].reshape(B, 3 * w)
    for b in range(B):
        qb[b] = 0
        if t < lengths[b] and k == 0:
            n_ev = 0
            for kk in range(P):
                n_ev += blk_cnt[t, b, kk]
            macs[t, b] = n_ev * G
    for gate in range(3):
        for u0 in range(lo, hi, col_block):
            u1 = min(hi, u0 + col_block)
            c0 = gate * H + u0
            j0 = gate * w + u0 - lo
            for b in range(B):
                if t >= lengths[b]:
                    continue
                for kk in range(P):
                    off, _ = _block(H, P, kk)
                    n = blk_cnt[t, b, kk]
                    _acc_rows(qb[b, j0:j0 + u1 - u0], R, c0, c0 + u1 - u0,
                              ev_idx[t, b, off:off + n], n, yprev_all[b])
    _update_block(t, k, P, lo, hi, qb, a, br, thr, hprev_all, keep, keep_mode, lengths,
                  dense_gru, save, y, h, c, v, z, r, g, qg, ev_idx, blk_cnt, bad)


@numba.njit(parallel=True, **_JIT)
def egru_forward(a, R, br, thr, h0, y0, keep, keep_mode, lengths, dense_gru, dense_switch,
                 save, y, h, c, v, z, r, g, qg, h_last, y_last, ev_idx, ev_cnt, q, counts,
                 col_block, parallel_min, blocks):
    """Event-driven EGRU forward over a whole sequence, columns split over threads.

    Parameters (in: read only; out: written)
    ----------
    a : (T, B, G) in. Input drive x W + bx, computed by the caller.
    R : (H, G) in. Recurrent weights (DropConnect already applied).
    br : (G,) in. thr : (H,) in. h0, y0 : (B, H) in. Initial state.
    keep : (T, B, H) or (1, 1, 1) in. Zoneout keep factors, see ``keep_mode``
        (0: none, 1: per element, 2: the constant keep[0, 0, 0]; with mode 0
        keep must hold 1).
    lengths : (B,) int64 in. Steps to run per sample; later outputs stay 0.
    dense_gru : bool. Plain GRU: every unit emits its state every step.
    dense_switch : float. A step uses one dense BLAS product for the whole batch
        (split over column blocks) when more than this fraction of (sample,
        unit) pairs emitted an event at t - 1; below, each sample adds the rows
        of R of its own events. A negative value means always dense.
    save : bool. Write v, z, r, g, qg for the backward pass (training).
    y, h, c : (T, B, H) out, zero-initialised. Outputs, states, event flags.
    v, z, r, g, qg : (T, B, H) out when ``save`` (else any shape). Saved values.
    h_last, y_last : (B, H) out. State after each sample's last step.
    ev_idx : (T + 1, B, H) int32 out. ev_cnt : (T + 1, B) int32 out. Events.
    q : (B, G) scratch. Recurrent drive of the current step (block layout).
    counts : (B, 4) int64 out. Per sample: events, recurrent multiply-adds
        done, dense-equivalent multiply-adds, non-finite recurrent drives.
    col_block : int >= 1. Units per chunk of the event accumulation.
    parallel_min : int. An event-driven step with fewer multiply-adds than this
        runs its blocks on the calling thread (same results, no wake-up).
    blocks : int. Unit blocks, the work items of a step (fixed by the caller
        from the machine, not from the thread count: the dense products' sums
        depend on the blocks). The caller's Numba threads run them.
    """
    T, B, G = a.shape
    H = G // 3
    P = max(1, min(blocks, H))
    qf = q.reshape(B * G)
    blk_cnt = np.zeros((T + 1, B, P), np.int64)
    macs = np.zeros((T, B), np.int64)
    bad = np.zeros(B * P, np.int64)  # non-finite drives per work item
    Rp = np.empty(0, R.dtype)
    for b in range(B):
        for k in range(P):
            lo, hi = _block(H, P, k)
            blk_cnt[0, b, k] = _compact_block(y0[b], ev_idx[0, b], lo, hi)
        h_last[b] = h0[b]
        y_last[b] = y0[b]
    for t in range(T):
        n_prev = 0
        for b in range(B):
            if t < lengths[b]:
                for k in range(P):
                    n_prev += blk_cnt[t, b, k]
        use_dense = n_prev > dense_switch * B * H
        yprev_all = y0 if t == 0 else y[t - 1]
        hprev_all = h0 if t == 0 else h[t - 1]
        if use_dense:
            if Rp.shape[0] == 0:
                Rp = np.empty(H * G, R.dtype)
                _pack_blocks(R, P, Rp)
            # one work item per unit block: a BLAS product for the whole batch
            # (BLAS runs single-threaded inside each item), then the pointwise.
            for k in prange(P):
                lo, hi = _block(H, P, k)
                w = hi - lo
                qk = qf[3 * B * lo:3 * B * hi].reshape(B, 3 * w)
                np.dot(yprev_all, Rp[3 * H * lo:3 * H * hi].reshape(H, 3 * w), qk)
                for b in range(B):
                    if t < lengths[b]:
                        macs[t, b] = H * G
                _update_block(t, k, P, lo, hi, qk, a, br, thr, hprev_all, keep, keep_mode,
                              lengths, dense_gru, save, y, h, c, v, z, r, g, qg, ev_idx,
                              blk_cnt, bad)
        else:
            # one work item per unit block, for every sample: add the event rows
            # (column chunk by chunk, so that a row fired by several samples is
            # read from memory once), then the pointwise update of the block.
            if n_prev * G >= parallel_min:
                for k in prange(P):
                    _event_block(t, k, P, B, H, qf, R, yprev_all, a, br, thr, hprev_all, keep,
                                 keep_mode, lengths, dense_gru, save, y, h, c, v, z, r, g, qg,
                                 ev_idx, blk_cnt, bad, macs, col_block)
            else:  # too few events to pay for waking the other threads
                for k in range(P):
                    _event_block(t, k, P, B, H, qf, R, yprev_all, a, br, thr, hprev_all, keep,
                                 keep_mode, lengths, dense_gru, save, y, h, c, v, z, r, g, qg,
                                 ev_idx, blk_cnt, bad, macs, col_block)
    # public format: the events of slot s, sample b at ev_idx[s, b, :ev_cnt[s, b]]
    for b in prange(B):
        L = lengths[b]
        counts[b, 0] = 0
        counts[b, 1] = 0
        counts[b, 2] = L * H * G
        counts[b, 3] = 0
        for k in range(P):
            counts[b, 3] += bad[b * P + k]
        for s in range(T + 1):
            n = 0
            if s <= L:
                row = ev_idx[s, b]
                for k in range(P):
                    lo, _ = _block(H, P, k)
                    for e in range(blk_cnt[s, b, k]):
                        row[n] = row[lo + e]
                        n += 1
            ev_cnt[s, b] = n
            if s >= 1 and s <= L:
                counts[b, 0] += H if dense_gru else n
        for t in range(L):
            counts[b, 1] += macs[t, b]
        if L > 0:
            h_last[b] = h[L - 1, b]
            y_last[b] = y[L - 1, b]


# --------------------------------------------------------------------------
# Backward


@numba.njit(**_JIT)
def _pointwise_backward(t, b, lo, hi, thr, keep, per_elem, dense_gru, damp, support,
                        c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b):
    """Backward of the fused pointwise update of units [lo, hi), sample b, step t.

    Reads dy[t, b] + dy_next[b] (dL/dy_t) and dh[b] (dL/dh_t); writes
    da[t, b], dq[t, b] (gate columns of the block), dh[b] (now dL/dh_{t-1})
    and adds to dthr_b[b].
    """
    H = dh.shape[1]
    w = hi - lo
    hprev = h0[b, lo:hi] if t == 0 else h[t - 1, b, lo:hi]
    dab, dqb = da[t, b], dq[t, b]
    daz, dar, dag = dab[lo:hi], dab[H + lo:H + hi], dab[2 * H + lo:2 * H + hi]
    dqz, dqr, dqg = dqb[lo:hi], dqb[H + lo:H + hi], dqb[2 * H + lo:2 * H + hi]
    dyt, dhb, dyn = dy[t, b, lo:hi], dh[b, lo:hi], dy_next[b, lo:hi]
    vt, ct, zt = v[t, b, lo:hi], c[t, b, lo:hi], z[t, b, lo:hi]
    rt, gt, qgt = r[t, b, lo:hi], g[t, b, lo:hi], qg[t, b, lo:hi]
    th, dth_b = thr[lo:hi], dthr_b[b, lo:hi]
    kr = keep[t, b, lo:hi] if per_elem else keep[0, 0, :1]
    kc = kr[0]
    for j in range(w):
        kp = kr[j] if per_elem else kc
        dpz, dpr, dpg, dhp, dth = _cell_backward(
            dyt[j] + dyn[j], dhb[j], vt[j], ct[j], zt[j], rt[j], gt[j], qgt[j],
            hprev[j], th[j], kp, damp, support, dense_gru)
        daz[j] = dpz
        dar[j] = dpr
        dag[j] = dpg
        dqz[j] = dpz
        dqr[j] = dpr
        dqg[j] = dpg * rt[j]
        dhb[j] = dhp
        dth_b[j] += dth


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_FASTMATH | {"reassoc"})
def _dot(x, y):
    """x . y, vectorised: the one reduction allowed to reassociate (LLVM keeps
    partial sums per vector lane). Its order depends only on the length, so
    every kernel gets the same bits for a row whatever rows are active."""
    s = x[0] * 0
    for k in range(x.shape[0]):
        s += x[k] * y[k]
    return s


@numba.njit(**_JIT)
def _recurrent_grad(dqb, R, vprev, thr, support, dense_gru, all_units, lo, hi, out):
    """out[i] = dqb . R[i] for backward-active units i in [lo, hi) (all of them
    when ``all_units``), 0 for the others. Returns the number of rows computed."""
    n = 0
    for i in range(lo, hi):
        if all_units or _backward_active(vprev[i], thr[i], support, dense_gru):
            out[i] = _dot(dqb, R[i])
            n += 1
        else:
            out[i] = 0
    return n


@numba.njit(parallel=True, **_JIT)
def egru_backward(R, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                  c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b, counts,
                  blocks):
    """Sparse BPTT through :func:`egru_forward` (all but the weight gradients).

    The pointwise backward runs for every unit (the state path is dense); the
    recurrent gradient ``dq_t R^T`` is computed only for units of step t - 1
    that are backward-active (fired or inside the surrogate band), since dL/dy
    of every other unit is multiplied by zero. dR is left to the caller
    (``cpu_events.grad_weight_dense``, event by event), and so are dx, dW and
    the biases (GEMMs on ``da``).
    Work items are (sample, unit block): the recurrent gradient of the units of
    a block at step t and their pointwise backward at step t - 1 run in the
    same item, one parallel region per step.

    Parameters (in: read only; out: written; io: both)
    ----------
    R : (H, G) in. thr : (H,) in. h0 : (B, H) in.
    keep, keep_mode, lengths, dense_gru : as in :func:`egru_forward`.
    damp, support : scalars of the array dtype. Surrogate gradient shape.
    c, v, z, r, g, qg, h : (T, B, H) in. Saved by the forward pass.
    dy : (T, B, H) in. dL/dy_t from outside.
    dh : (B, H) io. In: dL/dh_last. Out: dL/dh0.
    dy_next : (B, H) io. In: dL/dy_last. Out: dL/dy0.
    da : (T, B, G) out. Gradient of the gate pre-activations (= input drive).
    dq : (T, B, G) out. Gradient of the recurrent drive q_t.
    dthr_b : (B, H) out. Per-sample threshold gradient (reduced by the caller).
    counts : (B, 2) int64 out. Per sample: rows of ``dq R^T`` computed for
        steps t >= 1 (backward-active units) and the dense equivalent.
    blocks : int. Unit blocks, the work items of a step (see :func:`egru_forward`).
    """
    T, B, G = dq.shape
    H = G // 3
    P = max(1, min(blocks, H))
    per_elem = keep_mode == 1
    rows = np.zeros((T, B * P), np.int64)
    dthr_b[:] = 0
    for wi in prange(B * P):
        b = wi // P
        lo, hi = _block(H, P, wi % P)
        if T - 1 < lengths[b]:
            _pointwise_backward(T - 1, b, lo, hi, thr, keep, per_elem, dense_gru, damp,
                                support, c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq,
                                dthr_b)
    for t in range(T - 1, -1, -1):
        for wi in prange(B * P):
            b = wi // P
            lo, hi = _block(H, P, wi % P)
            if t < lengths[b]:
                # dL/dy0 is always needed in full: y0 is an input of the sequence.
                vprev = v[t - 1, b] if t > 0 else v[0, b]
                rows[t, wi] = _recurrent_grad(dq[t, b], R, vprev, thr, support, dense_gru,
                                              t == 0, lo, hi, dy_next[b])
            if t >= 1 and t - 1 < lengths[b]:
                _pointwise_backward(t - 1, b, lo, hi, thr, keep, per_elem, dense_gru, damp,
                                    support, c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da,
                                    dq, dthr_b)
    for b in range(B):
        counts[b, 0] = 0
        counts[b, 1] = max(lengths[b] - 1, 0) * H
        for t in range(1, T):
            for k in range(P):
                counts[b, 0] += rows[t, b * P + k]


@numba.njit(parallel=True, **_JIT)
def egru_backward_dense(R, thr, keep, keep_mode, lengths, dense_gru, damp, support,
                        c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da, dq, dthr_b, counts,
                        blocks):
    """Dense BPTT baseline: same arguments as :func:`egru_backward`, but
    ``dq_t R^T`` is a BLAS product over all units each step (split over unit
    blocks, one block per thread, BLAS single-threaded inside each)."""
    T, B, G = dq.shape
    H = G // 3
    P = max(1, min(blocks, H))
    per_elem = keep_mode == 1
    scratch = np.empty(B * H, dq.dtype)
    dthr_b[:] = 0
    for b in range(B):
        counts[b, 0] = max(lengths[b] - 1, 0) * H
        counts[b, 1] = counts[b, 0]
    for k in prange(P):
        lo, hi = _block(H, P, k)
        for b in range(B):
            if T - 1 < lengths[b]:
                _pointwise_backward(T - 1, b, lo, hi, thr, keep, per_elem, dense_gru, damp,
                                    support, c, v, z, r, g, qg, h0, h, dy, dh, dy_next, da,
                                    dq, dthr_b)
    for t in range(T - 1, -1, -1):
        for k in prange(P):
            lo, hi = _block(H, P, k)
            out = scratch[B * lo:B * hi].reshape(B, hi - lo)
            np.dot(dq[t], R[lo:hi].T, out)
            for b in range(B):
                if t < lengths[b]:  # finished samples keep their final-state gradient
                    dy_next[b, lo:hi] = out[b]
                if t >= 1 and t - 1 < lengths[b]:
                    _pointwise_backward(t - 1, b, lo, hi, thr, keep, per_elem, dense_gru,
                                        damp, support, c, v, z, r, g, qg, h0, h, dy, dh,
                                        dy_next, da, dq, dthr_b)


@numba.njit(parallel=True, **_JIT)
def backward_active_mask(v, thr, support, dense_gru, mask, counts):
    """Units whose output can carry a gradient: fired or inside the surrogate
    band (the test the sparse backward applies row by row).

    v : (T, B, H) in, saved membrane values. thr : (H,) in. support : scalar.
    mask : (T, B, H) bool out. counts : (T, B) int64 out, active units per step.
    """
    T, B, H = v.shape
    for w in prange(T * B):
        t = w // B
        b = w % B
        row = mask[t, b]
        vr = v[t, b]
        n = 0
        for i in range(H):
            a = _backward_active(vr[i], thr[i], support, dense_gru)
            row[i] = a
            n += 1 if a else 0
        counts[t, b] = n


@numba.njit(parallel=True, **_JIT)
def output_trace(y, alpha, trace):
    """trace_t = alpha trace_{t-1} + (1 - alpha) y_t, trace_{-1} = 0.

    y : (T, B, H) in. trace : (T, B, H) out.
    """
    T, B, H = y.shape
    for b in prange(B):
        for j in range(H):
            acc = 0.0
            for t in range(T):
                acc = alpha * acc + (1 - alpha) * y[t, b, j]
                trace[t, b, j] = acc


@numba.njit(parallel=True, **_JIT)
def output_trace_backward(dtrace, alpha, dy):
    """dy += dL/dy through the trace, given dtrace = dL/dtrace (both (T, B, H))."""
    T, B, H = dtrace.shape
    for b in prange(B):
        for j in range(H):
            acc = 0.0
            for t in range(T - 1, -1, -1):
                acc = alpha * acc + dtrace[t, b, j]
                dy[t, b, j] += (1 - alpha) * acc
