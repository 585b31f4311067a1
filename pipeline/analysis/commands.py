"""The analysis subcommands `fit`, `plot`, `report` and `theory`: their arguments and handlers.

Only argparse at import time (so `escape-sweep --help` stays fast); each handler imports its
module when it runs. Bad input raises `InputError`, which the CLI turns into one line, exit 2.
"""

from __future__ import annotations

import json
import sys

from ..errors import InputError
from ..locations import is_remote
from .catalog import PRESETS

STORE_HELP = "path of a cube (a Zarr store made by `escape-sweep run`)"


def add_parsers(subparsers) -> None:
    """Register `fit`, `plot` and `report` with the cli's subparsers."""
    p = subparsers.add_parser("fit", help="fit ln(escape time) against 1/T, T and B; store them in STORE/fits",
                              description="Fits of ln tau against 1/T (Arrhenius) and T per (steps, batch_size, "
                                          "depth, width), against B at fixed T, the T/B check and memorylessness; "
                                          "printed and stored in the cube's fits/ group.")
    p.add_argument("store", metavar="STORE", help=STORE_HELP)
    p.add_argument("--budget", type=int, default=None, metavar="N", help="fit only step budget N (default: every budget)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.add_argument("--T-range", dest="t_range", metavar="LO:HI", help="fit only cells with LO <= T <= HI")
    p.add_argument("--exponential-only", action="store_true",
                   help="leave out cells whose escape is not memoryless (tau is not a rate there)")
    p.add_argument("--no-save", action="store_true", help="do not write STORE/fits")
    p.add_argument("--all", dest="full", action="store_true",
                   help="print every row of every table (default: the fits with data and counts of the rest)")
    p.set_defaults(func=fit)

    p = subparsers.add_parser(
        "plot", help="plot a cube variable against a dim (PNG), or one of the preset figures",
        description="Plot --y against --x, one line per --hue value. Fix other dims with --sel DIM=VALUE "
                    "(nearest coordinate, within 1% for floats, exact for integers); a dim left open takes the "
                    "largest step budget, the smallest batch size, depth 1 / width 0.1 (or its first value), "
                    "said on stderr. Presets: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    p.add_argument("store", metavar="STORE", help=STORE_HELP)
    p.add_argument("--x", help="dim on the horizontal axis (T, steps, batch_size, depth, width, escape_step_bin)")
    p.add_argument("--y", help="variable to plot (e.g. log10_escape_time, p_escape, median_escape_time)")
    p.add_argument("--hue", help="dim drawn as one line per value")
    p.add_argument("--sel", nargs="+", action="extend", default=[], metavar="DIM=VALUE",
                   help="fix a dim to its nearest coordinate value (DIM=V1,V2 keeps several); repeatable")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a ready figure instead of --x/--y")
    p.add_argument("-o", "--output", required=True, metavar="FIG", help="output image (PNG; .svg/.pdf also work)")
    p.set_defaults(func=plot)

    p = subparsers.add_parser("report", help="one self-contained HTML page: figures, fits, provenance, spec",
                              description="Write a self-contained HTML report of a cube (figures embedded as PNG).")
    p.add_argument("store", metavar="STORE", help=STORE_HELP)
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="output file (report.html)")
    p.add_argument("--budget", type=int, default=None, metavar="N", help="fits for step budget N only (default: all)")
    p.set_defaults(func=report)

    p = subparsers.add_parser(
        "theory", help="which law predicts the escape time: each law against the exact tau; store in STORE/theory",
        description="Evaluate the escape-time laws of pipeline.model.laws (diffusion MFPT, run law, Kramers, "
                    "Xie et al. 2021, Mori et al. 2022) on every (T, batch_size, depth, width) cell and compare them "
                    "with the exact tau (the cube's mfpt, else the Markov solver on the fly): per law and batch size "
                    "the median and worst |ln tau_law - ln tau_exact|, the share within a factor 2, and the slope of "
                    "ln tau against 1/T next to the exact slope; stored in the cube's theory/ group.")
    p.add_argument("store", metavar="STORE", help=STORE_HELP)
    p.add_argument("--sel", nargs="+", action="extend", default=[], metavar="DIM=VALUE",
                   help="keep the nearest coordinate value(s) of a dim (DIM=V1,V2 keeps several); repeatable")
    p.add_argument("--range", nargs="+", action="extend", default=[], metavar="DIM=LO:HI",
                   help="keep LO <= DIM <= HI (either end may be empty); repeatable")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="output format (default text)")
    p.add_argument("--no-save", action="store_true", help="do not write STORE/theory")
    p.set_defaults(func=theory)


def parse_range(text: str, option: str = "--T-range") -> tuple[float, float]:
    """"LO:HI" -> (lo, hi) with lo <= hi; InputError naming the option otherwise."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"{option} {text}: expected LO:HI, two numbers (e.g. 0.01:0.02)") from None
    if not lo <= hi:
        raise InputError(f"{option} {text}: LO must not exceed HI")
    return lo, hi


def fit(args) -> int:
    from . import fits, tables

    t_range = parse_range(args.t_range) if getattr(args, "t_range", None) else None
    ds = fits.load_cube(args.store)
    result = fits.fit_cube(ds, budget=args.budget, t_range=t_range,
                           exponential_only=getattr(args, "exponential_only", False))
    if not getattr(args, "no_save", False) and not is_remote(args.store):
        try:
            fits.write_fits(result, args.store)
        except OSError as e:
            print(f"escape-sweep: warning: fits not stored in {args.store}/{fits.FITS_GROUP}: {e}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(tables.to_json(result), indent=1, allow_nan=False))
    else:
        print(tables.format_table(result, full=getattr(args, "full", False)))
    return 0


def plot(args) -> int:
    from . import fits, plots, presets
    from .select import parse_sel

    if args.preset is None and (args.x is None or args.y is None):
        raise InputError("give --x and --y (or --preset NAME; presets: " + ", ".join(PRESETS) + ")")
    sel = parse_sel(args.sel)
    ds = fits.load_cube(args.store)
    notes: list[str] = []
    if args.preset:
        presets.preset(ds, args.preset, sel=sel, out=args.output)
    else:
        plots.plot_cube(ds, args.x, args.y, hue=args.hue, sel=sel, out=args.output, notes=notes)
    for line in notes:
        print(f"escape-sweep plot: {line}", file=sys.stderr)
    print(args.output)
    return 0


def report(args) -> int:
    from . import fits
    from .report import write_report

    ds = fits.load_cube(args.store)
    titles = write_report(ds, args.output, source=args.store, budget=args.budget)
    print(f"{args.output} ({len(titles)} figures)")
    return 0


def theory(args) -> int:
    from . import fits
    from . import theory as _theory
    from .select import apply_range, apply_sel, parse_sel

    ds = fits.load_cube(args.store)
    sel = parse_sel(args.sel)
    full = ds
    ds = apply_range(apply_sel(ds, sel), args.range)
    budget = None
    if "steps" in sel:
        budget = int(ds["steps"].values[0])
    th = _theory.theory_cube(ds, budget=budget)
    if not getattr(args, "no_save", False) and "://" not in str(args.store):
        if ds.sizes != full.sizes:
            th.attrs["selection"] = " ".join(list(args.sel) + list(args.range))
        try:
            _theory.write_theory(th, args.store)
        except OSError as e:
            print(f"escape-sweep: warning: theory not stored in {args.store}/{_theory.THEORY_GROUP}: {e}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(_theory.to_json(th), indent=1, allow_nan=False))
    elif args.format == "csv":
        print(_theory.format_csv(th))
    else:
        print(_theory.format_text(th))
    return 0
