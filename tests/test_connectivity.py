"""Connectivity rules (evsim.connectivity): output format, statistics, errors, configs.

Statistical checks use fixed seeds, so they are deterministic; their bounds
(several standard deviations, chi-square p-values > 1e-4) are wide enough
that a correct sampler passes for almost every seed.
"""

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from evsim import connectivity as conn
from evsim.connectivity import (
    RULES,
    AllToAll,
    FixedInDegree,
    FixedOutDegree,
    FixedProbability,
    FromList,
    OneToOne,
    Rule,
    rule_from_config,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def check_format(pre, post, n_pre, n_post):
    """The contract of Rule.synapses: int64 (nnz,), in range, sorted by (pre, post), unique."""
    for arr in (pre, post):
        assert isinstance(arr, np.ndarray) and arr.dtype == np.int64 and arr.ndim == 1
    assert pre.shape == post.shape
    if pre.size:
        assert 0 <= pre.min() and pre.max() < n_pre
        assert 0 <= post.min() and post.max() < n_post
        key = pre * n_post + post
        assert np.all(np.diff(key) > 0), "not strictly sorted by (pre, post)"


def dense(pre, post, n_pre, n_post):
    a = np.zeros((n_pre, n_post), dtype=np.int64)
    np.add.at(a, (pre, post), 1)
    return a


ALL_RULES = [
    FixedProbability(0.3),
    FixedProbability(0.3, allow_self=False),
    FixedProbability(1.0, allow_self=False),
    FixedInDegree(2),
    FixedInDegree(2, allow_self=False),
    FixedOutDegree(2),
    FixedOutDegree(2, allow_self=False),
    AllToAll(),
    AllToAll(allow_self=False),
]


@pytest.fixture(params=["rejection", "dense"])
def degree_branch(request, monkeypatch):
    """Force the degree rules' sampler onto one branch (rejection or ranking keys)."""
    monkeypatch.setattr(conn, "DENSE_FRACTION", np.inf if request.param == "rejection" else 0.0)
    return request.param


# --------------------------------------------------------------------------
# Output format


@pytest.mark.parametrize("rule", ALL_RULES, ids=repr)
@pytest.mark.parametrize("n_pre,n_post,same", [(7, 7, True), (7, 7, False), (9, 5, False),
                                               (4, 12, False), (3, 3, True)])
def test_format(rule, n_pre, n_post, same):
    pre, post = rule.synapses(n_pre, n_post, rng(1), same_population=same)
    check_format(pre, post, n_pre, n_post)
    assert rule.weight is None and rule.delay is None


@given(n_pre=st.integers(1, 40), n_post=st.integers(1, 40), same=st.booleans(),
       seed=st.integers(0, 2**32 - 1), p=st.floats(0.01, 1.0),
       k=st.integers(0, 40), allow_self=st.booleans(),
       dense_fraction=st.sampled_from([0.0, 0.25, np.inf]))
@settings(max_examples=150, deadline=None)
def test_format_property(n_pre, n_post, same, seed, p, k, allow_self, dense_fraction):
    if same:
        n_post = n_pre
    skip = same and not allow_self
    old = conn.DENSE_FRACTION
    conn.DENSE_FRACTION = dense_fraction
    try:
        rules = [FixedProbability(p, allow_self), AllToAll(allow_self)]
        if k <= n_pre - skip:
            rules.append(FixedInDegree(k, allow_self))
        if k <= n_post - skip:
            rules.append(FixedOutDegree(k, allow_self))
        for rule in rules:
            pre, post = rule.synapses(n_pre, n_post, rng(seed), same)
            check_format(pre, post, n_pre, n_post)
            if skip:
                assert not np.any(pre == post), rule
            if isinstance(rule, FixedInDegree):
                assert np.all(np.bincount(post, minlength=n_post) == k)
            if isinstance(rule, FixedOutDegree):
                assert np.all(np.bincount(pre, minlength=n_pre) == k)
    finally:
        conn.DENSE_FRACTION = old


def test_single_unit_without_self_has_no_synapses():
    for rule in (FixedProbability(1.0, False), AllToAll(False), FixedInDegree(0, False)):
        pre, post = rule.synapses(1, 1, rng(), same_population=True)
        check_format(pre, post, 1, 1)
        assert pre.size == 0


# --------------------------------------------------------------------------
# FixedProbability


@pytest.mark.parametrize("allow_self,same", [(True, True), (False, True), (False, False)])
def test_fixed_probability_count(allow_self, same):
    n, p = 500, 0.02
    pairs = n * (n - 1) if (same and not allow_self) else n * n
    pre, post = FixedProbability(p, allow_self).synapses(n, n, rng(7), same)
    check_format(pre, post, n, n)
    mean, sd = pairs * p, np.sqrt(pairs * p * (1 - p))
    assert abs(pre.size - mean) < 5 * sd
    if same and not allow_self:
        assert not np.any(pre == post)
    else:
        assert np.any(pre == post)  # about n * p = 10 self-pairs expected


def test_fixed_probability_rows_are_binomial():
    """Counts per source are Binomial(n_post, p): mean and variance both match."""
    n_pre, n_post, p = 4000, 300, 0.1
    pre, _ = FixedProbability(p).synapses(n_pre, n_post, rng(3), False)
    counts = np.bincount(pre, minlength=n_pre)
    assert abs(counts.mean() - n_post * p) < 5 * np.sqrt(n_post * p * (1 - p) / n_pre)
    assert abs(counts.var() / (n_post * p * (1 - p)) - 1) < 0.1


def test_fixed_probability_without_self_keeps_other_pairs_uniform():
    """Every offset (post - pre) mod n other than 0 is equally likely; 0 never appears."""
    n, p = 400, 0.5
    pre, post = FixedProbability(p, allow_self=False).synapses(n, n, rng(5), True)
    offsets = np.bincount((post - pre) % n, minlength=n)
    assert offsets[0] == 0
    assert abs(pre.size - p * n * (n - 1)) < 5 * np.sqrt(n * (n - 1) * p * (1 - p))
    assert stats.chisquare(offsets[1:]).pvalue > 1e-4
    # and per target: every column has about n p sources
    cols = np.bincount(post, minlength=n)
    assert stats.chisquare(cols).pvalue > 1e-4


@pytest.mark.parametrize("allow_self,same", [(True, True), (True, False), (False, False)])
def test_fixed_probability_one_is_all_pairs_with_self(allow_self, same):
    pre, post = FixedProbability(1.0, allow_self).synapses(6, 6, rng(), same)
    np.testing.assert_array_equal(dense(pre, post, 6, 6), np.ones((6, 6)))


def test_fixed_probability_one_without_self():
    pre, post = FixedProbability(1.0, allow_self=False).synapses(6, 6, rng(), True)
    np.testing.assert_array_equal(dense(pre, post, 6, 6), 1 - np.eye(6))


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_bernoulli_positions_over_several_chunks(chunk):
    """The loop that continues past the first chunk keeps each position with probability p."""
    total, p = 20000, 0.3
    pos = conn._bernoulli_positions(rng(2), total, p, chunk=chunk)
    assert pos.dtype == np.int64
    assert np.all(np.diff(pos) > 0) and pos[0] >= 0 and pos[-1] < total
    assert abs(pos.size - total * p) < 5 * np.sqrt(total * p * (1 - p))
    # kept fraction is the same in every block of 1000 positions (no drift at chunk joins)
    blocks = np.bincount(pos // 1000, minlength=total // 1000)
    assert stats.chisquare(blocks).pvalue > 1e-4


def test_bernoulli_positions_edges():
    assert conn._bernoulli_positions(rng(), 0, 0.5).size == 0
    np.testing.assert_array_equal(conn._bernoulli_positions(rng(), 5, 1.0), np.arange(5))
    assert conn._bernoulli_positions(rng(), 10, 1e-12).size == 0  # almost surely


def test_large_fixed_probability_does_not_allocate_the_pair_matrix():
    """40000 x 40000 at p = 0.002: about 3.2 M synapses, far below the 1.6 GB of a bool matrix."""
    n, p = 40000, 0.002
    tracemalloc.start()
    try:
        pre, post = FixedProbability(p).synapses(n, n, rng(11), False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    mean = n * n * p
    assert abs(pre.size - mean) < 5 * np.sqrt(mean)
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"
    assert np.all(np.diff(pre) >= 0)
    assert np.all((np.diff(post) > 0) | (np.diff(pre) > 0))


# --------------------------------------------------------------------------
# Degree rules


@pytest.mark.parametrize("allow_self,same", [(True, True), (False, True), (True, False)])
def test_fixed_indegree_exact(allow_self, same, degree_branch):
    n, k = 50, 20
    pre, post = FixedInDegree(k, allow_self).synapses(n, n, rng(4), same)
    check_format(pre, post, n, n)
    assert np.all(np.bincount(post, minlength=n) == k)
    if same and not allow_self:
        assert not np.any(pre == post)
    else:
        assert np.any(pre == post)


def test_fixed_indegree_uses_all_sources_when_k_is_the_maximum(degree_branch):
    pre, post = FixedInDegree(5, allow_self=False).synapses(6, 6, rng(), True)
    np.testing.assert_array_equal(dense(pre, post, 6, 6), 1 - np.eye(6))
    pre, post = FixedInDegree(6).synapses(6, 3, rng(), False)
    np.testing.assert_array_equal(dense(pre, post, 6, 3), np.ones((6, 3)))


@pytest.mark.parametrize("rule_cls", [FixedInDegree, FixedOutDegree])
def test_degree_subsets_are_uniform(rule_cls, degree_branch):
    """Each of the C(6, 2) = 15 source (target) sets is equally likely."""
    n_units, m, k = 6000, 6, 2
    if rule_cls is FixedInDegree:
        pre, post = rule_cls(k).synapses(m, n_units, rng(8), False)
        order = np.lexsort((pre, post))
        chosen = pre[order].reshape(n_units, k)
    else:
        pre, post = rule_cls(k).synapses(n_units, m, rng(8), False)
        chosen = post.reshape(n_units, k)
    codes = chosen[:, 0] * m + chosen[:, 1]
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == 15
    assert stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize("rule_cls", [FixedInDegree, FixedOutDegree])
def test_degree_without_self_keeps_other_pairs_uniform(rule_cls, degree_branch):
    n, k = 300, 100
    pre, post = rule_cls(k, allow_self=False).synapses(n, n, rng(9), True)
    offsets = np.bincount((post - pre) % n, minlength=n)
    assert offsets[0] == 0
    assert stats.chisquare(offsets[1:]).pvalue > 1e-4


def test_degree_branches_both_run():
    """The two sampler branches consume the generator differently: they are different code."""
    out = {}
    for name, frac in (("rejection", np.inf), ("dense", 0.0)):
        old = conn.DENSE_FRACTION
        conn.DENSE_FRACTION = frac
        try:
            out[name] = FixedInDegree(3).synapses(10, 10, rng(1), False)
        finally:
            conn.DENSE_FRACTION = old
    assert not np.array_equal(out["rejection"][0], out["dense"][0])


def test_fixed_indegree_large_sources_use_the_key_sort():
    """n_pre > 2**16 takes the other reordering path; same contract."""
    n_pre, n_post, k = 2**16 + 5, 30, 4
    pre, post = FixedInDegree(k).synapses(n_pre, n_post, rng(), False)
    check_format(pre, post, n_pre, n_post)
    assert np.all(np.bincount(post, minlength=n_post) == k)


@pytest.mark.parametrize("allow_self,same", [(True, True), (False, True), (True, False)])
def test_fixed_outdegree_exact(allow_self, same, degree_branch):
    n, k = 50, 20
    pre, post = FixedOutDegree(k, allow_self).synapses(n, n, rng(4), same)
    check_format(pre, post, n, n)
    assert np.all(np.bincount(pre, minlength=n) == k)
    assert np.any(pre == post) == (not same or allow_self)


@pytest.mark.parametrize("rule,n_pre,n_post,same,match", [
    (FixedInDegree(6), 5, 3, False, r"FixedInDegree: k must be <= the 5 available sources"),
    (FixedInDegree(5, allow_self=False), 5, 5, True,
     r"FixedInDegree: k must be <= the 4 available sources .*n_pre=5 .*allow_self=False.*k=5"),
    (FixedOutDegree(4), 5, 3, False, r"FixedOutDegree: k must be <= the 3 available targets"),
    (FixedOutDegree(5, allow_self=False), 5, 5, True,
     r"FixedOutDegree: k must be <= the 4 available targets"),
])
def test_degree_too_large(rule, n_pre, n_post, same, match):
    with pytest.raises(ValueError, match=match):
        rule.synapses(n_pre, n_post, rng(), same)


def test_degree_k_equal_available_without_self_only_when_other_population():
    # not the same population: allow_self=False does not remove a source
    pre, post = FixedInDegree(5, allow_self=False).synapses(5, 5, rng(), False)
    np.testing.assert_array_equal(dense(pre, post, 5, 5), np.ones((5, 5)))


# --------------------------------------------------------------------------
# OneToOne, AllToAll


def test_one_to_one():
    pre, post = OneToOne().synapses(5, 5, None, False)
    np.testing.assert_array_equal(pre, np.arange(5))
    np.testing.assert_array_equal(post, np.arange(5))
    assert pre.dtype == post.dtype == np.int64
    assert not np.shares_memory(pre, post)
    pre2, _ = OneToOne().synapses(5, 5, rng(), True)
    np.testing.assert_array_equal(pre2, pre)
    with pytest.raises(ValueError, match=r"OneToOne: needs n_pre == n_post, got n_pre=4 "
                                         r"and n_post=5"):
        OneToOne().synapses(4, 5, None, False)


@pytest.mark.parametrize("allow_self,same,diag", [(True, True, 1), (False, True, 0),
                                                   (False, False, 1)])
def test_all_to_all(allow_self, same, diag):
    pre, post = AllToAll(allow_self).synapses(5, 5, None, same)
    check_format(pre, post, 5, 5)
    expected = np.ones((5, 5), dtype=np.int64)
    np.fill_diagonal(expected, diag)
    np.testing.assert_array_equal(dense(pre, post, 5, 5), expected)


def test_all_to_all_rectangular():
    pre, post = AllToAll(allow_self=False).synapses(3, 4, None, False)
    np.testing.assert_array_equal(pre, np.repeat(np.arange(3), 4))
    np.testing.assert_array_equal(post, np.tile(np.arange(4), 3))


# --------------------------------------------------------------------------
# FromList


def test_from_list_sorts_and_carries_weight_and_delay():
    rule = FromList(pre=[2, 0, 1, 0], post=[1, 3, 0, 1], weight=[0.5, -1.0, 2.0, 3.0],
                    delay=np.array([4, 1, 2, 3], dtype=np.int32))
    pre, post = rule.synapses(3, 4, None, False)
    np.testing.assert_array_equal(pre, [0, 0, 1, 2])
    np.testing.assert_array_equal(post, [1, 3, 0, 1])
    np.testing.assert_array_equal(rule.weight, [3.0, -1.0, 2.0, 0.5])
    np.testing.assert_array_equal(rule.delay, [3, 1, 2, 4])
    assert rule.weight.dtype == np.float64 and rule.delay.dtype == np.int64
    assert pre.dtype == post.dtype == np.int64
    # the returned arrays are copies: editing them does not change the rule
    pre[0] = 2
    assert rule.pre[0] == 0


def test_from_list_optional_parts_and_empty():
    rule = FromList(np.array([1, 0], dtype=np.uint8), np.array([0, 0], dtype=np.int16))
    assert rule.weight is None and rule.delay is None
    pre, post = rule.synapses(2, 1, rng(), False)
    np.testing.assert_array_equal(pre, [0, 1])
    rule = FromList([], [], weight=[], delay=[])
    pre, post = rule.synapses(1, 1, None, True)
    assert pre.size == post.size == rule.weight.size == rule.delay.size == 0
    assert pre.dtype == np.int64
    # integer weights are real numbers too
    assert FromList([0], [0], weight=[2]).weight.dtype == np.float64


def test_from_list_random_order_matches_lexsort():
    g = rng(3)
    pairs = g.choice(30 * 40, size=300, replace=False)
    pre, post = np.divmod(pairs, 40)
    w = g.normal(size=300)
    d = g.integers(1, 10, size=300)
    rule = FromList(pre, post, w, d)
    got_pre, got_post = rule.synapses(30, 40, None, False)
    check_format(got_pre, got_post, 30, 40)
    lookup = {(i, j): (a, b) for i, j, a, b in zip(pre, post, w, d)}
    for s in range(300):
        assert lookup[(got_pre[s], got_post[s])] == (rule.weight[s], rule.delay[s])


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(pre=[0, 1], post=[0]), ValueError,
     r"FromList: pre and post must have the same length, got 2 and 1"),
    (dict(pre=[[0, 1]], post=[[0, 1]]), ValueError,
     r"FromList: pre must be a 1-d array, got shape \(1, 2\)"),
    (dict(pre=[0, 1], post=np.zeros((2, 1), int)), ValueError,
     r"FromList: post must be a 1-d array, got shape \(2, 1\)"),
    (dict(pre=[0.0, 1.0], post=[0, 1]), TypeError,
     r"FromList: pre must hold integers, got dtype float64"),
    (dict(pre=[0, 1], post=[True, False]), TypeError,
     r"FromList: post must hold integers, got dtype bool"),
    (dict(pre=[0, -1], post=[0, 1]), ValueError,
     r"FromList: pre must be >= 0, got -1 at position 1"),
    (dict(pre=[0, 1, 0], post=[2, 1, 2]), ValueError,
     r"FromList: each \(pre, post\) pair may appear only once, got \(0, 2\) 2 times"),
    (dict(pre=[0, 1], post=[0, 1], weight=[1.0]), ValueError,
     r"FromList: weight must have shape \(2,\) like pre, got \(1,\)"),
    (dict(pre=[0, 1], post=[0, 1], weight=[1.0, np.nan]), ValueError,
     r"FromList: weight must be finite, got nan at position 1"),
    (dict(pre=[0, 1], post=[0, 1], weight=[np.inf, 1.0]), ValueError,
     r"FromList: weight must be finite, got inf at position 0"),
    (dict(pre=[0, 1], post=[0, 1], weight=["a", "b"]), TypeError,
     r"FromList: weight must hold real numbers, got dtype <U1"),
    (dict(pre=[0, 1], post=[0, 1], weight=[True, False]), TypeError,
     r"FromList: weight must hold real numbers, got dtype bool"),
    (dict(pre=[0, 1], post=[0, 1], weight=[1j, 2j]), TypeError,
     r"FromList: weight must hold real numbers, got dtype complex128"),
    (dict(pre=[0, 1], post=[0, 1], delay=[1.0, 2.0]), TypeError,
     r"FromList: delay must hold integers \(simulation steps\), got dtype float64"),
    (dict(pre=[0, 1], post=[0, 1], delay=[1, -1]), ValueError,
     r"FromList: delay must be >= 0 steps, got -1 at position 1"),
    (dict(pre=[0, 1], post=[0, 1], delay=[1, 2, 3]), ValueError,
     r"FromList: delay must have shape \(2,\) like pre, got \(3,\)"),
])
def test_from_list_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        FromList(**kwargs)


