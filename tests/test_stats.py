"""pipeline.stats against hand-worked numbers and independent scipy computations (small cases)."""

import math

import numpy as np
import pytest
from scipy import optimize, stats as st

from pipeline import stats
from pipeline.sweep.partition import histogram_edges
from pipeline.sweep.task import summarize

Z = 1.959963984540054  # normal 97.5% point


# ---------------------------------------------------------------- proportions


def test_wilson_hand_values():
    # n = 10: k = 0, 1, 10 (D = 0, D = 1, D = N) worked from the score formula by hand
    z2 = Z * Z
    hi0 = (z2 / 10) / (1 + z2 / 10)  # k = 0: centre = half = (z^2 / 2n) / (1 + z^2/n)
    p, lo, hi = stats.wilson([0, 1, 10], [10, 10, 10])
    np.testing.assert_allclose(p, [0, 0.1, 1])
    np.testing.assert_allclose(lo, [0, 0.017876, 1 - hi0], atol=2e-6)
    np.testing.assert_allclose(hi, [hi0, 0.404150, 1], atol=2e-6)
    assert hi0 == pytest.approx(0.277533, abs=1e-6)
    assert np.isnan(stats.wilson(0, 0)[0])


def test_clopper_pearson_against_binomial_tails():
    # bounds solve the binomial tail equations (found here with brentq, not the beta quantile)
    p, lo, hi = stats.clopper_pearson([0, 1, 10], [10, 10, 10])
    np.testing.assert_allclose(p, [0, 0.1, 1])
    assert lo[0] == 0 and hi[2] == 1
    assert hi[0] == pytest.approx(1 - 0.025 ** 0.1, rel=1e-9)  # (1 - p)^10 = 0.025
    assert lo[2] == pytest.approx(0.025 ** 0.1, rel=1e-9)  # p^10 = 0.025
    assert lo[1] == pytest.approx(1 - 0.975 ** 0.1, rel=1e-9)  # 1 - (1 - p)^10 = 0.025
    hi1 = optimize.brentq(lambda q: (1 - q) ** 10 + 10 * q * (1 - q) ** 9 - 0.025, 1e-9, 1 - 1e-9)
    assert hi[1] == pytest.approx(hi1, rel=1e-9)
    assert hi[1] == pytest.approx(0.445016, abs=1e-6)
    assert all(np.isnan(x) for x in stats.clopper_pearson(3, 0))


# ---------------------------------------------------------------- escape rate / time


def _poisson_bounds(d, conf=0.95):
    """Exact Poisson mean interval by root finding on the Poisson cdf."""
    a = 1 - conf
    hi = optimize.brentq(lambda m: st.poisson.cdf(d, m) - a / 2, 1e-12, 1e4)
    lo = 0.0 if d == 0 else optimize.brentq(lambda m: st.poisson.sf(d - 1, m) - a / 2, 1e-12, 1e4)
    return lo, hi


@pytest.mark.parametrize("d, e", [(1, 1000), (5, 15), (40, 123456)])
def test_censored_rate_and_time_chi_square_bounds(d, e):
    mlo, mhi = _poisson_bounds(d)
    rate, rlo, rhi = stats.censored_rate(d, e)
    assert rate == pytest.approx(d / e)
    assert rlo == pytest.approx(mlo / e, rel=1e-7)
    assert rhi == pytest.approx(mhi / e, rel=1e-7)
    tau, tlo, thi = stats.escape_time(d, e)
    assert tau == pytest.approx(e / d)
    assert tlo == pytest.approx(e / mhi, rel=1e-7) and thi == pytest.approx(e / mlo, rel=1e-7)
    lt, ltlo, lthi = stats.log10_escape_time(d, e)
    assert lt == pytest.approx(math.log10(e / d)) and ltlo == pytest.approx(math.log10(e / mhi), rel=1e-7)
    ln, lnlo, lnhi, sig = stats.ln_escape_time(d, e)
    assert sig == pytest.approx((math.log(mhi) - math.log(mlo)) / (2 * Z), rel=1e-6)
    assert stats.tau_bounded(d, e)


