"""The Zarr v3 layout of a sweep (DESIGN.md section 3): create, write a chunk, mark done, open.

Data variables live on (T, steps, batch_size, depth, width); the escape-step histogram on
(T, batch_size, depth, width, escape_step_bin); pit geometry on (depth, width). A storage chunk
covers a block of task chunks (all budgets); completion records are the `progress/*` arrays (one
element per task chunk, one record chunk per block), written only after the block's data. Every
chunk file is written atomically by zarr's LocalStore, so an interrupted run leaves whole
blocks and a record of exactly which task chunks are complete.
"""

from __future__ import annotations

import json

import numpy as np

from .. import stats
from ..model.axes import AXES, AXIS_ATTRS, CELL_AXES, samples, solves
from ..model.landscape import MODEL_FORMULA
from .spec import Spec

CELL_DIMS = CELL_AXES
DIMS5 = AXES
HIST_DIMS = CELL_AXES + ("escape_step_bin",)
FORMAT = "escape-sweep-cube-1"
# 1 (no attr): one storage chunk and one record element file per task chunk; 2: a storage chunk
# (and a record chunk) per block of task chunks (`storage_block` attr), written whole by store.ChunkWriter
STORE_LAYOUT = 2

# name -> (dtype, long_name, units, description)
VARIABLES = {
    "n_walkers": ("int64", "walkers", "1", "walkers simulated in the cell (the same walkers for every step budget)"),
    "n_escaped": ("int64", "walkers escaped", "1", "walkers whose first step with W > barrier is <= the step budget"),
    "n_diverged": ("int64", "walkers diverged", "1", "walkers whose W stopped being finite before escaping, within max(steps)"),
    "exposure": ("int64", "exposure", "walker-steps", "total walker-steps observed: sum over walkers of min(escape step, budget)"),
    "p_escape": ("float64", "escape probability", "1", "n_escaped / n_walkers: P(escape within the step budget)"),
    "p_escape_low": ("float64", "escape probability, 95% lower bound", "1", "Wilson score interval, 95%"),
    "p_escape_high": ("float64", "escape probability, 95% upper bound", "1", "Wilson score interval, 95%"),
    "escape_rate": ("float64", "escape rate", "1/step", "censored exponential MLE n_escaped / exposure"),
    "log10_escape_time": ("float64", "log10 mean escape time", "log10(steps)",
                          "-log10(escape_rate): log10 of tau = exposure / n_escaped; NaN where nothing escaped. "
                          "Honest (within ~2% of the exact mean) where the budget is >= 1000 steps or >= 3 tau: "
                          "escapes start late (rarer in the first ~10-20 steps than a constant rate assumes), so "
                          "at shorter budgets it reads tau high by about (10-20 steps) / budget (e.g. +18% at "
                          "budget 100, T = 0.016); `escape-sweep fit` flags and leaves out such cells (early deficit)"),
    "log10_escape_time_low": ("float64", "log10 mean escape time, 95% lower bound", "log10(steps)",
                              "from the exact chi-square upper bound on the rate; where nothing escaped, the one-sided 95% bound log10(exposure / 3.0)"),
    "log10_escape_time_high": ("float64", "log10 mean escape time, 95% upper bound", "log10(steps)",
                               "from the exact chi-square lower bound on the rate; +inf where nothing escaped"),
    "median_escape_time": ("float64", "median escape time", "steps",
                           "ceil(n/2)-th smallest escape step (Kaplan-Meier median with censoring at the budget), "
                           "from escape_hist: exact below 17 steps, interpolated within a bin (<7.5% wide) above; "
                           "NaN where fewer than half escaped within the budget"),
}
HIST = ("int64", "escape-step histogram", "walkers",
        "walkers escaping at a step in [escape_step_lo, escape_step_hi), up to max(steps)")
# exact-solver variables (method "markov" or "both"): name -> (dims, dtype, long_name, units, description)
MARKOV_VARIABLES = {
    "mfpt": (CELL_DIMS, "float64", "mean escape time (exact solver)", "steps",
             "mean first-passage time from w_start past w_barrier, from the grid Markov chain (pipeline.markov)"),
    "mfpt_rel_error": (CELL_DIMS, "float64", "mfpt relative discretisation error", "1",
                       "Richardson estimate |tau(h) - tau(h/2)| / tau(h/2) of the exact solver's grid error"),
    "ln_mfpt": (CELL_DIMS, "float64", "ln mean escape time (exact solver)", "ln(steps)",
                "natural log of mfpt, solved in log space: finite also where mfpt overflows float64 (inf) "
                "at large batch size / low T; mfpt_rel_error is its absolute error"),
}
BOTH_VARIABLES = {
    "markov_p_escape": (DIMS5, "float64", "escape probability (exact solver)", "1",
                        "P(escape within the step budget) from repeated application of the grid Markov chain"),
    "consistent": (DIMS5, "bool", "Markov inside Monte Carlo 99% interval", "1",
                   "True where markov_p_escape lies inside the Monte Carlo Wilson 99% interval of p_escape "
                   "at this budget"),
}
MARKOV_NOTE = ("method = markov: computed by the exact solver, not sampled (n_walkers = 0); "
               "bounds reflect the discretisation error only. ")