@pytest.mark.parametrize("n_pre,n_post,match", [
    (2, 5, r"FromList: pre must be < n_pre=2, got 3"),
    (4, 4, r"FromList: post must be < n_post=4, got 4"),
])
def test_from_list_out_of_range(n_pre, n_post, match):
    rule = FromList([3, 0], [1, 4])
    with pytest.raises(ValueError, match=match):
        rule.synapses(n_pre, n_post, None, False)
    rule.synapses(4, 5, None, False)  # fits


# --------------------------------------------------------------------------
# Argument errors shared by every rule


@pytest.mark.parametrize("make,exc,match", [
    (lambda: FixedProbability(1.5), ValueError,
     r"FixedProbability: p must be in \(0, 1\], got 1.5"),
    (lambda: FixedProbability(0), ValueError,
     r"FixedProbability: p must be in \(0, 1\], got 0.0"),
    (lambda: FixedProbability(-0.1), ValueError, r"p must be in \(0, 1\], got -0.1"),
    (lambda: FixedProbability(float("nan")), ValueError, r"p must be in \(0, 1\], got nan"),
    (lambda: FixedProbability("0.1"), TypeError,
     r"FixedProbability: p must be a number, got '0.1'"),
    (lambda: FixedProbability(True), TypeError, r"p must be a number, got True"),
    (lambda: FixedProbability(None), TypeError, r"p must be a number, got None"),
    (lambda: FixedProbability(0.1, allow_self=1), TypeError,
     r"FixedProbability: allow_self must be True or False, got 1"),
    (lambda: FixedInDegree(-1), ValueError, r"FixedInDegree: k must be >= 0, got -1"),
    (lambda: FixedInDegree(2.0), TypeError, r"FixedInDegree: k must be an integer, got 2.0"),
    (lambda: FixedInDegree(True), TypeError, r"FixedInDegree: k must be an integer, got True"),
    (lambda: FixedOutDegree(-3), ValueError, r"FixedOutDegree: k must be >= 0, got -3"),
    (lambda: FixedOutDegree(2, allow_self="no"), TypeError,
     r"FixedOutDegree: allow_self must be True or False, got 'no'"),
    (lambda: AllToAll(allow_self=None), TypeError,
     r"AllToAll: allow_self must be True or False, got None"),
])
def test_constructor_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_numpy_scalars_are_accepted():
    rule = FixedProbability(np.float32(0.5), allow_self=np.bool_(False))
    assert rule.p == 0.5 and rule.allow_self is False
    assert FixedInDegree(np.int32(3)).k == 3
    json.dumps(rule.config())
    json.dumps(FixedInDegree(np.int64(3)).config())
    pre, _ = FixedProbability(0.5).synapses(np.int64(3), np.int32(3), rng(), np.bool_(True))
    assert pre.dtype == np.int64


