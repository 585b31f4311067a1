"""All cube I/O: create a store atomically, write a chunk's variables, mark it done, read the
completion record and attributes, open the cube. Layout and variables are in `cube`.

Every chunk file is written atomically by zarr's LocalStore, so an interrupted run leaves whole
chunks and a record of exactly which are complete.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from . import cube
from .cube import FORMAT, MARKOV_VARIABLES, derived
from .spec import Spec

def versions() -> dict[str, str]:
    out = {}
    for pkg in ("escape-sweep", "numpy", "numba", "dask", "distributed", "xarray", "zarr", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_cube(path) -> bool:
    p = Path(path)
    try:
        meta = json.loads((p / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("attributes", {}).get("format") == FORMAT


def read_attrs(path) -> dict:
    return json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {})


def create(path, spec: Spec, chunks, edges, grid) -> None:
    """Write a new, empty cube at `path` atomically (built beside it, then renamed into place).

    If `path` exists it is replaced only after the new one is complete (the caller decides
    whether that is allowed), so a crash never leaves a half-overwritten store."""
    import zarr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds, encoding = cube.skeleton(spec, chunks, edges, versions(), now())
    ds.to_zarr(tmp, compute=False, zarr_format=3, consolidated=False, encoding=encoding, mode="w")
    g = zarr.open_group(tmp, mode="r+", use_consolidated=False)
    prog = g.require_group("progress")
    prog.attrs.update(description="completion record per task chunk: done = 1 once every variable of the chunk is written",
                      chunk_shape=list(chunks), cell_dims=list(cube.CELL_DIMS))
    prog.create_array("done", shape=grid, chunks=(1,) * 4, dtype="uint8", fill_value=0)
    prog.create_array("finished_at", shape=grid, chunks=(1,) * 4, dtype="float64", fill_value=np.nan)
    _backend_array(prog, grid)
    consolidate(tmp)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def consolidate(path) -> None:
    """Consolidate metadata so `xarray.open_zarr(path)` opens quietly (zarr warns that v3
    consolidation is not yet in the spec; zarr-python and xarray both read it)."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(path))


def open_group(path, mode="r+"):
    import zarr

    return zarr.open_group(str(path), mode=mode, use_consolidated=False)


def write_chunk(group, slices, counts: dict, edges, method: str = "montecarlo") -> None:
    """Write every variable of one chunk (slices along T, batch_size, depth, width)."""
    sT, sB, sD, sW = slices
    for name, arr in derived(counts, edges, method).items():
        if name == "escape_hist":
            group[name][sT, sB, sD, sW, :] = arr
        elif name in MARKOV_VARIABLES:
            group[name][sT, sB, sD, sW] = arr
        else:
            group[name][sT, :, sB, sD, sW] = arr


def mark_done(group, index) -> None:
    """The chunk's completion record: written last, after all of its data."""
    import time

    group["progress/finished_at"][tuple(index)] = time.time()
    group["progress/done"][tuple(index)] = 1


BACKEND_CODES = ("", "cpu", "cuda", "cpu+cuda")  # progress/backend values; 0 = not recorded


def _backend_array(prog, grid):
    arr = prog.create_array("backend", shape=tuple(grid), chunks=(1,) * 4, dtype="uint8", fill_value=0)
    arr.attrs.update(description="kernel backend that computed each chunk (index into codes); 0 = not recorded",
                     codes=list(BACKEND_CODES))
    return arr


def record_backend(group, index, names) -> None:
    """Provenance: the kernel backend(s) that computed chunk `index` ("cpu", "cuda", "cpu+cuda").

    Written before the completion record. A store made before this record existed gains it."""
    name = "+".join(sorted(set(names)))
    prog = group["progress"]
    arr = prog["backend"] if "backend" in prog else _backend_array(prog, prog["done"].shape)
    codes = list(arr.attrs.get("codes", BACKEND_CODES))
    if name not in codes:
        codes.append(name)
        arr.attrs["codes"] = codes
    arr[tuple(index)] = codes.index(name)


def backend_counts(group) -> dict[str, int]:
    """Chunks computed by each backend name ({} for a store without the record)."""
    prog = group["progress"]
    if "backend" not in prog:
        return {}
    arr = prog["backend"]
    codes = list(arr.attrs.get("codes", BACKEND_CODES))
    values, counts = np.unique(np.asarray(arr[...]), return_counts=True)
    return {(codes[v] if v < len(codes) else str(v)) or "unrecorded": int(c) for v, c in zip(values, counts)}


def done_mask(group) -> np.ndarray:
    """Boolean array over the chunk grid: which chunks are complete."""
    return np.asarray(group["progress/done"][...]).astype(bool)


def set_attrs(path, **attrs) -> None:
    g = open_group(path)
    g.attrs.update(attrs)
    consolidate(path)


def open_cube(path):
    """The cube as a lazy `xarray.Dataset` (dask-backed; nothing is read until used)."""
    import xarray as xr

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such store")
    return xr.open_zarr(str(path), consolidated=None if (Path(path) / "zarr.json").exists() else False)


def chunk_count(path) -> tuple[int, int]:
    """(done, total) chunk counts of a store."""
    m = done_mask(open_group(path, mode="r"))
    return int(m.sum()), int(math.prod(m.shape))
