"""The dense NumPy baseline of the kernel benchmark: the fastest plain
NumPy/BLAS EGRU we know how to write, with the same maths as evsim.

Same cell as evsim (DESIGN.md section 1, gates z, r, g; W (I, 3H), R (H, 3H))::

    a = x_t W + bx                 one GEMM for all steps at once
    q = y_{t-1} R + br             one BLAS product per step (GEMV at B = 1)
    z, r = sigmoid(a_zr + q_zr)
    g = tanh(a_g + r * q_g)
    v = z h + (1 - z) g
    c = v > thr;  y = c v;  h = v - c thr
    surrogate dc/dv = damp * max(0, 1 - support |v - thr|)

Every step works in preallocated buffers with in-place ufuncs (``out=``); the
sigmoid is ``0.5 tanh(x / 2) + 0.5`` (measured faster than the exp form and
than ``scipy.special.expit``). With ``save=True`` the forward writes each
step straight into the (T, B, ...) arrays BPTT needs, and :func:`backward` is
a hand-written dense BPTT: per step one product ``dq R^T``, then ``dR`` as one
GEMM ``yprev^T dq`` over all steps, ``dW``, ``dx`` and the biases likewise.
BLAS runs at its default thread count.

    python benchmarks/numpy_egru.py --check    # against evsim's reference, float64

The benchmark runs :func:`bench` in a fresh process (``kernels.py``); this
module imports only NumPy (and ``common`` for the timing loop) so that the
baseline's process holds no other thread pool.
"""

import sys
import time

import numpy as np


def _sigmoid_(x):
    """In-place logistic function."""
    np.multiply(x, 0.5, out=x)
    np.tanh(x, out=x)
    np.multiply(x, 0.5, out=x)
    np.add(x, 0.5, out=x)
    return x


def forward(x, W, R, bx, br, thr, h0=None, y0=None, save=False):
    """Dense EGRU forward. Returns ``(y, saved)``: ``y`` (T, B, H) and, with
    ``save=True``, the dict of arrays :func:`backward` needs (else None)."""
    T, B, In = x.shape
    H = R.shape[0]
    G = 3 * H
    dt = x.dtype
    A = np.matmul(x.reshape(T * B, In), W).reshape(T, B, G)
    A += bx
    # Y[t] holds y_{t-1} (Y[0] = y0), so yprev of step t is Y[t] and the
    # output is Y[1:]; the same for the states in Hs when they are saved.
    Y = np.empty((T + 1, B, H), dt)
    Y[0] = 0 if y0 is None else y0
    n = T if save else 1
    Q = np.empty((n, B, G), dt)
    ZR = np.empty((n, B, 2 * H), dt)
    Gt = np.empty((n, B, H), dt)
    V = np.empty((n, B, H), dt)
    C = np.empty((n, B, H), dt)
    Hs = np.empty((T + 1 if save else 2, B, H), dt)
    Hs[0] = 0 if h0 is None else h0
    for t in range(T):
        k = t if save else 0
        q, zr, g, v, c = Q[k], ZR[k], Gt[k], V[k], C[k]
        hp = Hs[t] if save else Hs[t & 1]
        h = Hs[t + 1] if save else Hs[(t + 1) & 1]
        y = Y[t + 1]
        a = A[t]
        np.matmul(Y[t], R, out=q)
        q += br
        np.add(a[:, :2 * H], q[:, :2 * H], out=zr)
        _sigmoid_(zr)
        z, r = zr[:, :H], zr[:, H:]
        np.multiply(r, q[:, 2 * H:], out=g)
        g += a[:, 2 * H:]
        np.tanh(g, out=g)
        np.subtract(hp, g, out=v)  # v = g + z (h - g) = z h + (1 - z) g
        v *= z
        v += g
        np.greater(v, thr, out=c)
        np.multiply(v, c, out=y)
        np.multiply(c, thr, out=h)
        np.subtract(v, h, out=h)
    saved = None
    if save:
        saved = dict(x=x, W=W, R=R, thr=thr, Q=Q, ZR=ZR, G=Gt, V=V, C=C, Hs=Hs, Y=Y)
    return Y[1:], saved


