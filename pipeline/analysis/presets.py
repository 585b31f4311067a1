"""The seed post's figures and the other ready plots (`escape-sweep plot CUBE --preset NAME`).

Each preset picks its own selection and layout on top of `plots`; names and one-line
descriptions are in `catalog.PRESETS` (the CLI lists them without importing matplotlib).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from .. import stats
from ..errors import SelectionError
from ..model.axes import SEED_PIT
from . import fits as _fits
from .catalog import PRESETS as CATALOG
from .plots import (_hue_colors, _new_fig, plot_cube, save)
from .select import _describe, _fmt, apply_sel




# ---------------------------------------------------------------------------------------------
# Presets: the seed post's figures
# ---------------------------------------------------------------------------------------------


def _default_sel(ds, sel, keep=()):
    """The seed post's cell unless `sel` says otherwise: smallest batch size (B = 1), depth 1 and
    width 0.1 where present (else the first value)."""
    sel = dict(sel or {})
    prefer = {"batch_size": 1, **SEED_PIT}
    for dim, want in prefer.items():
        if dim in keep or dim in sel or dim not in ds.dims:
            continue
        vals = ds[dim].values.astype(float)
        close = np.isclose(vals, want)
        sel[dim] = float(vals[close][0]) if close.any() else float(vals.min() if dim == "batch_size" else vals[0])
    return apply_sel(ds, sel)


def _t_window(ds, lo=0.01, hi=0.02):
    """The post's interesting T range when the cube has >= 2 values in it, else all T."""
    T = ds["T"].values
    inside = (T >= lo - 1e-12) & (T <= hi + 1e-12)
    return ds.isel(T=np.flatnonzero(inside)) if inside.sum() >= 2 else ds


def _clip_note(full, shown) -> str:
    """A title line saying so when a preset shows only part of the cube's T values ("" otherwise)."""
    if shown.sizes["T"] >= full.sizes["T"]:
        return ""
    T, t = full["T"].values, shown["T"].values
    every = t.size == np.sum((T >= t.min()) & (T <= t.max()))
    what = f"T clipped to {_fmt(t.min())}..{_fmt(t.max())}" if every else f"{t.size} T values in {_fmt(t.min())}..{_fmt(t.max())}"
    return f"\n{what} (cube: {T.size} values, {_fmt(T.min())}..{_fmt(T.max())}; --sel T=... for others)"


def solver_only(ds) -> bool:
    """A method = "markov" cube: every value comes from the exact solver, nothing was sampled."""
    if str(ds.attrs.get("method", "")) == "markov":
        return True
    return "mfpt" in ds and not bool((ds["n_walkers"] > 0).any())


SOLVER_LABEL = "exact solver (Markov chain)"
LN10 = math.log(10.0)


def _pick(values, k):
    """Up to k values spread evenly over `values` (sorted)."""
    values = np.asarray(values)
    if values.size <= k:
        return values
    return values[np.unique(np.round(np.linspace(0, values.size - 1, k)).astype(int))]


def p_escape_budgets(ds) -> list[int]:
    """The step budgets preset p_escape draws: the cube's nearest to 100 and to 1000 (one if they coincide)."""
    steps = ds["steps"].values
    return sorted({int(steps[np.argmin(np.abs(steps - s))]) for s in (100, 1000)})


def preset_p_escape(ds, sel=None, out=None):
    """P(escape within 100 and within 1000 steps) against T (the budgets nearest to 100 and 1000)."""
    want = p_escape_budgets(ds)
    sel = dict(sel or {})
    sel.setdefault("steps", want if len(want) > 1 else want[0])
    d = _default_sel(ds, sel)
    budgets = ", ".join(str(int(s)) for s in d["steps"].values)
    how = " (exact solver, no sampling)" if solver_only(ds) else " (Monte Carlo, Wilson 95%)"
    return plot_cube(d, "T", "p_escape", hue="steps", out=out,
                     title=f"P(escape within {budgets} steps) against learning rate T{how}" + _cell_title(d))


def _cell_title(d, dims=("batch_size", "depth", "width")):
    parts = [f"{k} = {_fmt(d[k].values[0])}" for k in dims if k in d.dims and d.sizes[k] == 1]
    return "\n" + ", ".join(parts) if parts else ""


