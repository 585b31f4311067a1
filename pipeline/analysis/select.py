"""--sel / --range for `query` and `plot`: pick coordinate values of a cube by number.

--sel DIM=VALUE takes the nearest coordinate value, which must be within FLOAT_RTOL (relative)
for float dims and exact for integer dims; DIM=V1,V2 keeps several. --range DIM=LO:HI keeps
LO <= value <= HI (either end may be empty). Bad requests raise SelectionError, one line.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..errors import SelectionError

FLOAT_RTOL = 1e-2  # --sel on a float coordinate: the nearest value must be within 1%


def parse_sel(items) -> dict:
    """["T=0.015", "steps=100,1000"] -> {"T": 0.015, "steps": [100.0, 1000.0]}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SelectionError(f"--sel {item!r}: expected DIM=VALUE (or DIM=V1,V2,...)")
        dim, _, text = item.partition("=")
        dim = dim.strip()
        try:
            vals = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise SelectionError(f"--sel {item!r}: {text!r} is not a number (or comma-separated numbers)") from None
        if not vals:
            raise SelectionError(f"--sel {item!r}: no value after '='")
        if not all(math.isfinite(v) for v in vals):
            raise SelectionError(f"--sel {item!r}: values must be finite numbers")
        out[dim] = vals[0] if len(vals) == 1 else vals
    return out


def _describe(coord) -> str:
    v = coord.values
    if v.size <= 8:
        return ", ".join(_fmt(x) for x in v)
    return f"{_fmt(v.min())}..{_fmt(v.max())} in {v.size} values"


def _fmt(x) -> str:
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.6g}"


def _nearest(ds, dim, value):
    coord = ds[dim]
    vals = coord.values
    i = int(np.argmin(np.abs(vals.astype(float) - float(value))))
    got = vals[i]
    if np.issubdtype(vals.dtype, np.integer):
        ok = float(got) == float(value)
        allowed = "equal to it"
    else:
        ok = abs(float(got) - float(value)) <= FLOAT_RTOL * abs(float(value)) + 1e-12
        allowed = f"within {FLOAT_RTOL:.0%}"
    if not ok:
        raise SelectionError(f"--sel {dim}={_fmt(value)}: no {dim} value {allowed} (the nearest is {_fmt(got)}; "
                             f"{dim} has {_describe(coord)})")
    return got


def apply_sel(ds: xr.Dataset, sel: dict | None) -> xr.Dataset:
    """`.sel(method="nearest")` with a tolerance: SelectionError for an unknown dim or a far value."""
    for dim, value in (sel or {}).items():
        if dim not in ds.dims:
            import difflib

            close = difflib.get_close_matches(dim, [str(d) for d in ds.dims], n=1, cutoff=0.4)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise SelectionError(f"--sel {dim}={_fmt(value) if not isinstance(value, list) else ','.join(map(_fmt, value))}: "
                                 f"unknown dim {dim!r}{hint} (dims: {', '.join(map(str, ds.dims))})")
        if isinstance(value, (list, tuple, np.ndarray)):
            ds = ds.sel({dim: [_nearest(ds, dim, v) for v in value]})
        else:
            ds = ds.sel({dim: [_nearest(ds, dim, value)]})
    return ds


def apply_range(ds: xr.Dataset, items) -> xr.Dataset:
    """Keep lo <= dim <= hi for each "DIM=LO:HI" item (either end may be empty)."""
    for item in items or []:
        dim, _, text = item.partition("=")
        dim = dim.strip()
        if not _ or dim not in ds.dims:
            raise SelectionError(f"--range {item!r}: expected DIM=LO:HI with DIM one of {', '.join(map(str, ds.dims))}")
        lo_t, sep, hi_t = text.partition(":")
        try:
            lo = float(lo_t) if lo_t.strip() else -np.inf
            hi = float(hi_t) if hi_t.strip() else np.inf
        except ValueError:
            raise SelectionError(f"--range {item!r}: expected numbers LO:HI (either may be empty)") from None
        if not sep or lo > hi:
            raise SelectionError(f"--range {item!r}: expected LO:HI with LO <= HI")
        c = ds[dim].values.astype(float)
        keep = (c >= lo) & (c <= hi)
        if not keep.any():
            raise SelectionError(f"--range {item!r}: selects no {dim} value ({dim} has {_describe(ds[dim])})")
        ds = ds.isel({dim: np.nonzero(keep)[0]})
    return ds
