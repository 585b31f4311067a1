"""Estimators for escape statistics. Vectorised over numpy arrays; no I/O, no xarray.

Conventions: k escaped of n walkers; D escapes observed over an exposure E of walker-steps;
two-sided intervals at confidence `conf` (0.95 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    if hist.shape[-1] == 0:  # no bins at all: nothing escaped that could be counted
        return np.full(np.broadcast_shapes(hist.shape[:-1], n.shape), np.nan)
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


# ---------------------------------------------------------------------------------------------
# Proportions, escape times
# ---------------------------------------------------------------------------------------------


def _z(conf: float) -> float:
    if not 0 < conf < 1:
        raise ValueError(f"conf={conf!r}: must be strictly between 0 and 1")
    return float(_st.norm.ppf(0.5 + conf / 2))


def clopper_pearson(k, n, conf: float = 0.95):
    """Exact (Clopper-Pearson) interval for a binomial proportion: (p_hat, low, high).

    low = Beta(a/2; k, n - k + 1) (0 where k == 0), high = Beta(1 - a/2; k + 1, n - k) (1 where k == n);
    NaN where n <= 0.
    """
    _z(conf)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    a = 1 - conf
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        lo = np.where(k > 0, _st.beta.ppf(a / 2, np.maximum(k, 1), np.maximum(n - k + 1, 1)), 0.0)
        hi = np.where(k < n, _st.beta.ppf(1 - a / 2, k + 1, np.maximum(n - k, 1)), 1.0)
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


# ---------------------------------------------------------------------------------------------
# Survival (Kaplan-Meier with Greenwood variance)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Survival:
    """A Kaplan-Meier curve. The last axis runs over event times (or histogram bins).

    time: step n after which `survival` holds (S(n) = P(escape step > n));
    n_risk: walkers still in the pit just before the events at `time` (or at the bin's start);
    n_event: escapes at `time` (in the bin); survival: S; variance: Greenwood's variance of S;
    low/high: pointwise band at `conf` (`band` = "log-log" (Kalbfleisch-Prentice) or "plain").
    """

    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray
    survival: np.ndarray
    variance: np.ndarray
    low: np.ndarray
    high: np.ndarray
    conf: float = 0.95
    band: str = "log-log"

    def at(self, n):
        """S at step n (a right-continuous step function; 1 before the first time)."""
        idx = np.searchsorted(self.time, n, side="right") - 1
        if self.time.size == 0:
            return np.ones(self.survival.shape[:-1] + np.shape(idx))
        return np.where(idx >= 0, self.survival[..., np.maximum(idx, 0)], 1.0)

    def median(self):
        """Smallest time with S <= 1/2 (NaN where S never reaches 1/2)."""
        below = self.survival <= 0.5
        if self.time.size == 0:
            return np.full(self.survival.shape[:-1], np.nan)
        i = np.argmax(below, axis=-1)
        t = np.broadcast_to(self.time, self.survival.shape)
        value = np.take_along_axis(t, i[..., None], -1)[..., 0].astype(float)
        return np.where(below.any(axis=-1), value, np.nan)


def _km_from_counts(time, n_risk, n_event, conf, band) -> Survival:
    z = _z(conf)
    n_risk = np.asarray(n_risk, dtype=float)
    n_event = np.asarray(n_event, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(n_risk > 0, 1.0 - n_event / n_risk, 1.0)
        s = np.cumprod(factor, axis=-1)
        # Greenwood: Var S(t) = S(t)^2 sum_{t_i <= t} d_i / (n_i (n_i - d_i)); 0 once S = 0
        term = np.where((n_risk > n_event) & (n_event > 0), n_event / (n_risk * (n_risk - n_event)), 0.0)
        gsum = np.cumsum(term, axis=-1)
        var = s * s * gsum
        if band == "plain":
            half = z * np.sqrt(var)
            lo, hi = np.clip(s - half, 0, 1), np.clip(s + half, 0, 1)
        elif band == "log-log":
            # theta = ln(-ln S), se(theta) = sqrt(gsum) / |ln S|; S^{exp(+-z se)}
            ls = np.log(s)
            se = np.sqrt(gsum) / np.abs(ls)
            inner = (s > 0) & (s < 1)
            lo = np.where(inner, s ** np.exp(z * se), s)
            hi = np.where(inner, s ** np.exp(-z * se), s)
        else:
            raise ValueError(f"band={band!r}: must be 'log-log' or 'plain'")
    return Survival(time=np.asarray(time), n_risk=n_risk, n_event=n_event, survival=s, variance=var,
                    low=lo, high=hi, conf=conf, band=band)


def kaplan_meier(times, events, conf: float = 0.95, band: str = "log-log") -> Survival:
    """Kaplan-Meier estimate from per-walker times and event flags (True = escaped at that time,
    False = censored then). Censorings tied with events count as at risk for those events.

    `time` holds the distinct event times; S(t) = prod_{t_i <= t} (1 - d_i / n_i).
    """
    t = np.asarray(times, dtype=float).ravel()
    e = np.asarray(events, dtype=bool).ravel()
    if t.shape != e.shape:
        raise ValueError(f"times and events differ in length: {t.size} vs {e.size}")
    if np.any(~np.isfinite(t)):
        raise ValueError("times must be finite")
    ts = np.sort(t)
    te = np.sort(t[e])
    ut = np.unique(te)
    n_risk = t.size - np.searchsorted(ts, ut, side="left")
    n_event = np.searchsorted(te, ut, side="right") - np.searchsorted(te, ut, side="left")
    return _km_from_counts(ut, n_risk, n_event, conf, band)


def survival_from_steps(esc, budget: int, conf: float = 0.95, band: str = "log-log") -> Survival:
    """Kaplan-Meier curve of one cell's walkers from `simulate`-style escape steps (-1 = not
    escaped, -2 = diverged), censored at `budget`. Diverged walkers leave the risk set at step 0
    (as they leave the exposure): they are neither escapes nor survivors."""
    esc = np.asarray(esc)
    ok = esc != -2
    escaped = (esc > 0) & (esc <= budget)
    times = np.where(escaped, esc, budget)[ok]
    return kaplan_meier(times, escaped[ok], conf, band)


def survival_from_hist(hist, edges, n_walkers, n_diverged=0, budget=None, conf: float = 0.95,
                       band: str = "log-log") -> Survival:
    """Kaplan-Meier curve from binned escape steps, censored at `budget` (default: the last edge - 1).

    hist: (..., nbins) counts of escapes in [edges[i], edges[i+1]); n_walkers, n_diverged: (...).
    Only bins ending at or before the budget are used (bins never straddle a budget in a cube);
    walkers not binned there are censored at the budget, diverged ones leave at step 0.
    `time` is each bin's last step (edges[i+1] - 1): S there is exact,
    = 1 - (escapes up to then) / (n_walkers - n_diverged), and Greenwood reduces to S(1 - S) / n.
    """
    hist = np.asarray(hist, dtype=float)
    edges = np.asarray(edges, dtype=np.int64)
    if edges.ndim != 1 or edges.size != hist.shape[-1] + 1:
        raise ValueError(f"edges must be 1-D with nbins + 1 = {hist.shape[-1] + 1} values, got shape {edges.shape}")
    last = edges[1:] - 1
    if budget is None:
        budget = int(last[-1]) if last.size else 0
    keep = last <= budget
    hist, last = hist[..., keep], last[keep]
    n = np.asarray(n_walkers, dtype=float) - np.asarray(n_diverged, dtype=float)
    before = np.cumsum(hist, axis=-1) - hist
    n_risk = n[..., None] - before
    sv = _km_from_counts(last, n_risk, hist, conf, band)
    if np.any(n <= 0):
        bad = (n <= 0)[..., None]
        sv = Survival(**{f: (np.where(bad, np.nan, getattr(sv, f)) if f in ("survival", "variance", "low", "high")
                             else getattr(sv, f)) for f in Survival.__dataclass_fields__})
    return sv


# ---------------------------------------------------------------------------------------------
# Weighted least squares
# ---------------------------------------------------------------------------------------------


def wls(x, y, w=None, conf: float = 0.95, absolute_sigma: bool = False) -> dict:
    """Weighted least-squares line y = intercept + slope x, vectorised over leading axes (points on
    the last axis). Points with a non-finite x, y or w, or w <= 0, are left out.

    w are inverse variances (1/sigma^2). By default (absolute_sigma=False) the weights are
    relative: the covariance is scaled by s^2 = sum w r^2 / (n - 2) and intervals use Student's t
    with n - 2 degrees of freedom; with absolute_sigma=True the sigmas are taken as known (normal z).

    Returns a dict of arrays: slope, intercept, slope_se, intercept_se, slope_low/high,
    intercept_low/high, cov (slope, intercept covariance), r2 (weighted), chi2 (sum w r^2),
    n (points used), dof (n - 2). With n == 2 the line is exact and intervals are NaN;
    with n < 2 everything is NaN.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones(np.broadcast_shapes(x.shape, y.shape)) if w is None else np.asarray(w, dtype=float)
    x, y, w = np.broadcast_arrays(x, y, w)
    use = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & (w > 0)
    w = np.where(use, w, 0.0)
    x = np.where(use, x, 0.0)
    y = np.where(use, y, 0.0)
    n = use.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        W = w.sum(axis=-1)
        xm = (w * x).sum(axis=-1) / W
        ym = (w * y).sum(axis=-1) / W
        dx = np.where(use, x - xm[..., None], 0.0)
        dy = np.where(use, y - ym[..., None], 0.0)
        sxx = (w * dx * dx).sum(axis=-1)
        sxy = (w * dx * dy).sum(axis=-1)
        syy = (w * dy * dy).sum(axis=-1)
        slope = sxy / sxx
        intercept = ym - slope * xm
        r = np.where(use, y - intercept[..., None] - slope[..., None] * x, 0.0)
        chi2 = (w * r * r).sum(axis=-1)
        dof = n - 2
        if absolute_sigma:
            s2 = np.ones_like(chi2)
            q = np.full(chi2.shape, _z(conf))
        else:
            s2 = np.where(dof > 0, chi2 / np.maximum(dof, 1), np.nan)
            q = np.where(dof > 0, _st.t.ppf(0.5 + conf / 2, np.maximum(dof, 1)), np.nan)
        var_b = s2 / sxx
        var_a = s2 * (1.0 / W + xm * xm / sxx)
        cov = -s2 * xm / sxx
        r2 = np.where(syy > 0, 1.0 - chi2 / syy, np.nan)
    few = (n < 2) | ~(sxx > 0)
    sb, sa = np.sqrt(var_b), np.sqrt(var_a)
    out = dict(slope=slope, intercept=intercept, slope_se=sb, intercept_se=sa,
               slope_low=slope - q * sb, slope_high=slope + q * sb,
               intercept_low=intercept - q * sa, intercept_high=intercept + q * sa,
               cov=cov, r2=r2, chi2=chi2)
    out = {k: np.where(few, np.nan, v) for k, v in out.items()}
    out["n"] = n
    out["dof"] = np.maximum(dof, 0)
    return out


