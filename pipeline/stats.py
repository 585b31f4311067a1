"""Estimators for escape statistics. Vectorised over numpy arrays; no I/O, no xarray.

Conventions: k escaped of n walkers; D escapes observed over an exposure E of walker-steps;
two-sided intervals at confidence `conf` (0.95 by default).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _st


def wilson(k, n, conf: float = 0.95):
    """Wilson score interval for a binomial proportion: (p_hat, low, high); NaN where n == 0.

    p_hat = k/n; centre (p + z^2/2n) / (1 + z^2/n); half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z = _st.norm.ppf(0.5 + conf / 2)
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
        lo = np.where(d > 0, _st.chi2.ppf(a / 2, 2 * np.maximum(d, 1)) / (2 * e), 0.0)
        hi = np.where(d > 0, _st.chi2.ppf(1 - a / 2, 2 * d + 2), _st.chi2.ppf(conf, 2)) / (2 * e)
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


def grouped_median(hist, edges, n):
    """Median escape step from a histogram over integer bins [edges[i], edges[i+1]), for n walkers
    of which the un-binned ones are censored (or diverged): the ceil(n/2)-th smallest escape step,
    interpolated linearly inside its bin (exact for width-1 bins). NaN where fewer than half escaped.

    hist: (..., nbins); n: (...). Returns float array of shape (...).
    """
    hist = np.asarray(hist, dtype=np.int64)
    edges = np.asarray(edges, dtype=float)
    n = np.asarray(n, dtype=np.int64)
    m = (n + 1) // 2  # rank of the median walker (1-based)
    cum = np.cumsum(hist, axis=-1)
    ok = (n > 0) & (cum[..., -1] >= m) if hist.shape[-1] else np.zeros(n.shape, bool)
    i = np.sum(cum < m[..., None], axis=-1)
    i = np.minimum(i, max(hist.shape[-1] - 1, 0))
    before = np.take_along_axis(cum, i[..., None], -1)[..., 0] - np.take_along_axis(hist, i[..., None], -1)[..., 0]
    count = np.take_along_axis(hist, i[..., None], -1)[..., 0]
    lo, width = edges[i], edges[i + 1] - edges[i]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = lo + np.floor((m - before - 0.5) * width / np.maximum(count, 1))
    return np.where(ok, value, np.nan)
