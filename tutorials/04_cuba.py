"""Tutorial 4: the CUBA network (Vogels & Abbott 2005), the field's benchmark.

Brian2, NEST and most spiking simulators ship this network as an example:
4000 leaky integrate-and-fire cells, 3200 excitatory and 800 inhibitory,
each pair connected with probability 2 % (a cell may even connect to
itself), exponentially decaying synaptic currents (5 ms excitatory, 10 ms
inhibitory). The rest potential (-49 mV) lies *above* the threshold
(-50 mV): left alone, every cell would fire like a clock. Recurrent
inhibition keeps the network in an asynchronous, irregular state where
cells fire at a few Hz with irregular intervals.

You learn to

1. build LIF populations with a rest potential, a refractory period and two
   named receptors (``Current(tau)``), with potentials in mV and dt = 0.1 ms,
2. connect populations with a connectivity rule (``FixedProbability``),
   onto a receptor, including each population onto itself (delay >= 1 step),
3. draw initial membrane potentials from a distribution,
4. run the whole simulation in the compiled loop (``schedule="compiled"``,
   which ``"auto"`` picks for spiking networks) and stream spikes to monitors,
5. measure firing rates and the irregularity of spike trains (the CV of the
   inter-spike intervals), and draw a raster and the population rate.

Every parameter is the one of Brian2's ``examples/CUBA.py``; the network is
also built by ``evsim.models.cuba()``, which ``benchmarks/brian2_compare.py``
runs against Brian2.

Run it with ``python tutorials/04_cuba.py [FIGURE_FOLDER]``.
"""

import os
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")  # figures are saved to files, never shown on screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import evsim  # noqa: E402
from evsim import plot  # noqa: E402


def figure_folder():
    """Where the figures go: first argument, $EVSIM_TUTORIAL_OUT, or a temp folder."""
    folder = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVSIM_TUTORIAL_OUT")
              or tempfile.mkdtemp(prefix="evsim-tutorial-"))
    os.makedirs(folder, exist_ok=True)
    return folder


def build(seed=0):
    """The CUBA network, step by step (the same as evsim.models.cuba(seed=seed))."""
    # dt in ms: time constants and the refractory period below are in ms too.
    net = evsim.Network(seed=seed, dt=0.1, progress=False)

    # --- 1. Cells ----------------------------------------------------------------
    # tau_mem dv/dt = -(v - v_rest) + I_exc + I_inh, the currents in mV decaying
    # with their own time constants. A spike when v > v_th, then v = v_reset,
    # held there for the refractory period. v_init: uniform in [v_reset, v_th).
    cells = dict(tau_mem=20.0, v_rest=-49.0, v_th=-50.0, v_reset=-60.0, refractory=5.0,
                 receptors={"exc": evsim.Current(tau=5.0), "inh": evsim.Current(tau=10.0)},
                 v_init=("uniform", -60.0, -50.0))
    net.add(evsim.LIF("E", 3200, **cells))
    net.add(evsim.LIF("I", 800, **cells))

    # --- 2. Synapses -------------------------------------------------------------
    # Every ordered pair (i, j), i == j included, with probability 0.02: about
    # 80 inputs per cell, 320,000 synapses in all. A spike adds its weight (mV)
    # to the target's receptor: +1.62 mV on "exc", -9 mV on "inh". A delay of
    # one step: a spike moves its targets from the next step on (Brian2's
    # default, no synaptic delay, works the same way).
    rule = evsim.FixedProbability(0.02, allow_self=True)
    w_exc, w_inh = 60 * 0.27 / 10, -20 * 4.5 / 10
    for target in ("E", "I"):
        net.connect("E", target, rule=rule, weight=w_exc, receptor="exc", delay=1)
        net.connect("I", target, rule=rule, weight=w_inh, receptor="inh", delay=1)
    return net


def cv_isi(monitor, dt_ms):
    """Coefficient of variation of the inter-spike intervals of each cell with
    at least three spikes (1 for a Poisson process, 0 for a clock)."""
    cvs = []
    for steps in monitor.spike_trains(batch=0).values():
        isi = np.diff(steps) * dt_ms
        if isi.size >= 2:
            cvs.append(isi.std() / isi.mean())
    return np.array(cvs)


def main():
    out = figure_folder()
    net = build(seed=0)
    for name, proj in net.projections.items():
        print(f"projection {name:9s}: {proj.nnz:6d} synapses onto receptor {proj.receptor!r}")

    # --- 3. Monitors ---------------------------------------------------------------
    spikes_e = net.monitor("E", "events")
    spikes_i = net.monitor("I", "events")
    membrane = net.monitor("E", "state", variables=["v"], units=[0, 1, 2])

    # --- 4. One second: 10,000 steps of 0.1 ms ---------------------------------------
    # The first run of a session compiles the loop (a few seconds, cached on
    # disk afterwards); a short run first keeps compilation out of the timing.
    build(seed=0).run(steps=10)
    t0 = time.perf_counter()
    result = net.run(steps=10_000, record_outputs=False)
    wall = time.perf_counter() - t0
    print(f"schedule: {result.schedule}; 1 s of simulated time in {wall:.3f} s")

    # --- 5. Rates and irregularity --------------------------------------------------------
    n_spikes = spikes_e.n_events + spikes_i.n_events
    rate = n_spikes / 4000 / 1.0   # spikes per cell per second
    rates_e = spikes_e.rates(dt=1e-4)[0]
    rates_i = spikes_i.rates(dt=1e-4)[0]
    print(f"excitatory cells: mean rate {rates_e.mean():.2f} Hz; inhibitory: "
          f"{rates_i.mean():.2f} Hz")
    cvs = np.concatenate([cv_isi(spikes_e, 0.1), cv_isi(spikes_i, 0.1)])
    print(f"ISI CV: median {np.median(cvs):.2f} over {cvs.size} cells (irregular firing: "
          f"close to 1)")

    # --- 6. Raster and population rate ---------------------------------------------------
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True,
                             gridspec_kw=dict(height_ratios=[3, 1.2, 1.5]))
    plot.raster(spikes_e, ax=axes[0], dt=0.1, s=1, linewidths=0, color="tab:blue")
    # inhibitory cells drawn above the excitatory ones (cells 3200-3999)
    axes[0].scatter(spikes_i.step * 0.1, spikes_i.unit + 3200, s=1, linewidths=0,
                    color="tab:red")
    axes[0].set_title("spikes (blue: excitatory cells, red: inhibitory cells)")
    counts = np.bincount(np.concatenate([spikes_e.step, spikes_i.step]), minlength=10_000)
    bins = counts.reshape(-1, 10).sum(1)                      # 1 ms bins
    axes[1].plot(np.arange(bins.size) + 0.5, bins / 4000 / 1e-3, lw=0.8)
    axes[1].set_ylabel("rate (Hz)")
    axes[1].set_title("population rate (1 ms bins)")
    plot.state_traces(membrane, "v", ax=axes[2], dt=0.1)
    axes[2].set_title("membrane potential of three excitatory cells (mV)")
    axes[2].set_xlabel("time (ms)")
    fig.tight_layout()
    path = os.path.join(out, "04_cuba.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"figure saved to {path}")
    print(f"CUBA rate_hz={rate:.3f} cv_isi={np.median(cvs):.3f} wall_s={wall:.3f} "
          f"spikes={n_spikes}")


if __name__ == "__main__":
    main()
