"""One self-contained HTML page about a cube: provenance, the spec, the figures (embedded PNG),
the fit tables, memorylessness and every cell without a bounded escape time.

    from pipeline import report
    report.write_report(ds, "report.html", source="results/x.zarr")

Command line: `escape-sweep report CUBE -o report.html [--budget N]`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import xarray as xr

from . import fits as _fits
from .select import _fmt
from . import plots, presets, tables
from ..errors import SelectionError
from ..model.axes import SEED_PIT

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;
color:#1d1d1f;line-height:1.4}
h1{margin-bottom:.1em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f3f5} td.l,th.l{text-align:left}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:12px;border:1px solid #e5e5e5}
figure{margin:1em 0;border:1px solid #eee;padding:.5em;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto} figcaption{font-size:13px;color:#444;max-width:840px}
.warn{color:#a04000} .muted{color:#777} ul.cells{font-size:13px}
nav a{margin-right:1em}
"""


FOLD_ROWS = 30  # longer tables are folded into <details>


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _n(x, digits=4) -> str:
    if x is None:
        return "&ndash;"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, float) and not math.isfinite(x):
        return "&ndash;" if math.isnan(x) else ("&infin;" if x > 0 else "&minus;&infin;")
    return f"{x:.{digits}g}"


def _ci(v, lo, hi) -> str:
    if v is None:
        return "&ndash;"
    if lo is None or hi is None:
        return _n(v)
    return f"{_n(v)} <span class=muted>[{_n(lo)}, {_n(hi)}]</span>"


