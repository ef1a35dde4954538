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
names the first difference otherwise; a checkpoint written for other
settings (the network's structure: sizes, seed, surrogate, zoneout, ...; and
the ``settings`` dict given to :func:`save_checkpoint`) is refused with every
difference listed.

Integrity: the attribute ``checksum`` holds the sha256 of every array of the
file (:func:`evsim.io.arrays_checksum`), checked on load; every field is
checked for type and structure, so a damaged or hand-edited file raises
:class:`evsim.io.FileFormatError` naming the file and the field. A checkpoint
never holds NaN or Inf: :func:`save_checkpoint` refuses non-finite parameters or
optimiser state (:class:`DivergedError`, the training diverged) and loading
refuses them too.
"""

import json
import os
from dataclasses import dataclass, field

import numpy as np

from evsim.io import (
    FileFormatError,
    arrays_checksum,
    atomic_h5,
    attr_value,
    load_arrays,
    open_checked,
    save_arrays,
)

__all__ = [
    "Checkpoint",
    "CheckpointMismatchError",
    "DivergedError",
    "generator_from_state",
    "load_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
]

KIND = "checkpoint"


class CheckpointMismatchError(ValueError):
    """The checkpoint was written for another model, optimiser or settings."""


class DivergedError(ValueError):
    """Parameters or optimiser state hold NaN or Inf: training diverged."""


GROUPS = ("params", "optimizer", "net_rng", "best_params")


def _non_finite(arrays):
    """Names of the float entries of ``arrays`` holding NaN or Inf."""
    bad = []
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            bad.append(name)
    return bad


def check_finite(path, groups, action):
    """Raise DivergedError naming the non-finite entries of ``groups`` (dict of dicts)."""
    bad = [f"{g}/{n}" for g, arrays in groups.items() if arrays for n in _non_finite(arrays)]
    if bad:
        raise DivergedError(
            f"{action} {path}: {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''} "
            f"hold NaN or Inf: the training diverged. Lower the learning rate, clip the "
            f"gradient norm, or resume from an earlier checkpoint")


def _flat(groups):
    return {f"{g}/{k}": v for g, arrays in groups.items() if arrays is not None
            for k, v in arrays.items()}


def _diff(old, new, where=""):
    """Lines ``where: old -> new`` for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{where}.{k}" if where else str(k)
            if k not in old:
                out.append(f"{sub}: not in the checkpoint, {new[k]!r} now")
            elif k not in new:
                out.append(f"{sub}: {old[k]!r} in the checkpoint, not set now")
            else:
                out += _diff(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new, strict=True))
                for line in _diff(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where or 'value'}: {old!r} in the checkpoint, {new!r} now"]


def check_settings(ckpt, model_config=None, settings=None):
    """Raise CheckpointMismatchError listing every difference between the
    settings stored in ``ckpt`` and those given (None: not compared).

    ``model_config``: the network's structure (the backend may differ: a run
    may continue on another one); ``settings``: a JSON dict of run settings.
    """
    lines = []
    if model_config is not None and ckpt.model_config is not None:
        old, new = dict(ckpt.model_config), dict(model_config)
        if isinstance(ckpt.model_config, dict):
            old.pop("backend", None)
            new.pop("backend", None)
        lines += [f"model {line}" for line in _diff(old, new)]
    if settings is not None and ckpt.settings is not None:
        lines += _diff(ckpt.settings, json.loads(json.dumps(settings, default=str)))
    if lines:
        raise CheckpointMismatchError(
            f"{ckpt.path} was written by a run with other settings; refusing to resume "
            f"with:\n  " + "\n  ".join(lines) + "\nUse the settings of that run, or "
            "another checkpoint path to start afresh")


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
    accounting : dict or None
        The last ``Trainer.evaluate`` result before saving (metrics, operation
        counters and the energy estimate of :mod:`evsim.energy`), if any.
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
    settings: dict | None = None
    accounting: dict | None = None


def _net_seed(net):
    seed = getattr(net, "seed", None)
    return None if seed is None else int(seed)


