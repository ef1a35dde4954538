"""Smoke runs of the tutorials: each must exit 0, print its marker line and save its figure.

A tutorial that cannot run is a failure, never a skip (matplotlib is in the
``test`` extra); only a tutorial of an optional extra that is not installed
(``NEEDS``: torch) is skipped. The subprocess timeout only stops a hung run; no test here
asserts on wall-clock time.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"

CASES = [
    ("01_egru_events.py", ["01_egru_raster.png"], "events recorded"),
    ("02_ei_lif_network.py", ["02_ei_raster.png"], "mean rate"),
    ("03_record_hdf5.py", ["03_from_file.png", "03_events.h5", "03_states.h5",
                           "03_activity.h5"], "loaded:"),
    ("04_cuba.py", ["04_cuba.png"], "CUBA rate_hz="),
    ("05_own_data.py", ["05_own_data.png"], "predicted right"),
    ("06_torch_layer.py", ["06_torch_layer.png"], "EGRU test accuracy"),
    ("07_tradeoff.py", ["07_tradeoff.png"], "tradeoff:"),
]
#: tutorials that need an optional extra (module -> the extra that installs it)
NEEDS = {"06_torch_layer.py": ("torch", "torch")}


@pytest.mark.parametrize("script, files, marker", CASES, ids=[c[0] for c in CASES])
def test_tutorial_runs(tmp_path, script, files, marker):
    if script in NEEDS:  # an optional extra: skipped only when it is not installed
        module, extra = NEEDS[script]
        pytest.importorskip(module, reason=f"{script} needs the {extra!r} extra")
    env = dict(os.environ, MPLBACKEND="Agg", EVSIM_TUTORIAL_OUT=str(tmp_path))
    proc = subprocess.run([sys.executable, str(TUTORIALS / script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    assert marker in proc.stdout, proc.stdout
    for name in files:
        path = tmp_path / name
        assert path.exists() and path.stat().st_size > 0, f"{script} did not write {name}"


def test_every_tutorial_is_a_case():
    assert sorted(p.name for p in TUTORIALS.glob("[0-9]*.py")) == sorted(c[0] for c in CASES)


def test_tutorials_have_a_docstring_and_take_a_folder():
    for script, _, _ in CASES:
        text = (TUTORIALS / script).read_text()
        assert text.startswith('"""Tutorial'), script
        assert "EVSIM_TUTORIAL_OUT" in text and "matplotlib.use(\"Agg\")" in text, script


def test_readme_own_data_snippet_runs():
    readme = (TUTORIALS.parent / "README.md").read_text()
    section = readme.split("## Training on your own data", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    acc = float(proc.stdout.split("accuracy ", 1)[1].split(",", 1)[0])
    assert acc > 0.7, proc.stdout
