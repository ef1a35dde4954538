"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint is one HDF5 file (kind ``"checkpoint"``, see :mod:`evsim.io`)
written atomically: it appears under its name only once complete, so a run
killed at any moment leaves the previous checkpoint intact and readable.

Layout::

    /params/<name>          network parameters (live arrays of net.params())
    /best_params/<name>     parameters of the best epoch so far (early stopping), optional
    /optimizer/<key>        Optimizer.state_dict()
    /net_rng/<key>          net.rng_state() (zoneout, dropconnect, Poisson streams)
    attrs: epoch, optimizer (class name), history (JSON list of per-epoch metrics),
           trainer_rng (JSON of the shuffling Generator's bit_generator.state),
           trainer_state (JSON dict), model_config (JSON of net.structure())

:func:`restore_checkpoint` checks that the checkpoint matches the network
(same parameter names, shapes and dtypes) and the optimiser (same class)
before touching anything, and raises a :class:`CheckpointMismatchError` that
names the first difference otherwise.
"""

import json
from dataclasses import dataclass, field

import numpy as np

from evsim.io import FileFormatError, atomic_h5, load_arrays, open_checked, save_arrays

__all__ = [
    "Checkpoint",
    "CheckpointMismatchError",
    "generator_from_state",
    "load_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
]

KIND = "checkpoint"


class CheckpointMismatchError(ValueError):
    """The checkpoint was written for another model or optimiser."""


@dataclass
class Checkpoint:
    """Contents of a checkpoint file, as read by :func:`load_checkpoint`.

    Attributes
    ----------
    path : str
    epoch : int
        Number of completed epochs.
    params : dict str -> ndarray
    optimizer_name : str
        Class name of the optimiser that wrote ``optimizer``.
    optimizer : dict
        ``Optimizer.state_dict()``.
    net_rng : dict
        ``net.rng_state()``.
    trainer_rng : dict or None
        ``Generator.bit_generator.state`` of the trainer's shuffling stream.
    history : list of dict
        Per-epoch metrics.
    trainer_state : dict
        Early-stopping bookkeeping and other trainer scalars.
    best_params : dict or None
    model_config : object or None
        The network's ``config()`` at save time (JSON), when it has one.
    seed : int
    """

    path: str
    epoch: int
    params: dict
    optimizer_name: str
    optimizer: dict
    net_rng: dict
    trainer_rng: dict | None = None
    history: list = field(default_factory=list)
    trainer_state: dict = field(default_factory=dict)
    best_params: dict | None = None
    model_config: object = None
    seed: int = -1


def _net_seed(net):
    seed = getattr(net, "seed", None)
    return None if seed is None else int(seed)


def _model_config(net):
    cfg = getattr(net, "structure", None) or getattr(net, "config", None)
    if not callable(cfg):
        return None
    try:
        return json.dumps(cfg(), sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None


def save_checkpoint(path, net, optimizer, epoch, history=(), trainer_rng=None,
                    trainer_state=None, best_params=None):
    """Write a checkpoint atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or PathLike
        Target file; replaced only when the new file is complete.
    net : evsim.Network
        Its ``params()`` and ``rng_state()`` are saved.
    optimizer : evsim.training.optim.Optimizer
        Its ``state_dict()`` is saved.
    epoch : int
        Completed epochs.
    history : sequence of dict
        Per-epoch metrics (JSON-serialisable scalars).
    trainer_rng : numpy.random.Generator, optional
        The trainer's shuffling stream; its exact state is saved.
    trainer_state : dict, optional
        JSON-serialisable trainer scalars (early stopping).
    best_params : dict str -> ndarray, optional
        Parameters of the best epoch so far.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    attrs = dict(
        epoch=int(epoch),
        optimizer=type(optimizer).__name__,
        history=json.dumps(list(history)),
        trainer_state=json.dumps(trainer_state or {}),
    )
    if trainer_rng is not None:
        attrs["trainer_rng"] = json.dumps(trainer_rng.bit_generator.state)
    cfg = _model_config(net)
    if cfg is not None:
        attrs["model_config"] = cfg
    with atomic_h5(path, KIND, seed=_net_seed(net), **attrs) as f:
        save_arrays(f.create_group("params"), net.params())
        save_arrays(f.create_group("optimizer"), optimizer.state_dict())
        save_arrays(f.create_group("net_rng"), net.rng_state())
        if best_params is not None:
            save_arrays(f.create_group("best_params"), best_params)


def _attr_str(f, key, default=None):
    value = f.attrs.get(key, default)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def load_checkpoint(path):
    """Read a checkpoint file.

    Raises
    ------
    FileNotFoundError
        No such file.
    evsim.io.FileFormatError
        Not an evsim checkpoint (foreign, truncated, newer format, missing parts).
    """
    path = str(path)
    with open_checked(path, KIND) as f:
        try:
            missing = [g for g in ("params", "optimizer", "net_rng") if g not in f]
            if missing or "epoch" not in f.attrs:
                raise FileFormatError(f"{path} is an incomplete evsim checkpoint: missing "
                                      f"{missing or ['epoch attribute']}")
            trainer_rng = _attr_str(f, "trainer_rng")
            cfg = _attr_str(f, "model_config")
            return Checkpoint(
                path=path,
                epoch=int(f.attrs["epoch"]),
                params=load_arrays(f["params"]),
                optimizer_name=_attr_str(f, "optimizer", ""),
                optimizer=load_arrays(f["optimizer"]),
                net_rng=load_arrays(f["net_rng"]),
                trainer_rng=None if trainer_rng is None else json.loads(trainer_rng),
                history=json.loads(_attr_str(f, "history", "[]")),
                trainer_state=json.loads(_attr_str(f, "trainer_state", "{}")),
                best_params=load_arrays(f["best_params"]) if "best_params" in f else None,
                model_config=None if cfg is None else json.loads(cfg),
                seed=int(f.attrs.get("seed", -1)),
            )
        except (KeyError, OSError, json.JSONDecodeError) as err:
            raise FileFormatError(f"{path}: damaged evsim checkpoint ({err})") from None


def check_params_match(saved, params, path="checkpoint", what="parameters"):
    """Raise CheckpointMismatchError unless ``saved`` has the names, shapes and
    dtypes of ``params``."""
    missing = sorted(set(params) - set(saved))
    extra = sorted(set(saved) - set(params))
    if missing or extra:
        raise CheckpointMismatchError(
            f"{path} was written for another model: {what} "
            + (f"missing from the file: {missing}; " if missing else "")
            + (f"in the file but not in this network: {extra}; " if extra else "")
            + "rebuild the network with the options used when the checkpoint was written "
              "(or start without --resume)")
    for name, p in params.items():
        s = np.asarray(saved[name])
        if s.shape != p.shape:
            raise CheckpointMismatchError(
                f"{path} was written for another model shape: {what[:-1]} {name!r} has "
                f"shape {s.shape} in the file and {p.shape} in this network; rebuild the "
                f"network with the sizes used when the checkpoint was written")
        if s.dtype != p.dtype:
            raise CheckpointMismatchError(
                f"{path}: {what[:-1]} {name!r} is {s.dtype} in the file and {p.dtype} in "
                f"this network; build the network with dtype={s.dtype}")


def restore_checkpoint(ckpt, net, optimizer):
    """Load a checkpoint's parameters, optimiser state and RNG state into ``net``
    and ``optimizer`` (in place). Everything is checked before anything changes.

    Parameters
    ----------
    ckpt : Checkpoint or str or PathLike
        A loaded checkpoint, or a path to read.
    net : evsim.Network
    optimizer : Optimizer

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointMismatchError
        Different parameter names, shapes or dtypes, or another optimiser class.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    params = net.params()
    check_params_match(ckpt.params, params, ckpt.path)
    if ckpt.best_params is not None:
        check_params_match(ckpt.best_params, params, ckpt.path, "best parameters")
    if ckpt.optimizer_name and ckpt.optimizer_name != type(optimizer).__name__:
        raise CheckpointMismatchError(
            f"{ckpt.path} holds the state of a {ckpt.optimizer_name} optimiser, but "
            f"training uses {type(optimizer).__name__}; use the same optimiser to resume")
    # a dry run of the optimiser state on a scratch copy raises before any change
    scratch = type(optimizer).__new__(type(optimizer))
    scratch.__dict__.update(optimizer.__dict__)
    scratch.load_state_dict(ckpt.optimizer)
    for name, value in scratch.state.items():
        if name not in params:
            raise CheckpointMismatchError(
                f"{ckpt.path}: optimiser state for unknown parameter {name!r}")
        for slot, buf in value.items():
            if isinstance(buf, np.ndarray) and buf.shape != params[name].shape:
                raise CheckpointMismatchError(
                    f"{ckpt.path}: optimiser state {slot!r} of {name!r} has shape "
                    f"{buf.shape}, the parameter has {params[name].shape}")
    for name, p in params.items():
        p[...] = ckpt.params[name]
    optimizer.load_state_dict(ckpt.optimizer)
    net.set_rng_state(ckpt.net_rng)
    return ckpt


def generator_from_state(state):
    """A numpy Generator whose bit generator is set to ``state`` (a dict from
    ``Generator.bit_generator.state``, e.g. read back from JSON)."""
    name = state["bit_generator"]
    bitgen_cls = getattr(np.random, name, None)
    if bitgen_cls is None:
        raise FileFormatError(f"unknown bit generator {name!r} in checkpoint")
    bg = bitgen_cls()
    bg.state = state
    return np.random.Generator(bg)
