"""The determinism rule (DESIGN.md section 2): a cell's random stream is a hash of the seed and
its coordinate values, and walker i of a cell depends only on (seed, T, batch_size, depth,
width, i) -- never on the grid, the partition, the worker or the processor kind.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from . import backends
from .landscape import check_int, check_positive, find_pit


def canonical(value: float) -> str:
    """Exact, platform-independent text of a coordinate value (float.hex; ints as ints)."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return float(value).hex()


def cell_key(seed: int, T: float, batch_size: int, depth: float, width: float) -> np.uint64:
    """64-bit stream key of a cell: blake2b of (seed, coordinate values). Grid-independent.

    The step budget is not part of the key: every budget reads the same walkers.
    """
    text = "|".join(
        ["escape-sweep-v1", str(int(seed)), canonical(float(T)), str(int(batch_size)),
         canonical(float(depth)), canonical(float(width))]
    )
    return np.uint64(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little"))


def grid_keys(seed: int, T, batch_size, depth, width) -> np.ndarray:
    """cell_key of every cell of the grid T x batch_size x depth x width (uint64, C order), bit for
    bit: each value's text is made once, and per cell only one blake2b of a joined string (~1 us)."""
    head = f"escape-sweep-v1|{int(seed)}|"
    ts = [canonical(float(t)) for t in T]
    cols = []
    for b in batch_size:
        for d in depth:
            for w in width:
                tail = f"|{int(b)}|{canonical(float(d))}|{canonical(float(w))}"
                blob = b"".join(hashlib.blake2b((head + t + tail).encode(), digest_size=8).digest() for t in ts)
                cols.append(np.frombuffer(blob, "<u8"))
    if not cols or not ts:
        return np.zeros(0, np.uint64)
    return np.stack(cols, axis=1).reshape(-1).astype(np.uint64)


def simulate(T, steps, batch_size, depth, width, walkers, seed, start=None, backend="cpu") -> np.ndarray:
    """Escape step of each walker of one cell: int64 array, -1 not escaped, -2 diverged.

    Walker i's value depends only on (seed, T, batch_size, depth, width, i): the cube of a
    sweep with the same seed holds exactly these walkers (read at each step budget).
    `start` overrides the pit minimum as W_0. `backend` ("cpu", "cuda", "auto") changes the
    speed, never the numbers; an unknown or unusable one is an InputError.
    """
    T = check_positive("T", T)
    depth = check_positive("depth", depth)
    width = check_positive("width", width)
    steps = check_int("steps", steps)
    batch_size = check_int("batch_size", batch_size)
    walkers = check_int("walkers", walkers)
    seed = check_int("seed", seed, minimum=0)
    pit = find_pit(depth, width)
    if start is None:
        w0 = pit.w_start
    else:
        try:
            w0 = float(start)
        except (TypeError, ValueError):
            raise ValueError(f"start={start!r}: must be a finite number") from None
        if not math.isfinite(w0):
            raise ValueError(f"start={start!r}: must be a finite number")
    name = backends.resolve(backend)
    backends.require(name)
    escape_steps = backends.get_kernel(name)
    key = cell_key(seed, T, batch_size, depth, width)
    return escape_steps(T, steps, batch_size, depth, width, w0, pit.w_barrier, key, 0, walkers)
