"""Bad arguments to the functional API raise ValueError/TypeError naming the argument."""

import numpy as np
import pytest
from conftest import make_problem

from evsim import egru_backward, egru_forward, gru_backward, gru_forward


@pytest.fixture
def args():
    """Valid keyword arguments of egru_forward for T=3, B=2, I=4, H=5, float64."""
    p = make_problem(T=3, B=2, I=4, H=5, seed=0)
    return dict(x=p.x, W=p.W, R=p.R, bx=p.bx, br=p.br, thr=p.thr, h0=p.h0, y0=p.y0)


def _call(args, backend="cpu", **changes):
    kw = dict(args, **changes)
    pos = [kw.pop(k) for k in ("x", "W", "R", "bx", "br", "thr")]
    return egru_forward(*pos, backend=backend, **kw)


def test_valid_arguments_run(args):
    for backend in ("cpu", "dense", "reference"):
        _call(args, backend)


WRONG_SHAPES = {
    "x": [(3, 2), (3, 2, 4, 1)],
    "W": [(3, 15), (4, 14), (15, 4), (4, 15, 1)],
    "R": [(5, 14), (4, 15), (15, 5), (5,)],
    "bx": [(14,), (15, 1), (5,)],
    "br": [(16,), (1, 15)],
    "thr": [(4,), (5, 1), (15,)],
    "h0": [(2, 4), (3, 5), (5,), (1, 2, 5)],
    "y0": [(2, 6), (1, 5)],
}


@pytest.mark.parametrize("name, shape", [(k, s) for k, v in WRONG_SHAPES.items() for s in v])
def test_wrong_shape_names_argument(args, name, shape):
    bad = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        _call(args, **{name: bad})


@pytest.mark.parametrize("name", ["x", "W", "R", "bx", "br", "thr", "h0", "y0"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float16, np.complex128, bool])
def test_non_float_dtype_names_argument(args, name, dtype):
    bad = args[name].astype(dtype)
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        _call(args, **{name: bad})


@pytest.mark.parametrize("name", ["W", "R", "bx", "br", "thr", "h0", "y0"])
def test_mixed_float32_float64_names_argument(args, name):
    with pytest.raises(TypeError, match=rf"\b{name}\b.*float64"):
        _call(args, **{name: args[name].astype(np.float32)})


def test_float32_x_with_float64_weights(args):
    with pytest.raises(TypeError, match=r"\bR\b"):
        _call(args, x=args["x"].astype(np.float32))


@pytest.mark.parametrize("name", ["x", "W", "R", "bx", "br", "thr", "h0", "y0"])
def test_not_an_array_names_argument(args, name):
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        _call(args, **{name: args[name].tolist()})


@pytest.mark.parametrize("name", ["x", "W", "R", "h0", "y0"])
def test_non_contiguous_names_argument(args, name):
    a = args[name]
    bad = np.asfortranarray(a) if a.ndim == 2 else np.ascontiguousarray(
        np.swapaxes(a, 0, 1)).swapaxes(0, 1)
    assert bad.shape == a.shape and not bad.flags.c_contiguous
    with pytest.raises(ValueError, match=rf"\b{name}\b.*contiguous"):
        _call(args, **{name: bad})


@pytest.mark.parametrize("name", ["bx", "br", "thr"])
def test_strided_vector_names_argument(args, name):
    bad = np.repeat(args[name], 2)[::2]
    assert not bad.flags.c_contiguous
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        _call(args, **{name: bad})


