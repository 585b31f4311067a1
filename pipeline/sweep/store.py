"""All cube I/O behind one class: create a store atomically, write a chunk's variables and its
completion record, read the record and the attributes, open the cube. Layout: `cube`.

A `Store` wraps a local path, a URL or a zarr store object (an in-memory `zarr.storage.MemoryStore`
in tests). Every write first calls `guard()` -- the runner passes the store lock's check, so a
process writes only into a store whose lock it verifiably holds. On a local path, creation is
atomic (built beside the target, then renamed into place) and zarr's LocalStore writes each chunk
file atomically, so an interrupted run leaves whole chunks and an exact record of which are done.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shutil
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from ..locations import is_path, local_path
from . import cube
from .spec import Spec

PROGRESS = "progress"


def versions() -> dict[str, str]:
    """Versions of the package and the libraries that shape its numbers (provenance)."""
    out = {}
    for pkg in ("escape-sweep", "numpy", "numba", "dask", "distributed", "xarray", "zarr", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def now() -> str:
    """UTC time, ISO 8601 to the second (creation and completion times)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _quiet_consolidate(target) -> None:
    """Consolidate metadata so `xarray.open_zarr` opens quietly (zarr warns that v3 consolidation
    is not yet in the spec; zarr-python and xarray both read it)."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(target)


class Store:
    """One cube's storage: a local path, a URL, or a zarr store object.

    where   the location (str / Path / zarr.abc.store.Store)
    guard   called before every write; raises if this process may no longer write (lock lost)
    """

    def __init__(self, where, guard=None):
        self.where = where
        self.local = is_path(where)
        self.path = local_path(where) if self.local else None
        self.guard = guard or (lambda: None)

    def __repr__(self) -> str:
        return f"Store({self.where!r})"

    @property
    def _target(self):
        """What zarr and xarray take: a str for paths and URLs, else the store object."""
        return str(self.path) if self.local else (self.where if not isinstance(self.where, os.PathLike) else os.fspath(self.where))

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        if self.local:
            return self.path.exists()
        try:
            self.group("r")
            return True
        except Exception:
            return False

    def group(self, mode: str = "r+"):
        import zarr

        return zarr.open_group(self._target, mode=mode, use_consolidated=False)

    def attrs(self) -> dict:
        """The group attributes (spec, hash, provenance); {} where there is no readable group."""
        try:
            return dict(self.group("r").attrs)
        except Exception:
            return {}

    def is_cube(self) -> bool:
        return self.attrs().get("format") == cube.FORMAT

    def done_mask(self) -> np.ndarray:
        """Boolean array over the chunk grid: which chunks are complete."""
        return np.asarray(self.group("r")[f"{PROGRESS}/done"][...]).astype(bool)

    def chunk_count(self) -> tuple[int, int]:
        """(done, total) chunk counts."""
        m = self.done_mask()
        return int(m.sum()), int(math.prod(m.shape))

    def open_dataset(self):
        """The cube as a lazy `xarray.Dataset` (dask-backed; nothing is read until used)."""
        import xarray as xr

        if self.local and not self.path.exists():
            raise FileNotFoundError(f"{self.where}: no such store")
        consolidated = None if (not self.local or (self.path / "zarr.json").exists()) else False
        return xr.open_zarr(self._target, consolidated=consolidated)

    # ------------------------------------------------------------------ writing
    def create(self, spec: Spec, chunks, edges, grid) -> None:
        """Write a new, empty cube (replacing what is there only once the new one is complete)."""
        import zarr

        self.guard()
        ds, encoding = cube.skeleton(spec, chunks, edges, versions(), now())
        if self.local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # an unpredictable name, created exclusively (mode 0700): nothing planted there is followed
            tmp = type(self.path)(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=self.path.parent))
            target = str(tmp)
        else:
            target = self._target
        ds.to_zarr(target, compute=False, zarr_format=3, consolidated=False, encoding=encoding, mode="w")
        g = zarr.open_group(target, mode="r+", use_consolidated=False)
        prog = g.require_group(PROGRESS)
        prog.attrs.update(description="completion record per task chunk: done = 1 once every variable of "
                                      "the chunk is written; walkers = walkers 0..walkers-1 of each of its cells "
                                      "are counted", chunk_shape=list(chunks), cell_dims=list(cube.CELL_DIMS))
        prog.create_array("done", shape=grid, chunks=(1,) * 4, dtype="uint8", fill_value=0)
        prog.create_array("walkers", shape=grid, chunks=(1,) * 4, dtype="int64", fill_value=0)
        prog.create_array("finished_at", shape=grid, chunks=(1,) * 4, dtype="float64", fill_value=np.nan)
        _quiet_consolidate(target)
        if not self.local:
            return
        self.guard()
        if self.path.exists():
            # os.replace cannot put a directory over a non-empty one: move the old store aside
            # into a fresh private directory first, then remove it
            aside = tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent)
            os.replace(self.path, os.path.join(aside, "store"))
            os.replace(tmp, self.path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, self.path)

    def write_chunk(self, index, slices, counts: dict, edges, method: str, walkers: int, group=None) -> None:
        """Every variable of one chunk (slices along T, batch_size, depth, width), then its
        completion record: done, the walkers it counts, the time."""
        self.guard()
        g = group if group is not None else self.group()
        for name, (region, arr) in cube.regions(slices, cube.derived(counts, edges, method)).items():
            g[name][region] = arr
        self.guard()
        index = tuple(index)
        g[f"{PROGRESS}/finished_at"][index] = time.time()
        if "walkers" in g[PROGRESS]:  # stores made before the walker record have none
            g[f"{PROGRESS}/walkers"][index] = walkers
        g[f"{PROGRESS}/done"][index] = 1

    def set_attrs(self, **attrs) -> None:
        """Update group attributes and re-consolidate the metadata."""
        self.guard()
        self.group().attrs.update(attrs)
        _quiet_consolidate(self._target)


# Thin functions over Store for callers that hold a location, not a Store.
def is_cube(where) -> bool:
    return Store(where).is_cube()


def read_attrs(where) -> dict:
    return Store(where).attrs()


def chunk_count(where) -> tuple[int, int]:
    return Store(where).chunk_count()


def open_cube(where):
    """The cube at `where` (path, URL or zarr store) as a lazy `xarray.Dataset`."""
    return Store(where).open_dataset()
