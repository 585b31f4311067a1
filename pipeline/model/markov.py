"""Exact mean first-passage time of the escape chain of DESIGN.md section 1, without sampling.

The walker's W is a Markov chain: each step applies one of B + 1 maps
f_k(W) = W - T (g0(W) + (k / B) gpit(W)), k ~ Binomial(B, 1/2), and m(W) = 1 + sum_k p_k m(f_k(W)).
It is discretised on a grid (linear interpolation makes the grid itself a chain), solved by
renewal at an anchor node with a sparse M-matrix LU (accurate however large tau is), the first
steps enumerated exactly, P(escape within n) summed subtraction-free (stopped exactly once later
steps cannot change a bit of it), and the grid refined until a
Richardson error estimate meets rel_tol. DESIGN.md section 7 is the full design. No Dask, no I/O.

From batch size 16 on the split between nodes is exponentially fitted to the escape probability
(exact for exp(lam W) on each interval): ln tau grows ~B, the linear split's error ~B^2 h^2, and the
fitted chain reaches 1e-3 on ~8x fewer nodes; its LU keeps the nodes in W order, where the matrix
is a band (2-6x less fill than minimum degree at B = 64). tau is carried as ln tau (ln_mfpt), so it stays
finite past float64's 1e308 (up to ~1e600, where the escape probability h_s underflows even
scaled by 2^1000). `solve_seconds` is the calibrated cost model of one markov_cell call.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.special import gammaln, logsumexp

from .landscape import check_int, check_positive, find_pit, g0, gpit

WEIGHT_CUTOFF = 1e-16  # binomial weights below this are dropped (and their mass reported)
W_FLOOR = -2.0  # no grid reaches left of this: |g0| < 1e-6 there, the landscape is flat
DEFAULT_MAX_NODES = 16_400  # first level ~1000 nodes, so up to 5 levels (~16k nodes)
_FIRST_INTERVALS = 1000
_PATH_CAP = 1 << 14  # exact enumeration of the first steps: at most this many live paths
_LEFT_COARSENING = 4.0  # node spacing grows to this multiple, one pit width left of the minimum
_H_SCALE = 2.0**500  # right-hand side scale for the escape probability h (avoids underflow)
_ANCHOR_STEPS = 300
_ERRATIC_EXPANSION = 20.0  # max |f_k'| above which grid convergence is erratic: warn
_FIT_FROM_BATCH = 16  # from this batch size on, the exponentially fitted split (see _Cell.tau)
_FIT_PASSES = 2  # fitted solves on the first grid after its linear one: they give lam(W)
_FIT_FIRST_INTERVALS = 250  # first grid at B = 16, doubling with B up to 1000 (lam(W) must resolve h)
_MAX_FIT = 50.0  # |lam h| cap of the fitted split
_W_ORDER_FROM_BATCH = _FIT_FROM_BATCH  # from this batch size on, the LU keeps the nodes in W order
# (SuperLU NATURAL: the band fills in 2-6x less than minimum degree at B = 64). At B = 4..15 it would
# be 2-3x faster too (B = 8, T = 0.02: 1.9 -> 0.85 s) but change ln_mfpt's last bits (<= 4e-14):
# not done, so the linear chain keeps its bits; at B <= 2 minimum degree is faster.
_MIN_LEVELS = 3  # grids solved at least: with two, one difference is the whole error estimate, and
# convergence is not monotone at T >~ 0.02 (T = 0.025, B = 3: 1.45e-5 reported, 5.8e-5 true)


@dataclass(frozen=True)
class MarkovResult:
    """Mean escape time and escape probabilities of one (T, B, depth, width) cell, from the chain.

    mfpt: mean escape time tau from the start (steps); inf where it exceeds float range or
    escape is impossible. mfpt_rel_error: Richardson estimate of the relative discretisation
    error of mfpt (computed in log space, so finite also where mfpt overflows; nan only where
    escape is impossible). p_escape[i]: P(escape within budgets[i] steps).
    n_nodes: nodes of the finest grid used. dropped_mass: total binomial weight dropped
    (each dropped weight < 1e-16; the kept weights are renormalised). w_lo, w_barrier: the
    grid's ends; w_start: the start W_0. ln_mfpt: natural log of tau, finite wherever escape is
    possible (tau beyond 1e308 included); exp(ln_mfpt) == mfpt to rounding where mfpt is finite.
    """

    mfpt: float
    mfpt_rel_error: float
    budgets: tuple[int, ...]
    p_escape: np.ndarray = field(repr=False)
    n_nodes: int
    dropped_mass: float
    w_lo: float
    w_barrier: float
    w_start: float
    ln_mfpt: float


class GridError(ValueError):
    """A map sends a grid node (or a start path) left of the grid: the grid must be widened.
    `w_min` is the leftmost image. markov_cell catches it and widens; it never clips."""

    def __init__(self, w_min: float, w_lo: float):
        super().__init__(f"an image W = {w_min!r} lies left of the grid's end w_lo = {w_lo!r}")
        self.w_min = w_min


def binomial_weights(batch_size: int, cutoff: float = WEIGHT_CUTOFF):
    """Kept k values and their weights C(B,k) 2^-B (log space, renormalised to sum 1), and the
    dropped mass (sum of the weights < cutoff)."""
    B = int(batch_size)
    k = np.arange(B + 1)
    logp = gammaln(B + 1) - gammaln(k + 1) - gammaln(B - k + 1) - B * math.log(2.0)
    keep = logp >= math.log(cutoff)
    dropped = float(np.exp(logp[~keep]).sum())
    p = np.exp(logp[keep] - logsumexp(logp[keep]))
    return k[keep].astype(float), p, dropped


def step_images(w, T, kfrac, depth, width) -> np.ndarray:
    """f_k(w) = w - T (g0(w) + kfrac gpit(w)) for every w (rows) and kfrac = k/B (columns)."""
    w = np.asarray(w, dtype=float)
    return w[:, None] - T * (g0(w)[:, None] + np.asarray(kfrac)[None, :] * gpit(w, depth, width)[:, None])


def _default_w_lo(T, kfrac, depth, width, start, barrier) -> float:
    """Left end wide enough for every map: for W < 1 every map moves W right (g0, gpit < 0), so
    the leftmost image comes from W in [1, barrier] under the extreme k; sampled finely, less a
    margin of 1% of the span. The grid check then verifies it on the actual nodes."""
    w = np.linspace(min(1.0, barrier), barrier, 20001)
    ext = np.array([kfrac.min(), kfrac.max()])
    lo = min(float(step_images(w, T, ext, depth, width).min()), start)
    return lo - 0.01 * (barrier - lo)


def make_grid(w_lo, barrier, n_intervals, pit_min, width) -> np.ndarray:
    """Nodes on [w_lo, barrier]: spacing h right of the pit minimum, growing linearly to
    _LEFT_COARSENING * h over one pit width to its left (walkers only pass there)."""
    w = np.linspace(w_lo, barrier, 40001)
    spacing = 1.0 + (_LEFT_COARSENING - 1.0) * np.clip((pit_min - w) / width, 0.0, 1.0)
    dens = 1.0 / spacing
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(w))])
    x = np.interp(np.linspace(0.0, cdf[-1], int(n_intervals) + 1), cdf, w)
    x[0], x[-1] = w_lo, barrier
    return x


def _hat(x, y):
    """Linear-interpolation stencil of points y (all within [x[0], x[-1]]) on nodes x:
    left node j and the weight theta of node j + 1."""
    j = np.clip(np.searchsorted(x, y, side="right") - 1, 0, len(x) - 2)
    theta = (y - x[j]) / (x[j + 1] - x[j])
    return j, theta


def transition_matrix(x, T, kfrac, p, depth, width, barrier, lam=None):
    """Sparse chain on the nodes x: P[i, j] = sum of p_k over images f_k(x_i) <= barrier, split
    linearly between the two nodes around the image; a[i] = sum of p_k over images > barrier
    (one-step escape). Raises GridError (a ValueError) if any image lies left of x[0] (never clipped).

    lam (per interval, 1/W): exponentially fitted split instead, weight of node j + 1 =
    expm1(lam_j (y - x_j)) / expm1(lam_j (x_(j+1) - x_j)), exact for 1 and exp(lam W) on the
    interval; it tends to the linear split as the spacing shrinks (same limit chain)."""
    N = len(x)
    Y = step_images(x, T, kfrac, depth, width)
    y_min = float(Y.min())
    if not math.isfinite(y_min) or y_min < x[0]:
        raise GridError(y_min, float(x[0]))
    esc = Y > barrier
    pk = np.broadcast_to(p, Y.shape)
    a = np.where(esc, pk, 0.0).sum(axis=1)
    stay = ~esc
    rows = np.broadcast_to(np.arange(N, dtype=np.int32)[:, None], Y.shape)[stay]
    y, w = Y[stay], pk[stay]
    j, th = _hat(x, y)
    if lam is not None:
        z = np.clip(lam[j] * (x[j + 1] - x[j]), -_MAX_FIT, _MAX_FIT)
        tiny = np.abs(z) < 1e-8
        th = np.where(tiny, th, np.expm1(z * th) / np.where(tiny, 1.0, np.expm1(z)))
    P = sp.csr_matrix(
        (np.concatenate([w * (1.0 - th), w * th]),
         (np.concatenate([rows, rows]), np.concatenate([j, j + 1]).astype(np.int32))),
        shape=(N, N))
    P.sum_duplicates()
    return P, a


@dataclass
class _Start:
    """Exact first n0 steps from W_0: escape probability at each step 1..n0, the survivors'
    positions and weights after n0 steps, and sum_{j<n0} P(alive after j steps)."""

    n0: int
    esc: np.ndarray
    w: np.ndarray
    weight: np.ndarray
    pre_time: float


def enumerate_start(w0, T, kfrac, p, depth, width, barrier, cap=_PATH_CAP) -> _Start:
    """Enumerate every batch sequence for the first n0 steps (n0 as large as keeps at most
    `cap` distinct live paths, at least 1); equal positions are merged."""
    w = np.array([float(w0)])
    wt = np.array([1.0])
    esc, pre = [], 0.0
    while True:
        pre += wt.sum()
        Y = step_images(w, T, kfrac, depth, width).ravel()
        Wt = (wt[:, None] * p[None, :]).ravel()
        out = Y > barrier
        esc.append(Wt[out].sum())
        w, inv = np.unique(Y[~out], return_inverse=True)
        wt = np.bincount(inv.ravel(), weights=Wt[~out], minlength=len(w))
        if len(w) == 0 or len(w) * len(p) > cap or len(esc) >= 64:
            break
    return _Start(len(esc), np.array(esc), w, wt, pre)


def _deposit(x, w, weight) -> np.ndarray:
    """Spread point masses `weight` at positions w onto the nodes by linear interpolation."""
    if len(w) and (w.min() < x[0]):
        raise GridError(float(w.min()), float(x[0]))
    e = np.zeros(len(x))
    if len(w):
        j, th = _hat(x, w)
        np.add.at(e, j, weight * (1.0 - th))
        np.add.at(e, j + 1, weight * th)
    return e


def _anchor(P, e, steps=_ANCHOR_STEPS) -> int:
    """Most visited node over the first `steps` steps from the start distribution e."""
    PT = P.T.tocsr()
    v, occ = e.copy(), e.copy()
    for _ in range(steps):
        v = PT @ v
        occ += v
        s = v.sum()
        if s < 1e-300:
            break
    return int(np.argmax(occ))


def _solve_mmatrix(P, a, s, h_scale=_H_SCALE, ordering="MMD_AT_PLUS_A"):
    """Renewal at node s: returns l, h * scale, g (see the module docstring), the componentwise
    residual and log2(scale), from one LU of the killed M-matrix I - P0 (P with column s removed),
    diagonal pivots, additions only. scale = h_scale, or h_scale^2 where h_s < 1 / h_scale^2
    (then h alone is solved again with the same LU, so it keeps full precision down to ~1e-600).
    ordering: SuperLU's symmetric column ordering (permc_spec); "NATURAL" keeps the nodes in W
    order, where the matrix is a band (the fitted chain uses it: 2-6x less fill at B = 64)."""
    N = P.shape[0]
    P = P.tocsr()
    coo = P.tocoo()
    keep = coo.col != s
    P0 = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=(N, N))
    col_s = np.zeros(N)
    np.add.at(col_s, coo.row[~keep], coo.data[~keep])
    A = (sp.identity(N, format="csr") - P0)
    lu = spla.splu(A.T.tocsc(), permc_spec=ordering, diag_pivot_thresh=0.0,
                   options=dict(SymmetricMode=True))

    def solve(rhs):
        sol = lu.solve(rhs, trans="T")
        # componentwise residual r = (rhs + P0 sol) - sol, relative to the local size; refine if needed
        for _ in range(3):
            fwd = rhs + P0 @ sol
            scale = np.maximum(np.abs(fwd) + np.abs(sol), 1e-300)
            res = fwd - sol
            rel = np.max(np.abs(res) / scale)
            if not np.isfinite(rel) or rel < 1e-12:
                break
            sol = sol + lu.solve(res, trans="T")
        return sol, float(rel)

    sol, rel = solve(np.column_stack([np.ones(N), a * h_scale, col_s]))
    l, h, g = sol[:, 0], sol[:, 1], sol[:, 2]
    log2_scale = math.log2(h_scale)
    if h[s] * h_scale < 1.0:  # h_s below 1 / h_scale^2: scale h once more
        sol_h, rel_h = solve((a * h_scale * h_scale)[:, None])
        h, rel, log2_scale = sol_h[:, 0], max(rel, rel_h), 2.0 * log2_scale
    return l, h, g, rel, log2_scale


def _mfpt(P, a, st: _Start, e, s, out_h=None, ordering="MMD_AT_PLUS_A") -> tuple[float, float]:
    """(tau, ln tau) with tau = sum_{j<n0} P(alive after j) + sum_i e_i (l_i + g_i l_s / h_s).

    h is solved scaled by 2^500 (2^1000 where h_s < 2^-1000), and ln tau is summed in log space,
    so ln tau stays finite (and accurate) where tau itself overflows float64 (tau up to ~1e600)."""
    l, h, g, rel, log_scale = _solve_mmatrix(P, a, s, ordering=ordering)
    if not (np.all(l >= 0) and np.all(h >= 0) and np.all(g >= -1e-12)) or rel > 1e-8:
        raise RuntimeError(
            f"markov: the renewal solve lost accuracy (componentwise residual {rel:.2g}); "
            "the chain is too close to trapping at this T")
    if out_h is not None:
        out_h.append((h, log_scale))
    if h[s] <= 0.0:
        return math.inf, math.inf
    ratio = l[s] / h[s]
    first = st.pre_time + np.dot(e, l)
    eg = float(np.dot(e, g))
    if log_scale == 500 and ratio < math.ldexp(1.0, 523):  # tau in float range: summed directly
        tau = float(first + eg * math.ldexp(ratio, 500))
        if math.isfinite(tau):
            return tau, math.log(tau)
    ln_ms = math.log(l[s]) - math.log(h[s]) + log_scale * math.log(2.0)
    ln_tau = float(np.logaddexp(math.log(first), math.log(eg) + ln_ms if eg > 0.0 else -math.inf))
    return (math.exp(ln_tau) if ln_tau < 709.78 else math.inf), ln_tau


def _escape_within(P, a, e, budgets, st: _Start, early_stop=True) -> np.ndarray:
    """P(escape within n) for each n in budgets: exact for n <= n0, then
    F_n = sum_{j<=n0} esc_j + sum_{t=1}^{n-n0} e . d_t with d_1 = a, d_{t+1} = P d_t; once
    log(e . d_t) is linear in t (checked over 2K steps and one step) the rest is geometric.

    early_stop: stop once the remaining increments cannot change F (the same bits as the full
    loop). Rounded P d and e . d are monotone in d (P, e >= 0), so once d_(t+1) <= d_t
    componentwise every later d is <= d_t and every later increment <= z_t = e . d_t; if
    F + 2 M z_t == F (M the steps left) no later addition, nor the geometric tail (<= M z), moves
    F. Where tau ~ 1e400 every increment underflows to 0 and this ends the loop after ~50 steps
    instead of the ~3000 it takes d to underflow."""
    budgets = np.asarray(budgets, dtype=np.int64)
    out = np.zeros(len(budgets))
    if len(budgets) == 0:
        return out
    cum_exact = np.cumsum(st.esc)
    for i, n in enumerate(budgets):
        if n <= st.n0:
            out[i] = cum_exact[n - 1]
    need = budgets > st.n0
    if not need.any():
        return out
    todo = np.sort(np.unique(budgets[need] - st.n0))
    base = cum_exact[-1]
    res = {}
    K = 50
    z_hist = []
    d = a.copy()
    F = 0.0
    t = 0
    t_max = int(todo[-1])
    nxt = 0
    while t < t_max:
        t += 1
        z = float(np.dot(e, d))
        F += z
        z_hist.append(z)
        while nxt < len(todo) and todo[nxt] == t:
            res[int(todo[nxt])] = F
            nxt += 1
        if nxt == len(todo):
            break
        d_next = P @ d
        if early_stop and F + 2.0 * (t_max - t) * (z * (1.0 + 1e-9)) == F and np.all(d_next <= d):
            for n in todo[nxt:]:
                res[int(n)] = F
            break
        d = d_next
        if not d.any():
            for n in todo[nxt:]:
                res[int(n)] = F
            break
        if t >= 2 * K + 1 and t % K == 0:
            zs = [z_hist[t - 1], z_hist[t - 2], z_hist[t - 1 - K], z_hist[t - 1 - 2 * K]]
            if min(zs) > 0.0:
                L0, L1, LK, L2K = (math.log(v) for v in zs)
                slope = (L0 - LK) / K
                if abs(slope - (LK - L2K) / K) < 1e-11 and abs((L0 - L1) - slope) < 1e-11 and slope < 1e-12:
                    kappa = max(-slope, 0.0)
                    z_next = float(np.dot(e, d))  # increment of step t + 1
                    for n in todo[nxt:]:
                        M = int(n) - t
                        if kappa > 0.0:
                            tail = z_next * math.expm1(-kappa * M) / math.expm1(-kappa)
                        else:
                            tail = z_next * M
                        res[int(n)] = F + tail
                    break
    for i, n in enumerate(budgets):
        if n > st.n0:
            out[i] = base + res[int(n) - st.n0]
    return np.clip(out, 0.0, 1.0)


def _check_budgets(budgets) -> tuple[int, ...]:
    try:
        items = tuple(budgets)
    except TypeError:
        raise ValueError(f"budgets={budgets!r}: must be a sequence of integers >= 1") from None
    out = []
    for b in items:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            if isinstance(b, (float, np.floating)) and math.isfinite(b) and float(b).is_integer():
                b = int(b)
            else:
                raise ValueError(f"budgets={budgets!r}: must be a sequence of integers >= 1")
        if b < 1:
            raise ValueError(f"budgets={budgets!r}: must be a sequence of integers >= 1")
        out.append(int(b))
    return tuple(out)


def _check_finite(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: must be a finite number") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    return v


class _Cell:
    """One cell's fixed ingredients (weights, geometry, exact start) and its per-grid solves."""

    def __init__(self, T, B, depth, width, start, w_lo):
        self.T, self.B, self.depth, self.width = T, B, depth, width
        pit = find_pit(depth, width)
        self.pit_min, self.barrier = pit.w_start, pit.w_barrier
        self.start = pit.w_start if start is None else start
        k, self.p, self.dropped = binomial_weights(B)
        self.kfrac = k / B
        self.st = enumerate_start(self.start, T, self.kfrac, self.p, depth, width, self.barrier)
        lo = _default_w_lo(T, self.kfrac, depth, width, self.start, self.barrier) if w_lo is None else w_lo
        if len(self.st.w):
            lo = min(lo, float(self.st.w.min()))
        self.w_lo = min(lo, self.start)
        self.anchor_w = None
        self.fit = B >= _FIT_FROM_BATCH
        self.ordering = "NATURAL" if B >= _W_ORDER_FROM_BATCH else "MMD_AT_PLUS_A"
        self.lam = {}  # n_intervals -> fitted split rates of the chain solved there
        self.lam_w = None
        w = np.linspace(self.w_lo, self.barrier, 20001)
        ext = np.array([self.kfrac.min(), self.kfrac.max()])
        slopes = np.diff(step_images(w, T, ext, depth, width), axis=0) / np.diff(w)[:, None]
        self.expansion = float(np.abs(slopes).max())  # max |f_k'(W)|: > 1 means the maps expand
        if not self.w_lo >= W_FLOOR:
            raise ValueError(self._floor_message(self.w_lo))

    def _floor_message(self, w):
        return (f"T={self.T!r}, batch_size={self.B!r}: the grid would have to reach W = {w:.4g}, "
                f"left of W_FLOOR = {W_FLOOR} where the landscape is flat (|g0| < 1e-6); "
                "no grid holds this chain (T too large, or w_lo/start too far left)")

    def widen(self, w_min):
        """Move the left end past w_min (by 1% of the span); ValueError past W_FLOOR."""
        new = w_min - 0.01 * (self.barrier - w_min)
        if not (math.isfinite(new) and new >= W_FLOOR):
            raise ValueError(self._floor_message(new))
        self.w_lo = min(self.w_lo, new)
        self.lam, self.lam_w = {}, None

    def first_intervals(self) -> int:
        """First grid of the fitted chain: 250 intervals at B = 16, doubling with B, at most 1000."""
        return min(_FIRST_INTERVALS, _FIT_FIRST_INTERVALS << max(0, math.ceil(math.log2(self.B / 16))))

    def chain(self, n_intervals, lam=None):
        x = make_grid(self.w_lo, self.barrier, n_intervals, self.pit_min, self.width)
        lam = self.lam.get(n_intervals) if lam is None else (None if lam is False else lam)
        P, a = transition_matrix(x, self.T, self.kfrac, self.p, self.depth, self.width, self.barrier, lam)
        e = _deposit(x, self.st.w, self.st.weight)
        return x, P, a, e

    def tau(self, n_intervals):
        """((tau, ln tau), nodes) on a grid of n_intervals. From batch _FIT_FROM_BATCH on, the
        chain's split is exponentially fitted: lam(W) = d ln h / dW, h the escape probability
        before return to the anchor, from the first grid solved (one linear, then _FIT_PASSES
        fitted solves), then held fixed (interpolated) on every finer grid, so the grids form one
        family whose error shrinks as h^2 and Richardson applies. h varies like exp(B x const)
        across the pit, which the linear split resolves only with ~B times more nodes."""
        if self.anchor_w is None:  # from the first linear grid, whatever grid is solved first
            x, P, a, e = self.chain(_FIRST_INTERVALS, lam=False)
            self.anchor_w = x[_anchor(P, e)]
        if self.fit and self.lam_w is not None:
            x = make_grid(self.w_lo, self.barrier, n_intervals, self.pit_min, self.width)
            self.lam[n_intervals] = np.interp(0.5 * (x[1:] + x[:-1]), *self.lam_w)
        x, P, a, e = self.chain(n_intervals, lam=None if not self.fit or self.lam_w is not None else False)
        s = int(np.argmin(np.abs(x - self.anchor_w)))
        if not self.fit or self.lam_w is not None:
            return _mfpt(P, a, self.st, e, s, ordering=self.ordering), len(x)
        for _ in range(_FIT_PASSES):
            hs = []
            _mfpt(P, a, self.st, e, s, out_h=hs, ordering=self.ordering)
            h = hs[0][0]
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = np.diff(np.log(h)) / np.diff(x)
            lam = np.where(np.isfinite(lam), lam, 0.0)
            x, P, a, e = self.chain(n_intervals, lam=lam)
        self.lam[n_intervals] = lam
        self.lam_w = (0.5 * (x[1:] + x[:-1]), lam)
        return _mfpt(P, a, self.st, e, s, ordering=self.ordering), len(x)


