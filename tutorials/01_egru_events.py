"""Tutorial 1: one EGRU population, its events and a raster.

An event-based GRU (EGRU) unit integrates its input like a GRU, but it sends
its value to other units only when its internal "membrane" value crosses a
threshold: the output is a train of graded events, and a silent unit costs
nothing downstream. In this tutorial you

1. build a network with an analog input and one EGRU population,
2. attach three monitors to the population: events, state and activity,
3. run it and read the results: how many events, which units fired when,
   how much work the event-driven kernels did compared with a dense GRU,
4. draw a raster of the events, traces of the membrane value, and the
   fraction of active units over time.

Run it with ``python tutorials/01_egru_events.py [FIGURE_FOLDER]``; the
figures go to FIGURE_FOLDER, or to ``$EVSIM_TUTORIAL_OUT``, or to a new
temporary folder. It takes a few seconds on a laptop CPU.
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

    # --- 1. The input --------------------------------------------------------
    # Four sine waves of different periods, 300 steps, two samples in a batch
    # (the second sample has a phase shift). Arrays in evsim are time-major:
    # (T, B, N) = (steps, samples, units).
    T, B, n_in = 300, 2, 4
    t = np.arange(T)[:, None, None]
    periods = np.array([20.0, 35.0, 60.0, 110.0])
    phase = np.linspace(0.0, 1.0, B)[None, :, None]
    x = np.sin(2 * np.pi * t / periods + phase).astype(np.float32)
    print(f"input x: shape {x.shape} (T, B, N), dtype {x.dtype}")

    # --- 2. The network ------------------------------------------------------
    # One seed fixes every random draw (weights, thresholds): run the script
    # twice and you get the same events.
    net = evsim.Network(seed=0, progress=False)
    net.add(evsim.DenseInput("x", size=n_in))
    net.add(evsim.EGRU("egru", size=64, thr_mean=0.3))
    # A dense projection from the input to the EGRU's three gates (z, r, g).
    # The EGRU's own recurrent weights R belong to the population itself.
    net.connect("x", "egru")

    # --- 3. Monitors ---------------------------------------------------------
    # events: one record per event (step, unit, sample, value)
    # state: the membrane value v of four units, every step
    # activity: the fraction of the 64 units that fired, per step
    events = net.monitor("egru", "events")
    states = net.monitor("egru", "state", variables=["v"], units=[0, 1, 2, 3], every=1)
    activity = net.monitor("egru", "activity")

    # --- 4. Run ---------------------------------------------------------------
    result = net.run({"x": x})
    y = result.outputs["egru"]  # (T, B, 64) graded events: 0 where a unit was silent
    stats = result.stats["egru"]
    print(f"EGRU outputs: shape {y.shape}; {events.n_events} events recorded "
          f"({np.count_nonzero(y)} non-zero outputs)")
    print(f"activity: {activity.mean_activity:.3f} of unit-steps carry an event")
    if stats.get("fwd_macs_dense"):
        # counted by the kernels: the recurrent product only over units that
        # fired at the previous step (plus the dense input projection)
        print(f"forward work: {stats['fwd_macs']:,} multiply-adds done, "
              f"{stats['fwd_macs_dense']:,} for the dense equivalent "
              f"({stats['fwd_macs'] / stats['fwd_macs_dense']:.1%})")

    # Spike trains: for each unit, the steps at which it fired (sample 0).
    trains = events.spike_trains(batch=0)
    busiest = sorted(trains, key=lambda u: -len(trains[u]))[:3]
    for u in busiest:
        print(f"unit {u:2d} fired {len(trains[u]):3d} times, first at steps {trains[u][:6]}")
    # Event counts per sample and unit, and the events back as a dense array.
    counts = events.counts()
    print(f"events per sample: {counts.sum(axis=1)}; silent units in sample 0: "
          f"{int(np.sum(counts[0] == 0))} of 64")
    assert np.array_equal(events.to_dense(), y)  # the monitor saw exactly the outputs

    # --- 5. Figures -----------------------------------------------------------
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    plot.raster(events, ax=axes[0], batch=0)
    axes[0].set_title("EGRU events, sample 0")
    plot.state_traces(states, "v", ax=axes[1])
    axes[1].set_title("membrane value v of four units")
    plot.activity(activity, ax=axes[2])
    axes[2].set_title("fraction of units active per step")
    fig.tight_layout()
    path = os.path.join(out, "01_egru_raster.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"figure saved to {path}")


if __name__ == "__main__":
    main()