def _model_config(net):
    cfg = getattr(net, "structure", None) or getattr(net, "config", None)
    if not callable(cfg):
        return None
    try:
        return json.dumps(cfg(), sort_keys=True, default=_json_default)
    except (TypeError, ValueError):
        return None


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def save_checkpoint(path, net, optimizer, epoch, history=(), trainer_rng=None,
                    trainer_state=None, best_params=None, settings=None, accounting=None):
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
    settings : dict, optional
        JSON-serialisable run settings (task, sizes, seed...), compared on resume
        by :func:`check_settings`.
    accounting : dict, optional
        JSON-serialisable scalars: the last evaluation's metrics, operation
        counters and energy estimate (kept for reading, never compared).

    Raises
    ------
    DivergedError
        Parameters, best parameters or optimiser state hold NaN or Inf (nothing
        is written: the previous checkpoint stays).
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
    if settings is not None:
        attrs["settings"] = json.dumps(settings, sort_keys=True, default=_json_default)
    if accounting is not None:
        attrs["accounting"] = json.dumps(accounting, sort_keys=True, default=_json_default)
    groups = dict(params=net.params(), optimizer=optimizer.state_dict(),
                  net_rng=net.rng_state(), best_params=best_params)
    check_finite(path, groups, "refusing to write the checkpoint")
    with atomic_h5(path, KIND, seed=_net_seed(net), **attrs) as f:
        for g, arrays in groups.items():
            if arrays is not None:
                save_arrays(f.create_group(g), arrays)
        # the checksum of what a reader gets back (values as read from the file)
        f.attrs["checksum"] = arrays_checksum(_flat(
            {g: load_arrays(f[g]) for g in GROUPS if g in f}))


def _attr_str(f, key, default=None):
    value = f.attrs.get(key, default)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def load_checkpoint(path):
    """Read a checkpoint file, checking every field and the checksum.

    Raises
    ------
    FileNotFoundError
        No such file.
    evsim.io.FileFormatError
        Not an evsim checkpoint (foreign, truncated, newer format), a missing or
        malformed field (named), a checksum mismatch.
    DivergedError
        The file holds NaN or Inf (written by an older evsim).
    """
    path = os.fspath(path)
    with open_checked(path, KIND) as f:
        try:
            missing = [g for g in ("params", "optimizer", "net_rng") if g not in f]
            if missing:
                raise FileFormatError(f"{path} is an incomplete evsim checkpoint: missing "
                                      f"the group(s) {missing}")
            groups = {g: load_arrays(f[g], path) for g in GROUPS if g in f}
            stored = attr_value(path, f, "checksum", str, default="")
            if stored and stored != arrays_checksum(_flat(groups)):
                raise FileFormatError(
                    f"{path}: the checksum (attribute 'checksum') does not match the "
                    f"arrays of the file: it was edited or damaged. Restore a copy")
            epoch = attr_value(path, f, "epoch", int)
            if epoch < 0:
                raise FileFormatError(f"{path}: attribute 'epoch' is {epoch}, not >= 0")
            ckpt = Checkpoint(
                path=path, epoch=epoch, params=groups["params"],
                optimizer_name=attr_value(path, f, "optimizer", str, default=""),
                optimizer=groups["optimizer"], net_rng=groups["net_rng"],
                trainer_rng=_json_field(path, f, "trainer_rng", dict, None),
                history=_json_field(path, f, "history", list, []),
                trainer_state=_json_field(path, f, "trainer_state", dict, {}),
                best_params=groups.get("best_params"),
                model_config=_json_field(path, f, "model_config", object, None),
                seed=attr_value(path, f, "seed", int, default=-1),
                settings=_json_field(path, f, "settings", dict, None),
                accounting=_json_field(path, f, "accounting", dict, None),
            )
        except (KeyError, OSError, RuntimeError) as err:
            raise FileFormatError(f"{path}: damaged evsim checkpoint ({err})") from None
    if not all(isinstance(r, dict) for r in ckpt.history):
        raise FileFormatError(f"{path}: attribute 'history' must be a JSON list of dicts "
                              f"(one per epoch)")
    for g in ("params", "best_params"):
        for name, value in (getattr(ckpt, g) or {}).items():
            if not isinstance(value, np.ndarray) or value.dtype.kind not in "fc":
                raise FileFormatError(f"{path}: field '{g}/{name}' must be an array of "
                                      f"real numbers, got {np.asarray(value).dtype}")
    if ckpt.trainer_rng is not None and not isinstance(ckpt.trainer_rng.get("bit_generator"),
                                                       str):
        raise FileFormatError(f"{path}: attribute 'trainer_rng' has no 'bit_generator' name")
    check_finite(path, dict(params=ckpt.params, optimizer=ckpt.optimizer,
                            best_params=ckpt.best_params), "refusing to restore")
    return ckpt


