"""Tutorial 2: an excitatory-inhibitory network of LIF neurons.

evsim is not only for EGRUs: it also simulates classic spiking neurons. Here
you build a small network in the style of computational neuroscience:

* 200 Poisson input neurons firing at 20 Hz,
* 400 excitatory and 100 inhibitory leaky integrate-and-fire (LIF) neurons,
* random sparse connections (each pair connected with a fixed probability)
  with constant weights: positive from excitatory cells, negative from
  inhibitory ones. The excitatory cells drive the inhibitory cells, which
  inhibit them back: a loop between two populations.

You learn to

1. build populations with time constants in ms and a step ``dt`` of 1 ms,
2. make sparse projections and set their weights through ``net.params()``,
3. record spikes and membrane potentials and the population activity,
4. compute firing rates (Hz) and the irregularity of the spike trains,
5. draw rasters and population rates.

The two LIF populations form a cycle: each projection inside it carries the
spikes of the previous step. A network of spiking populations runs its whole
time loop in compiled code (``result.schedule == "compiled"``), so one second
of simulated time takes a fraction of a second. Tutorial 4 builds a larger,
classic network (CUBA) with receptors, refractoriness and self-connections.

Run it with ``python tutorials/02_ei_lif_network.py [FIGURE_FOLDER]``.
"""

import os
import sys
import tempfile

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


def main():
    out = figure_folder()
    dt_ms = 1.0      # one step = 1 ms
    T = 1000         # 1 s of simulated time

    # --- 1. Populations --------------------------------------------------------
    # LIF: synaptic current (tau_syn) feeds the membrane (tau_mem); a spike
    # when the membrane exceeds v_th = 1, then reset to 0. Inhibitory cells
    # are faster (shorter membrane time constant), as fast-spiking interneurons.
    net = evsim.Network(seed=1, dt=dt_ms, progress=False)
    net.add(evsim.PoissonInput("poisson", size=200, rates=20.0))   # Hz, since dt is in ms
    net.add(evsim.LIF("exc", size=400, tau_mem=20.0, tau_syn=5.0, v_th=1.0, v_reset=0.0))
    net.add(evsim.LIF("inh", size=100, tau_mem=10.0, tau_syn=5.0, v_th=1.0, v_reset=0.0))

    # --- 2. Sparse random connections -----------------------------------------
    # kind="sparse", p=...: each pair (source, target) is connected with
    # probability p; the weights are a CSR matrix, one row per source neuron.
    net.connect("poisson", "exc", kind="sparse", p=0.2)
    net.connect("poisson", "inh", kind="sparse", p=0.2)
    net.connect("exc", "inh", kind="sparse", p=0.1)
    net.connect("inh", "exc", kind="sparse", p=0.2)
    # net.params() returns the live parameter arrays; for a sparse projection
    # "W" holds the values of the existing connections. Writing into them sets
    # the weights: constant, positive (excitatory) or negative (inhibitory).
    params = net.params()
    params["poisson->exc.W"][:] = 0.30
    params["poisson->inh.W"][:] = 0.15
    params["exc->inh.W"][:] = 0.10
    params["inh->exc.W"][:] = -0.10
    for name, proj in net.projections.items():
        print(f"projection {name:14s}: {proj.nnz:6d} synapses, weight "
              f"{float(params[name + '.W'][0]):+.2f}")

    # --- 3. Monitors -------------------------------------------------------------
    spikes_e = net.monitor("exc", "events")
    spikes_i = net.monitor("inh", "events")
    membrane = net.monitor("exc", "state", variables=["v"], units=[0, 1, 2])
    act_e = net.monitor("exc", "activity")
    act_i = net.monitor("inh", "activity")

    # --- 4. Run one second -------------------------------------------------------
    # Only a Poisson input: nothing to pass but the number of steps.
    result = net.run({}, steps=T)
    print(f"schedule: {result.schedule}; {result.wall_s:.2f} s of wall-clock time for "
          f"{T * dt_ms / 1000:.1f} s of simulated time")

    # --- 5. Firing rates ----------------------------------------------------------
    # rates(dt) = spike count / (steps * dt): with dt in seconds, in Hz.
    rate_e = spikes_e.rates(dt=dt_ms / 1000)[0]   # (400,) for sample 0
    rate_i = spikes_i.rates(dt=dt_ms / 1000)[0]
    print(f"excitatory: {spikes_e.n_events} spikes, mean rate {rate_e.mean():5.1f} Hz "
          f"(silent cells: {int(np.sum(rate_e == 0))})")
    print(f"inhibitory: {spikes_i.n_events} spikes, mean rate {rate_i.mean():5.1f} Hz")

    # Irregularity: the coefficient of variation (CV) of the inter-spike
    # intervals; 1 for a Poisson process, 0 for a clock.
    cvs = []
    for steps in spikes_e.spike_trains(batch=0).values():
        isi = np.diff(steps) * dt_ms
        if isi.size >= 3:
            cvs.append(isi.std() / isi.mean())
    if cvs:
        print(f"ISI CV of excitatory cells: median {np.median(cvs):.2f} over {len(cvs)} cells")

    # Population rate: fraction of cells active per step / dt, in Hz.
    pop_rate_e = act_e.activity / (dt_ms / 1000)
    print(f"excitatory population rate: mean {pop_rate_e.mean():.1f} Hz, "
          f"max {pop_rate_e.max():.0f} Hz")

    # --- 6. Figures -----------------------------------------------------------------
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True,
                             gridspec_kw=dict(height_ratios=[3, 1.2, 1.5, 1.5]))
    plot.raster(spikes_e, ax=axes[0], dt=dt_ms, s=1.5, color="tab:blue")
    axes[0].set_title("excitatory spikes")
    plot.raster(spikes_i, ax=axes[1], dt=dt_ms, s=1.5, color="tab:red")
    axes[1].set_title("inhibitory spikes")
    plot.state_traces(membrane, "v", ax=axes[2], dt=dt_ms)
    axes[2].set_title("membrane potential of three excitatory cells")
    plot.activity([act_e, act_i], ax=axes[3], dt=dt_ms)
    axes[3].set_title("fraction of cells spiking per 1 ms step")
    axes[3].set_xlabel("time (ms)")
    fig.tight_layout()
    path = os.path.join(out, "02_ei_raster.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"figure saved to {path}")


if __name__ == "__main__":
    main()
