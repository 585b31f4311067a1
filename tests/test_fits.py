"""pipeline.fits on synthetic cubes drawn from known laws (tests/synth.py)."""

import json

import numpy as np
import pytest
import xarray as xr

import pipeline
from pipeline import stats
from pipeline.analysis import fits, tables
from pipeline.errors import InputError
from helpers import run_cli
from synth import arrhenius, assert_survival_matches_counts, synthetic_cube, write_cube

A, B_ = -2.0, 0.1  # ln tau = A + B_/T


def test_arrhenius_fit_covers_truth_in_90_percent_of_50_trials():
    # ln tau = -2 + 0.1/T on T = 0.010..0.020 (tau ~ 20..3000 steps), 2000 walkers, budget 1000,
    # plus T = 0.004 (tau ~ 1e10: nothing escapes) which must be left out and listed.
    T = np.concatenate([[0.004], np.linspace(0.010, 0.020, 11)])
    cover_a = cover_b = cover_both = 0
    for seed in range(50):
        ds = synthetic_cube(T, steps=[1000], walkers=2000, seed=seed)
        f = fits.fit_temperature(ds).isel(steps=0, batch_size=0, depth=0, width=0)
        assert int(f["fit_n_cells"]) == 11 and int(f["fit_n_unbounded"]) == 1
        assert float(f["fit_T_min"]) == pytest.approx(0.010)
        a_in = float(f["arrhenius_intercept_low"]) <= A <= float(f["arrhenius_intercept_high"])
        b_in = float(f["arrhenius_slope_low"]) <= B_ <= float(f["arrhenius_slope_high"])
        cover_a += a_in
        cover_b += b_in
        cover_both += a_in and b_in
    # nominal 95% each; >= 45 of 50 fails by chance with probability ~4% for a correct 95% interval
    assert cover_a >= 45 and cover_b >= 45, (cover_a, cover_b)
    assert cover_both >= 43, cover_both


def test_fit_exact_law_with_many_walkers():
    T = np.linspace(0.010, 0.020, 6)
    ds = synthetic_cube(T, steps=[1000], walkers=200_000, seed=3)
    f = fits.fit_temperature(ds).isel(steps=0, batch_size=0, depth=0, width=0)
    # sigma of ln tau per cell ~ 1/sqrt(D) <~ 0.01 here: slope within ~1%, R^2 ~ 1
    assert float(f["arrhenius_slope"]) == pytest.approx(B_, rel=0.02)
    assert float(f["arrhenius_intercept"]) == pytest.approx(A, abs=0.1)
    assert float(f["arrhenius_r2"]) > 0.999
    assert float(f["linear_r2"]) < float(f["arrhenius_r2"])  # ln tau is not linear in T under this law
    assert float(f["linear_slope"]) < 0


def test_batch_fit_and_ratio_check():
    T = np.array([0.012, 0.014, 0.016, 0.024, 0.028, 0.032])
    Bs = [1, 2, 4]
    c = 0.3
    ds = synthetic_cube(T, steps=[1000], batch_size=Bs, walkers=4000, seed=9, ln_tau=arrhenius(A, B_, c))
    f = fits.fit_cube(ds)
    inside = ((f["batch_slope_low"] <= c) & (c <= f["batch_slope_high"])).values
    assert inside.mean() >= 5 / 6  # each 95%; 6 temperatures
    assert np.all(np.abs(f["batch_slope"].values - c) < 0.15)
    # T/B groups: 0.012/1 = 0.024/2, 0.014/1 = 0.028/2, 0.016/1 = 0.032/2 = ... -> tau differs a lot
    summ = tables.ratio_summary(f)
    assert summ["groups"] >= 3 and summ["rejected_at_1pct"] == summ["groups"]
    assert summ["median_spread"] > 2  # e-folds: T/B alone is far from setting tau under this law
    # a law where T/B alone sets tau: ln tau = -2 + 0.1 B / T -> the check does not reject
    ds2 = synthetic_cube(T, steps=[1000], batch_size=[1, 2], walkers=4000, seed=10,
                         ln_tau=lambda t, b, d, w: -2 + 0.1 * b / t)
    s2 = tables.ratio_summary(fits.fit_cube(ds2))
    assert s2["rejected_at_1pct"] == 0 and s2["median_spread"] < 0.2


