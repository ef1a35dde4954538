"""The network: factory and owner of populations, projections and monitors.

There is no hidden global network: everything is created through, and owned
by, a :class:`Network`::

    net = Network(seed=0)
    net.add(DenseInput("x", size=8))
    net.add(EGRU("egru", size=128))
    net.add(Readout("out", size=10))
    net.connect("x", "egru")
    net.connect("egru", "out")
    res = net.run({"x": x})          # x: (T, B, 8), time-major

Schedules
---------
When the populations form a directed acyclic graph (each EGRU/GRU owns its
recurrent weights; that is not a cycle), each population runs its whole
sequence at once in compiled kernels, in topological order ("dag"). When
projections form a cycle between different populations the network falls
back to a step-wise schedule ("stepwise"): a Python loop over steps, each
population one step at a time. The order is the topological order where it
exists; to break a cycle, the earliest added population that is still
waiting goes first, and its projections from populations not yet computed in
that step carry the source's output of the previous step (a delay of one
step). On a DAG both schedules compute the same thing (tested). Training
(``backward``) is supported for the DAG schedule only.

Random streams
--------------
One ``seed``: the initial weights of each population and projection and the
run-time randomness of each population (zoneout, DropConnect, Poisson spikes)
come from ``np.random.SeedSequence(seed, spawn_key=(crc32(name), stream))``,
so they depend on the seed and the object's name only, not on the order in
which objects are added.

Modules
-------
``core``       the :class:`Network` facade: building (add, connect, attach,
               monitor), parameters; every other method delegates
``result``     :class:`ForwardPass` (alias ``RunResult``)
``streams``    seed-derived random streams, their state
``schedule``   the projection graph: incoming projections, order, cycle breaking
``inputs``     input checks, (T, B) inference, initial states
``running``    one forward run: executor choice, monitors, threads, statistics
``executors``  the DAG and step-wise executors
``backprop``   back-propagation through time
``files``      structure, save and load
"""

from evsim.network.core import Network
from evsim.network.result import ForwardPass, RunResult

__all__ = ["Network", "ForwardPass", "RunResult"]
