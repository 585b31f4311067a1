"""The fits as records (JSON), listings and plain-text tables: what `escape-sweep fit` prints
and what the report renders (both from these records)."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .. import stats
from .fits import BOUNDED, DIMS5, EARLY, NOT_RUN, REJECT_P, STATUS, _FIT_KEYS




def _num(x, digits=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-" if x is None or math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}g}"


def _py(v):
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def unbounded_cells(fits: xr.Dataset) -> list[dict]:
    """Every cell left out of the fits (no two-sided tau, or deselected): coordinates, reason and
    (where nothing escaped) tau's one-sided lower bound."""
    st = fits["cell_status"].transpose(*DIMS5).values
    lb = fits["tau_lower_bound"].transpose(*DIMS5).values
    rows = []
    for idx in zip(*np.nonzero(st != BOUNDED)):
        row = {d: _py(fits[d].values[i]) for d, i in zip(DIMS5, idx)}
        row["reason"] = STATUS[int(st[idx])]
        row["tau_lower_bound"] = _py(lb[idx])
        rows.append(row)
    return rows


def fit_records(fits: xr.Dataset, prefix: str) -> list[dict]:
    """One record per fitted slice: coordinates plus slope/intercept with bounds and R^2."""
    keys = [f"{prefix}_{k}" for k in _FIT_KEYS]
    if keys[0] not in fits:
        return []
    extra = {"arrhenius": ["fit_n_cells", "fit_n_unbounded", "fit_T_min", "fit_T_max"],
             "linear": ["fit_n_cells", "fit_n_unbounded", "fit_T_min", "fit_T_max"],
             "batch": ["batch_n_cells"]}.get(prefix, [])
    sub = fits[keys + extra]
    dims = sub[keys[0]].dims
    rows = []
    for idx in np.ndindex(*[fits.sizes[d] for d in dims]):
        row = {d: _py(fits[d].values[i]) for d, i in zip(dims, idx)}
        for k in keys + extra:
            row[k.removeprefix(prefix + "_").removeprefix("fit_").removeprefix("batch_")] = _py(
                sub[k].transpose(*dims).values[idx])
        rows.append(row)
    return rows


def ratio_records(fits: xr.Dataset) -> list[dict]:
    if "ratio_spread" not in fits:
        return []
    dims = ("steps", "depth", "width", "T_over_B")
    rows = []
    for idx in np.ndindex(*[fits.sizes[d] for d in dims]):
        row = {d: _py(fits[d].values[i]) for d, i in zip(dims, idx)}
        for k in ("ratio_n_cells", "ratio_ln_tau_mean", "ratio_spread", "ratio_chi2", "ratio_p"):
            row[k.removeprefix("ratio_")] = _py(fits[k].transpose(*dims).values[idx])
        rows.append(row)
    return rows


def ratio_summary(fits: xr.Dataset) -> dict | None:
    """How badly T/B fails to set tau: over T/B groups with >= 2 bounded cells."""
    rows = [r for r in ratio_records(fits) if (r["n_cells"] or 0) >= 2]
    if not rows:
        return None
    spread = np.array([r["spread"] for r in rows])
    p = np.array([r["p"] if r["p"] is not None else np.nan for r in rows])
    chi2 = np.array([r["chi2"] for r in rows])
    dof = np.array([r["n_cells"] - 1 for r in rows])
    return dict(groups=len(rows), median_spread=float(np.median(spread)), max_spread=float(spread.max()),
                median_chi2_per_dof=float(np.median(chi2 / dof)), rejected_at_1pct=int(np.sum(p < 0.01)),
                tau_factor_median=float(np.exp(np.median(spread))))


def memoryless_summary(fits: xr.Dataset) -> dict | None:
    if "rate_summary" not in fits:
        return None
    v = fits["rate_summary"].values
    run = fits["cell_status"].values != NOT_RUN
    return {stats.VERDICTS[k]: int(np.sum((v == k) & run)) for k in stats.VERDICTS}


def to_json(fits: xr.Dataset) -> dict:
    out = dict(cube=fits.attrs.get("cube_name", ""), spec_hash=fits.attrs.get("cube_spec_hash", ""),
               conf=_py(fits.attrs.get("conf", 0.95)),
               arrhenius=fit_records(fits, "arrhenius"), linear=fit_records(fits, "linear"),
               batch=fit_records(fits, "batch"), ratio=ratio_records(fits), ratio_summary=ratio_summary(fits),
               memorylessness=memoryless_summary(fits), unbounded=unbounded_cells(fits))
    if "rate_summary" in fits:
        bad = fits["rate_summary"].transpose(*DIMS5).values == 1
        out["non_exponential"] = [{d: _py(fits[d].values[i]) for d, i in zip(DIMS5, idx)} for idx in zip(*np.nonzero(bad))]
    return out


