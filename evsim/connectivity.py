"""Connectivity rules: which synapses a projection has.

A rule decides the list of synapses ``(pre[s], post[s])`` from a source
population of ``n_pre`` units onto a target of ``n_post`` units, in the spirit
of Brian2's ``Synapses.connect(p=...)`` and NEST's ``conn_spec``::

    >>> import numpy as np
    >>> from evsim.connectivity import FixedProbability
    >>> rule = FixedProbability(0.1, allow_self=False)
    >>> pre, post = rule.synapses(100, 100, np.random.default_rng(0), same_population=True)

Every rule returns two int64 arrays of the same length ``nnz``, sorted by
``(pre, post)`` (row-major, the order of a CSR matrix with one row per source
unit) and with no pair twice. The rules:

=====================  =====================================================
``FixedProbability``   each pair independently with probability ``p``
``FixedInDegree``      every target gets exactly ``k`` distinct sources
``FixedOutDegree``     every source gets exactly ``k`` distinct targets
``OneToOne``           ``i -> i``
``AllToAll``           every pair
``FromList``           explicit arrays, optionally with weights and delays
=====================  =====================================================

``allow_self=False`` matters only when the projection goes from a population
onto itself (``same_population=True``): then the pairs ``i -> i`` are left
out and every other pair keeps its probability (or the degree ``k`` counts only
the other units).

Rules are saved as small JSON-able dicts (:meth:`Rule.config`) and rebuilt by
:func:`rule_from_config`; :data:`RULES` maps each ``"rule"`` name to its class.

Memory and time scale with the number of synapses, never with
``n_pre * n_post`` (except for the dense regime of the degree rules, where the
two are within a factor of four): :class:`FixedProbability` jumps from one
synapse to the next by geometric skips over the flattened pair index.
"""

import inspect
import math

import numpy as np

__all__ = [
    "Rule",
    "FixedProbability",
    "FixedInDegree",
    "FixedOutDegree",
    "OneToOne",
    "AllToAll",
    "FromList",
    "RULES",
    "rule_from_config",
]

# Degree rules draw k distinct values out of m by rejection (draw, then redraw
# the duplicates) while k < DENSE_FRACTION * m; from there on they rank m random
# keys per unit, which costs m per unit but no more than 1 / DENSE_FRACTION times
# the output. Tests patch this to force each branch.
DENSE_FRACTION = 0.25

# Largest n_pre * n_post: flattened pair indices must fit in int64.
_MAX_PAIRS = 2**62


# --------------------------------------------------------------------------
# Argument checks (each message names the rule, the argument, what was
# expected and what was given)


