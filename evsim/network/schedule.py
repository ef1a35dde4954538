"""The projection graph: incoming projections, run order and cycle breaking.

Two questions, two graphs:

* Which populations must run before which *within a step*? Only projections
  with a delay of 0 steps tie a step's source to the same step's target.
  :func:`plan` orders the populations along those (topologically); to break a
  cycle of such projections, the earliest added population that is still
  waiting goes first and its projections from populations not yet placed are
  *delayed* (they carry the source's output of the previous step: one extra
  step of delay).
* Can each population run its whole sequence at once? Only when the graph of
  all projections (any delay, and projections of a population onto itself)
  has no cycle: :func:`is_cyclic`, :func:`plan` with ``all_delays=True``.
"""

__all__ = ["incoming", "outgoing", "plan", "is_cyclic"]


def incoming(net, pop):
    """Projections of ``net`` whose target is ``pop``, in the order added."""
    return [p for p in net.projections.values() if p.target is pop]


def outgoing(net, pop):
    """Projections of ``net`` whose source is ``pop``, in the order added."""
    return [p for p in net.projections.values() if p.source is pop]


def _same_step(proj):
    return proj.min_delay == 0 and proj.source is not proj.target


def plan(net, all_delays=False):
    """(order, delayed projection names). The order follows the projections
    of delay 0 (all projections with ``all_delays``); cycles are broken as
    documented above. Projections of a population onto itself never constrain
    the order."""
    placed, order, delayed = set(), [], set()
    waiting = list(net.populations.values())

    def deps(pop):
        return [p for p in incoming(net, pop)
                if p.source is not p.target and (all_delays or _same_step(p))]

    while waiting:
        for pop in waiting:
            if all(p.source.name in placed for p in deps(pop)):
                break
        else:
            pop = waiting[0]
            for p in deps(pop):
                if p.source.name not in placed:
                    delayed.add(p.name)
        waiting.remove(pop)
        placed.add(pop.name)
        order.append(pop)
    return order, delayed


def is_cyclic(net):
    """True when projections (of any delay) form a cycle, including a
    population's projection onto itself."""
    if any(p.source is p.target for p in net.projections.values()):
        return True
    return bool(plan(net, all_delays=True)[1])
