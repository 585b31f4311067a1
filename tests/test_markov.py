"""The exact mean-first-passage-time solver (pipeline.markov) against Monte Carlo and itself.

Statistical checks compare the solver with the numba kernel, with tolerances from the Monte
Carlo sample size only (exact chi-square bounds of the censored rate; binomial standard errors).
"""

import math
import warnings

import numpy as np
import pytest

from pipeline import simulate
from pipeline.model.landscape import find_pit
from pipeline.model import markov
from pipeline.model.markov import (
    GridError, MarkovResult, W_FLOOR, binomial_weights, make_grid, markov_cell, richardson, solve_grid,
    solve_seconds, step_images, transition_matrix,
)
from pipeline.stats import censored_rate
from pipeline.sweep.task import walker_steps

PIT = find_pit(1.0, 0.1)


def mc_check(T, B, walkers, budget, seed):
    """Run the kernel; return (tau_lo, tau_hi) from the 99% censored-rate bounds and the
    escape proportions at 100 and 1000 steps."""
    esc = simulate(T, budget, B, 1.0, 0.1, walkers, seed=seed)
    d = int((esc > 0).sum())
    exposure = walker_steps(esc, budget)
    _, lo, hi = censored_rate(d, exposure, conf=0.99)
    props = {n: float(((esc > 0) & (esc <= n)).mean()) for n in (100, 1000)}
    return 1.0 / float(hi), 1.0 / float(lo), props, d / walkers


# (T, B, walkers, budget): budgets >= 15 tau, so (almost) every walker escapes and
# exposure / escaped is the plain mean escape time.
MC_CELLS = [(0.015, 1, 100_000, 50_000), (0.0175, 1, 100_000, 10_000),
            (0.02, 1, 100_000, 10_000), (0.02, 2, 100_000, 100_000),
            pytest.param(0.04, 16, 20_000, 1000, marks=pytest.mark.slow)]  # B = 16: the fitted chain


@pytest.mark.parametrize("T,B,walkers,budget", MC_CELLS)
def test_agrees_with_monte_carlo(T, B, walkers, budget):
    r = markov_cell(T, B, 1.0, 0.1, budgets=(100, 1000))
    tau_lo, tau_hi, props, frac = mc_check(T, B, walkers, budget, seed=20260707)
    assert frac > 0.9999
    assert r.mfpt_rel_error < 1e-3
    assert tau_lo <= r.mfpt <= tau_hi, (r.mfpt, tau_lo, tau_hi)
    for n, p_mc in props.items():
        se = math.sqrt(max(p_mc * (1 - p_mc), 1.0 / walkers) / walkers)
        p = r.p_escape[r.budgets.index(n)]
        assert abs(p - p_mc) <= 4 * se, (n, p, p_mc, se)


def test_batch_256_runs_and_reports_dropped_mass():
    k, p, dropped = binomial_weights(256)
    assert 0 < dropped < 1e-10 and len(k) < 257 and abs(p.sum() - 1) < 1e-12
    r = markov_cell(0.05, 256, 1.0, 0.1, budgets=(10, 20))
    assert r.dropped_mass == dropped
    assert math.isfinite(r.mfpt) and r.mfpt_rel_error < 1e-3
    # tau ~ 15 here, so Monte Carlo is cheap: the same 99% check as above
    tau_lo, tau_hi, _, frac = mc_check(0.05, 256, 20_000, 2000, seed=5)
    assert frac == 1.0 and tau_lo <= r.mfpt <= tau_hi