def _check_bool(where, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def _check_int(where, name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_probability(where, name, value):
    real = (int, float, np.integer, np.floating)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, real):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    value = float(value)
    if not 0 < value <= 1:  # also refuses NaN
        raise ValueError(f"{where}: {name} must be in (0, 1], got {value}")
    return value


def _index_array(where, name, value):
    """A 1-d array of non-negative integers, returned as int64 (not yet range-checked)."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{where}: {name} must be a 1-d array, got shape {arr.shape}")
    if arr.size == 0 and arr.dtype == np.float64:  # np.asarray([]) is float64
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{where}: {name} must hold integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{where}: {name} must be >= 0, got {arr.min()} at position "
                         f"{int(np.argmin(arr))}")
    if arr.size and arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{where}: {name} holds {arr.max()}, too large for int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


# --------------------------------------------------------------------------
# Sampling helpers (arrays in, arrays out)


def _bernoulli_positions(rng, total, p, chunk=None):
    """Keep each index of ``range(total)`` independently with probability ``p``.

    Parameters
    ----------
    rng : numpy.random.Generator
    total : int
        Number of candidate positions.
    p : float
        Probability in (0, 1].
    chunk : int, optional
        Gaps drawn at a time; by default enough that one draw almost always
        reaches ``total`` (tests pass a small value to exercise the loop).

    Returns
    -------
    numpy.ndarray
        int64 (nnz,), strictly increasing positions in ``[0, total)``.

    Notes
    -----
    The gap from one kept position to the next is geometric with parameter
    ``p``, so drawing the gaps and summing them visits only the kept positions:
    time and memory are proportional to ``p * total``, and the result comes out
    sorted and free of duplicates.
    """
    if total == 0:
        return np.empty(0, dtype=np.int64)
    if p == 1.0:
        return np.arange(total, dtype=np.int64)
    parts = []
    last = -1  # the last kept position so far
    while True:
        if chunk is None:
            mean = (total - 1 - last) * p
            size = int(mean + 6.0 * math.sqrt(mean) + 16)
        else:
            size = chunk
        pos = np.cumsum(rng.geometric(p, size=size))
        pos += last
        if pos[-1] >= total:
            parts.append(pos[:np.searchsorted(pos, total)])
            break
        parts.append(pos)
        last = int(pos[-1])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _distinct_draws(rng, n_groups, k, m):
    """For each of ``n_groups`` groups, ``k`` distinct integers chosen uniformly in ``[0, m)``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_groups : int
        Number of independent groups (the units whose degree is fixed).
    k : int
        Values per group, ``0 <= k <= m``.
    m : int
        Size of the range drawn from.

    Returns
    -------
    numpy.ndarray
        int64 (n_groups, k); each row sorted ascending with no repeats, and every
        k-subset of ``[0, m)`` equally likely.

    Notes
    -----
    Sparse regime (``k < DENSE_FRACTION * m``): draw ``k`` values with
    replacement, then redraw the duplicates of the rows that have any, until no
    row has one. The procedure treats all values alike, so the subset is
    uniform; a redrawn value collides with probability below
    ``k / m < DENSE_FRACTION``, so few rounds are needed. Dense regime: rank
    ``m`` uniform keys per group and keep the ``k`` smallest (a random
    permutation's first ``k``).
    """
    if k == 0 or n_groups == 0:
        return np.empty((n_groups, k), dtype=np.int64)
    if k == m:
        return np.broadcast_to(np.arange(m, dtype=np.int64), (n_groups, m)).copy()
    if k >= DENSE_FRACTION * m:
        keys = rng.random((n_groups, m))
        out = np.argpartition(keys, k - 1, axis=1)[:, :k].astype(np.int64, copy=False)
        out.sort(axis=1)
        return out
    out = rng.integers(0, m, size=(n_groups, k), dtype=np.int64)
    out.sort(axis=1)
    bad = np.flatnonzero((out[:, 1:] == out[:, :-1]).any(axis=1))
    while bad.size:
        sub = out[bad]
        dup = np.zeros(sub.shape, dtype=bool)
        dup[:, 1:] = sub[:, 1:] == sub[:, :-1]
        sub[dup] = rng.integers(0, m, size=int(dup.sum()), dtype=np.int64)
        sub.sort(axis=1)
        out[bad] = sub
        bad = bad[(sub[:, 1:] == sub[:, :-1]).any(axis=1)]
    return out


def _skip_diagonal(values, owner):
    """Map a value in ``[0, n - 1)`` drawn for unit ``owner`` onto ``[0, n)`` minus ``owner``.

    ``values`` and ``owner`` are int64 arrays (``owner`` broadcast to the shape
    of ``values``, e.g. (n, 1) against (n, k)); ``values`` is
    changed in place (``v -> v + (v >= owner)``) and returned. The map is
    increasing, so sorted rows stay sorted.
    """
    values += values >= owner
    return values


# --------------------------------------------------------------------------
# Rules


class Rule:
    """Base class of the connectivity rules.

    A subclass sets ``name`` (its key in :data:`RULES` and in :meth:`config`),
    ``random`` (whether it uses ``rng``) and implements ``_synapses`` on
    checked arguments; :meth:`synapses` does the checking.

    Attributes
    ----------
    weight, delay : None
        Only :class:`FromList` carries per-synapse weights and delays; for the
        other rules these are ``None``.
    """

    name = None
    random = True
    weight = None
    delay = None

    def __init__(self):
        pass  # no arguments (subclasses may take some); rule_from_config reads the signature

    def synapses(self, n_pre, n_post, rng, same_population=False):
        """The synapses of a projection from ``n_pre`` units onto ``n_post`` units.

        Parameters
        ----------
        n_pre : int
            Number of source units, >= 1.
        n_post : int
            Number of target units, >= 1.
        rng : numpy.random.Generator
            Source of randomness; the same generator state gives the same
            synapses. Deterministic rules (:class:`OneToOne`, :class:`AllToAll`,
            :class:`FromList`) ignore it and also accept ``None``.
        same_population : bool
            True when the projection goes from a population onto itself (then
            ``n_pre == n_post``); only then does ``allow_self=False`` exclude
            the pairs ``i -> i``.

        Returns
        -------
        pre, post : numpy.ndarray
            int64 (nnz,) each: synapse ``s`` goes from source unit ``pre[s]``
            to target unit ``post[s]``. Sorted by ``(pre, post)``, no pair twice.
        """
        where = f"{type(self).__name__}.synapses"
        n_pre = _check_int(where, "n_pre", n_pre, 1)
        n_post = _check_int(where, "n_post", n_post, 1)
        same_population = _check_bool(where, "same_population", same_population)
        if same_population and n_pre != n_post:
            raise ValueError(f"{where}: same_population=True needs n_pre == n_post, got "
                             f"n_pre={n_pre} and n_post={n_post}")
        if n_pre * n_post > _MAX_PAIRS:
            raise ValueError(f"{where}: n_pre * n_post must be <= 2**62, got "
                             f"{n_pre} * {n_post}")
        if self.random or rng is not None:
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"{where}: rng must be a numpy.random.Generator (e.g. "
                                f"np.random.default_rng(seed)), got {type(rng).__name__}")
        return self._synapses(n_pre, n_post, rng, same_population)

    def _synapses(self, n_pre, n_post, rng, same_population):
        raise NotImplementedError

    def config(self):
        """A JSON-able dict that :func:`rule_from_config` turns back into this rule.

        Returns
        -------
        dict
            ``{"rule": name, **constructor arguments}``, e.g.
            ``{"rule": "fixed_probability", "p": 0.02, "allow_self": True}``.
        """
        return {"rule": self.name, **self._params()}

    def _params(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


class FixedProbability(Rule):
    """Each pair is connected independently with probability ``p``.

    Like Brian2's ``connect(p=p)`` or NEST's ``pairwise_bernoulli``. The number
    of synapses is binomial with mean ``p * n_pre * n_post`` (``p * n * (n - 1)``
    without self-connections).

    Parameters
    ----------
    p : float
        Connection probability, ``0 < p <= 1``.
    allow_self : bool
        If False and the projection goes from a population onto itself, no
        unit connects to itself; every other pair keeps probability ``p``.
    """

    name = "fixed_probability"

    def __init__(self, p, allow_self=True):
        self.p = _check_probability("FixedProbability", "p", p)
        self.allow_self = _check_bool("FixedProbability", "allow_self", allow_self)

    def _params(self):
        return {"p": self.p, "allow_self": self.allow_self}

    def _synapses(self, n_pre, n_post, rng, same_population):
        skip_self = same_population and not self.allow_self
        m = n_post - 1 if skip_self else n_post  # candidate targets per source
        pos = _bernoulli_positions(rng, n_pre * m, self.p)
        # split the flattened index pre * m + col into rows without a division
        starts = np.arange(n_pre + 1, dtype=np.int64) * m
        counts = np.diff(np.searchsorted(pos, starts))
        pre = np.repeat(np.arange(n_pre, dtype=np.int64), counts)
        post = pos - pre * m
        if skip_self:
            _skip_diagonal(post, pre)
        return pre, post


class _FixedDegree(Rule):
    """Shared code of :class:`FixedInDegree` and :class:`FixedOutDegree`."""

    def __init__(self, k, allow_self=True):
        where = type(self).__name__
        self.k = _check_int(where, "k", k, 0)
        self.allow_self = _check_bool(where, "allow_self", allow_self)

    def _params(self):
        return {"k": self.k, "allow_self": self.allow_self}

    def _draw(self, rng, n_units, n_choices, same_population, what, n_name):
        """k distinct partners in [0, n_choices) for each of n_units units: int64 (n_units, k)."""
        skip_self = same_population and not self.allow_self
        available = n_choices - 1 if skip_self else n_choices
        if self.k > available:
            note = " (allow_self=False leaves out the unit itself)" if skip_self else ""
            raise ValueError(f"{type(self).__name__}: k must be <= the {available} available "
                             f"{what} per unit ({n_name}={n_choices}{note}), got k={self.k}")
        out = _distinct_draws(rng, n_units, self.k, available)
        if skip_self:
            _skip_diagonal(out, np.arange(n_units, dtype=np.int64)[:, None])
        return out


class FixedInDegree(_FixedDegree):
    """Every target unit receives exactly ``k`` distinct sources, chosen uniformly.

    Like NEST's ``fixed_indegree`` with ``allow_multapses=False``: for each
    target, every set of ``k`` sources is equally likely, independently of the
    other targets.

    Parameters
    ----------
    k : int
        In-degree, ``>= 0``; at most ``n_pre`` (``n_pre - 1`` without
        self-connections), checked by :meth:`synapses`.
    allow_self : bool
        If False and the projection goes from a population onto itself, target
        ``j`` draws its ``k`` sources among the units other than ``j``.
    """

    name = "fixed_indegree"

    def _synapses(self, n_pre, n_post, rng, same_population):
        sources = self._draw(rng, n_post, n_pre, same_population, "sources", "n_pre")
        # Row j of `sources` lists target j's sources: flattened, the entries are
        # in (post, pre) order and must be reordered to (pre, post).
        if self.k == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        if n_pre <= 2**16:
            # A stable sort by pre keeps post ascending within each pre; on 16-bit
            # keys NumPy's stable sort is a radix sort, linear in nnz.
            flat = sources.ravel()
            order = np.argsort(flat.astype(np.uint16), kind="stable")
            return flat[order], order // self.k
        key = sources * n_post
        key += np.arange(n_post, dtype=np.int64)[:, None]
        key = key.ravel()
        key.sort()
        pre, post = np.divmod(key, n_post)
        return pre, post


class FixedOutDegree(_FixedDegree):
    """Every source unit projects onto exactly ``k`` distinct targets, chosen uniformly.

    Like NEST's ``fixed_outdegree`` with ``allow_multapses=False``.

    Parameters
    ----------
    k : int
        Out-degree, ``>= 0``; at most ``n_post`` (``n_post - 1`` without
        self-connections), checked by :meth:`synapses`.
    allow_self : bool
        If False and the projection goes from a population onto itself, source
        ``i`` draws its ``k`` targets among the units other than ``i``.
    """

    name = "fixed_outdegree"

    def _synapses(self, n_pre, n_post, rng, same_population):
        targets = self._draw(rng, n_pre, n_post, same_population, "targets", "n_post")
        pre = np.repeat(np.arange(n_pre, dtype=np.int64), self.k)
        return pre, targets.ravel()


class OneToOne(Rule):
    """Unit ``i`` of the source connects to unit ``i`` of the target; needs ``n_pre == n_post``."""

    name = "one_to_one"
    random = False

    def _synapses(self, n_pre, n_post, rng, same_population):
        if n_pre != n_post:
            raise ValueError(f"OneToOne: needs n_pre == n_post, got n_pre={n_pre} and "
                             f"n_post={n_post}")
        idx = np.arange(n_pre, dtype=np.int64)
        return idx, idx.copy()


class AllToAll(Rule):
    """Every source unit connects to every target unit.

    Parameters
    ----------
    allow_self : bool
        If False and the projection goes from a population onto itself, the
        pairs ``i -> i`` are left out (``n * (n - 1)`` synapses).
    """

    name = "all_to_all"
    random = False

    def __init__(self, allow_self=True):
        self.allow_self = _check_bool("AllToAll", "allow_self", allow_self)

    def _params(self):
        return {"allow_self": self.allow_self}

    def _synapses(self, n_pre, n_post, rng, same_population):
        skip_self = same_population and not self.allow_self
        m = n_post - 1 if skip_self else n_post
        pre = np.repeat(np.arange(n_pre, dtype=np.int64), m)
        post = np.tile(np.arange(m, dtype=np.int64), n_pre)
        if skip_self:
            _skip_diagonal(post, pre)
        return pre, post


class FromList(Rule):
    """Explicit synapses ``pre[s] -> post[s]``, optionally with weights and delays.

    The arrays are checked and sorted by ``(pre, post)`` when the rule is made,
    with ``weight`` and ``delay`` reordered along, so that after
    ``pre, post = rule.synapses(...)`` synapse ``s`` has weight
    ``rule.weight[s]`` and delay ``rule.delay[s]``. :meth:`synapses` checks
    that the indices fit the populations.

    Parameters
    ----------
    pre, post : array_like of int
        1-d, the same length, values >= 0; no ``(pre, post)`` pair twice.
    weight : array_like of float, optional
        Finite weights (nnz,); stored as float64.
    delay : array_like of int, optional
        Delays in simulation steps (nnz,), each >= 1; stored as int64.

    Attributes
    ----------
    pre, post : numpy.ndarray
        int64 (nnz,), sorted by ``(pre, post)``.
    weight : numpy.ndarray or None
        float64 (nnz,), in the order of ``pre``/``post``.
    delay : numpy.ndarray or None
        int64 (nnz,), in the order of ``pre``/``post``.
    """

    name = "from_list"
    random = False

    def __init__(self, pre, post, weight=None, delay=None):
        pre = _index_array("FromList", "pre", pre)
        post = _index_array("FromList", "post", post)
        nnz = len(pre)
        if len(post) != nnz:
            raise ValueError(f"FromList: pre and post must have the same length, got "
                             f"{nnz} and {len(post)}")
        if weight is not None:
            weight = np.asarray(weight)
            if weight.dtype == bool or not (np.issubdtype(weight.dtype, np.floating)
                                            or np.issubdtype(weight.dtype, np.integer)):
                raise TypeError(f"FromList: weight must hold real numbers, got dtype "
                                f"{weight.dtype}")
            if weight.shape != (nnz,):
                raise ValueError(f"FromList: weight must have shape ({nnz},) like pre, got "
                                 f"{weight.shape}")
            weight = weight.astype(np.float64)
            if not np.isfinite(weight).all():
                bad = int(np.flatnonzero(~np.isfinite(weight))[0])
                raise ValueError(f"FromList: weight must be finite, got {weight[bad]} at "
                                 f"position {bad}")
        if delay is not None:
            delay = np.asarray(delay)
            if delay.size == 0 and delay.dtype == np.float64:
                delay = delay.astype(np.int64)
            if not np.issubdtype(delay.dtype, np.integer):
                raise TypeError(f"FromList: delay must hold integers (simulation steps), got "
                                f"dtype {delay.dtype}")
            if delay.shape != (nnz,):
                raise ValueError(f"FromList: delay must have shape ({nnz},) like pre, got "
                                 f"{delay.shape}")
            if nnz and delay.min() < 0:
                bad = int(np.argmin(delay))
                raise ValueError(f"FromList: delay must be >= 0 steps, got {delay[bad]} at "
                                 f"position {bad}")
            if nnz and delay.dtype == np.uint64 and delay.max() > np.iinfo(np.int64).max:
                raise ValueError(f"FromList: delay holds {delay.max()}, too large for int64")
            delay = delay.astype(np.int64)
        order = np.lexsort((post, pre))
        pre, post = pre[order], post[order]
        same = np.flatnonzero((pre[1:] == pre[:-1]) & (post[1:] == post[:-1]))
        if same.size:
            i, j = int(pre[same[0]]), int(post[same[0]])
            count = int(np.count_nonzero((pre == i) & (post == j)))
            raise ValueError(f"FromList: each (pre, post) pair may appear only once, got "
                             f"({i}, {j}) {count} times ({same.size} repeated entries in all)")
        self.pre, self.post = pre, post
        self.weight = None if weight is None else weight[order]
        self.delay = None if delay is None else delay[order]

    def _params(self):
        return {
            "pre": self.pre.tolist(),
            "post": self.post.tolist(),
            "weight": None if self.weight is None else self.weight.tolist(),
            "delay": None if self.delay is None else self.delay.tolist(),
        }

    def __repr__(self):
        return (f"FromList(nnz={len(self.pre)}, weight={self.weight is not None}, "
                f"delay={self.delay is not None})")

    def _synapses(self, n_pre, n_post, rng, same_population):
        for name, arr, n in (("pre", self.pre, n_pre), ("post", self.post, n_post)):
            if arr.size and arr.max() >= n:
                bad = int(np.argmax(arr))
                raise ValueError(f"FromList: {name} must be < n_{name}={n}, got {arr[bad]} "
                                 f"at (sorted) position {bad}")
        return self.pre.copy(), self.post.copy()


RULES = {cls.name: cls for cls in (FixedProbability, FixedInDegree, FixedOutDegree,
                                   OneToOne, AllToAll, FromList)}
"""The rules by their ``config()["rule"]`` name."""


def rule_from_config(config):
    """Rebuild a rule from the dict made by :meth:`Rule.config`.

    Parameters
    ----------
    config : dict
        ``{"rule": name, **arguments}``, ``name`` a key of :data:`RULES`.

    Returns
    -------
    Rule

    Raises
    ------
    TypeError
        ``config`` is not a dict.
    ValueError
        The ``"rule"`` key is missing or unknown, or the arguments do not fit
        the rule's constructor (each argument is then checked by the rule).
    """
    if not isinstance(config, dict):
        raise TypeError(f"rule_from_config: config must be a dict, got "
                        f"{type(config).__name__}")
    if "rule" not in config:
        raise ValueError(f"rule_from_config: config must have a 'rule' key (one of "
                         f"{sorted(RULES)}), got keys {sorted(config)}")
    name = config["rule"]
    if name not in RULES:
        raise ValueError(f"rule_from_config: unknown rule {name!r}; expected one of "
                         f"{sorted(RULES)}")
    cls = RULES[name]
    args = {k: v for k, v in config.items() if k != "rule"}
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self"]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ValueError(f"rule_from_config: unknown key(s) {unknown} for rule {name!r}; "
                         f"expected some of {accepted}")
    missing = [p for p in accepted
               if params[p].default is inspect.Parameter.empty and p not in args]
    if missing:
        raise ValueError(f"rule_from_config: rule {name!r} needs key(s) {missing}, got "
                         f"keys {sorted(args)}")
    return cls(**args)
