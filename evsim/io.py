"""HDF5 files: atomic writes, a versioned header, and flat array dictionaries.

Every evsim file carries attributes ``evsim_format`` (the kind of file, e.g.
"network" or "checkpoint"), ``format_version``, ``evsim_version``, ``seed`` and
``dt``. Writes go to a temporary file in the same folder that is renamed over
the target only when complete, so a crash never leaves a half-written file
under the real name. Reading checks the header first and raises a clear error
for a foreign, truncated or newer file.
"""

import contextlib
import os
import tempfile

import h5py
import numpy as np

from evsim._version import __version__

FORMAT_VERSION = 1


class FileFormatError(ValueError):
    """The file is not an evsim file of the expected kind or version."""


@contextlib.contextmanager
def atomic_h5(path, kind, seed=None, dt=1.0, **attrs):
    """Open a new HDF5 file for writing; it appears under ``path`` only on success.

    Yields an ``h5py.File`` whose header attributes are already written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            write_header(f, kind, seed=seed, dt=dt, **attrs)
            yield f
            f.flush()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_header(f, kind, seed=None, dt=1.0, **attrs):
    """Write the evsim header attributes on an open file or group."""
    f.attrs["evsim_format"] = kind
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["evsim_version"] = __version__
    f.attrs["seed"] = -1 if seed is None else int(seed)
    f.attrs["dt"] = float(dt)
    for key, value in attrs.items():
        f.attrs[key] = value


def open_checked(path, kind):
    """Open an evsim HDF5 file for reading after checking its header.

    Raises
    ------
    FileNotFoundError
        No such file.
    FileFormatError
        Not HDF5, truncated, not an evsim file, another kind, or a newer format.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise FileFormatError(f"{path} is not a readable HDF5 file (truncated or foreign?): "
                              f"{err}") from None
    found = f.attrs.get("evsim_format")
    if isinstance(found, bytes):
        found = found.decode()
    if found is None:
        f.close()
        raise FileFormatError(f"{path} is an HDF5 file but not one written by evsim "
                              f"(no 'evsim_format' attribute)")
    if found != kind:
        f.close()
        raise FileFormatError(f"{path} holds an evsim {found!r} file, expected {kind!r}")
    version = int(f.attrs.get("format_version", -1))
    if version > FORMAT_VERSION or version < 1:
        f.close()
        raise FileFormatError(f"{path} has format version {version}; this evsim "
                              f"({__version__}) reads versions 1..{FORMAT_VERSION}: upgrade evsim")
    return f


def save_arrays(group, arrays):
    """Write a flat ``name -> array or scalar`` dict as datasets of ``group``.

    Names may contain dots and colons; they are stored verbatim (no nesting).
    """
    for name, value in arrays.items():
        key = name.replace("/", "|")
        group.create_dataset(key, data=np.asarray(value))


def load_arrays(group):
    """Read back a dict written by :func:`save_arrays` (0-d datasets become scalars)."""
    out = {}
    for key, dset in group.items():
        value = dset[()]
        if isinstance(value, bytes):
            value = value.decode()
        out[key.replace("|", "/")] = value
    return out
