"""evsim: event-driven simulation and sparse training of activity-sparse recurrent networks.

Everything a user needs is importable from here:

* the functional API on plain arrays: :func:`egru_forward`, :func:`egru_backward`, ...
* the object model: :class:`Network` with populations (:class:`EGRU`, :class:`GRU`,
  :class:`LIF`, inputs, :class:`Readout`), projections and monitors;
* training (:mod:`evsim.training`), data sets (:mod:`evsim.data`), plots (:mod:`evsim.plot`).
"""

from evsim import connectivity, data, energy, models, training  # submodules as evsim.X
from evsim._version import __version__
from evsim.connectivity import (
    AllToAll,
    FixedInDegree,
    FixedOutDegree,
    FixedProbability,
    FromList,
    OneToOne,
)
from evsim.functional import (
    egru_backward,
    egru_forward,
    egru_forward_drive,
    gru_backward,
    gru_forward,
)
from evsim.monitors import (
    ActivityMonitor,
    EventMonitor,
    MonitorOverflowError,
    StateMonitor,
    load_events,
)
from evsim.network import ForwardPass, Network, RunResult
from evsim.populations import (
    EGRU,
    GRU,
    LIF,
    DenseInput,
    Embedding,
    PoissonInput,
    Population,
    Readout,
    SpikeInput,
)
from evsim.projections import Projection
from evsim.protocol import register_population
from evsim.receptors import Conductance, Current
from evsim.training import Trainer

__all__ = [
    "__version__",
    "egru_forward",
    "egru_forward_drive",
    "egru_backward",
    "gru_forward",
    "gru_backward",
    "Network",
    "ForwardPass",
    "RunResult",
    "Projection",
    "Current",
    "Conductance",
    "FixedProbability",
    "FixedInDegree",
    "FixedOutDegree",
    "OneToOne",
    "AllToAll",
    "FromList",
    "connectivity",
    "Population",
    "EGRU",
    "GRU",
    "LIF",
    "Readout",
    "DenseInput",
    "SpikeInput",
    "PoissonInput",
    "Embedding",
    "register_population",
    "EventMonitor",
    "StateMonitor",
    "ActivityMonitor",
    "MonitorOverflowError",
    "load_events",
    "Trainer",
    "data",
    "energy",
    "models",
    "training",
]
