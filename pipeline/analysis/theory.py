"""Theory beside measurement: each law of pipeline.model.laws evaluated over a cube's cells and
compared with the exact mean escape time (`escape-sweep theory STORE`).

    th = evaluate(ds)                  # ln tau per law and cell, exact, Monte Carlo, residuals
    th = summarise(th)                 # per (law, batch size): median / worst |residual|, share
                                       # within a factor 2, slopes of ln tau against 1/T
    write_theory(th, "results/x.zarr") # the store's `theory/` group (open_theory reads it)

The exact tau is the cube's `mfpt` (method "markov" or "both") where present, else solved on the
fly cell by cell with pipeline.model.markov.markov_cell (slow for large batch sizes).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings

import numpy as np
import xarray as xr

from ..errors import InputError
from ..model import laws as _laws
from . import fits as _fits
from .load import open_group, write_group

THEORY_GROUP = "theory"
CELL_DIMS = ("T", "batch_size", "depth", "width")
LN2 = math.log(2.0)


def _attrs(da, long_name, units, description):
    da.attrs.update(long_name=long_name, units=units, description=description)
    return da


def _exact(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, str]:
    """ln tau_exact and its relative error on CELL_DIMS, and where it came from."""
    shape = tuple(ds.sizes[d] for d in CELL_DIMS)
    if "mfpt" in ds:
        m = ds["mfpt"].transpose(*CELL_DIMS).values.astype(float)
        r = (ds["mfpt_rel_error"].transpose(*CELL_DIMS).values.astype(float)
             if "mfpt_rel_error" in ds else np.full(shape, np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            ln = np.where((m > 0) & np.isfinite(m), np.log(m), np.nan)
        return ln, r, "cube mfpt"
    from ..model.markov import markov_cell

    ln, rel = np.full(shape, np.nan), np.full(shape, np.nan)
    for idx in np.ndindex(*shape):
        c = [ds[d].values[i] for d, i in zip(CELL_DIMS, idx)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                res = markov_cell(float(c[0]), int(c[1]), float(c[2]), float(c[3]))
            except ValueError:
                continue
        if res.mfpt > 0 and math.isfinite(res.mfpt):
            ln[idx], rel[idx] = math.log(res.mfpt), res.mfpt_rel_error
    return ln, rel, "markov_cell (solved on the fly)"


def evaluate(ds: xr.Dataset, budget=None) -> xr.Dataset:
    """ln tau of every law (dim `law`), the exact ln tau, the Monte Carlo ln tau with 95% bounds at
    the largest step budget (or `budget`), and residual = ln tau_law - ln tau_exact, per cell."""
    _fits.check_cube(ds)
    if any(ds.sizes[d] == 0 for d in CELL_DIMS):
        raise InputError("theory: the selection holds no cell")
    coords = {d: ds[d] for d in CELL_DIMS}
    shape = tuple(ds.sizes[d] for d in CELL_DIMS)
    law_vals = np.full((len(_laws.LAWS),) + shape, np.nan)
    for idx in np.ndindex(*shape):
        T, B, depth, width = (ds[d].values[i] for d, i in zip(CELL_DIMS, idx))
        for k, law in enumerate(_laws.LAWS):
            try:
                law_vals[(k,) + idx] = _laws.ln_tau(law, float(T), int(B), float(depth), float(width))
            except ValueError:
                pass  # no pit for this (depth, width): the law says nothing
    ln_ex, rel, source = _exact(ds)
    out = xr.Dataset(coords={**coords, "law": list(_laws.LAWS)})
    ldims = ("law",) + CELL_DIMS
    out["ln_tau_law"] = _attrs(xr.DataArray(law_vals, {**coords, "law": list(_laws.LAWS)}, ldims),
                               "ln tau predicted by the law", "ln(steps)", "pipeline.model.laws.ln_tau; NaN where the law has nothing to say")
    out["ln_tau_exact"] = _attrs(xr.DataArray(ln_ex, coords, CELL_DIMS), "ln tau, exact (Markov chain)", "ln(steps)",
                                 f"ln of the mean first-passage time from {source}")
    out["mfpt_rel_error"] = _attrs(xr.DataArray(rel, coords, CELL_DIMS), "exact tau relative error", "1",
                                   "the Markov solver's discretisation error estimate")
    out["residual"] = _attrs(out["ln_tau_law"] - out["ln_tau_exact"], "ln tau_law - ln tau_exact", "ln(steps)",
                             "> 0: the law predicts a longer escape time than the exact chain")
    budget = int(ds["steps"].max()) if budget is None else int(budget)
    if budget not in [int(s) for s in ds["steps"].values]:
        raise InputError(f"--budget {budget}: not a step budget of this cube")
    cells = _fits.cell_estimates(ds.sel(steps=[budget]), exact=False).isel(steps=0, drop=True)
    ok = cells["cell_status"] == _fits.BOUNDED
    for name, src in (("ln_tau_mc", "ln_tau"), ("ln_tau_mc_low", "ln_tau_low"), ("ln_tau_mc_high", "ln_tau_high")):
        out[name] = cells[src].where(ok).transpose(*CELL_DIMS)
    out["ln_tau_mc"].attrs["description"] = f"Monte Carlo censored MLE at budget {budget}; NaN unless bounded"
    out.attrs.update(exact_source=source, mc_budget=budget, cube_name=str(ds.attrs.get("name", "")),
                     laws=json.dumps(_laws.LAW_TITLES), xie_s=_laws.XIE_S)
    return out


def _slope(x, y):
    """Least-squares slope of y against x over finite pairs (>= 2 distinct x), else NaN."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def summarise(th: xr.Dataset) -> xr.Dataset:
    """Add the comparison: per (law, batch_size) over every pit and T, and per (law, batch_size,
    depth, width): n_cells, median and worst |residual|, the share within a factor 2 (|residual| <=
    ln 2); and per (law, batch_size, depth, width) the slope of ln tau against 1/T for the law and for
    the exact tau over the same cells."""
    res = th["residual"].transpose("law", *CELL_DIMS).values
    ex = th["ln_tau_exact"].transpose(*CELL_DIMS).values
    lw = th["ln_tau_law"].transpose("law", *CELL_DIMS).values
    inv_T = 1.0 / th["T"].values.astype(float)
    nL, nT, nB, nD, nW = res.shape
    pooled = {k: np.full((nL, nB), np.nan) for k in ("n", "med", "worst", "within")}
    per = {k: np.full((nL, nB, nD, nW), np.nan) for k in ("n", "med", "worst", "within", "slope", "slope_exact")}
    for li in range(nL):
        for bi in range(nB):
            r = np.abs(res[li, :, bi])
            a = r[np.isfinite(r)]
            pooled["n"][li, bi] = a.size
            if a.size:
                pooled["med"][li, bi], pooled["worst"][li, bi] = np.median(a), a.max()
                pooled["within"][li, bi] = float((a <= LN2).mean())
            for di in range(nD):
                for wi in range(nW):
                    rr = r[:, di, wi]
                    aa = rr[np.isfinite(rr)]
                    per["n"][li, bi, di, wi] = aa.size
                    if aa.size:
                        per["med"][li, bi, di, wi], per["worst"][li, bi, di, wi] = np.median(aa), aa.max()
                        per["within"][li, bi, di, wi] = float((aa <= LN2).mean())
                    both = np.isfinite(lw[li, :, bi, di, wi]) & np.isfinite(ex[:, bi, di, wi])
                    per["slope"][li, bi, di, wi] = _slope(inv_T[both], lw[li, both, bi, di, wi])
                    per["slope_exact"][li, bi, di, wi] = _slope(inv_T[both], ex[both, bi, di, wi])
    out = th.copy()
    pd_, cd = ("law", "batch_size"), ("law", "batch_size", "depth", "width")
    desc = {"n": ("cells compared", "1", "cells where both the law and the exact tau are finite"),
            "med": ("median |ln tau_law - ln tau_exact|", "ln(steps)", "median over the cells compared"),
            "worst": ("worst |ln tau_law - ln tau_exact|", "ln(steps)", "max over the cells compared"),
            "within": ("share within a factor 2", "1", "share of cells compared with |residual| <= ln 2")}
    names = {"n": "n_cells", "med": "median_abs_residual", "worst": "worst_abs_residual", "within": "within_factor_2"}
    for k, name in names.items():
        out[name] = _attrs(xr.DataArray(pooled[k], {d: th[d] for d in pd_}, pd_), *desc[k])
        out[name + "_pit"] = _attrs(xr.DataArray(per[k], {d: th[d] for d in cd}, cd), desc[k][0] + " (per pit)",
                                    desc[k][1], desc[k][2] + ", per (depth, width)")
    out["slope"] = _attrs(xr.DataArray(per["slope"], {d: th[d] for d in cd}, cd), "slope of ln tau_law against 1/T",
                          "ln(steps)", "least squares over the T values where law and exact are both finite")
    out["slope_exact"] = _attrs(xr.DataArray(per["slope_exact"], {d: th[d] for d in cd}, cd),
                                "slope of ln tau_exact against 1/T", "ln(steps)", "over the same cells as `slope`")
    return out


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


