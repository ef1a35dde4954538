"""Inputs of a run: checks, the number of steps T and samples B, initial states."""

import numpy as np

from evsim import _validate as check
from evsim import populations as pops

__all__ = ["check_inputs", "initial_states"]


def check_inputs(net, inputs, lengths, steps):
    """Check ``inputs`` against the input populations of ``net``.

    Returns (values, T, B, lengths): checked value per input population (in the
    network's dtype), the number of steps and samples, and (B,) int64 lengths.
    """
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs must be a dict input name -> array, got "
                        f"{type(inputs).__name__}")
    input_pops = {n: p for n, p in net.populations.items() if p.is_input}
    for name in inputs:
        if name not in input_pops:
            what = ("is not an input population" if name in net.populations
                    else "is not a population of this network")
            raise KeyError(f"inputs[{name!r}]: {name!r} {what}; the inputs are "
                           f"{sorted(input_pops)}")
    for name, pop in input_pops.items():
        if name not in inputs and not isinstance(pop, pops.PoissonInput):
            raise KeyError(f"missing input {name!r} ({type(pop).__name__}); pass "
                           f"inputs={{{name!r}: ...}}")
    T, B = _infer_shape(input_pops, inputs, lengths, steps)
    lengths = check.lengths_array(lengths, T, B)
    values = {name: pop._check(inputs.get(name), T, B, net.dtype)
              for name, pop in input_pops.items()}
    return values, T, B, lengths


def _infer_shape(input_pops, inputs, lengths, steps):
    """(T, B) from ``steps``, ``lengths`` and the inputs, which must agree."""
    T = None if steps is None else check.size("steps", steps)
    B = None if lengths is None else len(np.atleast_1d(lengths))
    src = {"T": "steps" if T is not None else None, "B": "lengths" if B else None}
    for name, value in inputs.items():
        t, b = input_pops[name]._shape_hint(value)
        for key, got in (("T", t), ("B", b)):
            if got is None:
                continue
            have = T if key == "T" else B
            if have is not None and have != got:
                raise ValueError(f"inputs[{name!r}] implies {key} = {got} but "
                                 f"{src[key]} implies {key} = {have}; all inputs must "
                                 f"share (T, B)")
            if key == "T":
                T = got
            else:
                B = got
            src[key] = f"inputs[{name!r}]"
    if T is None:
        raise ValueError("cannot tell the number of steps T from the inputs; pass steps=T")
    B = 1 if B is None else B
    if T < 1 or B < 1:
        raise ValueError(f"inputs must have T >= 1 steps and B >= 1 samples, got "
                         f"T = {T}, B = {B}")
    return T, B


def initial_states(net, B, reset):
    """Population name -> initial state dict: zero, or with ``reset=False`` the
    final state of the previous run (``net.state``, same batch size)."""
    states = {}
    for name, pop in net.populations.items():
        st = pop._initial_state(B, net.dtype, net._rngs[name])
        if not reset and name in net.state:
            old = net.state[name]
            for k in st:
                if k in old and old[k].shape == st[k].shape:
                    st[k] = np.ascontiguousarray(old[k], st[k].dtype)
                elif k in old:
                    raise ValueError(f"reset=False: the stored state of {name!r} has "
                                     f"batch {old[k].shape[0]}, this run has {B}")
        states[name] = st
    return states
