"""Checkpoints: validated fields, a checksum, never NaN/Inf, and settings compared on resume."""

import shutil

import h5py
import numpy as np
import pytest

from evsim import data, models
from evsim.io import FileFormatError
from evsim.training import Adam, Trainer, load_checkpoint, restore_checkpoint, save_checkpoint
from evsim.training.checkpoint import CheckpointMismatchError, DivergedError


def make_net(seed=0, **opts):
    return models.sequence_classifier(8, 8, 10, seed=seed, **opts)


def make_trainer(net, **kw):
    return Trainer(net, lr=1e-2, batch_size=16, progress=False, **kw)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint after one epoch (optimiser state and best parameters filled)."""
    path = tmp_path_factory.mktemp("ck") / "good.h5"
    sp = data.load_digits(split=(48, 16, 16))
    make_trainer(make_net(), checkpoint=path, patience=3).fit(sp.train, sp.valid, epochs=1)
    return path


def _edit(saved, tmp_path, change, keep_checksum=False):
    path = tmp_path / "edited.h5"
    shutil.copy(saved, path)
    with h5py.File(path, "a") as f:
        if change(f) == "keep":
            keep_checksum = True
        if not keep_checksum and "checksum" in f.attrs:
            del f.attrs["checksum"]
    return path


def _first(f, group):
    return f"{group}/" + sorted(f[group])[0]


def _replace(f, name, value):
    del f[name]
    f[name] = value


def _pop(f, group):
    name = _first(f, group)
    del f[name]
    return name


def _restore(path):
    return restore_checkpoint(path, make_net(), Adam(1e-2))


# (name, change, pattern the message must hold besides the file name)
FILE_CASES = [
    ("no params", lambda f: f.__delitem__("params"), "params"),
    ("no optimizer", lambda f: f.__delitem__("optimizer"), "optimizer"),
    ("no net_rng", lambda f: f.__delitem__("net_rng"), "net_rng"),
    ("no epoch", lambda f: f.attrs.__delitem__("epoch"), "'epoch'"),
    ("epoch text", lambda f: f.attrs.__setitem__("epoch", "three"), "'epoch'"),
    ("epoch float", lambda f: f.attrs.__setitem__("epoch", 1.5), "'epoch'"),
    ("epoch array", lambda f: f.attrs.__setitem__("epoch", [1, 2]), "'epoch'"),
    ("epoch negative", lambda f: f.attrs.__setitem__("epoch", -3), "'epoch'"),
    ("history not JSON", lambda f: f.attrs.__setitem__("history", "[{"), "'history'"),
    ("history a dict", lambda f: f.attrs.__setitem__("history", '{"a": 1}'), "'history'"),
    ("history of numbers", lambda f: f.attrs.__setitem__("history", "[1, 2]"), "'history'"),
    ("trainer_state a list", lambda f: f.attrs.__setitem__("trainer_state", "[1]"),
     "'trainer_state'"),
    ("trainer_rng without name", lambda f: f.attrs.__setitem__("trainer_rng", '{"x": 1}'),
     "'trainer_rng'"),
    ("model_config not JSON", lambda f: f.attrs.__setitem__("model_config", "{"),
     "'model_config'"),
    ("optimizer name a number", lambda f: f.attrs.__setitem__("optimizer", 5), "'optimizer'"),
    ("format_version text", lambda f: f.attrs.__setitem__("format_version", "one"),
     "'format_version'"),
    ("param as text", lambda f: _replace(f, _first(f, "params"), "abc"), "params/"),
    ("param as ints", lambda f: _replace(f, _first(f, "params"),
                                         np.zeros(f[_first(f, "params")].shape, np.int64)),
     "params/"),
    ("param a group", lambda f: f.create_group(_pop(f, "params")), "params/"),
    ("param NaN", lambda f: _replace(f, _first(f, "params"),
                                     np.full(f[_first(f, "params")].shape, np.nan, np.float32)),
     "diverged"),
    ("optimizer slot Inf", lambda f: _replace(
        f, [f"optimizer/{k}" for k in f["optimizer"] if k.startswith("state:")][0],
        np.full(f[[f"optimizer/{k}" for k in f["optimizer"]
                   if k.startswith("state:")][0]].shape, np.inf, np.float32)), "diverged"),
    ("checksum a number", lambda f: (f.attrs.__setitem__("checksum", 7), "keep")[1],
     "'checksum'"),
]


@pytest.mark.parametrize("name,change,pattern", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_damaged_checkpoint_fields(saved, tmp_path, name, change, pattern):
    path = _edit(saved, tmp_path, change)
    with pytest.raises((FileFormatError, DivergedError)) as err:
        _restore(path)
    assert str(path) in str(err.value) and pattern in str(err.value), str(err.value)


RESTORE_CASES = [
    ("optimizer key missing", lambda f: f.__delitem__("optimizer/num_steps"), "'optimizer'"),
    ("net_rng key missing", lambda f: f.__delitem__(_first(f, "net_rng")), "'net_rng'"),
    ("net_rng garbage", lambda f: _replace(f, _first(f, "net_rng"), "garbage"), "'net_rng'"),
    ("trainer_rng bad state", lambda f: f.attrs.__setitem__(
        "trainer_rng", '{"bit_generator": "PCG64", "state": {}}'), "'trainer_rng'"),
    ("trainer_rng unknown", lambda f: f.attrs.__setitem__(
        "trainer_rng", '{"bit_generator": "Nope"}'), "'trainer_rng'"),
]


@pytest.mark.parametrize("name,change,pattern", RESTORE_CASES,
                         ids=[c[0] for c in RESTORE_CASES])
def test_damaged_checkpoint_state_refused_before_any_change(saved, tmp_path, name, change,
                                                            pattern):
    path = _edit(saved, tmp_path, change)
    net = make_net()
    before = {k: v.copy() for k, v in net.params().items()}
    with pytest.raises(FileFormatError) as err:
        restore_checkpoint(path, net, Adam(1e-2))
    assert str(path) in str(err.value) and pattern in str(err.value), str(err.value)
    for k, v in net.params().items():
        np.testing.assert_array_equal(v, before[k])


def test_checksum_detects_an_edited_value(saved, tmp_path):
    def bump(f):
        name = _first(f, "params")
        value = f[name][()]
        value.flat[0] += 1
        f[name][...] = value
    path = _edit(saved, tmp_path, bump, keep_checksum=True)
    with pytest.raises(FileFormatError, match="checksum"):
        load_checkpoint(path)
    with h5py.File(saved, "r") as f:
        assert len(f.attrs["checksum"]) == 64


def test_changed_shape_without_checksum_names_the_parameter(saved, tmp_path):
    path = _edit(saved, tmp_path, lambda f: _replace(f, _first(f, "params"),
                                                     np.zeros((2, 3), np.float32)))
    with pytest.raises(CheckpointMismatchError, match="shape"):
        _restore(path)


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.002])
def test_truncated_checkpoint(saved, tmp_path, keep):
    path = tmp_path / "cut.h5"
    raw = saved.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(FileFormatError, match=str(path)):
        _restore(path)


@pytest.mark.parametrize("what", ["param", "best", "optimizer"])
def test_non_finite_state_is_never_written(tmp_path, what):
    net, opt = make_net(), Adam(1e-2)
    path = tmp_path / "c.h5"
    save_checkpoint(path, net, opt, epoch=1)
    best = None
    if what == "param":
        next(iter(net.params().values())).flat[3] = np.nan
    elif what == "best":
        best = {k: np.full_like(v, np.inf) for k, v in net.params().items()}
    else:
        state = dict(opt.state_dict(), **{"state:W:m": np.array([0.0, np.inf])})
        opt.state_dict = lambda: state
    with pytest.raises(DivergedError, match="diverged"):
        save_checkpoint(path, net, opt, epoch=2, best_params=best)
    assert load_checkpoint(path).epoch == 1  # the previous checkpoint is intact


def test_resume_with_other_settings_lists_the_differences(saved, tmp_path):
    path = tmp_path / "c.h5"
    shutil.copy(saved, path)
    train = data.load_digits(split=(48, 16, 16)).train
    other = make_trainer(make_net(seed=5, zoneout=0.1), checkpoint=path)
    with pytest.raises(CheckpointMismatchError) as err:
        other.fit(train, epochs=2, resume=True)
    msg = str(err.value)
    assert "other settings" in msg and "seed: 0 in the checkpoint, 5 now" in msg
    assert "zoneout: 0.0 in the checkpoint, 0.1 now" in msg


def test_settings_dict_compared(saved, tmp_path):
    path = tmp_path / "s.h5"
    net, opt = make_net(), Adam(1e-2)
    save_checkpoint(path, net, opt, epoch=1, settings={"task": "digits", "hidden": 8})
    restore_checkpoint(path, make_net(), Adam(1e-2), settings={"task": "digits", "hidden": 8})
    with pytest.raises(CheckpointMismatchError, match=r"task: 'digits' in the checkpoint, "
                                                      r"'copy' now"):
        restore_checkpoint(path, make_net(), Adam(1e-2), settings={"task": "copy", "hidden": 8})
