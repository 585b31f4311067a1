"""Open a cube for analysis and check that it is one (dims and count variables), with one clear
line (NotACube, exit 2) for a missing path, a directory that is not Zarr, or a foreign store."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import xarray as xr

from ..errors import NotACube
from ..locations import is_remote
from ..model.axes import AXES

REQUIRED_VARS = ("n_walkers", "n_escaped", "exposure")




def check_cube(ds: xr.Dataset, where: str = "dataset") -> xr.Dataset:
    """Raise NotACube unless `ds` has the cube's dims and count variables."""
    missing = [d for d in AXES if d not in ds.dims]
    if missing:
        raise NotACube(f"{where}: not an escape-sweep cube: dims {', '.join(missing)} missing "
                       f"(a cube has dims {', '.join(AXES)})")
    missing = [v for v in REQUIRED_VARS if v not in ds.data_vars]
    if missing:
        raise NotACube(f"{where}: not an escape-sweep cube: variables {', '.join(missing)} missing "
                       f"(a cube has {', '.join(REQUIRED_VARS)}, ...)")
    return ds


def no_such(text: str) -> NotACube:
    return NotACube(f"STORE {text}: no such path")


def not_a_cube(text: str, why: str) -> NotACube:
    return NotACube(f"STORE {text}: not an escape-sweep cube ({why}); give the path of a cube made by `escape-sweep run`")


def unreadable(text: str, e: BaseException) -> NotACube:
    return NotACube(f"STORE {text}: unreadable ({type(e).__name__}: {str(e)[:160]})")


def check_store(path) -> str:
    """The one check every command that reads a store makes first (query, status, verify, plot, fit,
    report, theory): NotACube saying which failure it was -- no such path, not a cube, unreadable."""
    text = str(path)
    if is_remote(text):
        return text
    p = Path(text)
    try:
        if not p.exists():
            raise no_such(text)
        if not p.is_dir():
            raise not_a_cube(text, "a file, not a Zarr store directory")
        meta = p / "zarr.json"
        if not meta.exists() and not (p / ".zgroup").exists():
            raise not_a_cube(text, "no zarr.json inside: not a Zarr store")
        if meta.exists():
            json.loads(meta.read_bytes())
    except NotACube:
        raise
    except (PermissionError, ValueError) as e:  # unreadable file, or metadata that is not JSON
        raise unreadable(text, e) from None
    return text


def load_cube(path) -> xr.Dataset:
    """Open a cube lazily with xarray and check that it is one; NotACube otherwise."""
    text = check_store(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(text)
    except Exception as e:  # noqa: BLE001 - any failure to open is "unreadable" for the user
        raise unreadable(text, e) from None
    try:
        return check_cube(ds, f"STORE {text}")
    except NotACube as e:
        raise not_a_cube(text, str(e).split("not an escape-sweep cube: ", 1)[-1]) from None


def write_group(ds: xr.Dataset, path, group: str) -> None:
    """Store an analysis result as the `group/` of the cube at `path` (replacing an older one)."""
    ds = ds.assign_attrs(variable_order=list(map(str, ds.data_vars)))  # Zarr lists arrays unordered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(str(path), group=group, mode="w", zarr_format=3, consolidated=True)


def open_group(path, group: str, command: str) -> xr.Dataset:
    """An analysis result stored in the cube's `group/` (FileNotFoundError naming `command` if absent)."""
    text = str(path)
    if not is_remote(text) and not (Path(text) / group / "zarr.json").exists():
        raise FileNotFoundError(f"{text}: no {group} group; run `escape-sweep {command} {text}` first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(text, group=group, consolidated=False)
    order = [v for v in ds.attrs.get("variable_order", []) if v in ds.data_vars]
    return ds[order + [v for v in ds.data_vars if v not in order]] if order else ds
