"""Open a cube for analysis and check that it is one (dims and count variables), with one clear
line (NotACube, exit 2) for a missing path, a directory that is not Zarr, or a foreign store."""

from __future__ import annotations

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


def load_cube(path) -> xr.Dataset:
    """Open a cube lazily with xarray and check that it is one; NotACube otherwise."""
    text = str(path)
    local = not is_remote(text)
    if local and not Path(text).exists():
        raise NotACube(f"CUBE={text}: no such file or directory")
    if local and not (Path(text) / "zarr.json").exists() and not (Path(text) / ".zgroup").exists():
        raise NotACube(f"CUBE={text}: not a Zarr store (no zarr.json inside); give the path of a cube made by `escape-sweep run`")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(text)
    except Exception as e:  # noqa: BLE001 - any failure to open is "not a cube" for the user
        raise NotACube(f"CUBE={text}: xarray cannot open it as a Zarr dataset ({type(e).__name__}: {e})") from None
    return check_cube(ds, f"CUBE={text}")


def write_group(ds: xr.Dataset, path, group: str) -> None:
    """Store an analysis result as the `group/` of the cube at `path` (replacing an older one)."""
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
        return xr.open_zarr(text, group=group, consolidated=False)