def test_d1_hand_numbers():
    # D = 1: lower rate = -ln(0.975) / E; upper from 1 - e^{-x/2}(1 + x/2) = 0.975 (chi2, 4 dof)
    x = optimize.brentq(lambda x: 1 - math.exp(-x / 2) * (1 + x / 2) - 0.975, 1, 50)
    rate, lo, hi = stats.censored_rate(1, 1000)
    assert lo == pytest.approx(-math.log(0.975) / 1000, rel=1e-9)
    assert hi == pytest.approx(x / 2000, rel=1e-9)
    assert x == pytest.approx(11.1433, abs=1e-4)


def test_zero_escapes_one_sided_bound():
    # nothing escaped: tau >= E / -ln(0.05) ~ E / 3 (one-sided 95%), no upper bound, no estimate
    tau, lo, hi = stats.escape_time(0, 3000)
    assert np.isnan(tau) and hi == np.inf
    assert lo == pytest.approx(3000 / -math.log(0.05), rel=1e-9)
    assert lo == pytest.approx(1001.4, abs=0.1)
    rate, rlo, rhi = stats.censored_rate(0, 3000)
    assert rate == 0 and rlo == 0 and rhi == pytest.approx(-math.log(0.05) / 3000)
    lt, ltlo, lthi = stats.log10_escape_time(0, 3000)
    assert np.isnan(lt) and lthi == np.inf and ltlo == pytest.approx(math.log10(lo))
    assert not stats.tau_bounded(0, 3000)
    assert all(np.isnan(v) for v in stats.ln_escape_time(0, 3000))
    assert all(np.isnan(v) for v in stats.escape_time(0, 0))


def test_all_escaped_at_known_steps():
    # D = N: 4 walkers escaping at steps 2, 3, 3, 8 -> E = 16, tau = 4
    esc = np.array([2, 3, 3, 8])
    s = summarize(esc, [10], histogram_edges(10, [10]))
    assert s["n_escaped"][0] == 4 and s["exposure"][0] == 16
    tau, lo, hi = stats.escape_time(s["n_escaped"], s["exposure"])
    mlo, mhi = _poisson_bounds(4)
    assert tau[0] == 4 and lo[0] == pytest.approx(16 / mhi) and hi[0] == pytest.approx(16 / mlo)


def test_vectorised_shapes():
    d = np.array([[0, 1], [5, 7]])
    e = np.array([[100, 100], [0, 50]])
    for f in (stats.censored_rate, stats.escape_time, stats.log10_escape_time):
        out = f(d, e)
        assert all(o.shape == (2, 2) for o in out)
        assert np.isnan(out[0][1, 0])  # E = 0


# ---------------------------------------------------------------- grouped median


def test_grouped_median_small():
    edges = np.arange(1, 7)  # width-1 bins for steps 1..5
    assert stats.grouped_median([0, 2, 1, 0, 0], edges, 4) == 2  # 2nd smallest of (2, 2, 3, cens)
    assert stats.grouped_median([1, 0, 0, 0, 0], edges, 1) == 1  # D = N = 1
    assert np.isnan(stats.grouped_median([0, 2, 1, 0, 0], edges, 7))  # 3 of 7: fewer than half
    assert np.isnan(stats.grouped_median([0, 0, 0, 0, 0], edges, 3))  # D = 0
    # one wide bin [10, 20) holding 4 of 4 walkers: ranks spread over the bin, 2nd -> 10 + floor(1.5*10/4)
    assert stats.grouped_median([4], [10, 20], 4) == 13


# ---------------------------------------------------------------- Kaplan-Meier

# hand-worked censored sample: times 1 2 2+ 3 4+ 5 5 6+ (+ = censored)
KM_T = [1, 2, 2, 3, 4, 5, 5, 6]
KM_E = [1, 1, 0, 1, 0, 1, 1, 0]