# ---------------------------------------------------------------------------------------------
# Memorylessness of the escape-step distribution
# ---------------------------------------------------------------------------------------------

VERDICTS = {0: "exponential", 1: "non-exponential", 2: "too few escapes"}


def _bin_exposure(d, r, w):
    """Walker-steps spent in a bin of `w` steps by `r` walkers at risk of which `d` escape in it,
    with the escapers' steps from a constant within-bin hazard (exact for width-1 bins)."""
    d, r, w = (np.asarray(a, dtype=float) for a in (d, r, w))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        frac = np.clip(np.where(r > 0, d / np.maximum(r, 1), 0.0), 0.0, 1 - 1e-15)
        lq = np.log1p(-frac) / w  # ln(1 - q), q the per-step hazard inside the bin
        q = -np.expm1(lq)
        # E[K | K <= w] for K ~ Geometric(q) on 1, 2, ...: 1/q - w (1-q)^w / (1 - (1-q)^w)
        m = 1.0 / q - w * np.exp(w * lq) / -np.expm1(w * lq)
        m = np.where((w <= 1) | ~np.isfinite(m) | (q * w < 1e-6), np.where(w <= 1, 1.0, (w + 1) / 2.0), m)
    return (r - d) * w + d * np.clip(m, 1.0, w)