def write_theory(th: xr.Dataset, path) -> None:
    """Store `th` as the `theory/` group of the cube at `path` (replacing an older one)."""
    write_group(th, path, THEORY_GROUP)


def open_theory(path) -> xr.Dataset:
    """The comparison stored in a cube's `theory/` group (by `escape-sweep theory`)."""
    return open_group(path, THEORY_GROUP, "theory")


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _py(v):
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _median_slope(th, name, law, B):
    v = th[name].sel(law=law, batch_size=B).values.ravel()
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def records(th: xr.Dataset) -> list[dict]:
    """One row per (law, batch_size), pooled over pits; slopes: the median over pits."""
    rows = []
    for law in th["law"].values:
        for B in th["batch_size"].values:
            s = th.sel(law=law, batch_size=B)
            rows.append(dict(law=str(law), batch_size=int(B), n_cells=int(s["n_cells"]),
                             median_abs_residual=_py(float(s["median_abs_residual"])),
                             worst_abs_residual=_py(float(s["worst_abs_residual"])),
                             within_factor_2=_py(float(s["within_factor_2"])),
                             slope=_py(_median_slope(th, "slope", law, B)),
                             slope_exact=_py(_median_slope(th, "slope_exact", law, B))))
    return rows


def pit_records(th: xr.Dataset) -> list[dict]:
    """One row per (law, batch_size, depth, width)."""
    rows = []
    for law in th["law"].values:
        for B in th["batch_size"].values:
            for d in th["depth"].values:
                for w in th["width"].values:
                    s = th.sel(law=law, batch_size=B, depth=d, width=w)
                    rows.append(dict(law=str(law), batch_size=int(B), depth=float(d), width=float(w),
                                     n_cells=int(s["n_cells_pit"]),
                                     median_abs_residual=_py(float(s["median_abs_residual_pit"])),
                                     worst_abs_residual=_py(float(s["worst_abs_residual_pit"])),
                                     within_factor_2=_py(float(s["within_factor_2_pit"])),
                                     slope=_py(float(s["slope"])), slope_exact=_py(float(s["slope_exact"]))))
    return rows


