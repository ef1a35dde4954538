"""The EGRU cell maths, written once as scalar functions.

``build(jit, exp)`` compiles the same Python source with a given decorator:
``numba.njit(inline="always")`` for the CPU kernels, ``numba.cuda.jit(device=True)``
for the CUDA kernels. The formulas are those of DESIGN.md section 1:

    z = sigmoid(a_z + q_z)        r = sigmoid(a_r + q_r)
    g = tanh(a_g + r * q_g)       v = z h + (1 - z) g
    v = m v + (1 - m) h           (zoneout keep factor m; m = 1 without zoneout)
    c = v > thr                   y = c v         h' = v - c thr
    dc/dv ~ damp * max(0, 1 - support |v - thr|)

A plain GRU (every unit emits its whole state every step) is the same cell with
``dense_gru`` set: c = 1, y = h' = v, no surrogate.

Numeric constants are built with ``real`` (``float`` by default). A float
literal such as ``1.0`` is a float64 in Numba and would promote float32
arithmetic to float64 (half the vector width, conversions in the loop); the CPU
kernels build a float32 copy with ``real=numpy.float32`` so float32 maths stays
float32. The functions themselves stay plain scalar code (valid for CUDA).
"""

from types import SimpleNamespace


def build(jit, exp, real=float):
    """Compile the cell functions with decorator ``jit`` and exponential ``exp``.

    ``real`` converts the numeric constants (e.g. ``numpy.float32`` for a float32
    build); the default keeps Python floats.
    """
    ZERO = real(0.0)
    ONE = real(1.0)
    TWO = real(2.0)

    @jit
    def sigmoid(x):
        return ONE / (ONE + exp(-x))

    @jit
    def tanh(x):
        # tanh from the same exp keeps one transcendental primitive per backend.
        return TWO / (ONE + exp(-TWO * x)) - ONE

    @jit
    def gates(az, ar, ag, qz, qr, qg, h_prev, keep):
        """Gate values and the zoned-out membrane value v."""
        z = sigmoid(az + qz)
        r = sigmoid(ar + qr)
        g = tanh(ag + r * qg)
        v = z * h_prev + (ONE - z) * g
        v = keep * v + (ONE - keep) * h_prev
        return z, r, g, v

    @jit
    def fire(v, thr, dense_gru):
        """Event flag c, graded output y and the reset state h (one return:
        the CPU kernels inline this into vectorised loops)."""
        c = ONE if (dense_gru or v > thr) else ZERO
        t = ZERO if dense_gru else thr
        return c, c * v, v - c * t

    @jit
    def surrogate(v, thr, damp, support):
        """Pseudo-derivative of the Heaviside, zero outside |v - thr| < 1/support."""
        return damp * max(ZERO, ONE - support * abs(v - thr))

    @jit
    def backward(dy, dh, v, c, z, r, g, qg, h_prev, thr, keep, damp, support, dense_gru):
        """Local backward of one unit for one step.

        Returns the gradients of the three gate pre-activations (dpz, dpr, dpg;
        the input drive gets exactly these, the recurrent drive gets dpz, dpr and
        dpg * r), the gradient flowing to h_{t-1}, and the threshold gradient.
        """
        if dense_gru:
            dv = dy + dh
            dthr = ZERO
        else:
            s = surrogate(v, thr, damp, support)
            dv = dy * (c + v * s) + dh * (ONE - thr * s)
            dthr = dh * (thr * s - c) - dy * v * s
        dh_prev = (ONE - keep) * dv
        dv = keep * dv
        dh_prev += dv * z
        dpz = dv * (h_prev - g) * z * (ONE - z)
        dpg = dv * (ONE - z) * (ONE - g * g)
        dpr = dpg * qg * r * (ONE - r)
        return dpz, dpr, dpg, dh_prev, dthr

    @jit
    def backward_active(v, thr, support, dense_gru):
        """True when dL/dy of this unit can be non-zero: fired or inside the band."""
        return dense_gru or v > thr or abs(v - thr) * support < ONE

    return SimpleNamespace(sigmoid=sigmoid, tanh=tanh, gates=gates, fire=fire,
                           surrogate=surrogate, backward=backward,
                           backward_active=backward_active)
