"""Weighted least squares for fits of ln tau against 1/T, T or B, vectorised over leading axes."""

from __future__ import annotations

import numpy as np

from .intervals import _z


def wls(x, y, w=None, conf: float = 0.95, absolute_sigma: bool = False, scale_floor: bool = False) -> dict:
    """Weighted least-squares line y = intercept + slope x, vectorised over leading axes (points on
    the last axis). Points with a non-finite x, y or w, or w <= 0, are left out.

    w are inverse variances (1/sigma^2). By default (absolute_sigma=False) the weights are
    relative: the covariance is scaled by s^2 = sum w r^2 / (n - 2) and intervals use Student's t
    with n - 2 degrees of freedom; with absolute_sigma=True the sigmas are taken as known (normal z).
    scale_floor=True scales by max(1, s^2): known sigmas are a floor, a bad fit widens the intervals.

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
            if scale_floor:
                s2 = np.maximum(s2, 1.0)
            q = np.where(dof > 0, _scipy_stats().t.ppf(0.5 + conf / 2, np.maximum(dof, 1)), np.nan)
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


def _scipy_stats():
    """scipy.stats, imported when first needed (it costs 0.25 s of every run's start-up)."""
    from scipy import stats

    return stats
