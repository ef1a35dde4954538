"""evsim train: bad --checkpoint paths, a second training on one checkpoint and a
missing GPU are refused early with one clear line and exit status 2."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from evsim import cli

TINY = ["train", "--task", "digits", "--epochs", "1", "--hidden", "8", "--limit", "32",
        "--no-progress"]


def _error(capsys, argv):
    status = cli.main(argv)
    err = capsys.readouterr().err
    return status, err


def test_checkpoint_in_a_missing_folder(tmp_path, capsys):
    given = str(tmp_path / "nope" / "run.h5")
    status, err = _error(capsys, TINY + ["--checkpoint", given])
    assert status == 2 and given in err and "does not exist" in err
    assert "epoch" not in err and ".tmp" not in err


def test_checkpoint_is_a_directory(tmp_path, capsys):
    status, err = _error(capsys, TINY + ["--checkpoint", str(tmp_path)])
    assert status == 2 and str(tmp_path) in err and "is a directory" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_checkpoint_folder_not_writable(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        given = str(folder / "run.h5")
        status, err = _error(capsys, TINY + ["--checkpoint", given])
    finally:
        folder.chmod(0o700)
    assert status == 2 and given in err and "cannot write" in err


def test_second_training_on_one_checkpoint_is_refused(tmp_path, capsys):
    path = tmp_path / "run.h5"
    ready, release = tmp_path / "ready", tmp_path / "release"
    code = textwrap.dedent(f"""
        import os, time
        from evsim.io import FileLock
        with FileLock({str(path)!r}, "an evsim train run"):
            open({str(ready)!r}, "w").close()
            while not os.path.exists({str(release)!r}):
                time.sleep(0.02)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        t = time.time()
        while not ready.exists():
            assert proc.poll() is None and time.time() - t < 60
            time.sleep(0.02)
        status, err = _error(capsys, TINY + ["--checkpoint", str(path)])
        assert status == 2 and err.count("\n") == 1
        assert f"an evsim train run of process {proc.pid}" in err and str(path) in err
        assert not path.exists()
    finally:
        release.touch()
        proc.wait(timeout=60)
    assert cli.main(TINY + ["--checkpoint", str(path)]) == 0  # free once it ended
    assert path.exists() and not os.path.exists(str(path) + ".lock")


def test_cuda_backend_without_gpu(capsys, monkeypatch):
    from evsim.kernels import cuda as kcuda

    def missing():
        raise RuntimeError("no CUDA GPU was found\n(driver says: none)")

    monkeypatch.setattr(kcuda, "require", missing)
    status, err = _error(capsys, TINY + ["--backend", "cuda"])
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("evsim: error: --backend cuda")
    assert "Traceback" not in err


def test_cuda_backend_without_gpu_in_a_real_process():
    from evsim.kernels import cuda as kcuda

    try:
        kcuda.require()
    except (RuntimeError, ImportError):
        pass
    else:
        pytest.skip("a CUDA device (or the simulator) is available here")
    proc = subprocess.run([sys.executable, "-m", "evsim.cli", *TINY, "--backend", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "--backend cuda" in proc.stderr
