"""Fits of the escape time across a cube: ln tau against 1/T (Arrhenius) and against T, ln tau
against batch size at fixed T, whether T/B alone sets tau, and which cells are memoryless.

Only cells whose tau = exposure / n_escaped is bounded on both sides (n_escaped > 0, exposure > 0)
enter a fit, weighted by the inverse square of their chi-square interval width in log space.
Every other cell is listed with its reason (not run, nothing escaped), never silently dropped.

Intervals are Student-t with n - 2 dof on the residual-scaled covariance. ln(E/D) is biased up by
about 1/(2D) when a cell has few escapes D, and its weight grows with D; on synthetic cubes the
95% intervals of a and b cover the truth ~95% of the time when cells have tens of escapes or more,
~92% when cells with a handful of escapes enter (use --T-range to keep to well-measured cells).

    fits = fit_cube(ds)                 # labelled xarray.Dataset
    write_fits(fits, "results/x.zarr")  # the store's `fits/` group
    pipeline.open_fits("results/x.zarr")
    print(format_table(fits))

Command line: `escape-sweep fit CUBE [--budget N] [--format table|json] [--no-save]`.
"""

from __future__ import annotations

import datetime as _dt
import warnings

import numpy as np
import xarray as xr
from scipy import stats as _st

from .. import stats
from ..errors import InputError
from ..model.axes import AXES, CELL_AXES
from .load import check_cube, load_cube, open_group, write_group  # noqa: F401  (fits.load_cube is public)

DIMS5 = AXES
SLICE_DIMS = ("steps", "batch_size", "depth", "width")
FITS_GROUP = "fits"
EXACT_SIGMA_FLOOR = 1e-6  # ln-tau sigma of an exact-solver cell: its discretisation error, at least this

# cell status codes (variable `cell_status`); every code but BOUNDED keeps the cell out of the fits
BOUNDED, NO_ESCAPES, NOT_RUN, NO_EXPOSURE, NON_EXPONENTIAL, OUTSIDE_T, EARLY = 0, 1, 2, 3, 4, 5, 6
STATUS = {BOUNDED: "bounded", NO_ESCAPES: "no escapes (tau only bounded below)",
          NOT_RUN: "not run (n_walkers = 0)", NO_EXPOSURE: "no exposure",
          NON_EXPONENTIAL: "left out: not memoryless (exponential_only)", OUTSIDE_T: "left out: outside --T-range",
          EARLY: "left out: early deficit (budget too short: exposure / escapes reads tau high)"}
FLAG_MEANINGS = "bounded no_escapes not_run no_exposure non_exponential outside_t_range early_deficit"


def _budget_sel(ds: xr.Dataset, budget) -> xr.Dataset:
    if budget is None:
        return ds
    allowed = [int(s) for s in ds["steps"].values]
    try:
        b = int(budget)
    except (TypeError, ValueError):
        b = None
    if b is None or b not in allowed or float(budget) != b:
        raise InputError(f"--budget={budget}: not a step budget of this cube (allowed: {', '.join(map(str, allowed))})")
    return ds.sel(steps=[b])


# ---------------------------------------------------------------------------------------------
# Per-cell estimates
# ---------------------------------------------------------------------------------------------


def _attrs(da, long_name, units, description):
    da.attrs.update(long_name=long_name, units=units, description=description)
    return da