def _table(header, rows, left=()) -> str:
    th = "".join(f"<th class={'l' if i in left else 'r'}>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class={'l' if i in left else 'r'}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    table = f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    if len(rows) > FOLD_ROWS:
        return f"<details><summary>{len(rows)} rows (click to show)</summary>{table}</details>"
    return table


def _figures(ds: xr.Dataset, budget) -> list[tuple[str, str, str | None]]:
    """(title, caption, base64 PNG or None with the reason in caption) for every figure."""
    out = []

    def skipped(title, why):
        out.append((title, f"not drawn: {why}", None))

    def add(title, caption, make):
        try:
            fig = make()
            out.append((title, caption, _png(fig)))
        except (SelectionError, ValueError, KeyError) as e:
            out.append((title, f"not drawn: {e}", None))

    exact = presets.solver_only(ds)
    got = presets.p_escape_budgets(ds)
    within = "Probability of escaping within " + " and within ".join(str(b) for b in got) + " steps" + (
        "" if got == [100, 1000] else " (the cube's budget" + ("s" if len(got) > 1 else "") + " nearest to 100 and "
        "1000 steps)")
    if exact:
        add("P(escape) against T", within + " from the exact solver (no sampling, no intervals); B = 1, depth 1, "
            "width 0.1 where present.", lambda: presets.preset_p_escape(ds))
        add("log10 escape time against T", "log10 of the exact mean escape time (mfpt; band: its discretisation "
            "error) on 0.01 <= T <= 0.02 (all T if fewer than two lie there); dashed: ln tau = a + b/T fitted to "
            "these cells, drawn over the T range it used.", lambda: presets.preset_escape_time(ds))
        add("log10 escape time, every T", "The exact mean escape time (the solver's mfpt, the same at every step "
            "budget) over the whole T axis, one line per batch size.", lambda: _exact_every_t(ds, budget))
        skipped("median escape time against T", "the exact solver gives the mean escape time, not the median "
                "(median_escape_time is NaN in a method = markov cube)")
        skipped("Survival curves", "a method = markov cube samples no walkers, so it has no escape-step histogram; "
                "the exact P(escape within each budget) is in the first figure")
    else:
        add("P(escape) against T", within + ", Wilson 95% intervals; B = 1 (smallest batch), depth 1, width 0.1 "
            "where present.", lambda: presets.preset_p_escape(ds))
        add("log10 escape time against T", "Censored exponential MLE of the mean escape time tau = exposure / "
            "n_escaped with exact chi-square 95% bounds on 0.01 <= T <= 0.02 (all T if fewer than two lie there); "
            "dashed: ln tau = a + b/T fitted to the cells the fits keep (the exact tau on a both-cube; early-deficit "
            "cells left out: hollow rings), drawn over their T range; the legend says 'rejected' where a fit's "
            "chi-square test rejects the line (p < 0.01).", lambda: presets.preset_escape_time(ds))
        add("log10 escape time, every T", "The whole T axis at the largest budget; triangles: cells where nothing "
            "escaped (one-sided 95% lower bound). exposure / escapes reads tau high where the budget is short "
            "against tau (early deficit: see the fits).", lambda: plots.plot_cube(
                ds, "T", "log10_escape_time", hue="batch_size" if ds.sizes["batch_size"] > 1 else None,
                sel={"steps": int(budget or ds["steps"].max()), **_seed_sel(ds, keep_b=True)}))
        if bool(np.isfinite(ds["median_escape_time"]).any()):
            add("median escape time against T", "Median escape step (NaN where fewer than half escaped): the number "
                "to quote where the escape is not memoryless.", lambda: plots.plot_cube(
                    ds, "T", "median_escape_time", hue="steps" if ds.sizes["steps"] > 1 else None, sel=_seed_sel(ds)))
        else:
            skipped("median escape time against T", "no cell had half of its walkers escape within its budget")
        add("Survival curves", "S(n) from escape_hist for a few T, Kaplan-Meier with 95% Greenwood (log-log) bands, "
            "log steps; a memoryless (exponential) escape is exp(-n/tau); dotted: the step budgets.",
            lambda: presets.preset_survival(ds))
    if ds.sizes["batch_size"] > 1:
        add("ln tau against batch size", "ln tau against B at a few T (largest budget) with ln tau = a + b B fits, "
            "each drawn over the batch sizes it used" + (" (exact solver)." if exact else "."),
            lambda: presets.preset_batch(ds))
    if "mfpt" in ds and exact:
        add("Exact mean escape time", "log10 of the exact solver's mean escape time (band: its discretisation error "
            "estimate; the title gives its size), one line per batch size.", lambda: presets.preset_markov(ds))
    elif "mfpt" in ds:
        add("Markov chain against Monte Carlo", "log10 of the exact solver's mean escape time (line; band: its "
            "discretisation error) and the Monte Carlo exposure / escapes (points, 95% bounds) at the largest "
            "budget; below, their ratio tau_MC / tau_exact with its interval (1: agreement; above 1 where the "
            "budget is short against tau: the early deficit).", lambda: presets.preset_markov(ds))
    return out


def _exact_every_t(ds, budget):
    """log10 of the exact tau against every T on a solver-only cube: titled by the solver, not by a
    step budget (the exact tau does not depend on it)."""
    sel = {"steps": int(budget or ds["steps"].max()), **_seed_sel(ds, keep_b=True)}
    many = ds.sizes["batch_size"] > 1
    cell = ", ".join(f"{k} = {_fmt(v)}" for k, v in sel.items() if k in ("depth", "width"))
    return plots.plot_cube(ds, "T", "log10_escape_time", hue="batch_size" if many else None, sel=sel,
                           label=None if many else presets.SOLVER_LABEL,
                           title=f"log10 mean escape time against T: exact solver (mfpt)\n{cell}")


def _seed_sel(ds, keep_b=False):
    sel = {}
    for dim, want in {"batch_size": 1, **SEED_PIT}.items():
        if keep_b and dim == "batch_size":
            continue
        vals = ds[dim].values.astype(float)
        close = np.isclose(vals, want)
        sel[dim] = float(vals[close][0]) if close.any() else float(vals.min() if dim == "batch_size" else vals[0])
    return sel


def _provenance(ds: xr.Dataset, source) -> str:
    rows = []
    if source:
        rows.append(("store", _e(source)))
    for k, v in ds.attrs.items():
        if k == "spec":
            continue
        if k == "versions":
            try:
                v = ", ".join(f"{a} {b}" for a, b in json.loads(v).items())
            except (TypeError, ValueError):
                pass
        rows.append((_e(k), _e(v if not isinstance(v, (list, tuple)) else ", ".join(map(str, v)))))
    return _table(["attribute", "value"], rows, left=(0, 1))


def _axes(ds: xr.Dataset) -> str:
    rows = []
    for d in _fits.DIMS5:
        v = ds[d].values
        vals = ", ".join(_fmt(x) for x in v) if v.size <= 10 else f"{_fmt(v.min())} .. {_fmt(v.max())}"
        rows.append((_e(d), v.size, _e(vals)))
    n = ds["n_walkers"].isel(steps=0).values
    cells = int(np.prod(n.shape))
    computed = n > 0
    if "mfpt" in ds:  # a cell the exact solver answered is computed, sampled or not
        computed = computed | np.isfinite(ds["mfpt"].transpose(*ds["n_walkers"].isel(steps=0).dims).values)
    run = int(computed.sum())
    rows.append(("cells run", f"{run} / {cells}", "" if run == cells else "<span class=warn>partly finished sweep</span>"))
    if "n_diverged" in ds:
        nd = int(ds["n_diverged"].isel(steps=0).sum())
        rows.append(("diverged walkers", nd, "" if nd == 0 else "<span class=warn>counted, never called escaped</span>"))
    return _table(["axis", "values", ""], rows, left=(0, 2))


def _t_tables(f: xr.Dataset, suffix: str = "") -> list[str]:
    """The T fits; where tau is exact (the same at every budget) only the largest budget's rows."""
    if "tau_source" in f and bool((f["tau_source"] == 1).all()) and f.sizes.get("steps", 1) > 1:
        f = f.sel(steps=[int(f["steps"].max())])
        suffix += " (exact tau: the same at every step budget; rows for the largest)"
    return [f"<h3>{_e(title)}{suffix}</h3>" + _table(*tables.fit_table(f, prefix))
            for prefix, title in (("arrhenius", "ln tau = a + b / T"), ("linear", "ln tau = a + b T"))]


def _rejections(f) -> str:
    """A sentence on how many T fits (both laws, >= 3 cells) their chi-square test rejects ("" if none)."""
    if f is None:
        return ""
    p, each = [], []
    for prefix, law in (("arrhenius", "ln tau = a + b/T"), ("linear", "ln tau = a + b T")):
        k = f"{prefix}_gof_p"
        if k in f:
            v = f[k].values.ravel()
            p.append(v[np.isfinite(v)])
            each.append(f"{law}: {int((p[-1] < _fits.REJECT_P).sum())} of {p[-1].size}")
    p = np.concatenate(p) if p else np.zeros(0)
    bad = int((p < _fits.REJECT_P).sum())
    if not bad:
        return ""
    most = "Most fits" if 2 * bad > p.size else "Some fits"
    return (f"<p class=warn>{most} are rejected: {bad} of {p.size} tested fits ({'; '.join(each)}) have "
            f"goodness-of-fit p &lt; "
            f"{_fits.REJECT_P:g} (chi<sup>2</sup>/dof well above 1), so a straight line does not describe those cells "
            "within their errors: read them as summaries of the trend, not as laws.</p>")


def _fit_intro(ds: xr.Dataset, f: xr.Dataset | None = None) -> str:
    """What the fits were made of: the exact tau, or the Monte Carlo estimate (and which cells); on a
    Monte Carlo or both cube, how many fits their goodness-of-fit test rejects (from `f`)."""
    tail = ("95% intervals from Student's t with n &minus; 2 dof. Stored by <code>escape-sweep fit</code> in the "
            "cube's <code>fits/</code> group.</p>")
    if presets.solver_only(ds):
        return ("<p>Weighted least squares of the exact ln tau (the solver's mfpt) of every cell, weights "
                "1/sigma<sup>2</sup> with sigma = max(mfpt_rel_error, 1e-6): a line rarely describes exact values "
                "within their tiny errors, so most fits read 'rejected' (a summary, not a law); " + tail)
    exact = ("the exact tau (mfpt) where the cube has it, else " if "mfpt" in ds else "")
    return ("<p>Weighted least squares of ln tau: " + exact + "the Monte Carlo exposure / n_escaped over cells whose "
            "tau is bounded on both sides (n_escaped &gt; 0), leaving out cells with an early deficit (a budget too "
            "short for exposure / escapes to be tau); weights 1/sigma<sup>2</sup> with sigma = (ln tau<sub>high</sub> "
            "&minus; ln tau<sub>low</sub>)/(2&middot;1.96) from the exact chi-square bounds; " + tail + _rejections(f))


def _window_section(ds: xr.Dataset, budget) -> str:
    """Fits on the post's window 0.01 <= T <= 0.02 over memoryless cells only."""
    T = ds["T"].values
    n_in = int(((T >= 0.01 - 1e-12) & (T <= 0.02 + 1e-12)).sum())
    if "escape_hist" not in ds or n_in < 3 or presets.solver_only(ds):  # the exact tau needs no memorylessness
        return ""
    f = _fits.fit_cube(ds, budget=budget, t_range=(0.01, 0.02), exponential_only=True)
    return ("<h3>The post's window: 0.01 &le; T &le; 0.02, memoryless cells only</h3>"
            "<p>The same fits over the cells in the seed post's range whose escape passes the memorylessness check "
            "(where tau is a rate); compare R<sup>2</sup> of the two laws.</p>"
            + "\n".join(_t_tables(f, " (window)")))


def _fit_section(f: xr.Dataset) -> str:
    parts = _t_tables(f)
    if f.sizes.get("batch_size", 1) > 1 or "batch_slope" in f:
        header, body = tables.fit_table(f, "batch")
        parts.append("<h3>ln tau = a + b B at fixed T</h3>"
                     + (_table(header, body) if body else "<p>No T with two or more bounded batch sizes.</p>"))
    summ = tables.ratio_summary(f)
    if summ:
        rows = [r for r in tables.ratio_records(f) if (r["n_cells"] or 0) >= 2]
        body = [[r["steps"], _n(r["depth"]), _n(r["width"]), _n(r["T_over_B"]), r["n_cells"], _n(r["ln_tau_mean"]),
                 _n(r["spread"], 3), _n(r["chi2"] / max(r["n_cells"] - 1, 1), 3), _n(r["p"], 2)] for r in rows]
        parts.append(
            "<h3>Does T/B alone set tau?</h3>"
            f"<p>{summ['groups']} groups of cells share a T/B value. Median spread of ln tau within a group: "
            f"<b>{summ['median_spread']:.3g}</b> e-folds (tau differs by a factor {summ['tau_factor_median']:.3g}); "
            f"max {summ['max_spread']:.3g}; median chi<sup>2</sup>/dof {summ['median_chi2_per_dof']:.3g}; "
            f"{summ['rejected_at_1pct']} of {summ['groups']} groups reject one common tau at 1%.</p>"
            + _table(["steps", "depth", "width", "T/B", "cells", "mean ln tau", "spread", "chi<sup>2</sup>/dof", "p"], body))
    elif f.sizes.get("batch_size", 1) > 1:
        parts.append("<h3>Does T/B alone set tau?</h3><p>No two cells with a bounded tau share a T/B value.</p>")
    return "\n".join(parts)


def _memoryless_section(f: xr.Dataset, ds: xr.Dataset) -> str:
    ms = tables.memoryless_summary(f)
    if not ms and presets.solver_only(ds):
        return ("<p>Not checked: the exact solver sampled no walkers, and its tau is the mean escape time "
                "whatever the shape of the escape-time distribution.</p>")
    if not ms:
        return "<p>The cube has no escape_hist: memorylessness not checked.</p>"
    parts = ["<p>Per cell and budget: log S(n) tested for linearity (one constant per-step hazard) after a transient. "
             + ", ".join(f"<b>{v}</b> {k}" for k, v in ms.items()) + ".</p>"]
    bad = f["rate_summary"].transpose(*_fits.DIMS5).values == 1
    if bad.any():
        med = ds["median_escape_time"].transpose(*_fits.DIMS5).values if "median_escape_time" in ds else None
        rows = []
        with np.errstate(invalid="ignore", divide="ignore"):
            d = ds["n_escaped"].transpose(*_fits.DIMS5).values
            e = ds["exposure"].transpose(*_fits.DIMS5).values
            ratio = (d / e) / f["tail_rate"].transpose(*_fits.DIMS5).values
        for idx in zip(*np.nonzero(bad)):
            c = [f[d].values[i] for d, i in zip(_fits.DIMS5, idx)]
            rows.append([_n(float(c[0])), int(c[1]), int(c[2]), _n(float(c[3])), _n(float(c[4])),
                         _n(float(f["transient"].transpose(*_fits.DIMS5).values[idx])),
                         _n(float(f["transient_fraction"].transpose(*_fits.DIMS5).values[idx]), 3),
                         _n(float(ratio[idx]), 3),
                         _n(float(med[idx])) if med is not None else "&ndash;"])
        parts.append("<p>Cells where the exponential rate is a poor summary (quote the median escape time there). "
                     "Flagged when no constant-hazard tail is found (transient &ndash;), when the transient holds more "
                     "than 25% of the walkers, or when the overall rate n_escaped/exposure and the tail rate differ by "
                     "more than a factor 1.25:</p>"
                     + _table(["T", "steps", "B", "depth", "width", "transient [steps]", "escaped in transient",
                               "rate / tail rate", "median escape time"], rows))
    return "\n".join(parts)


TWO_SIDED = (_fits.NON_EXPONENTIAL, _fits.OUTSIDE_T, _fits.EARLY)  # left out although tau is bounded both sides


def _unbounded_section(f: xr.Dataset) -> str:
    """Cells without a two-sided tau, then (under their own heading) cells left out of the fits for
    another reason although their tau is two-sided (early deficit, not memoryless, outside the T range)."""
    rows = tables.unbounded_cells(f)
    kept = {_fits.STATUS[k] for k in TWO_SIDED}
    none = [r for r in rows if r["reason"] not in kept]
    other = [r for r in rows if r["reason"] in kept]
    cells = lambda n: f"{n} cell" + ("" if n == 1 else "s")  # noqa: E731
    lst = lambda rs: "<ul class=cells>" + "".join(f"<li>{_e(s)}</li>" for s in tables.compact_unbounded(rs)) + "</ul>"  # noqa: E731
    parts = [f"<p>{cells(len(none))} {'has' if len(none) == 1 else 'have'} no two-sided estimate of tau and "
             f"{'is' if len(none) == 1 else 'are'} left out of every fit:</p>" + lst(none) if none
             else "<p>Every cell has a two-sided escape time.</p>"]
    if other:
        parts.append("<h3 id=leftout>Cells left out of the fits (tau bounded on both sides)</h3>"
                     f"<p>{cells(len(other))} with a two-sided estimate of tau that the fits leave out, with the "
                     "reason (early deficit: the budget is too short for exposure / escapes to be tau, which reads "
                     "high there):</p>" + lst(other))
    return "\n".join(parts)


THEORY_TITLE = "Which theory predicts the escape time?"


def _theory_section(ds: xr.Dataset, budget) -> tuple[str, str | None]:
    """The laws against the exact tau (figure + table) where the cube has mfpt; else why not.
    Returns (HTML, title of the embedded figure or None)."""
    if "mfpt" not in ds:
        return ("<p>Not shown: the cube has no exact tau (<code>mfpt</code>); run the sweep with "
                "<code>method = \"markov\"</code> or <code>\"both\"</code>, or run <code>escape-sweep theory STORE</code>, "
                "which solves the chain on the fly.</p>", None)
    from . import theory as _theory
    from ..model.laws import LAW_TITLES

    th = _theory.theory_cube(ds, budget=budget)
    rows = []
    for r in _theory.records(th):
        w = r["within_factor_2"]
        rows.append([_e(LAW_TITLES.get(r["law"], r["law"])), r["batch_size"], r["n_cells"], _n(r["median_abs_residual"], 3),
                     _n(r["worst_abs_residual"], 3), "&ndash;" if w is None else f"{w:.0%}", _n(r["slope"]),
                     _n(r["slope_exact"])])
    table = _table(["law", "B", "cells", "median |&Delta;ln tau|", "worst |&Delta;ln tau|", "within 2&times;",
                    "slope law", "slope exact"], rows, left=(0,))
    fig_html, title = "", None
    try:
        fig = presets.preset_theory(ds, th=th, sel={"steps": int(th.attrs["mc_budget"])})
        title = "Theory against the exact escape time"
        fig_html = (f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{_png(fig)}"><figcaption><b>{_e(title)}.'
                    "</b> ln tau against 1/T per batch size (seed pit): exact chain (black), "
                    + ("" if presets.solver_only(ds) else "Monte Carlo (red, 95% bounds), ") + "each law as a line over the cube's T values; below, ln tau_law &minus; ln tau_exact "
                    "(grey: within a factor 2; laws off the panel are clipped and named).</figcaption></figure>")
    except (SelectionError, ValueError, KeyError) as e:
        fig_html = f"<p class=warn>Figure not drawn: {_e(e)}</p>"
    text = ("<p>Each law of <code>pipeline.model.laws</code> (DESIGN.md section 8) against the exact mean escape "
            f"time ({_e(th.attrs.get('exact_source'))}): per law and batch size, over every T and pit, the median and "
            "worst |ln tau<sub>law</sub> &minus; ln tau<sub>exact</sub>|, the share of cells within a factor 2, and "
            "the slope of ln tau against 1/T (median over pits) next to the exact slope over the same cells. "
            "Stored by <code>escape-sweep theory</code> in the cube's <code>theory/</code> group.</p>")
    return text + fig_html + table, title


def render_report(ds: xr.Dataset, source=None, budget=None) -> tuple[str, list[str]]:
    """The HTML text and the titles of the embedded figures."""
    _fits.check_cube(ds, str(source or "dataset"))
    ds = ds.load()
    f = _fits.fit_cube(ds, budget=budget)
    figs = _figures(ds, budget)
    theory_html, theory_title = _theory_section(ds, budget)
    name = ds.attrs.get("name", "") or (Path(str(source)).stem if source else "cube")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fig_html = []
    for i, (title, caption, b64) in enumerate(figs, 1):
        if b64 is None:
            fig_html.append(f"<p class=warn>Figure {i} ({_e(title)}): {_e(caption)}</p>")
        else:
            fig_html.append(f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{b64}">'
                            f"<figcaption><b>Figure {i}. {_e(title)}.</b> {_e(caption)}</figcaption></figure>")
    body = f"""
<h1>escape-sweep report: {_e(name)}</h1>
<p class=sub>{_e(source or '')} &middot; spec hash {_e(ds.attrs.get('spec_hash', '?'))} &middot; report made {now}</p>
<nav><a href="#axes">Axes</a><a href="#figures">Figures</a><a href="#fits">Fits</a><a href="#theory">Theory</a><a href="#memory">Memorylessness</a>
<a href="#unbounded">Cells left out</a><a href="#prov">Provenance</a><a href="#spec">Spec</a></nav>
<h2 id=axes>Axes</h2>
{_axes(ds)}
<h2 id=figures>Figures</h2>
{''.join(fig_html)}
<h2 id=fits>Fits</h2>
{_fit_intro(ds, f)}
{_fit_section(f)}
{_window_section(ds, budget)}
<h2 id=theory>{_e(THEORY_TITLE)}</h2>
{theory_html}
<h2 id=memory>Memorylessness</h2>
{_memoryless_section(f, ds)}
<h2 id=unbounded>Cells left out of the fits</h2>
{_unbounded_section(f)}
<h2 id=prov>Provenance</h2>
{_provenance(ds, source)}
<h2 id=spec>Spec</h2>
<pre>{_e(ds.attrs.get('spec', '(no spec attribute)'))}</pre>
"""
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>escape-sweep report: {_e(name)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")
    return page, [t for t, _, b in figs if b is not None] + ([theory_title] if theory_title else [])


def write_report(ds: xr.Dataset, out, source=None, budget=None) -> list[str]:
    """Write the report to `out`; returns the titles of the figures embedded."""
    out = Path(out)
    if not out.parent.exists():
        raise SelectionError(f"-o {out}: directory {out.parent} does not exist")
    page, titles = render_report(ds, source, budget)
    out.write_text(page, encoding="utf-8")
    return titles
