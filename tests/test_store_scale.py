"""Issue 16, many workers: storage chunks cover blocks of task chunks, written whole by the
client's ChunkWriter; the file count follows the blocks, the record stays exact after a kill,
values are bit-identical to one storage chunk per task chunk, and old stores still resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline import scale
from pipeline.sweep import partition
from pipeline.sweep.store import CHUNK_VARIABLES, PROGRESS, Store

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = (1, 1, 1, 1)


def _spec():
    """120 one-cell task chunks: T x depth x width = 3 x 4 x 10."""
    from pipeline.sweep.spec import parse_spec

    return parse_spec(scale.SPEC.format(nT=3, depth="{ start = 0.8, stop = 1.2, num = 4 }",
                                        width="{ start = 0.08, stop = 0.12, num = 10 }"))


def _setup():
    spec = _spec()
    planner, results = scale._results(spec, CHUNKS)
    chunks = [planner.tell(r) for r in results]
    return spec, chunks


def _make(spec, path, block=None):
    st = Store(path)
    st.create(spec, CHUNKS, partition.spec_edges(spec), partition.chunk_grid(spec, CHUNKS), block=block)
    return st


def _write(st, spec, chunks, **kw):
    with st.writer(partition.spec_edges(spec), spec.method, **kw) as w:
        for c in chunks:
            w.add(c.index, c.slices, c.counts, c.walkers, backends=c.backends)


def _arrays(path):
    g = zarr.open_group(str(path), mode="r", use_consolidated=False)
    out = {n: np.asarray(g[n][...]) for n in CHUNK_VARIABLES if n in g}
    out.update({f"{PROGRESS}/{n}": np.asarray(g[PROGRESS][n][...]) for n in ("done", "walkers", "digest", "backend")})
    return out


def _assert_bit_identical(a, b):
    x, y = _arrays(a), _arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
        assert x[k].tobytes() == y[k].tobytes(), k


def _files(path):
    return sum(len(f) for _, _, f in os.walk(path))


@pytest.fixture(scope="module")
def grid():
    """The task chunks of `_spec` with their synthetic results."""
    return _setup()


@pytest.fixture(scope="module")
def reference(grid, tmp_path_factory):
    """The grid written with one storage chunk per task chunk (the layout main writes)."""
    spec, chunks = grid
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    _write(_make(spec, path, block=CHUNKS), spec, chunks)
    return path


def test_file_count_follows_blocks_not_task_chunks(grid, reference, tmp_path):
    spec, chunks = grid
    st = _make(spec, tmp_path / "s.zarr")
    block = tuple(st.attrs()["storage_block"])
    nblocks = int(np.prod([-(-g // b) for g, b in zip(partition.chunk_grid(spec, CHUNKS), block)]))
    assert nblocks == 1 and st.attrs()["store_layout"] == 2
    _write(st, spec, chunks)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r", use_consolidated=False)
    arrays = [n for n in CHUNK_VARIABLES if n in g] + [f"{PROGRESS}/{n}" for n in g[PROGRESS].array_keys()]
    # one object per array per block, plus metadata and the coordinates
    assert _files(tmp_path / "s.zarr") <= len(arrays) * nblocks + 60
    # main's layout: one object per array per task chunk (but those equal to the fill value)
    assert _files(reference) >= 10 * len(chunks)
    assert st.chunk_count() == (len(chunks), len(chunks))
    report = st.verify()
    assert report["checked"] == len(chunks) and report["damaged"] == [] and report["record"] == []
    _assert_bit_identical(tmp_path / "s.zarr", reference)


def test_values_bit_identical_whatever_the_blocks_and_flushes(grid, reference, tmp_path):
    """Odd block shapes (edges clipped), results in reverse order, a tiny memory cap that evicts and
    re-reads blocks (flushes after every result: the kill test), and main's per-chunk `write_chunk`:
    all the same bytes."""
    spec, chunks = grid
    _write(_make(spec, tmp_path / "a.zarr", block=(2, 1, 3, 7)), spec, chunks[::-1])
    _assert_bit_identical(tmp_path / "a.zarr", reference)
    # every block gets half its chunks, is evicted (one open block at most), then read back for the rest
    by_block = lambda cs: sorted(cs, key=lambda c: tuple(i // b for i, b in zip(c.index, (2, 1, 2, 4))))  # noqa: E731
    _write(_make(spec, tmp_path / "b.zarr", block=(2, 1, 2, 4)), spec, by_block(chunks[1::2]) + by_block(chunks[::2]),
           max_bytes=1)
    _assert_bit_identical(tmp_path / "b.zarr", reference)
    st = _make(spec, tmp_path / "m.zarr", block=CHUNKS)
    edges = partition.spec_edges(spec)
    g = st.group()
    for c in chunks[:30]:
        st.write_chunk(c.index, c.slices, c.counts, edges, spec.method, c.walkers, group=g, backends=c.backends)
    ref = _arrays(reference)
    got = _arrays(tmp_path / "m.zarr")
    done = got[f"{PROGRESS}/done"] == 1
    assert done.sum() == 30
    assert (got[f"{PROGRESS}/digest"][done] == ref[f"{PROGRESS}/digest"][done]).all()
    # an old-layout store half written by main's path resumes with the writer into the same cube
    _write(st, spec, [c for c in chunks if not done[c.index]])
    _assert_bit_identical(tmp_path / "m.zarr", reference)


KILLED = """
import sys, time
sys.path.insert(0, sys.argv[2])
from pipeline import scale
from pipeline.sweep import partition
from pipeline.sweep.store import Store
from test_store_scale import _spec
spec = _spec()
planner, results = scale._results(spec, (1, 1, 1, 1))
st = Store(sys.argv[1])
with st.writer(partition.spec_edges(spec), spec.method, flush_seconds=0.0) as w:
    for r in results:
        c = planner.tell(r)
        w.add(c.index, c.slices, c.counts, c.walkers, backends=c.backends)
