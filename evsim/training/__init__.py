"""Training: losses, optimisers, regularisers, the Trainer and checkpoints."""

from evsim.training.checkpoint import (
    Checkpoint,
    CheckpointMismatchError,
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
    predict_last,
    select_last,
)
from evsim.training.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm
from evsim.training.regularizers import (
    activity_fraction,
    activity_regularizer,
    dropconnect_mask,
    dropout_mask,
    embedding_dropout_mask,
    zoneout_mask,
)
from evsim.training.trainer import OPTIMIZERS, TASKS, DivergenceError, Trainer

__all__ = [
    "SGD",
    "TASKS",
    "Adam",
    "AdamW",
    "Checkpoint",
    "CheckpointMismatchError",
    "DivergenceError",
    "OPTIMIZERS",
    "Optimizer",
    "Trainer",
    "accuracy_every_step",
    "accuracy_last",
    "activity_fraction",
    "activity_regularizer",
    "clip_grad_norm",
    "cross_entropy_every_step",
    "cross_entropy_last",
    "dropconnect_mask",
    "dropout_mask",
    "embedding_dropout_mask",
    "load_checkpoint",
    "mse",
    "predict_last",
    "restore_checkpoint",
    "save_checkpoint",
    "select_last",
    "zoneout_mask",
]
