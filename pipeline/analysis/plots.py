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

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..model.axes import AXES, SEED_PIT
from .select import SelectionError, _describe, _fmt, apply_sel

FIGSIZE = (7.0, 4.4)
DPI = 120
LOG_X_DIMS = ("steps", "escape_step_bin")
LINEAR_Y = ("p_escape", "log10_escape_time", "ln_tau", "transient_fraction")
MARKERS = ("o", "s", "D", "v", "P", "X", "h", "<", ">", "p")  # one per hue value (cycled), so lines differ in grey too
LOG_Y = ("median_escape_time", "escape_rate", "exposure", "mfpt", "tail_rate")  # log y from a 10x span


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


AUTO_DIMS = AXES


def default_value(ds, dim):
    """The value a dim takes when a plot does not say: steps the largest budget, batch_size the
    smallest, depth 1 and width 0.1 (the seed pit) where present, anything else its first value."""
    vals = ds[dim].values
    if dim == "steps":
        return vals.max()
    if dim == "batch_size":
        return vals.min()
    want = SEED_PIT.get(dim)
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
        raise SelectionError(f"-o {out}: directory {out.parent} does not exist")
    fmt = out.suffix.lstrip(".").lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise SelectionError(f"-o {out}: unknown image type {fmt!r} (use .png, or one of {', '.join(sorted(supported))})")
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
    line saying so is appended to `notes`; without it that is a SelectionError.
    Error bars from `<y>_low`/`<y>_high` where present; cells with no value but a finite
    `<y>_low` (nothing escaped: a lower bound only) are drawn as upward triangles.
    Returns the Figure; writes it to `out` when given (type from the suffix, PNG by default)."""
    if y not in ds.data_vars:
        raise SelectionError(f"--y {y}: no such variable (variables: {', '.join(sorted(map(str, ds.data_vars)))})")
    ds = apply_sel(ds, sel)
    da = ds[y]
    if x not in da.dims:
        raise SelectionError(f"--x {x}: not a dim of {y} (its dims: {', '.join(da.dims)})")
    if hue is not None and (hue not in da.dims or hue == x):
        raise SelectionError(f"--hue {hue}: not a dim of {y} other than --x (its dims: {', '.join(d for d in da.dims if d != x)})")
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
        raise SelectionError(f"more than one value left on {', '.join(many)} ({what}): pick one with --sel DIM=VALUE, "
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
    logx_guess = (x in LOG_X_DIMS or _positive_span(xs) >= 1000) if logx is None else logx
    gaps = np.diff(np.log(np.unique(xs[xs > 0]))) if logx_guess else np.diff(np.unique(xs))
    dodge = 0.5 * float(gaps.min()) / max(len(hue_vals), 1) if gaps.size else 0.0
    for i, hv in enumerate(hue_vals):
        label_i = label if hv is None else f"{hue} = {_fmt(hv)}"
        v = val[i][order]
        xo = xs[order]
        if lo is not None and hi is not None:
            l_, h_ = lo[i][order], hi[i][order]
            has = np.isfinite(v)
            err = np.vstack([np.where(has, v - l_, np.nan), np.where(has & np.isfinite(h_), h_ - v, np.nan)])
            err = np.where(np.isfinite(err), np.maximum(err, 0), 0.0)
            mk = MARKERS[i % len(MARKERS)] if len(hue_vals) > 1 else "o"
            ax.errorbar(xo[has], v[has], yerr=err[:, has], color=colors[i], marker=mk, ms=3.5, lw=1.2,
                        capsize=2.5, elinewidth=0.9, label=label_i)
            only_low = ~has & np.isfinite(l_)
            if only_low.any():  # filled in the line's colour, nudged sideways per hue: equal bounds stay apart
                xb = xo[only_low] * (1 + dodge * (i - (len(hue_vals) - 1) / 2)) if logx_guess else \
                    xo[only_low] + dodge * (i - (len(hue_vals) - 1) / 2)
                ax.plot(xb, l_[only_low], ls="none", marker="^", ms=7, mfc=colors[i], mec="k", mew=0.5,
                        label="lower bound (none escaped), colour of its line" if bound_label else None)
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