# method = "markov": what the sampled variables hold instead (the solver fills them; MARKOV_NOTE + this)
SOLVER_DESCRIPTIONS = {
    "p_escape": "P(escape within the step budget) from the grid Markov chain",
    "p_escape_low": "equal to p_escape (no sampling error)",
    "p_escape_high": "equal to p_escape (no sampling error)",
    "escape_rate": "1 / mfpt: the inverse exact mean escape time (the same at every budget)",
    "log10_escape_time": "log10(mfpt): the exact mean escape time, the same at every budget (no censoring, "
                         "no early-deficit bias)",
    "log10_escape_time_low": "log10(mfpt (1 - mfpt_rel_error))",
    "log10_escape_time_high": "log10(mfpt (1 + mfpt_rel_error))",
}
GEOMETRY = {
    "w_start": ("pit minimum", "W", "l1's local minimum near W = 1: every walker starts here"),
    "w_barrier": ("barrier", "W", "l1's local maximum right of the pit: escape is the first step with W > w_barrier"),
}


def skeleton(spec: Spec, chunks, edges, versions: dict, created: str, block=(1, 1, 1, 1)):
    """The empty cube of a spec as a lazy Dataset plus its Zarr encoding (DESIGN.md section 3).

    chunks: the task chunk (cells along T, batch_size, depth, width); block: task chunks per
    storage chunk along the same axes (storage chunk = chunks * block cells, edges clipped)."""
    import dask.array as da
    import xarray as xr

    pits = spec.pits()
    edges = np.asarray(edges)
    coords = {a: np.asarray(v, dtype=np.int64 if a in ("steps", "batch_size") else np.float64) for a, v in spec.axes.items()}
    coords["escape_step_bin"] = np.arange(len(edges) - 1, dtype=np.int64)
    coords["escape_step_lo"] = ("escape_step_bin", edges[:-1].astype(np.int64))
    coords["escape_step_hi"] = ("escape_step_bin", edges[1:].astype(np.int64))
    ds = xr.Dataset(coords=coords)
    for a, (ln, units, desc) in AXIS_ATTRS.items():
        ds[a].attrs.update(long_name=ln, units=units, description=desc)
    ds["escape_step_bin"].attrs.update(long_name="escape-step bin index", units="1")
    ds["escape_step_lo"].attrs.update(long_name="escape-step bin start (inclusive)", units="steps")
    ds["escape_step_hi"].attrs.update(long_name="escape-step bin end (exclusive)", units="steps")
    cT, cB, cD, cW = (c * b for c, b in zip(chunks, block))
    shape5 = (len(spec.T), len(spec.steps), len(spec.batch_size), len(spec.depth), len(spec.width))
    ch5 = (cT, len(spec.steps), cB, cD, cW)
    encoding = {}
    for name, (dtype, ln, units, desc) in VARIABLES.items():
        fill = 0 if dtype == "int64" else np.nan
        ds[name] = (DIMS5, da.full(shape5, fill, dtype=dtype, chunks=ch5))
        ds[name].attrs.update(long_name=ln, units=units, description=desc)
        encoding[name] = {"chunks": ch5, "_FillValue": None if dtype == "int64" else np.nan}
    extra = dict(MARKOV_VARIABLES) if solves(spec.method) else {}
    if samples(spec.method) and solves(spec.method):
        extra.update(BOTH_VARIABLES)
    for name, (dims, dtype, ln, units, desc) in extra.items():
        shape, ch = (shape5, ch5) if dims == DIMS5 else (spec.cell_shape, (cT, cB, cD, cW))
        fill = False if dtype == "bool" else np.nan
        ds[name] = (dims, da.full(shape, fill, dtype=dtype, chunks=ch))
        ds[name].attrs.update(long_name=ln, units=units, description=desc)
        encoding[name] = {"chunks": ch, "_FillValue": None if dtype == "bool" else np.nan}
    if not samples(spec.method):
        for name in ("p_escape", "p_escape_low", "p_escape_high", "escape_rate", "log10_escape_time",
                     "log10_escape_time_low", "log10_escape_time_high"):
            ds[name].attrs["description"] = MARKOV_NOTE + SOLVER_DESCRIPTIONS[name]
    nb = len(edges) - 1
    shapeh = spec.cell_shape + (nb,)
    chh = (cT, cB, cD, cW, nb)
    ds["escape_hist"] = (HIST_DIMS, da.zeros(shapeh, dtype="int64", chunks=chh))
    ds["escape_hist"].attrs.update(long_name=HIST[1], units=HIST[2], description=HIST[3])
    encoding["escape_hist"] = {"chunks": chh, "_FillValue": None}
    for name, (ln, units, desc) in GEOMETRY.items():
        key = "w_start" if name == "w_start" else "w_barrier"
        vals = np.array([[getattr(pits[(d, w)], key) for w in spec.width] for d in spec.depth])
        ds[name] = (("depth", "width"), vals)
        ds[name].attrs.update(long_name=ln, units=units, description=desc)
    ds.attrs.update(
        format=FORMAT, name=spec.name, spec=spec.source, spec_file=spec.file, spec_hash=spec.content_hash,
        seed=spec.seed, walkers=spec.walkers, method=spec.method, model=MODEL_FORMULA,
        versions=json.dumps(versions), created=created, completed="",
        chunk_shape=list(chunks), cell_dims=list(CELL_DIMS), store_layout=STORE_LAYOUT, storage_block=list(block),
        determinism="walker i of a cell depends only on (seed, T, batch_size, depth, width, i)",
    )
    return ds, encoding