def _json_field(path, f, key, kind, default):
    """A JSON attribute of type ``kind`` (``default`` when absent)."""
    if key not in f.attrs:
        return default
    value = attr_value(path, f, key, "json")
    if kind is not object and not isinstance(value, kind):
        raise FileFormatError(f"{path}: attribute {key!r} must hold a JSON "
                              f"{'object' if kind is dict else 'list'}, got "
                              f"{type(value).__name__}")
    return value


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


def restore_checkpoint(ckpt, net, optimizer, settings=None):
    """Load a checkpoint's parameters, optimiser state and RNG state into ``net``
    and ``optimizer`` (in place). Everything is checked before anything changes.

    Parameters
    ----------
    ckpt : Checkpoint or str or PathLike
        A loaded checkpoint, or a path to read.
    net : evsim.Network
    optimizer : Optimizer
    settings : dict, optional
        The run's settings, compared with those the checkpoint stores.

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointMismatchError
        Different parameter names, shapes or dtypes, another optimiser class, or
        other settings (every difference listed).
    evsim.io.FileFormatError
        A malformed optimiser or random-stream state (the field named).
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
    cfg = _model_config(net)
    check_settings(ckpt, None if cfg is None else json.loads(cfg), settings)
    # a dry run of the optimiser state on a scratch copy raises before any change
    scratch = type(optimizer).__new__(type(optimizer))
    scratch.__dict__.update(optimizer.__dict__)
    try:
        scratch.load_state_dict(ckpt.optimizer)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise FileFormatError(f"{ckpt.path}: field 'optimizer' does not hold a valid "
                              f"{type(optimizer).__name__} state ({err})") from None
    for name, value in scratch.state.items():
        if name not in params:
            raise CheckpointMismatchError(
                f"{ckpt.path}: optimiser state for unknown parameter {name!r}")
        for slot, buf in value.items():
            if isinstance(buf, np.ndarray) and buf.shape != params[name].shape:
                raise CheckpointMismatchError(
                    f"{ckpt.path}: optimiser state {slot!r} of {name!r} has shape "
                    f"{buf.shape}, the parameter has {params[name].shape}")
    before = net.rng_state()
    odd = sorted(set(before) ^ set(ckpt.net_rng))
    if odd:
        raise FileFormatError(f"{ckpt.path}: field 'net_rng' does not hold the random streams "
                              f"of this network (differing entries: {odd})")
    try:
        net.set_rng_state(ckpt.net_rng)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        net.set_rng_state(before)
        raise FileFormatError(f"{ckpt.path}: field 'net_rng' does not hold the random "
                              f"streams of this network ({type(err).__name__}: {err})") from None
    if ckpt.trainer_rng is not None:
        generator_from_state(ckpt.trainer_rng, ckpt.path)
    for name, p in params.items():
        p[...] = ckpt.params[name]
    optimizer.load_state_dict(ckpt.optimizer)
    return ckpt


def generator_from_state(state, path="checkpoint"):
    """A numpy Generator whose bit generator is set to ``state`` (a dict from
    ``Generator.bit_generator.state``, e.g. read back from JSON)."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    bitgen_cls = getattr(np.random, name, None) if isinstance(name, str) else None
    if bitgen_cls is None or not isinstance(bitgen_cls, type) \
            or not issubclass(bitgen_cls, np.random.BitGenerator):
        raise FileFormatError(f"{path}: attribute 'trainer_rng' names no bit generator "
                              f"({name!r})")
    bg = bitgen_cls()
    try:
        bg.state = state
    except (KeyError, ValueError, TypeError) as err:
        raise FileFormatError(f"{path}: attribute 'trainer_rng' is not a valid {name} "
                              f"state ({err})") from None
    return np.random.Generator(bg)
