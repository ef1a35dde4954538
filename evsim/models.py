"""Ready-made networks for the usual tasks.

Every builder returns an :class:`evsim.Network` with populations named

* ``"x"``: the input (:class:`~evsim.populations.DenseInput`, or
  :class:`~evsim.populations.Embedding` for language models),
* ``"egru"`` or ``"gru"``: the recurrent population (the name is the model),
* ``"out"``: a linear :class:`~evsim.populations.Readout`,

connected ``x -> rnn -> out``. These are the default names of
:class:`evsim.training.Trainer`.
"""

import numpy as np

__all__ = ["MODELS", "cuba", "language_model", "regressor", "rnn_name", "sequence_classifier"]

MODELS = ("egru", "gru")


def rnn_name(model):
    """Name of the recurrent population in a network built here (the model name)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return model


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _recurrent(model, hidden, egru_options):
    from evsim.populations import EGRU, GRU

    name = rnn_name(model)
    if model == "gru":
        opts = {k: v for k, v in egru_options.items() if k in ("zoneout", "dropconnect")}
        ignored = sorted(k for k, v in egru_options.items()
                         if k not in opts and v is not None)
        if ignored:
            raise ValueError(f"options {ignored} apply to model='egru' only, not to 'gru'")
        return GRU(name, hidden, **opts)
    opts = {k: v for k, v in egru_options.items() if v is not None}
    return EGRU(name, hidden, **opts)


def _build(inp, model, hidden, n_out, seed, dtype, backend, readout_leak, egru_options):
    from evsim.network import Network
    from evsim.populations import Readout

    net = Network(seed=seed, dtype=dtype, backend=backend)
    net.add(inp)
    rnn = net.add(_recurrent(model, hidden, egru_options))
    net.add(Readout("out", size=n_out, leak=readout_leak))
    net.connect(inp.name, rnn.name)
    net.connect(rnn.name, "out")
    return net


def sequence_classifier(n_inputs, hidden, n_classes, model="egru", seed=0, dtype="float32",
                        backend="cpu", readout_leak=None, **egru_options):
    """DenseInput -> EGRU (or GRU) -> Readout; the class is read at the last step.

    Parameters
    ----------
    n_inputs : int
        Input channels per step.
    hidden : int
        Recurrent units.
    n_classes : int
        Readout size.
    model : {"egru", "gru"}
        Event-based GRU or the dense GRU baseline.
    seed : int
        Network seed (initialisation and every random stream).
    dtype : {"float32", "float64"}
    backend : str
        Network backend ("cpu", ...).
    readout_leak : float or None
        Leaky integration of the readout (None: plain linear readout).
    **egru_options
        ``thr_mean``, ``damp``, ``support``, ``zoneout``, ``dropconnect``,
        ``trace_alpha`` for the EGRU (``zoneout``/``dropconnect`` only for the GRU);
        ``None`` values mean the library default.

    Returns
    -------
    evsim.Network
    """
    from evsim.populations import DenseInput

    n_inputs = _check_size("n_inputs", n_inputs)
    hidden = _check_size("hidden", hidden)
    n_classes = _check_size("n_classes", n_classes)
    return _build(DenseInput("x", size=n_inputs), model, hidden, n_classes, seed, dtype,
                  backend, readout_leak, egru_options)


def regressor(n_inputs, hidden, n_outputs=1, model="egru", seed=0, dtype="float32",
              backend="cpu", readout_leak=None, **egru_options):
    """Like :func:`sequence_classifier` with ``n_outputs`` real outputs (e.g. the
    adding problem, read at the last step with a squared error)."""
    return sequence_classifier(n_inputs, hidden, n_outputs, model=model, seed=seed,
                               dtype=dtype, backend=backend, readout_leak=readout_leak,
                               **egru_options)


def language_model(vocab, embed, hidden, model="egru", seed=0, dtype="float32",
                   backend="cpu", **egru_options):
    """Embedding -> EGRU (or GRU) -> Readout over the vocabulary (loss every step).

    Parameters
    ----------
    vocab : int
        Vocabulary size (embedding rows and readout size).
    embed : int
        Embedding width.
    hidden : int
        Recurrent units.
    model, seed, dtype, backend, **egru_options
        As :func:`sequence_classifier`.

    Returns
    -------
    evsim.Network
        Input ``"x"`` takes token ids (T, B) int64.
    """
    from evsim.populations import Embedding

    vocab = _check_size("vocab", vocab)
    embed = _check_size("embed", embed)
    hidden = _check_size("hidden", hidden)
    return _build(Embedding("x", vocab=vocab, size=embed), model, hidden, vocab, seed, dtype,
                  backend, None, egru_options)


def cuba(scale=1, seed=0, dtype="float32", n_exc=3200, n_inh=800, p=0.02):
    """The CUBA network of Vogels & Abbott (2005), as in Brian2's example.

    ``n_exc`` excitatory and ``n_inh`` inhibitory LIF cells (times ``scale``;
    the connection probability is divided by ``scale`` so that each cell keeps
    about 80 inputs), ``tau_mem`` 20 ms, rest potential -49 mV above the
    threshold -50 mV, reset -60 mV, refractory period 5 ms, exponential
    synaptic currents (excitatory 5 ms, inhibitory 10 ms) with weights 1.62 mV
    and -9 mV, connection probability 0.02 for every ordered pair including
    each cell onto itself, initial v uniform in [-60, -50) mV, dt 0.1 ms.
    Populations ``"E"`` and ``"I"``; projections ``E->E``, ``E->I`` (receptor
    "exc") and ``I->E:inh``, ``I->I:inh`` (receptor "inh"), each with a delay of
    one step (a spike moves its targets from the next step on, as in Brian2
    with no synaptic delay).

    Run it with ``net.run(steps=10_000)`` for one second of simulated time.
    """
    from evsim.connectivity import FixedProbability
    from evsim.network import Network
    from evsim.populations import LIF
    from evsim.receptors import Current

    scale = _check_size("scale", scale)
    net = Network(seed=seed, dtype=dtype, dt=0.1)
    cells = dict(tau_mem=20.0, v_rest=-49.0, v_th=-50.0, v_reset=-60.0, refractory=5.0,
                 receptors={"exc": Current(5.0), "inh": Current(10.0)},
                 v_init=("uniform", -60.0, -50.0))
    net.add(LIF("E", n_exc * scale, **cells))
    net.add(LIF("I", n_inh * scale, **cells))
    rule = FixedProbability(p / scale, allow_self=True)
    for src, w, rec in (("E", 60 * 0.27 / 10, "exc"), ("I", -20 * 4.5 / 10, "inh")):
        for tgt in ("E", "I"):
            net.connect(src, tgt, rule=rule, weight=w, receptor=rec, delay=1)
    return net