def test_unbounded_cells_listed_with_reason():
    T = [0.004, 0.012, 0.016]
    ds = synthetic_cube(T, steps=[100, 1000], walkers=500, seed=1, not_run=[(2, 0, 0, 0)])
    f = fits.fit_cube(ds)
    rows = tables.unbounded_cells(f)
    reasons = {(r["T"], r["steps"]): r["reason"] for r in rows}
    assert reasons[(0.004, 100)].startswith("no escapes") and reasons[(0.004, 1000)].startswith("no escapes")
    assert reasons[(0.016, 1000)].startswith("not run") and reasons[(0.016, 100)].startswith("not run")
    lb = [r["tau_lower_bound"] for r in rows if r["T"] == 0.004 and r["steps"] == 1000][0]
    assert lb == pytest.approx(500 * 1000 / -np.log(0.05))  # one-sided bound, exposure / ~3
    # every cell is either fitted or listed
    n_cells = f["cell_status"].size
    assert int((f["cell_status"] == fits.BOUNDED).sum()) + len(rows) == n_cells
    text = tables.format_table(f)
    assert "no escapes (tau only bounded below) at T = 0.004" in text and "not run" in text
    j = json.loads(json.dumps(tables.to_json(f), allow_nan=False))
    assert len(j["unbounded"]) == len(rows)


def test_survival_from_cube_hist_matches_counts_at_budgets():
    T = np.linspace(0.010, 0.020, 4)
    ds = synthetic_cube(T, steps=[50, 100, 1000], batch_size=[1, 2], walkers=1500, seed=4, diverged=0)
    assert_survival_matches_counts(ds)


def test_memorylessness_in_fits():
    T = [0.012, 0.016]
    geo = fits.fit_cube(synthetic_cube(T, steps=[1000], walkers=5000, seed=2))
    assert set(np.unique(geo["rate_summary"].values)) == {0}
    # a 20-step delay before any escape, tau ~ 40 steps: the rate is a poor summary
    slow = fits.fit_cube(synthetic_cube([0.02], steps=[1000], walkers=5000, seed=2, delay=20,
                                        ln_tau=lambda t, b, d, w: np.log(40.0)))
    assert int(slow["rate_summary"].item()) == 1
    assert 15 <= float(slow["transient"].item()) <= 25


def test_exponential_only_and_t_range_leave_cells_out_with_reasons():
    # T = 0.012, 0.016: memoryless; T = 0.02 with a 20-step delay and tau ~ 40: not memoryless
    law = lambda t, b, d, w: np.log(40.0) if t > 0.019 else A + B_ / t  # noqa: E731
    ds = synthetic_cube([0.012, 0.016, 0.02], steps=[1000], walkers=4000, seed=3, ln_tau=law)
    ds2 = synthetic_cube([0.02], steps=[1000], walkers=4000, seed=3, delay=20, ln_tau=law)
    for v in ("n_escaped", "exposure", "n_walkers", "n_diverged", "escape_hist"):
        ds[v].loc[{"T": 0.02}] = ds2[v].sel(T=0.02)
    every = fits.fit_cube(ds)
    assert int(every["fit_n_cells"].item()) == 3
    only = fits.fit_cube(ds, exponential_only=True)
    assert int(only["fit_n_cells"].item()) == 2
    assert int(only["cell_status"].sel(T=0.02).item()) == fits.NON_EXPONENTIAL
    assert [r["T"] for r in tables.unbounded_cells(only)] == [0.02]
    win = fits.fit_cube(ds, t_range=(0.011, 0.017))
    assert int(win["fit_n_cells"].item()) == 2 and win.attrs["t_range"] == [0.011, 0.017]
    assert int(win["cell_status"].sel(T=0.02).item()) == fits.OUTSIDE_T


