"""Array-in, array-out kernels: the cell maths, NumPy reference, Numba CPU and CUDA.

Numba caches compiled kernels next to their source and checks only the
timestamp of the file that defines each kernel, not of the files it calls
into: a kernel of ``cpu_seq.py`` compiled with the helpers of ``cpu.py`` (and
the cell maths of ``_cell.py``) would keep running old helper code after those
files change. So the cache of these modules is dropped when any of their
sources differs from the sources it was built from: in ``__pycache__`` next to
them, and in ``NUMBA_CACHE_DIR`` when that is set.
"""

import hashlib
import os
import tempfile
from pathlib import Path

_SOURCES = ("_cell.py", "cpu.py", "cpu_seq.py", "cpu_dense.py", "cpu_events.py", "cuda.py",
            "lif.py", "snn_loop.py")


def _cache_folders(here):
    """Where Numba keeps these modules' caches: next to the sources, and under
    ``NUMBA_CACHE_DIR`` when that is set (Numba then uses it first)."""
    folders = [here / "__pycache__"]
    try:
        from numba.core import caching, config

        if config.CACHE_DIR:
            sub = caching.UserProvidedCacheLocator.get_suitable_cache_subpath(
                str(here / "cpu.py"))
            folders.append(Path(config.CACHE_DIR) / sub)
    except (ImportError, AttributeError):  # another Numba layout: the default folder only
        pass
    return folders


def _drop_stale_cache():
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _SOURCES:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            pass
    want = digest.hexdigest()
    for cache in _cache_folders(here):
        _drop_in(cache, want)


def _drop_in(cache, want):
    """Remove this package's kernel caches in ``cache`` unless they were built
    from the sources with digest ``want``."""
    stamp = cache / "evsim-kernels.sources"
    try:
        if stamp.read_text() == want:
            return
    except OSError:
        pass
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for f in cache.iterdir():
            if f.suffix in (".nbi", ".nbc") and f.name.split(".")[0] + ".py" in _SOURCES:
                f.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".sources.")
        with os.fdopen(fd, "w") as out:
            out.write(want)
        os.replace(tmp, stamp)  # atomic: another process sees the old stamp or this one
    except OSError:  # read-only install: Numba then caches elsewhere or not at all
        pass


_drop_stale_cache()
