"""Plain NumPy EGRU: dense forward and hand-written BPTT backward.

This is the oracle every fast kernel is tested against. It is written for
clarity, not speed: every step computes the full dense recurrent product
``y_{t-1} R`` and the full ``dq R^T``, exactly as in ``DESIGN.md`` section 1.

Shapes (time-major): x (T, B, I); W (I, 3H); R (H, 3H); bx, br (3H,);
thr (H,); h0, y0 (B, H). Gate blocks along 3H are ordered z, r, g.

Optional features, all explicit arrays so tests can pin them:

* ``keep`` (T, B, H): zoneout keep factors ``m`` in ``v = m v_new + (1 - m) h``.
  Training zoneout passes a Bernoulli(1 - p) mask, evaluation passes 1 - p
  everywhere. ``None`` means no zoneout (m = 1).
* ``rmask`` (H, 3H): DropConnect mask multiplied into R for the whole sequence.
* ``trace_alpha``: output trace ``tr_t = a tr_{t-1} + (1 - a) y_t``.
* ``lengths`` (B,): sample b runs steps 0..lengths[b]-1; later outputs are 0 and
  the final state is the state after its last step.
* ``dense_gru``: every unit "fires" every step with y = h = v (a plain GRU).
"""

import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def surrogate(v, thr, damp, support):
    """Pseudo-derivative dc/dv = damp * max(0, 1 - support * |v - thr|)."""
    return damp * np.maximum(0.0, 1.0 - support * np.abs(v - thr))


def backward_active(v, c, thr, support):
    """Units whose output can carry a gradient: fired, or inside the surrogate band."""
    return (c != 0) | (surrogate(v, thr, 1.0, support) > 0)


def backward_active_count(v, c, thr, support, lengths, dense_gru=False):
    """(backward-active unit-steps, all unit-steps) over the steps t - 1 whose
    recurrent gradient BPTT needs: t = 1 .. lengths[b] - 1 of each sample."""
    T, _, H = v.shape
    alive = np.arange(1, T)[:, None] < np.asarray(lengths)[None, :]  # (T - 1, B)
    rows = int(alive.sum()) * H
    if dense_gru:
        return rows, rows
    mask = backward_active(v[:-1], c[:-1], thr, support)
    return int(np.count_nonzero(mask & alive[:, :, None])), rows


def forward(x, W, R, bx, br, thr, h0, y0, keep=None, rmask=None, trace_alpha=None,
            lengths=None, dense_gru=False):
    """Run the EGRU over a sequence; return a dict of outputs and saved tensors."""
    T, B, _ = x.shape
    H = R.shape[0]
    Reff = R * rmask if rmask is not None else R
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    keys = ("y", "h", "c", "v", "z", "r", "g", "qg", "hprev", "yprev")
    out = {k: np.zeros((T, B, H), dtype=x.dtype) for k in keys}
    h, y = h0.copy(), y0.copy()
    h_last, y_last = h0.copy(), y0.copy()
    for t in range(T):
        alive = (t < lengths)[:, None]
        a = x[t] @ W + bx
        q = y @ Reff + br
        z = _sigmoid(a[:, :H] + q[:, :H])
        r = _sigmoid(a[:, H:2 * H] + q[:, H:2 * H])
        g = np.tanh(a[:, 2 * H:] + r * q[:, 2 * H:])
        v = z * h + (1 - z) * g
        if keep is not None:
            v = keep[t] * v + (1 - keep[t]) * h
        if dense_gru:
            c = np.ones_like(v)
            y_new, h_new = v, v
        else:
            c = (v > thr).astype(x.dtype)
            y_new = c * v
            h_new = v - c * thr
        for name, val in (("v", v), ("z", z), ("r", r), ("g", g), ("qg", q[:, 2 * H:]),
                          ("hprev", h), ("yprev", y), ("c", c), ("y", y_new), ("h", h_new)):
            out[name][t] = np.where(alive, val, 0)
        h = np.where(alive, h_new, h)
        y = np.where(alive, y_new, y)
        h_last, y_last = h, y
    out["h_last"], out["y_last"] = h_last, y_last
    if trace_alpha is not None:
        out["trace"] = output_trace(out["y"], trace_alpha)
    return out


