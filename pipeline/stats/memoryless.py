"""Is a cell's escape-step distribution exponential (memoryless)? A likelihood-ratio test of a
constant hazard per histogram bin against a free one, and a test of the early deficit: escapes in
the first steps are rarer than later (walkers start at the pit's bottom and need ~10-20 steps to
climb), so at a budget of about tau or less exposure / escapes reads tau high by roughly lag / budget."""

from __future__ import annotations

import numpy as np


VERDICTS = {0: "exponential", 1: "non-exponential", 2: "too few escapes", 3: "early deficit"}
EARLY_DEFICIT = 3
MIN_BIAS = 0.02  # early_deficit flags a cell whose tau = exposure / escapes reads high by more than this


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
      early_bias          `early_deficit`'s estimate of how high exposure / escapes reads tau
      verdict             0 exponential (the rate summarises the cell), 1 non-exponential
                          (quote the median escape time), 2 too few escapes to tell,
                          3 early deficit (`early_deficit` flags it: escapes start late and the
                          budget is too short for exposure / escapes to be tau)
                          (`VERDICTS` maps codes to words)
    A cell is "exponential" when a constant-hazard tail exists, the transient holds at most
    `max_transient_fraction` of the walkers, and rate and tail rate agree within `max_rate_ratio`.
    """
    lead, nw, nd, budget, hb, lo, width = _within_budget(hist, edges, n_walkers, n_diverged, budget)
    lo = lo.astype(float)
    names = ("transient", "transient_fraction", "tail_rate", "rate", "rate_ratio", "p_value")
    out = {k: np.full(lead, np.nan) for k in names}
    out["n_events"] = np.zeros(lead, np.int64)
    out["verdict"] = np.full(lead, 2, np.int8)
    early = early_deficit(hist, edges, n_walkers, n_diverged, budget, alpha=alpha, min_events=min_events)
    out["early_bias"] = early["bias"]
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
            p = float(_scipy_stats().chi2.sf(_lr_constant_hazard(ds, xs), ds.size - 1))
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
    out["verdict"][early["flag"] & (out["verdict"] != 2)] = EARLY_DEFICIT
    return out


def early_deficit(hist, edges, n_walkers, n_diverged=0, budget=None, *, alpha: float = 0.01,
                  min_bias: float = MIN_BIAS, min_events: int = 20) -> dict:
    """Does exposure / escapes over-state tau because escapes start late (an early deficit)?

    The budget is split at s = the first bin edge >= max(17, budget / 4): the late hazard
    q_late = D_late / X_late (escapes and walker-steps at steps >= s) is the constant-hazard
    regime; the estimate over the whole budget is q_all = D / X. With a late start the whole-budget
    rate is too low, and tau_hat = 1 / q_all too high. The honest reference is the restricted mean
    plus a geometric tail: tau_ref = X / n + S(budget) / q_late (exact for any hazard that is
    constant from s on), and

        bias = tau_hat / tau_ref - 1,   se(bias) ~ (1 + bias) sqrt(1/D_late - 1/D)

    (ln q_late and ln q_all share the late escapes). A cell is flagged when the one-sided
    lower bound bias - z_(1-alpha) se exceeds `min_bias`: the bias is then above min_bias at level
    alpha, so a handful of escapes cannot flag a cell by chance (few escapes mean a wide se).
    p_value: one-sided binomial test of D_early given D with probability X_early / X (the share
    of escapes before s under one constant hazard): small when escapes before s are too rare.

    Returns arrays over the leading axes of `hist`: bias, bias_se, lag (steps: s (1 - q_early /
    q_late), the delay a late start adds), p_value, split (s), flag (bool); NaN / False where the
    cell has fewer than `min_events` escapes, or fewer than 10 after s, or the budget is under 4 steps."""
    lead, nw, nd, budget, hb, lo, width = _within_budget(hist, edges, n_walkers, n_diverged, budget)
    names = ("bias", "bias_se", "lag", "p_value", "split")
    out = {k: np.full(lead, np.nan) for k in names}
    out["flag"] = np.zeros(lead, bool)
    if budget < 4 or lo.size < 2:
        return out
    split_at = int(lo[np.searchsorted(lo, max(17, budget / 4.0))]) if (lo >= max(17, budget / 4.0)).any() else None
    if split_at is None:
        return out
    late = lo >= split_at
    z = float(_scipy_stats().norm.ppf(1 - alpha))
    for idx in np.ndindex(*lead):
        d = hb[idx]
        n = nw[idx] - nd[idx]
        D = d.sum()
        if n <= 0 or D < min_events:
            continue
        r = n - (np.cumsum(d) - d)
        x = _bin_exposure(d, r, width)
        X, Dl, Xl = x.sum(), d[late].sum(), x[late].sum()
        if Dl < 10 or Xl <= 0 or X <= 0:
            continue
        q_late, q_all = Dl / Xl, D / X
        De, Xe = D - Dl, X - Xl
        S_b = (n - D) / n
        tau_ref = X / n + S_b / q_late
        bias = (1.0 / q_all) / tau_ref - 1.0
        se = (1.0 + bias) * np.sqrt(max(1.0 / Dl - 1.0 / D, 0.0))
        out["bias"][idx], out["bias_se"][idx] = bias, se
        out["lag"][idx] = split_at * (1.0 - (De / Xe) / q_late) if Xe > 0 else np.nan
        out["p_value"][idx] = float(_scipy_stats().binom.cdf(De, D, Xe / X))
        out["split"][idx] = split_at
        out["flag"][idx] = bool(bias - z * se > min_bias)  # the one-sided lower bound clears min_bias
    return out


def _scipy_stats():
    """scipy.stats, imported when first needed (it costs 0.25 s of every run's start-up)."""
    from scipy import stats

    return stats


def _within_budget(hist, edges, n_walkers, n_diverged, budget):
    """The histogram's bins that end within `budget` (default: all): leading shape, walkers and
    diverged broadcast to it, the budget, the kept counts, bin starts (int) and widths (float)."""
    hist = np.asarray(hist, dtype=float)
    edges = np.asarray(edges, dtype=np.int64)
    lead = hist.shape[:-1]
    nw = np.broadcast_to(np.asarray(n_walkers, dtype=float), lead)
    nd = np.broadcast_to(np.asarray(n_diverged, dtype=float), lead)
    last = edges[1:] - 1
    if budget is None:
        budget = int(last[-1])
    keep = last <= budget
    return lead, nw, nd, budget, hist[..., keep], edges[:-1][keep], (edges[1:] - edges[:-1])[keep].astype(float)
