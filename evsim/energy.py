"""Operation counts and an energy *estimate* for a run, next to the dense GRU.

evsim's kernels count the multiply-adds they do (``fwd_macs``, ``bwd_macs``),
the multiply-adds the event-driven algorithm needs (``fwd_macs_event``,
``bwd_macs_event``: an event-driven projection or recurrent row adds the weight
row of each event, scaled by the event's value, so one event of a unit with
``K`` outgoing weights needs ``K`` multiply-adds) and the dense equivalent
(``fwd_macs_dense``, ``bwd_macs_dense``: the same network computed as a dense
GRU would be, every unit sending at every valid step). This module turns those
counters into a table of operations and a first-order energy figure::

    est = evsim.energy.estimate(trainer.evaluate(test, measure_backward=True))
    print(est["energy_j"]["fwd"], est["energy_j"]["saving_fwd"])
    print(est["assumptions"])

The figure is an **estimate** from per-operation energies, not a measurement:
it says how many joules the counted arithmetic and weight reads would cost on
the 45 nm process of Horowitz (2014); it leaves out everything the counters do
not see (see :data:`ASSUMPTIONS`). Use it to compare runs with one another and
with the dense GRU, not as the power draw of a CPU or GPU.
"""

import math

__all__ = ["estimate", "fields", "PJ", "ASSUMPTIONS"]

#: Energy per operation in picojoules, 45 nm, from M. Horowitz, "Computing's
#: energy problem (and what we can do about it)", ISSCC 2014, pp. 10-14.
PJ = {
    "fadd32": 0.9,  # 32-bit floating-point add
    "fmul32": 3.7,  # 32-bit floating-point multiply
    "sram32": 5.0,  # read of a 32-bit word from an 8 kB SRAM cache
    "dram32": 640.0,  # read of a 32-bit word from DRAM
}

ASSUMPTIONS = """\
Energy estimate (first order; compare runs, do not read it as a power measurement).
Per-operation energies: M. Horowitz, "Computing's energy problem (and what we can
do about it)", ISSCC 2014, 45 nm: 32-bit float add 0.9 pJ, 32-bit float multiply
3.7 pJ, 32-bit read from an 8 kB SRAM 5 pJ (DRAM 640 pJ per 32-bit word).
What is counted:
- one multiply-add (MAC) = one multiply + one add + one weight read from {memory}
  ({mac_pj:.1f} pJ); every operation is costed in 32-bit floating point;
- synaptic operations (synops) = the MACs that the event-driven algorithm needs
  (counters fwd_macs_event / bwd_macs_event): per event, the weight row of the
  unit scaled by the event value. EGRU events are graded, so each synop is a MAC.
  {binary}
- dense-input projections count every input value as an event (the input is not
  sparse), so their MACs are in the synops and in the dense figure alike;
- the dense GRU equivalent = the dense counters (fwd_macs_dense / bwd_macs_dense),
  every weight read and multiplied at every valid step, costed the same way;
- energy is computed from the MACs the event-driven algorithm needs, not from the
  MACs this CPU run did (the CPU backend may take a dense product where that is
  faster; both counts are in `ops`);
- backward = sparse BPTT's MACs (zero when the backward was not measured);
What is left out: elementwise gate and state arithmetic (O(H) per step, the same
for the EGRU and the GRU), nonlinearities, event bookkeeping (index reads and
writes), activations' memory traffic, control, leakage and idle power."""

_BINARY_TEXT = {
    False: "Binary spikes would need only an accumulate (add + read); all synops\n"
           "  are costed here as MACs (binary_events=False).",
    True: "binary_events=True: every event has value 1, so each synop is costed as\n"
          "  an accumulate (one add + one weight read, no multiply); the dense GRU\n"
          "  still does MACs.",
}

_KEYS = ("fwd_macs", "fwd_macs_event", "fwd_macs_dense",
         "bwd_macs", "bwd_macs_event", "bwd_macs_dense")


def _counters(stats):
    """Sum the counters of ``stats``: a flat dict of counters (``summary()``,
    ``Trainer.evaluate``, a sweep row), a dict of per-population dicts
    (``ForwardPass.stats``: populations already include their incoming
    projections), an object with ``summary()``, or a list of these (added)."""
    if isinstance(stats, (list, tuple)):
        out = dict.fromkeys(_KEYS, 0)
        for s in stats:
            for k, v in _counters(s).items():
                out[k] += v
        return out
    if hasattr(stats, "summary") and callable(stats.summary):
        stats = stats.summary()
    if not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict of counters (summary(), Trainer.evaluate, a "
                        f"sweep row), a dict of per-population dicts or a list of these; got "
                        f"{type(stats).__name__}")
    if any(k in stats for k in _KEYS):
        flat = [stats]
    else:
        flat = [v for v in stats.values() if isinstance(v, dict)]
        if not flat:
            raise ValueError(f"stats hold none of the counters {', '.join(_KEYS)}")
    out = dict.fromkeys(_KEYS, 0)
    for st in flat:
        for k in _KEYS:
            v = st.get(k, 0)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                v = 0
            out[k] += int(v)
        # a counter's "needed by the event path" falls back to "done" when absent
        for side in ("fwd", "bwd"):
            if f"{side}_macs_event" not in st:
                out[f"{side}_macs_event"] += int(st.get(f"{side}_macs", 0) or 0)
    return out


