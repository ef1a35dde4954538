"""evsim owns the thread pools during its calls and gives them back: BLAS and
Numba thread settings are restored after every call (also after an error and
when several Python threads call evsim), and results do not depend on the
number of threads."""

import sys
import threading

import numba
import numpy as np
import pytest
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba calls: loaded before counting)
import threadpoolctl
from conftest import make_problem

import evsim
from evsim import config, models, threads
from evsim.data import load_digits
from evsim.kernels import cpu_seq
from evsim.training import Trainer


@pytest.fixture(autouse=True)
def _reset_config():
    yield
    config._reset()


def _blas_threads():
    return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info()
                  if i["user_api"] == "blas")


def _problem(B=4):
    return make_problem(T=5, B=B, I=3, H=16, seed=3).astype(np.float32)


def test_blas_is_single_threaded_inside_and_restored_after():
    seen = []
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        with threads.owned():
            seen.append(_blas_threads())
            with threads.owned():  # nested: still one thread, restored only at the end
                seen.append(_blas_threads())
            seen.append(_blas_threads())
        assert _blas_threads() == before == [2] * len(before)
    assert all(s == [1] * len(before) for s in seen)


def test_settings_restored_after_calls_and_errors():
    p = _problem()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        blas, nb = _blas_threads(), numba.get_num_threads()
        res = p.forward(backend="cpu")
        evsim.egru_backward(res, np.ones_like(res.y))
        assert (_blas_threads(), numba.get_num_threads()) == (blas, nb)
        with pytest.raises(ValueError):  # an error inside the owned block
            evsim.egru_forward(p.x, p.W, p.R, p.bx, p.br, p.thr, lengths=[0, 1, 2, 3])
        with pytest.raises(ValueError):
            evsim.egru_backward(res, np.ones((1, 2, 3), np.float32))
        assert (_blas_threads(), numba.get_num_threads()) == (blas, nb)


def test_two_python_threads_leave_blas_as_they_found_it():
    p = _problem()
    errors = []

    def work():
        try:
            for _ in range(20):
                res = p.forward(backend="cpu")
                evsim.egru_backward(res, np.ones_like(res.y))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        workers = [threading.Thread(target=work) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors
        assert _blas_threads() == before


def test_thread_caps_are_checked_and_local():
    with pytest.raises(ValueError, match="threads"):
        with threads.limit(0):
            pass
    config.NUM_THREADS = "two"
    with pytest.raises(ValueError, match="NUM_THREADS"):
        threads.available()
    config.NUM_THREADS = None
    with threads.limit(1):
        assert threads.available() == 1
        assert threads.plan(64, 10**12) == 1
    assert threads.plan(64, 10) == 1  # too small to go parallel
    assert threads.available() == numba.config.NUMBA_NUM_THREADS
    with pytest.raises(ValueError, match="threads"):
        Trainer(models.sequence_classifier(2, 4, 2), threads=-1)


def test_tile_size_depends_on_batch_only():
    sizes = {B: threads.tile_size(B) for B in (1, 2, 5, 16, 33, 1000)}
    config.NUM_THREADS = 1
    assert {B: threads.tile_size(B) for B in sizes} == sizes
    assert sizes[1] == 1 and sizes[1000] == config.TILE_SAMPLES


def _train(threads_, epochs=2):
    sp = load_digits("rows")
    train = sp.train.subset(slice(0, 200))
    net = models.sequence_classifier(train.n_inputs, 24, train.n_classes, seed=5)
    tr = Trainer(net, lr=0.01, batch_size=32, activity_target=0.05, activity_strength=10.0,
                 progress=False, threads=threads_)
    history = tr.fit(train, epochs=epochs)
    return {k: v.copy() for k, v in net.params().items()}, history


def test_training_is_bit_identical_across_thread_counts(monkeypatch):
    """The same seed trains the same weights on one thread and on all of them,
    with the parallel paths forced on for the small problem."""
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(threads, "others_running", lambda: 0)
    seen = []
    kernel = cpu_seq.egru_forward

    def spy(*args):
        seen.append(numba.get_num_threads())
        return kernel(*args)

    monkeypatch.setattr(cpu_seq, "egru_forward", spy)
    p1, h1 = _train(1)
    assert set(seen) == {1}
    seen.clear()
    p2, h2 = _train(None)
    assert max(seen) == min(2, numba.config.NUMBA_NUM_THREADS)
    assert p1.keys() == p2.keys()
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    assert [h["train_loss"] for h in h1] == [h["train_loss"] for h in h2]


def test_small_and_loaded_calls_run_on_one_thread(monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core")
    monkeypatch.setattr(threads, "others_running", lambda: 0)
    assert threads.plan(32, config.PARALLEL_MIN_WORK) == 2
    assert threads.per_step_threads(config.PARALLEL_MIN_WORK) == 2
    monkeypatch.setattr(threads, "others_running", lambda: 1)  # a busy neighbour
    assert threads.plan(32, config.PARALLEL_MIN_WORK) == 1
    assert threads.plan(32, config.PARALLEL_MIN_WORK_LOADED) == 2
    assert threads.per_step_threads(10**15) == 1


def test_others_running_reads_the_load():
    n = threads.others_running()
    assert isinstance(n, int) and n >= 0


def test_blas_libraries_looked_up_again_after_imports(monkeypatch):
    """A library imported after evsim's first call may bring its own BLAS:
    the controllers are looked up again when modules were imported."""
    first = threads._blas_controllers()
    assert threads._blas_controllers() is first  # nothing new: no new lookup
    monkeypatch.setitem(sys.modules, "evsim_test_fake_module", object())
    assert threads._blas_controllers() is not first