def _fit_cells(d):
    """Fits of `d` (fits.fit_cube: exact tau where the cube has it, early-deficit cells left out)."""
    return _fits.fit_cube(d)


def preset_escape_time(ds, sel=None, out=None):
    """log10 escape time against T on 0.01..0.02 with 95% error bars, one line per budget, with the
    Arrhenius fit (ln tau = a + b/T over the cells it used) as a dashed line drawn only over the T
    range of those cells, its legend in log10 like the axis. On a solver-only cube: one line (the
    exact tau is the same at every budget)."""
    full = _default_sel(ds, sel)
    d = _t_window(full) if "T" not in (sel or {}) else full
    exact = solver_only(ds)
    if exact:
        d = d.isel(steps=[-1])
    title = ("log10 mean escape time against T (exact solver: mfpt)" if exact
             else "log10 mean escape time against T (Monte Carlo, 95% bounds)")
    fig = plot_cube(d, "T", "log10_escape_time", hue="steps" if d.sizes["steps"] > 1 else None,
                    title=title + _cell_title(d) + _clip_note(full, d), label=SOLVER_LABEL if exact else None)
    ax = fig.axes[0]
    f = _fit_cells(d)
    colors = _hue_colors(d.sizes["steps"])
    fit_exact = bool((f["tau_source"] == 1).all())  # a cube with mfpt: every budget fits the same exact tau
    for i, s in enumerate(d["steps"].values):
        if fit_exact and i < d.sizes["steps"] - 1:
            continue
        fi = f.sel(steps=s).isel(batch_size=0, depth=0, width=0)
        a, b = float(fi["arrhenius_intercept"]), float(fi["arrhenius_slope"])
        lo, hi, n = float(fi["fit_T_min"]), float(fi["fit_T_max"]), int(fi["fit_n_cells"])
        if np.isfinite(a) and np.isfinite(b) and n >= 2:
            Tf = np.linspace(lo, hi, 100)
            what = "to the exact tau (mfpt)" if fit_exact else f"steps={int(s)}"
            ax.plot(Tf, (a + b / Tf) / LN10, ls="--", lw=0.9, color="k" if fit_exact and not exact else colors[i],
                    label=f"fit {what}, {n} points: log10 tau = {a / LN10:.3g} + {b / LN10:.3g}/T"
                    + _rejected_note(fi, "arrhenius"))
    left = f["cell_status"].isel(batch_size=0, depth=0, width=0)
    early = int((left == _fits.EARLY).sum())
    first = True
    for i, s in enumerate(d["steps"].values):  # hollow rings round the cells the fit left out (early deficit)
        out_i = (left.sel(steps=s) == _fits.EARLY).values
        if not out_i.any():
            continue
        y = d["log10_escape_time"].sel(steps=s).isel(batch_size=0, depth=0, width=0).values
        ax.plot(d["T"].values[out_i], y[out_i], ls="none", marker="o", ms=8, mfc="white", mec=colors[i], mew=1.2,
                zorder=1, label="left out of the fit: early deficit" if first else None)
        first = False
    if early:
        ax.text(0.01, 0.01, f"{early} cells left out of the fits: early deficit (budget too short for "
                "exposure / escapes to be tau)", transform=ax.transAxes, fontsize=6.5, color="0.3")
    ax.legend(fontsize=7, frameon=False)
    if out is not None:
        save(fig, out)
    return fig


def _rejected_note(fi, prefix) -> str:
    """", rejected: chi^2/dof X" for a fit whose goodness-of-fit p is below fits.REJECT_P ("" otherwise)."""
    p, c = float(fi.get(f"{prefix}_gof_p", np.nan)), float(fi.get(f"{prefix}_chi2_dof", np.nan))
    if not (np.isfinite(p) and p < _fits.REJECT_P):
        return ""
    return f" (rejected: chi\u00b2/dof {c:.3g}, p < {_fits.REJECT_P:g})"


def band_note(rel_max: float, span: float) -> str:
    """Title words for the discretisation band: its size, and that it is too thin to see when its full
    width 2 log10(1 + rel) is under 1% of the y axis span `span` (log10 units)."""
    if not np.isfinite(rel_max):
        return "band: discretisation error"
    width = 2 * math.log10(1 + rel_max)
    pct = f"{100 * rel_max:.2g}%"
    if span > 0 and width < 0.01 * span:
        return f"band: discretisation error, < {pct} here (too thin to see)"
    return f"band: discretisation error, up to {pct}"


