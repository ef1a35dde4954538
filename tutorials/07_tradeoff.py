"""Tutorial 7: the trade-off between accuracy, activity and energy.

An EGRU emits fewer events when it is trained with an activity regulariser,
and every event it does not emit saves the multiply-adds of one weight row.
How much accuracy does that sparsity cost, and how much energy does it save
against a dense GRU? In this tutorial you

1. write one training run as a function of its parameters that returns a
   row of numbers (accuracy, activity, operation counters, energy estimate),
2. run a small sweep serially: a few ``activity_strength`` values x 2 seeds
   on the digits task, plus a dense GRU as the reference,
3. print the table, with the energy estimate of ``evsim.energy`` and the
   assumptions behind it,
4. plot accuracy against activity and against estimated energy with
   ``evsim.plot.tradeoff`` (one point per setting, mean and standard
   deviation over the seeds).

The same function runs unchanged as the task of ``evsim.sweep.run`` (or the
``evsim sweep`` command), which spreads the points of a grid over the worker
processes of a Dask cluster, on one machine or many, and writes the same kind
of table: pass that table to ``evsim.plot.tradeoff`` as it is.

Run it with ``python tutorials/07_tradeoff.py [FIGURE_FOLDER]``; the figure
goes to FIGURE_FOLDER, or to ``$EVSIM_TUTORIAL_OUT``, or to a new temporary
folder. It takes about a minute on two CPU cores.
"""

import os
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")  # figures are saved to files, never shown on screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import evsim  # noqa: E402
from evsim import data, energy, models, plot  # noqa: E402

STRENGTHS = (0.0, 1.0, 4.0, 16.0)  # activity regulariser strengths swept
SEEDS = (0, 1)
EPOCHS = 6
HIDDEN = 32


def figure_folder():
    """Where the figures go: first argument, $EVSIM_TUTORIAL_OUT, or a temp folder."""
    folder = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVSIM_TUTORIAL_OUT")
              or tempfile.mkdtemp(prefix="evsim-tutorial-"))
    os.makedirs(folder, exist_ok=True)
    return folder


def train_point(model="egru", activity_strength=0.0, seed=0):
    """One run of the sweep: train, evaluate on the test split, return a row.

    Only keyword arguments in, a dict of numbers out: the shape of a task that
    ``evsim.sweep.run`` accepts as well."""
    splits = data.load_digits(seed=0)  # the same split for every run
    net = models.sequence_classifier(8, HIDDEN, 10, model=model, seed=seed)
    trainer = evsim.Trainer(net, lr=1e-2, batch_size=32, seed=seed, progress=False,
                            activity_target=0.0, activity_strength=activity_strength)
    trainer.fit(splits.train, epochs=EPOCHS)
    # measure_backward: also count what one step of sparse BPTT would cost
    test = trainer.evaluate(splits.test, measure_backward=True)
    row = dict(model=model, activity_strength=activity_strength, seed=seed)
    row.update({f"test_{k}": test[k] for k in ("loss", "accuracy")})
    for k in ("activity", "backward_sparsity", "fwd_macs", "fwd_macs_event", "fwd_macs_dense",
              "bwd_macs", "bwd_macs_event", "bwd_macs_dense", "energy_fwd_j",
              "energy_dense_fwd_j", "energy_j", "energy_dense_j", "energy_saving"):
        row[k] = test[k]
    return row


def main():
    out = figure_folder()

    # --- 1-2. The sweep, one run after another -------------------------------
    grid = [dict(model="egru", activity_strength=s, seed=seed)
            for s in STRENGTHS for seed in SEEDS]
    grid += [dict(model="gru", activity_strength=0.0, seed=seed) for seed in SEEDS]
    rows = []
    for point in grid:
        rows.append(train_point(**point))
        r = rows[-1]
        print(f"ran {r['model']:4s} strength {r['activity_strength']:3.1f} seed {r['seed']}: "
              f"accuracy {r['test_accuracy']:.3f}")

    # --- 3. The table ---------------------------------------------------------
    # energy_fwd_j: the estimated energy of classifying the whole test split
    # once, from the multiply-adds the event-driven forward needs;
    # energy_dense_fwd_j: the same network computed densely, as a GRU does.
    print()
    print(f"{'model':5s} {'strength':>8s} {'seed':>4s} {'accuracy':>8s} {'activity':>8s} "
          f"{'bwd-sparsity':>12s} {'fwd MACs':>10s} {'dense MACs':>10s} {'E fwd (J)':>10s} "
          f"{'saving':>6s}")
    for r in rows:
        print(f"{r['model']:5s} {r['activity_strength']:8.1f} {r['seed']:4d} "
              f"{r['test_accuracy']:8.3f} {r['activity']:8.3f} {r['backward_sparsity']:12.3f} "
              f"{r['fwd_macs_event']:10.3g} {r['fwd_macs_dense']:10.3g} "
              f"{r['energy_fwd_j']:10.3g} {r['energy_dense_fwd_j'] / r['energy_fwd_j']:6.2f}")
    print()
    print(energy.estimate(rows[0])["assumptions"])

    # --- 4. The trade-off plots -----------------------------------------------
    # Rows of the dense GRU (model == "gru") become the reference: a black
    # square and a dashed line. x="energy" reads the energy_j column (forward
    # and backward of one evaluation pass: a training step's cost), or
    # estimates it from the counters when a table has no such column.
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    plot.tradeoff(rows, metric="test_accuracy", x="activity", ax=a)
    plot.tradeoff(rows, metric="test_accuracy", x="energy", ax=b, annotate=False)
    a.set_title("accuracy against activity")
    b.set_title("accuracy against estimated energy (fwd + bwd)")
    fig.tight_layout()
    path = os.path.join(out, "07_tradeoff.png")
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")

    egru = [r for r in rows if r["model"] == "egru"]
    sparsest = min(egru, key=lambda r: r["activity"])
    gru_acc = np.mean([r["test_accuracy"] for r in rows if r["model"] == "gru"])
    print(f"tradeoff: {len(rows)} runs; sparsest EGRU activity {sparsest['activity']:.3f}, "
          f"accuracy {sparsest['test_accuracy']:.3f} (dense GRU {gru_acc:.3f}), forward "
          f"energy saving {sparsest['energy_dense_fwd_j'] / sparsest['energy_fwd_j']:.1f}x")


if __name__ == "__main__":
    main()
