"""The Dask dashboard as a user sees it, mid-sweep, in headless Chromium: the progress bar of the
sweep counts finished chunks against all of the sweep's chunks, and tasks carry names a user
recognises (the sweep's name and the coordinate ranges they compute)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from browser import PROGRESS_JS, Browser, chromium, shots_dir
from helpers import write_spec

needs_chromium = pytest.mark.skipif(chromium() is None, reason="needs chromium (Debian package `chromium`)")


def _read_until(proc, pattern, lines, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"no {pattern!r} in the run's output:\n{''.join(lines)}")


@pytest.mark.slow
@needs_chromium
def test_dashboard_shows_the_whole_sweep_mid_run(tmp_path):
    spec = write_spec(tmp_path, name="dash-demo", walkers=150_000, T="{ start = 0.004, stop = 0.006, num = 40 }",
                      steps="[1000]", batch_size="[1]")
    env = dict(os.environ, ESCAPE_SWEEP_PROGRESS_SECONDS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(spec), "--workers", "1",
                             "--task-seconds", "0.3"], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    try:
        total = int(_read_until(proc, r"dash-demo: \d+ chunks \((\d+) tasks", lines).group(1))
        url = _read_until(proc, r"dashboard (http://\S+)", lines).group(1)
        assert total >= 20
        with Browser(url) as page:
            bars, seen = None, []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                found = page.evaluate(PROGRESS_JS) or []
                rows = {n: d for src in found for n, d in zip(src["name"], src["done"])}
                if "dash-demo" in rows:
                    seen.append(rows["dash-demo"])
                    done, all_ = map(int, rows["dash-demo"].split(" / "))
                    if 0 < done < total and all_ == total:
                        bars = rows
                        break
                time.sleep(0.5)
            # a bar that never counts the whole sweep mid-run fails here, with what it did show
            assert bars is not None, f"no mid-sweep bar 'dash-demo' reading k / {total} on {url}: {seen or found}"
            time.sleep(1.0)  # let Bokeh finish drawing before the shot
            shot = page.screenshot(tmp_path / "dashboard.png")
            if shots_dir():
                page.screenshot(shots_dir() / "dashboard-mid-sweep.png")
        done, all_ = map(int, bars["dash-demo"].split(" / "))
        assert all_ == total, f"the bar counts {all_} tasks, the sweep has {total} tasks"
        computing = [n for n in bars if n.startswith("dash-demo-compute")]
        assert computing, f"no 'dash-demo-compute' bar: {sorted(bars)}"
        assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
        out, err = proc.communicate(timeout=300)
        lines.append(err)
        assert proc.returncode == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_task_keys_name_the_sweep_and_the_coordinates(tmp_path):
    """Keys group under the sweep's name on the dashboard and say which T / batch range they compute."""
    from dask.utils import key_split

    from pipeline.sweep import partition
    from pipeline.sweep.runner import TaskNames
    from pipeline.sweep.spec import load_spec

    spec = load_spec(write_spec(tmp_path, name="seed-post", T="[0.01, 0.02, 0.03]", batch_size="[1, 8]"))
    chunks = (2, 1, 1, 1)
    names = TaskNames(spec, chunks)
    task = partition.tasks_for_chunk(spec, chunks, (1, 1, 0, 0), spec.pits())[0]
    assert key_split(names.done(task)) == "seed-post"
    assert key_split(names.compute(task)) == "seed-post-compute"
    assert "T=0.03,batch=8,depth=1,width=0.1" in names.done(task)
    odd = load_spec(write_spec(tmp_path, name="run-2b", T="[0.01, 0.02]"))
    odd_task = partition.tasks_for_chunk(odd, chunks, (0, 0, 0, 0), odd.pits())[0]
    assert key_split(TaskNames(odd, chunks).done(odd_task)) == "run_2b"
    assert "T=0.01..0.02,batch=1," in TaskNames(odd, chunks).compute(odd_task)
