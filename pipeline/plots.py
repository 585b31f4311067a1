"""Figures of a cube: a generic `plot_cube` (any variable against any of its dims, one line per
hue value, error bars from `<y>_low`/`<y>_high`) and presets reproducing the seed post's figures.

    from pipeline import plots
    plots.plot_cube(ds, x="T", y="log10_escape_time", hue="steps", sel={"batch_size": 1}, out="fig.png")
    plots.preset(ds, "survival", out="survival.png")

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change).
Command line: `escape-sweep plot CUBE --x T --y log10_escape_time [--hue steps] [--sel dim=value ...] -o fig.png`
or `escape-sweep plot CUBE --preset NAME -o fig.png` (names in `PRESETS`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import fits as _fits
from . import stats
from .select import SelectionError, _describe, _fmt, apply_sel, parse_sel

FIGSIZE = (7.0, 4.4)
DPI = 120
LOG_X_DIMS = ("steps", "escape_step_bin")
LINEAR_Y = ("p_escape", "log10_escape_time", "ln_tau", "transient_fraction")
LOG_Y = ("median_escape_time", "escape_rate", "exposure", "mfpt", "tail_rate")  # log y from a 10x span


class PlotError(SelectionError):
    """Bad plot request: one line naming the thing, the value and what is allowed."""


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


AUTO_DIMS = ("T", "steps", "batch_size", "depth", "width")


def default_value(ds, dim):
    """The value a dim takes when a plot does not say: steps the largest budget, batch_size the
    smallest, depth 1 and width 0.1 (the seed pit) where present, anything else its first value."""
    vals = ds[dim].values
    if dim == "steps":
        return vals.max()
    if dim == "batch_size":
        return vals.min()
    want = {"depth": 1.0, "width": 0.1}.get(dim)
    if want is not None:
        close = np.isclose(vals.astype(float), want)
        if close.any():
            return vals[close][0]
    return vals[0]


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _label(da) -> str:
    name = da.attrs.get("long_name", da.name)
    units = da.attrs.get("units")
    return f"{name} [{units}]" if units and units != "1" else str(name)


def _new_fig(figsize=FIGSIZE):
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out) -> str:
    out = Path(out)
    if not out.parent.exists():
        raise PlotError(f"-o {out}: directory {out.parent} does not exist")
    fmt = out.suffix.lstrip(".").lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise PlotError(f"-o {out}: unknown image type {fmt!r} (use .png, or one of {', '.join(sorted(supported))})")
    fig.savefig(out, format=fmt, dpi=DPI)
    return str(out)


def _positive_span(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 2:
        return 1.0
    return float(v.max() / v.min())


def _x_values(da, x):
    if x == "escape_step_bin" and "escape_step_lo" in da.coords:
        return da["escape_step_lo"].values.astype(float), "escape step (bin start)"
    return da[x].values.astype(float), _label(da[x])


def _hue_colors(n, cmap="viridis"):
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    return [cm(i / max(n - 1, 1) * 0.9) for i in range(n)]


def _title(main, fixed: dict) -> str:
    """Title with the fixed coordinates on a second line."""
    if not fixed:
        return main
    return main + "\n" + ", ".join(f"{d} = {_fmt(v)}" for d, v in fixed.items())


def plot_cube(ds: xr.Dataset, x: str, y: str, hue: str | None = None, sel: dict | None = None, out=None, *,
              ax=None, title: str | None = None, logx: bool | None = None, logy: bool | None = None,
              errorbars: bool = True, auto_sel: bool = True, notes: list | None = None,
              label: str | None = None) -> Figure:
    """Plot variable `y` against its dim `x`, one line per `hue` value, after `sel` (nearest
    values within a tolerance). Every other dim of `y` must be down to one value (by `sel`).
    With `auto_sel`, a cube dim left with several values is fixed at `default_value` (largest
    budget, smallest batch size, the seed pit's depth 1 / width 0.1, else the first value) and a
    line saying so is appended to `notes`; without it that is a PlotError.
    Error bars from `<y>_low`/`<y>_high` where present; cells with no value but a finite
    `<y>_low` (nothing escaped: a lower bound only) are drawn as upward triangles.
    Returns the Figure; writes it to `out` when given (type from the suffix, PNG by default)."""
    if y not in ds.data_vars:
        raise PlotError(f"--y {y}: no such variable (variables: {', '.join(sorted(map(str, ds.data_vars)))})")
    ds = apply_sel(ds, sel)
    da = ds[y]
    if x not in da.dims:
        raise PlotError(f"--x {x}: not a dim of {y} (its dims: {', '.join(da.dims)})")
    if hue is not None and (hue not in da.dims or hue == x):
        raise PlotError(f"--hue {hue}: not a dim of {y} other than --x (its dims: {', '.join(d for d in da.dims if d != x)})")
    rest = [d for d in da.dims if d not in (x, hue)]
    many = [d for d in rest if da.sizes[d] > 1]
    if many and auto_sel:
        extra = {d: default_value(ds, d) for d in many if d in AUTO_DIMS}
        if extra:
            ds = ds.sel({d: [v] for d, v in extra.items()})
            if notes is not None:
                notes.extend(f"{d} not chosen: using {d}={_fmt(v)} (pick with --sel {d}=VALUE)" for d, v in extra.items())
            da = ds[y]
            many = [d for d in rest if da.sizes[d] > 1]
    if many:
        what = "; ".join(f"{d} has {_describe(da[d])}" for d in many)
        raise PlotError(f"more than one value left on {', '.join(many)} ({what}): pick one with --sel DIM=VALUE, "
                        f"or use it as --hue")
    fixed = {d: da[d].values[0] for d in rest}
    low = ds.get(f"{y}_low") if errorbars else None
    high = ds.get(f"{y}_high") if errorbars else None
    if errorbars and low is None and f"{y}_rel_error" in ds:  # e.g. mfpt with mfpt_rel_error
        rel = abs(ds[f"{y}_rel_error"])
        low, high = da * (1 - rel), da * (1 + rel)

    def prep(v):
        v = v.isel({d: 0 for d in rest}) if rest else v
        return v.transpose(*([hue] if hue else []), x).values.astype(float)

    val = prep(da)
    lo = prep(low) if low is not None else None
    hi = prep(high) if high is not None else None
    if y == "escape_hist" and "escape_step_hi" in ds.coords:  # unequal bins: show walkers per step
        width = (ds["escape_step_hi"] - ds["escape_step_lo"]).values.astype(float)
        val = val / width
    xs, xlabel = _x_values(ds, x)
    if hue is None:
        val, lo, hi = val[None], (lo[None] if lo is not None else None), (hi[None] if hi is not None else None)
        hue_vals = [None]
    else:
        hue_vals = list(ds[hue].values)
    fig = ax.figure if ax is not None else _new_fig()
    ax = ax if ax is not None else fig.add_subplot()
    colors = _hue_colors(len(hue_vals))
    order = np.argsort(xs)
    bound_label = True
    for i, hv in enumerate(hue_vals):
        label_i = label if hv is None else f"{hue} = {_fmt(hv)}"
        v = val[i][order]
        xo = xs[order]
        if lo is not None and hi is not None:
            l_, h_ = lo[i][order], hi[i][order]
            has = np.isfinite(v)
            err = np.vstack([np.where(has, v - l_, np.nan), np.where(has & np.isfinite(h_), h_ - v, np.nan)])
            err = np.where(np.isfinite(err), np.maximum(err, 0), 0.0)
            ax.errorbar(xo[has], v[has], yerr=err[:, has], color=colors[i], marker="o", ms=3.5, lw=1.2,
                        capsize=2.5, elinewidth=0.9, label=label_i)
            only_low = ~has & np.isfinite(l_)
            if only_low.any():
                ax.plot(xo[only_low], l_[only_low], ls="none", marker="^", ms=6, mfc="none", color=colors[i],
                        label="lower bound (none escaped)" if bound_label else None)
                bound_label = False
        else:
            ax.plot(xo, v, color=colors[i], marker="o" if xo.size <= 60 else None, ms=3.5, lw=1.2, label=label_i)
    if logx is None:
        logx = x in LOG_X_DIMS or _positive_span(xs) >= 1000
    if logy is None:
        finite = val[np.isfinite(val)]
        logy = (y not in LINEAR_Y and not y.startswith("log10_") and finite.size > 0 and np.all(finite >= 0)
                and _positive_span(finite) >= (10 if y in LOG_Y else 100))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("walkers per step" if y == "escape_hist" else _label(da))
    ax.grid(True, alpha=0.3, which="both" if logx or logy else "major")
    if title is None:
        title = _title(str(da.attrs.get("long_name", y)), fixed)
    ax.set_title(title, fontsize=10)
    if len(hue_vals) > 12 and hue is not None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import BoundaryNorm, ListedColormap

        hv = np.asarray(hue_vals, float)
        sm = ScalarMappable(norm=BoundaryNorm(np.arange(len(hv) + 1) - 0.5, len(hv)), cmap=ListedColormap(colors))
        cb = fig.colorbar(sm, ax=ax, pad=0.01)
        ticks = np.unique(np.round(np.linspace(0, len(hv) - 1, 6)).astype(int))
        cb.set_ticks(ticks)
        cb.set_ticklabels([_fmt(hv[t]) for t in ticks])
        cb.set_label(_label(ds[hue]))
        if not bound_label:
            ax.legend(fontsize=8, frameon=False)
    elif any(h is not None for h in hue_vals) or not bound_label or label:
        ax.legend(fontsize=8, frameon=False)
    if out is not None:
        save(fig, out)
    return fig


# ---------------------------------------------------------------------------------------------
# Presets: the seed post's figures
# ---------------------------------------------------------------------------------------------


def _default_sel(ds, sel, keep=()):
    """The seed post's cell unless `sel` says otherwise: smallest batch size (B = 1), depth 1 and
    width 0.1 where present (else the first value)."""
    sel = dict(sel or {})
    prefer = {"batch_size": 1, "depth": 1.0, "width": 0.1}
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


def _pick(values, k):
    """Up to k values spread evenly over `values` (sorted)."""
    values = np.asarray(values)
    if values.size <= k:
        return values
    return values[np.unique(np.round(np.linspace(0, values.size - 1, k)).astype(int))]


def preset_p_escape(ds, sel=None, out=None):
    """P(escape within 100 and within 1000 steps) against T (the budgets nearest to 100 and 1000)."""
    steps = ds["steps"].values
    want = sorted({int(steps[np.argmin(np.abs(steps - s))]) for s in (100, 1000)})
    sel = dict(sel or {})
    sel.setdefault("steps", want if len(want) > 1 else want[0])
    d = _default_sel(ds, sel)
    budgets = ", ".join(str(int(s)) for s in d["steps"].values)
    return plot_cube(d, "T", "p_escape", hue="steps", out=out,
                     title=f"P(escape within {budgets} steps) against learning rate T" + _cell_title(d))


def _cell_title(d, dims=("batch_size", "depth", "width")):
    parts = [f"{k} = {_fmt(d[k].values[0])}" for k in dims if k in d.dims and d.sizes[k] == 1]
    return "\n" + ", ".join(parts) if parts else ""


def preset_escape_time(ds, sel=None, out=None):
    """log10 escape time against T on 0.01..0.02 with 95% error bars, one line per budget, with the
    Arrhenius fit (ln tau = a + b/T over the plotted cells) as a dashed line."""
    d = _t_window(_default_sel(ds, sel))
    fig = plot_cube(d, "T", "log10_escape_time", hue="steps" if d.sizes["steps"] > 1 else None,
                    title="log10 mean escape time against T (95% chi-square bounds)" + _cell_title(d))
    ax = fig.axes[0]
    f = _fits.fit_temperature(d)
    colors = _hue_colors(d.sizes["steps"])
    Tf = np.linspace(float(d["T"].min()), float(d["T"].max()), 100)
    for i, s in enumerate(d["steps"].values):
        fi = f.sel(steps=s).isel(batch_size=0, depth=0, width=0)
        a, b = float(fi["arrhenius_intercept"]), float(fi["arrhenius_slope"])
        if np.isfinite(a) and np.isfinite(b):
            ax.plot(Tf, (a + b / Tf) / math.log(10), ls="--", lw=0.9, color=colors[i],
                    label=f"fit steps={int(s)}: ln tau = {a:.3g} + {b:.3g}/T")
    ax.legend(fontsize=7, frameon=False)
    if out is not None:
        save(fig, out)
    return fig


def preset_survival(ds, sel=None, out=None, n_curves: int = 5):
    """Survival S(n) = P(escape step > n) from escape_hist for a few T, semi-log (a straight line
    is a memoryless escape), with 95% Greenwood (log-log) bands; dotted lines at the budgets."""
    if "escape_hist" not in ds:
        raise PlotError("preset survival: the cube has no escape_hist variable")
    sel = dict(sel or {})
    d = _default_sel(ds, sel)
    if "T" not in sel:
        d = _t_window(d)
        d = d.sel(T=_pick(d["T"].values, n_curves))
    for dim in ("batch_size", "depth", "width"):
        if d.sizes[dim] != 1:
            raise PlotError(f"preset survival: pick one {dim} with --sel {dim}=VALUE ({dim} has {_describe(d[dim])})")
    cell = d.isel(batch_size=0, depth=0, width=0)
    edges = np.append(cell["escape_step_lo"].values, cell["escape_step_hi"].values[-1]).astype(np.int64)
    smax = int(cell["steps"].max())
    fig = _new_fig()
    ax = fig.add_subplot()
    colors = _hue_colors(cell.sizes["T"], "plasma")
    nd = cell["n_diverged"].isel(steps=0).values if "n_diverged" in cell else 0
    sv = stats.survival_from_hist(cell["escape_hist"].transpose("T", "escape_step_bin").values, edges,
                                  cell["n_walkers"].isel(steps=0).values, nd, budget=smax)
    t = np.concatenate([[0], sv.time])
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
    ax.set_xlim(0, smax)
    ax.set_xlabel("step n")
    ax.set_ylabel("S(n) = P(not escaped by step n)")
    ax.set_title("Survival in the pit (Kaplan-Meier from escape_hist, 95% bands)" + _cell_title(d), fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    if out is not None:
        save(fig, out)
    return fig


def preset_batch(ds, sel=None, out=None, n_curves: int = 5):
    """ln tau against batch size B for a few T (largest budget), 95% bounds, with ln tau = a + b B fits."""
    if ds.sizes["batch_size"] < 2:
        raise PlotError(f"preset batch: needs >= 2 batch sizes (the cube has batch_size = {_describe(ds['batch_size'])})")
    sel = dict(sel or {})
    sel.setdefault("steps", int(ds["steps"].max()))
    d = _default_sel(ds, sel, keep=("batch_size",))
    cells = _fits.cell_estimates(d)
    if "T" not in sel:
        ok = (cells["cell_status"] == _fits.BOUNDED).sum([k for k in cells["cell_status"].dims if k != "T"]) >= 2
        Ts = d["T"].values[ok.values] if ok.any() else d["T"].values
        Ts = _pick(Ts, n_curves)
        d, cells = d.sel(T=Ts), cells.sel(T=Ts)
    for dim in ("steps", "depth", "width"):
        if d.sizes[dim] != 1:
            raise PlotError(f"preset batch: pick one {dim} with --sel {dim}=VALUE ({dim} has {_describe(d[dim])})")
    c = cells.isel(steps=0, depth=0, width=0)
    # cells where nothing escaped: draw the one-sided lower bound
    c["ln_tau_low"] = c["ln_tau_low"].where(c["cell_status"] != _fits.NO_ESCAPES, np.log(c["tau_lower_bound"]))
    c["ln_tau"].attrs.update(long_name="ln mean escape time", units="ln(steps)")
    fig = plot_cube(c, "batch_size", "ln_tau", hue="T",
                    title=f"ln tau against batch size (steps = {int(d['steps'].values[0])})"
                    + _cell_title(d, ("depth", "width")))
    ax = fig.axes[0]
    fb = _fits.fit_batch(d, None)
    colors = _hue_colors(d.sizes["T"])
    B = np.linspace(float(d["batch_size"].min()), float(d["batch_size"].max()), 50)
    for i, T in enumerate(d["T"].values):
        fi = fb.sel(T=T).isel(steps=0, depth=0, width=0)
        a, b = float(fi["batch_intercept"]), float(fi["batch_slope"])
        if np.isfinite(a) and np.isfinite(b):
            ax.plot(B, a + b * B, ls="--", lw=0.9, color=colors[i])
    ax.set_xlabel("batch size B")
    if out is not None:
        save(fig, out)
    return fig


def preset_markov(ds, sel=None, out=None):
    """Monte Carlo log10 escape time (largest budget, 95% bounds) and the Markov chain's log10 MFPT
    against T, where the cube has `mfpt` (method = "markov" or "both")."""
    if "mfpt" not in ds:
        raise PlotError("preset markov: the cube has no mfpt variable (run with method = \"markov\" or \"both\")")
    sel = dict(sel or {})
    sel.setdefault("steps", int(ds["steps"].max()))
    d = _default_sel(ds, sel)
    fig = _new_fig()
    ax = fig.add_subplot()
    m = d["mfpt"]
    m = m.isel({k: 0 for k in m.dims if k != "T"})
    T = d["T"].values.astype(float)
    mv = m.transpose("T").values.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lm = np.log10(mv)
    if "log10_escape_time" in d:
        plot_cube(d, "T", "log10_escape_time", ax=ax, title="", label="Monte Carlo")
    ok = np.isfinite(lm)
    ax.plot(T[ok], lm[ok], color="tab:red", lw=1.4, ls="--", label="Markov chain MFPT")
    if "mfpt_rel_error" in d:
        r = d["mfpt_rel_error"]
        r = abs(r.isel({k: 0 for k in r.dims if k != "T"}).transpose("T").values.astype(float))
        good = ok & np.isfinite(r) & (r < 1)
        ax.fill_between(T[good], np.log10(mv[good] * (1 - r[good])), np.log10(mv[good] * (1 + r[good])),
                        color="tab:red", alpha=0.2, lw=0)
    ax.set_ylabel("log10 mean escape time [log10(steps)]")
    ax.set_title("Monte Carlo (censored MLE, 95% bounds) and Markov-chain MFPT"
                 + _cell_title(d, ("steps", "batch_size", "depth", "width")), fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    if out is not None:
        save(fig, out)
    return fig


PRESETS = {
    "p_escape": (preset_p_escape, "P(escape within 100 and within 1000 steps) against T"),
    "escape_time": (preset_escape_time, "log10 escape time against T on 0.01..0.02 with error bars and fit"),
    "survival": (preset_survival, "survival curves S(n) for a few T from escape_hist"),
    "batch": (preset_batch, "ln tau against batch size B for a few T"),
    "markov": (preset_markov, "Monte Carlo escape time and Markov-chain MFPT against T (cubes with mfpt)"),
}


def preset(ds, name: str, sel=None, out=None) -> Figure:
    if name not in PRESETS:
        raise PlotError(f"--preset {name}: unknown preset (presets: {', '.join(PRESETS)})")
    return PRESETS[name][0](ds, sel=sel, out=out)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    """Register `plot` with the cli's subparsers."""
    p = subparsers.add_parser(
        "plot", help="plot a cube variable against a dim (PNG), or one of the preset figures",
        description="Plot --y against --x, one line per --hue value. Fix other dims with --sel DIM=VALUE "
                    "(nearest coordinate, within 1% for floats, exact for integers); a dim left open takes the "
                    "largest step budget, the smallest batch size, depth 1 / width 0.1 (or its first value), "
                    "said on stderr. "
                    "Presets: " + "; ".join(f"{k}: {v[1]}" for k, v in PRESETS.items()))
    p.add_argument("cube", metavar="CUBE", help="path of a cube (a Zarr store made by `escape-sweep run`)")
    p.add_argument("--x", help="dim on the horizontal axis (T, steps, batch_size, depth, width, escape_step_bin)")
    p.add_argument("--y", help="variable to plot (e.g. log10_escape_time, p_escape, median_escape_time)")
    p.add_argument("--hue", help="dim drawn as one line per value")
    p.add_argument("--sel", nargs="+", action="extend", default=[], metavar="DIM=VALUE",
                   help="fix a dim to its nearest coordinate value (DIM=V1,V2 keeps several); repeatable")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a ready figure instead of --x/--y")
    p.add_argument("-o", "--output", required=True, metavar="FIG", help="output image (PNG; .svg/.pdf also work)")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from .cli import UsageError

    try:
        if args.preset is None and (args.x is None or args.y is None):
            raise PlotError("give --x and --y (or --preset NAME; presets: " + ", ".join(PRESETS) + ")")
        sel = parse_sel(args.sel)
        ds = _fits.load_cube(args.cube)
        notes: list[str] = []
        if args.preset:
            preset(ds, args.preset, sel=sel, out=args.output)
        else:
            plot_cube(ds, args.x, args.y, hue=args.hue, sel=sel, out=args.output, notes=notes)
    except (SelectionError, _fits.BadInput) as e:
        raise UsageError(str(e)) from None
    for line in notes:
        print(f"escape-sweep plot: {line}", file=sys.stderr)
    print(args.output)
    return 0