def output_trace(y, alpha):
    """tr_t = alpha tr_{t-1} + (1 - alpha) y_t with tr_{-1} = 0."""
    tr = np.zeros_like(y)
    acc = np.zeros_like(y[0])
    for t in range(y.shape[0]):
        acc = alpha * acc + (1 - alpha) * y[t]
        tr[t] = acc
    return tr


def output_trace_backward(dtrace, alpha):
    """Gradient of the trace with respect to y, given dL/dtrace."""
    dy = np.zeros_like(dtrace)
    acc = np.zeros_like(dtrace[0])
    for t in range(dtrace.shape[0] - 1, -1, -1):
        acc = alpha * acc + dtrace[t]
        dy[t] = (1 - alpha) * acc
    return dy


def backward(x, W, R, thr, saved, dy, dh_last=None, dy_last=None, keep=None, rmask=None,
             damp=0.7, support=1.0, lengths=None, dense_gru=False):
    """Dense BPTT through :func:`forward`. Returns a dict of gradients.

    ``dy`` (T, B, H) is dL/dy_t. ``dh_last`` and ``dy_last`` (B, H) are the
    gradients with respect to the final state (h, y) of each sample.
    """
    T, B, _ = x.shape
    H = R.shape[0]
    Reff = R * rmask if rmask is not None else R
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    dh = np.zeros((B, H), x.dtype) if dh_last is None else dh_last.copy()
    dy_next = np.zeros((B, H), x.dtype) if dy_last is None else dy_last.copy()
    da_all = np.zeros((T, B, 3 * H), x.dtype)
    dR = np.zeros_like(R)
    dbr = np.zeros(3 * H, x.dtype)
    dthr = np.zeros(H, x.dtype)
    for t in range(T - 1, -1, -1):
        alive = (t < lengths)[:, None]
        v, c, z, r, g, qg = (saved[k][t] for k in ("v", "c", "z", "r", "g", "qg"))
        hprev, yprev = saved["hprev"][t], saved["yprev"][t]
        dyt = dy[t] + dy_next
        if dense_gru:
            dv = dyt + dh
        else:
            s = surrogate(v, thr, damp, support)
            dv = dyt * (c + v * s) + dh * (1 - thr * s)
            dthr += np.sum(np.where(alive, -dyt * v * s + dh * (thr * s - c), 0), axis=0)
        dh_prev = np.zeros_like(dh)
        if keep is not None:
            dh_prev += (1 - keep[t]) * dv
            dv = keep[t] * dv
        dz = dv * (hprev - g)
        dg = dv * (1 - z)
        dh_prev += dv * z
        dpg = dg * (1 - g * g)
        dpr = dpg * qg * r * (1 - r)
        dpz = dz * z * (1 - z)
        da = np.concatenate([dpz, dpr, dpg], axis=1)
        dq = np.concatenate([dpz, dpr, dpg * r], axis=1)
        da = np.where(alive, da, 0)
        dq = np.where(alive, dq, 0)
        da_all[t] = da
        dR += yprev.T @ dq
        dbr += dq.sum(axis=0)
        dy_prev = dq @ Reff.T
        # Finished samples pass their final-state gradient through unchanged.
        dh = np.where(alive, dh_prev, dh)
        dy_next = np.where(alive, dy_prev, dy_next)
    if rmask is not None:
        dR *= rmask
    return {
        "x": np.einsum("tbk,ik->tbi", da_all, W),
        "W": np.einsum("tbi,tbk->ik", x, da_all),
        "R": dR,
        "bx": da_all.sum(axis=(0, 1)),
        "br": dbr,
        "thr": dthr,
        "h0": dh,
        "y0": dy_next,
        "drive": da_all,
    }