def derived(counts: dict, edges, method: str = "montecarlo") -> dict:
    """Cube variables of a chunk from its additive counts (arrays over the chunk's cells).

    counts: n_walkers, n_diverged (cells); n_escaped, exposure (cells + budgets); hist (cells + bins);
    with the exact solver also mfpt, mfpt_rel_error (cells) and markov_p_escape (cells + budgets).
    Returns arrays ordered like the cube: (T, steps, batch_size, depth, width), the histogram,
    and the per-cell solver variables."""
    nb = counts["n_escaped"].shape[-1]
    n = np.repeat(counts["n_walkers"][..., None], nb, axis=-1)
    ndiv = np.repeat(counts["n_diverged"][..., None], nb, axis=-1)
    k, e = counts["n_escaped"], counts["exposure"]
    if not samples(method):
        tau = np.repeat(counts["mfpt"][..., None], nb, axis=-1)
        rel = np.repeat(counts["mfpt_rel_error"][..., None], nb, axis=-1)
        p = plo = phi = counts["markov_p_escape"]
        rate = 1.0 / tau
        with np.errstate(invalid="ignore", divide="ignore"):
            lt, ltlo, lthi = np.log10(tau), np.log10(tau * (1 - rel)), np.log10(tau * (1 + rel))
            if "ln_mfpt" in counts:  # where tau overflows: the log times from ln_mfpt
                ln = np.repeat(counts["ln_mfpt"][..., None], nb, axis=-1) / np.log(10.0)
                big = np.isinf(tau) & np.isfinite(ln)
                lt = np.where(big, ln, lt)
                ltlo, lthi = np.where(big, ln + np.log10(1 - rel), ltlo), np.where(big, ln + np.log10(1 + rel), lthi)
        med = np.full(k.shape, np.nan)
    else:
        p, plo, phi = stats.wilson(k, n)
        rate = stats.censored_rate(k, e)[0]
        lt, ltlo, lthi = stats.log10_escape_time(k, e)
        med = stats.grouped_median(counts["hist"], edges, counts["n_walkers"])
        med = np.where(k >= (n + 1) // 2, med[..., None], np.nan)
    out = dict(n_walkers=n, n_escaped=k, n_diverged=ndiv, exposure=e, p_escape=p, p_escape_low=plo,
               p_escape_high=phi, escape_rate=rate, log10_escape_time=lt, log10_escape_time_low=ltlo,
               log10_escape_time_high=lthi, median_escape_time=med)
    if samples(method) and solves(method):
        # P(escape within the budget) is what both methods measure at every budget (the censored
        # rate at a budget far below tau measures early escapes only, so tau is no fair test there)
        _, lo99, hi99 = stats.wilson(k, n, conf=0.99)
        mp = counts["markov_p_escape"]
        out["consistent"] = (mp >= lo99 - 1e-9) & (mp <= hi99 + 1e-9)
        out["markov_p_escape"] = mp
    out = {name: np.moveaxis(np.asarray(v, dtype=_dtype(name)), -1, 1) for name, v in out.items()}
    out["escape_hist"] = np.asarray(counts["hist"], dtype=np.int64)
    if solves(method):
        out["mfpt"] = np.asarray(counts["mfpt"], dtype=np.float64)
        out["mfpt_rel_error"] = np.asarray(counts["mfpt_rel_error"], dtype=np.float64)
        with np.errstate(divide="ignore"):  # counts carried over from a cube without ln_mfpt: log(mfpt)
            out["ln_mfpt"] = np.asarray(counts["ln_mfpt"] if "ln_mfpt" in counts else np.log(counts["mfpt"]),
                                        dtype=np.float64)
    return out


def _dtype(name: str) -> str:
    if name in VARIABLES:
        return VARIABLES[name][0]
    return BOTH_VARIABLES[name][1]


def regions(slices, variables: dict) -> dict:
    """Where each derived variable of a chunk goes: name -> (index tuple into the array, values).

    slices are along (T, batch_size, depth, width); five-dim variables span every budget."""
    sT, sB, sD, sW = slices
    out = {}
    for name, arr in variables.items():
        if name == "escape_hist":
            out[name] = ((sT, sB, sD, sW, slice(None)), arr)
        elif name in MARKOV_VARIABLES:
            out[name] = ((sT, sB, sD, sW), arr)
        else:
            out[name] = ((sT, slice(None), sB, sD, sW), arr)
    return out
