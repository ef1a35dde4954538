"""The functional layer: every kind of computation on plain arrays, one
backend switch for all.

Populations and projections (:mod:`evsim.populations`,
:mod:`evsim.projections`) call only these functions; each checks its
arguments at the boundary (shapes, dtypes and byte order, index ranges),
dispatches to the backend's adapter and returns the outputs with counters of
the work the kernels really did.

Kinds of computation:

* EGRU and GRU (:mod:`.egru`): :func:`egru_forward`, :func:`egru_forward_drive`,
  :func:`egru_backward`, :func:`gru_forward`, :func:`gru_forward_drive`,
  :func:`gru_backward`;
* LIF (:mod:`.lif`): :func:`lif_cell`, :func:`lif_forward`, :func:`lif_backward`,
  :func:`lif_backward_active`;
* projections (:mod:`.projection`): :func:`compact_events`, :func:`csr`,
  :func:`propagate`, :func:`propagate_backward`, :func:`propagate_step_backward`;
* traces (:mod:`.trace`): :func:`output_trace`, :func:`output_trace_backward`.

Backends (``backend=``; the same word for every kind, see
:mod:`evsim.functional._dispatch` for the table):

* ``"cpu"``: event-driven Numba kernels (threads chosen by :mod:`evsim.threads`).
* ``"dense"``: the EGRU's recurrent products dense (BLAS) every step, the
  baseline the event-driven path is measured against; other kinds as "cpu".
* ``"reference"``: the EGRU's plain NumPy oracle (:mod:`evsim.kernels.reference`,
  loaded only for this backend); other kinds as "cpu".
* ``"cuda"``: numba.cuda kernels (:mod:`evsim.kernels.cuda`) for every kind
  (LIF: forward only); host arrays in and out.

What a backend saved for a backward pass is a typed record of
:mod:`evsim.kernels.contract` (the same fields on every backend); a backward
pass returns its gradients with its own counters (:class:`Gradients`) and
leaves the forward's result unchanged.
"""

from evsim.functional._dispatch import BACKENDS
from evsim.functional.egru import (
    GRAD_KEYS,
    EGRUResult,
    Gradients,
    egru_backward,
    egru_forward,
    egru_forward_drive,
    gru_backward,
    gru_forward,
    gru_forward_drive,
)
from evsim.functional.lif import (
    LIFCell,
    LIFResult,
    LIFSaved,
    lif_backward,
    lif_backward_active,
    lif_cell,
    lif_forward,
)
from evsim.functional.projection import (
    CSR,
    compact_events,
    csr,
    propagate,
    propagate_backward,
    propagate_step_backward,
)
from evsim.functional.trace import output_trace, output_trace_backward

__all__ = [
    "BACKENDS", "GRAD_KEYS", "EGRUResult", "Gradients", "egru_forward", "egru_forward_drive",
    "egru_backward", "gru_forward", "gru_forward_drive", "gru_backward", "LIFCell",
    "LIFResult", "LIFSaved",
    "lif_cell", "lif_forward", "lif_backward", "lif_backward_active", "CSR", "csr",
    "compact_events", "propagate", "propagate_backward", "propagate_step_backward",
    "output_trace", "output_trace_backward",
]
