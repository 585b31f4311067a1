"""All cube I/O behind one class: create a store atomically, write a chunk's variables and its
completion record, read the record and the attributes, open the cube. Layout: `cube`.

A storage chunk covers a *block* of task chunks (`storage_block`, up to BLOCK_CHUNKS of them), so
the file count grows with the blocks, not the tasks. `ChunkWriter` buffers finished task chunks
in memory per block and writes a block whole -- one object per variable, then its record chunk --
when all its task chunks are in, every FLUSH_SECONDS, when the open blocks pass MAX_OPEN_BYTES,
and at the end (or on an interrupt); `done` is recorded only for chunks whose data is written.

A `Store` wraps a local path, a URL or a zarr store object (an in-memory `zarr.storage.MemoryStore`
in tests). Every write first calls `guard()` -- the runner passes the store lock's check, so a
process writes only into a store whose lock it verifiably holds. On a local path, creation is
atomic (built beside the target, then renamed into place) and zarr's LocalStore writes each chunk
file atomically, so an interrupted run leaves whole chunks and an exact record of which are done.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
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
RECORDS = ("backend", "digest", "finished_at", "walkers", "done")  # the order a block's record is written in
BLOCK_CHUNKS = 256  # task chunks per storage chunk at most (env ESCAPE_SWEEP_STORE_BLOCK; 1 = the old layout)
MAX_STORAGE_BYTES = 8 << 20  # uncompressed bytes of one variable's storage chunk at most
FLUSH_SECONDS = 5.0  # a buffered result waits at most this long for its block (env ESCAPE_SWEEP_FLUSH_SECONDS)
MAX_OPEN_BYTES = 256 << 20  # buffered blocks beyond this are written and dropped, least recently used first
# the variables a chunk write covers (those of them the store has), in digest order
CHUNK_VARIABLES = tuple(sorted(set(cube.VARIABLES) | {"escape_hist"} | set(cube.MARKOV_VARIABLES)
                               | set(cube.BOTH_VARIABLES)))


def chunk_digest(index, values: dict) -> int:
    """blake2b-64 of a chunk's written values (name, dtype, shape, bytes of each, in name order) and
    its index, as stored in `progress/digest` (0 means none: a digest is never 0)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(repr(tuple(int(i) for i in index)).encode())
    for name in sorted(values):
        a = np.ascontiguousarray(values[name])
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return int.from_bytes(h.digest(), "little") or 1


def _read_record(arr, bad):
    """A completion-record array (one element per file); an element whose file is unreadable reads as `bad`."""
    try:
        return np.asarray(arr[...])
    except Exception:
        out = np.empty(arr.shape, arr.dtype)
        for index in itertools.product(*(range(n) for n in arr.shape)):
            try:
                out[index] = arr[index]
            except Exception:
                out[index] = bad
        return out


def _block_slices(bidx, block, grid) -> tuple:
    """Task-chunk index ranges of block `bidx` (clipped at the grid's edge)."""
    return tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(bidx, block, grid))


def _cell_slices(gsl, chunks, shape) -> tuple:
    """Cell ranges covered by task-chunk ranges `gsl` (chunks cells each, clipped at the cube's edge)."""
    return tuple(slice(s.start * c, min(s.stop * c, n)) for s, c, n in zip(gsl, chunks, shape))


def _chunk_regions_of(slices, names) -> dict:
    """name -> index tuple of each variable over the cells `slices` (T, batch_size, depth, width)."""
    return {name: region for name, (region, _) in cube.regions(slices, dict.fromkeys(names)).items()}