def _ci(v, lo, hi, digits=4):
    if v is None:
        return "-"
    if lo is None or hi is None:
        return f"{_num(v, digits)}"
    return f"{_num(v, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _table(header, rows):
    cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def compact_unbounded(rows: list[dict]) -> list[str]:
    """Unbounded cells grouped by (steps, batch_size, depth, width, reason), every T value named."""
    groups: dict = {}
    for r in rows:
        key = (r["steps"], r["batch_size"], r["depth"], r["width"], r["reason"])
        groups.setdefault(key, []).append(r)
    out = []
    for (s, b, d, w, reason), rs in groups.items():
        ts = ", ".join(_num(r["T"], 6) for r in rs)
        bound = ""
        lbs = [r["tau_lower_bound"] for r in rs if r["tau_lower_bound"] is not None]
        if lbs:
            lo_, hi_ = _num(min(lbs), 3), _num(max(lbs), 3)
            bound = f"; tau >= {lo_ if lo_ == hi_ else lo_ + ' .. ' + hi_} steps (one-sided)"
        out.append(f"steps={s} B={b} depth={_num(d)} width={_num(w)}: {reason} at T = {ts}{bound}")
    return out


def _gof(r) -> str:
    p = r.get("gof_p")
    if p is None:
        return "-"
    return f"{_num(p, 2)} rejected" if p < REJECT_P else _num(p, 2)


