"""A training loop for evsim networks: fit, evaluate, checkpoints, exact resume.

:class:`Trainer` drives a :class:`evsim.Network` through mini-batches with the
network's training interface (``forward(..., training=True)`` then
``backward``), adds an activity regulariser on the outputs of EGRU
populations, clips the gradient norm and steps an optimiser whose bounds keep
the thresholds in :data:`evsim.config.THRESHOLD_RANGE`.

Every epoch ends with a validation pass (when validation data is given), an
optional early-stopping decision and a checkpoint (when a path is given). A
checkpoint holds the parameters, the optimiser state, the state of every random
stream (the network's and the trainer's shuffling stream), the epoch and the
metrics so far; ``fit(..., resume=True)`` continues a run exactly as if it had
never stopped (the same weights, bit for bit). Checkpoints are written
atomically: a run killed at any moment loses at most the epoch in progress.

Tasks
-----
``"classify_last"``
    Data: :class:`evsim.data.Dataset` with integer labels; softmax cross-entropy
    of the readout at each sequence's last valid step; metric ``accuracy``.
``"regress"``
    Data: :class:`evsim.data.Dataset` with float targets ``(N, n_out)``; squared
    error at the last valid step; metric ``mse``.
``"lm"``
    Data: a 1-D array of token ids; cut into ``batch_size`` streams and windows
    of ``bptt`` steps; cross-entropy at every step; metric ``perplexity``.
"""

import json
import math
import os
import time

import numpy as np
from tqdm.auto import tqdm