def backward(saved, dy, damp, support):
    """Dense BPTT through :func:`forward` (``save=True``). Returns the gradients
    ``x, W, R, bx, br, thr, h0, y0`` (the keys of ``evsim.egru_backward``)."""
    x, W, R, thr = saved["x"], saved["W"], saved["R"], saved["thr"]
    Q, ZR, Gt, V, C, Hs, Y = (saved[k] for k in ("Q", "ZR", "G", "V", "C", "Hs", "Y"))
    T, B, In = x.shape
    H = R.shape[0]
    dt = x.dtype
    damp, support = dt.type(damp), dt.type(support)
    DA = np.empty((T, B, 3 * H), dt)  # dL/da (input drive)
    DQ = np.empty((T, B, 3 * H), dt)  # dL/dq (recurrent drive)
    dh = np.zeros((B, H), dt)
    dy_next = np.zeros((B, H), dt)  # recurrent part of dL/dy_t: dq_{t+1} R^T
    dthr = np.zeros((B, H), dt)
    dyt, s, vs, ts, dv, omz, t1, t2 = (np.empty((B, H), dt) for _ in range(8))
    RT = R.T
    for t in range(T - 1, -1, -1):
        v, c, g, qg = V[t], C[t], Gt[t], Q[t, :, 2 * H:]
        z, r = ZR[t, :, :H], ZR[t, :, H:]
        da, dq = DA[t], DQ[t]
        dpz, dpr, dpg = da[:, :H], da[:, H:2 * H], da[:, 2 * H:]
        np.add(dy[t], dy_next, out=dyt)
        # surrogate s = damp * max(0, 1 - support |v - thr|)
        np.subtract(v, thr, out=s)
        np.abs(s, out=s)
        np.multiply(s, -support, out=s)
        np.add(s, 1, out=s)
        np.maximum(s, 0, out=s)
        np.multiply(s, damp, out=s)
        np.multiply(v, s, out=vs)
        np.multiply(thr, s, out=ts)
        # dthr += dh (thr s - c) - dyt v s
        np.subtract(ts, c, out=t1)
        t1 *= dh
        np.multiply(dyt, vs, out=t2)
        t1 -= t2
        dthr += t1
        # dv = dyt (c + v s) + dh (1 - thr s)
        vs += c
        vs *= dyt
        np.subtract(1, ts, out=ts)
        ts *= dh
        np.add(vs, ts, out=dv)
        # z gate: dpz = dv (hprev - g) z (1 - z)
        np.subtract(1, z, out=omz)
        np.subtract(Hs[t], g, out=dpz)
        dpz *= dv
        dpz *= z
        dpz *= omz
        # g: dpg = dv (1 - z) (1 - g^2)
        np.multiply(dv, omz, out=dpg)
        np.multiply(g, g, out=t1)
        np.subtract(1, t1, out=t1)
        dpg *= t1
        # state path: dh_{t-1} = dv z
        np.multiply(dv, z, out=dh)
        # r gate: dpr = dpg qg r (1 - r)
        np.multiply(dpg, qg, out=dpr)
        dpr *= r
        np.subtract(1, r, out=t1)
        dpr *= t1
        # dq = [dpz, dpr, dpg r]; output path dL/dy_{t-1} = dq R^T
        np.copyto(dq[:, :2 * H], da[:, :2 * H])
        np.multiply(dpg, r, out=dq[:, 2 * H:])
        np.matmul(dq, RT, out=dy_next)
    DA2 = DA.reshape(T * B, 3 * H)
    DQ2 = DQ.reshape(T * B, 3 * H)
    x2 = x.reshape(T * B, In)
    return {
        "x": np.matmul(DA2, W.T).reshape(T, B, In),
        "W": np.matmul(x2.T, DA2),
        "R": np.matmul(Y[:-1].reshape(T * B, H).T, DQ2),
        "bx": DA2.sum(axis=0),
        "br": DQ2.sum(axis=0),
        "thr": dthr.sum(axis=0),
        "h0": dh,
        "y0": dy_next,
    }


def forward_backward(x, W, R, bx, br, thr, dy, damp, support):
    """Training forward (saving what BPTT needs) and dense BPTT."""
    _, saved = forward(x, W, R, bx, br, thr, save=True)
    return backward(saved, dy, damp, support)


# --------------------------------------------------------------------------
# Benchmark entry point (run in its own process by kernels.py)


