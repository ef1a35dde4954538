"""The results of a run and of a backward pass: :class:`ForwardPass` (alias
``RunResult``) and :class:`NetworkGradients`."""

from dataclasses import dataclass, field

import numpy as np

from evsim.functional import Gradients

__all__ = ["ForwardPass", "RunResult", "NetworkGradients"]

_FWD_KEYS = ("events", "fwd_macs", "fwd_macs_event", "fwd_macs_dense")
_BWD_KEYS = ("bwd_macs", "bwd_macs_event", "bwd_macs_dense")


@dataclass
class ForwardPass:
    """Result of :meth:`Network.forward` / :meth:`Network.run`.

    Attributes
    ----------
    outputs : dict population name -> (T, B, N) outputs (EGRU: graded events
        y; LIF and spike inputs: spikes; readout: values); zero past a
        sample's length. An EGRU with ``trace_alpha`` adds ``name + ".trace"``.
    stats : dict population name -> counters: ``events``, ``activity``,
        ``fwd_macs`` (multiply-adds done by the population and its incoming
        projections), ``fwd_macs_dense`` (the dense equivalent), ``wall_s``;
        after :meth:`Network.backward` also ``bwd_macs``, ``bwd_macs_dense``,
        ``backward_sparsity``, ``bwd_wall_s``.
    projection_stats : dict projection name -> ``fwd_macs``,
        ``fwd_macs_dense``, ``wall_s`` (and backward counters).
    lengths : (B,) int64. training : bool. schedule : "dag", "stepwise" or "compiled".
    wall_s : wall-clock seconds of the whole run.
    """

    outputs: dict
    stats: dict
    projection_stats: dict
    lengths: np.ndarray
    training: bool
    schedule: str
    wall_s: float = 0.0
    _runs: dict = field(default_factory=dict, repr=False)
    _backward_done: bool = field(default=False, repr=False)
    _order: list = field(default_factory=list, repr=False)  # population names, run order
    _delayed: set = field(default_factory=set, repr=False)  # projections given +1 step
    _token: tuple | None = field(default=None, repr=False)  # see token()

    def summary(self):
        """Totals over the network: events, forward multiply-adds done and
        their dense equivalents, wall-clock seconds."""
        return _totals(self.stats, _FWD_KEYS, self.wall_s)


RunResult = ForwardPass


def token(net):
    """What ties a forward pass to the network that made it: the network
    itself, and every parameter array and sparse structure array (index
    arrays, per-synapse delays) by identity. The forward pass holds these
    references, so no other array can take the identity of one of them while
    it lives. Replacing a parameter or structure array (``Network.load``,
    ``connect``, ``add``, assigning ``params[...]``) changes the token; updating
    values in place does not (see :func:`check_token`)."""
    arrays = [(k, v) for k, v in net.params().items()]
    for name, proj in net.projections.items():
        for attr in ("indptr", "indices", "_delay"):
            value = getattr(proj, attr, None)
            if isinstance(value, np.ndarray):
                arrays.append((f"{name}.{attr}", value))
    return (net, tuple(net.populations), tuple(net.projections), tuple(arrays))


def check_token(net, fp):
    """Raise a ValueError unless ``fp`` was made by ``net`` with the parameter
    and structure arrays it has now (before any kernel runs: the backward
    kernels index with the forward's event lists and the live structure).

    In-place updates of the same arrays between forward and backward are not
    detected (that would read every parameter on every call): the backward
    then mixes old and new values. The Trainer updates after backward."""
    tok = fp._token
    if tok is None or tok[0] is not net:
        raise ValueError("this forward pass was made by another network (or is not a "
                         "forward pass of Network.forward); back-propagate with the network "
                         "that ran it")
    now = token(net)
    if tok[1:3] != now[1:3]:
        raise ValueError("the network's populations or projections changed since this "
                         "forward pass; run net.forward again")
    old, new = tok[3], now[3]
    if len(old) != len(new) or any(a[0] != b[0] or a[1] is not b[1] for a, b in zip(old, new)):
        changed = sorted({a[0] for a, b in zip(old, new) if a[0] != b[0] or a[1] is not b[1]}
                         | {k for k, _ in old[len(new):]} | {k for k, _ in new[len(old):]})
        raise ValueError(f"parameter or structure arrays of the network were replaced since "
                         f"this forward pass ({', '.join(changed)}); run net.forward again")


class NetworkGradients(Gradients):
    """What :meth:`Network.backward` returns: a dict parameter name -> gradient
    (the keys of :meth:`Network.params`), with the backward's counters.

    Attributes
    ----------
    stats : dict population name -> ``bwd_macs`` (multiply-adds done by the
        population's backward and its incoming projections'),
        ``bwd_macs_event`` (what sparse BPTT needs), ``bwd_macs_dense`` (the
        dense equivalent), ``backward_sparsity`` (fraction of unit-steps
        outside the backward-active set; 0 where there is no such set),
        ``bwd_wall_s``.
    projection_stats : dict projection name -> ``bwd_macs``,
        ``bwd_macs_event``, ``bwd_macs_dense``, ``bwd_wall_s``.
    wall_s : wall-clock seconds of the whole backward pass.
    """

    def __init__(self, grads=(), stats=None, projection_stats=None, wall_s=0.0):
        super().__init__(grads, stats)
        self.projection_stats = {} if projection_stats is None else projection_stats
        self.wall_s = wall_s

    def summary(self):
        """Totals over the network: backward multiply-adds done, needed by
        sparse BPTT and their dense equivalents, wall-clock seconds."""
        return _totals(self.stats, _BWD_KEYS, self.wall_s)


def _totals(stats, keys, wall_s):
    """Sums of ``keys`` over the populations' counters (which include their
    incoming projections' multiply-adds: projections are not added again),
    and ``wall_s``."""
    out = {k: 0 for k in keys}
    for st in stats.values():
        for k in keys:
            out[k] += int(st.get(k, 0))
    out["wall_s"] = wall_s
    return out
