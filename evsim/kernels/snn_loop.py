"""The compiled network loop: spiking populations and their projections run
their whole time loop in compiled code, with no Python per step.

Layout (prepared by :mod:`evsim.network.compiled`):

* neurons of all populations in one global index: population p owns
  ``n0[p] .. n0[p+1]``; state ``v`` (B, n) and refractory counters ``r`` (B, n);
* receptor slots in one global index, population p's block ``s0[p] ..`` holds its
  R_p receptors receptor-major (slot ``s0[p] + k N_p + j``), state ``I`` (B, slots);
  receptor table: ``rec0[p] .. rec0[p+1]`` rows of ``kinds, a, c, e_rev``;
* synapses as one CSR over source neurons: ``indptr`` (n + 1,), per synapse the
  target ``slot``, weight ``w`` and delay ``d`` in steps (>= 1 when the target is
  not later in the step's order, so a spike never arrives in the past);
* pending input in a ring buffer ``ring`` (B, L, slots), L > max delay: a spike
  of step t through synapse k adds ``w[k]`` to ``ring[(t + d[k]) % L]``, consumed
  (and cleared) by the target in that step.

Per step and sample the cost is the neurons updated plus the synapses of the
units that spiked. The neuron update is the one in :mod:`evsim.kernels.lif`.
Samples are independent: a parallel loop over samples wraps one serial body,
so there is one parallel region per call, not one per step.
"""

import numba
import numpy as np
from numba import prange

from evsim.kernels.lif import COND, STEP, membrane, membrane_cond

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@numba.njit(**_JIT)
def place_synapses(indptr, filled, a0, p_indptr, p_indices, p_w, p_d, d_add, base, slot, w, d):
    """Copy one projection's CSR rows (source units a0 ..) into the global CSR
    after the synapses already placed there (``filled`` per unit, updated):
    target slot ``base + index``, weight, delay ``p_d[k] + d_add`` (p_d of
    length 1: one delay for all)."""
    one = p_d.shape[0] == 1
    for i in range(p_indptr.shape[0] - 1):
        g = a0 + i
        pos = indptr[g] + filled[g]
        for k in range(p_indptr[i], p_indptr[i + 1]):
            slot[pos] = base + p_indices[k]
            w[pos] = p_w[k]
            d[pos] = (p_d[0] if one else p_d[k]) + d_add
            pos += 1
        filled[g] += p_indptr[i + 1] - p_indptr[i]


@numba.njit(**_JIT)
def _receptors(kind, ak, ck, ek, cur, pend, ext_row, has_ext, acc, G, GE):
    """Arrivals and decay of one receptor of one population in one step:
    adds its term to the membrane input ``acc`` (currents) or to ``G``, ``GE``
    (conductances), clears the consumed ring slot ``pend``."""
    N = cur.shape[0]
    if has_ext:
        for j in range(N):
            pend[j] += ext_row[j]
    # each loop also clears the consumed ring slot (one pass over memory, not two)
    if kind == COND:
        for j in range(N):
            sk = cur[j] + pend[j]
            pend[j] = 0.0
            cur[j] = ak * sk
            G[j] += sk
            GE[j] += sk * ek
    elif kind == STEP:
        for j in range(N):
            acc[j] += ck * pend[j]
            pend[j] = 0.0
            cur[j] = 0.0
    else:
        for j in range(N):
            sk = cur[j] + pend[j]
            pend[j] = 0.0
            cur[j] = ak * sk
            acc[j] += ck * sk


@numba.njit(**_JIT)
def _neurons(v, r, acc, G, GE, cond, a_m, dt_tau, v_rest, v_th, v_reset, n_ref, fired):
    """Membrane, threshold, reset and refractory counters of one population
    in one step; ``fired[j]`` = 1 where unit j spiked. Returns the spikes."""
    n = 0
    for j in range(v.shape[0]):
        vv = v[j]
        if cond:
            uu = membrane_cond(vv, acc[j], G[j], GE[j], dt_tau, v_rest)
        else:
            uu = membrane(vv, acc[j], a_m, v_rest)
        rr = r[j]
        uu = uu if rr <= 0 else vv  # refractory: v held
        spk = uu > v_th
        fired[j] = spk
        n += spk
        r[j] = max(n_ref - 1, 0) if spk else max(rr - 1, 0)
        v[j] = v_reset if spk else uu
    return n


@numba.njit(**_JIT)
def _deliver(t, a0, fired, words, indptr, slot, w, d, ring, ev_step, ev_unit, n_ev):
    """Log the spikes of one population at step t and add their synapses'
    weights to the ring buffer. ``words`` is ``fired`` viewed as uint64 (8 units
    per word), scanned word by word: few units spike in a step."""
    L = ring.shape[0]
    for q in range(words.shape[0]):
        if words[q] == 0:
            continue
        for j in range(8 * q, 8 * q + 8):
            if fired[j]:
                g = a0 + j
                ev_step[n_ev] = t
                ev_unit[n_ev] = g
                n_ev += 1
                for e in range(indptr[g], indptr[g + 1]):
                    ring[(t + d[e]) % L, slot[e]] += w[e]
    return n_ev