def test_kaplan_meier_hand_worked():
    km = stats.kaplan_meier(KM_T, KM_E)
    np.testing.assert_array_equal(km.time, [1, 2, 3, 5])
    np.testing.assert_array_equal(km.n_risk, [8, 7, 5, 3])
    np.testing.assert_array_equal(km.n_event, [1, 1, 1, 2])
    np.testing.assert_allclose(km.survival, [7 / 8, 0.75, 0.6, 0.2])
    g = np.cumsum([1 / (8 * 7), 1 / (7 * 6), 1 / (5 * 4), 2 / (3 * 1)])
    np.testing.assert_allclose(g, [0.017857, 0.041667, 0.091667, 0.758333], atol=1e-6)
    np.testing.assert_allclose(km.variance, [0.013672, 0.0234375, 0.033, 0.0303333], atol=1e-6)
    assert km.median() == 5
    assert km.at(0) == 1 and km.at(2.5) == 0.75 and km.at(10) == pytest.approx(0.2)
    # log-log band at t = 3 by hand: se = sqrt(0.091667)/|ln 0.6| = 0.592700, exp(z se) = 3.19525,
    # S^3.19525 = 0.195496, S^(1/3.19525) = 0.852254
    assert km.low[2] == pytest.approx(0.195496, abs=2e-6)
    assert km.high[2] == pytest.approx(0.852254, abs=2e-6)
    plain = stats.kaplan_meier(KM_T, KM_E, band="plain")
    assert plain.low[2] == pytest.approx(0.6 - Z * math.sqrt(0.033), abs=1e-6)
    assert plain.high[2] == pytest.approx(0.6 + Z * math.sqrt(0.033), abs=1e-6)


def test_kaplan_meier_edge_cases():
    none = stats.kaplan_meier([3, 3, 3], [0, 0, 0])  # D = 0: no event times, S = 1 throughout
    assert none.time.size == 0 and none.at(5) == 1 and np.isnan(none.median())
    allx = stats.kaplan_meier([1, 2], [1, 1])  # D = N
    np.testing.assert_allclose(allx.survival, [0.5, 0.0])
    np.testing.assert_allclose(allx.variance, [0.125, 0.0])  # 0.25 * 1/(2*1); 0 once S = 0
    assert allx.median() == 1
    one = stats.kaplan_meier([4, 9, 9], [1, 0, 0])  # D = 1
    assert one.survival[0] == pytest.approx(2 / 3) and one.variance[0] == pytest.approx(4 / 9 * 1 / 6)


def test_survival_from_steps_matches_hist_and_counts():
    rng = np.random.default_rng(5)
    esc = rng.geometric(0.004, 3000)
    esc[esc > 700] = -1
    esc[:7] = -2  # diverged
    budgets = [50, 200, 700]
    edges = histogram_edges(700, budgets)
    s = summarize(esc, budgets, edges)
    for b, k in zip(budgets, s["n_escaped"]):
        sv = stats.survival_from_hist(s["hist"], edges, s["n_walkers"], s["n_diverged"], budget=b)
        assert sv.time[-1] == b
        n_ok = s["n_walkers"] - s["n_diverged"]
        assert sv.survival[-1] == pytest.approx(1 - k / n_ok, abs=1e-12)
        assert sv.variance[-1] == pytest.approx(sv.survival[-1] * (1 - sv.survival[-1]) / n_ok, rel=1e-9)
        km = stats.survival_from_steps(esc, b)
        assert km.at(b) == pytest.approx(sv.survival[-1], abs=1e-12)
        # exact agreement at every bin end
        np.testing.assert_allclose(km.at(sv.time), sv.survival, atol=1e-12)


def test_survival_from_hist_vectorised_and_degenerate():
    edges = np.array([1, 2, 3, 5])
    hist = np.array([[0, 0, 0], [2, 1, 1], [1, 0, 0]])
    sv = stats.survival_from_hist(hist, edges, [5, 4, 0])
    np.testing.assert_array_equal(sv.time, [1, 2, 4])
    np.testing.assert_allclose(sv.survival[0], 1)  # D = 0
    np.testing.assert_allclose(sv.survival[1], [0.5, 0.25, 0.0])  # D = N
    np.testing.assert_allclose(sv.variance[1], [0.0625, 0.046875, 0.0])
    assert np.all(np.isnan(sv.survival[2]))  # no walkers
    np.testing.assert_allclose(sv.low[0], 1)


# ---------------------------------------------------------------- weighted least squares


