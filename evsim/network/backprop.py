"""Back-propagation through time (BPTT) through a DAG forward pass.

Populations are visited in reverse run order; each population's backward
gives the gradient of its drive, which each incoming projection turns into
its weight gradient and the gradient of its source's output.
"""

import time

import numpy as np

from evsim import _validate as check
from evsim import threads
from evsim.network.result import ForwardPass
from evsim.network.schedule import incoming

__all__ = ["backward"]


def backward(net, fp, grads):
    """BPTT through ``fp``; see :meth:`Network.backward`."""
    if not isinstance(fp, ForwardPass):
        raise TypeError(f"backward() takes the ForwardPass of net.forward, got "
                        f"{type(fp).__name__}")
    if not fp.training:
        raise ValueError("this forward pass ran with training=False (net.run); use "
                         "net.forward(inputs, training=True) to back-propagate")
    if fp.schedule != "dag":
        raise NotImplementedError("back-propagation through the step-wise schedule "
                                  "(a cycle between populations) is not supported; "
                                  "train networks whose populations form a DAG")
    if fp._backward_done:
        raise ValueError("backward() was already called on this forward pass")
    B = len(fp.lengths)
    T = int(np.max(fp.lengths))
    n_units = sum(net.populations[n].size for n in fp._runs)
    with threads.owned(), threads.numba_threads(threads.plan(B, T * B * n_units ** 2)):
        return _backward(net, fp, grads)


def _check_grads(net, fp, grads):
    """(dys, extra): population name -> dL/dy (a copy), and population name ->
    {sub-output: gradient} for outputs such as ``name + ".trace"``."""
    dys, extra = {}, {}
    for key, g in grads.items():
        base, _, sub = key.partition(".")
        if base not in fp.outputs or (sub and key not in fp.outputs):
            raise KeyError(f"grads[{key!r}]: no such output; outputs are "
                           f"{sorted(fp.outputs)}")
        want = fp.outputs[key].shape
        g = np.asarray(g)
        if not np.issubdtype(g.dtype, np.floating):
            raise TypeError(f"grads[{key!r}] must be a float array, got {g.dtype}")
        g = check.float_array(f"grads[{key!r}]", np.ascontiguousarray(g, net.dtype), want)
        if sub:
            extra.setdefault(base, {})[sub] = g
        else:
            dys[base] = g.copy()
    return dys, extra


def _backward(net, fp, grads):
    order = [net.populations[n] for n in fp._runs]
    dys, extra = _check_grads(net, fp, grads)
    out = {k: np.zeros_like(v) for k, v in net.params().items()}
    lengths = fp.lengths
    for pop in reversed(order):
        t0 = time.perf_counter()
        run = fp._runs[pop.name]
        dy = dys.get(pop.name)
        if dy is None:
            dy = np.zeros_like(run.y)
        ddrive, pgrads, st = pop._backward(run, dy, extra.get(pop.name, {}))
        for k, g in pgrads.items():
            out[f"{pop.name}.{k}"] = g
        bst = dict(st)
        bst.setdefault("bwd_macs_event", bst["bwd_macs"])
        for proj in incoming(net, pop):
            src = proj.source
            need = (not src.is_input) or bool(src.params)
            mask = None if src.is_input else src._backward_mask(fp._runs[src.name])
            dW, dsrc, pst = proj._backward(fp._runs[src.name], ddrive[..., proj.columns],
                                           lengths, need, mask)
            out[f"{proj.name}.W"] = dW
            fp.projection_stats[proj.name].update(pst)
            bst["bwd_macs"] += pst["bwd_macs"]
            bst["bwd_macs_event"] += pst.get("bwd_macs_event", pst["bwd_macs"])
            bst["bwd_macs_dense"] += pst["bwd_macs_dense"]
            if dsrc is not None:
                dys[src.name] = dsrc if src.name not in dys else dys[src.name] + dsrc
        bst["bwd_wall_s"] = time.perf_counter() - t0
        fp.stats[pop.name].update(bst)
        for name, mon in net.monitors:
            if name == pop.name and callable(getattr(mon, "record_backward", None)):
                mon.record_backward(fp.stats[pop.name])
    fp._backward_done = True
    return out