def _num(x, digits=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def _table(header, rows):
    cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


HEADER = ["law", "B", "cells", "median |dln tau|", "worst |dln tau|", "within 2x", "slope law", "slope exact"]


def table_rows(th: xr.Dataset) -> list[list[str]]:
    return [[r["law"], r["batch_size"], r["n_cells"], _num(r["median_abs_residual"], 3), _num(r["worst_abs_residual"], 3),
             "-" if r["within_factor_2"] is None else f"{r['within_factor_2']:.0%}", _num(r["slope"]), _num(r["slope_exact"])]
            for r in records(th)]


def format_text(th: xr.Dataset) -> str:
    T = th["T"].values
    pits = ", ".join(f"({_num(float(d))}, {_num(float(w))})" for d in th["depth"].values for w in th["width"].values)
    parts = [f"Which law predicts the escape time?  {th.attrs.get('cube_name', '') or 'cube'}: exact tau from "
             f"{th.attrs.get('exact_source')}; T {_num(float(T.min()))}..{_num(float(T.max()))} ({T.size} values); "
             f"pits (depth, width) {pits}",
             "dln tau = ln tau_law - ln tau_exact over every T and pit; slopes of ln tau against 1/T (median over "
             "pits) over the cells where both are finite", "",
             _table(HEADER, table_rows(th))]
    if th.sizes["depth"] * th.sizes["width"] > 1:
        rows = [[r["law"], r["batch_size"], _num(r["depth"]), _num(r["width"]), r["n_cells"],
                 _num(r["median_abs_residual"], 3), _num(r["worst_abs_residual"], 3), _num(r["slope"]),
                 _num(r["slope_exact"])] for r in pit_records(th)]
        parts += ["", "per pit", _table(["law", "B", "depth", "width", "cells", "median", "worst", "slope law",
                                         "slope exact"], rows)]
    return "\n".join(parts)


def format_csv(th: xr.Dataset) -> str:
    buf = io.StringIO()
    cols = ["law", "batch_size", "depth", "width", "n_cells", "median_abs_residual", "worst_abs_residual",
            "within_factor_2", "slope", "slope_exact"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in records(th):
        w.writerow({**{k: ("" if v is None else v) for k, v in r.items()}, "depth": "all", "width": "all"})
    for r in pit_records(th):
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue().rstrip("\n")


def to_json(th: xr.Dataset) -> dict:
    return {"exact_source": th.attrs.get("exact_source"), "mc_budget": _py(th.attrs.get("mc_budget")),
            "laws": _laws.LAW_TITLES, "T": [float(t) for t in th["T"].values],
            "summary": records(th), "per_pit": pit_records(th)}


def theory_cube(ds: xr.Dataset, budget=None) -> xr.Dataset:
    """evaluate + summarise: what `escape-sweep theory` computes and stores."""
    return summarise(evaluate(ds, budget=budget))