@pytest.mark.parametrize("args,exc,match", [
    ((0, 5, rng(), False), ValueError, r"FixedProbability.synapses: n_pre must be >= 1, got 0"),
    ((5, -1, rng(), False), ValueError, r"FixedProbability.synapses: n_post must be >= 1, got -1"),
    ((5.0, 5, rng(), False), TypeError, r"n_pre must be an integer, got 5.0"),
    ((5, 5, rng(), "yes"), TypeError, r"same_population must be True or False, got 'yes'"),
    ((5, 6, rng(), True), ValueError,
     r"same_population=True needs n_pre == n_post, got n_pre=5 and n_post=6"),
    ((5, 5, 42, False), TypeError,
     r"FixedProbability.synapses: rng must be a numpy.random.Generator .*got int"),
    ((5, 5, None, False), TypeError, r"rng must be a numpy.random.Generator .*got NoneType"),
    ((5, 5, np.random.RandomState(0), False), TypeError, r"got RandomState"),
    ((2**32, 2**32, rng(), False), ValueError, r"n_pre \* n_post must be <= 2\*\*62"),
])
def test_synapses_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        FixedProbability(0.1).synapses(*args)


def test_deterministic_rules_check_a_given_rng():
    with pytest.raises(TypeError, match=r"AllToAll.synapses: rng must be a numpy"):
        AllToAll().synapses(3, 3, 5, False)