def _ratio(dense, sparse):
    if dense == 0:
        return float("nan")
    if sparse == 0:
        return float("inf")
    return dense / sparse


def estimate(stats, *, memory="sram", binary_events=False, pj=None):
    """Operations and estimated energy of a run, next to the dense GRU equivalent.

    Parameters
    ----------
    stats : dict, ForwardPass, NetworkGradients or list of these
        The counters: ``Trainer.evaluate(...)``'s dict (with
        ``measure_backward=True`` for the backward), a ``summary()`` of a
        forward or backward pass, ``ForwardPass.stats`` (per population), a
        sweep table row, or a list of these (summed: e.g. a forward and its
        backward).
    memory : {"sram", "dram"}
        Where each multiply-add reads its weight: an 8 kB SRAM cache (5 pJ, the
        default: small networks) or DRAM (640 pJ: weights that do not fit on chip).
    binary_events : bool
        Cost synaptic operations as accumulates (add + read, no multiply): for
        networks whose events are binary spikes. False for EGRU (graded events).
    pj : dict, optional
        Override per-operation energies (keys of :data:`PJ`, picojoules).

    Returns
    -------
    dict
        ``ops``: ``fwd_macs`` / ``bwd_macs`` (done by this run),
        ``fwd_synops`` / ``bwd_synops`` (needed by the event-driven algorithm:
        ``*_macs_event``), ``fwd_macs_dense`` / ``bwd_macs_dense`` (the dense
        GRU equivalent), and the totals ``synops``, ``macs_dense``.
        ``energy_j``: ``fwd``, ``bwd``, ``total`` (event-driven, joules),
        ``dense_fwd``, ``dense_bwd``, ``dense_total`` (dense GRU equivalent),
        ``saving_fwd``, ``saving_bwd``, ``saving_total`` (dense / event-driven:
        1.0 for a dense run, NaN where nothing was counted).
        ``per_op_pj``: the energies used (``mac``, ``synop``, and the table).
        ``assumptions``: a text to print with the figures.

    Notes
    -----
    An estimate, not a measurement: see :data:`ASSUMPTIONS` for what is and is
    not counted.
    """
    if memory not in ("sram", "dram"):
        raise ValueError(f"memory must be 'sram' or 'dram', got {memory!r}")
    table = dict(PJ)
    if pj is not None:
        unknown = set(pj) - set(PJ)
        if unknown:
            raise ValueError(f"unknown operation(s) {sorted(unknown)}; known: {sorted(PJ)}")
        table.update({k: float(v) for k, v in pj.items()})
    c = _counters(stats)
    read = table["sram32" if memory == "sram" else "dram32"]
    mac = table["fmul32"] + table["fadd32"] + read
    synop = (table["fadd32"] + read) if binary_events else mac
    ops = dict(fwd_macs=c["fwd_macs"], fwd_synops=c["fwd_macs_event"],
               fwd_macs_dense=c["fwd_macs_dense"], bwd_macs=c["bwd_macs"],
               bwd_synops=c["bwd_macs_event"], bwd_macs_dense=c["bwd_macs_dense"])
    ops["synops"] = ops["fwd_synops"] + ops["bwd_synops"]
    ops["macs_dense"] = ops["fwd_macs_dense"] + ops["bwd_macs_dense"]
    e = {
        "fwd": ops["fwd_synops"] * synop * 1e-12,
        # the backward multiplies by gradients (graded), so always MACs
        "bwd": ops["bwd_synops"] * mac * 1e-12,
        "dense_fwd": ops["fwd_macs_dense"] * mac * 1e-12,
        "dense_bwd": ops["bwd_macs_dense"] * mac * 1e-12,
    }
    e["total"] = e["fwd"] + e["bwd"]
    e["dense_total"] = e["dense_fwd"] + e["dense_bwd"]
    for side in ("fwd", "bwd", "total"):
        e[f"saving_{side}"] = _ratio(e[f"dense_{side}"], e[side])
    text = ASSUMPTIONS.format(memory="SRAM (8 kB)" if memory == "sram" else "DRAM",
                              mac_pj=mac, binary=_BINARY_TEXT[bool(binary_events)])
    return {"ops": ops, "energy_j": e, "per_op_pj": dict(table, mac=mac, synop=synop),
            "assumptions": text}


def fields(stats, **kw):
    """The estimate as flat fields for a metrics dict or a table row:
    ``synops_fwd``, ``synops_bwd``, ``energy_fwd_j``, ``energy_bwd_j``,
    ``energy_j`` (total), ``energy_dense_fwd_j``, ``energy_dense_bwd_j``,
    ``energy_dense_j``, ``energy_saving`` (dense / event-driven, total).
    Keywords go to :func:`estimate`."""
    est = estimate(stats, **kw)
    o, e = est["ops"], est["energy_j"]
    return {"synops_fwd": o["fwd_synops"], "synops_bwd": o["bwd_synops"],
            "energy_fwd_j": e["fwd"], "energy_bwd_j": e["bwd"], "energy_j": e["total"],
            "energy_dense_fwd_j": e["dense_fwd"], "energy_dense_bwd_j": e["dense_bwd"],
            "energy_dense_j": e["dense_total"], "energy_saving": e["saving_total"]}