@pytest.mark.slow
@pytest.mark.parametrize("T,B", [(0.01, 1), (0.012, 2), (0.01, 4)])
def test_halving_the_spacing_stays_within_the_error_estimate(T, B):
    # Redo the reported estimator on a grid of half the spacing: it moves by less than the
    # reported error. Raw tau_n is reported with |D|/3 only when the last two differences shrank
    # by 2.8..5.7x, so if the next one shrinks by >= 2.8x too it is <= |D|/2.8 = 1.07 x the
    # estimate; the extrapolated R_n = tau_n + D/3 is reported with |R_n - R_(n/2)|, and R
    # converges faster than tau. 1.5x leaves room for the ratio's scatter (3.4..4.5 seen).
    r = markov_cell(T, B, 1.0, 0.1)
    assert r.mfpt_rel_error < 1e-3
    n = r.n_nodes - 1
    t_half, t_n, t_2n = (solve_grid(T, B, 1.0, 0.1, m)[0] for m in (n // 2, n, 2 * n))
    assert solve_grid(T, B, 1.0, 0.1, 2 * n)[1] == 2 * n + 1
    if r.mfpt == pytest.approx(t_n, rel=1e-10):
        change = abs(t_2n / t_n - 1)
    else:
        r_n, r_2n = t_n + (t_n - t_half) / 3, t_2n + (t_2n - t_n) / 3
        assert r.mfpt == pytest.approx(r_n, rel=1e-10)
        change = abs(r_2n / r_n - 1)
    assert change <= 1.5 * r.mfpt_rel_error, (change, r)


def test_log_tau_is_smooth_and_decreasing_in_T():
    u = np.linspace(50.0, 125.0, 16)  # 1/T, T from 0.02 down to 0.008
    log_tau = np.array([math.log(markov_cell(1 / x, 1, 1.0, 0.1).mfpt) for x in u])
    d = np.diff(log_tau)
    assert np.all(d > 0)  # strictly decreasing in T
    # second differences small against first: the slope d ln(tau) / d(1/T) changes by at most
    # ~14% between neighbouring intervals (the bump is real: the pit bottom goes unstable for
    # SGD at T = 2 / curvature = 0.01); a numerical kink would show as a jump of O(1)
    assert np.max(np.abs(np.diff(d)) / d[1:]) < 0.25
    assert 18 < log_tau[-1] < 21 and 4 < log_tau[0] < 6  # tau ~ 2.4e8 at T = 0.008, ~143 at 0.02


def test_huge_tau_stays_accurate():
    # tau ~ 1e39 steps: the direct solve of (I - P) m = 1 is hopeless here; the renewal solve is
    # subtraction-free. Its answer must be positive, converge, and agree with the tail of P(escape).
    r = markov_cell(0.006, 4, 1.0, 0.1, budgets=(10_000, 100_000))
    assert 1e38 < r.mfpt < 1e41 and r.mfpt_rel_error < 1e-3
    # quasi-stationary regime: P(escape within n) grows by n / tau per step
    slope = (r.p_escape[1] - r.p_escape[0]) / 90_000
    assert slope * r.mfpt == pytest.approx(1.0, rel=1e-2)


def test_too_narrow_grid_is_widened_never_clipped():
    T, B = 0.01, 1
    k, p, _ = binomial_weights(B)
    x = make_grid(1.02, PIT.w_barrier, 500, PIT.w_start, 0.1)
    with pytest.raises(GridError) as exc:
        transition_matrix(x, T, k / B, p, 1.0, 0.1, PIT.w_barrier)
    assert isinstance(exc.value, ValueError) and exc.value.w_min < 1.02
    ref = markov_cell(T, B, 1.0, 0.1)
    r = markov_cell(T, B, 1.0, 0.1, w_lo=1.02)
    assert r.w_lo < 1.02
    nodes = make_grid(r.w_lo, r.w_barrier, r.n_nodes - 1, PIT.w_start, 0.1)
    assert step_images(nodes, T, k / B, 1.0, 0.1).min() >= r.w_lo
    assert abs(r.mfpt / ref.mfpt - 1) <= 2 * max(r.mfpt_rel_error, ref.mfpt_rel_error)
    # a chain that no grid can hold is refused with a clear error
    with pytest.raises(ValueError, match="W_FLOOR"):
        markov_cell(1.0, 1, 1.0, 0.1)
    assert W_FLOOR < PIT.w_start


def test_result_shape_and_budget_handling():
    r = markov_cell(0.02, 1, 1.0, 0.1, budgets=[1000, 1, 100, 10_000])
    assert isinstance(r, MarkovResult) and r.budgets == (1000, 1, 100, 10_000)
    assert r.p_escape.dtype == np.float64 and r.p_escape.shape == (4,)
    assert r.p_escape[1] == 0.0  # one step from the pit minimum never clears the barrier
    assert r.p_escape[2] < r.p_escape[0] < r.p_escape[3] <= 1.0
    assert r.w_start == PIT.w_start and r.w_barrier == PIT.w_barrier and r.w_lo < r.w_start
    assert markov_cell(0.02, 1, 1.0, 0.1).p_escape.shape == (0,)
    with pytest.raises(ValueError):
        r.p_escape[0] = 1.0  # read-only, like the frozen dataclass around it


def test_node_cap_warns_with_the_error_reached():
    with pytest.warns(RuntimeWarning, match="node cap"):
        r = markov_cell(0.015, 1, 1.0, 0.1, rel_tol=1e-9, max_nodes=2001)
    assert r.n_nodes == 2001 and 0 < r.mfpt_rel_error < 1e-2


def test_start_away_from_the_pit_minimum():
    # from just below the barrier, escape is quick or the walker falls back into the pit
    r = markov_cell(0.012, 1, 1.0, 0.1, budgets=(1, 100), start=PIT.w_barrier - 0.001)
    ref = markov_cell(0.012, 1, 1.0, 0.1)
    assert r.w_start == PIT.w_barrier - 0.001
    assert r.p_escape[0] == 0.5  # the l0 batch (k = 0) clears the barrier in one step
    assert 0.0 < r.mfpt < ref.mfpt


@pytest.mark.parametrize("kwargs,name", [
    (dict(T=0.0), "T"), (dict(T=float("nan")), "T"), (dict(batch_size=0), "batch_size"),
    (dict(batch_size=1.5), "batch_size"), (dict(depth=-1.0), "depth"), (dict(width="x"), "width"),
    (dict(budgets=(0,)), "budgets"), (dict(budgets=(10.5,)), "budgets"), (dict(budgets=5), "budgets"),
    (dict(rel_tol=0.0), "rel_tol"), (dict(start=float("inf")), "start"), (dict(start=1.3), "start"),
    (dict(w_lo=1.5), "w_lo"), (dict(max_nodes=10), "max_nodes"),
])
def test_input_validation_names_the_argument(kwargs, name):
    args = dict(T=0.02, batch_size=1, depth=1.0, width=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}="):
        markov_cell(**args)


def test_no_pit_is_an_input_error():
    with pytest.raises(ValueError, match="depth"):
        markov_cell(0.02, 1, 0.01, 1.0)


def test_escape_probabilities_are_exact_for_the_first_steps():
    # B = 1 from just below the barrier: P(escape at step 1) = 1/2 exactly (the l0 step), and
    # none of this depends on the grid (the first steps are enumerated, not interpolated)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = markov_cell(0.02, 1, 1.0, 0.1, budgets=(1, 2), start=PIT.w_barrier - 1e-6)
    assert r.p_escape[0] == 0.5 and r.p_escape[1] == 0.75


def test_error_estimate_is_conservative_where_convergence_is_not_monotone():
    # T = 0.025, B = 3: raw tau on 1000, 2000, 4000 intervals and, as the reference, 16000 intervals
    # (263 s to solve, so recorded here; solve_grid(0.025, 3, 1.0, 0.1, n)). The differences grow
    # (0.0050, then 0.0119): two grids reported 1.45e-5 against a true error of 5.8e-5. With the third
    # grid that markov_cell now always solves, the estimate covers the error of the reported tau.
    taus = [345.87270318997207, 345.8777259834501, 345.88966180820034]
    ref = 345.8979032605366
    v2, e2, _ = richardson(taus[:2])
    assert e2 < abs(v2 / ref - 1)  # the old two-grid estimate understates
    v3, e3, _ = richardson(taus)
    assert abs(v3 / ref - 1) <= e3
    # and markov_cell reports exactly that three-grid value (at least three levels, rel_tol 1e-3)
    r = markov_cell(0.025, 3, 1.0, 0.1)
    assert r.n_nodes >= 4001 and r.mfpt == pytest.approx(v3, rel=1e-12) and r.mfpt_rel_error == pytest.approx(e3)


@pytest.mark.slow  # ~35 s: the finer grid's LU fills in
def test_error_estimate_against_a_finer_grid():
    # B = 1, T = 0.025 (erratic convergence): the reported error bounds the distance to a grid
    # twice as fine as the finest used
    for T in (0.025,):
        r = markov_cell(T, 1, 1.0, 0.1)
        n = r.n_nodes - 1
        finer = solve_grid(T, 1, 1.0, 0.1, 2 * n)[0]
        assert abs(r.mfpt / finer - 1) <= r.mfpt_rel_error, (T, r, finer)


def test_ln_mfpt_is_finite_where_tau_overflows():
    # B = 64, T = 0.01: tau ~ e^953 ~ 1e414 steps, past float64. The solver works in log space: a
    # finite ln tau and a finite error, while mfpt is inf. (A 2001-node cap keeps this quick: the
    # error reached there is reported, not rel_tol; ln tau ~ 953 on finer grids too.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # node cap; dropped mass x tau
        r = markov_cell(0.01, 64, 1.0, 0.1, budgets=(100,), max_nodes=2001)
    assert math.isinf(r.mfpt) and 950 < r.ln_mfpt < 956
    assert math.isfinite(r.mfpt_rel_error) and 0 < r.mfpt_rel_error < 0.05
    assert 0.0 <= r.p_escape[0] < 1e-300


def test_exp_ln_mfpt_is_mfpt_where_finite():
    for T, B in ((0.02, 1), (0.012, 2), (0.03, 16)):
        r = markov_cell(T, B, 1.0, 0.1)
        assert math.isfinite(r.mfpt) and math.exp(r.ln_mfpt) == pytest.approx(r.mfpt, rel=1e-14)


def test_scaled_richardson_is_the_same_estimate():
    # where a tau overflows, the Richardson step runs on taus / tau_last: same value and error
    lt = np.log([345.87270318997207, 345.8777259834501, 345.88966180820034])
    v, ln_v, err, ex = markov._richardson_ln(lt)
    v2, ln_v2, err2, ex2 = markov._richardson_ln(lt + 1000.0)
    assert math.isinf(v2) and ln_v2 == pytest.approx(ln_v + 1000.0, abs=1e-12)
    assert err2 == pytest.approx(err, rel=1e-9) and ex2 == ex
    assert (v, err, ex) == richardson(np.exp(lt))
    taus = [1.0, 2.0, math.inf]
    assert markov._richardson_ln(np.log(taus[:2]) , taus[:2])[:2] == (2.0, math.log(2.0))


def dense_tau(P, a, e, st):
    """tau of the chain by a dense solve of (I - P) m = 1 (fine where tau is small)."""
    m = np.linalg.solve(np.eye(P.shape[0]) - P.toarray(), np.ones(P.shape[0]))
    return st.pre_time + float(e @ m)


@pytest.mark.parametrize("T,B,n", [(0.03, 16, 500), (0.05, 64, 250), (0.02, 2, 1000)])
def test_renewal_matches_a_dense_solve_of_the_same_chain(T, B, n):
    # the fitted chain (B >= 16) and the linear one: the renewal solve at the anchor against numpy's
    # dense LU of the plain system, where tau is small enough for the latter to be accurate
    cell = markov._make_cell(T, B, 1.0, 0.1, None, None)
    (tau, ln_tau), _ = cell.tau(n)
    x, P, a, e = cell.chain(n)
    assert cell.fit == (B >= 16) and (n in cell.lam) == cell.fit
    assert tau == pytest.approx(dense_tau(P, a, e, cell.st), rel=1e-9)
    assert ln_tau == pytest.approx(math.log(tau), rel=1e-15)


def test_fitted_chain_agrees_with_the_linear_one():
    # B = 16, T = 0.01: the linear chain (the solver before the fitted split; 8001 nodes, 11 s)
    # gave ln tau = 214.85471564821992 with estimated error 1.86e-4; the fitted chain (2001 nodes)
    # must agree within either estimate (it gives 214.85464, 7e-5 away)
    r = markov_cell(0.01, 16, 1.0, 0.1)
    assert r.mfpt_rel_error < 1e-3 and r.n_nodes <= 4001
    assert abs(r.ln_mfpt - 214.85471564821992) <= max(r.mfpt_rel_error, 1.86e-4)


def test_solve_seconds_grows_with_batch_and_falls_with_T():
    s = [solve_seconds(0.01, B, 1.0, 0.1) for B in (1, 2, 4, 8, 16, 32, 64)]
    assert all(v > 0 and math.isfinite(v) for v in s) and s[3] > s[0]
    # B = 64 (issue #16): 0.3..1.3 s measured since the W-order LU and the early stop of P(escape)
    assert 0.2 < solve_seconds(0.008, 64, 1.0, 0.1) < solve_seconds(0.02, 64, 1.0, 0.1) < 2.0


def test_cube_variables_carry_ln_mfpt_where_mfpt_overflows():
    # derived() of a method = "markov" chunk: ln_mfpt passes through, and the log10 escape times
    # come from it where mfpt is inf (one cell tau ~ e^953, one ordinary)
    from pipeline.sweep import cube

    ln = np.array([953.37, math.log(3820032.5)]).reshape(2, 1, 1, 1)
    counts = dict(n_walkers=np.zeros(ln.shape, np.int64), n_diverged=np.zeros(ln.shape, np.int64),
                  n_escaped=np.zeros(ln.shape + (1,), np.int64), exposure=np.zeros(ln.shape + (1,), np.int64),
                  hist=np.zeros(ln.shape + (3,), np.int64),
                  mfpt_rel_error=np.full(ln.shape, 1e-4), ln_mfpt=ln, markov_p_escape=np.zeros(ln.shape + (1,)))
    with np.errstate(over="ignore"):
        counts["mfpt"] = np.where(ln > 709, np.inf, np.exp(ln))
    out = cube.derived(counts, edges=(1, 2, 3, 4), method="markov")
    assert np.array_equal(out["ln_mfpt"], ln) and "ln_mfpt" in cube.MARKOV_VARIABLES
    lt = out["log10_escape_time"][:, 0, 0, 0, 0]
    assert lt[0] == pytest.approx(953.37 / math.log(10), rel=1e-14) and lt[1] == np.log10(3820032.5)
    assert out["log10_escape_time_low"][0, 0, 0, 0, 0] < lt[0] < out["log10_escape_time_high"][0, 0, 0, 0, 0]
    del counts["ln_mfpt"]  # counts from a cube made before ln_mfpt: log(mfpt)
    assert math.isinf(cube.derived(counts, edges=(1, 2, 3, 4), method="markov")["ln_mfpt"][0, 0, 0, 0])


class _CountingMatrix:
    """The chain's real sparse matrix, counting the P @ d steps the escape loop takes."""

    def __init__(self, P):
        self.P, self.steps = P, 0

    def __matmul__(self, d):
        self.steps += 1
        return self.P @ d


@pytest.mark.parametrize("T,B,underflows", [(0.01, 64, True), (0.01, 32, False), (0.02, 4, False)])
def test_early_stop_gives_the_bits_of_the_full_loop(T, B, underflows):
    # P(escape within n) with the early stop against the full loop on the same chain: bit for bit,
    # where every increment underflows to 0 (B = 64: tau ~ e^953; the stop comes after < 100 of the
    # ~3400 steps d takes to underflow), where they are tiny (B = 32: F ~ 1e-181) and where not
    cell = markov._make_cell(T, B, 1.0, 0.1, None, None)
    _x, P, a, e = cell.chain(cell.first_intervals() if cell.fit else 1000, lam=False)
    budgets = (1, 10, 100, 1000, 10_000, 100_000)
    early, full = _CountingMatrix(P), _CountingMatrix(P)
    p_early = markov._escape_within(early, a, e, budgets, cell.st)
    p_full = markov._escape_within(full, a, e, budgets, cell.st, early_stop=False)
    assert np.array_equal(p_early, p_full) and np.all(np.diff(p_full) >= 0)
    assert early.steps <= full.steps
    if underflows:
        assert np.all(p_full == 0.0) and early.steps < 100 < 3000 < full.steps
    else:
        assert p_full[-1] > 0.0


def test_w_order_lu_keeps_the_large_batch_values():
    # B = 64 (fitted chain, 4001 nodes): the W-order LU (issue #16) against the minimum-degree LU of
    # commit a1a7d2c, which gave ln tau = 953.3699719203335 (error 4.4e-4) and P(escape) = 0 exactly
    # (tau ~ e^953: every increment underflows, the case the early stop ends after a few steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dropped binomial mass x tau > rel_tol
        r = markov_cell(0.01, 64, 1.0, 0.1, budgets=(100, 100_000))
    assert r.n_nodes == 4001 and math.isinf(r.mfpt)
    assert r.ln_mfpt == pytest.approx(953.3699719203335, rel=1e-12)
    assert np.array_equal(r.p_escape, [0.0, 0.0])
