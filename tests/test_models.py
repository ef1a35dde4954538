"""Model builders: structure, names, options."""

import numpy as np
import pytest

from evsim import models
from evsim.populations import EGRU, GRU, DenseInput, Embedding, Readout


def test_sequence_classifier_structure():
    net = models.sequence_classifier(8, 16, 10, support=3.6, damp=3.6, seed=3)
    pops = net.populations
    assert isinstance(pops["x"], DenseInput) and pops["x"].size == 8
    assert type(pops["egru"]) is EGRU and pops["egru"].size == 16
    assert pops["egru"].support == 3.6 and pops["egru"].damp == 3.6
    assert isinstance(pops["out"], Readout) and pops["out"].size == 10
    params = net.params()
    assert params["x->egru.W"].shape == (8, 48)
    assert params["egru->out.W"].shape == (16, 10)
    assert net.threshold_params() == ["egru.thr"]
    assert net.seed == 3
    res = net.run({"x": np.zeros((5, 2, 8), np.float32)})
    assert res.outputs["out"].shape == (5, 2, 10)


def test_gru_model():
    net = models.sequence_classifier(4, 6, 3, model="gru", zoneout=0.1)
    assert isinstance(net.populations["gru"], GRU)
    assert net.threshold_params() == []
    with pytest.raises(ValueError, match="egru.? only"):
        models.sequence_classifier(4, 6, 3, model="gru", support=3.6)


def test_same_seed_same_weights():
    a = models.sequence_classifier(4, 6, 3, seed=1).params()
    b = models.sequence_classifier(4, 6, 3, seed=1).params()
    c = models.sequence_classifier(4, 6, 3, seed=2).params()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_language_model_and_regressor():
    lm = models.language_model(20, 5, 7)
    assert isinstance(lm.populations["x"], Embedding)
    assert lm.params()["x.E"].shape == (20, 5)
    assert lm.populations["out"].size == 20
    ids = np.zeros((4, 2), np.int64)
    assert lm.run({"x": ids}).outputs["out"].shape == (4, 2, 20)
    reg = models.regressor(2, 4, 1, dtype="float64")
    assert reg.params()["egru->out.W"].dtype == np.float64


@pytest.mark.parametrize("kw, match", [
    (dict(model="lstm"), "model must be"),
    (dict(hidden=0), "hidden"),
    (dict(n_classes=1.5), "n_classes"),
])
def test_bad_arguments(kw, match):
    args = dict(n_inputs=4, hidden=6, n_classes=3)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        models.sequence_classifier(**args)
