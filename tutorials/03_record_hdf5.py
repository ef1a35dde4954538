"""Tutorial 3: record events to an HDF5 file, load them back, read spike trains.

A long run can emit more events than you want to keep in memory. An event
monitor given a ``path`` streams its events to an HDF5 file while the run goes
on: each chunk of steps is appended to the file and flushed to disk, so memory
stays bounded and a crash leaves the file readable up to the last chunk. You
learn to

1. stream the events of an EGRU population to a file, over two runs,
2. load the file back and read spike trains, counts and a dense array,
3. save and load the recordings of a state monitor and an activity monitor,
4. bound the memory of an in-memory monitor with ``max_events``,
5. recognise the error evsim gives for a file that is not one of its own.

Run it with ``python tutorials/03_record_hdf5.py [FOLDER]``: the HDF5 files and
the figure go to FOLDER, or to ``$EVSIM_TUTORIAL_OUT``, or to a temporary
folder. It takes a few seconds.
"""

import os
import sys
import tempfile
import warnings

import matplotlib

matplotlib.use("Agg")  # figures are saved to files, never shown on screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import evsim  # noqa: E402
from evsim import monitors, plot  # noqa: E402
from evsim.io import FileFormatError  # noqa: E402


def output_folder():
    """Where files go: first argument, $EVSIM_TUTORIAL_OUT, or a temp folder."""
    folder = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVSIM_TUTORIAL_OUT")
              or tempfile.mkdtemp(prefix="evsim-tutorial-"))
    os.makedirs(folder, exist_ok=True)
    return folder


def main():
    out = output_folder()
    rng = np.random.default_rng(0)

    # --- 1. A network, and a monitor that streams to a file ---------------------------
    net = evsim.Network(seed=3, progress=False)
    net.add(evsim.DenseInput("x", size=8))
    net.add(evsim.EGRU("egru", size=100))
    net.connect("x", "egru")
    events_path = os.path.join(out, "03_events.h5")
    # append=True: the second run continues the time axis of the first one
    # instead of replacing it (run_starts records where each run began).
    stream = net.monitor("egru", "events", path=events_path, append=True)
    states = net.monitor("egru", "state", variables=["v", "h"], units=[0, 10, 20], every=5,
                         append=True)
    activity = net.monitor("egru", "activity")

    # Two runs of 400 steps on random input, batch of 3 samples. The second
    # run continues from the state the first one ended in (reset=False).
    T, B = 400, 3
    for k in range(2):
        x = rng.normal(0.0, 1.0, (T, B, 8)).astype(np.float32)
        result = net.run({"x": x}, reset=(k == 0))
        print(f"run {k}: {result.stats['egru']['events']} events; the file now holds "
              f"{stream.n_events} events (in memory: none)")
    size_kb = os.path.getsize(events_path) / 1024
    print(f"{events_path}: {size_kb:.0f} KiB")

    # --- 2. Load the events back ---------------------------------------------------
    # Anyone can read the file later, without the network: load_events gives an
    # EventMonitor with the same methods as the live one.
    ev = monitors.load_events(events_path)
    print(f"loaded: {ev.n_events} events over {ev.n_steps} steps, runs start at "
          f"steps {ev.run_starts}, {ev.batch} samples x {ev.n_units} units")
    # Spike trains of sample 1: unit -> steps at which it fired; with
    # values=True, unit -> (steps, event values): EGRU events are graded.
    trains = ev.spike_trains(batch=1, values=True)
    for unit in (0, 1, 2):
        steps, values = trains[unit]
        print(f"  unit {unit}: {steps.size:3d} events; first steps {steps[:5]}, "
              f"values {np.round(values[:3], 3)}")
    counts = ev.counts()   # (B, N): events per sample and unit
    print(f"events per sample: {counts.sum(axis=1)}")
    dense = ev.to_dense()  # (T_total, B, N) with the event values, zero elsewhere
    print(f"dense view: shape {dense.shape}, {np.count_nonzero(dense)} non-zero entries")
    # The raw columns are there too: ev.step, ev.unit, ev.batch_index, ev.value.

    # --- 3. State and activity recordings ----------------------------------------
    states_path = os.path.join(out, "03_states.h5")
    states.save(states_path)               # written atomically: all or nothing
    activity.save(os.path.join(out, "03_activity.h5"))
    back = monitors.load(states_path)      # any monitor file: the right class comes back
    print(f"{type(back).__name__}: variables {list(back.variables)}, "
          f"v has shape {back.data['v'].shape} (records, samples, units), "
          f"taken every {back.every} steps")

    # --- 4. Bounded memory ---------------------------------------------------------
    # Without a file, max_events caps memory: the first events are kept, the
    # rest are counted in n_dropped, and a warning says what to do.
    capped = net.monitor("egru", "events", max_events=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.run({"x": x})
    print(f"capped monitor: kept {capped.n_events}, dropped {capped.n_dropped}; "
          f"warning: {caught[0].message}" if caught else "no overflow")

    # --- 5. A file that is not an evsim recording ---------------------------------
    bogus = os.path.join(out, "03_not_hdf5.h5")
    with open(bogus, "w") as f:
        f.write("just text\n")
    try:
        monitors.load_events(bogus)
    except FileFormatError as err:
        print(f"FileFormatError: {err}")

    # --- 6. Figure from the file alone --------------------------------------------
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    plot.raster(ev, ax=axes[0], batch=1)
    for start in ev.run_starts[1:]:
        axes[0].axvline(start, color="tab:red", lw=1)
    axes[0].set_title("events of sample 1 loaded from HDF5 (red: start of run 2)")
    plot.state_traces(back, "v", ax=axes[1], batch=1)
    axes[1].set_title("v of three units, every 5 steps, loaded from HDF5")
    fig.tight_layout()
    path = os.path.join(out, "03_from_file.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"figure saved to {path}")


if __name__ == "__main__":
    main()
