"""evsim.sweep and `evsim sweep`: grid checks, a 2-worker local cluster, failed
points, resume, a killed worker, and sweep points equal to direct runs."""

import os

import numpy as np
import pytest

from evsim import cli, sweep

TINY = dict(epochs=1, limit=64, hidden=8, batch_size=32)


def point(x, scale=1.0, marker=None):
    """A sub-second simulation stand-in: fails at x == 3; with ``marker``, kills
    its own worker process the first time it runs."""
    if marker is not None and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    if x == 3:
        raise RuntimeError("x == 3 is refused")
    rng = np.random.default_rng(x)
    return {"value": float(rng.normal() * scale), "pid": os.getpid()}


# ---------------------------------------------------------------- grid checks
@pytest.mark.parametrize("grid, message", [
    ({"y": [1, 2]}, "unknown grid parameter 'y'"),
    ({"x": []}, "no values"),
    ({"x": [1], "scale": ["big"]}, "is a str"),
    ({"x": [1, 1]}, "repeated values"),
    ({"x": 3}, "list of values"),
    ({"x": [[1]]}, "not a number or a string"),
    ({"scale": [1.0]}, "no value for x"),
    ({}, "non-empty dict"),
])
def test_bad_function_grid(tmp_path, grid, message):
    with pytest.raises(ValueError, match=message):
        sweep.run(point, grid, out=str(tmp_path / "t.csv"), progress=False)
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("grid, message", [
    ({"hiden": [8]}, "unknown grid parameter 'hiden'"),
    ({"seed": ["a"]}, "not a valid int"),
    ({"seed": [0.5]}, "not an integer"),
    ({"model": ["lstm"]}, "not one of"),
    ({"checkpoint": ["a.h5"]}, "cannot be set"),
    ({"epochs": [1]}, "also a fixed option"),
])
def test_bad_train_grid(tmp_path, grid, message):
    with pytest.raises(ValueError, match=message):
        sweep.run(sweep.TrainTask(**TINY), grid, out=str(tmp_path / "t.csv"))


