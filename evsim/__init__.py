"""evsim: event-driven simulation and sparse training of activity-sparse recurrent networks."""

from evsim._version import __version__
from evsim.functional import (
    egru_backward,
    egru_forward,
    egru_forward_drive,
    gru_backward,
    gru_forward,
)

__all__ = ["__version__", "egru_forward", "egru_forward_drive", "egru_backward", "gru_forward", "gru_backward"]
