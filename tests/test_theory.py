"""`escape-sweep theory`, pipeline.analysis.theory, the `theory` preset and the report section, on
a tiny method = "both" cube made by `escape-sweep run`."""

import json
import math

import numpy as np
import pytest
from scipy import stats as _st

from helpers import run_cli, write_spec
from pipeline.analysis import presets, report, theory
from pipeline.errors import InputError
from pipeline.model import laws
from pipeline.model.markov import markov_cell
from pipeline.sweep.store import open_cube

T_VALUES = [0.02, 0.025, 0.03]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("theory")
    spec = write_spec(d, name="th", walkers=600, T=str(T_VALUES), steps="[100, 20000]", batch_size="[1, 2]",
                      method="both")
    assert run_cli(["run", spec, "--workers", "1", "--quiet"]) == 0
    return d / "th.zarr"


def test_theory_command_table_and_group(store, capsys):
    assert run_cli(["theory", store]) == 0
    out = capsys.readouterr().out
    assert "cube mfpt" in out and "slope exact" in out
    rows = [line.split() for line in out.splitlines()]
    for law in laws.LAWS:
        assert [r[1] for r in rows if r and r[0] == law] == ["1", "2"]  # one row per batch size
    th = theory.open_theory(store)
    assert set(th["law"].values) == set(laws.LAWS)
    assert th["median_abs_residual"].dims == ("law", "batch_size")
    # the stored residuals are the laws minus the exact tau, cell by cell
    ds = open_cube(store)
    for T in T_VALUES:
        for B in (1, 2):
            ex = math.log(float(ds["mfpt"].sel(T=T, batch_size=B).squeeze()))
            assert float(th["ln_tau_exact"].sel(T=T, batch_size=B).squeeze()) == pytest.approx(ex, rel=1e-12)
            for law in ("diffusion", "runs"):
                want = laws.ln_tau(law, T, B, 1.0, 0.1) - ex
                got = float(th["residual"].sel(law=law, T=T, batch_size=B).squeeze())
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    r = th["residual"].sel(law="runs", batch_size=1).values.ravel()
    assert float(th["within_factor_2"].sel(law="runs", batch_size=1)) == pytest.approx(np.mean(np.abs(r) <= math.log(2)))
    assert float(th["worst_abs_residual"].sel(law="runs", batch_size=1)) == pytest.approx(np.abs(r).max())
    # slopes of ln tau against 1/T: the exact one from the cube's mfpt by least squares
    ex = np.log(ds["mfpt"].sel(batch_size=1).squeeze().values)
    slope = np.polyfit(1 / np.array(T_VALUES), ex, 1)[0]
    assert float(th["slope_exact"].sel(law="diffusion", batch_size=1).squeeze()) == pytest.approx(slope, rel=1e-9)


def test_monte_carlo_agrees_with_exact_within_its_sampling_error(store):
    # the exact tau sits inside the Monte Carlo's intervals; 99.9% chi-square bounds per cell, Bonferroni
    # over the 6 cells, from the sample size alone (n_escaped, exposure at the largest budget)
    ds = open_cube(store).sel(steps=20000)
    th = theory.evaluate(open_cube(store))
    for T in T_VALUES:
        for B in (1, 2):
            c = ds.sel(T=T, batch_size=B).squeeze()
            d, e = int(c["n_escaped"]), float(c["exposure"])
            assert d > 50
            alpha = 0.001 / 6
            lo = _st.chi2.ppf(alpha / 2, 2 * d) / (2 * e)
            hi = _st.chi2.ppf(1 - alpha / 2, 2 * d + 2) / (2 * e)
            tau = float(c["mfpt"])
            assert 1 / hi <= tau <= 1 / lo, (T, B, tau, 1 / hi, 1 / lo)
            assert float(th["ln_tau_mc"].sel(T=T, batch_size=B).squeeze()) == pytest.approx(math.log(e / d), rel=1e-9)


def test_theory_formats_selection_and_bad_input(store, capsys):
    assert run_cli(["theory", store, "--sel", "batch_size=1", "--range", "T=0.022:", "--format", "json", "--no-save"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["T"] == [0.025, 0.03] and {r["batch_size"] for r in j["summary"]} == {1}
    assert {r["law"] for r in j["summary"]} == set(laws.LAWS) and all(r["n_cells"] == 2 for r in j["summary"])
    assert run_cli(["theory", store, "--format", "csv", "--no-save"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("law,batch_size,depth,width,n_cells")
    assert len(lines) == 1 + 2 * len(laws.LAWS) * 2  # pooled rows + per-pit rows (one pit)
    with pytest.raises(InputError, match="--sel"):
        run_cli(["theory", store, "--sel", "T=0.5"])
    with pytest.raises(InputError, match="--range"):
        run_cli(["theory", store, "--range", "T=1:2"])
    with pytest.raises(InputError):
        run_cli(["theory", store.parent / "missing.zarr"])


def test_exact_solved_on_the_fly_without_mfpt(store):
    ds = open_cube(store).sel(T=[0.025], batch_size=[1]).drop_vars(["mfpt", "mfpt_rel_error"])
    th = theory.evaluate(ds)
    assert th.attrs["exact_source"].startswith("markov_cell")
    want = math.log(markov_cell(0.025, 1, 1.0, 0.1).mfpt)
    assert float(th["ln_tau_exact"].squeeze()) == pytest.approx(want, rel=1e-12)


def test_preset_draws_laws_and_a_residual_panel(store, tmp_path):
    ds = open_cube(store)
    out = tmp_path / "theory.png"
    fig = presets.preset(ds, "theory", out=out)
    assert out.stat().st_size > 10_000
    assert len(fig.axes) == 4  # two batch sizes: ln tau panels over residual panels
    top, res = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert "exact (Markov chain)" in labels and sum(lab in labels for lab in laws.LAW_TITLES.values()) >= 4
    assert res.get_ylabel().startswith("ln tau_law - ln tau_exact")
    # no line runs past the data's T range
    inv = 1 / np.array(T_VALUES)
    for ax in fig.axes:
        for line in ax.get_lines():
            x = np.asarray(line.get_xdata(), dtype=float)
            if x.size > 1 and not np.array_equal(x, [0.0, 1.0]):  # [0, 1]: axhline in axes coordinates
                assert x.min() >= inv.min() - 1e-9 and x.max() <= inv.max() + 1e-9
    # the report has the section with this figure and the table
    page, titles = report.render_report(ds, source=str(store))
    assert "Which theory predicts the escape time?" in page and "Theory against the exact escape time" in titles
    assert "slope exact" in page
    # without mfpt: the section says why it is absent
    page, titles = report.render_report(ds.drop_vars(["mfpt", "mfpt_rel_error", "markov_p_escape", "markov_agrees"],
                                                     errors="ignore"))
    assert "Which theory predicts the escape time?" in page and "no exact tau" in page
