"""The backend contract: typed records passed between :mod:`evsim.functional`
and a backend adapter (:mod:`evsim.kernels.cpu_backend`,
:mod:`evsim.kernels.cuda_backend`, :mod:`evsim.kernels.reference_backend`).

The functional layer checks the arguments and builds an ``*Args`` record of
host arrays; the backend runs its kernels and returns the outputs (host
arrays) and, for a training pass, a ``*Saved`` record of what its backward
needs. Every backend fills the same fields; a field holds a *backend array*:
a NumPy array on the CPU backends, a device array on CUDA (the saved state
stays on the GPU between forward and backward). :func:`to_host` turns either
into a NumPy array.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["EGRUArgs", "EGRUSaved", "LIFCell", "LIFSaved", "to_host"]


def to_host(arr):
    """A NumPy array for a backend array (device arrays are copied to the host)."""
    if arr is None or isinstance(arr, np.ndarray):
        return arr
    return arr.copy_to_host()


@dataclass(eq=False)
class EGRUArgs:
    """Checked arguments of one EGRU (or GRU) forward pass; host arrays.

    backend : "cpu", "dense", "reference" or "cuda".
    a : (T, B, 3H) input drive ``x W + bx``.
    R : (H, 3H) recurrent weights; ``Reff`` the weights the kernels use
        (``R * rmask`` with DropConnect, else R itself); ``rmask`` (H, 3H) or None.
    br : (3H,). thr : (H,) thresholds (zeros for a GRU). h0, y0 : (B, H).
    keep : zoneout keep factors, (T, B, H) for ``keep_mode`` 1, (1, 1, 1) for
        0 (none, all ones) and 2 (one constant).
    lengths : (B,) int64, steps per sample.
    damp, support : surrogate gradient. dense_gru : a plain GRU (every unit
        emits its state every step). training : save for the backward pass.
    trace_alpha : output trace factor or None.
    x, W : the input and input weights when given (their gradients are
        computed from the drive's), else None.
    """

    backend: str
    a: np.ndarray
    R: np.ndarray
    Reff: np.ndarray
    rmask: np.ndarray | None
    br: np.ndarray
    thr: np.ndarray
    h0: np.ndarray
    y0: np.ndarray
    keep: np.ndarray
    keep_mode: int
    lengths: np.ndarray
    damp: float
    support: float
    dense_gru: bool
    training: bool
    trace_alpha: float | None = None
    x: np.ndarray | None = None
    W: np.ndarray | None = None

    @property
    def shape(self):
        """(T, B, H)."""
        T, B, _ = self.a.shape
        return T, B, self.R.shape[0]


@dataclass(eq=False)
class EGRUSaved:
    """What a training forward pass saved for BPTT: backend arrays (T, B, H).

    y, h, c : outputs, states after the reset, event flags.
    v, z, r, g, qg : membrane before the reset, gates, recurrent drive of the
        candidate gate (the cuDNN-style reset product).
    active : (mask (T, B, H) bool, counts (T, B) int64) of the backward-active
        units (fired or inside the surrogate band), host arrays; computed by
        the backend on first use and kept here (None until then).
    """

    y: object
    h: object
    c: object
    v: object
    z: object
    r: object
    g: object
    qg: object
    active: tuple | None = None


@dataclass(frozen=True, eq=False)
class LIFCell:
    """The constants of one LIF population's step (see :mod:`evsim.kernels.lif`).

    a_m : membrane decay per step. dt_tau : dt / tau_mem (exponential Euler).
    kinds : (R,) int64 receptor kinds (``lif.STEP``, ``EXP``, ``COND``).
    a, c, e_rev : (R,) float64 receptor decay, input factor and reversal
        potential. conductance : any conductance receptor (exponential Euler).
    v_rest, v_th, v_reset : potentials. n_ref : refractory steps.
    damp, support : surrogate gradient ``damp * max(0, 1 - support |u - v_th|)``.
    """

    a_m: float
    dt_tau: float
    kinds: np.ndarray
    a: np.ndarray
    c: np.ndarray
    e_rev: np.ndarray
    conductance: bool
    v_rest: float
    v_th: float
    v_reset: float
    n_ref: int
    damp: float
    support: float

    @property
    def receptors(self):
        """Number of receptors R."""
        return int(self.kinds.shape[0])


@dataclass(eq=False)
class LIFSaved:
    """What the backward pass of a LIF sequence needs: spikes ``s``, membrane
    before the reset ``u`` and refractory flags ``held`` (T, B, N) (backend
    arrays), the (B,) int64 ``lengths`` (host), the ``cell`` and the ``backend``
    that ran the forward pass."""

    s: object
    u: object
    held: object
    lengths: np.ndarray
    cell: LIFCell
    backend: str
