"""HDF5 files: atomic writes, a versioned header, and flat array dictionaries.

Every evsim file carries attributes ``evsim_format`` (the kind of file, e.g.
"network" or "checkpoint"), ``format_version``, ``evsim_version``, ``seed`` and
``dt``. Writes go to a temporary file in the same folder that is renamed over
the target only when complete, so a crash never leaves a half-written file
under the real name; the temporary name carries the writer's pid, and a
later save deletes the temporaries of dead processes. :class:`FileLock` gives
one process the right to write a path (a lock file next to it). Reading checks
the header first and raises a clear error for a foreign, truncated or newer
file; :class:`FileFormatError` names the file and the field at fault.
"""

import contextlib
import hashlib
import os
import secrets
import socket
import time
import warnings

import h5py
import numpy as np

from evsim._version import __version__

FORMAT_VERSION = 1
TMP_SUFFIX = ".evsim-tmp"
LOCK_SUFFIX = ".lock"


class FileFormatError(ValueError):
    """The file is not an evsim file of the expected kind or version, or is damaged.

    The message names the file and, where one is at fault, the field.
    """


class FileInUseError(RuntimeError):
    """Another live process (or another object of this one) writes to the file."""


# --------------------------------------------------------------------------
# Processes, locks and temporary files


def pid_alive(pid):
    """True when a process ``pid`` exists on this machine (or cannot be told apart)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _read_owner(lock):
    """(pid, host, use) written in a lock file; Nones when empty or unreadable."""
    try:
        with open(lock) as fh:
            text = fh.read().split(maxsplit=2)
        return (int(text[0]), text[1] if len(text) > 1 else None,
                text[2].strip() if len(text) > 2 else "a writer")
    except (OSError, ValueError, IndexError):
        return None, None, None


class FileLock:
    """An exclusive lock on ``target``: the file ``target + ".lock"`` holding the
    owner's pid and host, created with ``O_CREAT | O_EXCL``.

    ``what`` names the use in the error ("an event stream", "a training").
    A lock left by a dead process of this host is taken over with a warning;
    one of a live process raises :class:`FileInUseError`. Released by
    :meth:`release` (also a context manager).
    """

    def __init__(self, target, what="a writer"):
        self.target = os.fspath(target)
        self.path = self.target + LOCK_SUFFIX
        self.what = what
        self.held = False

    def acquire(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        host = socket.gethostname()
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(f"{os.getpid()} {host} {self.what}\n")
                self.held = True
                return self
            pid, owner_host, use = _read_owner(self.path)
            if pid is None:  # being written right now, or emptied: wait a little
                time.sleep(0.02)
                pid, owner_host, use = _read_owner(self.path)
                if pid is None:
                    continue
            if (owner_host not in (None, host)) or pid_alive(pid):
                where = "" if owner_host in (None, host) else f" on host {owner_host}"
                me = " (this process)" if pid == os.getpid() and owner_host == host else ""
                raise FileInUseError(
                    f"{self.target} is in use: {use} of process {pid}{where}{me} "
                    f"writes to it (lock file {self.path}). Choose another path, or wait "
                    f"for that process to end; delete the lock file only if no process "
                    f"writes there")
            warnings.warn(f"{self.path}: taking over the lock left by process {pid}, "
                          f"which no longer runs (it was killed or crashed); "
                          f"{self.target} may hold its unfinished data",
                          RuntimeWarning, stacklevel=3)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        raise FileInUseError(f"{self.target}: could not take the lock {self.path}")

    def release(self):
        if self.held:
            self.held = False
            if _read_owner(self.path)[0] == os.getpid():
                with contextlib.suppress(OSError):
                    os.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()


def temp_name(path):
    """A temporary name next to ``path`` carrying this process's pid."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def remove_orphan_temps(folder):
    """Delete the temporary files of atomic saves whose process is dead; return them."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not name.endswith(TMP_SUFFIX):
            continue
        try:
            pid = int(name[:-len(TMP_SUFFIX)].rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


# --------------------------------------------------------------------------
# Writing


@contextlib.contextmanager
def atomic_h5(path, kind, seed=None, dt=1.0, **attrs):
    """Open a new HDF5 file for writing; it appears under ``path`` only on success.

    Yields an ``h5py.File`` whose header attributes are already written. The
    temporary file carries the pid of the writer; temporary files left in the
    folder by killed processes are deleted first.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_orphan_temps(folder)
    tmp = temp_name(path)
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


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def describe_unreadable(path, err):
    """Why h5py could not open ``path``: a truncated (or damaged) HDF5 file
    when it starts with the HDF5 signature, else a file that is not HDF5."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_HDF5_SIGNATURE))
        size = os.path.getsize(path)
    except OSError:
        head, size = b"", None
    if head == _HDF5_SIGNATURE:
        return (f"{path} is truncated or damaged: it starts as an HDF5 file ({size} bytes) "
                f"but its structure cannot be read ({err}); the write that made it did not "
                f"finish. Re-record it or restore a copy")
    return f"{path} is not an HDF5 file (not written by evsim, or empty): {err}"


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
        raise FileFormatError(describe_unreadable(path, err)) from None
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
    raw = f.attrs.get("format_version", -1)
    try:
        version = int(np.asarray(raw))
    except (TypeError, ValueError):
        f.close()
        raise FileFormatError(f"{path}: attribute 'format_version' is not an integer "
                              f"({raw!r})") from None
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


def load_arrays(group, path=None):
    """Read back a dict written by :func:`save_arrays` (0-d datasets become scalars).

    A dataset that cannot be read raises :class:`FileFormatError` naming the
    file (``path``, default the group's file) and the field.
    """
    path = group.file.filename if path is None else os.fspath(path)
    out = {}
    for key in list(group.keys()):
        field = f"{group.name.strip('/')}/{key}"
        try:
            dset = group[key]
            if not isinstance(dset, h5py.Dataset):
                raise TypeError("a group where a dataset was expected")
            value = dset[()]
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            raise FileFormatError(f"{path}: field {field!r} cannot be read ({err}); the "
                                  f"file is damaged or truncated") from None
        if isinstance(value, bytes):
            value = value.decode()
        out[key.replace("|", "/")] = value
    return out


def arrays_checksum(arrays):
    """sha256 (hex) over a ``name -> array`` dict: names in sorted order, each
    with its dtype, shape and bytes (C order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[name]))
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def verify_checksum(path, f, arrays, attr="params_sha256", what="parameters"):
    """Raise FileFormatError when the attribute ``attr`` of ``f`` (if present)
    differs from the checksum of ``arrays``."""
    stored = f.attrs.get(attr)
    if stored is None:
        return
    if isinstance(stored, bytes):
        stored = stored.decode()
    if stored != arrays_checksum(arrays):
        raise FileFormatError(f"{os.fspath(path)}: the checksum of the {what} (attribute "
                              f"{attr!r}) does not match their values: the file was "
                              f"edited or damaged. Restore a copy or save again")


def attr_value(path, f, key, kind, default=None):
    """The attribute ``key`` of ``f`` converted by ``kind`` (int, float, str, "json"),
    FileFormatError naming file and field otherwise. ``default``: when absent
    (None: the attribute is required)."""
    import json

    if key not in f.attrs:
        if default is not None:
            return default
        raise FileFormatError(f"{os.fspath(path)}: attribute {key!r} is missing")
    raw = f.attrs[key]
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        if kind == "json":
            return json.loads(raw)
        if kind is str:
            if not isinstance(raw, str):
                raise TypeError(f"{type(raw).__name__} instead of a string")
            return raw
        arr = np.asarray(raw)
        if arr.ndim != 0 or arr.dtype.kind not in ("iu" if kind is int else "iuf"):
            raise TypeError(f"{arr.dtype} of shape {arr.shape}, not a single "
                            f"{kind.__name__}")
        return kind(arr)
    except (TypeError, ValueError) as err:
        raise FileFormatError(f"{os.fspath(path)}: attribute {key!r} is invalid "
                              f"({err})") from None