def test_wls_unweighted_against_linregress():
    x = np.array([0.0, 1, 2, 3, 5])
    y = np.array([1.0, 2.9, 5.2, 6.8, 11.1])
    f = stats.wls(x, y)
    r = st.linregress(x, y)
    t = st.t.ppf(0.975, 3)
    assert f["slope"] == pytest.approx(r.slope) and f["intercept"] == pytest.approx(r.intercept)
    assert f["slope_se"] == pytest.approx(r.stderr) and f["intercept_se"] == pytest.approx(r.intercept_stderr)
    assert f["slope_high"] == pytest.approx(r.slope + t * r.stderr)
    assert f["r2"] == pytest.approx(r.rvalue ** 2)
    assert f["n"] == 5 and f["dof"] == 3


def test_wls_weighted_hand_case():
    # x = 0 1 2, y = 0 1 3, w = 1 2 1 (worked by hand): slope 3/2, intercept -1/4,
    # residuals 1/4 -1/4 1/4, chi2 = 1/4, s^2 = 1/4, var b = s^2/Sxx = 1/8, var a = s^2 (1/W + xm^2/Sxx) = 3/16
    f = stats.wls([0, 1, 2], [0, 1, 3], [1, 2, 1])
    assert f["slope"] == pytest.approx(1.5) and f["intercept"] == pytest.approx(-0.25)
    assert f["chi2"] == pytest.approx(0.25)
    assert f["slope_se"] == pytest.approx(math.sqrt(1 / 8)) and f["intercept_se"] == pytest.approx(math.sqrt(3 / 16))
    t = 12.706204736174698  # t(0.975, 1 dof)
    assert f["slope_low"] == pytest.approx(1.5 - t * math.sqrt(1 / 8))
    assert f["intercept_high"] == pytest.approx(-0.25 + t * math.sqrt(3 / 16))
    assert f["r2"] == pytest.approx(18 / 19)
    assert f["cov"] == pytest.approx(-0.25 * 1 / 2)
    fa = stats.wls([0, 1, 2], [0, 1, 3], [1, 2, 1], absolute_sigma=True)  # known sigmas: s^2 = 1, z
    assert fa["slope_se"] == pytest.approx(math.sqrt(0.5)) and fa["slope_high"] == pytest.approx(1.5 + Z * math.sqrt(0.5))


def test_wls_vectorised_masks_and_small_n():
    x = np.array([[0, 1, 2, np.nan], [0, 1, 2, 3], [0, 1, 5, 5]])
    y = np.array([[0, 1, 3, 7.0], [1, 3, 5, 7], [2, 4, np.nan, np.nan]])
    w = np.array([[1, 2, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1.0]])
    f = stats.wls(x, y, w)
    assert f["slope"][0] == pytest.approx(1.5)  # nan x dropped -> the hand case
    assert f["slope"][1] == pytest.approx(2) and f["intercept"][1] == pytest.approx(1)  # w = 0 dropped, exact line
    assert f["slope_se"][1] == pytest.approx(0, abs=1e-12)
    assert f["slope"][2] == pytest.approx(2) and np.isnan(f["slope_low"][2])  # n = 2: exact, no interval
    assert list(f["n"]) == [3, 3, 2]
    g = stats.wls([1.0], [2.0])
    assert np.isnan(g["slope"]) and g["n"] == 1


# ---------------------------------------------------------------- memorylessness


def _cell(esc, budget=2000):
    edges = histogram_edges(budget, [budget])
    s = summarize(esc, [budget], edges)
    return s, edges


def test_memoryless_geometric_is_exponential():
    rng = np.random.default_rng(11)
    esc = rng.geometric(0.002, 20000)
    esc[esc > 2000] = -1
    s, edges = _cell(esc)
    m = stats.memorylessness(s["hist"], edges, s["n_walkers"])
    assert m["verdict"] == 0
    assert m["transient"] <= 16 and m["transient_fraction"] < 0.02
    # hazard within its standard error (sqrt(D)/E) of the truth 0.002, and matching the cube's D/E
    D, E = s["n_escaped"][0], s["exposure"][0]
    assert abs(m["rate"] - 0.002) < 4 * math.sqrt(D) / E
    assert m["rate"] == pytest.approx(D / E, rel=2e-3)  # histogram exposure ~ cube exposure