def fit_table(fits: xr.Dataset, prefix: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one family of fits as strings: the one source of the text and HTML tables.
    Every fit shows R^2 and its goodness of fit (chi^2/dof and p) and how many cells it used."""
    rows = fit_records(fits, prefix)
    fit = lambda r: [_ci(r["slope"], r["slope_low"], r["slope_high"]),  # noqa: E731
                     _ci(r["intercept"], r["intercept_low"], r["intercept_high"]),
                     _num(r["r2"], 4), _num(r["chi2_dof"], 3), _gof(r)]
    if prefix == "batch":
        header = ["steps", "T", "depth", "width", "slope b", "intercept a", "R^2", "chi^2/dof", "p", "cells"]
        body = [[str(r["steps"]), _num(r["T"]), _num(r["depth"]), _num(r["width"]), *fit(r), str(r["n_cells"])]
                for r in rows if (r["n_cells"] or 0) >= 2]
        return header, body
    header = ["steps", "B", "depth", "width", "slope b", "intercept a", "R^2", "chi^2/dof", "p", "T range", "cells",
              "left out"]
    body = [[str(r["steps"]), str(r["batch_size"]), _num(r["depth"]), _num(r["width"]), *fit(r),
             f"{_num(r['T_min'])}..{_num(r['T_max'])}", str(r["n_cells"]), str(r["n_unbounded"])] for r in rows]
    return header, body


def _batch_summary(fits: xr.Dataset) -> list[str]:
    """One line per (steps, depth, width) of the ln tau = a + b B fits: how many, over which T, slope range."""
    rows = [r for r in fit_records(fits, "batch") if (r["n_cells"] or 0) >= 2]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["steps"], r["depth"], r["width"]), []).append(r)
    out = []
    for (st, d, w), rs in groups.items():
        rs.sort(key=lambda r: r["T"])
        rej = sum(1 for r in rs if r.get("gof_p") is not None and r["gof_p"] < REJECT_P)
        out.append(f"  steps={st} depth={_num(d)} width={_num(w)}: {len(rs)} fit{'' if len(rs) == 1 else 's'}, T = {_num(rs[0]['T'])}..{_num(rs[-1]['T'])}; "
                   f"slope b {_num(rs[0]['slope'])} (T = {_num(rs[0]['T'])}) .. {_num(rs[-1]['slope'])} "
                   f"(T = {_num(rs[-1]['T'])}); {rej} rejected (p < {REJECT_P})")
    return out


def left_out_counts(fits: xr.Dataset) -> dict:
    """Cells left out of every fit, counted by reason (STATUS text -> count), biggest first."""
    st = fits["cell_status"].values
    counts = {STATUS[int(k)]: int(np.sum(st == k)) for k in np.unique(st) if int(k) != BOUNDED}
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def format_table(fits: xr.Dataset, full: bool = False) -> str:
    """The fits as plain text (what `escape-sweep fit` prints): a summary, with every fit that has
    data (>= 2 cells) and counts of the rest; `full` (`fit --all`) prints every row of every table."""
    conf = float(fits.attrs.get("conf", 0.95))
    sel = str(fits.attrs.get("cell_selection", "cells with a two-sided tau"))
    tr = fits.attrs.get("t_range", "all")
    if not isinstance(tr, str):
        sel += f", {_num(float(tr[0]))} <= T <= {_num(float(tr[1]))}"
    parts = [f"escape-sweep fits of {fits.attrs.get('cube_name', '') or 'cube'}  "
             f"({conf:.0%} intervals; {sel} only, weighted 1/sigma^2 in ln tau)",
             f"tau from: {fits.attrs.get('tau_source', 'Monte Carlo: exposure / n_escaped')}"]
    exact = "tau_source" in fits and bool((fits["tau_source"] == 1).all())
    top = str(int(fits["steps"].max()))
    if exact and fits.sizes["steps"] > 1 and not full:
        parts.append(f"(the exact tau is the same at every step budget: rows for steps = {top} only; --all shows each)")
    for prefix, title in (("arrhenius", "ln tau = a + b / T"), ("linear", "ln tau = a + b T")):
        header, body = fit_table(fits, prefix)
        if exact and not full:
            body = [r for r in body if r[0] == top]
        ncol = header.index("cells")
        empty = [r for r in body if int(r[ncol]) < 2]
        shown = body if full else [r for r in body if int(r[ncol]) >= 2]
        parts += ["", f"{title}  (per step budget, batch size, depth, width; p: goodness of fit, "
                      f"'rejected' below {REJECT_P})", _table(header, shown) if shown else "  no slice has 2 cells to fit"]
        if empty and not full:
            parts.append(f"  {len(empty)} slice{'' if len(empty) == 1 else 's'} without a fit (fewer than 2 cells; "
                         "--all lists them)")
    header, body = fit_table(fits, "batch")
    if body and full:
        parts += ["", "ln tau = a + b B  at fixed T", _table(header, body)]
    elif body:
        summ_lines = _batch_summary(fits)
        n_fits = len(body)
        if exact:  # the same fits at every budget: count and show the largest budget's
            summ_lines = [ln for ln in summ_lines if ln.startswith(f"  steps={top} ")]
            n_fits = sum(1 for r in body if r[0] == top)
        groups = [int(ln.split(": ", 1)[1].split(" fit", 1)[0]) for ln in summ_lines]
        per = ""
        if len(groups) > 1:
            what = "step budget" if fits.sizes["depth"] * fits.sizes["width"] == 1 else "(step budget, depth, width)"
            per = f"; {groups[0]} per {what}" if len(set(groups)) == 1 else f"; {min(groups)}..{max(groups)} per {what}"
        parts += ["", f"ln tau = a + b B  at fixed T: {n_fits} fit{'' if n_fits == 1 else 's'} with >= 2 cells "
                  f"(table: --all){per}"] + summ_lines
    else:
        parts += ["", "ln tau against B: the cube has one batch size" if fits.sizes.get("batch_size", 1) < 2
                  else "ln tau against B: no T has 2 batch sizes with a bounded tau"]
    summ = ratio_summary(fits)
    if summ:
        rows = [r for r in ratio_records(fits) if (r["n_cells"] or 0) >= 2]
        body = [[r["steps"], _num(r["depth"]), _num(r["width"]), _num(r["T_over_B"]), r["n_cells"], _num(r["ln_tau_mean"]),
                 _num(r["spread"], 3), _num(r["chi2"] / max(r["n_cells"] - 1, 1), 3), _num(r["p"], 2)] for r in rows]
        parts += ["", "Does T/B alone set tau?  (cells sharing T/B; spread = max - min ln tau"
                  + ("" if full else "; table: --all") + ")"]
        if full:
            parts.append(_table(["steps", "depth", "width", "T/B", "cells", "mean ln tau", "spread", "chi2/dof", "p"], body))
        parts.append(f"  {summ['groups']} groups: median spread {summ['median_spread']:.3g} e-folds (tau differs by a factor "
                  f"{summ['tau_factor_median']:.3g}), max {summ['max_spread']:.3g}; median chi2/dof "
                  f"{summ['median_chi2_per_dof']:.3g}; {summ['rejected_at_1pct']} of {summ['groups']} reject one common tau at 1%")
    elif fits.sizes.get("batch_size", 1) > 1:
        parts += ["", "T/B check: no two (T, B) cells with bounded tau share a T/B value"]
    ms = memoryless_summary(fits)
    if ms:
        parts += ["", "Memorylessness (log S(n) linear after a transient): "
                  + ", ".join(f"{v} cells {k}" for k, v in ms.items())]
        if ms.get("non-exponential"):
            parts.append("  non-exponential cells: quote median_escape_time there, not the rate (list: --format json)")
    unb = unbounded_cells(fits)
    counts = left_out_counts(fits)
    parts += ["", f"Cells left out of every fit: {len(unb)}"
              + (" (" + "; ".join(f"{v} {k}" for k, v in counts.items()) + ")" if counts else "")]
    lines = compact_unbounded(unb)
    if full or len(lines) <= 8:
        parts += ["  " + s for s in lines]
    else:
        parts.append(f"  in {len(lines)} groups of (steps, B, depth, width); --all lists them")
    if any(STATUS[EARLY] == k for k in counts):
        parts.append("  early deficit: escapes in the first steps are rarer than later, so at a budget of about tau "
                     "or less exposure / escapes reads tau high (stats.early_deficit; fits.early_bias has the estimate)")
    return "\n".join(parts)
