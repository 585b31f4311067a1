"""Synthetic cubes shaped like the lead's writer makes them (DESIGN.md section 3), from a known law.

Escape steps of each cell's walkers are drawn geometric with mean tau(T, B, depth, width) (plus an
optional delay before which nobody escapes), then reduced with the project's own `summarize`,
`histogram_edges` and `cube.derived`, so every variable relates to the counts exactly as in a real cube.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from pipeline import stats
from pipeline.model.axes import AXES, CELL_AXES
from pipeline.sweep import cube
from pipeline.sweep.partition import histogram_edges
from pipeline.sweep.task import summarize


SPEC = """name = "synthetic"
seed = 7
walkers = {walkers}

[axes]
T = {T}
steps = {steps}
batch_size = {B}
depth = {depth}
width = {width}
"""


def arrhenius(a=-2.0, b=0.1, c=0.0):
    """ln tau = a + b / T + c * (B - 1)."""
    return lambda T, B, d, w: a + b / T + c * (B - 1)


def synthetic_cube(T, steps=(100, 1000), batch_size=(1,), depth=(1.0,), width=(0.1,), walkers=2000,
                   seed=0, ln_tau=None, delay=0, not_run=(), diverged=0) -> xr.Dataset:
    """Build an in-memory cube. `not_run` lists (iT, iB, iD, iW) cells left unwritten (n_walkers 0),
    as a partly finished sweep leaves them; `diverged` walkers per cell are marked -2."""
    ln_tau = ln_tau or arrhenius()
    rng = np.random.default_rng(seed)
    T = np.asarray(T, float)
    steps = np.asarray(steps, np.int64)
    B = np.asarray(batch_size, np.int64)
    D = np.asarray(depth, float)
    W = np.asarray(width, float)
    smax = int(steps.max())
    edges = histogram_edges(smax, steps)
    nb = len(edges) - 1
    cshape = (len(T), len(B), len(D), len(W))
    n_w = np.zeros(cshape, np.int64)
    n_d = np.zeros(cshape, np.int64)
    n_e = np.zeros(cshape + (len(steps),), np.int64)
    expo = np.zeros(cshape + (len(steps),), np.int64)
    hist = np.zeros(cshape + (nb,), np.int64)
    for idx in np.ndindex(*cshape):
        if idx in not_run:
            continue
        i, j, k, m = idx
        tau = float(np.exp(ln_tau(T[i], B[j], D[k], W[m])))
        q = min(1.0, 1.0 / max(tau - delay, 1.0))
        esc = delay + rng.geometric(q, walkers).astype(np.int64)
        esc[esc > smax] = -1
        esc[:diverged] = -2
        s = summarize(esc, steps, edges)
        n_w[idx], n_d[idx], n_e[idx], expo[idx], hist[idx] = (s["n_walkers"], s["n_diverged"], s["n_escaped"],
                                                             s["exposure"], s["hist"])
    counts = dict(n_walkers=n_w, n_diverged=n_d, n_escaped=n_e, exposure=expo, hist=hist)
    coords = dict(T=T, steps=steps, batch_size=B, depth=D, width=W,
                  escape_step_lo=("escape_step_bin", edges[:-1].astype(np.int64)),
                  escape_step_hi=("escape_step_bin", edges[1:].astype(np.int64)))
    ds = xr.Dataset(coords=coords)
    for name, v in cube.derived(counts, edges, "montecarlo").items():  # the writer's own derivation
        if name == "escape_hist":
            continue
        dtype, long_name, units, _ = cube.VARIABLES[name]
        ds[name] = (AXES, v)
        ds[name].attrs.update(long_name=long_name, units=units, description=f"synthetic {name}")
    ds["escape_hist"] = (cube.HIST_DIMS, hist)
    ds["escape_hist"].attrs.update(long_name="escape-step histogram", units="walkers", description="synthetic")
    ds["w_start"] = (("depth", "width"), np.full((len(D), len(W)), 1.0037))
    ds["w_barrier"] = (("depth", "width"), np.full((len(D), len(W)), 1.1960))
    for name in ("w_start", "w_barrier"):
        ds[name].attrs.update(long_name=name, units="W", description="synthetic geometry")
    spec = SPEC.format(walkers=walkers, T=list(T.tolist()), steps=list(steps.tolist()), B=list(B.tolist()),
                       depth=list(D.tolist()), width=list(W.tolist()))
    ds.attrs.update(format="escape-sweep-cube-1", name="synthetic", spec=spec, spec_hash="0" * 16, seed=int(seed),
                    walkers=walkers, method="mc", model="ln tau = a + b / T (synthetic)",
                    versions=json.dumps({"escape-sweep": "test"}), created="2026-01-01T00:00:00+00:00",
                    completed="2026-01-01T00:01:00+00:00")
    return ds


def write_cube(ds: xr.Dataset, path) -> str:
    """Write like the lead's writer: Zarr v3, then consolidated metadata."""
    import warnings

    import zarr

    ds.to_zarr(str(path), mode="w", zarr_format=3, consolidated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))
    return str(path)


def assert_survival_matches_counts(ds: xr.Dataset) -> None:
    """S(n) read off escape_hist at each budget equals 1 - n_escaped / n_walkers there."""
    cells = CELL_AXES
    edges = np.append(ds["escape_step_lo"].values, ds["escape_step_hi"].values[-1])
    hist = ds["escape_hist"].transpose(*cells, "escape_step_bin").values
    for s in ds["steps"].values:
        n = ds["n_walkers"].sel(steps=s).transpose(*cells).values
        k = ds["n_escaped"].sel(steps=s).transpose(*cells).values
        sv = stats.survival_from_hist(hist, edges, n, budget=int(s))
        assert sv.time[-1] == s
        np.testing.assert_allclose(sv.survival[..., -1], 1 - k / n, atol=1e-12)
        np.testing.assert_allclose(sv.at(s), 1 - k / n, atol=1e-12)