def test_parse_param_and_points():
    assert sweep.parse_param("seed=0,1, 2") == ("seed", ["0", "1", "2"])
    for bad in ("seed", "=1", "seed=", "seed=1,,2"):
        with pytest.raises(ValueError):
            sweep.parse_param(bad)
    assert sweep.grid_points({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"},
                                                            {"a": 2, "b": "x"}]


@pytest.mark.parametrize("argv, message", [
    (["--param", "seed"], "NAME=V1"),
    (["--param", "seed=0", "--param", "seed=1"], "twice"),
    (["--param", "foo=1"], "unknown grid parameter"),
    (["--param", "hidden=8", "--hidden", "8"], "both fixed and swept"),
    (["--param", "seed=0", "--workers", "0"], "--workers"),
])
def test_cli_sweep_errors(tmp_path, capsys, argv, message):
    assert cli.main(["sweep", "--out", str(tmp_path / "t.csv")] + argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_train_is_unchanged_by_the_refactor(capsys):
    """`evsim train` still parses and has no sweep options."""
    args = cli.build_parser().parse_args(["train", "--seed", "3"])
    assert args.seed == 3 and not hasattr(args, "param")


# ---------------------------------------------------------------- on a cluster
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


def test_function_sweep_failure_and_resume(tmp_path, client):
    h5py = pytest.importorskip("h5py")
    out = str(tmp_path / "t.csv")
    rows = sweep.run(point, {"x": [1, 2, 3, 4], "scale": [1.0, 2.0]}, client=client, out=out,
                     progress=False)
    assert len(rows) == 8
    bad = [r for r in rows if r["status"] != "ok"]
    assert [r["x"] for r in bad] == [3, 3]
    assert "x == 3 is refused" in bad[0]["error"]
    good = next(r for r in rows if r["x"] == 2 and r["scale"] == 2.0)
    assert good["value"] == point(2, 2.0)["value"]  # the same as a direct call
    table = sweep.read_table(out)
    assert [(r["x"], r["scale"], r["status"]) for r in table] == [
        (r["x"], r["scale"], r["status"]) for r in rows]
    assert all(r["wall_s"] > 0 for r in table)
    with h5py.File(str(tmp_path / "t.h5")) as f:
        np.testing.assert_array_equal(f["x"][()], [1, 1, 2, 2, 3, 3, 4, 4])
        assert f["value"][()][3] == good["value"]
        assert f["status"].asstr()[()].tolist().count("error") == 2
    # resume: the ok points are not run again (their pids stay), the failed ones are
    again = sweep.run(point, {"x": [1, 2, 3, 4], "scale": [1.0, 2.0]}, client=client, out=out,
                      progress=False)
    ok_before = {(r["x"], r["scale"]): r["pid"] for r in rows if r["status"] == "ok"}
    assert {(r["x"], r["scale"]): r["pid"] for r in again if r["status"] == "ok"} == ok_before
    assert sum(r["status"] == "error" for r in again) == 2
    assert len(sweep.read_table(out)) == 8
    # a grown grid runs only the new points
    more = sweep.run(point, {"x": [1, 2, 3, 4, 5], "scale": [1.0, 2.0]}, client=client,
                     out=out, progress=False)
    assert len(more) == 10 and [r["x"] for r in more[-2:]] == [5, 5]


def test_killed_worker_loses_only_its_point(tmp_path, client):
    marker = str(tmp_path / "killed-once")
    out = str(tmp_path / "t.csv")
    rows = sweep.run(point, {"x": [10, 11], "marker": [marker]}, client=client, out=out,
                     progress=False)
    assert os.path.exists(marker)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [r["value"] for r in rows] == [point(10)["value"], point(11)["value"]]
    client.wait_for_workers(2, timeout=60)


def test_train_points_equal_direct_runs(tmp_path, client):
    out = str(tmp_path / "t.csv")
    task = sweep.TrainTask(**TINY)
    rows = sweep.run(task, {"seed": [0, 1], "activity_strength": [0, 10]}, client=client,
                     out=out, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 4, rows
    direct = task(seed=1, activity_strength=10.0)
    row = rows[3]
    assert (row["seed"], row["activity_strength"]) == (1, 10.0)
    for key in ("test_accuracy", "test_loss", "activity", "backward_sparsity", "fwd_macs",
                "fwd_macs_dense", "bwd_macs", "bwd_macs_dense"):
        assert row[key] == direct[key], key
    # the table holds the same numbers (CSV round trip)
    assert sweep.read_table(out)[3]["test_accuracy"] == direct["test_accuracy"]


def test_cli_sweep_against_a_scheduler(tmp_path, client, capsys):
    out = str(tmp_path / "cli.csv")
    argv = ["sweep", "--scheduler", client.scheduler.address, "--out", out, "--no-progress",
            "--param", "seed=0,1", "--epochs", "1", "--limit", "64", "--hidden", "8",
            "--batch-size", "32"]
    assert cli.main(argv) == 0
    assert "2 points, 0 failed" in capsys.readouterr().out
    table = sweep.read_table(out)
    assert [r["seed"] for r in table] == [0, 1]
    assert table[0]["options"] == ("evsim train --batch-size 32 --epochs 1 --hidden 8 "
                                   "--limit 64")
    for col in ("test_accuracy", "activity", "backward_sparsity", "fwd_macs", "bwd_macs_dense",
                "wall_s", "status"):
        assert col in table[0]
    assert cli.main(argv) == 0  # resumed: nothing to run
    assert "2 points, 0 failed" in capsys.readouterr().out


def test_own_local_cluster(tmp_path):
    """With no client, a local cluster of 2 one-thread workers is started and closed."""
    pytest.importorskip("distributed")
    out = str(tmp_path / "t.csv")
    rows = sweep.run(point, {"x": [1, 2, 4]}, workers=2, out=out, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert len({r["pid"] for r in rows} - {os.getpid()}) >= 1
    assert sweep.run(point, {"x": [1, 2, 4]}, workers=2, out=out, progress=False) == \
        sweep.read_table(out)  # nothing left to run: no cluster, the table as it is