def test_write_and_open_fits_roundtrip(tmp_path):
    ds = synthetic_cube([0.01, 0.012, 0.014, 0.016], steps=[100, 1000], batch_size=[1, 2], walkers=800, seed=5)
    path = write_cube(ds, tmp_path / "c.zarr")
    f = fits.fit_cube(fits.load_cube(path))
    fits.write_fits(f, path)
    g = pipeline.open_fits(path)
    xr.testing.assert_allclose(f[["arrhenius_slope", "ln_tau", "batch_slope"]].load(),
                               g[["arrhenius_slope", "ln_tau", "batch_slope"]].load())
    assert g.attrs["conf"] == 0.95
    # the cube itself still opens, unchanged
    again = xr.open_zarr(path)
    assert set(again.data_vars) == set(ds.data_vars)
    np.testing.assert_array_equal(again["n_escaped"].values, ds["n_escaped"].values)
    fits.write_fits(f, path)  # re-running replaces the group
    with pytest.raises(FileNotFoundError):
        pipeline.open_fits(write_cube(ds, tmp_path / "d.zarr"))


def test_fit_command(tmp_path, capsys):
    ds = synthetic_cube([0.004, 0.01, 0.012, 0.014, 0.016], steps=[100, 1000], walkers=800, seed=6)
    path = write_cube(ds, tmp_path / "c.zarr")
    assert run_cli(["fit", path]) == 0
    out = capsys.readouterr().out
    assert "ln tau = a + b / T" in out and "Cells left out of every fit" in out
    assert (tmp_path / "c.zarr" / "fits" / "zarr.json").exists()
    assert run_cli(["fit", path, "--budget", "1000", "--format", "json", "--no-save"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert [r["steps"] for r in j["arrhenius"]] == [1000]
    assert j["arrhenius"][0]["n_cells"] == 4 and j["unbounded"][0]["T"] == 0.004
    with pytest.raises(InputError, match="--budget=500: not a step budget.*100, 1000"):
        run_cli(["fit", path, "--budget", "500"])
    assert run_cli(["fit", path, "--T-range", "0.01:0.014", "--no-save"]) == 0
    text = capsys.readouterr().out
    assert "0.01 <= T <= 0.014" in text and "left out: outside --T-range at T = 0.016" in text
    with pytest.raises(InputError, match="--T-range 0.02: expected LO:HI"):
        run_cli(["fit", path, "--T-range", "0.02"])
    with pytest.raises(InputError, match="missing.zarr: no such path$"):
        run_cli(["fit", str(tmp_path / "missing.zarr")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a Zarr store"):
        run_cli(["fit", str(tmp_path / "empty")])
    other = tmp_path / "other.zarr"
    xr.Dataset({"a": ("x", np.arange(3))}).to_zarr(other, zarr_format=3, consolidated=False)
    with pytest.raises(InputError, match=r"not an escape-sweep cube \(dims T, steps"):
        run_cli(["fit", str(other)])


def test_goodness_of_fit_rejects_a_wrong_law_and_widens_its_intervals():
    """chi^2/dof ~ 1 and no rejection when the law is right; a curved ln tau(1/T) is rejected
    (p < 0.01), its slope interval is widened by sqrt(chi^2/dof), and the tables say so."""
    T = [0.01, 0.011, 0.012, 0.014, 0.016, 0.018, 0.02]
    good = fits.fit_cube(synthetic_cube(T, steps=[100000], walkers=4000, seed=11))
    assert float(good["arrhenius_gof_p"].squeeze()) > 0.01
    assert 0.2 < float(good["arrhenius_chi2_dof"].squeeze()) < 3.0
    bent = synthetic_cube(T, steps=[100000], walkers=4000, seed=11, ln_tau=lambda T, B, d, w: -2 + 0.1 / T + 3e-4 / T**2)
    f = fits.fit_cube(bent)
    chi2_dof = float(f["arrhenius_chi2_dof"].squeeze())
    assert float(f["arrhenius_gof_p"].squeeze()) < 0.01 and chi2_dof > 5
    assert float(f["arrhenius_r2"].squeeze()) > 0.95  # R^2 alone would have called it a good fit
    raw = stats.wls(1 / np.asarray(T), f["ln_tau"].squeeze().values,
                    1 / f["ln_tau_sigma"].squeeze().values ** 2, absolute_sigma=True)
    width = float(f["arrhenius_slope_high"].squeeze() - f["arrhenius_slope_low"].squeeze())
    assert width > 2.0 * float(raw["slope_high"] - raw["slope_low"])
    text = tables.format_table(f)
    assert "chi^2/dof" in text and "rejected" in text


def test_early_deficit_cells_left_out_of_fits_and_counted(tmp_path, capsys):
    """Escapes that start 15 steps late with tau ~ 1000: at budget 100 exposure / escapes reads tau
    about 15% high (a delayed geometric: exact tau = 15 + 1 / q), so those cells are left out of the
    fits with their reason and counted; at budget 10000 (10 tau) the same walkers are honest and fitted."""
    law = lambda t, b, d, w: np.log(1000.0) + 0.02 / t - 0.02 / 0.015  # noqa: E731  tau 600..1500 steps
    ds = synthetic_cube([0.012, 0.014, 0.016, 0.018], steps=[100, 10000], walkers=20000, seed=4, delay=15, ln_tau=law)
    tau_hat = ds["exposure"] / ds["n_escaped"]
    exact = np.exp(xr.apply_ufunc(law, ds["T"], 1, 1.0, 0.1))
    assert float((tau_hat.sel(steps=100) / exact).min()) > 1.08  # the bias is real in these cells
    f = fits.fit_cube(ds)
    short = f["cell_status"].sel(steps=100).values
    assert (short == fits.EARLY).all(), short
    assert (f["cell_status"].sel(steps=10000).values == fits.BOUNDED).all()
    assert int(f["fit_n_cells"].sel(steps=100).item()) == 0 and int(f["fit_n_cells"].sel(steps=10000).item()) == 4
    assert float(f["early_bias"].sel(steps=100).min()) > 0.08
    text = tables.format_table(f)
    assert "Cells left out of every fit: 4 (4 left out: early deficit" in text
    assert "early deficit: escapes in the first steps are rarer" in text
    # the stored fits keep their variables grouped by fit (Zarr lists arrays unordered)
    path = write_cube(ds, tmp_path / "c.zarr")
    fits.write_fits(f, path)
    names = list(pipeline.open_fits(path).data_vars)
    i = names.index("arrhenius_slope")
    assert names[i:i + 9] == [f"arrhenius_{k}" for k in fits._FIT_KEYS]
    assert names[i + 9:i + 11] == ["fit_n_cells", "fit_n_unbounded"]
    assert names.index("linear_slope") > names.index("fit_T_max") and names[0] == "tau_source"


def test_fit_summary_by_default_and_every_row_with_all(tmp_path, capsys):
    """`fit` prints the fits that have data and counts the rest; `--all` prints every row."""
    ds = synthetic_cube([0.004, 0.005, 0.012, 0.014, 0.016, 0.018], steps=[100, 1000], batch_size=[1, 2, 4, 8],
                        walkers=400, seed=9, ln_tau=arrhenius(-2.0, 0.1, 2.0))
    path = write_cube(ds, tmp_path / "c.zarr")
    assert run_cli(["fit", path, "--no-save"]) == 0
    short = capsys.readouterr().out
    assert run_cli(["fit", path, "--no-save", "--all"]) == 0
    full = capsys.readouterr().out
    assert len(short.splitlines()) < len(full.splitlines())
    n = fits.fit_cube(ds)["fit_n_cells"].values
    empty = int((n < 2).sum())
    assert 0 < empty < n.size
    assert f"  {empty} slices without a fit (fewer than 2 cells; --all lists them)" in short
    # each family's table lists exactly the slices with a fit; --all lists them all
    assert short.count("\n  100  ") + short.count("\n 1000  ") == 2 * int((n >= 2).sum())
    assert full.count("\n  100  ") + full.count("\n 1000  ") >= 2 * n.size
    assert "fits with >= 2 cells (table: --all)" in short and "ln tau = a + b B  at fixed T\n" in full
