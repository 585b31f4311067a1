"""TOML sweep spec -> validated, frozen `Spec`. Every bad input is one `SpecError` line naming
the file, the key, the value and what is allowed (the CLI turns it into exit code 2).

    name = "seed-post"
    seed = 20261122
    walkers = 20000                 # per cell
    method = "montecarlo"           # optional: "montecarlo" (default), "markov" or "both"
    [axes]
    T = { start = 0.005, stop = 0.06, num = 56 }   # inclusive linspace; scale = "log" for logspace
    steps = [100, 1000]
    batch_size = [1]
    depth = [1.0]
    width = [0.1]
    [output]
    path = "results/seed-post.zarr"  # relative paths are relative to the working directory

Axis values are sorted ascending. Values made by linspace/logspace are rounded to 12
significant digits, so `0.015` typed in a list and `0.015` produced by a range are the same
cell (and so the same random stream: DESIGN.md section 2).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path

from ..errors import SpecError
from ..model.axes import AXES, INT_AXES, METHODS

if TYPE_CHECKING:
    from ..model.landscape import Pit

TOP_KEYS = {"name", "seed", "walkers", "method", "axes", "output"}
RANGE_KEYS = {"start", "stop", "num", "scale"}
MAX_CELLS = 2_000_000  # beyond this (or MAX_WALKER_STEPS, MAX_BATCH) a sweep needs --yes
MAX_WALKER_STEPS = 2e13  # ~ 10 core-hours at 5e8 walker-steps/s (of work: see Spec.work_bound)
MAX_BATCH = 2**20  # a batch this large costs 16384 random words per step; beyond it needs --yes
HARD_MAX_AXIS = 10**7  # values of one axis, even with --yes (the coordinate arrays live in memory)
HARD_MAX_COUNT = 2**62  # walkers x max(steps) must fit the int64 exposure, even with --yes
LANE_STEPS = 64  # the kernel steps walkers in rounds of 64: a smaller budget costs 64 steps
REL_DUPLICATE = 1e-8  # float axis values closer than this (relative) are one value typed twice (0.015, 0.0150000001)

# each (depth, width) pit is found once per process, however often a spec asks
@functools.lru_cache(maxsize=4096)
def _find_pit(depth: float, width: float):
    from ..model.landscape import find_pit  # numpy and scipy: only for a spec whose axes are good

    return find_pit(depth, width)


@dataclass(frozen=True)
class Spec:
    """A validated sweep: axes (sorted tuples), seed, walkers per cell, method, output path."""

    name: str
    seed: int
    walkers: int
    method: str
    T: tuple[float, ...]
    steps: tuple[int, ...]
    batch_size: tuple[int, ...]
    depth: tuple[float, ...]
    width: tuple[float, ...]
    output: str
    source: str = field(default="", repr=False, compare=False)
    file: str = field(default="<spec>", compare=False)

    @property
    def axes(self) -> dict[str, tuple]:
        return {a: getattr(self, a) for a in AXES}

    @property
    def cell_shape(self) -> tuple[int, int, int, int]:
        """Shape of the simulated grid (T, batch_size, depth, width); steps is read off, not run."""
        return (len(self.T), len(self.batch_size), len(self.depth), len(self.width))

    @property
    def n_cells(self) -> int:
        return math.prod(self.cell_shape)

    @property
    def max_steps(self) -> int:
        return max(self.steps)

    @property
    def walker_steps_bound(self) -> float:
        """Upper bound of the sweep's walker-steps: cells x walkers x max(steps) (if nothing escaped)."""
        return float(self.n_cells) * self.walkers * self.max_steps

    @property
    def cost_steps(self) -> int:
        """Steps a censored walker costs: max(steps) rounded up to the kernel's rounds of 64."""
        return -(-self.max_steps // LANE_STEPS) * LANE_STEPS

    @staticmethod
    def batch_words(batch_size: int) -> int:
        """Random 64-bit words per step: one feeds 64 // B steps up to B = 64, B > 64 draws ceil(B / 64)."""
        return max(1, -(-int(batch_size) // 64))

    @property
    def work_bound(self) -> float:
        """Upper bound of the kernel's work in walker-step units: walkers x cost_steps x words per
        step, summed over cells (what the sanity limit and `validate`'s time estimate use)."""
        other = len(self.T) * len(self.depth) * len(self.width)
        return float(other) * self.walkers * self.cost_steps * sum(self.batch_words(b) for b in self.batch_size)

    @property
    def content_hash(self) -> str:
        """sha256 of what determines the numbers (seed, walkers, method, axis values); not of
        comments, name or output path. A store is resumed only by a spec with the same hash."""
        body = dict(seed=self.seed, walkers=self.walkers, method=self.method,
                    axes={a: [float(v).hex() if isinstance(v, float) else int(v) for v in getattr(self, a)] for a in AXES})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def pits(self) -> dict[tuple[float, float], Pit]:
        """(depth, width) -> Pit geometry for every pair of the grid."""
        return {(d, w): _find_pit(d, w) for d in self.depth for w in self.width}


def _fail(file, key, value, allowed) -> SpecError:
    return SpecError(f"{file}: {key} = {value!r}: {allowed}")


def _number(file, key, v, integer: bool):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        kind = "an integer" if integer else "a number"
        return _fail(file, key, v, f"must be {kind}")
    if integer and not isinstance(v, int):
        if not (math.isfinite(v) and float(v).is_integer()):
            return _fail(file, key, v, "must be an integer")
    if not math.isfinite(v):
        return _fail(file, key, v, "must be finite")
    return None


def _round12(x: float) -> float:
    return float(f"{x:.12g}")


def _axis(file, name, raw, yes: bool = False) -> tuple:
    key = f"axes.{name}"
    integer = name in INT_AXES
    if isinstance(raw, dict):
        unknown = set(raw) - RANGE_KEYS
        if unknown:
            k = sorted(unknown)[0]
            raise _fail(file, f"{key}.{k}", raw[k], f"unknown key; a range takes {sorted(RANGE_KEYS)}")
        for k in ("start", "stop", "num"):
            if k not in raw:
                raise _fail(file, key, raw, f"a range needs start, stop and num (missing {k})")
        for k in ("start", "stop"):
            err = _number(file, f"{key}.{k}", raw[k], False)
            if err:
                raise err
        num = raw["num"]
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise _fail(file, f"{key}.num", num, "must be an integer >= 1")
        if num > HARD_MAX_AXIS or (num > MAX_CELLS and not yes):  # before building any array
            limit = (f"at most {HARD_MAX_AXIS} values per axis" if num > HARD_MAX_AXIS
                     else f"more than the sanity limit of {MAX_CELLS} cells; pass --yes to run it anyway")
            raise _fail(file, f"{key}.num", num, limit)
        scale = raw.get("scale", "linear")
        if scale not in ("linear", "log"):
            raise _fail(file, f"{key}.scale", scale, 'must be "linear" or "log"')
        start, stop = float(raw["start"]), float(raw["stop"])
        import numpy as np  # here: a spec refused before its axes are built never loads numpy

        if scale == "log":
            if start <= 0 or stop <= 0:
                raise _fail(file, key, raw, "a log range needs start > 0 and stop > 0")
            vals = np.logspace(math.log10(start), math.log10(stop), num)
        else:
            vals = np.linspace(start, stop, num)
        values = [_round12(float(v)) for v in vals]
        if integer:
            values = [int(round(v)) for v in values]
    elif isinstance(raw, list):
        if not raw:
            raise _fail(file, key, raw, "must not be empty")
        for i, v in enumerate(raw):
            err = _number(file, f"{key}[{i}]", v, integer)
            if err:
                raise err
        values = [int(v) for v in raw] if integer else [float(v) for v in raw]
    else:
        raise _fail(file, key, raw, "must be a list of numbers or a table {start, stop, num[, scale]}")
    for v in values:
        if v <= 0 or (integer and v < 1):
            allowed = "must be integers >= 1" if integer else "must be > 0"
            raise _fail(file, key, v, f"values {allowed}")
    seen = set()
    for v in values:
        if v in seen:
            raise _fail(file, key, v, "duplicate value (after rounding) -- each value must appear once")
        seen.add(v)
    values = sorted(values)
    if not integer:
        for a, b in zip(values, values[1:]):
            if b - a <= REL_DUPLICATE * b:
                raise _fail(file, key, b, f"within a relative {REL_DUPLICATE:g} of {a!r}: the same value "
                                          "typed twice? each value must appear once")
    return tuple(values)


def _n_values(raw) -> int | None:
    """Values an axis will have, from its raw form (None where _axis will report it)."""
    if isinstance(raw, list):
        return len(raw)
    if isinstance(raw, dict) and isinstance(raw.get("num"), int) and not isinstance(raw.get("num"), bool):
        return raw["num"]
    return None


def _check_text(file, key, value) -> None:
    """Names and paths: no NUL or other control characters."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise _fail(file, key, value, "must not contain control characters (NUL, newline, ...)")


def parse_spec(text: str, file: str = "<spec>", *, output: str | None = None, yes: bool = False) -> Spec:
    """Parse and validate TOML text (see the module docstring); raise SpecError on any bad input."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{file}: not valid TOML: {e}") from None
    unknown = set(doc) - TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise _fail(file, k, doc[k], f"unknown key; allowed top-level keys are {sorted(TOP_KEYS)}")
    name = doc.get("name", Path(file).stem)
    if not isinstance(name, str) or not name:
        raise _fail(file, "name", name, "must be a non-empty string")
    _check_text(file, "name", name)
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise _fail(file, "name", name, "must be a plain name (no / or \\, not starting with a dot): "
                                        "it names the default store results/<name>.zarr")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise _fail(file, "seed", seed, "must be an integer in [0, 2^63)")
    if "walkers" not in doc:
        raise SpecError(f"{file}: walkers is missing: give the number of walkers per cell (integer >= 1)")
    walkers = doc["walkers"]
    if isinstance(walkers, bool) or not isinstance(walkers, int) or walkers < 1:
        raise _fail(file, "walkers", walkers, "must be an integer >= 1")
    method = doc.get("method", "montecarlo")
    if method not in METHODS:
        raise _fail(file, "method", method, f"must be one of {', '.join(METHODS)}")
    axes_raw = doc.get("axes")
    if not isinstance(axes_raw, dict):
        raise SpecError(f"{file}: [axes] is missing: it needs {', '.join(AXES)}")
    extra = set(axes_raw) - set(AXES)
    if extra:
        k = sorted(extra)[0]
        raise _fail(file, f"axes.{k}", axes_raw[k], f"unknown axis; allowed axes are {', '.join(AXES)}")
    for a in AXES:
        if a not in axes_raw:
            raise SpecError(f"{file}: axes.{a} is missing: every axis of {', '.join(AXES)} needs values")
    sizes = [_n_values(axes_raw[a]) for a in ("T", "batch_size", "depth", "width")]
    if not yes and None not in sizes and math.prod(sizes) > MAX_CELLS:  # before building any array
        raise SpecError(f"{file}: axes: {math.prod(sizes)} cells: larger than the sanity limit of {MAX_CELLS} "
                        "cells; pass --yes to run it anyway")
    axes = {a: _axis(file, f"{a}", axes_raw[a], yes) for a in AXES}
    out_raw = doc.get("output", {})
    if not isinstance(out_raw, dict):
        raise _fail(file, "output", out_raw, "must be a table with key path")
    extra = set(out_raw) - {"path"}
    if extra:
        k = sorted(extra)[0]
        raise _fail(file, f"output.{k}", out_raw[k], "unknown key; [output] takes path")
    path = output or out_raw.get("path") or f"results/{name}.zarr"
    if not isinstance(path, str) or not path:
        raise _fail(file, "output.path", path, "must be a non-empty string")
    _check_text(file, "output.path" if not output else "--output", path)
    if walkers * (-(-max(axes["steps"]) // LANE_STEPS) * LANE_STEPS) > HARD_MAX_COUNT:
        raise _fail(file, "walkers", walkers, f"x max(steps) = {max(axes['steps'])} must stay within "
                                              f"2^62 (the int64 exposure), even with --yes")
    spec = Spec(name=name, seed=seed, walkers=walkers, method=method, output=path, source=text, file=file, **axes)
    import numpy as np

    for d in spec.depth:
        for w in spec.width:
            try:
                with np.errstate(all="ignore"):
                    _find_pit(d, w)
            except (ValueError, ArithmeticError):
                raise SpecError(
                    f"{file}: axes.depth = {d!r} with axes.width = {w!r}: l1 has no pit there "
                    "(no local minimum near W = 1 with a barrier to its right); use deeper or narrower pits"
                ) from None
    if not yes and (spec.n_cells > MAX_CELLS or spec.work_bound > MAX_WALKER_STEPS):
        raise SpecError(
            f"{file}: axes: {spec.n_cells} cells x {walkers} walkers x {spec.cost_steps} steps (max(steps) in "
            f"rounds of 64) x random words per step (ceil(batch_size / 64)) = {spec.work_bound:.3g} walker-steps "
            f"of work: larger than the sanity limits ({MAX_CELLS} cells, {MAX_WALKER_STEPS:.0e} walker-steps); "
            "pass --yes to run it anyway"
        )
    if not yes and max(spec.batch_size) > MAX_BATCH:
        raise _fail(file, "axes.batch_size", max(spec.batch_size),
                    f"larger than the sanity limit {MAX_BATCH} (2^20); pass --yes to run it anyway")
    return spec


def spec_text(spec: Spec) -> str:
    """TOML text that parses back to `spec` exactly (axes as lists of the exact values): the spec a
    grown or refined store records."""
    lines = [f"name = {json.dumps(spec.name)}", f"seed = {spec.seed}", f"walkers = {spec.walkers}",
             f"method = {json.dumps(spec.method)}", "", "[axes]"]
    for a in AXES:
        lines.append(f"{a} = [{', '.join(repr(v) for v in getattr(spec, a))}]")
    lines += ["", "[output]", f"path = {json.dumps(spec.output)}", ""]
    return "\n".join(lines)


def load_spec(path, *, output: str | None = None, yes: bool = False) -> Spec:
    """Read and validate a spec file (TOML only, via tomllib)."""
    if "\0" in str(path):
        raise SpecError(f"{path!r}: a spec path must not contain NUL")
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read spec: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")  # TOML is UTF-8; a byte-order mark is tolerated
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}): "
                        "a spec is TOML, which is UTF-8") from None
    return parse_spec(text, str(path), output=output, yes=yes)
