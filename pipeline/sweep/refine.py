"""Refine a cube: spend walkers where the answer is uncertain, and T values where the curve
ln tau against 1/T is least resolved.

One round looks at the cube and plans, deterministically (the plan depends only on the cube):

- walkers: every eligible cell whose 95% interval of the target variable is wider than asked gets
  n_new = n * (half-width / target)^2 * SAFETY walkers (a lane multiple; x4 where nothing escaped,
  so the interval is unbounded), capped by --max-walkers per cell; cells are taken widest first
  until the round's share of --max-walker-steps is spent.
- T values (--add-T N): the N gaps between neighbouring T values with the largest loss, as in
  python-adaptive's Learner1D: the length of the gap in scaled (1/T, ln tau) space, times
  (1 + the mean of the two ends' interval widths), taking the largest over batch size and pit;
  the new T is the gap's midpoint in 1/T, rounded to the spec's 12 significant digits.

The round is then a grow (`grow.py`) to the new grid with per-cell walker targets: resumable,
never counting a walker twice, and recorded in the store's history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import warnings

import numpy as np

from ..errors import InputError
from ..model.axes import CELL_AXES
from ..model.kernels import LANES
from .spec import Spec, spec_text

TARGETS = {  # variable -> (low bound, high bound, what a half-width means)
    "log10_escape_time": ("log10_escape_time_low", "log10_escape_time_high", "decades"),
    "p_escape": ("p_escape_low", "p_escape_high", "probability"),
}
SAFETY = 1.2  # walkers beyond the 1/sqrt(n) estimate, so one round usually suffices
NO_ESCAPE_FACTOR = 4  # walker growth of a cell whose interval is unbounded (nothing escaped)


@dataclass(frozen=True)
class RefineOptions:
    """What `escape-sweep refine` was asked (frozen; built once by the CLI or `pipeline.refine`)."""

    targets: dict = field(default_factory=lambda: {"log10_escape_time": 0.03})
    budget: int | None = None  # step budget whose intervals count (default: the largest)
    allowed: dict | None = None  # axis -> coordinate values eligible (from --sel / --range)
    max_walkers: int = 10_000_000
    max_walker_steps: float = math.inf
    add_T: int = 0
    t_range: tuple[float, float] | None = None
    rounds: int = 8


def check_targets(targets: dict) -> dict:
    """{variable: half-width} with known variables and positive finite widths (InputError otherwise)."""
    out = {}
    for name, value in targets.items():
        if name not in TARGETS:
            raise InputError(f"--target {name}={value}: unknown variable (allowed: {', '.join(TARGETS)})")
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not (math.isfinite(v) and v > 0):
            raise InputError(f"--target {name}={value}: the half-width must be a finite number > 0")
        out[name] = v
    if not out:
        raise InputError("--target: give at least one VAR=HALF_WIDTH (e.g. log10_escape_time=0.03)")
    return out


def half_widths(ds, opts: RefineOptions) -> tuple[np.ndarray, int]:
    """(ratio, budget): per cell over (T, batch_size, depth, width), the largest half-width / target
    over the targets at the budget (inf where an interval is unbounded, NaN where not computed)."""
    budget = int(opts.budget if opts.budget is not None else ds["steps"].max())
    if budget not in set(int(s) for s in ds["steps"].values):
        raise InputError(f"--budget {budget}: not a step budget of this cube "
                         f"(allowed: {', '.join(str(int(s)) for s in ds['steps'].values)})")
    d = ds.sel(steps=budget)
    ratio = np.zeros([ds.sizes[a] for a in CELL_AXES])
    for name, target in opts.targets.items():
        lo_name, hi_name, _ = TARGETS[name]
        lo = d[lo_name].transpose(*CELL_AXES).values.astype(float)
        hi = d[hi_name].transpose(*CELL_AXES).values.astype(float)
        with np.errstate(invalid="ignore"):
            hw = np.where(np.isfinite(hi) & np.isfinite(lo), (hi - lo) / 2, np.inf)
        ratio = np.maximum(ratio, hw / target)
    n = d["n_walkers"].transpose(*CELL_AXES).values
    return np.where(n > 0, ratio, np.nan), budget


def eligible(ds, opts: RefineOptions) -> np.ndarray:
    """Per cell: inside --sel / --range / --T-range."""
    mask = np.ones([ds.sizes[a] for a in CELL_AXES], bool)
    for axis, a in enumerate(CELL_AXES):
        vals = ds[a].values
        ok = np.ones(vals.shape, bool)
        if opts.allowed and a in opts.allowed:
            ok &= np.isin(vals, list(opts.allowed[a]))
        if a == "T" and opts.t_range is not None:
            lo, hi = opts.t_range
            ok &= (vals >= lo * (1 - 1e-9)) & (vals <= hi * (1 + 1e-9))
        shape = [1] * 4
        shape[axis] = len(vals)
        mask &= ok.reshape(shape)
    return mask


def walker_targets(ds, opts: RefineOptions, spent: float) -> tuple[np.ndarray, dict]:
    """Per-cell walker targets for the next round (>= the walkers each cell has) and a summary."""
    ratio, budget = half_widths(ds, opts)
    n = ds["n_walkers"].sel(steps=budget).transpose(*CELL_AXES).values.astype(np.int64)
    ok = eligible(ds, opts) & (n > 0)
    need = ok & (ratio > 1)
    with np.errstate(over="ignore", invalid="ignore"):  # inf ratios (no escapes) take the other branch
        want = np.where(np.isinf(ratio), n * NO_ESCAPE_FACTOR,
                        np.ceil(n * np.nan_to_num(ratio, nan=1.0, posinf=1.0) ** 2 * SAFETY))
    want = np.minimum(np.ceil(want / LANES) * LANES, opts.max_walkers).astype(np.int64)
    want = np.where(need, np.maximum(want, n), n)
    # expected cost per walker: the steps the cell's walkers really took (exposure at the top budget)
    top = ds.sel(steps=int(ds["steps"].max()))
    per_walker = top["exposure"].transpose(*CELL_AXES).values / np.maximum(n, 1)
    cost = (want - n) * per_walker
    left = opts.max_walker_steps - spent
    order = np.argsort(-np.nan_to_num(np.where(need, ratio, -1), posinf=1e300), axis=None, kind="stable")
    target, used, capped = n.copy(), 0.0, False
    for flat in order:
        idx = np.unravel_index(flat, n.shape)
        if not need[idx] or want[idx] <= n[idx]:
            continue
        if used + cost[idx] > left:
            capped = True
            continue
        target[idx] = want[idx]
        used += cost[idx]
    summary = dict(budget=budget, cells_refined=int((target > n).sum()), walkers_added=int((target - n).sum()),
                   expected_walker_steps=float(used), capped=capped,
                   **{k: v for k, v in worst_left(ratio, ok).items() if k != "bounded"},
                   unmet=int((ok & (ratio > 1)).sum()), at_max_walkers=int((need & (n >= opts.max_walkers)).sum()))
    return target, summary


def worst_left(ratio: np.ndarray, ok: np.ndarray) -> dict:
    """The largest finite half-width / target over the eligible cells (None if none is finite), how
    many eligible cells have a bounded interval, and how many have none yet (no escapes: ratio
    inf), so reports and --json never print inf."""
    bounded = ok & np.isfinite(ratio)
    return dict(worst=float(ratio[bounded].max()) if bounded.any() else None,
                bounded=int(bounded.sum()), unbounded=int((ok & np.isinf(ratio)).sum()))


def new_T_values(ds, opts: RefineOptions, spec: Spec, budget: int) -> list[float]:
    """Up to --add-T new T values in the gaps of largest Learner1D-style loss (see the module doc)."""
    if opts.add_T <= 0 or ds.sizes["T"] < 2:
        return []
    T = ds["T"].values.astype(float)
    d = ds.sel(steps=budget)
    lt = np.log(10) * d["log10_escape_time"].transpose("T", *CELL_AXES[1:]).values
    lo = np.log(10) * d["log10_escape_time_low"].transpose("T", *CELL_AXES[1:]).values
    hi = np.log(10) * d["log10_escape_time_high"].transpose("T", *CELL_AXES[1:]).values
    x = 1.0 / T
    with np.errstate(invalid="ignore"):
        width = np.where(np.isfinite(hi - lo), hi - lo, np.nan)
    yr = np.nanmax(lt) - np.nanmin(lt) if np.isfinite(lt).any() else 1.0
    xr = x.max() - x.min()
    loss = np.zeros(len(T) - 1)
    for i in range(len(T) - 1):
        if opts.t_range is not None and not (opts.t_range[0] * (1 - 1e-9) <= T[i] and T[i + 1] <= opts.t_range[1] * (1 + 1e-9)):
            continue
        dx = (x[i] - x[i + 1]) / xr
        dy = (lt[i] - lt[i + 1]) / (yr or 1.0)
        with warnings.catch_warnings():  # two cells without a finite width: no width term
            warnings.simplefilter("ignore", RuntimeWarning)
            w = np.nanmean([width[i], width[i + 1]], axis=0) / (yr or 1.0)
        with np.errstate(invalid="ignore"):
            l = np.sqrt(dx ** 2 + np.where(np.isfinite(dy), dy, 0.0) ** 2) * (1 + np.where(np.isfinite(w), w, 0.0))
        loss[i] = float(np.nanmax(l)) if np.size(l) else dx
    out = []
    for i in np.argsort(-loss, kind="stable")[: opts.add_T]:
        if loss[i] <= 0:
            continue
        t = float(f"{2.0 / (x[i] + x[i + 1]):.12g}")
        if t not in spec.T and t not in out:
            out.append(t)
    return sorted(out)


def next_round(ds, spec: Spec, opts: RefineOptions, spent: float) -> tuple[Spec | None, np.ndarray, dict]:
    """The spec and per-cell walker targets of the next round, and its summary; the spec is None when
    nothing is left to do (summary["stop"] says why: targets met, the walker-steps cap, max walkers)."""
    target, summary = walker_targets(ds, opts, spent)
    add = new_T_values(ds, opts, spec, summary["budget"]) if spent < opts.max_walker_steps else []
    summary["T_added"] = add
    if summary["cells_refined"] == 0 and not add:
        summary["stop"] = ("targets met" if summary["unmet"] == 0 else
                           "the walker-steps cap" if summary["capped"] else "--max-walkers")
        return None, target, summary
    if not add:
        return spec, target, summary
    new = replace(spec, T=tuple(sorted(spec.T + tuple(add))))
    new = replace(new, source=spec_text(new))
    pos = {t: i for i, t in enumerate(spec.T)}
    full = np.full(new.cell_shape, spec.walkers, np.int64)
    for j, t in enumerate(new.T):
        if t in pos:
            full[j] = target[pos[t]]
    return new, full, summary
