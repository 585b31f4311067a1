"""The two-point loss landscape of DESIGN.md section 1: losses, gradients, pit and barrier.

    l0(W) = -exp(-(W - 2)^2)
    l1(W) = -exp(-(W - 2)^2) - depth * exp(-((W - 1) / width)^2)

The pit is l1's local minimum near W = 1 (the walkers' start); the barrier is l1's local
maximum right of it (escape is the first step with W > barrier).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

MODEL_FORMULA = (
    "l0(W) = -exp(-(W-2)^2); l1(W) = l0(W) - depth*exp(-((W-1)/width)^2); "
    "step W <- W - T*(g0(W) + (k/B)*gpit(W)), k ~ Binomial(B, 1/2); "
    "escape = first step with W > barrier (l1's local maximum right of the pit)"
)


def l0(w):
    """Loss of data point 0 (no pit): -exp(-(W - 2)^2)."""
    return -np.exp(-((w - 2.0) ** 2))


def l1(w, depth=1.0, width=0.1):
    """Loss of data point 1 (with the pit): l0(W) - depth * exp(-((W - 1) / width)^2)."""
    return l0(w) - depth * np.exp(-(((w - 1.0) / width) ** 2))


def g0(w):
    """dl0/dW = 2 (W - 2) exp(-(W - 2)^2)."""
    return 2.0 * (w - 2.0) * np.exp(-((w - 2.0) ** 2))


def gpit(w, depth=1.0, width=0.1):
    """Gradient of the pit term: 2 depth (W - 1) / width^2 * exp(-((W - 1) / width)^2)."""
    return 2.0 * depth * (w - 1.0) / width**2 * np.exp(-(((w - 1.0) / width) ** 2))


def g1(w, depth=1.0, width=0.1):
    """dl1/dW = g0(W) + gpit(W)."""
    return g0(w) + gpit(w, depth, width)


def check_positive(name: str, value) -> float:
    """Return `value` as a float if it is finite and > 0, else raise ValueError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: must be a finite number > 0") from None
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name}={value!r}: must be a finite number > 0")
    return v


def check_int(name: str, value, minimum: int = 1) -> int:
    """Return `value` as an int if it is an integer (or an integral float) >= minimum, else
    raise ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


@dataclass(frozen=True)
class Pit:
    """Geometry of l1 for one (depth, width): the start (pit minimum) and the barrier."""

    depth: float
    width: float
    w_start: float
    w_barrier: float


def _sign_changes(depth: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Brackets [a, b] where g1 changes sign, on a grid dense around the pit and coarse to W = 2."""
    lo = 1.0 - 12.0 * width
    mid = 1.0 + 12.0 * width
    hi = max(2.0, mid)
    grid = np.unique(np.concatenate([np.linspace(lo, mid, 48001), np.linspace(mid, hi, 4001)]))
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        g = g1(grid, depth, width)
    s = np.sign(g)
    idx = np.nonzero(s[:-1] * s[1:] < 0)[0]
    return grid, idx


def find_pit(depth: float, width: float) -> Pit:
    """l1's pit for (depth, width), found once per process (`_find_pit`; ~5 ms of root finding,
    so `simulate` per cell and every task of a sweep reuse it). ValueError as `_find_pit`."""
    return _find_pit(check_positive("depth", depth), check_positive("width", width))


@functools.lru_cache(maxsize=4096)
def _find_pit(depth: float, width: float) -> Pit:
    """Locate l1's pit minimum near W = 1 and the local maximum right of it (brentq on g1).

    Raises ValueError naming depth and width when l1 has no such pit (e.g. a pit too shallow
    or too wide to make a local minimum beside the slope of l0).
    """
    from scipy.optimize import brentq  # here, so that workers running kernels never import scipy

    depth = check_positive("depth", depth)
    width = check_positive("width", width)
    grid, idx = _sign_changes(depth, width)
    f = lambda w: float(g1(w, depth, width))  # noqa: E731
    minima, maxima = [], []
    g = g1(grid, depth, width)
    for i in idx:
        root = brentq(f, grid[i], grid[i + 1], xtol=1e-15, rtol=4 * np.finfo(float).eps)
        (minima if g[i] < 0 < g[i + 1] else maxima).append(root)
    if minima:
        w_start = min(minima, key=lambda r: abs(r - 1.0))
        right = [m for m in maxima if m > w_start]
        if right and abs(w_start - 1.0) < 12.0 * width:
            return Pit(depth, width, float(w_start), float(min(right)))
    raise ValueError(
        f"depth={depth!r}, width={width!r}: l1 has no pit near W = 1 "
        "(no local minimum with a barrier to its right); use a deeper or narrower pit"
    )
