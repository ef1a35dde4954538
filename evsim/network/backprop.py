"""Back-propagation through time (BPTT).

DAG forward pass: populations are visited in reverse run order; each
population's backward (over its whole sequence) gives the gradient of its
drive, which each incoming projection turns into its weight gradient and the
gradient of its source's output.

Step-wise forward pass (a network with a cycle): steps are visited in
reverse, and within a step the populations in reverse run order. A
population's step backward gives the gradient of its drive at step t (and a
carry to step t - 1); a projection of delay d turns it into its weight
gradient and the gradient of its source's output at step t - d, which is
complete before that step is visited (d >= 1, or d = 0 from a population
earlier in the step's order).
"""

import time

import numpy as np

from evsim import _validate as check
from evsim import populations as pops
from evsim import threads
from evsim.network.result import ForwardPass, NetworkGradients, check_token
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
    if fp._backward_done:
        raise ValueError("backward() was already called on this forward pass")
    check_token(net, fp)
    B = len(fp.lengths)
    T = int(np.max(fp.lengths))
    n_units = sum(net.populations[n].size for n in fp._runs)
    with threads.owned(), threads.numba_threads(threads.plan(B, T * B * n_units ** 2)):
        if fp.schedule == "stepwise":
            return _backward_stepwise(net, fp, grads)
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
    t_start = time.perf_counter()
    order = [net.populations[n] for n in fp._runs]
    dys, extra = _check_grads(net, fp, grads)
    out = {k: np.zeros_like(v) for k, v in net.params().items()}
    stats, pstats = {}, {}
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
            pstats[proj.name] = pst
            bst["bwd_macs"] += pst["bwd_macs"]
            bst["bwd_macs_event"] += pst.get("bwd_macs_event", pst["bwd_macs"])
            bst["bwd_macs_dense"] += pst["bwd_macs_dense"]
            if dsrc is not None:
                dys[src.name] = dsrc if src.name not in dys else dys[src.name] + dsrc
        bst["bwd_wall_s"] = time.perf_counter() - t0
        stats[pop.name] = bst
        for name, mon in net.monitors:
            if name == pop.name and callable(getattr(mon, "record_backward", None)):
                mon.record_backward(bst)
    fp._backward_done = True
    return NetworkGradients(out, stats, pstats, wall_s=time.perf_counter() - t_start)


def _backward_stepwise(net, fp, grads):
    """BPTT through a step-wise forward pass (see the module docstring)."""
    t_start = time.perf_counter()
    order = [net.populations[n] for n in fp._order]
    dys, extra = _check_grads(net, fp, grads)
    if extra:
        raise NotImplementedError(f"gradients of {sorted(extra)} sub-outputs are not "
                                  f"supported through the step-wise schedule")
    out = {k: np.zeros_like(v) for k, v in net.params().items()}
    runs = fp._runs
    T = next(iter(runs.values())).y.shape[0]
    for pop in order:
        if pop.name not in dys:
            dys[pop.name] = np.zeros_like(runs[pop.name].y)
    trainable = [p for p in order if not p.is_input]
    projs = [(p, proj) for p in trainable for proj in incoming(net, p)]
    need = {proj.name: (not proj.source.is_input) or bool(proj.source.params)
            for _, proj in projs}
    if any(need[proj.name] and proj.source.is_input for _, proj in projs):
        raise NotImplementedError("trainable inputs (Embedding) are not supported through "
                                  "the step-wise schedule")
    for pop in trainable:  # refuse before any work
        if type(pop)._step_backward is pops.Population._step_backward:
            pop._step_backward(None, 0, None, None)
    masks = {p.name: p._backward_mask(runs[p.name]) for p in trainable}
    carry = {p.name: None for p in trainable}
    macs = {p.name: 0 for p in trainable}  # multiply-adds the projections' step products did
    for t in range(T - 1, -1, -1):
        for pop in reversed(trainable):
            dx, pgrads, carry[pop.name] = pop._step_backward(runs[pop.name], t,
                                                             dys[pop.name][t], carry[pop.name])
            for k, g in pgrads.items():
                out[f"{pop.name}.{k}"] += g
            for proj in incoming(net, pop):
                ts = t - proj.delay - int(proj.name in fp._delayed)
                if ts < 0:
                    continue
                src = proj.source
                dsrc = proj._step_grads(runs[src.name].y[ts], dx[:, proj.columns],
                                        out[f"{proj.name}.W"], need[proj.name])
                per = dx.shape[0] * proj.params["W"].size  # y^T dout, and dout W^T
                macs[pop.name] += per * (2 if need[proj.name] else 1)
                if dsrc is not None:
                    mask = masks.get(src.name)
                    dys[src.name][ts] += dsrc if mask is None else dsrc * mask[ts]
    wall = time.perf_counter() - t_start
    valid = np.arange(T)[:, None] < fp.lengths[None, :]
    stats = {}
    for pop in trainable:
        mask = masks.get(pop.name)
        n_valid = int(valid.sum()) * pop.size
        active = n_valid if mask is None else int((mask & valid[:, :, None]).sum())
        stats[pop.name] = dict(bwd_macs=macs[pop.name], bwd_macs_event=macs[pop.name],
                               bwd_macs_dense=macs[pop.name],
                               backward_sparsity=1.0 - active / max(n_valid, 1),
                               bwd_wall_s=wall / len(trainable))
    fp._backward_done = True
    return NetworkGradients(out, stats, {}, wall_s=wall)