print("finished", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("at_least", [10, 60])
def test_kill_mid_flush_leaves_an_exact_record(grid, reference, tmp_path, at_least):
    """SIGKILL a real writer process that flushes after every result (so it is almost always
    inside a block write): every chunk recorded done holds its data, and a resume completes the
    same cube."""
    spec, chunks = grid
    path = tmp_path / "k.zarr"
    st = _make(spec, path, block=(1, 1, 2, 10))  # 20 chunks per block, 6 blocks
    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(path), str(ROOT / "tests")], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert p.poll() is None, p.communicate()
            if st.chunk_count()[0] >= at_least:
                break
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    done = st.done_mask()
    assert at_least <= done.sum() < len(chunks)
    report = st.verify()
    assert report["damaged"] == [] and report["record"] == [] and report["checked"] == done.sum()
    ref, got = _arrays(reference), _arrays(path)
    for name in ("n_escaped", "p_escape", "median_escape_time"):
        d5 = np.moveaxis(np.broadcast_to(done[..., None], done.shape + (ref[name].shape[1],)), -1, 1)
        assert got[name][d5].tobytes() == ref[name][d5].tobytes(), name
    _write(st, spec, [c for c in chunks if not done[c.index]])
    _assert_bit_identical(path, reference)


def test_a_damaged_block_is_found_and_recomputed(grid, reference, tmp_path):
    spec, chunks = grid
    path = tmp_path / "d.zarr"
    st = _make(spec, path, block=(1, 1, 2, 10))
    _write(st, spec, chunks)
    obj = path / "n_escaped" / "c" / "1" / "0" / "0" / "1" / "0"  # block (1, 0, 1, 0): 20 task chunks
    obj.write_bytes(obj.read_bytes()[:7])
    report = st.verify()
    bad = sorted(i for i, _ in report["damaged"])
    assert bad == [(1, 0, d, w) for d in range(2, 4) for w in range(10)]
    assert all("unreadable" in why for _, why in report["damaged"])
    st.clear_done(bad)
    assert st.chunk_count()[0] == len(chunks) - 20
    _write(st, spec, [c for c in chunks if tuple(c.index) in set(bad)])
    _assert_bit_identical(path, reference)
    assert st.verify()["damaged"] == []


def test_a_result_waiting_in_the_buffer_reaches_the_disk_without_another_result(grid, tmp_path):
    """flush_due, as the runner calls it while no result is ready: once flush_seconds have passed,
    a buffered chunk of an unfinished block is on disk and recorded, with no further `add`."""
    spec, chunks = grid
    st = _make(spec, tmp_path / "w.zarr", block=(1, 1, 2, 10))
    w = st.writer(partition.spec_edges(spec), spec.method, flush_seconds=0.3)
    w.add(chunks[0].index, chunks[0].slices, chunks[0].counts, chunks[0].walkers, backends=chunks[0].backends)
    w.flush_due()
    assert st.chunk_count()[0] == 0  # buffered: its block has 19 chunks to come, and 0.3 s have not passed
    time.sleep(0.35)
    w.flush_due()
    assert st.chunk_count()[0] == 1 and st.verify()["damaged"] == []
    w.close()
