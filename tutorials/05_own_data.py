"""Tutorial 5: train an EGRU classifier on your own NumPy arrays.

The other tutorials use evsim's bundled data sets. Here the data are plain
NumPy arrays of the kind you would load from your own files: a list of
sequences of different lengths, each of shape (steps, channels), and one
integer label per sequence. In this tutorial you

1. make such data (synthetic, with a rule the network can learn),
2. pad the ragged sequences into one array and keep their lengths,
3. wrap arrays and labels in an ``evsim.data.Dataset`` and split it,
4. train an EGRU classifier with ``evsim.Trainer`` for a few epochs,
5. evaluate it on the test part and read the counters: accuracy, activity,
   and the multiply-adds done compared with a dense GRU,
6. predict labels and class probabilities for new arrays,
7. save a figure of the training curve and the accuracy per length.

Run it with ``python tutorials/05_own_data.py [FIGURE_FOLDER]``; the figure
goes to FIGURE_FOLDER, or to ``$EVSIM_TUTORIAL_OUT``, or to a new temporary
folder. It takes about ten seconds on a laptop CPU (most of it compiling).
"""

import os
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")  # figures are saved to files, never shown on screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import evsim  # noqa: E402
from evsim import data, models  # noqa: E402


def figure_folder():
    """Where the figures go: first argument, $EVSIM_TUTORIAL_OUT, or a temp folder."""
    folder = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVSIM_TUTORIAL_OUT")
              or tempfile.mkdtemp(prefix="evsim-tutorial-"))
    os.makedirs(folder, exist_ok=True)
    return folder


def make_sequences(n, rng):
    """``n`` noisy sequences of 5..30 steps and 3 channels; the label is the
    channel whose values add up to the most over the whole sequence.

    A stand-in for your own data: any list of (steps, channels) arrays and
    integer labels 0..n_classes-1 goes through the same steps below."""
    seqs, labels = [], []
    for _ in range(n):
        steps = int(rng.integers(5, 31))
        label = int(rng.integers(3))
        x = rng.normal(0.0, 1.0, size=(steps, 3))
        x[:, label] += 0.6  # the labelled channel is a little higher on average
        seqs.append(x.astype(np.float32))
        labels.append(int(np.argmax(x.sum(axis=0))))  # the rule, exactly
    return seqs, np.array(labels)


def main():
    out = figure_folder()
    rng = np.random.default_rng(0)

    # --- 1. Your data: a list of arrays of different lengths ------------------
    seqs, labels = make_sequences(1500, rng)
    print(f"{len(seqs)} sequences, lengths {min(map(len, seqs))}..{max(map(len, seqs))}, "
          f"{seqs[0].shape[1]} channels; class counts {np.bincount(labels)}")

    # --- 2. Pad to one array (N, T, I) and keep the lengths --------------------
    # Steps after a sequence's length are padding: the loss, the metrics and
    # predict() read each sequence at its own last step, never the padding.
    x, lengths = data.pad_sequences(seqs)
    print(f"padded x: shape {x.shape} (samples, steps, inputs); lengths {lengths[:6]} ...")

    # --- 3. A Dataset, split into train / validation / test -------------------
    # from_arrays takes samples-first arrays (layout="NTI", as pad_sequences
    # returns them). Time-first arrays (T, N, I), the layout Network.forward
    # uses, go in with layout="TBI"; mixing them up gives an error that says
    # which layout was assumed.
    ds = data.Dataset.from_arrays(x, labels, lengths=lengths, n_classes=3, name="my-data")
    train, valid, test = ds.split((0.7, 0.1, 0.2), seed=0)
    print(f"split: {len(train)} train, {len(valid)} valid, {len(test)} test")

    # --- 4. Model and training -------------------------------------------------
    # 3 inputs -> 32 EGRU units -> 3 classes, read at each sequence's last step.
    # The activity regulariser (strength > 0) pushes the mean EGRU output of
    # every unit towards activity_target (a mean output in [0, 1], not a
    # fraction of steps): fewer events, less work.
    net = models.sequence_classifier(3, 32, 3, seed=0)
    trainer = evsim.Trainer(net, optimizer="adam", lr=1e-2, batch_size=32,
                            activity_target=0.05, activity_strength=1.0,
                            progress=False, log=print)
    history = trainer.fit(train, valid, epochs=6)

    # --- 5. Evaluate: the metric and the counters ------------------------------
    # evaluate() returns a dict: loss, accuracy, activity (fraction of
    # unit-steps with an event), and the multiply-adds the event-driven kernels
    # did (fwd_macs) next to what a dense GRU of the same size needs
    # (fwd_macs_dense). measure_backward=True also runs a backward pass per
    # batch (no update) to count bwd_macs and the backward sparsity.
    r = trainer.evaluate(test, measure_backward=True)
    print(f"test accuracy {r['accuracy']:.3f}, loss {r['loss']:.3f}")
    print(f"activity {r['activity']:.3f} of unit-steps carry an event; backward "
          f"sparsity {r['backward_sparsity']:.3f}")
    print(f"forward: {r['fwd_macs']:,} multiply-adds done, {r['fwd_macs_dense']:,} dense "
          f"({r['fwd_macs'] / r['fwd_macs_dense']:.1%}); backward: {r['bwd_macs']:,} of "
          f"{r['bwd_macs_dense']:,} ({r['bwd_macs'] / r['bwd_macs_dense']:.1%})")

    # --- 6. Predict on new arrays -----------------------------------------------
    new_seqs, new_labels = make_sequences(200, np.random.default_rng(1))
    new_x, new_lengths = data.pad_sequences(new_seqs)
    predicted = trainer.predict(new_x, lengths=new_lengths)  # (N,) class labels
    probs = trainer.predict(new_x, lengths=new_lengths, output="probs")  # (N, 3)
    print(f"new data: {np.mean(predicted == new_labels):.3f} predicted right; first "
          f"sample: label {new_labels[0]}, probabilities {np.round(probs[0], 3)}")

    # --- 7. Figure ---------------------------------------------------------------
    test_pred = trainer.predict(test)
    bins = np.array([5, 10, 15, 20, 25, 31])
    which = np.digitize(test.lengths, bins) - 1
    acc_by_len = [np.mean(test_pred[which == k] == test.y[which == k])
                  for k in range(len(bins) - 1)]
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    axes[0].plot(epochs, [h["valid_accuracy"] for h in history], "s-", label="valid")
    axes[0].plot(epochs, [h["train_activity"] for h in history], "^--", label="activity")
    axes[0].set_xlabel("epoch")
    axes[0].set_title("accuracy and activity")
    axes[0].legend()
    axes[1].bar([f"{a}-{b - 1}" for a, b in zip(bins[:-1], bins[1:])], acc_by_len)
    axes[1].set_xlabel("sequence length (steps)")
    axes[1].set_title("test accuracy by length")
    axes[1].set_ylim(0, 1)
    fig.tight_layout()
    path = os.path.join(out, "05_own_data.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"figure saved to {path}")


if __name__ == "__main__":
    main()