from evsim import config, energy
from evsim import threads as evthreads
from evsim.data import Dataset, batchify, bptt_batches
from evsim.training.checkpoint import (
    DivergedError,
    generator_from_state,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from evsim.training.losses import (
    accuracy_every_step,
    accuracy_last,
    cross_entropy_every_step,
    cross_entropy_last,
    mse,
    select_last,
)
from evsim.training.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm
from evsim.training.regularizers import activity_regularizer

__all__ = ["OPTIMIZERS", "TASKS", "DivergenceError", "Trainer"]

#: Optimiser names accepted by ``Trainer(optimizer=...)``, built with ``lr``.
OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": SGD}

TASKS = ("classify_last", "regress", "lm")
_METRIC = {"classify_last": "accuracy", "regress": "mse", "lm": "perplexity"}
# spawn key of the trainer's shuffling stream, derived from the network seed
_SHUFFLE_KEY = 0x5348_5546


# --------------------------------------------------------------------------- #
# access to the network (kept in one place so that the object model may evolve)
# --------------------------------------------------------------------------- #
def _populations(net):
    """``{name: population}`` of a network."""
    pops = getattr(net, "populations", None)
    if pops is None:
        pops = getattr(net, "pops", None)
    if pops is None:
        raise TypeError(f"net must be an evsim.Network, got {type(net).__name__}")
    if isinstance(pops, dict):
        return dict(pops)
    return {p.name: p for p in pops}


def _is_recurrent(pop):
    from evsim.populations import GatedRecurrent

    return isinstance(pop, GatedRecurrent)


def _is_egru(pop):
    from evsim.populations import EGRU

    return isinstance(pop, EGRU)


def _nonneg(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _activity_target(value):
    """The regulariser's target mean output: a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"activity_target must be a real number in [0, 1], got "
                        f"{type(value).__name__}")
    value = float(value)
    if not (0.0 <= value <= 1.0):  # also catches NaN
        raise ValueError(
            f"activity_target must lie in [0, 1], got {value}: it is the target mean "
            "graded output of each EGRU unit (about the fraction of steps a unit fires "
            "times its mean event value; an EGRU output lies in [0, 1)), e.g. 0.05")
    return value


def _make_optimizer(optimizer, lr):
    if optimizer is None:
        optimizer = "adam"
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(f"optimizer must be an Optimizer or one of {sorted(OPTIMIZERS)}, "
                             f"got {optimizer!r}")
        return OPTIMIZERS[key](lr)
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an instance such as {optimizer.__name__}(lr=...) "
                        f"or a name in {sorted(OPTIMIZERS)}, got the class itself")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an evsim.training Optimizer or one of "
                        f"{sorted(OPTIMIZERS)}, got {type(optimizer).__name__}")
    return optimizer


class DivergenceError(DivergedError, FloatingPointError):
    """Training diverged: the loss, a gradient or a parameter became NaN or infinite.

    Raised by :meth:`Trainer.fit` before the non-finite values reach the
    parameters or a checkpoint; the last checkpoint (if any) is the state
    after the last good epoch. A subclass of the checkpoint writer's
    :class:`evsim.training.checkpoint.DivergedError` (and so of ValueError),
    so one ``except DivergedError`` catches both.
    """


def _pos_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class _Meter:
    """Accumulates loss, metric and the cost counters over batches."""

    _COUNTERS = ("fwd_macs", "fwd_macs_event", "fwd_macs_dense",
                 "bwd_macs", "bwd_macs_event", "bwd_macs_dense")

    def __init__(self):
        self.loss = 0.0
        self.hits = 0.0
        self.n = 0  # loss weight: samples (last-step tasks) or tokens (lm)
        self.penalty = 0.0
        self.n_batches = 0
        self.events = 0
        self.unit_steps = 0
        self.bwd_active = 0.0
        self.bwd_unit_steps = 0
        self.counters = dict.fromkeys(self._COUNTERS, 0)

    def add_loss(self, loss, hits, n, penalty=0.0):
        self.loss += loss * n
        self.hits += hits * n
        self.n += n
        self.penalty += penalty
        self.n_batches += 1

    def add_stats(self, trainer, stats, valid_steps, backward=False):
        """Fold one batch's ``stats`` in; ``valid_steps`` = sum of the lengths."""
        for name, st in stats.items():
            if not isinstance(st, dict):
                continue
            for key in (self._COUNTERS[3:] if backward else self._COUNTERS[:3]):
                if key in st:
                    self.counters[key] += int(st[key])
            if name not in trainer._recurrent:
                continue
            size = trainer._recurrent[name]
            steps = valid_steps * size
            if backward:
                if "backward_sparsity" in st:
                    self.bwd_active += (1.0 - float(st["backward_sparsity"])) * steps
                    self.bwd_unit_steps += steps
            else:
                ev = steps if name not in trainer._egru else int(st.get("events", 0))
                self.events += ev
                self.unit_steps += steps

    @property
    def mean_loss(self):
        return self.loss / self.n if self.n else float("nan")

    def metrics(self, task):
        out = {"loss": self.mean_loss}
        if task == "classify_last" or task == "lm":
            out["accuracy"] = self.hits / self.n if self.n else float("nan")
        if task == "lm":
            out["perplexity"] = math.exp(min(self.mean_loss, 700.0))
        if task == "regress":
            out["mse"] = self.mean_loss
        out["penalty"] = self.penalty / self.n_batches if self.n_batches else 0.0
        out["activity"] = self.events / self.unit_steps if self.unit_steps else float("nan")
        out["backward_sparsity"] = (1.0 - self.bwd_active / self.bwd_unit_steps
                                    if self.bwd_unit_steps else float("nan"))
        out.update(self.counters)
        out.update(energy.fields(self.counters))
        return out


class Trainer:
    """Fit and evaluate a network on a task, with checkpoints and exact resume.

    Parameters
    ----------
    net : evsim.Network
        With an input population ``input`` and a readout ``readout``.
    optimizer : Optimizer or {"adam", "adamw", "sgd"}, optional
        An optimiser object (``Adam(lr=...)``, ``AdamW``, ``SGD`` from
        :mod:`evsim.training.optim`) or its name, built with ``lr`` and default
        settings. Default: ``"adam"``. Threshold parameters
        (``net.threshold_params()``) get the bound
        :data:`evsim.config.THRESHOLD_RANGE` unless the optimiser already
        bounds them.
    task : {"classify_last", "regress", "lm"}
        See the module docstring.
    lr : float
        Learning rate of an optimiser given by name (ignored when
        ``optimizer`` is an object: it carries its own ``lr``). If training
        diverges (:class:`DivergenceError`), lower it.
    batch_size : int
        Training mini-batch size (streams for ``"lm"``).
    eval_batch_size : int, optional
        Batch size of :meth:`evaluate` (default ``max(batch_size, 256)``;
        ``batch_size`` for ``"lm"``, whose state carries across windows).
    activity_target : float in [0, 1]
        Target of the activity regulariser on every EGRU population
        (:func:`evsim.training.regularizers.activity_regularizer`, per unit):
        ``activity_strength / H * sum_h relu(m_h - target)**2`` is added to
        the loss, where ``m_h`` is the mean graded output of unit ``h`` over
        the valid steps and samples. It is *not* the fraction of steps with
        an event: an event carries ``y = v`` with ``thr < v < 1`` (the EGRU
        state is a mix of its previous value and a tanh), so ``m_h`` is about
        (fraction of steps unit ``h`` fires) x (its mean event value) and lies
        in ``[0, 1)``. To aim at a firing fraction ``f``, use ``f`` times the
        typical event value (somewhat above the thresholds, whose mean is
        :data:`evsim.config.THRESHOLD_MEAN` at initialisation); a target of 1
        or more never penalises. A value outside ``[0, 1]`` or NaN is a
        ValueError.
        Default 0.05, the value the ``evsim train`` command line uses for
        every task. Only used when ``activity_strength > 0``.
    activity_strength : float
        >= 0; the penalty's weight. Default 0 (regulariser off), whereas the
        command line's task presets switch it on (1 to 30 per task, see
        ``evsim.cli.TASK_DEFAULTS``): a Trainer built in code trains on the
        loss alone unless you ask for sparsity. The measured activity
        (fraction of unit-steps with an event) is reported as ``activity``
        by :meth:`fit` and :meth:`evaluate`.
    clip : float or None
        Global gradient-norm clipping (None: no clipping).
    progress : bool
        Show a tqdm bar per epoch with the running loss, metric and activity.
    checkpoint : str or PathLike, optional
        File rewritten (atomically) at the end of every epoch.
    patience : int, optional
        Early stopping: stop when the validation loss has not improved for
        this many epochs (needs validation data).
    restore_best : bool
        At the end of :meth:`fit`, load the parameters of the epoch with the
        lowest validation loss.
    input, readout : str
        Names of the input and readout populations.
    max_len : int, optional
        Refuse sequences (or bptt windows) longer than this.
    bptt : int
        Window length for ``"lm"``.
    seed : int, optional
        Seed of the shuffling stream; default: derived from ``net.seed``.
    log : callable, optional
        Called with a one-line summary after every epoch (default: written
        under the progress bar when ``progress``, else nothing).
    lr_schedule : None, "cosine" or callable, optional
        Learning rate of each epoch, set before the epoch starts from the
        optimiser's initial ``lr``: ``"cosine"`` decays it as
        ``lr * (0.05 + 0.95 * (1 + cos(pi * epoch / epochs)) / 2)``; a callable
        ``f(epoch, epochs) -> factor`` (``epoch`` counts from 0) gives the factor.
        A function of the epoch only, so resumed runs stay exact.
    threads : int, optional
        Most threads :meth:`fit` and :meth:`evaluate` may use (default: all;
        see :mod:`evsim.threads`). The trained weights are the same for every
        value; only the time differs.
    """

    def __init__(self, net, optimizer=None, task="classify_last", *, lr=3e-3, batch_size=32,
                 eval_batch_size=None, activity_target=0.05, activity_strength=0.0, clip=1.0,
                 progress=True, checkpoint=None, patience=None, restore_best=False,
                 input="x", readout="out", max_len=None, bptt=35, seed=None, log=None,
                 lr_schedule=None, threads=None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.net = net
        self.task = task
        self.metric = _METRIC[task]
        pops = _populations(net)
        for role, name in (("input", input), ("readout", readout)):
            if name not in pops:
                raise ValueError(f"{role}={name!r} is not a population of the network "
                                 f"(it has {sorted(pops)})")
        self.input = input
        self.readout = readout
        self._pops = pops
        self._recurrent = {n: p.size for n, p in pops.items() if _is_recurrent(p)}
        self._egru = {n: p.size for n, p in pops.items() if _is_egru(p)}
        self.batch_size = _pos_int("batch_size", batch_size)
        self.eval_batch_size = _pos_int("eval_batch_size", eval_batch_size, allow_none=True) \
            or (self.batch_size if task == "lm" else max(self.batch_size, 256))
        self.activity_target = _activity_target(activity_target)
        self.activity_strength = _nonneg("activity_strength", activity_strength)
        self.clip = None if clip is None else _nonneg("clip", clip) or None
        self.progress = bool(progress)
        self.threads = evthreads._check_count("threads", threads)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.patience = _pos_int("patience", patience, allow_none=True)
        self.restore_best = bool(restore_best)
        self.max_len = _pos_int("max_len", max_len, allow_none=True)
        self.bptt = _pos_int("bptt", bptt)
        self.log = log
        self.params = net.params()
        optimizer = _make_optimizer(optimizer, lr)
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        if not (lr_schedule is None or lr_schedule == "cosine" or callable(lr_schedule)):
            raise ValueError(f"lr_schedule must be None, 'cosine' or a callable, got "
                             f"{lr_schedule!r}")
        self.lr_schedule = lr_schedule
        lo_hi = tuple(config.THRESHOLD_RANGE)
        for name in net.threshold_params():
            if optimizer.bound_of(name) is None:
                optimizer.bounds[name] = lo_hi
        optimizer.project(self.params)
        if seed is None:
            seed = getattr(net, "seed", 0) or 0
        self.seed = int(seed)
        self._rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(_SHUFFLE_KEY,)))
        self.history = []
        self.last_evaluation = None  # Trainer.evaluate's last dict (saved in checkpoints)
        self.epoch = 0
        self._best = {"loss": None, "epoch": None, "bad_epochs": 0, "stopped": False}
        self.best_params = None

    # ------------------------------------------------------------------ #
    # data
    # ------------------------------------------------------------------ #
    def _check_data(self, data, role):
        """Validate a data set against the network before any training."""
        if self.task == "lm":
            ids = np.asarray(data)
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"{role}: task 'lm' takes a 1-D array of token ids, got "
                                 f"shape {ids.shape} dtype {ids.dtype}")
            if ids.size < 2:
                raise ValueError(f"{role} is empty: a language-model data set needs at "
                                 f"least 2 tokens, got {ids.size}")
            vocab = getattr(self._pops[self.input], "vocab", None)
            n_out = self._pops[self.readout].size
            hi = int(ids.max())
            if int(ids.min()) < 0 or (vocab is not None and hi >= vocab) or hi >= n_out:
                raise ValueError(f"{role}: token ids must lie in [0, {min(vocab or n_out, n_out)})"
                                 f" (vocabulary size), got {ids.min()}..{hi}")
            return ids
        if not isinstance(data, Dataset):
            raise TypeError(f"{role} must be an evsim.data.Dataset for task {self.task!r}, "
                            f"got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError(f"{role} is empty: data set {data.name!r} has no samples")
        n_in = self._pops[self.input].size
        if data.n_inputs != n_in:
            raise ValueError(f"{role}: data set {data.name!r} has {data.n_inputs} input "
                             f"channels, the input population {self.input!r} has {n_in}")
        if self.max_len is not None and data.n_steps > self.max_len:
            raise ValueError(f"{role}: sequences of data set {data.name!r} have "
                             f"{data.n_steps} steps, more than max_len={self.max_len}")
        n_out = self._pops[self.readout].size
        if self.task == "classify_last":
            if data.n_classes is None:
                raise ValueError(f"{role}: task 'classify_last' needs integer class labels, "
                                 f"data set {data.name!r} holds regression targets")
            y = data.y
            if y.min() < 0 or y.max() >= n_out:
                raise ValueError(f"{role}: labels of data set {data.name!r} lie in "
                                 f"{y.min()}..{y.max()}, the readout {self.readout!r} has "
                                 f"{n_out} classes (labels must lie in 0..{n_out - 1})")
        else:
            if data.n_classes is not None:
                raise ValueError(f"{role}: task 'regress' needs float targets, data set "
                                 f"{data.name!r} holds class labels")
            if data.y.shape[1:] != (n_out,):
                raise ValueError(f"{role}: targets of data set {data.name!r} have shape "
                                 f"{data.y.shape}, expected (N, {n_out}) for readout "
                                 f"{self.readout!r}")
        return data

    def _batches(self, data, batch_size, shuffle):
        """Yield (x, target, lengths, valid_steps) and the number of batches.

        For ``"lm"`` the windows of one pass continue each other: the network
        starts from zero state at the first window only (truncated BPTT)."""
        if self.task == "lm":
            streams = batchify(data, min(batch_size, data.size // 2))
            n = -(-(streams.shape[0] - 1) // self.bptt)
            it = ((x, y, None, x.shape[0]) for x, y in
                  bptt_batches(streams, self.bptt, max_len=self.max_len))
            return it, n
        n = -(-len(data) // batch_size)
        it = ((x, y, lengths, x.shape[0] if lengths is None else None)
              for x, y, lengths in data.batches(batch_size, shuffle=shuffle,
                                                 rng=self._rng if shuffle else None,
                                                 max_len=self.max_len))
        return it, n

    # ------------------------------------------------------------------ #
    # one batch
    # ------------------------------------------------------------------ #
    def _loss(self, logits, target, lengths):
        """(loss, hits, n, dlogits)."""
        if self.task == "classify_last":
            loss, grad = cross_entropy_last(logits, target, lengths)
            return loss, accuracy_last(logits, target, lengths), len(target), grad
        if self.task == "lm":
            loss, grad = cross_entropy_every_step(logits, target, lengths)
            return loss, accuracy_every_step(logits, target, lengths), target.size, grad
        loss, grad = mse(logits, target, lengths)
        return loss, 0.0, len(target), grad

    def _loss_grads(self, fp, target, lengths):
        """Loss of a forward pass and the output gradients for ``net.backward``."""
        logits = fp.outputs[self.readout]
        loss, hits, n, dlogits = self._loss(logits, target, lengths)
        out_grads = {self.readout: dlogits}
        penalty = 0.0
        if self.activity_strength > 0:
            for name in self._egru:
                pen, gy = activity_regularizer(fp.outputs[name], self.activity_target,
                                               self.activity_strength, lengths)
                penalty += pen
                out_grads[name] = gy
        return loss, hits, n, penalty, out_grads

    def _forward(self, x, lengths, training, first):
        """One forward pass; ``"lm"`` windows carry the state of the previous one."""
        reset = first or self.task != "lm"
        return self.net.forward({self.input: x}, lengths=lengths, training=training,
                                reset=reset)

    def _diverged(self, what, batch):
        lr = float(self.optimizer.lr)
        return DivergenceError(
            f"training diverged in epoch {self.epoch + 1}, batch {batch + 1}: {what}. "
            f"The learning rate lr={lr:g} is probably too high: lower it (e.g. "
            f"lr={lr / 10:g})" + ("" if self.clip else " or clip the gradient norm "
                                  "(clip=1.0)")
            + ". Training stopped before the end of the epoch: nothing from it was "
            "written to the checkpoint.")

    def _train_batch(self, x, target, lengths, first, batch=0):
        fp = self._forward(x, lengths, True, first)
        logits = fp.outputs[self.readout]
        if not np.all(np.isfinite(logits)):
            raise self._diverged(f"the readout {self.readout!r} output is NaN or infinite",
                                 batch)
        loss, hits, n, penalty, out_grads = self._loss_grads(fp, target, lengths)
        if not (math.isfinite(loss) and math.isfinite(penalty)):
            raise self._diverged(f"the loss is {loss + penalty}", batch)
        grads = self.net.backward(fp, out_grads)
        for name, g in grads.items():
            if not np.all(np.isfinite(g)):
                raise self._diverged(f"the gradient of {name!r} is NaN or infinite", batch)
        if self.clip:
            clip_grad_norm(grads, self.clip)
        self.optimizer.step(self.params, grads)
        for name, p in self.params.items():
            if not np.all(np.isfinite(p)):
                raise self._diverged(f"parameter {name!r} became NaN or infinite after "
                                     "the optimiser step", batch)
        return fp, grads.stats, loss, hits, n, penalty

    # ------------------------------------------------------------------ #
    # public API
    # ------------------------------------------------------------------ #
    def evaluate(self, data, measure_backward=False):
        """Loss, metric and cost counters of the network on ``data`` (no update).

        Parameters
        ----------
        data : Dataset or 1-D token array (task ``"lm"``)
        measure_backward : bool
            Also run a training-mode forward and a backward pass per batch
            (no update) to measure the backward cost and sparsity; the
            network's random streams are restored afterwards.

        Returns
        -------
        dict
            ``loss``, the task metric (``accuracy``, ``perplexity`` or
            ``mse``), ``activity`` (fraction of unit-steps with an event over
            the recurrent populations; 1 for a GRU), ``backward_sparsity`` (NaN
            unless ``measure_backward``), ``fwd_macs``, ``fwd_macs_dense``,
            ``bwd_macs``, ``bwd_macs_dense`` (multiply-adds done and the dense
            equivalent, summed over populations and projections; the
            ``*_event`` counters: what the event-driven algorithm needs),
            the energy estimate of :func:`evsim.energy.fields` (``synops_fwd``,
            ``energy_fwd_j``, ``energy_dense_fwd_j``, ``energy_j``,
            ``energy_saving``, ...; the backward's are zero unless
            ``measure_backward``), ``wall_s``. The last evaluation's dict is
            kept as ``last_evaluation`` and saved in checkpoints.
        """
        with evthreads.owned(), evthreads.limit(self.threads):
            out = self._evaluate(data, measure_backward)
        self.last_evaluation = _jsonable(out)
        return out

    def _evaluate(self, data, measure_backward=False):
        data = self._check_data(data, "data")
        t0 = time.perf_counter()
        meter = _Meter()
        rng_state = self.net.rng_state() if measure_backward else None
        batches, _ = self._batches(data, self.eval_batch_size, shuffle=False)
        try:
            for i, (x, target, lengths, steps) in enumerate(batches):
                steps = steps * x.shape[1] if lengths is None else int(lengths.sum())
                before = _copy_state(self.net.state) if measure_backward else None
                res = self._forward(x, lengths, False, i == 0)
                loss, hits, n, _ = self._loss(res.outputs[self.readout], target, lengths)
                meter.add_loss(loss, hits, n)
                meter.add_stats(self, res.stats, steps)
                if measure_backward:
                    after = _copy_state(self.net.state)
                    self.net.state = before
                    fp = self._forward(x, lengths, True, i == 0)
                    _, _, _, _, out_grads = self._loss_grads(fp, target, lengths)
                    grads = self.net.backward(fp, out_grads)
                    meter.add_stats(self, grads.stats, steps, backward=True)
                    self.net.state = after
        finally:
            if rng_state is not None:
                self.net.set_rng_state(rng_state)
        out = meter.metrics(self.task)
        del out["penalty"]  # the regulariser is a training term
        out["wall_s"] = time.perf_counter() - t0
        return out

    def predict(self, data_or_x, batch_size=None, *, lengths=None, layout="NTI",
                output="labels"):
        """Predictions of the network (evaluation mode, no update).

        Each sample is read at its last valid step, as the loss does during
        training; padding after a sample's length is never read.

        Parameters
        ----------
        data_or_x : Dataset or array_like
            A :class:`evsim.data.Dataset` (its ``lengths`` are used; ``y`` is
            ignored), or inputs of shape ``(N, T, I)`` (``layout="NTI"``) or
            ``(T, N, I)`` (``layout="TBI"``); ``(N, T)`` is one input channel.
        batch_size : int, optional
            Samples per forward pass (default: ``eval_batch_size``). The result
            does not depend on it.
        lengths : array_like of int, shape (N,), optional
            Valid steps of each sample of an array input (e.g. from
            :func:`evsim.data.pad_sequences`); default: all ``T``.
        layout : {"NTI", "TBI"}
            Layout of an array input (see :meth:`evsim.data.Dataset.from_arrays`).
        output : {"labels", "probs", "logits"}
            For ``task="classify_last"``: class labels ``(N,)`` int64, class
            probabilities ``(N, n_classes)`` (softmax of the readout) or the raw
            readout. Ignored for ``"regress"``, which returns the predicted
            values ``(N, n_out)``.

        Returns
        -------
        ndarray
            ``(N,)`` labels, or ``(N, n_classes)`` / ``(N, n_out)`` floats.
        """
        if self.task == "lm":
            raise ValueError("predict() serves the 'classify_last' and 'regress' tasks; for "
                             "a language model run net.forward on the token windows")
        if output not in ("labels", "probs", "logits"):
            raise ValueError(f"output must be 'labels', 'probs' or 'logits', got {output!r}")
        batch_size = _pos_int("batch_size", batch_size, allow_none=True) \
            or self.eval_batch_size
        if isinstance(data_or_x, Dataset):
            if lengths is not None:
                raise ValueError("lengths= is for array input; a Dataset carries its own")
            x, lengths = data_or_x.x, data_or_x.lengths
            name = data_or_x.name
        else:
            n = np.shape(data_or_x)[1 if layout == "TBI" else 0] if np.ndim(data_or_x) else 0
            ds = Dataset.from_arrays(data_or_x, np.zeros(n, np.float32), layout=layout,
                                     lengths=lengths, name="predict input")
            x, lengths, name = ds.x, ds.lengths, ds.name
        n_in = self._pops[self.input].size
        if x.shape[2] != n_in:
            raise ValueError(f"predict: {name!r} has {x.shape[2]} input channels per step "
                             f"(shape {x.shape} read as {layout}), the input population "
                             f"{self.input!r} has {n_in}")
        if self.max_len is not None and x.shape[1] > self.max_len:
            raise ValueError(f"predict: sequences of {name!r} have {x.shape[1]} steps, more "
                             f"than max_len={self.max_len}")
        with evthreads.owned(), evthreads.limit(self.threads):
            outs = []
            for start in range(0, x.shape[0], batch_size):
                xb = np.ascontiguousarray(x[start:start + batch_size].transpose(1, 0, 2))
                lb = None if lengths is None else lengths[start:start + batch_size]
                res = self.net.forward({self.input: xb}, lengths=lb, training=False,
                                       reset=True)
                outs.append(select_last(res.outputs[self.readout], lb))
        out = np.concatenate(outs, axis=0)
        if self.task == "regress" or output == "logits":
            return out
        if output == "labels":
            return np.argmax(out, axis=1).astype(np.int64)
        z = out.astype(np.float64) - out.max(axis=1, keepdims=True)
        p = np.exp(z)
        return (p / p.sum(axis=1, keepdims=True)).astype(out.dtype)

    def fit(self, train, valid=None, epochs=10, resume=False):
        """Train for ``epochs`` epochs in total (counting those of a resumed run).

        Parameters
        ----------
        train : Dataset or 1-D token array (task ``"lm"``)
        valid : same type, optional
            Evaluated after every epoch; needed for ``patience`` and ``restore_best``.
        epochs : int
            Total number of epochs; a resumed run does ``epochs - done`` more.
        resume : bool
            Continue from ``checkpoint`` when that file exists (otherwise start
            from scratch). The parameters, optimiser, random streams, metrics
            and early-stopping state are restored, so the run continues exactly
            as an uninterrupted one (with an ``lr_schedule``, pass the same
            ``epochs`` as the interrupted run: the schedule spans them).

        Returns
        -------
        list of dict
            Metrics of every epoch (``history``), including resumed ones.
        """
        with evthreads.owned(), evthreads.limit(self.threads):
            return self._fit(train, valid, epochs, resume)

    def _fit(self, train, valid=None, epochs=10, resume=False):
        epochs = _pos_int("epochs", epochs)
        train = self._check_data(train, "train")
        if valid is not None:
            valid = self._check_data(valid, "valid")
        if (self.patience or self.restore_best) and valid is None:
            raise ValueError("patience and restore_best need validation data: pass valid=")
        if resume:
            if self.checkpoint is None:
                raise ValueError("resume=True needs a checkpoint path: "
                                 "Trainer(..., checkpoint=path)")
            if os.path.exists(self.checkpoint):
                self.load(self.checkpoint)
                self._say(f"resumed from {self.checkpoint} after epoch {self.epoch}")
            else:
                self._say(f"no checkpoint at {self.checkpoint}: starting from scratch")
        while self.epoch < epochs and not self._best["stopped"]:
            self._run_epoch(train, valid, epochs)
        if self.restore_best and self.best_params is not None:
            for name, p in self.params.items():
                p[...] = self.best_params[name]
        return self.history

    def _lr_factor(self, epoch, epochs):
        if self.lr_schedule is None:
            return 1.0
        if self.lr_schedule == "cosine":
            return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        return float(self.lr_schedule(epoch, epochs))

    def _run_epoch(self, train, valid, epochs):
        t0 = time.perf_counter()
        if self.lr_schedule is not None:
            self.optimizer.lr = self.base_lr * self._lr_factor(self.epoch, epochs)
        meter = _Meter()
        batches, n_batches = self._batches(train, self.batch_size, shuffle=True)
        desc = f"epoch {self.epoch + 1}/{epochs}"
        with tqdm(total=n_batches, desc=desc, disable=not self.progress, leave=False,
                  unit="batch", dynamic_ncols=True) as bar:
            for i, (x, target, lengths, steps) in enumerate(batches):
                steps = steps * x.shape[1] if lengths is None else int(lengths.sum())
                fp, bstats, loss, hits, n, penalty = self._train_batch(x, target, lengths,
                                                                      i == 0, i)
                meter.add_loss(loss, hits, n, penalty)
                meter.add_stats(self, fp.stats, steps)
                meter.add_stats(self, bstats, steps, backward=True)
                bar.update(1)
                m = meter.metrics(self.task)
                post = {"loss": f"{m['loss']:.4f}", self.metric: f"{m[self.metric]:.4f}"}
                if self._egru:
                    post["act"] = f"{m['activity']:.3f}"
                bar.set_postfix(post, refresh=False)
        record = {"epoch": self.epoch + 1, "lr": float(self.optimizer.lr)}
        record.update({f"train_{k}": v for k, v in meter.metrics(self.task).items()})
        if valid is not None:
            vm = self.evaluate(valid)
            record.update({f"valid_{k}": vm[k] for k in ("loss", self.metric, "activity",
                                                         "fwd_macs", "fwd_macs_dense",
                                                         "synops_fwd", "energy_fwd_j",
                                                         "energy_dense_fwd_j")})
            self._early_stopping(record["valid_loss"])
        record["wall_s"] = time.perf_counter() - t0
        self.epoch += 1
        self.history.append(_jsonable(record))
        if self.checkpoint is not None:
            self.save(self.checkpoint)
        self._say(self._summary(record))

    def _early_stopping(self, loss):
        b = self._best
        if b["loss"] is None or loss < b["loss"]:
            b.update(loss=float(loss), epoch=self.epoch + 1, bad_epochs=0)
            if self.restore_best:
                self.best_params = {k: v.copy() for k, v in self.params.items()}
        else:
            b["bad_epochs"] += 1
            if self.patience is not None and b["bad_epochs"] >= self.patience:
                b["stopped"] = True
                self._say(f"early stopping after epoch {self.epoch + 1}: no improvement of "
                          f"the validation loss for {self.patience} epochs "
                          f"(best {b['loss']:.4f} at epoch {b['epoch']})")

    def _summary(self, r):
        m = self.metric
        s = (f"epoch {r['epoch']:3d}  loss {r['train_loss']:.4f}  {m} {r[f'train_{m}']:.4f}")
        if self._egru:
            s += f"  activity {r['train_activity']:.3f}  bwd-sparsity " \
                 f"{r['train_backward_sparsity']:.3f}"
        if "valid_loss" in r:
            s += f" | valid loss {r['valid_loss']:.4f}  {m} {r[f'valid_{m}']:.4f}"
        return s + f"  ({r['wall_s']:.1f} s)"

    def _say(self, msg):
        if self.log is not None:
            self.log(msg)
        elif self.progress:
            tqdm.write(msg)

    # ------------------------------------------------------------------ #
    # checkpoints
    # ------------------------------------------------------------------ #
    def settings(self):
        """The settings that make a run what it is (a resumed run must have the
        same ones to continue it exactly): task, optimiser and learning rate,
        batch size, shuffling seed, regulariser, clipping, schedule, bptt."""
        schedule = self.lr_schedule
        return dict(task=self.task, optimizer=type(self.optimizer).__name__,
                    lr=self.base_lr, batch_size=self.batch_size, seed=self.seed,
                    activity_target=self.activity_target,
                    activity_strength=self.activity_strength, clip=self.clip,
                    lr_schedule=schedule if schedule is None or isinstance(schedule, str)
                    else getattr(schedule, "__name__", "callable"),
                    bptt=self.bptt if self.task == "lm" else None,
                    input=self.input, readout=self.readout)

    def save(self, path):
        """Write a checkpoint of the current state (atomic)."""
        save_checkpoint(path, self.net, self.optimizer, self.epoch, self.history,
                        trainer_rng=self._rng, trainer_state=dict(self._best),
                        best_params=self.best_params, settings=self.settings(),
                        accounting=self.last_evaluation)

    def load(self, path):
        """Restore the state saved by :meth:`save`: refused, with the differences
        listed, when the network or the settings (:meth:`settings`) differ."""
        ckpt = load_checkpoint(path)
        restore_checkpoint(ckpt, self.net, self.optimizer, settings=self.settings())
        if ckpt.trainer_rng is not None:
            self._rng = generator_from_state(ckpt.trainer_rng)
        self.epoch = ckpt.epoch
        self.history = list(ckpt.history)
        self.last_evaluation = ckpt.accounting
        self._best = {"loss": None, "epoch": None, "bad_epochs": 0, "stopped": False}
        self._best.update(ckpt.trainer_state)
        self.best_params = ({k: np.array(v) for k, v in ckpt.best_params.items()}
                            if ckpt.best_params is not None else None)
        return ckpt


def _copy_state(state):
    """Copy of ``net.state`` (population -> {variable: array})."""
    return {pop: {k: np.array(v) for k, v in st.items()} for pop, st in state.items()}


def _jsonable(record):
    """Plain Python floats/ints (JSON), non-finite floats kept as float."""
    out = {}
    for k, v in record.items():
        if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
            out[k] = int(v)
        else:
            out[k] = float(v)
    json.dumps(out)
    return out