def bench(payload):
    """Time the baseline on the arrays of ``payload["npz"]`` (x, W, R, bx, br,
    thr, dy; several files are merged). Returns median seconds ``fwd`` and
    ``fb`` (one per support), the activity and BLAS's thread count."""
    from common import time_interleaved

    data = {}
    for path in payload["npz"]:
        data.update(np.load(path))
    x, W, R, bx, br, thr, dy = (data[k] for k in ("x", "W", "R", "bx", "br", "thr", "dy"))
    supports = payload["supports"]
    fns = {"fwd": lambda: forward(x, W, R, bx, br, thr)}
    for s in supports:
        fns[f"fb_{s}"] = lambda s=s: forward_backward(x, W, R, bx, br, thr, dy, s, s)
    t = time_interleaved(fns, payload["repeats"])
    y, _ = forward(x, W, R, bx, br, thr)
    out = {"fwd": t["fwd"], "fb": {str(s): t[f"fb_{s}"] for s in supports},
           "activity": np.count_nonzero(y) / y.size}
    try:
        import threadpoolctl

        out["blas_threads"] = max(i["num_threads"] for i in threadpoolctl.threadpool_info()
                                  if i.get("user_api") == "blas")
    except (ImportError, ValueError):
        out["blas_threads"] = None
    return out


# --------------------------------------------------------------------------


def check(T=7, B=3, In=5, H=11, seed=0, verbose=True):
    """Compare forward and backward with evsim's reference backend in float64
    on a tiny problem (both supports of the benchmark). Raises AssertionError
    on a mismatch; returns the largest relative error."""
    import evsim

    rng = np.random.default_rng(seed)
    dt = np.float64
    x = rng.normal(size=(T, B, In)).astype(dt)
    W = (rng.normal(size=(In, 3 * H)) * 2 / np.sqrt(In)).astype(dt)
    R = (rng.normal(size=(H, 3 * H)) / np.sqrt(H)).astype(dt)
    bx = rng.normal(size=3 * H).astype(dt) * 0.1
    br = rng.normal(size=3 * H).astype(dt) * 0.1
    thr = rng.uniform(0.0, 0.3, size=H).astype(dt)
    dy = rng.normal(size=(T, B, H)).astype(dt)
    worst = 0.0
    for support in (1.0, 3.6):
        ref = evsim.egru_forward(x, W, R, bx, br, thr, training=True, backend="reference",
                                 damp=support, support=support)
        gref = evsim.egru_backward(ref, dy)
        y, saved = forward(x, W, R, bx, br, thr, save=True)
        y_inf, _ = forward(x, W, R, bx, br, thr)
        g = backward(saved, dy, support, support)
        events = int(ref.c.sum())
        assert 0 < events < T * B * H, f"degenerate check problem: {events} events"
        pairs = [("y", y, ref.y), ("y (inference)", y_inf, ref.y)]
        pairs += [(f"d{k}", g[k], gref[k]) for k in ("x", "W", "R", "bx", "br", "thr",
                                                      "h0", "y0")]
        for name, a, b in pairs:
            err = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
            worst = max(worst, err)
            assert np.allclose(a, b, rtol=1e-9, atol=1e-11), \
                f"support {support}: {name} differs from the reference (rel. err. {err:.2e})"
        if verbose:
            print(f"support = damp = {support}: {events}/{T * B * H} events; y and "
                  f"dx, dW, dR, dbx, dbr, dthr, dh0, dy0 match evsim's reference")
    if verbose:
        print(f"check passed: largest relative error {worst:.1e} (float64)")
    return worst


def _main(argv):
    if "--check" in argv:
        check()
        return
    # a tiny demonstration of the speed at one size
    rng = np.random.default_rng(0)
    T, B, In, H = 100, 1, 64, 1024
    x = rng.normal(size=(T, B, In)).astype(np.float32)
    W = (rng.normal(size=(In, 3 * H)) / 4).astype(np.float32)
    R = (rng.normal(size=(H, 3 * H)) / 32).astype(np.float32)
    b = np.zeros(3 * H, np.float32)
    thr = np.full(H, 0.3, np.float32)
    forward(x, W, R, b, b, thr)
    t0 = time.perf_counter()
    forward(x, W, R, b, b, thr)
    print(f"forward T={T} B={B} H={H}: {(time.perf_counter() - t0) * 1e3:.1f} ms "
          "(use --check to verify against evsim)")


if __name__ == "__main__":
    _main(sys.argv[1:])