def richardson(taus):
    """(tau, relative error, extrapolated?) from raw taus on grids whose spacing halves each time.

    The chain converges at second order where m is smooth (its rounding adds variance ~h^2 a
    step), so with D_k = tau_k - tau_(k-1):
    * one difference: tau_k, error |D_k| (first order assumed; not conservative where convergence
      is not monotone, so markov_cell always solves at least _MIN_LEVELS = 3 grids);
    * D_(k-1) / D_k in [2.8, 5.7] (same sign; observed order 1.5..2.5): the Richardson value
      R_k = tau_k + D_k / 3 with error |R_k - R_(k-1)| if that is smaller than |D_k| / 3, the
      error of tau_k itself (then tau_k is reported);
    * D_(k-1) / D_k in [2, 2.8) or above 5.7: tau_k, error max(|D_k|, |D_(k-1)| / 4);
    * below 2 or of the other sign (no first-order convergence yet: erratic, as for strongly
      expanding maps): tau_k, error |D_k| + |D_(k-1)| + |D_(k-2)| (the recent drift).
    """
    t = np.asarray(taus, dtype=float)
    if len(t) < 2 or not np.all(np.isfinite(t)):
        return float(t[-1]), math.nan, False
    d = np.diff(t)
    err = abs(d[-1])
    if len(d) >= 2:
        ratio = d[-2] / d[-1] if d[-1] != 0.0 else math.inf
        if 2.8 <= ratio <= 5.7:
            err = abs(d[-1]) / 3.0
            R = t[1:] + d / 3.0
            if abs(R[-1] - R[-2]) < err:
                return float(R[-1]), float(abs(R[-1] - R[-2]) / abs(R[-1])), True
        elif ratio >= 2.0:
            err = max(abs(d[-1]), abs(d[-2]) / 4.0)
        else:
            err = float(np.abs(d[-3:]).sum())
    return float(t[-1]), float(err / abs(t[-1])), False