def test_memoryless_detects_transient_and_mixture():
    rng = np.random.default_rng(12)
    delayed = 30 + rng.geometric(0.005, 20000)  # nobody escapes in the first 30 steps
    delayed[delayed > 2000] = -1
    s, edges = _cell(delayed)
    m = stats.memorylessness(s["hist"], edges, s["n_walkers"])
    assert 25 <= m["transient"] <= 40 and m["tail_rate"] == pytest.approx(0.005, rel=0.05)
    assert m["verdict"] == 0  # a transient holding no escapes leaves the rate a fair summary
    mix = np.concatenate([rng.geometric(0.05, 10000), rng.geometric(0.0005, 10000)])
    mix[mix > 2000] = -1
    s, edges = _cell(mix)
    m = stats.memorylessness(s["hist"], edges, s["n_walkers"])
    assert m["verdict"] == 1  # half the walkers leave fast: quote the median
    assert m["transient_fraction"] > 0.4 or np.isnan(m["transient"])
    few = np.full(1000, -1)
    few[:5] = [3, 50, 70, 900, 1500]
    s, edges = _cell(few)
    m = stats.memorylessness(s["hist"], edges, s["n_walkers"])
    assert m["verdict"] == 2 and m["n_events"] == 5
    assert stats.VERDICTS[int(m["verdict"])] == "too few escapes"


def test_early_deficit_against_the_exact_solver():
    """A real walker sample at T = 0.02, B = 1 (exact tau ~ 143 steps): at budget 100 (about tau)
    exposure / escapes reads tau high because escapes start late; the check flags it and its bias
    estimate matches the exact bias from the solver's P(escape by n) within the sampling error. At
    budget 1000 (7 tau) the estimate is honest and the cell is not flagged."""
    import pipeline
    from pipeline.model.markov import markov_cell

    budgets = (100, 1000)
    r = markov_cell(0.02, 1, 1.0, 0.1, budgets=tuple(range(1, 1001)))
    S = np.concatenate([[1.0], 1.0 - np.asarray(r.p_escape)])  # S(n), n = 0..1000
    # E[exposure] / E[escapes] per walker over a budget b, against the exact mean
    exact_bias = {b: S[:b].sum() / (1.0 - S[b]) / r.mfpt - 1.0 for b in budgets}
    assert exact_bias[100] > 0.05 and abs(exact_bias[1000]) < 0.005
    edges = histogram_edges(1000, budgets)
    esc = pipeline.simulate(T=0.02, steps=1000, batch_size=1, depth=1.0, width=0.1, walkers=20000, seed=3)
    c = summarize(esc, budgets, edges)
    short = stats.early_deficit(c["hist"], edges, c["n_walkers"], c["n_diverged"], budget=100)
    long = stats.early_deficit(c["hist"], edges, c["n_walkers"], c["n_diverged"], budget=1000)
    assert bool(short["flag"]) and not bool(long["flag"])
    assert float(short["p_value"]) < 1e-6  # escapes before the split are far rarer than one hazard says
    for m, b in ((short, 100), (long, 1000)):
        assert abs(float(m["bias"]) - exact_bias[b]) < 4 * float(m["bias_se"]) + 0.01, (b, m, exact_bias[b])
    # the sample's own tau_hat at budget 100 is high by about the exact bias (not noise)
    tau_hat = c["exposure"][0] / c["n_escaped"][0]
    assert tau_hat / r.mfpt - 1 > exact_bias[100] - 4 / np.sqrt(c["n_escaped"][0])
    # memorylessness reports such cells as "early deficit", not "exponential"
    assert int(stats.memorylessness(c["hist"], edges, c["n_walkers"], budget=100)["verdict"]) == stats.EARLY_DEFICIT
    assert int(stats.memorylessness(c["hist"], edges, c["n_walkers"], budget=1000)["verdict"]) != stats.EARLY_DEFICIT


def test_early_deficit_not_flagged_for_a_constant_hazard():
    """Geometric escapes from step 1 (no late start): over 40 samples at a short budget the check
    flags at most a few (its one-sided level is 1%, and it also needs a bias above 2%)."""
    rng = np.random.default_rng(11)
    edges = histogram_edges(1000, (100, 1000))
    flags = 0
    for _ in range(40):
        esc = rng.geometric(1 / 150.0, 5000).astype(np.int64)
        esc[esc > 1000] = -1
        c = summarize(esc, (100, 1000), edges)
        flags += int(stats.early_deficit(c["hist"], edges, c["n_walkers"], budget=100)["flag"])
    assert flags <= 2