def cell_estimates(ds: xr.Dataset, conf: float = 0.95, exact: bool = True) -> xr.Dataset:
    """ln tau with its bounds, its log-space sigma and a status code for every cell: the exact
    solver's tau where the cube has mfpt (unless exact=False), else the Monte Carlo censored MLE."""
    d = ds["n_escaped"].transpose(*DIMS5).values
    e = ds["exposure"].transpose(*DIMS5).values
    n = ds["n_walkers"].transpose(*DIMS5).values
    ln_tau, ln_lo, ln_hi, sigma = stats.ln_escape_time(d, e, conf)
    tau_low = stats.escape_time(d, e, conf)[1]
    status = np.where(n <= 0, NOT_RUN, np.where(~(e > 0), NO_EXPOSURE, np.where(d > 0, BOUNDED, NO_ESCAPES)))
    use_exact, exact = exact, np.zeros(status.shape, bool)
    if use_exact and "mfpt" in ds:  # the exact solver's tau wherever it exists: no sampling error, only discretisation
        tau = ds["mfpt"].broadcast_like(ds["n_walkers"]).transpose(*DIMS5).values.astype(float)
        rel = (ds["mfpt_rel_error"].broadcast_like(ds["n_walkers"]).transpose(*DIMS5).values.astype(float)
               if "mfpt_rel_error" in ds else np.zeros_like(tau))
        exact = np.isfinite(tau) & (tau > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sig_x = np.maximum(np.where(np.isfinite(rel), rel, 0.0), EXACT_SIGMA_FLOOR)
            ln_x = np.log(tau)
        z = float(_st.norm.ppf(0.5 + conf / 2))
        ln_tau = np.where(exact, ln_x, ln_tau)
        ln_lo = np.where(exact, ln_x - z * sig_x, ln_lo)
        ln_hi = np.where(exact, ln_x + z * sig_x, ln_hi)
        sigma = np.where(exact, sig_x, sigma)
        status = np.where(exact, BOUNDED, status)
    coords = {k: ds[k] for k in DIMS5}
    out = xr.Dataset(coords=coords)
    out["tau_source"] = _attrs(xr.DataArray(exact.astype(np.int8), coords, DIMS5), "source of tau", "1",
                               "0 = Monte Carlo (exposure / n_escaped), 1 = exact solver (mfpt, with sigma = "
                               f"max(mfpt_rel_error, {EXACT_SIGMA_FLOOR:g}))")
    out["tau_source"].attrs.update(flag_values=[0, 1], flag_meanings="monte_carlo exact_solver")
    out["ln_tau"] = _attrs(xr.DataArray(ln_tau, coords, DIMS5), "ln mean escape time", "ln(steps)",
                           "ln(exposure / n_escaped): censored exponential MLE of tau; NaN unless bounded")
    out["ln_tau_low"] = _attrs(xr.DataArray(ln_lo, coords, DIMS5), f"ln tau, {conf:.0%} lower bound", "ln(steps)",
                               "exact chi-square (Poisson) bound")
    out["ln_tau_high"] = _attrs(xr.DataArray(ln_hi, coords, DIMS5), f"ln tau, {conf:.0%} upper bound", "ln(steps)",
                                "exact chi-square (Poisson) bound")
    out["ln_tau_sigma"] = _attrs(xr.DataArray(sigma, coords, DIMS5), "ln tau standard error", "ln(steps)",
                                 "(ln_tau_high - ln_tau_low) / (2 z): fits weigh cells by 1 / sigma^2")
    out["tau_lower_bound"] = _attrs(
        xr.DataArray(np.where(status == NO_ESCAPES, tau_low, np.nan), coords, DIMS5),
        "one-sided lower bound of tau", "steps",
        f"where nothing escaped: exposure / -ln(1 - {conf}) (one-sided {conf:.0%}); NaN elsewhere")
    out["cell_status"] = _attrs(xr.DataArray(status.astype(np.int8), coords, DIMS5), "cell status", "1",
                                "; ".join(f"{k} = {v}" for k, v in STATUS.items()))
    out["cell_status"].attrs.update(flag_values=list(STATUS), flag_meanings=FLAG_MEANINGS)
    return out


def _fitted(cells: xr.Dataset, name: str = "ln_tau") -> xr.DataArray:
    """`name` where the cell enters the fits (status BOUNDED), NaN elsewhere."""
    return cells[name].where(cells["cell_status"] == BOUNDED)


# ---------------------------------------------------------------------------------------------
# Fits
# ---------------------------------------------------------------------------------------------

_FIT_KEYS = ("slope", "slope_low", "slope_high", "intercept", "intercept_low", "intercept_high", "r2", "chi2_dof",
             "gof_p")
REJECT_P = 0.01  # a fit whose chi-square p-value is below this does not describe its cells


def _fit_vars(out, prefix, f, dims, coords, what_x, slope_units, conf):
    """Store one family of WLS fits: slope and intercept with intervals, R^2 and goodness of fit."""
    dof = np.asarray(f["dof"])
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_dof = np.where(dof > 0, f["chi2"] / np.maximum(dof, 1), np.nan)
    values = dict(f, chi2_dof=chi2_dof, gof_p=np.where(dof > 0, _st.chi2.sf(f["chi2"], np.maximum(dof, 1)), np.nan))
    names = {
        "slope": (f"{prefix} slope", slope_units, f"d ln(tau) / d {what_x} (WLS)"),
        "slope_low": (f"{prefix} slope, {conf:.0%} lower bound", slope_units, INTERVALS),
        "slope_high": (f"{prefix} slope, {conf:.0%} upper bound", slope_units, INTERVALS),
        "intercept": (f"{prefix} intercept", "ln(steps)", f"ln(tau) at {what_x} = 0 (WLS)"),
        "intercept_low": (f"{prefix} intercept, {conf:.0%} lower bound", "ln(steps)", INTERVALS),
        "intercept_high": (f"{prefix} intercept, {conf:.0%} upper bound", "ln(steps)", INTERVALS),
        "r2": (f"{prefix} R^2", "1", "weighted coefficient of determination (not a test: see chi2_dof, gof_p)"),
        "chi2_dof": (f"{prefix} chi^2 / dof", "1",
                     "sum ((ln tau - fit) / sigma)^2 / (n - 2) with each cell's own sigma: about 1 when the line "
                     "describes the cells, >> 1 when it does not"),
        "gof_p": (f"{prefix} goodness-of-fit p-value", "1",
                  f"chi-square test of the line against the cells' sigmas; below {REJECT_P} the model is rejected "
                  "and the line is a summary, not a law (its intervals are widened by sqrt(chi^2/dof))"),
    }
    for k in _FIT_KEYS:
        out[f"{prefix}_{k}"] = _attrs(xr.DataArray(values[k], coords, dims), *names[k])


INTERVALS = "Student t, n - 2 dof, covariance scaled by max(1, chi^2/dof)"


def fit_temperature(ds: xr.Dataset, cells: xr.Dataset | None = None, conf: float = 0.95) -> xr.Dataset:
    """Per (steps, batch_size, depth, width) slice: ln tau = a + b / T (`arrhenius_*`) and
    ln tau = a + b T (`linear_*`), over the slice's bounded cells."""
    cells = cell_estimates(ds, conf) if cells is None else cells
    y = _fitted(cells).transpose(*SLICE_DIMS, "T").values
    sig = _fitted(cells, "ln_tau_sigma").transpose(*SLICE_DIMS, "T").values
    T = ds["T"].values.astype(float)
    w = 1.0 / sig ** 2
    used = np.isfinite(y) & np.isfinite(w)
    coords = {k: ds[k] for k in SLICE_DIMS}
    out = xr.Dataset(coords=coords)
    fa = stats.wls(1.0 / T, y, w, conf, scale_floor=True)
    fl = stats.wls(T, y, w, conf, scale_floor=True)
    _fit_vars(out, "arrhenius", fa, SLICE_DIMS, coords, "(1/T)", "1", conf)
    _fit_vars(out, "linear", fl, SLICE_DIMS, coords, "T", "1", conf)
    Tu = np.where(used, T, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tmin, tmax = np.nanmin(Tu, axis=-1), np.nanmax(Tu, axis=-1)
    status = cells["cell_status"].transpose(*SLICE_DIMS, "T").values
    out["fit_T_min"] = _attrs(xr.DataArray(tmin, coords, SLICE_DIMS), "smallest T fitted", "1", "over bounded cells")
    out["fit_T_max"] = _attrs(xr.DataArray(tmax, coords, SLICE_DIMS), "largest T fitted", "1", "over bounded cells")
    out["fit_n_cells"] = _attrs(xr.DataArray(used.sum(-1).astype(np.int64), coords, SLICE_DIMS), "cells fitted", "1",
                                "cells of the slice that entered the fit (cell_status = 0: n_escaped > 0, exposure > 0)")
    out["fit_n_unbounded"] = _attrs(xr.DataArray((status != BOUNDED).sum(-1).astype(np.int64), coords, SLICE_DIMS),
                                    "cells left out", "1", "cells of the slice without a two-sided tau (see cell_status)")
    return out


def fit_batch(ds: xr.Dataset, cells: xr.Dataset | None = None, conf: float = 0.95) -> xr.Dataset | None:
    """Per (steps, T, depth, width): ln tau = a + b B over batch sizes (`batch_*`); None with one B."""
    if ds.sizes["batch_size"] < 2:
        return None
    cells = cell_estimates(ds, conf) if cells is None else cells
    dims = ("steps", "T", "depth", "width")
    y = _fitted(cells).transpose(*dims, "batch_size").values
    sig = _fitted(cells, "ln_tau_sigma").transpose(*dims, "batch_size").values
    B = ds["batch_size"].values.astype(float)
    coords = {k: ds[k] for k in dims}
    out = xr.Dataset(coords=coords)
    f = stats.wls(B, y, 1.0 / sig ** 2, conf, scale_floor=True)
    _fit_vars(out, "batch", f, dims, coords, "B", "1/data point", conf)
    out["batch_n_cells"] = _attrs(xr.DataArray(np.asarray(f["n"], np.int64), coords, dims), "cells fitted", "1",
                                  "bounded cells over batch sizes at this T")
    return out


def ratio_check(ds: xr.Dataset, cells: xr.Dataset | None = None, conf: float = 0.95) -> xr.Dataset | None:
    """Does T/B alone determine tau? For every T/B value shared by >= 2 (T, B) cells, the spread of
    ln tau among them and a chi-square test of one common value (using each cell's sigma).
    None where no two cells share a T/B (a single batch size, or grids that never line up)."""
    cells = cell_estimates(ds, conf) if cells is None else cells
    T = ds["T"].values.astype(float)
    B = ds["batch_size"].values.astype(float)
    ratio = np.array([[float(f"{t / b:.10g}") for b in B] for t in T])  # (T, B)
    vals, counts = np.unique(ratio, return_counts=True)
    shared = vals[counts >= 2]
    if shared.size == 0:
        return None
    dims = ("steps", "depth", "width", "T_over_B")
    y = _fitted(cells).transpose("steps", "depth", "width", "T", "batch_size").values
    sig = _fitted(cells, "ln_tau_sigma").transpose("steps", "depth", "width", "T", "batch_size").values
    shape = y.shape[:3] + (shared.size,)
    res = {k: np.full(shape, np.nan) for k in ("lo", "hi", "chi2", "p", "mean")}
    n_cells = np.zeros(shape, np.int64)
    for g, r in enumerate(shared):
        iT, iB = np.nonzero(ratio == r)
        yy = y[..., iT, iB]
        ww = 1.0 / sig[..., iT, iB] ** 2
        ok = np.isfinite(yy) & np.isfinite(ww)
        n = ok.sum(-1)
        yz, wz = np.where(ok, yy, 0.0), np.where(ok, ww, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (wz * yz).sum(-1) / wz.sum(-1)
            chi2 = (wz * (yz - mean[..., None]) ** 2).sum(-1)
            lo = np.where(ok, yy, np.inf).min(-1)
            hi = np.where(ok, yy, -np.inf).max(-1)
        two = n >= 2
        n_cells[..., g] = n
        res["mean"][..., g] = np.where(n >= 1, mean, np.nan)
        res["lo"][..., g] = np.where(n >= 1, lo, np.nan)
        res["hi"][..., g] = np.where(n >= 1, hi, np.nan)
        res["chi2"][..., g] = np.where(two, chi2, np.nan)
        res["p"][..., g] = np.where(two, _st.chi2.sf(chi2, np.maximum(n - 1, 1)), np.nan)
    coords = {k: ds[k] for k in ("steps", "depth", "width")}
    coords["T_over_B"] = xr.DataArray(shared, dims=("T_over_B",), attrs=dict(long_name="T / B", units="1"))
    out = xr.Dataset(coords=coords)
    out["ratio_n_cells"] = _attrs(xr.DataArray(n_cells, coords, dims), "bounded cells with this T/B", "1",
                                  "(T, B) cells sharing the ratio whose tau is bounded")
    out["ratio_ln_tau_mean"] = _attrs(xr.DataArray(res["mean"], coords, dims), "weighted mean ln tau", "ln(steps)",
                                      "inverse-variance weighted over cells sharing T/B")
    out["ratio_spread"] = _attrs(xr.DataArray(res["hi"] - res["lo"], coords, dims), "ln tau spread", "ln(steps)",
                                 "max - min of ln tau among cells sharing T/B (0 if T/B alone set tau)")
    out["ratio_chi2"] = _attrs(xr.DataArray(res["chi2"], coords, dims), "chi-square of one common ln tau", "1",
                               "sum ((ln tau - mean) / sigma)^2 over cells sharing T/B, n - 1 dof")
    out["ratio_p"] = _attrs(xr.DataArray(res["p"], coords, dims), "p-value of one common ln tau", "1",
                            "small: T/B does not determine tau")
    return out


def memoryless_cells(ds: xr.Dataset) -> xr.Dataset | None:
    """`stats.memorylessness` for every cell and budget (needs escape_hist); None without it."""
    if "escape_hist" not in ds or "escape_step_lo" not in ds.coords:
        return None
    edges = np.append(ds["escape_step_lo"].values, ds["escape_step_hi"].values[-1]).astype(np.int64)
    hist = ds["escape_hist"].transpose(*CELL_AXES, "escape_step_bin").values
    nw = ds["n_walkers"].isel(steps=0).transpose(*CELL_AXES).values
    nd = (ds["n_diverged"].isel(steps=0).transpose(*CELL_AXES).values
          if "n_diverged" in ds else 0)
    keys = ("transient", "transient_fraction", "tail_rate", "p_value", "early_bias", "verdict")
    res = {k: [] for k in keys}
    for s in ds["steps"].values:
        m = stats.memorylessness(hist, edges, nw, nd, budget=min(int(s), int(edges[-1]) - 1))
        for k in keys:
            res[k].append(m[k])
    coords = {k: ds[k] for k in DIMS5}
    out = xr.Dataset(coords=coords)

    def put(name, key, *a):
        arr = np.moveaxis(np.asarray(res[key]), 0, 1)  # (steps, T, ...) -> (T, steps, ...)
        out[name] = _attrs(xr.DataArray(arr, coords, DIMS5), *a)

    put("transient", "transient", "transient length", "steps",
        "steps before log S(n) becomes linear in n (constant per-step hazard); NaN where no such tail was found")
    put("transient_fraction", "transient_fraction", "fraction escaped in the transient", "1", "1 - S(transient)")
    put("tail_rate", "tail_rate", "escape rate after the transient", "1/step", "per-step hazard MLE after the transient")
    put("memoryless_p", "p_value", "p-value of a constant hazard after the transient", "1",
        "likelihood-ratio test against a piecewise-constant hazard")
    put("early_bias", "early_bias", "early-deficit bias of exposure / escapes", "1",
        "estimated tau_hat / tau - 1 of the censored MLE at this budget, from the late hazard "
        "(stats.early_deficit); > 0 where escapes start late and the budget is short")
    put("rate_summary", "verdict", "does the exponential rate summarise the cell", "1",
        "; ".join(f"{k} = {v}" for k, v in stats.VERDICTS.items())
        + " (non-exponential: quote median_escape_time)")
    out["rate_summary"].attrs.update(flag_values=list(stats.VERDICTS),
                                     flag_meanings="exponential non_exponential too_few_escapes early_deficit")
    return out


def fit_cube(ds: xr.Dataset, budget=None, conf: float = 0.95, memoryless: bool = True, *,
             t_range: tuple[float, float] | None = None, exponential_only: bool = False) -> xr.Dataset:
    """All fits of a cube as one labelled Dataset (what `write_fits` stores in `fits/`).

    By default every cell with a two-sided tau enters the fits, except Monte Carlo cells with an
    early deficit (`stats.early_deficit`: a budget too short for exposure / escapes to be tau,
    status EARLY). `t_range=(lo, hi)` keeps only
    lo <= T <= hi; `exponential_only` also leaves out cells whose escape is not memoryless
    (`stats.memorylessness` verdict 1), where tau is not a rate. Cells left out keep their reason
    in `cell_status`."""
    check_cube(ds)
    ds = _budget_sel(ds, budget)
    ds = ds.load() if hasattr(ds, "load") else ds
    cells = cell_estimates(ds, conf)
    sampled = bool((ds["n_walkers"] > 0).any())  # a method = markov cube has no escapes to test
    mem = memoryless_cells(ds) if (memoryless or exponential_only) and sampled else None
    status = cells["cell_status"]
    if t_range is not None:
        lo, hi = (float(v) for v in t_range)
        inside = (ds["T"] >= lo * (1 - 1e-9)) & (ds["T"] <= hi * (1 + 1e-9))
        status = status.where(~((status == BOUNDED) & ~inside), OUTSIDE_T)
    if exponential_only:
        if mem is None and sampled:
            raise InputError("exponential_only: the cube has no escape_hist to test memorylessness with")
        if mem is not None:
            status = status.where(~((status == BOUNDED) & (mem["rate_summary"] == 1)), NON_EXPONENTIAL)
    if mem is not None:  # Monte Carlo tau that a short budget biases high: never fitted
        early = (mem["rate_summary"] == stats.EARLY_DEFICIT) & (cells["tau_source"] == 0)
        status = status.where(~((status == BOUNDED) & early), EARLY)
    cells["cell_status"] = status.astype(np.int8).assign_attrs(cells["cell_status"].attrs)
    parts = [cells, fit_temperature(ds, cells, conf)]
    for extra in (fit_batch(ds, cells, conf), ratio_check(ds, cells, conf), mem):
        if extra is not None:
            parts.append(extra)
    out = xr.merge(parts, compat="override", join="outer", combine_attrs="drop")
    # grouped by fit: each family's slope, intercept, intervals, chi2, p, then its point counts
    first = [v for v in out.data_vars if not v.startswith(("fit_", "linear_", "batch_", "ratio_"))
             and v in cells.data_vars] + [v for v in out.data_vars if v.startswith("arrhenius_")]
    counts = [v for v in ("fit_n_cells", "fit_n_unbounded", "fit_T_min", "fit_T_max") if v in out]
    order = first + counts + [v for v in out.data_vars if v.startswith("linear_")]
    order += [v for v in out.data_vars if v not in order]
    out = out[order]
    out.attrs.update(
        description="escape-sweep fits: ln tau = a + b/T (arrhenius_*), ln tau = a + b T (linear_*) per "
                    "(steps, batch_size, depth, width); ln tau = a + b B (batch_*) per (steps, T, depth, width); "
                    "T/B check (ratio_*); memorylessness per cell; cells without a two-sided tau in cell_status",
        conf=conf, t_range=list(t_range) if t_range is not None else "all",
        cell_selection="memoryless cells with a two-sided tau" if exponential_only else "cells with a two-sided tau",
        weights="1 / sigma^2, sigma = (ln tau_high - ln tau_low) / (2 z) from exact chi-square bounds",
        intervals=INTERVALS, goodness_of_fit=f"chi2_dof and gof_p per fit; p < {REJECT_P}: rejected",
        tau_source=("exact solver (mfpt); nothing sampled, so no memorylessness check" if "mfpt" in ds and not sampled
                    else "exact solver (mfpt) where the cube has it, Monte Carlo elsewhere" if "mfpt" in ds
                    else "Monte Carlo: exposure / n_escaped"),
        cube_name=str(ds.attrs.get("name", "")), cube_spec_hash=str(ds.attrs.get("spec_hash", "")),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    try:
        from .. import __version__
        out.attrs["escape_sweep_version"] = __version__
    except ImportError:  # pragma: no cover
        pass
    return out


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


def write_fits(fits: xr.Dataset, path) -> None:
    """Store `fits` as the `fits/` group of the cube at `path` (replacing an older one)."""
    write_group(fits, path, FITS_GROUP)


def open_fits(path) -> xr.Dataset:
    """The fits stored in a cube's `fits/` group (by `escape-sweep fit` or `write_fits`)."""
    return open_group(path, FITS_GROUP, "fit")