def _richardson_ln(ln_taus, taus=None) -> tuple[float, float, float, bool]:
    """(tau, ln tau, relative error, extrapolated?): `richardson` of the taus where all are finite
    (taus as solved, else exp(ln_taus)), or else of the taus scaled by 1/tau_last (richardson is
    scale-free), shifted back in log space."""
    lt = np.asarray(ln_taus, dtype=float)
    with np.errstate(over="ignore"):
        t = np.exp(lt) if taus is None else np.asarray(taus, dtype=float)
    if np.all(np.isfinite(t)) and np.all(lt < 709.0):
        value, err, extrapolated = richardson(t)
        return value, (math.log(value) if value > 0.0 else -math.inf), err, extrapolated
    if not np.all(np.isfinite(lt)):
        return math.inf, float(lt[-1]), math.nan, False
    v, err, extrapolated = richardson(np.exp(lt - lt[-1]))
    ln_value = float(lt[-1] + math.log(v))
    return (math.exp(ln_value) if ln_value < 709.78 else math.inf), ln_value, err, extrapolated


def solve_grid(T, batch_size, depth, width, n_intervals, *, start=None, w_lo=None) -> tuple[float, int]:
    """tau (steps) on one fixed grid of n_intervals intervals (widened as needed), and its node
    count: the building block of markov_cell, for convergence studies."""
    cell = _make_cell(T, batch_size, depth, width, start, w_lo)
    n = check_int("n_intervals", n_intervals, 16)
    for _ in range(8):
        try:
            (tau, _ln), nodes = cell.tau(n)
            return tau, nodes
        except GridError as exc:
            cell.widen(exc.w_min)
    raise ValueError(f"T={T!r}: widening the grid did not hold the chain")