def _lr_constant_hazard(d, x):
    """Likelihood-ratio statistic of per-segment geometric hazards d/x against one common hazard."""
    D, X = d.sum(), x.sum()
    q = D / X

    def ll(k, n, p):
        with np.errstate(invalid="ignore", divide="ignore"):
            a = np.where(k > 0, k * np.log(p), 0.0)
            b = np.where(n - k > 0, (n - k) * np.log1p(-np.minimum(p, 1 - 1e-15)), 0.0)
        return a + b

    qs = np.where(x > 0, d / np.maximum(x, 1e-300), 0.0)
    return max(0.0, 2.0 * float(np.sum(ll(d, x, qs)) - np.sum(ll(d, x, q))))


def memorylessness(hist, edges, n_walkers, n_diverged=0, budget=None, *, alpha: float = 0.01,
                   min_events: int = 20, max_groups: int = 8, max_transient_fraction: float = 0.25,
                   max_rate_ratio: float = 1.25) -> dict:
    """Is the escape step memoryless (log S(n) linear in n) after a transient?

    For each cell (leading axes of `hist`), candidate start steps t0 are scanned upwards; the
    escapes after t0 (up to the budget) are split into up to `max_groups` segments of about equal
    counts (>= 10 each) and a likelihood-ratio test of one constant per-step hazard against one
    hazard per segment is made (chi-square, segments - 1 dof). The first t0 with p >= `alpha`
    ends the transient. Needs >= `min_events` escapes after t0.

    Returns a dict of arrays over the leading axes:
      transient           steps before the constant-hazard regime (t0 - 1); NaN if none found
      transient_fraction  fraction of walkers that escaped during the transient
      tail_rate           per-step hazard after the transient (MLE)
      rate                per-step hazard over the whole budget (D / exposure, from the histogram)
      rate_ratio          rate / tail_rate (1 for a memoryless process)
      p_value             test of the chosen tail (or of the whole range where none passed)
      n_events            escapes within the budget
      verdict             0 exponential (the rate summarises the cell), 1 non-exponential
                          (quote the median escape time), 2 too few escapes to tell
                          (`VERDICTS` maps codes to words)
    A cell is "exponential" when a constant-hazard tail exists, the transient holds at most
    `max_transient_fraction` of the walkers, and rate and tail rate agree within `max_rate_ratio`.
    """
    hist = np.asarray(hist, dtype=float)
    edges = np.asarray(edges, dtype=np.int64)
    lead = hist.shape[:-1]
    nw = np.broadcast_to(np.asarray(n_walkers, dtype=float), lead)
    nd = np.broadcast_to(np.asarray(n_diverged, dtype=float), lead)
    last = edges[1:] - 1
    if budget is None:
        budget = int(last[-1])
    keep = last <= budget
    hb = hist[..., keep]
    lo = edges[:-1][keep].astype(float)
    width = (edges[1:] - edges[:-1])[keep].astype(float)
    names = ("transient", "transient_fraction", "tail_rate", "rate", "rate_ratio", "p_value")
    out = {k: np.full(lead, np.nan) for k in names}
    out["n_events"] = np.zeros(lead, np.int64)
    out["verdict"] = np.full(lead, 2, np.int8)
    for idx in np.ndindex(*lead):
        d = hb[idx]
        n = nw[idx] - nd[idx]
        D = d.sum()
        out["n_events"][idx] = int(D)
        if n <= 0 or d.size == 0:
            continue
        r = n - (np.cumsum(d) - d)
        x = _bin_exposure(d, r, width)
        X = x.sum()
        out["rate"][idx] = D / X if X > 0 else np.nan
        if D < min_events:
            continue
        # candidate start bins: the first 16 bins, then where the escaped fraction steps by 2.5%
        cum_before = np.cumsum(d) - d
        tail_events = D - cum_before
        frac_steps = np.floor(cum_before / D * 40)
        cand = np.flatnonzero((np.arange(d.size) < 16) | (np.diff(frac_steps, prepend=-1) > 0))
        cand = cand[tail_events[cand] >= min_events]
        chosen, p_first = None, np.nan
        for k in cand:
            dt, xt = d[k:], x[k:]
            Dt = dt.sum()
            g = int(min(max_groups, Dt // 10))
            if g < 2:
                break
            seg = np.minimum((np.cumsum(dt) - dt) * g // Dt, g - 1).astype(np.int64)
            ds = np.bincount(seg, weights=dt, minlength=g)
            xs = np.bincount(seg, weights=xt, minlength=g)
            nz = xs > 0
            ds, xs = ds[nz], xs[nz]
            if ds.size < 2:
                break
            p = float(_st.chi2.sf(_lr_constant_hazard(ds, xs), ds.size - 1))
            if np.isnan(p_first):
                p_first = p
            if p >= alpha:
                chosen = (k, p, Dt / xt.sum())
                break
        if chosen is None:
            out["p_value"][idx] = p_first
            out["verdict"][idx] = 1
            continue
        k, p, tail = chosen
        out["transient"][idx] = lo[k] - 1
        out["transient_fraction"][idx] = cum_before[k] / n
        out["tail_rate"][idx] = tail
        out["rate_ratio"][idx] = out["rate"][idx] / tail
        out["p_value"][idx] = p
        ok = (cum_before[k] / n <= max_transient_fraction) and (1 / max_rate_ratio <= out["rate_ratio"][idx] <= max_rate_ratio)
        out["verdict"][idx] = 0 if ok else 1
    return out