def test_base_rule_is_abstract():
    with pytest.raises(NotImplementedError):
        Rule().synapses(2, 2, rng(), False)


# --------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("rule", [FixedProbability(0.1), FixedProbability(0.1, False),
                                  FixedInDegree(5), FixedInDegree(5, False),
                                  FixedInDegree(40), FixedOutDegree(5), FixedOutDegree(40)],
                         ids=repr)
def test_deterministic_by_seed(rule):
    a = rule.synapses(60, 60, rng(123), True)
    b = rule.synapses(60, 60, rng(123), True)
    c = rule.synapses(60, 60, rng(124), True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].size != c[0].size or not (np.array_equal(a[0], c[0])
                                          and np.array_equal(a[1], c[1]))


# --------------------------------------------------------------------------
# config, RULES, repr


ROUND_TRIP = [
    FixedProbability(0.02),
    FixedProbability(1.0, allow_self=False),
    FixedInDegree(2, allow_self=False),
    FixedOutDegree(0),
    OneToOne(),
    AllToAll(allow_self=False),
    FromList([1, 0], [0, 2]),
    FromList([1, 0, 1], [0, 2, 2], weight=[0.1, 1 / 3, -2.5e-7], delay=[3, 1, 2]),
]


@pytest.mark.parametrize("rule", ROUND_TRIP, ids=repr)
def test_config_round_trip_through_json(rule):
    cfg = rule.config()
    assert cfg["rule"] == rule.name and RULES[cfg["rule"]] is type(rule)
    back = rule_from_config(json.loads(json.dumps(cfg)))
    assert type(back) is type(rule)
    assert back.config() == cfg
    assert repr(back) == repr(rule)
    a = rule.synapses(3, 3, rng(5), True)
    b = back.synapses(3, 3, rng(5), True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for attr in ("weight", "delay"):
        x, y = getattr(rule, attr), getattr(back, attr)
        assert (x is None and y is None) or (np.array_equal(x, y) and x.dtype == y.dtype)


def test_config_example():
    assert FixedProbability(0.02).config() == {"rule": "fixed_probability", "p": 0.02,
                                               "allow_self": True}


def test_rules_registry():
    assert set(RULES) == {"fixed_probability", "fixed_indegree", "fixed_outdegree",
                          "one_to_one", "all_to_all", "from_list"}
    for name, cls in RULES.items():
        assert cls.name == name and issubclass(cls, Rule)


@pytest.mark.parametrize("cfg,exc,match", [
    ([("rule", "all_to_all")], TypeError, r"rule_from_config: config must be a dict, got list"),
    ({"p": 0.1}, ValueError, r"rule_from_config: config must have a 'rule' key"),
    ({"rule": "gaussian", "sigma": 2}, ValueError,
     r"rule_from_config: unknown rule 'gaussian'; expected one of \['all_to_all'"),
    ({"rule": "fixed_probability", "p": 0.1, "q": 2}, ValueError,
     r"unknown key\(s\) \['q'\] for rule 'fixed_probability'; expected some of "
     r"\['p', 'allow_self'\]"),
    ({"rule": "fixed_indegree"}, ValueError,
     r"rule 'fixed_indegree' needs key\(s\) \['k'\]"),
    ({"rule": "fixed_probability", "p": 2.0}, ValueError,
     r"FixedProbability: p must be in \(0, 1\], got 2.0"),
])
def test_rule_from_config_errors(cfg, exc, match):
    with pytest.raises(exc, match=match):
        rule_from_config(cfg)


def test_repr():
    assert repr(FixedProbability(0.02)) == "FixedProbability(p=0.02, allow_self=True)"
    assert repr(FixedInDegree(5, False)) == "FixedInDegree(k=5, allow_self=False)"
    assert repr(FixedOutDegree(5)) == "FixedOutDegree(k=5, allow_self=True)"
    assert repr(OneToOne()) == "OneToOne()"
    assert repr(AllToAll()) == "AllToAll(allow_self=True)"
    assert repr(FromList([0, 1], [1, 0], weight=[1.0, 2.0])) == (
        "FromList(nnz=2, weight=True, delay=False)")