@pytest.mark.parametrize("name", ["x", "W", "R", "bx", "br", "thr", "h0", "y0"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_names_argument(args, name, value):
    bad = args[name].copy()
    bad.flat[bad.size // 2] = value
    with pytest.raises(ValueError, match=rf"\b{name}\b.*(NaN|finite)"):
        _call(args, **{name: bad})


@pytest.mark.parametrize("name, value, exc", [
    ("support", 0.0, ValueError), ("support", -1.0, ValueError),
    ("support", np.inf, ValueError), ("support", np.nan, ValueError),
    ("support", "wide", TypeError), ("support", None, None),
    ("damp", -0.1, ValueError), ("damp", np.nan, ValueError), ("damp", [1.0], TypeError),
    ("damp", 0.0, None),
    ("zoneout", -0.1, ValueError), ("zoneout", 1.0, ValueError), ("zoneout", 1.5, ValueError),
    ("dropconnect", -0.5, ValueError), ("dropconnect", 1.0, ValueError),
    ("trace_alpha", 1.5, ValueError), ("trace_alpha", -0.1, ValueError),
    ("trace_alpha", "a", TypeError),
])
def test_bad_scalars_name_argument(args, name, value, exc):
    if exc is None:
        _call(args, **{name: value})
        return
    with pytest.raises(exc, match=rf"\b{name}\b"):
        _call(args, **{name: value})


@pytest.mark.parametrize("shape, name", [((0, 2, 4), "x"), ((3, 0, 4), "x"),
                                         ((3, 2, 0), "x")])
def test_zero_size_x(args, shape, name):
    T, B, In = shape
    kw = dict(args, x=np.zeros(shape), W=np.zeros((In, 15)), h0=None, y0=None)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        _call(kw)


def test_zero_units(args):
    kw = dict(args, W=np.zeros((4, 0)), R=np.zeros((0, 0)), bx=np.zeros(0), br=np.zeros(0),
              thr=np.zeros(0), h0=None, y0=None)
    with pytest.raises(ValueError, match=r"\bR\b"):
        _call(kw)


@pytest.mark.parametrize("lengths", [
    [3, 3, 3], [3], [0, 3], [3, 4], [-1, 2], [1.0, 2.0], np.array([[1, 2]]), [True, True],
    "ab",
])
def test_bad_lengths(args, lengths):
    with pytest.raises(ValueError, match=r"\blengths\b"):
        _call(args, lengths=lengths)


def test_good_lengths_accepted(args):
    for lengths in ([1, 3], np.array([3, 2], np.int32), (2, 2)):
        _call(args, lengths=lengths)


def test_unknown_backend(args):
    with pytest.raises(ValueError, match=r"backend.*'gpu'"):
        _call(args, backend="gpu")


def test_masks(args):
    with pytest.raises(ValueError, match=r"\bzoneout_mask\b"):
        _call(args, zoneout_mask=np.ones((3, 2, 4)))
    with pytest.raises(ValueError, match=r"\bzoneout_mask\b"):
        _call(args, zoneout_mask=np.ones((3, 2, 5)), training=False)
    with pytest.raises(TypeError, match=r"\bzoneout_mask\b"):
        _call(args, zoneout_mask=np.ones((3, 2, 5), np.float32))
    with pytest.raises(ValueError, match=r"\bdropconnect_mask\b"):
        _call(args, dropconnect_mask=np.ones((5, 14)))
    with pytest.raises(ValueError, match=r"\bdropconnect_mask\b"):
        _call(args, dropconnect_mask=np.ones((5, 15)), training=False)
    bad = np.ones((5, 15))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"\bdropconnect_mask\b"):
        _call(args, dropconnect_mask=bad)


# --------------------------------------------------------------------------
# Backward


def test_backward_needs_training_result(args):
    res = _call(args, training=False)
    with pytest.raises(ValueError, match=r"training=False"):
        egru_backward(res, np.ones_like(res.y))


def test_backward_dtrace_without_trace(args):
    res = _call(args)
    with pytest.raises(ValueError, match=r"\bdtrace\b"):
        egru_backward(res, None, dtrace=np.ones_like(res.y))
    res = _call(args, trace_alpha=0.9)
    with pytest.raises(ValueError, match=r"\bdtrace\b"):
        egru_backward(res, None, dtrace=np.ones((2, 2, 5)))


@pytest.mark.parametrize("name, shape", [("dy", (3, 2, 4)), ("dy", (2, 5)),
                                         ("dh_last", (2, 4)), ("dy_last", (3, 2, 5))])
def test_backward_wrong_shapes(args, name, shape):
    res = _call(args)
    kw = dict(dy=np.ones_like(res.y))
    kw[name] = np.ones(shape)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        egru_backward(res, kw.pop("dy"), kw.pop("dh_last", None), **kw)


@pytest.mark.parametrize("name", ["dy", "dh_last", "dy_last"])
def test_backward_wrong_dtype_and_nan(args, name):
    res = _call(args)
    good = {"dy": res.y, "dh_last": res.h_last, "dy_last": res.y_last}
    for bad, exc in ((good[name].astype(np.float32), TypeError),
                     (np.full_like(good[name], np.nan), ValueError),
                     (good[name].astype(np.int64), TypeError)):
        kw = dict(dict(dy=np.ones_like(res.y)), **{name: bad})
        with pytest.raises(exc, match=rf"\b{name}\b"):
            egru_backward(res, kw.pop("dy"), kw.pop("dh_last", None), **kw)


def test_backward_not_a_result():
    with pytest.raises(TypeError, match=r"\bresult\b"):
        egru_backward({"y": np.zeros((1, 1, 1))}, None)


# --------------------------------------------------------------------------
# GRU entry point


def test_gru_errors(args):
    kw = {k: args[k] for k in ("x", "W", "R", "bx", "br", "h0")}
    gru_forward(**kw)
    with pytest.raises(ValueError, match=r"\bh0\b"):
        gru_forward(**dict(kw, h0=np.zeros((2, 4))))
    with pytest.raises(TypeError, match=r"\bR\b"):
        gru_forward(**dict(kw, R=kw["R"].tolist()))
    with pytest.raises(TypeError, match=r"\bW\b"):
        gru_forward(**dict(kw, W=kw["W"].astype(np.float32)))
    res = gru_forward(**kw, training=False)
    with pytest.raises(ValueError, match=r"training=False"):
        gru_backward(res, np.ones_like(res.y))
