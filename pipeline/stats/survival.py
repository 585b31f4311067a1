"""Survival of walkers in the pit: Kaplan-Meier with Greenwood variance, from escape steps or
from the cube's escape-step histogram, and the grouped median escape step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .intervals import _z


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