def storage_block(grid, chunks, nsteps: int, nbins: int, most: int | None = None) -> tuple[int, ...]:
    """Task chunks per storage chunk along (T, batch_size, depth, width): up to `most` of them
    (BLOCK_CHUNKS, or env ESCAPE_SWEEP_STORE_BLOCK), no variable's storage chunk above
    MAX_STORAGE_BYTES; the last axes first, so a block is a run of chunks in the planner's C order."""
    if most is None:
        most = int(os.environ.get("ESCAPE_SWEEP_STORE_BLOCK", BLOCK_CHUNKS))
    per_chunk = math.prod(chunks) * max(nsteps, nbins) * 8
    k = max(1, min(int(most), MAX_STORAGE_BYTES // per_chunk))
    block = [1] * len(grid)
    for a in reversed(range(len(grid))):
        block[a] = max(1, min(int(grid[a]), k))
        k //= block[a]
    return tuple(block)


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


BACKEND_CODES = ("", "cpu", "cuda", "cpu+cuda")  # progress/backend values; 0 = not recorded


def _backend_array(prog, grid, block=(1, 1, 1, 1)):
    arr = prog.create_array("backend", shape=tuple(grid), chunks=tuple(block), dtype="uint8", fill_value=0)
    arr.attrs.update(description="kernel backend that computed each chunk (index into codes); 0 = not recorded",
                     codes=list(BACKEND_CODES))
    return arr


def _record_backend(group, index, names) -> None:
    """Provenance: the kernel backend(s) that computed chunk `index` ("cpu", "cuda", "cpu+cuda").
    A store made before this record existed gains it."""
    name = "+".join(sorted(set(names)))
    prog = group[PROGRESS]
    arr = prog["backend"] if "backend" in prog else _backend_array(prog, prog["done"].shape, prog["done"].chunks)
    codes = list(arr.attrs.get("codes", BACKEND_CODES))
    if name not in codes:
        codes.append(name)
        arr.attrs["codes"] = codes
    arr[tuple(index)] = codes.index(name)


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
        """Boolean array over the chunk grid: which chunks are complete (record value exactly 1;
        anything else, an unreadable record file included, is garbage and counts as not done)."""
        return _read_record(self.group("r")[f"{PROGRESS}/done"], 255) == 1

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
    def create(self, spec: Spec, chunks, edges, grid, block=None) -> None:
        """Write a new, empty cube (replacing what is there only once the new one is complete).
        block: task chunks per storage chunk (default `storage_block`; (1, 1, 1, 1) is the old layout)."""
        import zarr

        self.guard()
        if block is None:
            block = storage_block(grid, chunks, len(spec.steps), len(edges) - 1)
        block = tuple(int(b) for b in block)
        ds, encoding = cube.skeleton(spec, chunks, edges, versions(), now(), block=block)
        if self.local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.remove_leftovers()
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
                                      "are counted", chunk_shape=list(chunks), cell_dims=list(cube.CELL_DIMS),
                          record_chunks="one record chunk per storage block of task chunks")
        prog.create_array("done", shape=grid, chunks=block, dtype="uint8", fill_value=0)
        prog.create_array("walkers", shape=grid, chunks=block, dtype="int64", fill_value=0)
        prog.create_array("finished_at", shape=grid, chunks=block, dtype="float64", fill_value=np.nan)
        _backend_array(prog, grid, block)
        prog.create_array("digest", shape=grid, chunks=block, dtype="uint64", fill_value=0)
        prog.attrs["digest"] = ("blake2b-64 of the chunk's written values (store.chunk_digest), written before "
                                "done; `escape-sweep verify` re-reads the chunk and compares")
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

    def remove_leftovers(self) -> list[str]:
        """Remove temporary stores (`.NAME.new-*`, `.NAME.old-*`) a crashed run left beside this one.
        Called under the store lock, so no live run is building them; symlinks are left alone."""
        if not self.local or not self.path.parent.is_dir():
            return []
        gone = []
        for p in self.path.parent.iterdir():
            if (p.name.startswith(f".{self.path.name}.new-") or p.name.startswith(f".{self.path.name}.old-")) \
                    and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p.name)
        if gone:
            import sys

            print(f"escape-sweep: note: removed {len(gone)} temporary store(s) left by a crashed run beside "
                  f"{self.path}: {', '.join(sorted(gone))}", file=sys.stderr)
        return gone

    def write_chunk(self, index, slices, counts: dict, edges, method: str, walkers: int, group=None,
                    backends=("cpu",)) -> None:
        """Every variable of one chunk (slices along T, batch_size, depth, width), then its
        completion record: the kernel backend(s) that computed it, the walkers it counts, the time, done.
        One chunk at a time, ~21 small writes (the path before `ChunkWriter`; `bench --scale`'s baseline)."""
        self.guard()
        g = group if group is not None else self.group()
        written = {}
        for name, (region, arr) in cube.regions(slices, cube.derived(counts, edges, method)).items():
            if name not in g:  # a store made before this variable existed (ln_mfpt): resumed without it
                continue
            a = g[name]
            written[name] = np.asarray(arr, dtype=a.dtype)
            a[region] = written[name]
        self.guard()
        index = tuple(index)
        _record_backend(g, index, backends)
        if "digest" in g[PROGRESS]:  # stores made before digests have none
            g[f"{PROGRESS}/digest"][index] = chunk_digest(index, written)
        g[f"{PROGRESS}/finished_at"][index] = time.time()
        if "walkers" in g[PROGRESS]:  # stores made before the walker record have none
            g[f"{PROGRESS}/walkers"][index] = walkers
        g[f"{PROGRESS}/done"][index] = 1

    def backend_counts(self) -> dict[str, int]:
        """Chunks computed (done) by each backend name ({} for a store without the record); chunks
        not computed yet are not counted."""
        prog = self.group("r")[PROGRESS]
        if "backend" not in prog:
            return {}
        arr = prog["backend"]
        codes = list(arr.attrs.get("codes", BACKEND_CODES))
        done = _read_record(prog["done"], 255) == 1  # a damaged record file counts as not done
        values, counts = np.unique(_read_record(arr, 0)[done], return_counts=True)
        return {(codes[v] if v < len(codes) else str(v)) or "unrecorded": int(c) for v, c in zip(values, counts)}

    def writer(self, edges, method: str, **kw) -> "ChunkWriter":
        """A `ChunkWriter` for this store (the runner's result path): add chunks, close at the end."""
        return ChunkWriter(self, edges, method, **kw)

    def clear_done(self, indices) -> None:
        """Forget the completion record of chunks (so that a resume recomputes them); each record
        chunk touched is rewritten once."""
        self.guard()
        prog = self.group()[PROGRESS]
        names = [n for n in ("digest", "done") if n in prog]
        arrays = {n: prog[n] for n in names}
        block = tuple(prog["done"].chunks)
        touched = {}
        for index in indices:
            index = tuple(int(i) for i in index)
            touched.setdefault(tuple(i // b for i, b in zip(index, block)), []).append(index)
        for bidx, members in touched.items():
            gsl = _block_slices(bidx, block, prog["done"].shape)
            for n in names:  # digest first, done last
                try:
                    vals = np.asarray(arrays[n][gsl])
                except Exception:
                    vals = np.full([s.stop - s.start for s in gsl], 255 if n == "done" else 0, arrays[n].dtype)
                for index in members:
                    vals[tuple(i - s.start for i, s in zip(index, gsl))] = 0
                arrays[n][gsl] = vals

    # ------------------------------------------------------------------ checking
    def record_problems(self) -> list[str]:
        """Cheap checks of the completion record alone (no chunk data read): what is wrong, [] if nothing."""
        try:
            g = self.group("r")
            done = _read_record(g[f"{PROGRESS}/done"], 255)
        except Exception as e:
            return [f"no readable completion record {PROGRESS}/done ({type(e).__name__})"]
        out = []
        bad = int(((done != 0) & (done != 1)).sum())
        if bad:
            out.append(f"{bad} completion record value(s) other than 0 or 1 (counted as not done)")
        try:
            if "digest" in g[PROGRESS]:
                dig = _read_record(g[f"{PROGRESS}/digest"], 0)
                missing = int(((done == 1) & (dig == 0)).sum())
                if missing:
                    out.append(f"{missing} done chunk(s) without a digest")
        except Exception as e:
            out.append(f"unreadable {PROGRESS}/digest ({type(e).__name__})")
        return out

    def verify(self) -> dict:
        """Re-read every done chunk: its digest, and the consistency of its counts (n_escaped and
        n_diverged <= n_walkers, n_escaped and exposure non-decreasing in steps, the histogram
        summing to n_escaped at the largest budget, n_walkers equal to the recorded walkers).

        Returns {checked, digests (bool), damaged: [(index, reason)], record: [problems]}."""
        g = self.group("r")
        attrs = dict(g.attrs)
        record = self.record_problems()
        out = dict(checked=0, digests=False, damaged=[], record=record)
        try:
            done_raw = _read_record(g[f"{PROGRESS}/done"], 255)
        except Exception:
            return out
        chunks = tuple(attrs["chunk_shape"])
        shape = tuple(g["n_walkers"].shape[i] for i in (0, 2, 3, 4))
        names = [n for n in CHUNK_VARIABLES if n in g]
        prog = g[PROGRESS]
        digests = _read_record(prog["digest"], 0) if "digest" in prog else None
        walkers = _read_record(prog["walkers"], -1) if "walkers" in prog else None
        out["digests"] = digests is not None
        from ..model.axes import samples

        sampled = samples(attrs.get("method", "montecarlo"))
        block = tuple(prog["done"].chunks)  # task chunks per storage chunk: each block is read once
        for bidx in itertools.product(*(range(-(-n // b)) for n, b in zip(done_raw.shape, block))):
            gsl = _block_slices(bidx, block, done_raw.shape)
            if not done_raw[gsl].any():
                continue
            csl = _cell_slices(gsl, chunks, shape)
            try:
                vals = {n: np.asarray(g[n][r]) for n, r in _chunk_regions_of(csl, names).items()}
                err = None
            except Exception as e:
                vals, err = None, f"unreadable chunk data ({type(e).__name__}: {str(e)[:80]})"
            for index in itertools.product(*(range(sl.start, sl.stop) for sl in gsl)):
                if done_raw[index] == 0:
                    continue
                if done_raw[index] != 1:
                    out["damaged"].append((index, f"completion record value {done_raw[index]!r}"))
                    continue
                out["checked"] += 1
                if err:
                    out["damaged"].append((index, err))
                    continue
                rel = tuple(slice(s.start - b.start, s.stop - b.start)
                            for s, b in zip(_cell_slices(tuple(slice(i, i + 1) for i in index), chunks, shape), csl))
                v = {n: vals[n][r] for n, r in _chunk_regions_of(rel, names).items()}
                if digests is not None:
                    if digests[index] == 0:
                        out["damaged"].append((index, "no digest"))
                        continue
                    if int(digests[index]) != chunk_digest(index, v):
                        out["damaged"].append((index, "digest mismatch (chunk data changed since it was written)"))
                        continue
                reason = _inconsistent(v, sampled, None if walkers is None else int(walkers[index]))
                if reason:
                    out["damaged"].append((index, reason))
        return out

    def set_attrs(self, **attrs) -> None:
        """Update group attributes and re-consolidate the metadata."""
        self.guard()
        self.group().attrs.update(attrs)
        _quiet_consolidate(self._target)


class _Block:
    """One storage block in memory: its variables' values, its record, the chunks still to come."""

    def __init__(self, bidx, gsl, csl, regions, data, rec, missing):
        self.bidx, self.gsl, self.csl, self.regions = bidx, gsl, csl, regions
        self.data, self.rec, self.missing = data, rec, missing
        self.new = []  # (index, slices, counts) of chunks whose variables are not derived yet
        self.dirty = False
        self.nbytes = sum(a.nbytes for a in data.values()) + sum(a.nbytes for a in rec.values())


class ChunkWriter:
    """The client's result path: buffer finished task chunks per storage block, write blocks whole.

    A block is written -- every variable's storage chunk (one object each), then its record chunk,
    `done` last -- as soon as all its task chunks are in, and all changed blocks every
    `flush_seconds` (checked on each result and while the runner waits for one) and at `close()`;
    beyond `max_bytes` of buffered blocks the least recently used is written and dropped. Only
    chunks whose data is written are ever recorded done, so a killed client loses at most the
    results since the last flush. Array handles are opened once. A block holding chunks done
    before is first read back from the store."""

    def __init__(self, st: "Store", edges, method: str, flush_seconds: float | None = None,
                 max_bytes: int = MAX_OPEN_BYTES):
        from collections import OrderedDict

        self.st, self.edges, self.method = st, edges, method
        self.flush_seconds = float(os.environ.get("ESCAPE_SWEEP_FLUSH_SECONDS", FLUSH_SECONDS)) \
            if flush_seconds is None else flush_seconds
        self.max_bytes = max_bytes
        g = st.group()
        self.arrays = {n: g[n] for n in CHUNK_VARIABLES if n in g}
        prog = g[PROGRESS]
        done = prog["done"]
        if "backend" not in prog:  # a store made before this record existed gains it
            _backend_array(prog, done.shape, done.chunks)
        self.rec = {n: prog[n] for n in RECORDS if n in prog}
        self.codes = list(self.rec["backend"].attrs.get("codes", BACKEND_CODES))
        self.grid, self.block = tuple(done.shape), tuple(done.chunks)
        self.chunks = tuple(g.attrs["chunk_shape"])
        self.shape = tuple(self.arrays["n_walkers"].shape[i] for i in (0, 2, 3, 4))
        self.done = _read_record(done, 255) == 1  # on disk when this writer started
        self.open = OrderedDict()
        self.open_bytes = 0
        self.last_flush = time.monotonic()
        self.blocks_written = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, index, slices, counts: dict, walkers: int, backends=("cpu",)) -> None:
        """One finished task chunk: its additive counts over the cells at `slices` (T, batch_size,
        depth, width); derived variables, digest and record go into its block's buffer."""
        index = tuple(int(i) for i in index)
        bidx = tuple(i // b for i, b in zip(index, self.block))
        blk = self.open.get(bidx) or self._open(bidx)
        self.open.move_to_end(bidx)
        name = "+".join(sorted(set(backends)))
        if name not in self.codes:
            self.codes.append(name)
            self.st.guard()
            self.rec["backend"].attrs["codes"] = self.codes
        at = tuple(i - s.start for i, s in zip(index, blk.gsl))
        rec = blk.rec
        rec["backend"][at] = self.codes.index(name)
        rec["finished_at"][at] = time.time()
        if "walkers" in rec:  # stores made before the walker record have none
            rec["walkers"][at] = walkers
        blk.new.append((index, tuple(slices), counts))
        blk.dirty = True
        blk.missing.discard(index)
        if not blk.missing:
            self._drop(bidx)
        self.flush_due()
        while self.open_bytes > self.max_bytes and len(self.open) > 1:
            self._drop(next(iter(self.open)))

    def flush_due(self) -> None:
        """Flush if `flush_seconds` have passed since the last flush (on each result, and while
        the runner waits for one, so a long task does not hold earlier results unwritten)."""
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write every block with unwritten results (keeping the incomplete ones in memory)."""
        for blk in list(self.open.values()):
            if blk.dirty:
                self._write(blk)
        self.last_flush = time.monotonic()

    def close(self) -> None:
        """Write what is buffered and drop it (at the end of a run, or on an interrupt)."""
        self.flush()
        self.open.clear()
        self.open_bytes = 0

    def _open(self, bidx) -> _Block:
        gsl = _block_slices(bidx, self.block, self.grid)
        csl = _cell_slices(gsl, self.chunks, self.shape)
        regions = _chunk_regions_of(csl, self.arrays)
        before = self.done[gsl]
        data, lost = {}, False
        for name, arr in self.arrays.items():
            shp = tuple((s.stop - s.start) if s != slice(None) else n for s, n in zip(regions[name], arr.shape))
            if before.any():
                try:
                    data[name] = np.array(arr[regions[name]], dtype=arr.dtype)
                    continue
                except Exception:  # unreadable: its done chunks are forgotten below (recomputed on resume)
                    lost = True
            data[name] = np.full(shp, arr.fill_value, dtype=arr.dtype)
        rec = {}
        for name, arr in self.rec.items():
            if name == "done":
                rec[name] = before.astype(arr.dtype)  # garbage values count as not done (recomputed)
            elif before.any():
                rec[name] = _read_block(arr, gsl)
            else:
                rec[name] = np.full(before.shape, arr.fill_value, dtype=arr.dtype)
        if lost:
            rec["done"][before] = 0
            if "digest" in rec:
                rec["digest"][before] = 0
        missing = {tuple(s.start + i for s, i in zip(gsl, local)) for local in zip(*np.nonzero(~before))}
        blk = _Block(bidx, gsl, csl, regions, data, rec, missing)
        blk.dirty = lost
        self.open[bidx] = blk
        self.open_bytes += blk.nbytes
        return blk

    def _derive(self, blk: _Block) -> None:
        """The cube variables, digest and `done` of the block's new chunks, in one vectorised
        `cube.derived` call over their cells laid side by side (every variable is per cell, so the
        values are those of one call per chunk)."""
        if not blk.new:
            return
        shapes = [tuple(s.stop - s.start for s in sl) for _, sl, _ in blk.new]
        sizes = [math.prod(sh) for sh in shapes]
        first = blk.new[0][2]
        keys = [k for k, v in first.items() if isinstance(v, np.ndarray) and v.shape[:4] == shapes[0]]
        flat = {k: np.concatenate([c[k].reshape((1, n, 1, 1) + c[k].shape[4:])
                                   for (_, _, c), n in zip(blk.new, sizes)], axis=1) for k in keys}
        allv = cube.derived(flat, self.edges, self.method)
        start = 0
        for (index, slices, _), shape, n in zip(blk.new, shapes, sizes):
            rel = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(slices, blk.csl))
            written = {}
            for name, v in allv.items():
                buf = blk.data[name]
                if v.ndim == 5 and name != "escape_hist":  # (1, budgets, cells, 1, 1) -> (cT, budgets, cB, cD, cW)
                    w = np.moveaxis(v[0, :, start:start + n, 0, 0].reshape((v.shape[1],) + shape), 0, 1)
                else:  # (1, cells, 1, 1[, bins]) -> (cT, cB, cD, cW[, bins])
                    w = v[0, start:start + n, 0, 0].reshape(shape + v.shape[4:])
                written[name] = np.asarray(w, dtype=buf.dtype)
                region = cube.regions(rel, {name: None})[name][0]
                buf[region] = written[name]
            at = tuple(i - s.start for i, s in zip(index, blk.gsl))
            if "digest" in blk.rec:  # stores made before digests have none
                blk.rec["digest"][at] = chunk_digest(index, written)
            blk.rec["done"][at] = 1
            start += n
        blk.new = []

    def _write(self, blk: _Block) -> None:
        self._derive(blk)
        self.st.guard()
        for name, buf in blk.data.items():
            self.arrays[name][blk.regions[name]] = buf
        self.st.guard()
        for name in RECORDS:  # done last: a chunk is recorded done only once all its data is on disk
            if name in self.rec:
                self.rec[name][blk.gsl] = blk.rec[name]
        self.done[blk.gsl] = blk.rec["done"] == 1
        blk.dirty = False
        self.blocks_written += 1

    def _drop(self, bidx) -> None:
        blk = self.open.pop(bidx)
        self.open_bytes -= blk.nbytes
        if blk.dirty:
            self._write(blk)


def _read_block(arr, gsl) -> np.ndarray:
    """A record array's block; an unreadable one reads as its fill value."""
    try:
        return np.array(arr[gsl])
    except Exception:
        return np.full([s.stop - s.start for s in gsl], arr.fill_value, dtype=arr.dtype)


def _inconsistent(v: dict, sampled: bool, walkers: int | None) -> str | None:
    """Why a chunk's counts cannot be right, or None."""
    n, k, div, e = v["n_walkers"], v["n_escaped"], v["n_diverged"], v["exposure"]
    if (n < 0).any() or (k < 0).any() or (div < 0).any() or (e < 0).any():
        return "negative counts"
    if (k + div > n).any():
        return "n_escaped + n_diverged > n_walkers"
    if (np.diff(k, axis=1) < 0).any() or (np.diff(e, axis=1) < 0).any():
        return "n_escaped or exposure decreasing with the step budget"
    if (n != n[:, :1]).any():
        return "n_walkers differs between step budgets"
    if sampled:
        if (v["escape_hist"].sum(axis=-1) != k[:, -1]).any():
            return "escape_hist does not sum to n_escaped at the largest budget"
        if walkers is not None and (n > walkers).any():  # refined cells may hold fewer than the chunk's most
            return f"n_walkers above the recorded {walkers} walkers"
    return None


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


def warm_up() -> None:
    """Import what writing a chunk needs (scipy.stats, ~0.25 s) in a background thread, so that it
    overlaps the first tasks instead of delaying the first write."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("scipy.stats",), daemon=True,
                     name="escape-sweep-warm-up").start()
