"""Spec validation: every bad input is one line naming file, key and value, exit code 2, no compute."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SPEC
from pipeline.cli import main
from pipeline.sweep.spec import parse_spec

DEFAULTS = dict(name="t", seed=3, walkers=100, T="[0.01, 0.02]", steps="[100, 1000]", batch_size="[1]",
                depth="[1.0]", width="[0.1]", path="x.zarr")


def spec_text(**kw):
    return SPEC.format(**(DEFAULTS | kw))


def check_bad(tmp_path, capsys, text, *needles, extra=()):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    rc = main(["validate", str(f), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert str(f) in err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_good_spec_parses_and_sorts(tmp_path):
    s = parse_spec(spec_text(T="[0.02, 0.01]", steps="{start = 100, stop = 10000, num = 3, scale = \"log\"}"))
    assert s.T == (0.01, 0.02) and s.steps == (100, 1000, 10000)
    s2 = parse_spec(spec_text(T="{start = 0.01, stop = 0.02, num = 3}"))
    assert s2.T == (0.01, 0.015, 0.02)  # rounded to 12 significant digits: same cell as a typed 0.015
    assert parse_spec(spec_text()).content_hash == parse_spec("# a comment\n" + spec_text(path="y.zarr")).content_hash
    assert parse_spec(spec_text()).content_hash != parse_spec(spec_text(T="[0.01, 0.03]")).content_hash


@pytest.mark.parametrize("text,needles", [
    (spec_text() + "colour = 'red'\n", ["colour", "unknown key"]),
    (spec_text().replace("[axes]", "[axes]\nlr = [1.0]"), ["axes.lr", "unknown axis"]),
    (spec_text(T="{start = 0.01, stop = 0.02, num = 3, step = 1}"), ["axes.T.step", "unknown key"]),
    (spec_text(T="{start = 0.01, num = 3}"), ["axes.T", "missing stop"]),
    (spec_text().split("[axes]")[0], ["[axes] is missing"]),
    (spec_text().replace("width = [0.1]\n", ""), ["axes.width is missing"]),
    (spec_text(steps="[]"), ["axes.steps", "must not be empty"]),
    (spec_text(T="[0.01, 0.01]"), ["axes.T", "0.01", "duplicate"]),
    (spec_text(steps="{start = 100, stop = 101, num = 5}"), ["axes.steps", "duplicate"]),
    (spec_text(T='["hot"]'), ["axes.T[0]", "'hot'", "must be a number"]),
    (spec_text(steps="[1.5]"), ["axes.steps[0]", "1.5", "integer"]),
    (spec_text(batch_size="[true]"), ["axes.batch_size[0]", "True", "integer"]),
    (spec_text(T="0.01"), ["axes.T", "0.01", "list of numbers"]),
    (spec_text(T="[0.0, 0.01]"), ["axes.T", "0.0", "> 0"]),
    (spec_text(T="[-0.01]"), ["axes.T", "-0.01", "> 0"]),
    (spec_text(steps="[0]"), ["axes.steps", "0", ">= 1"]),
    (spec_text(batch_size="[0]"), ["axes.batch_size", "0", ">= 1"]),
    (spec_text(width="[0.0]"), ["axes.width", "0.0", "> 0"]),
    (spec_text(depth="[-1.0]"), ["axes.depth", "-1.0", "> 0"]),
    (spec_text(T="[nan]"), ["axes.T[0]", "nan", "finite"]),
    (spec_text(depth="[inf]"), ["axes.depth[0]", "inf", "finite"]),
    (spec_text(depth="[0.01]"), ["axes.depth = 0.01", "axes.width = 0.1", "no pit"]),
    (spec_text(T="{start = 0.0, stop = 0.02, num = 3, scale = \"log\"}"), ["axes.T", "start > 0"]),
    (spec_text(T="{start = 0.01, stop = 0.02, num = 3, scale = \"cubic\"}"), ["axes.T.scale", "cubic"]),
    (spec_text().replace("walkers = 100", "walkers = 0"), ["walkers = 0", ">= 1"]),
    (spec_text().replace("walkers = 100", 'walkers = "many"'), ["walkers = 'many'", "integer"]),
    (spec_text().replace("walkers = 100\n", ""), ["walkers is missing"]),
    (spec_text().replace("seed = 3", "seed = -1"), ["seed = -1"]),
    (spec_text().replace("walkers = 100", 'walkers = 100\nmethod = "guess"'), ["method = 'guess'", "montecarlo"]),
    (spec_text() + "[oops\n", ["not valid TOML"]),
])
def test_bad_spec_is_one_line_and_exit_2(tmp_path, capsys, text, needles):
    check_bad(tmp_path, capsys, text, *needles)


def test_grid_too_large_needs_yes(tmp_path, capsys):
    text = spec_text(T="{start = 0.001, stop = 0.1, num = 100000}", steps="[100000000]")
    check_bad(tmp_path, capsys, text, "walker-steps", "--yes")
    f = tmp_path / "bad.toml"
    assert main(["validate", str(f), "--yes"]) == 0


def test_missing_spec_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read spec" in capsys.readouterr().err


def test_bad_spec_in_run_starts_nothing(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(spec_text(T="[0.0]", path=str(tmp_path / "out.zarr")))
    r = subprocess.run([sys.executable, "-m", "pipeline", "run", str(f)], capture_output=True, text=True,
                       timeout=120, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "axes.T" in r.stderr
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("workflow", sorted(Path(__file__).parent.parent.glob("workflows/*.toml")), ids=lambda p: p.name)
def test_shipped_workflows_validate(workflow, capsys):
    assert main(["validate", str(workflow)]) == 0
