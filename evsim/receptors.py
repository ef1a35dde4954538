"""Synaptic receptors of a spiking population: where a projection's input goes.

A :class:`~evsim.populations.LIF` population has one or more named receptors;
each projection onto it names the receptor it feeds (``connect(...,
receptor="exc")``). A spike through a synapse of weight ``w`` adds ``w`` to the
target unit's receptor value, which then decays with the receptor's time
constant (the maths: :mod:`evsim.kernels.lif`):

* :class:`Current` ``(tau)`` - a current in volts (Brian2's ``ge`` in the CUBA
  example: ``tau_m dv/dt = -(v - v_rest) + I``, ``dI/dt = -I / tau``).
  ``tau = 0`` is a step current: the input drives the membrane during its step
  only (a current injection held for one step; nothing carried over).
* :class:`Conductance` ``(tau, e_rev)`` - a conductance in units of the leak
  conductance with reversal potential ``e_rev``
  (``tau_m dv/dt = -(v - v_rest) + g (e_rev - v)``).

Example (the CUBA network's cells)::

    LIF("E", 3200, tau_mem=20.0, v_rest=-49.0, v_th=-50.0, v_reset=-60.0,
        refractory=5.0, receptors={"exc": Current(5.0), "inh": Current(10.0)})
"""

import math

from evsim import _validate as check
from evsim.kernels.lif import COND, EXP, STEP

__all__ = ["Current", "Conductance", "receptor_from_config"]


class Current:
    """Exponentially decaying synaptic current with time constant ``tau``
    (ms; 0 for a step current)."""

    def __init__(self, tau):
        self.tau = check.positive("Current: tau", tau, allow_zero=True)

    def spec(self):
        """(kind, tau, reversal potential) for the kernels."""
        return (STEP if self.tau == 0 else EXP, self.tau, None)

    def config(self):
        return {"type": "current", "tau": self.tau}

    def __repr__(self):
        return f"Current(tau={self.tau})"


class Conductance:
    """Exponentially decaying conductance (time constant ``tau`` ms > 0, in
    units of the leak conductance) with reversal potential ``e_rev``."""

    def __init__(self, tau, e_rev):
        self.tau = check.positive("Conductance: tau", tau)
        try:
            self.e_rev = float(e_rev)
        except (TypeError, ValueError):
            raise TypeError(f"Conductance: e_rev must be a number, got {e_rev!r}") from None
        if not math.isfinite(self.e_rev):
            raise ValueError(f"Conductance: e_rev must be finite, got {e_rev}")

    def spec(self):
        return (COND, self.tau, self.e_rev)

    def config(self):
        return {"type": "conductance", "tau": self.tau, "e_rev": self.e_rev}

    def __repr__(self):
        return f"Conductance(tau={self.tau}, e_rev={self.e_rev})"


def receptor_from_config(cfg):
    """Inverse of ``config()``."""
    if isinstance(cfg, (Current, Conductance)):
        return cfg
    kind = cfg.get("type") if isinstance(cfg, dict) else None
    if kind == "current":
        return Current(cfg["tau"])
    if kind == "conductance":
        return Conductance(cfg["tau"], cfg["e_rev"])
    raise ValueError(f"a receptor must be evsim.Current(tau) or evsim.Conductance(tau, e_rev), "
                     f"got {cfg!r}")
