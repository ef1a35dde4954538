"""Random streams derived from the network seed, and their saved state.

Stream 0 of an object (population or projection) initialises its parameters;
stream 1 of a population is its run-time stream (zoneout, DropConnect,
Poisson spikes). Streams depend on the seed and the object's name only.
"""

import zlib

import numpy as np

__all__ = ["stream_seed", "init_rng", "runtime_rng", "rng_state", "set_rng_state"]

INIT, RUNTIME = 0, 1


def stream_seed(seed, name, stream):
    """SeedSequence of stream ``stream`` of the object ``name``."""
    return np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()), stream))


def init_rng(seed, name):
    """Generator for the initial parameters of ``name``."""
    return np.random.default_rng(stream_seed(seed, name, INIT))


def runtime_rng(seed, name):
    """Generator for the run-time randomness of population ``name``."""
    return np.random.default_rng(stream_seed(seed, name, RUNTIME))


def rng_state(rngs):
    """State of every stream in ``rngs`` (name -> Generator), as a flat dict of
    uint64 arrays."""
    out = {}
    for name, gen in rngs.items():
        st = gen.bit_generator.state
        if st["bit_generator"] != "PCG64":
            raise RuntimeError("rng_state supports the PCG64 generator only")
        s, inc = st["state"]["state"], st["state"]["inc"]
        m = (1 << 64) - 1
        out[name] = np.array([s >> 64, s & m, inc >> 64, inc & m, st["has_uint32"],
                              st["uinteger"]], dtype=np.uint64)
    return out


def set_rng_state(rngs, state):
    """Restore the streams in ``rngs`` from :func:`rng_state`."""
    for name, arr in state.items():
        if name not in rngs:
            raise KeyError(f"rng state for unknown population {name!r}")
        a = [int(x) for x in np.asarray(arr, dtype=np.uint64)]
        if len(a) != 6:
            raise ValueError(f"rng state of {name!r} must hold 6 words, got {len(a)}")
        rngs[name].bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": (a[0] << 64) | a[1], "inc": (a[2] << 64) | a[3]},
            "has_uint32": a[4], "uinteger": a[5]}