@numba.njit(**_JIT)
def run_sample(t_begin, t1, t0, n0, s0, rec0, pop_f, pop_i, kinds, a, c, e_rev, indptr, slot,
               w, d, ext, has_ext, v, I, r, ring, ev_step, ev_unit, probe_kind, probe_idx,
               probe, length):
    """Steps ``t_begin .. t1-1`` of one sample in a chunk that starts at step
    ``t0``; stops early, at a step boundary, when the event buffer could
    overflow. Returns (steps done, events written).

    pop_f : (P, 5) per population, in the state's dtype: a_m, dt/tau_m,
    v_rest, v_th, v_reset. pop_i : (P, 2) int64: refractory steps,
    conductance flag. kinds (R,) int64, a, c, e_rev (R,) state dtype: all
    receptors (population p's are rows rec0[p] .. rec0[p+1]).
    ext : (t1 - t0, slots) in, input from outside the loop (row = step - t0),
    read only when has_ext (else any (1, slots) array). v (n,), I (slots,),
    r (n,) int32: state, in/out.
    ring : (L, slots) in/out. ev_step (cap,) int64, ev_unit (cap,) int32 out.
    probe_kind (K,) 0 = v, 1 = receptor slot; probe_idx (K,) global index;
    probe (t1 - t0, K) out: values at the end of each step. Steps >= length
    are not simulated.
    """
    P = n0.shape[0] - 1
    L = ring.shape[0]
    n_max = 8
    for p in range(P):
        n_max = max(n_max, n0[p + 1] - n0[p])
    n_max = -(-n_max // 8) * 8
    acc = np.zeros(n_max, v.dtype)
    G = np.zeros(n_max, v.dtype)
    GE = np.zeros(n_max, v.dtype)
    fired = np.zeros(n_max, np.uint8)
    n_ev = 0
    n_all = n0[P]
    cap = ev_step.shape[0]
    t = t_begin
    end = min(t1, length)
    while t < end:
        if n_ev + n_all > cap:
            break
        q = t % L
        row = t - t0 if has_ext else 0
        for p in range(P):
            a0 = n0[p]
            N = n0[p + 1] - a0
            cond = pop_i[p, 1] != 0
            acc[:N] = 0.0
            if cond:
                G[:N] = 0.0
                GE[:N] = 0.0
            for k in range(rec0[p], rec0[p + 1]):
                b0 = s0[p] + (k - rec0[p]) * N
                _receptors(kinds[k], a[k], c[k], e_rev[k], I[b0:b0 + N], ring[q, b0:b0 + N],
                           ext[row, b0:b0 + N], has_ext, acc, G, GE)
            fired[N:] = 0
            n = _neurons(v[a0:a0 + N], r[a0:a0 + N], acc, G, GE, cond, pop_f[p, 0], pop_f[p, 1],
                         pop_f[p, 2], pop_f[p, 3], pop_f[p, 4], pop_i[p, 0], fired)
            if n:
                n_ev = _deliver(t, a0, fired, fired[:-(-N // 8) * 8].view(np.uint64), indptr,
                                slot, w, d, ring, ev_step, ev_unit, n_ev)
        for m in range(probe_kind.shape[0]):
            i = probe_idx[m]
            probe[t - t0, m] = v[i] if probe_kind[m] == 0 else I[i]
        t += 1
    return t - t_begin, n_ev


@numba.njit(parallel=True, **_JIT)
def run_batch(t_begin, t1, t0, n0, s0, rec0, pop_f, pop_i, kinds, a, c, e_rev, indptr, slot,
              w, d, ext, has_ext, v, I, r, ring, ev_step, ev_unit, probe_kind, probe_idx,
              probe, lengths, done, n_ev):
    """:func:`run_sample` for every sample b in parallel: t_begin (B,) int64,
    every per-sample array with a leading batch axis, so that each sample's
    slice is contiguous (the serial body vectorises only then): ``ext``
    (B, t1 - t0, slots), ``ring`` (B, L, slots), ``ev_*`` (B, cap), ``probe``
    (B, t1 - t0, K). done, n_ev : (B,) int64 out."""
    B = v.shape[0]
    for b in prange(B):
        done[b], n_ev[b] = run_sample(t_begin[b], t1, t0, n0, s0, rec0, pop_f, pop_i, kinds,
                                      a, c, e_rev, indptr, slot, w, d, ext[b], has_ext, v[b], I[b],
                                      r[b], ring[b], ev_step[b], ev_unit[b], probe_kind,
                                      probe_idx, probe[b], lengths[b])
