"""Output traces (leaky integration over time) and their backward:
``tr_t = alpha tr_{t-1} + (1 - alpha) y_t`` with ``tr_{-1} = 0``, for (T, B, N)
arrays. An EGRU's output trace and a leaky :class:`~evsim.Readout` use them.
"""

import numpy as np

from evsim import threads
from evsim.functional import _checks as check
from evsim.functional._dispatch import adapter, check_backend

__all__ = ["output_trace", "output_trace_backward"]


def output_trace(y, alpha, *, backend="cpu"):
    """The trace (T, B, N) of ``y`` (T, B, N) with factor ``alpha`` in [0, 1)."""
    check_backend(backend)
    y = check.float_array("y", y, (None, None, None), finite=False)
    alpha = check.probability("alpha", alpha)
    out = np.empty_like(y)
    with threads.owned():
        adapter(backend, "trace").output_trace(y, alpha, out)
    return out


def output_trace_backward(dtrace, alpha, *, backend="cpu"):
    """dL/dy (T, B, N) given dL/dtrace (T, B, N) of :func:`output_trace`."""
    check_backend(backend)
    dtrace = check.float_array("dtrace", dtrace, (None, None, None))
    alpha = check.probability("alpha", alpha)
    dy = np.zeros_like(dtrace)
    with threads.owned():
        adapter(backend, "trace").output_trace_backward(dtrace, alpha, dy)
    return dy
