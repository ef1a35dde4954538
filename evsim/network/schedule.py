"""The projection graph: incoming projections, run order and cycle breaking.

:func:`plan` gives the topological order when the populations form a DAG;
otherwise, to break a cycle, the earliest added population that is still
waiting goes first and its projections from populations not yet placed are
*delayed* (they carry the source's output of the previous step).
"""

__all__ = ["incoming", "plan", "is_cyclic"]


def incoming(net, pop):
    """Projections of ``net`` whose target is ``pop``, in the order added."""
    return [p for p in net.projections.values() if p.target is pop]


def plan(net):
    """(order, delayed projection names). Topological order when the graph
    is acyclic (no delays); otherwise cycles are broken as documented."""
    placed, order, delayed = set(), [], set()
    waiting = list(net.populations.values())
    while waiting:
        for pop in waiting:
            if all(p.source.name in placed for p in incoming(net, pop)):
                break
        else:
            pop = waiting[0]
            for p in incoming(net, pop):
                if p.source.name not in placed:
                    delayed.add(p.name)
        waiting.remove(pop)
        placed.add(pop.name)
        order.append(pop)
    return order, delayed


def is_cyclic(net):
    """True when projections form a cycle between populations."""
    return bool(plan(net)[1])