def _make_cell(T, batch_size, depth, width, start, w_lo):
    T = check_positive("T", T)
    B = check_int("batch_size", batch_size, 1)
    depth = check_positive("depth", depth)
    width = check_positive("width", width)
    pit = find_pit(depth, width)
    if start is not None:
        start = _check_finite("start", start)
        if start > pit.w_barrier:
            raise ValueError(f"start={start!r}: must lie at or below the barrier W = {pit.w_barrier:.6g}")
    if w_lo is not None:
        w_lo = _check_finite("w_lo", w_lo)
        if w_lo >= pit.w_barrier:
            raise ValueError(f"w_lo={w_lo!r}: must lie below the barrier W = {pit.w_barrier:.6g}")
    return _Cell(T, B, depth, width, start, w_lo)


def markov_cell(T, batch_size, depth, width, budgets=(), *, rel_tol=1e-3, start=None,
                max_nodes=DEFAULT_MAX_NODES, w_lo=None) -> MarkovResult:
    """Mean escape time tau (steps) and P(escape within n steps) of one cell, from the chain.

    Solves m(W) = 1 + sum_k C(B,k) 2^-B m(f_k(W)) (m = 0 past the barrier) on grids of spacing
    h, h/2, h/4 (at least), ... until the Richardson estimate of tau's relative error is below rel_tol or the
    next grid would exceed max_nodes (then warns and reports the error reached); see
    `richardson` for when tau (and P(escape)) are the extrapolated values. start: W_0
    (default: the pit minimum). w_lo: initial left end of the grid (default: from the maps); a
    grid that the maps leave is widened, never clipped.
    """
    budgets = _check_budgets(budgets)
    rel_tol = check_positive("rel_tol", rel_tol)
    max_nodes = check_int("max_nodes", max_nodes, 2 * _FIRST_INTERVALS + 1)
    cell = _make_cell(T, batch_size, depth, width, start, w_lo)
    for _ in range(8):
        try:
            taus, ln_taus, n = [], [], (cell.first_intervals() if cell.fit else _FIRST_INTERVALS)
            while True:
                (tau, ln_tau), nodes = cell.tau(n)
                taus.append(tau)
                ln_taus.append(ln_tau)
                value, ln_value, err, extrapolated = _richardson_ln(ln_taus, taus)
                enough = len(ln_taus) >= _MIN_LEVELS
                if enough and (err <= rel_tol or math.isnan(err)):
                    break
                if 2 * n + 1 > max_nodes:
                    if len(ln_taus) >= 2:
                        warnings.warn(
                            f"markov_cell(T={cell.T}, batch_size={cell.B}): node cap {max_nodes} "
                            f"reached with estimated relative error {err:.2g} > rel_tol={rel_tol}",
                            RuntimeWarning, stacklevel=2)
                    break
                n *= 2
            p_esc = _escape_within(*cell.chain(n)[1:], budgets, st=cell.st)
            if extrapolated and len(budgets):  # same Richardson step for the probabilities
                p_half = _escape_within(*cell.chain(n // 2)[1:], budgets, st=cell.st)
                p_esc = np.clip(p_esc + (p_esc - p_half) / 3.0, 0.0, 1.0)
            break
        except GridError as exc:
            cell.widen(exc.w_min)
            cell.anchor_w = None
    else:
        raise ValueError(f"T={T!r}: widening the grid did not hold the chain")
    if math.isinf(ln_value):
        err = math.nan
    if cell.expansion > _ERRATIC_EXPANSION:
        warnings.warn(
            f"markov_cell(T={cell.T}, batch_size={cell.B}, depth={cell.depth}, width={cell.width}): "
            f"the maps stretch W by up to {cell.expansion:.0f}x per step; the grid converges "
            f"erratically there and the error estimate ({err:.2g}) is a heuristic: check against "
            "Monte Carlo, which is cheap in this regime", RuntimeWarning, stacklevel=2)
    if cell.dropped > 0.0 and ln_value + math.log(cell.dropped) > math.log(rel_tol):
        warnings.warn(
            f"markov_cell(T={cell.T}, batch_size={cell.B}): dropped binomial mass {cell.dropped:.2g} "
            f"times tau (ln tau = {ln_value:.4g}) exceeds rel_tol: batches too rare to keep could matter",
            RuntimeWarning, stacklevel=2)
    p_esc = np.asarray(p_esc, dtype=np.float64)
    p_esc.setflags(write=False)
    return MarkovResult(
        mfpt=float(value), mfpt_rel_error=float(err), budgets=budgets,
        p_escape=p_esc, n_nodes=int(nodes),
        dropped_mass=float(cell.dropped), w_lo=float(cell.w_lo), w_barrier=float(cell.barrier),
        w_start=float(cell.start), ln_mfpt=float(ln_value))


# solve_seconds: one core's CPU seconds of markov_cell, fitted to timings at depth 1, width 0.1
# (T = 0.006..0.05, B = 1..256, one BLAS thread, a loaded 2-core machine): see the reports of issues
# #14 and #16 (B >= 16 recalibrated after the W-order LU and the early stop of P(escape))
_COST_LINEAR = (0.17, 0.125)  # B < _FIT_FROM_BATCH: a + b B x the T factor (3 grids up to 4001 nodes)
_COST_FITTED_SMALL = 0.008  # _FIT_FROM_BATCH <= B <= 32: this x B (grids up to 1001..2001 nodes)
_COST_FITTED_LARGE = 0.45  # B > 32: this x the T factor (4001 nodes; measured 0.26..1.7 s, B = 48..256)


def solve_seconds(T, batch_size, depth=1.0, width=0.1):
    """Estimated CPU seconds of one markov_cell(T, batch_size, depth, width) call on one core
    (numpy-broadcast over array arguments). An empirical model, within 2x of the timings it was
    fitted to except cells whose convergence needs an extra (8001-node) grid (~8x): the sparse
    LU's fill grows with B (and, in the fitted chain's W order, with the band: with T), and
    T > 0.01 (erratic convergence, wide band) costs up to 2.5x at B < 16 and B > 32, as
    T factor = 1 + clip((T - 0.01) / 0.01, 0, 1.5). depth and width are not modelled."""
    T = np.asarray(T, dtype=float)
    B = np.asarray(batch_size, dtype=float)
    factor = 1.0 + np.clip((T - 0.01) / 0.01, 0.0, 1.5)
    linear = _COST_LINEAR[0] + _COST_LINEAR[1] * B * factor
    fitted = np.where(B <= 32, _COST_FITTED_SMALL * B, _COST_FITTED_LARGE * factor)
    out = np.where(B < _FIT_FROM_BATCH, linear, fitted) * np.ones(np.broadcast(depth, width).shape)
    return float(out) if out.ndim == 0 else out
