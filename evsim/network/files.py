"""Network files: the JSON structure, and save / load of one HDF5 file.

The file holds the structure (classes and constructor arguments) as an
attribute, and the groups ``params``, ``sparse`` (CSR index arrays),
``rng`` (run-time streams) and ``state`` (final state of the last run).
"""

import json

import numpy as np
import scipy.sparse as sp

from evsim import functional as F
from evsim import io as evio
from evsim import populations as pops  # noqa: F401 - registers the built-in classes
from evsim import protocol
from evsim.connectivity import rule_from_config

__all__ = ["structure", "save", "load", "POPULATION_CLASSES"]

#: Name -> class of the population classes a file may hold (live: see
#: :func:`evsim.register_population`).
POPULATION_CLASSES = protocol._REGISTRY


def structure(net):
    """JSON-able description of ``net`` (classes and constructor arguments)."""
    return {
        "dtype": net.dtype.name, "backend": net.backend, "seed": net.seed,
        "dt": net.dt,
        "populations": [{"class": protocol.population_class_name(p), "kwargs": p.config()}
                        for p in net.populations.values()],
        "projections": [p.config() for p in net.projections.values()],
    }


def save(net, path):
    """Write structure, parameters, last state and random streams of ``net`` to
    one HDF5 file (atomic)."""
    with evio.atomic_h5(path, "network", seed=net.seed, dt=net.dt,
                        structure=json.dumps(structure(net))) as f:
        evio.save_arrays(f.create_group("params"), net.params())
        sparse = {}
        for proj in net.projections.values():
            if proj.kind == "sparse":
                sparse[f"{proj.name}.indptr"] = proj.indptr
                sparse[f"{proj.name}.indices"] = proj.indices
            if not np.isscalar(proj.delay):
                sparse[f"{proj.name}.delays"] = proj.delay
        evio.save_arrays(f.create_group("sparse"), sparse)
        evio.save_arrays(f.create_group("rng"), net.rng_state())
        evio.save_arrays(f.create_group("state"), {
            f"{pop}.{k}": v for pop, st in net.state.items() for k, v in st.items()})
        f.attrs["params_sha256"] = evio.arrays_checksum(_checked_arrays(f, path))


def _checked_arrays(f, path):
    """The parameters and sparse structure as read back, under one name each."""
    return {f"{g}/{k}": v for g in ("params", "sparse")
            for k, v in evio.load_arrays(f[g], path).items()}


def load(cls, path):
    """Rebuild a network of class ``cls`` saved with :func:`save`."""
    with evio.open_checked(path, "network") as f:
        try:
            struct = evio.attr_value(path, f, "structure", "json")
            if not isinstance(struct, dict):
                raise evio.FileFormatError(f"{path}: attribute 'structure' must be a JSON "
                                           f"object, got {type(struct).__name__}")
            evio.verify_checksum(path, f, _checked_arrays(f, path),
                                 what="parameters and sparse structure")
            params = evio.load_arrays(f["params"], path)
            sparse = evio.load_arrays(f["sparse"], path)
            rng = evio.load_arrays(f["rng"], path)
            state = evio.load_arrays(f["state"], path)
        except evio.FileFormatError:
            raise
        except (KeyError, ValueError, TypeError, OSError) as err:
            raise evio.FileFormatError(f"{path}: corrupt evsim network file ({err!r}); "
                                       f"save the network again") from None
    for spec in struct.get("populations", []) if isinstance(struct, dict) else []:
        name = spec.get("class") if isinstance(spec, dict) else None
        if isinstance(name, str) and name not in protocol._REGISTRY:
            raise ValueError(f"{path}: the network holds a population of class {name!r}, "
                             f"unknown here: register it with "
                             f"evsim.register_population({name}) before loading")
    try:
        net = _rebuild(cls, struct, params, sparse)
        net.set_rng_state(rng)
        for key, value in state.items():
            pop, _, k = key.rpartition(".")
            net.state.setdefault(pop, {})[k] = np.asarray(value)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError,
            MemoryError, OverflowError) as err:
        raise evio.FileFormatError(f"{path}: corrupt or incompatible evsim network file "
                                   f"({err}); save the network again") from None
    return net


def _checked_csr(name, values, sparse, shape):
    """The CSR matrix of a saved sparse projection, its structure checked."""
    try:  # the functional layer's one CSR check (index ranges, monotone indptr)
        rec = F.csr(sparse[f"{name}.indptr"], sparse[f"{name}.indices"], shape)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the sparse structure of {name!r}: {err}") from None
    if rec.nnz != values.shape[0]:
        raise ValueError(f"the sparse structure of {name!r} has {rec.nnz} entries but "
                         f"{values.shape[0]} weights")
    return sp.csr_matrix((values, rec.indices, rec.indptr), shape=shape)


def _rebuild(cls, struct, params, sparse):
    """The network described by ``struct``, with the parameters ``params``."""
    net = cls(seed=struct["seed"], dtype=struct["dtype"], backend=struct["backend"],
              dt=struct["dt"])
    for spec in struct["populations"]:
        net.add(protocol.population_class(spec["class"])(**spec["kwargs"]))
    for spec in struct["projections"]:
        name = spec.get("name") or f"{spec['source']}->{spec['target']}"
        W = params[f"{name}.W"]
        delay = spec.get("delay", None)
        if delay == "per-synapse":
            delay = sparse[f"{name}.delays"]
        rule = spec.get("rule")
        kind = spec["kind"]
        if kind == "sparse":
            src = net.populations[spec["source"]]
            tgt = net.populations[spec["target"]]
            width = tgt.size if hasattr(tgt, "receptor_columns") else tgt.in_size
            W = _checked_csr(name, W, sparse, (src.size, width))
        # the saved structure is used as is (a rule is not drawn again)
        proj = net.connect(spec["source"], spec["target"], kind=kind, p=spec["p"],
                           init=spec["init"], scale=spec["scale"], weight=W, seed=spec["seed"],
                           receptor=spec.get("receptor"), delay=delay, name=name)
        if rule is not None:
            proj.rule, proj.p = rule_from_config(rule), None
    live = net.params()
    if set(live) != set(params):
        raise ValueError(f"parameters {sorted(set(live) ^ set(params))} do not match "
                         f"the structure")
    for k, v in live.items():
        if v.shape != params[k].shape:
            raise ValueError(f"parameter {k!r} has shape {params[k].shape}, the "
                             f"structure implies {v.shape}")
        v[...] = params[k]
    return net
