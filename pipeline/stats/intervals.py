"""Confidence intervals for escape statistics: Wilson and Clopper-Pearson for P(escape), exact
chi-square bounds for the censored exponential rate D / E and the escape time E / D.

Conventions: k escaped of n walkers; D escapes observed over an exposure E of walker-steps;
two-sided intervals at confidence `conf` (0.95 by default). Vectorised, no I/O, no xarray.
"""

from __future__ import annotations

import numpy as np


def _chi2_ppf(q: float, df) -> np.ndarray:
    """scipy's chi2.ppf(q, df), evaluated once per distinct df: counts repeat (a million tiny
    cells hold few distinct escape counts), and the quantile is the costly part of a chunk write."""
    from scipy.stats import chi2

    df = np.asarray(df, dtype=float)
    u, inv = np.unique(df, return_inverse=True)
    return np.asarray(chi2.ppf(q, u), dtype=float)[inv].reshape(df.shape)


def _norm_ppf(q: float) -> float:
    from scipy.stats import norm  # lazily: scipy.stats costs 0.25 s of start-up

    return float(norm.ppf(q))


def wilson(k, n, conf: float = 0.95):
    """Wilson score interval for a binomial proportion: (p_hat, low, high); NaN where n == 0.

    p_hat = k/n; centre (p + z^2/2n) / (1 + z^2/n); half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z = _norm_ppf(0.5 + conf / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        lo = np.where(k == 0, 0.0, np.clip(centre - half, 0, 1))
        hi = np.where(k == n, 1.0, np.clip(centre + half, 0, 1))
    bad = n <= 0
    return tuple(np.where(bad, np.nan, a) for a in (p, lo, hi))


def censored_rate(d, exposure, conf: float = 0.95):
    """Censored exponential MLE of the escape rate per step, rate = D / E, with exact
    chi-square (Poisson) bounds: low = chi2(a/2; 2D) / 2E, high = chi2(1 - a/2; 2D + 2) / 2E.

    Where D == 0 the rate is 0, low is 0 and high is the one-sided bound chi2(conf; 2) / 2E
    (= -ln(1 - conf) / E, about 3 / E at 95%). NaN where E == 0.
    """
    d = np.asarray(d, dtype=float)
    e = np.asarray(exposure, dtype=float)
    a = 1 - conf
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = d / e
        lo = np.where(d > 0, _chi2_ppf(a / 2, 2 * np.maximum(d, 1)) / (2 * e), 0.0)
        hi = np.where(d > 0, _chi2_ppf(1 - a / 2, 2 * d + 2), _chi2_ppf(conf, 2)) / (2 * e)
    bad = ~(e > 0)
    return tuple(np.where(bad, np.nan, x) for x in (rate, lo, hi))


def log10_escape_time(d, exposure, conf: float = 0.95):
    """log10 of the mean escape time tau = E / D (steps) with bounds from `censored_rate`.

    Where D == 0: value NaN, low = log10 of the one-sided lower bound on tau (about E / 3), high +inf.
    """
    rate, lo, hi = censored_rate(d, exposure, conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(rate > 0, -np.log10(rate), np.nan)
        low = -np.log10(hi)
        high = np.where(lo > 0, -np.log10(lo), np.inf)
    bad = np.isnan(rate)
    return tuple(np.where(bad, np.nan, x) for x in (value, low, high))

def _z(conf: float) -> float:
    if not 0 < conf < 1:
        raise ValueError(f"conf={conf!r}: must be strictly between 0 and 1")
    return _norm_ppf(0.5 + conf / 2)


def clopper_pearson(k, n, conf: float = 0.95):
    """Exact (Clopper-Pearson) interval for a binomial proportion: (p_hat, low, high).

    low = Beta(a/2; k, n - k + 1) (0 where k == 0), high = Beta(1 - a/2; k + 1, n - k) (1 where k == n);
    NaN where n <= 0.
    """
    from scipy.stats import beta

    _z(conf)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    a = 1 - conf
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        lo = np.where(k > 0, beta.ppf(a / 2, np.maximum(k, 1), np.maximum(n - k + 1, 1)), 0.0)
        hi = np.where(k < n, beta.ppf(1 - a / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    bad = ~(n > 0) | (k < 0) | (k > n)
    return tuple(np.where(bad, np.nan, x) for x in (p, lo, hi))


def escape_time(d, exposure, conf: float = 0.95):
    """Censored exponential (geometric) MLE of the mean escape time tau = E / D (steps) with exact
    chi-square bounds: low = 2E / chi2(1 - a/2; 2D + 2), high = 2E / chi2(a/2; 2D).

    Where D == 0 the MLE is unbounded: tau NaN, low the one-sided bound 2E / chi2(conf; 2)
    (= E / -ln(1 - conf), about E / 3 at 95%), high +inf. NaN everywhere where E == 0.
    Same convention as `log10_escape_time` (which is log10 of these three numbers).
    """
    rate, lo, hi = censored_rate(d, exposure, conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(rate > 0, 1.0 / rate, np.nan)
        low = 1.0 / hi
        high = np.where(lo > 0, 1.0 / lo, np.inf)
    bad = np.isnan(rate)
    return tuple(np.where(bad, np.nan, x) for x in (tau, low, high))


def tau_bounded(d, exposure):
    """True where the escape time has a finite two-sided interval: D > 0 and 0 < E < inf."""
    d = np.asarray(d, dtype=float)
    e = np.asarray(exposure, dtype=float)
    return (d > 0) & (e > 0) & np.isfinite(e)


def ln_escape_time(d, exposure, conf: float = 0.95):
    """ln tau with its chi-square bounds and an equivalent standard error in log space:
    (ln_tau, ln_low, ln_high, sigma), sigma = (ln high - ln low) / (2 z). NaN where not `tau_bounded`.

    sigma ~ 1/sqrt(D) for many escapes; it is what the fits weigh cells by (w = 1/sigma^2).
    """
    tau, lo, hi = escape_time(d, exposure, conf)
    ok = tau_bounded(d, exposure)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_tau, ln_lo, ln_hi = np.log(tau), np.log(lo), np.log(hi)
        sigma = (ln_hi - ln_lo) / (2 * _z(conf))
    return tuple(np.where(ok, x, np.nan) for x in (ln_tau, ln_lo, ln_hi, sigma))
