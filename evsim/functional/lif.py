"""Leaky integrate-and-fire populations: forward and backward on whole
sequences (the maths and the order of a step: :mod:`evsim.kernels.lif`).

Shapes (T steps, B samples, N units, R receptors): the input ``x`` is
receptor-major (T, B, R N): ``x[t, b, k * N + j]`` arrives at receptor k of
unit j; the state is ``v`` (B, N), ``I`` (B, R N) receptor values and ``r``
(B, N) int64 refractory steps left.
"""

from dataclasses import dataclass, field

import numpy as np

from evsim import threads
from evsim.functional import _checks as check
from evsim.functional._dispatch import adapter, check_backend
from evsim.kernels import lif as klif
from evsim.kernels.contract import LIFCell, LIFSaved

__all__ = ["LIFCell", "LIFResult", "LIFSaved", "lif_cell", "lif_forward", "lif_backward",
           "lif_backward_active"]


def lif_cell(tau_mem, receptors, dt, *, v_rest=0.0, v_th=1.0, v_reset=0.0, n_ref=0, damp=0.7,
             support=1.0):
    """The checked constants of one LIF population (:class:`LIFCell`).

    tau_mem : membrane time constant (ms). receptors : sequence of
    ``(kind, tau, e_rev)`` with kind ``lif.STEP``, ``lif.EXP`` or ``lif.COND``
    (see :meth:`evsim.Current.spec`). dt : step (ms). n_ref : refractory
    period in steps. damp, support : the surrogate gradient.
    """
    tau_mem = check.positive("tau_mem", tau_mem)
    dt = check.positive("dt", dt)
    if not receptors:
        raise ValueError("receptors must hold at least one (kind, tau, e_rev)")
    for k, rec in enumerate(receptors):
        if len(rec) != 3 or rec[0] not in (klif.STEP, klif.EXP, klif.COND):
            raise ValueError(f"receptors[{k}] must be (kind, tau, e_rev) with kind in "
                             f"(lif.STEP, lif.EXP, lif.COND), got {rec!r}")
        check.positive(f"receptors[{k}] tau", rec[1], allow_zero=rec[0] == klif.STEP)
    v_rest, v_th, v_reset = (float(v) for v in (v_rest, v_th, v_reset))
    for name, v in (("v_rest", v_rest), ("v_th", v_th), ("v_reset", v_reset)):
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    if not v_reset < v_th:
        raise ValueError(f"v_reset ({v_reset}) must be below v_th ({v_th})")
    a_m, kinds, a, c, e_rev, cond = klif.constants(tau_mem, receptors, dt)
    return LIFCell(a_m=a_m, dt_tau=dt / tau_mem, kinds=kinds, a=a, c=c, e_rev=e_rev,
                   conductance=cond, v_rest=v_rest, v_th=v_th, v_reset=v_reset,
                   n_ref=check.size("n_ref", n_ref, 0),
                   damp=check.positive("damp", damp, allow_zero=True),
                   support=check.positive("support", support))


@dataclass
class LIFResult:
    """Outputs of :func:`lif_forward` (host arrays).

    s, u, v : (T, B, N) spikes, membrane before and after the reset (zero
    past a sample's length). I : (T, B, R N) receptor values after each step.
    held : (T, B, N) uint8, 1 where the unit was refractory. v_last, I_last,
    r_last : the state after each sample's last step. spikes : total number of
    spikes. saved : what :func:`lif_backward` needs (None with ``training=False``).
    """

    s: np.ndarray
    u: np.ndarray
    v: np.ndarray
    I: np.ndarray  # noqa: E741 - the receptor values, as in the maths
    held: np.ndarray
    v_last: np.ndarray
    I_last: np.ndarray
    r_last: np.ndarray
    spikes: int
    saved: LIFSaved | None = field(default=None, repr=False)

    @property
    def state(self):
        """The final state as a dict ``v, I, r``."""
        return {"v": self.v_last, "I": self.I_last, "r": self.r_last}


def lif_forward(x, v0, I0, r0, lengths, cell, *, training=True, backend="cpu"):  # noqa: E741
    """Run a LIF population over a batch of sequences.

    x : (T, B, R N) receptor inputs. v0 (B, N), I0 (B, R N), r0 (B, N) int:
    the initial state. lengths : (B,) valid steps per sample (0 .. T; a sample
    with 0 steps keeps its state). cell : :class:`LIFCell` from
    :func:`lif_cell`. training : keep what :func:`lif_backward` needs.
    Returns a :class:`LIFResult`.
    """
    check_backend(backend)
    if not isinstance(cell, LIFCell):
        raise TypeError(f"cell must be an evsim.functional.LIFCell (see lif_cell), got "
                        f"{type(cell).__name__}")
    x = check.float_array("x", x, (None, None, None), finite=False)
    T, B, RN = x.shape
    R = cell.receptors
    if RN % R:
        raise ValueError(f"x must have shape (T, B, R N) with R = {R} receptors, got {x.shape}")
    N = RN // R
    dt = x.dtype
    v0 = check.float_array("v0", v0, (B, N), dt)
    I0 = check.float_array("I0", I0, (B, RN), dt)  # noqa: E741
    r0 = check.int_array("r0", r0, (B, N), 0)
    lengths = check.step_lengths(lengths, T, B)
    with threads.owned():
        out = adapter(backend, "lif").lif_forward(x, v0, I0, r0, lengths, cell)
    s, u, v, I_seq, held, v_last, I_last, r_last, n = out
    saved = LIFSaved(s=s, u=u, held=held, lengths=lengths, cell=cell,
                     backend=backend) if training else None
    return LIFResult(s=s, u=u, v=v, I=I_seq, held=held, v_last=v_last, I_last=I_last,
                     r_last=r_last, spikes=int(n), saved=saved)


def lif_backward(saved, dy, carry=None):
    """BPTT through :func:`lif_forward` with the surrogate derivative (current
    receptors only).

    saved : :class:`LIFSaved` (``LIFResult.saved``; a step-wise schedule builds
    one per step from the saved slices). dy : (T, B, N) dL/d spikes.
    carry : (dL/dv (B, N), dL/dI (B, R N)) of the state after the last step
    (default zeros). Returns (dL/dx (T, B, R N), carry before the first step).
    """
    if not isinstance(saved, LIFSaved):
        raise TypeError(f"saved must be the LIFSaved of a training forward pass, got "
                        f"{type(saved).__name__}")
    cell = saved.cell
    if cell.conductance:
        raise NotImplementedError("back-propagation through conductance receptors is not "
                                  "implemented; train with current receptors (evsim.Current)")
    T, B, N = saved.s.shape
    dt = saved.s.dtype
    RN = cell.receptors * N
    dy = check.float_array("dy", np.ascontiguousarray(dy), (T, B, N), dt)
    if carry is None:
        carry = (np.zeros((B, N), dt), np.zeros((B, RN), dt))
    dv = check.float_array("carry[0]", carry[0], (B, N), dt, finite=False)
    dI = check.float_array("carry[1]", carry[1], (B, RN), dt, finite=False)
    with threads.owned():
        return adapter(saved.backend, "lif").lif_backward(saved, dy, dv, dI)


def lif_backward_active(saved):
    """(T, B, N) bool: unit-steps whose spike can carry a gradient (inside the
    surrogate band and not refractory)."""
    if not isinstance(saved, LIFSaved):
        raise TypeError(f"saved must be a LIFSaved, got {type(saved).__name__}")
    cell = saved.cell
    return (np.abs(saved.u - cell.v_th) * cell.support < 1.0) & (saved.held == 0)
