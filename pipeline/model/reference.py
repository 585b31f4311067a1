"""Plain implementations of the same process, to cross-check and to measure the kernel against.

`numpy_escape_steps`: vectorised over walkers, one numpy array op per term, numpy's Generator
for k ~ Binomial(B, 1/2). `scalar_escape_steps`: a straightforward numba loop, one walker at a
time, drawing k ~ Binomial(B, 1/2) each step with np.random. Same model and return codes as
`pipeline.kernels.escape_steps`; different random streams, so they agree in distribution only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernels import DIVERGED, NOT_ESCAPED


def gradient(x, kfrac, depth, width):
    """g0(W) + kfrac gpit(W) written plainly with np.exp (arrays or scalars; kfrac = k / B)."""
    a = x - 2.0
    d = (x - 1.0) / width
    return 2.0 * a * np.exp(-a * a) + kfrac * 2.0 * depth * d / width * np.exp(-d * d)


_gradient_jit = njit(inline="always")(gradient)


def numpy_escape_steps(T, steps, batch_size, depth, width, start, barrier, walkers, seed):
    """Escape step per walker (int64; -1 not escaped, -2 diverged), all walkers as one array."""
    rng = np.random.default_rng(seed)
    w = np.full(walkers, float(start))
    esc = np.full(walkers, NOT_ESCAPED, np.int64)
    alive = np.arange(walkers)
    for s in range(1, steps + 1):
        if alive.size == 0:
            break
        x = w[alive]
        k = rng.binomial(batch_size, 0.5, size=alive.size)
        x = x - T * gradient(x, k / batch_size, depth, width)
        w[alive] = x
        out = x > barrier
        esc[alive[out]] = s
        alive = alive[~out]
    bad = (esc == NOT_ESCAPED) & ~np.isfinite(w)
    esc[bad] = DIVERGED
    return esc


@njit(cache=True, nogil=True)
def scalar_escape_steps(T, steps, batch_size, depth, width, start, barrier, walkers, seed):
    """The straightforward numba loop: per walker, per step, one np.random.binomial draw and two exps."""
    np.random.seed(seed)
    out = np.empty(walkers, np.int64)
    for i in range(walkers):
        x = start
        e = NOT_ESCAPED
        for s in range(1, steps + 1):
            k = np.random.binomial(batch_size, 0.5)
            x = x - T * _gradient_jit(x, k / batch_size, depth, width)
            if x > barrier:
                e = s
                break
        if e == NOT_ESCAPED and not np.isfinite(x):
            e = DIVERGED
        out[i] = e
    return out
