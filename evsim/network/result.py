"""The result of a forward run: :class:`ForwardPass` (alias ``RunResult``)."""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ForwardPass", "RunResult"]


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

    def summary(self):
        """Totals over the network: events, forward (and backward) multiply-adds
        done and their dense equivalents, wall-clock seconds."""
        keys = ("events", "fwd_macs", "fwd_macs_event", "fwd_macs_dense", "bwd_macs",
                "bwd_macs_event", "bwd_macs_dense")
        out = {k: 0 for k in keys}
        for table in (self.stats, self.projection_stats):
            for st in table.values():
                for k in keys:
                    if k == "events" and table is self.projection_stats:
                        continue
                    out[k] += int(st.get(k, 0))
        out["wall_s"] = self.wall_s
        return out


RunResult = ForwardPass
