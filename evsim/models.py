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

__all__ = ["MODELS", "language_model", "regressor", "rnn_name", "sequence_classifier"]

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
