"""Tutorial 6: evsim's EGRU as a PyTorch layer in an ordinary training loop.

``evsim.torch.EGRU`` is an ``nn.Module`` with the parameters of
``torch.nn.GRU`` (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, gate order r, z, n) plus trainable ``threshold``. Its forward
pass and back-propagation through time run in evsim's event-driven kernels,
so it drops into any torch model, optimiser and DataLoader. In this tutorial you

1. make a small synthetic task: which of two noisy input channels has the
   larger mean over the sequence (a memory task: the answer needs the whole
   sequence),
2. train an EGRU and, for comparison, a ``torch.nn.GRU`` of the same size with
   the same loop (Adam, DataLoader, cross-entropy on a linear readout),
3. read the layer's counters (``last_stats``): activity and multiply-adds done
   against a dense GRU's,
4. compare accuracy and time per epoch, and plot the training curves.

The thresholds are kept in a valid range by ``clamp_thresholds_()`` after each
optimiser step (the layer never changes its parameters in ``forward``).

Run it with ``python tutorials/06_torch_layer.py [FIGURE_FOLDER]``; the figure
goes to FIGURE_FOLDER, or to ``$EVSIM_TUTORIAL_OUT``, or to a new temporary
folder. It needs torch (``pip install evsim[torch]``) and takes about half a
minute on a laptop CPU.
"""

import os
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")  # figures are saved to files, never shown on screen

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import evsim.torch  # noqa: E402

T, IN, H, CLASSES = 40, 2, 64, 2
EPOCHS, BATCH = 6, 32


def figure_folder():
    """Where the figures go: first argument, $EVSIM_TUTORIAL_OUT, or a temp folder."""
    folder = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVSIM_TUTORIAL_OUT")
              or tempfile.mkdtemp(prefix="evsim-tutorial-"))
    os.makedirs(folder, exist_ok=True)
    return folder


def make_data(n, generator):
    """(n, T, 2) noisy channels and a label: 1 where channel 1 has the larger mean."""
    means = 0.3 * torch.randn(n, 1, IN, generator=generator)
    x = means + torch.randn(n, T, IN, generator=generator)
    y = (x[:, :, 1].mean(1) > x[:, :, 0].mean(1)).long()
    return x, y


class Classifier(nn.Module):
    """A recurrent layer (batch-first) and a linear readout of the time-averaged
    output: for the EGRU, the mean of its graded events."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.readout = nn.Linear(H, CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.readout(out.mean(dim=1))


def train(model, train_loader, test_data, egru=None):
    """An ordinary torch loop; returns per-epoch losses, accuracies and seconds,
    and the EGRU's counters of the last training batch (forward and backward)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, accs, secs, stats = [], [], [], None
    for _ in range(EPOCHS):
        model.train()
        t0 = time.perf_counter()
        total = 0.0
        for xb, yb in train_loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if egru is not None:
                egru.clamp_thresholds_()  # the projection step of the thresholds
                stats = dict(egru.last_stats)
            total += loss.item() * len(yb)
        secs.append(time.perf_counter() - t0)
        losses.append(total / len(train_loader.dataset))
        model.eval()
        with torch.no_grad():
            xt, yt = test_data
            accs.append((model(xt).argmax(1) == yt).float().mean().item())
    return losses, accs, secs, stats


def main():
    out = figure_folder()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    gen = torch.Generator().manual_seed(1)
    x_train, y_train = make_data(1024, gen)
    test = make_data(512, gen)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=BATCH, shuffle=True)

    # --- 1. the two models: same sizes, same loop --------------------------------
    egru = evsim.torch.EGRU(IN, H, batch_first=True, thr_mean=0.2)
    gru = nn.GRU(IN, H, batch_first=True)
    print(egru)

    # --- 2. train both ------------------------------------------------------------
    e_loss, e_acc, e_sec, stats = train(Classifier(egru), loader, test, egru=egru)
    g_loss, g_acc, g_sec, _ = train(Classifier(gru), loader, test)
    for name, acc, sec in (("EGRU", e_acc, e_sec), ("GRU", g_acc, g_sec)):
        print(f"{name:4s}: test accuracy per epoch {[round(a, 3) for a in acc]}; "
              f"seconds per epoch {sum(sec[1:]) / max(1, len(sec) - 1):.2f} "
              f"(first epoch {sec[0]:.2f})")
    print(f"time per epoch, EGRU / GRU: {sum(e_sec[1:]) / sum(g_sec[1:]):.2f} "
          "(the EGRU's first epoch includes compiling evsim's kernels)")

    # --- 3. the layer's counters --------------------------------------------------
    print(f"activity {stats['activity']:.1%} of unit-steps; recurrent multiply-adds "
          f"{stats['fwd_macs']:,} done, {stats['fwd_macs_dense']:,} for a dense GRU "
          f"({stats['fwd_macs'] / stats['fwd_macs_dense']:.1%}); backward "
          f"{stats['bwd_macs']:,} done ({stats['bwd_macs_event']:,} needed by sparse BPTT) "
          f"of {stats['bwd_macs_dense']:,}; backward sparsity "
          f"{stats['backward_sparsity']:.1%}")

    # --- 4. figure ----------------------------------------------------------------
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, EPOCHS + 1)
    axes[0].plot(epochs, e_loss, "o-", label="evsim.torch.EGRU")
    axes[0].plot(epochs, g_loss, "s-", label="torch.nn.GRU")
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[0].legend()
    axes[1].plot(epochs, e_acc, "o-", label="EGRU")
    axes[1].plot(epochs, g_acc, "s-", label="GRU")
    axes[1].set(xlabel="epoch", ylabel="test accuracy")
    fig.tight_layout()
    path = os.path.join(out, "06_torch_layer.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"figure saved to {path}")
    print(f"EGRU test accuracy {e_acc[-1]:.1%} (GRU {g_acc[-1]:.1%})")


if __name__ == "__main__":
    main()