def preset_survival(ds, sel=None, out=None, n_curves: int = 5):
    """Survival S(n) = P(escape step > n) from escape_hist for a few T, semi-log (a straight line
    is a memoryless escape), with 95% Greenwood (log-log) bands; dotted lines at the budgets."""
    if "escape_hist" not in ds:
        raise SelectionError("preset survival: the cube has no escape_hist variable")
    if solver_only(ds):
        raise SelectionError("preset survival: nothing to show: a method = markov cube samples no walkers (no "
                             "escape_hist); the exact P(escape within each budget) is in --preset p_escape")
    sel = dict(sel or {})
    full = _default_sel(ds, sel)
    d = full
    if "T" not in sel:
        d = _t_window(d)
        d = d.sel(T=_pick(d["T"].values, n_curves))
    for dim in ("batch_size", "depth", "width"):
        if d.sizes[dim] != 1:
            raise SelectionError(f"preset survival: pick one {dim} with --sel {dim}=VALUE ({dim} has {_describe(d[dim])})")
    cell = d.isel(batch_size=0, depth=0, width=0)
    edges = np.append(cell["escape_step_lo"].values, cell["escape_step_hi"].values[-1]).astype(np.int64)
    smax = int(cell["steps"].max())
    fig = _new_fig()
    ax = fig.add_subplot()
    colors = _hue_colors(cell.sizes["T"], "plasma")
    nd = cell["n_diverged"].isel(steps=0).values if "n_diverged" in cell else 0
    sv = stats.survival_from_hist(cell["escape_hist"].transpose("T", "escape_step_bin").values, edges,
                                  cell["n_walkers"].isel(steps=0).values, nd, budget=smax)
    t = np.concatenate([[1], sv.time])  # S = 1 before the first step; log steps: high T curves fall in tens of steps
    floor = None
    for i, T in enumerate(cell["T"].values):
        s = np.concatenate([[1.0], sv.survival[i]])
        lo = np.concatenate([[1.0], sv.low[i]])
        hi = np.concatenate([[1.0], sv.high[i]])
        n = float(cell["n_walkers"].isel(steps=0).values[i])
        if n <= 0:
            continue
        floor = 0.5 / n if floor is None else min(floor, 0.5 / n)
        pos = s > 0
        ax.step(t[pos], s[pos], where="post", color=colors[i], lw=1.3, label=f"T = {_fmt(T)}")
        ax.fill_between(t[pos], np.maximum(lo[pos], 1e-300), hi[pos], step="post", color=colors[i], alpha=0.2, lw=0)
    for b in cell["steps"].values:
        ax.axvline(int(b), color="0.5", ls=":", lw=0.8)
    ax.set_yscale("log")
    if floor:
        ax.set_ylim(bottom=max(floor, 1e-6), top=1.05)
    ax.set_xscale("log")
    ax.set_xlim(1, smax)
    ax.set_xlabel("step n (log scale)")
    ax.set_ylabel("S(n) = P(not escaped by step n)")
    ax.set_title("Survival in the pit (Kaplan-Meier from escape_hist, 95% bands)" + _cell_title(d)
                 + _clip_note(full, d), fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    if out is not None:
        save(fig, out)
    return fig


def preset_batch(ds, sel=None, out=None, n_curves: int = 5):
    """ln tau against batch size B for a few T (largest budget), 95% bounds, with ln tau = a + b B fits."""
    if ds.sizes["batch_size"] < 2:
        raise SelectionError(f"preset batch: needs >= 2 batch sizes (the cube has batch_size = {_describe(ds['batch_size'])})")
    sel = dict(sel or {})
    sel.setdefault("steps", int(ds["steps"].max()))
    d = _default_sel(ds, sel, keep=("batch_size",))
    cells = _fit_cells(d)
    full = d
    if "T" not in sel:
        ok = (cells["cell_status"] == _fits.BOUNDED).sum([k for k in cells["cell_status"].dims if k != "T"]) >= 2
        Ts = d["T"].values[ok.values] if ok.any() else d["T"].values
        Ts = _pick(Ts, n_curves)
        d, cells = d.sel(T=Ts), cells.sel(T=Ts)
    for dim in ("steps", "depth", "width"):
        if d.sizes[dim] != 1:
            raise SelectionError(f"preset batch: pick one {dim} with --sel {dim}=VALUE ({dim} has {_describe(d[dim])})")
    c = cells.isel(steps=0, depth=0, width=0)
    # cells where nothing escaped: draw the one-sided lower bound
    c["ln_tau_low"] = c["ln_tau_low"].where(c["cell_status"] != _fits.NO_ESCAPES, np.log(c["tau_lower_bound"]))
    c["ln_tau"].attrs.update(long_name="ln mean escape time", units="ln(steps)")
    how = "exact solver" if solver_only(ds) else "Monte Carlo, 95% bounds"
    fig = plot_cube(c, "batch_size", "ln_tau", hue="T",
                    title=f"ln tau against batch size (steps = {int(d['steps'].values[0])}; {how})"
                    + _cell_title(d, ("depth", "width")) + _clip_note(full, d))
    ax = fig.axes[0]
    colors = _hue_colors(d.sizes["T"])
    used = c["cell_status"] == _fits.BOUNDED
    for i, T in enumerate(d["T"].values):
        if "batch_slope" not in cells:
            break
        fi = cells.sel(T=T).isel(steps=0, depth=0, width=0)
        a, b = float(fi["batch_intercept"]), float(fi["batch_slope"])
        Bs = d["batch_size"].values[used.sel(T=T).values].astype(float)
        if np.isfinite(a) and np.isfinite(b) and Bs.size >= 2:  # only over the batch sizes the fit used
            B = np.linspace(Bs.min(), Bs.max(), 50)
            ax.plot(B, a + b * B, ls="--", lw=0.9, color=colors[i],
                    label=f"fit T = {_fmt(T)}, {Bs.size} points: ln tau = {a:.3g} + {b:.3g} B")
    ax.legend(fontsize=7, frameon=False, ncol=2)
    ax.set_xlabel("batch size B")
    if out is not None:
        save(fig, out)
    return fig


def preset_markov(ds, sel=None, out=None):
    """The exact solver's log10 mean escape time (mfpt, discretisation band) against T, one line per
    batch size. On a "both" cube also the Monte Carlo exposure / escapes (largest budget, 95%
    bounds) and below it the ratio tau_MC / tau_exact with its interval (1 = agreement)."""
    if "mfpt" not in ds:
        raise SelectionError("preset markov: the cube has no mfpt variable (run with method = \"markov\" or \"both\")")
    sel = dict(sel or {})
    sel.setdefault("steps", int(ds["steps"].max()))
    d = _default_sel(ds, sel, keep=("batch_size",) if "batch_size" not in sel else ())
    for dim in ("depth", "width"):
        if d.sizes[dim] != 1:
            raise SelectionError(f"preset markov: pick one {dim} with --sel {dim}=VALUE ({dim} has {_describe(d[dim])})")
    mc = not solver_only(ds)
    fig = _new_fig()
    if mc:
        gs = fig.add_gridspec(2, 1, height_ratios=(2.0, 1.0), hspace=0.05)
        ax, axr = fig.add_subplot(gs[0]), None
        axr = fig.add_subplot(gs[1], sharex=ax)
    else:
        ax, axr = fig.add_subplot(), None
    T = d["T"].values.astype(float)
    Bs = d["batch_size"].values
    colors = [f"C{k % 10}" for k in range(len(Bs))]
    budget = int(d["steps"].values[0])
    ratios = []
    rel_max = -np.inf
    for j, B in enumerate(Bs):
        c = d.sel(batch_size=B).isel(depth=0, width=0, steps=0)
        tau = c["mfpt"].values.astype(float)
        rel = abs(c["mfpt_rel_error"].values.astype(float)) if "mfpt_rel_error" in c else np.zeros_like(tau)
        ok = np.isfinite(tau) & (tau > 0)
        blab = f", B = {int(B)}" if len(Bs) > 1 else ""
        ax.plot(T[ok], np.log10(tau[ok]), color=colors[j], lw=1.8, zorder=4, label=SOLVER_LABEL + blab)
        good = ok & np.isfinite(rel) & (rel < 1)
        if good.any():
            rel_max = max(rel_max, float(rel[good].max()))
        ax.fill_between(T[good], np.log10(tau[good] * (1 - rel[good])), np.log10(tau[good] * (1 + rel[good])),
                        color=colors[j], alpha=0.25, lw=0)
        if not mc:
            continue
        y, lo, hi = (c[k].values.astype(float) for k in ("log10_escape_time", "log10_escape_time_low",
                                                           "log10_escape_time_high"))
        has = np.isfinite(y)
        ax.errorbar(T[has], y[has], yerr=[y[has] - lo[has], np.where(np.isfinite(hi[has]), hi[has] - y[has], 0)],
                    fmt="o", ms=4, mfc="white", color=colors[j], capsize=2.5, lw=0, elinewidth=0.9, zorder=5,
                    label=f"Monte Carlo{blab}: exposure / escapes, steps = {budget} (95%)")
        with np.errstate(invalid="ignore", divide="ignore"):
            lt = np.log10(tau)
        r = has & ok
        ratio, rlo, rhi = 10 ** (y - lt), 10 ** (lo - lt), 10 ** (hi - lt)
        ratios.append(ratio[r])
        axr.errorbar(T[r], ratio[r], yerr=[ratio[r] - rlo[r], np.where(np.isfinite(rhi[r]), rhi[r] - ratio[r], 0)],
                     fmt="o", ms=4, mfc="white", color=colors[j], capsize=2.5, lw=0.8, elinewidth=0.9)
    ax.set_ylabel("log10 tau [log10(steps)]" if mc else "log10 mean escape time [log10(steps)]")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    cell = _cell_title(d, ("depth", "width")).replace("\n", "; ")
    if mc:
        ax.tick_params(labelbottom=False)
        axr.axhline(1.0, color="k", lw=1.0)
        axr.set_yscale("log")
        pts = np.concatenate(ratios) if ratios else np.ones(1)
        pts = pts[np.isfinite(pts) & (pts > 0)]
        if pts.size:  # the points, not the widest interval, set the range
            axr.set_ylim(min(0.8, pts.min() / 1.1), max(1.25, pts.max() * 1.1))
        from matplotlib.ticker import FormatStrFormatter

        axr.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axr.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        axr.set_ylabel("tau_MC / tau_exact")
        fig.align_ylabels([ax, axr])
        axr.set_xlabel("learning rate T")
        axr.grid(True, alpha=0.3, which="both")
        axr.text(0.01, 0.04, f"MC reads high where the budget ({budget}) is short against tau (early deficit)",
                 transform=axr.transAxes, fontsize=6.5, color="0.3")
        ax.set_title(f"Exact solver against Monte Carlo (steps = {budget}){cell}", fontsize=10)
    else:
        ax.set_xlabel("learning rate T")
        lo, hi = ax.get_ylim()
        band = band_note(rel_max if rel_max >= 0 else np.nan, hi - lo)
        ax.set_title(f"Exact mean escape time against learning rate T (solver)\n{band}{cell}", fontsize=10)
    if out is not None:
        save(fig, out)
    return fig


LAW_STYLE = {"diffusion": ("tab:blue", "-"), "runs": ("tab:orange", "--"), "kramers": ("tab:purple", ":"),
             "xie": ("tab:green", "-."), "mori": ("tab:brown", (0, (5, 1, 1, 1)))}
RESIDUAL_SPAN = 8.0  # residual panel: +-this many e-folds; laws beyond are clipped and named


def preset_theory(ds, sel=None, out=None, max_columns: int = 4, th=None):
    """ln tau against 1/T for each batch size (one column each, up to max_columns): the exact tau
    (solid black), Monte Carlo points with 95% intervals (largest budget), each law of
    pipeline.model.laws as a line over the cube's own T values (never past them); below, the
    residual ln tau_law - ln tau_exact with a factor-2 band. Seed pit unless --sel says otherwise.
    `th` (from analysis.theory.evaluate) skips the evaluation."""
    from . import theory as _theory
    from ..model.laws import LAW_TITLES

    sel = dict(sel or {})
    sel.setdefault("steps", int(ds["steps"].max()))
    d = _default_sel(ds, sel, keep=("batch_size",))
    for dim in ("depth", "width"):
        if d.sizes[dim] != 1:
            raise SelectionError(f"preset theory: pick one {dim} with --sel {dim}=VALUE ({dim} has {_describe(d[dim])})")
    if d.sizes["batch_size"] > max_columns:
        d = d.sel(batch_size=_pick(d["batch_size"].values, max_columns))
    if th is None:
        th = _theory.evaluate(d, budget=int(d["steps"].values[0]))
    else:
        th = th.sel(batch_size=d["batch_size"].values, depth=d["depth"].values, width=d["width"].values)
    nB = th.sizes["batch_size"]
    fig = _new_fig((3.3 * nB + 1.0, 6.2))
    gs = fig.add_gridspec(2, nB, height_ratios=(2.2, 1.0), hspace=0.08, wspace=0.28)
    inv = 1.0 / th["T"].values.astype(float)
    order = np.argsort(inv)
    inv = inv[order]
    for j, B in enumerate(th["batch_size"].values):
        c = th.sel(batch_size=B).isel(depth=0, width=0).isel(T=order)
        ax = fig.add_subplot(gs[0, j])
        axr = fig.add_subplot(gs[1, j], sharex=ax)
        ex = c["ln_tau_exact"].values
        mc, lo, hi = (c[k].values for k in ("ln_tau_mc", "ln_tau_mc_low", "ln_tau_mc_high"))
        ok = np.isfinite(mc)
        data = np.concatenate([ex[np.isfinite(ex)], lo[ok], hi[ok]])
        ymin, ymax = (float(data.min()), float(data.max())) if data.size else (0.0, 1.0)
        pad = max(1.0, 0.15 * (ymax - ymin))
        off = []
        for law in c["law"].values:
            y = c["ln_tau_law"].sel(law=law).values
            color, ls = LAW_STYLE.get(str(law), ("0.4", "-"))
            good = np.isfinite(y)
            ax.plot(inv[good], y[good], color=color, ls=ls, lw=1.3, label=LAW_TITLES.get(str(law), str(law)))
            r = c["residual"].sel(law=law).values
            rg = np.isfinite(r)
            axr.plot(inv[rg], np.clip(r[rg], -RESIDUAL_SPAN, RESIDUAL_SPAN), color=color, ls=ls, lw=1.3)
            if rg.any() and np.abs(r[rg]).min() > RESIDUAL_SPAN:
                off.append(f"{law} ({np.median(r[rg]):+.0f})")
        ax.plot(inv[np.isfinite(ex)], ex[np.isfinite(ex)], color="k", lw=2.0, label="exact (Markov chain)", zorder=5)
        if ok.any():
            ax.errorbar(inv[ok], mc[ok], yerr=[mc[ok] - lo[ok], hi[ok] - mc[ok]], fmt="o", ms=3.5, color="tab:red",
                        ecolor="tab:red", capsize=2, lw=0.9, label=f"Monte Carlo (steps = {th.attrs.get('mc_budget')})",
                        zorder=6)
        ax.set_ylim(ymin - pad, ymax + pad)
        ax.set_title(f"B = {int(B)}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=False)
        axr.axhspan(-math.log(2.0), math.log(2.0), color="0.85", lw=0)
        axr.axhline(0.0, color="k", lw=1.0)
        axr.set_ylim(-RESIDUAL_SPAN - 0.5, RESIDUAL_SPAN + 0.5)
        axr.set_xlabel("1 / T")
        axr.grid(True, alpha=0.3)
        if off:
            axr.text(0.02, 0.04, "clipped: " + ", ".join(off), transform=axr.transAxes, fontsize=6.5, color="0.3")
        if j == 0:
            ax.set_ylabel("ln tau [ln(steps)]")
            axr.set_ylabel("ln tau_law - ln tau_exact")
    fig.axes[0].legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle("Which law predicts the escape time?  grey band: within a factor 2"
                 + _cell_title(d, ("depth", "width")).replace("\n", "  "), fontsize=10)
    if out is not None:
        save(fig, out)
    return fig


PRESETS = {name: (globals()[f"preset_{name}"], text) for name, text in CATALOG.items()}


def preset(ds, name: str, sel=None, out=None) -> Figure:
    if name not in PRESETS:
        raise SelectionError(f"--preset {name}: unknown preset (presets: {', '.join(PRESETS)})")
    return PRESETS[name][0](ds, sel=sel, out=out)
