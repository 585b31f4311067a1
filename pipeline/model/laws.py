"""Closed-form and quadrature laws for the mean escape time tau (in SGD steps) of one cell
(T, batch_size, depth, width) of the model in DESIGN.md section 1, to set beside the exact
Markov-chain value (pipeline.model.markov). DESIGN.md section 8 states each law and how it is
specialised to this 1-D model.

    diffusion_tau   the diffusion (Ito) approximation of the step: exact 1-D mean first-passage
                    time of dW = mu dn + sigma dB, entrance boundary at W = 1, absorbing at the barrier
    runs_tau        the seed post's run law: a run of n* consecutive all-l0 minibatches
    kramers_tau     Kramers / Arrhenius: mean-loss barrier, noise frozen at the minimum
    xie_tau         Xie, Sato & Sugiyama (ICLR 2021): noise covariance = Hessian / B
    mori_tau        Mori, Ziyin, Liu & Ueda (ICML 2022): noise proportional to the loss, the log-loss
                    barrier sets the rate

Every law returns ln tau (tau itself overflows float64 for small T and large B) and NaN where its
assumptions have nothing to say (e.g. no mean-loss pit). Pure numpy/scipy; gradients come from
pipeline.model.landscape only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from .landscape import check_int, check_positive, find_pit, g0, gpit, l0, l1

LAWS = ("diffusion", "runs", "kramers", "xie", "mori")
LAW_TITLES = {
    "diffusion": "diffusion (Ito) MFPT",
    "runs": "run law (n* all-l0 steps)",
    "kramers": "Kramers, noise at the minimum",
    "xie": "Xie-Sato-Sugiyama 2021",
    "mori": "Mori-Ziyin-Liu-Ueda 2022",
}
XIE_S = 0.5  # Xie et al.'s path parameter s in (0, 1): not fixed by their theorem; we take the midpoint
_LN_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# The diffusion approximation
# ---------------------------------------------------------------------------------------------


def drift(w, T, batch_size, depth, width):
    """Mean of one minibatch step: mu(W) = -T (g0 + gpit / 2) (k/B has mean 1/2)."""
    return -T * (g0(w) + 0.5 * gpit(w, depth, width))


def variance(w, T, batch_size, depth, width):
    """Variance of one minibatch step: sigma^2(W) = T^2 gpit^2 Var(k/B) = T^2 gpit^2 / (4 B)."""
    return T * T * gpit(w, depth, width) ** 2 / (4.0 * batch_size)


def _trap_log(ln_f, ln_h):
    """ln of the cumulative trapezoid sums of f (given as ln f) with interval widths h (ln h):
    element j is ln sum_{i<j} h_i (f_i + f_(i+1)) / 2; element 0 is -inf."""
    inc = ln_h + np.logaddexp(ln_f[:-1], ln_f[1:]) - math.log(2.0)
    return np.concatenate([[-np.inf], np.logaddexp.accumulate(inc)])


def _ln_mfpt_on_grid(mu, sigma2, a, b, x0, n):
    """ln tau on n intervals, uniform in s with x = a + (b - a) s^2 (dense at a, where sigma may
    vanish), x0 inserted as a node. Composite trapezoid for every integral, all in log space."""
    s = np.linspace(0.0, 1.0, n + 1)[1:]  # x = a itself left out: the integrand vanishes there
    x = a + (b - a) * s * s
    x = np.unique(np.concatenate([x, [x0]]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m, v = mu(x), sigma2(x)
        phi = 2.0 * m / v  # d Phi / dx, Phi = ln of the stationary density times sigma^2
        dx = np.diff(x)
        ok = np.isfinite(phi)
        if not ok.all():  # sigma^2 = 0 (entrance boundary): start past the last such node
            first = int(np.nonzero(~ok)[0].max()) + 1
            x, m, v, phi, dx = x[first:], m[first:], v[first:], phi[first:], np.diff(x[first:])
        # Phi anchored at x0 and summed outwards from it: near an entrance boundary the increments
        # grow like 1/(x - a), and a sum started there would swamp Phi's digits where it matters
        inc = 0.5 * dx * (phi[:-1] + phi[1:])
        i0 = int(np.searchsorted(x, x0))
        Phi = np.concatenate([-np.cumsum(inc[:i0][::-1])[::-1], [0.0], np.cumsum(inc[i0:])])
        ln_f = math.log(2.0) - np.log(v) + Phi  # inner integrand 2 / sigma^2(z) e^Phi(z)
        ln_J = _trap_log(ln_f, np.log(dx))  # ln int_a^y of it
        ln_g = ln_J - Phi  # outer integrand: -T'(y)
        inc = np.log(dx[i0:]) + np.logaddexp(ln_g[i0:-1], ln_g[i0 + 1:]) - math.log(2.0)
    return float(logsumexp(inc)) if len(inc) else -math.inf


def diffusion_mfpt(mu, sigma2, a, b, x0, n=4000) -> tuple[float, float]:
    """ln of the mean first-passage time from x0 to b of dX = mu(X) dn + sqrt(sigma2(X)) dB on
    (a, b], with a reflecting or entrance boundary at a and an absorbing one at b:

        tau(x0) = int_x0^b dy int_a^y dz 2 / sigma2(z) exp(Phi(z) - Phi(y)),  Phi' = 2 mu / sigma2,

    evaluated in log space (it reaches e^100 and beyond): cumulative trapezoid sums in
    s = sqrt((x - a) / (b - a)) on n and 2n intervals, then Richardson. Returns (ln tau, estimated
    relative error of tau). mu and sigma2 are vectorised callables; sigma2 may vanish at a (an
    entrance boundary) but must be > 0 inside."""
    a, b, x0 = float(a), float(b), float(x0)
    if not (a < b and a <= x0 <= b):
        raise ValueError(f"diffusion_mfpt: need a < b and a <= x0 <= b (a={a!r}, b={b!r}, x0={x0!r})")
    l1_, l2 = _ln_mfpt_on_grid(mu, sigma2, a, b, x0, n), _ln_mfpt_on_grid(mu, sigma2, a, b, x0, 2 * n)
    if not (math.isfinite(l1_) and math.isfinite(l2)):
        return l2, math.nan
    # trapezoid error ~ h^2: R = t2 + (t2 - t1) / 3, in logs: ln R = l2 + ln(1 + (1 - e^(l1 - l2)) / 3)
    corr = (1.0 - math.exp(l1_ - l2)) / 3.0
    if corr <= -1.0:
        return l2, math.nan
    return l2 + math.log1p(corr), abs(corr)


def diffusion_tau(T, batch_size, depth=1.0, width=0.1, n=4000) -> float:
    """ln tau of the diffusion approximation: dW = mu dn + sigma dB, mu = -T (g0 + gpit/2),
    sigma^2 = T^2 gpit^2 / (4B), from l1's pit minimum w_start to l1's barrier (absorbing). W = 1 is
    an entrance boundary (sigma = 0 there while mu = -T g0(1) > 0): the diffusion never reaches it."""
    T, B, pit = _cell(T, batch_size, depth, width)
    mu = lambda w: drift(w, T, B, depth, width)  # noqa: E731
    s2 = lambda w: variance(w, T, B, depth, width)  # noqa: E731
    return diffusion_mfpt(mu, s2, 1.0, pit.w_barrier, pit.w_start, n=n)[0]


# ---------------------------------------------------------------------------------------------
# The run law
# ---------------------------------------------------------------------------------------------


def run_length(T, depth=1.0, width=0.1, max_steps=100_000) -> int:
    """n*(T): pure l0 steps W <- W - T g0(W) from l1's pit minimum until W > l1's barrier
    (0 if never within max_steps: then escape by all-l0 runs is impossible)."""
    T = check_positive("T", T)
    pit = _find_pit(float(depth), float(width))
    w = pit.w_start
    for n in range(1, max_steps + 1):
        w = w - T * float(g0(w))
        if w > pit.w_barrier:
            return n
    return 0


def runs_tau(T, batch_size, depth=1.0, width=0.1) -> float:
    """ln tau of the run law: the expected number of Bernoulli(p) trials until n* successes in a
    row, tau = (1 - p^n) / ((1 - p) p^n), p = 2^-B (a minibatch of B l0 picks)."""
    T, B, _ = _cell(T, batch_size, depth, width)
    n = run_length(T, depth, width)
    if n == 0:
        return math.nan
    lnp = -B * math.log(2.0)
    # ln[(1 - p^n) / ((1 - p) p^n)] = -n ln p + ln(1 - p^n) - ln(1 - p)
    return -n * lnp + math.log(-math.expm1(n * lnp)) - math.log(-math.expm1(lnp))


# ---------------------------------------------------------------------------------------------
# Barrier laws on the mean loss
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanLossPit:
    """The mean loss Lbar = (l0 + l1) / 2 = l0 - (depth / 2) exp(-((W - 1) / width)^2) -- the loss
    whose gradient is the mean step -- near the pit: its minimum, its barrier (local maximum right
    of the minimum), their curvatures, the barrier height, and its global minimum (for log-loss)."""

    w_min: float
    w_max: float
    h_min: float  # Lbar''(w_min) > 0
    h_max: float  # |Lbar''(w_max)|
    dL: float  # Lbar(w_max) - Lbar(w_min) > 0
    L_min: float  # Lbar(w_min)
    L_max: float  # Lbar(w_max)
    L_floor: float  # inf of Lbar over W (at W ~ 2): the zero of the shifted loss for Mori et al.
    noise_min: float  # gpit(w_min)^2 / 4: the gradient noise variance at w_min times B


def _curv(w, depth, width, eps=1e-6):
    """Lbar''(W) by central differences of the gradient g0 + gpit/2."""
    g = lambda x: float(g0(x) + 0.5 * gpit(x, depth, width))  # noqa: E731
    return (g(w + eps) - g(w - eps)) / (2.0 * eps)


@functools.lru_cache(maxsize=256)
def _find_pit(depth: float, width: float):
    return find_pit(depth, width)


@functools.lru_cache(maxsize=256)
def mean_loss_pit(depth=1.0, width=0.1) -> MeanLossPit | None:
    """The mean loss's pit (None if Lbar has no pit: then the barrier laws say nothing).
    Lbar = l1 with depth / 2, so find_pit(depth / 2, width) finds its stationary points."""
    try:
        p = _find_pit(0.5 * depth, width)
    except ValueError:
        return None
    Lbar = lambda w: float(l1(w, 0.5 * depth, width))  # noqa: E731
    floor = minimize_scalar(Lbar, bounds=(1.5, 2.5), method="bounded", options={"xatol": 1e-10}).fun
    floor = min(float(floor), float(l0(2.0)) - 0.5 * depth * math.exp(-((1.0 / width) ** 2)))
    return MeanLossPit(
        w_min=p.w_start, w_max=p.w_barrier, h_min=_curv(p.w_start, depth, width),
        h_max=abs(_curv(p.w_barrier, depth, width)), dL=Lbar(p.w_barrier) - Lbar(p.w_start),
        L_min=Lbar(p.w_start), L_max=Lbar(p.w_barrier), L_floor=floor,
        noise_min=float(gpit(p.w_start, depth, width)) ** 2 / 4.0)


def _prefactor(T, m: MeanLossPit) -> float:
    """ln of the Kramers prefactor in steps: 2 pi / (T sqrt(Lbar''(min) |Lbar''(max)|))
    (continuous time t = T n, so steps = time / T)."""
    return _LN_2PI - math.log(T) - 0.5 * math.log(m.h_min * m.h_max)


def kramers_tau(T, batch_size, depth=1.0, width=0.1) -> float:
    """ln tau of Kramers' law for dW = -Lbar'(W) dt + sqrt(2 D) dB (t = T n) with the noise frozen
    at the minimum, D = T C / 2, C = gpit(w_min)^2 / (4B):
    tau = 2 pi / (T sqrt(Lbar''_min |Lbar''_max|)) exp(dLbar / D)."""
    T, B, _ = _cell(T, batch_size, depth, width)
    m = mean_loss_pit(float(depth), float(width))
    if m is None:
        return math.nan
    D = T * (m.noise_min / B) / 2.0
    return _prefactor(T, m) + m.dL / D


def xie_tau(T, batch_size, depth=1.0, width=0.1, s=XIE_S) -> float:
    """ln tau of Xie, Sato & Sugiyama (ICLR 2021, 1-D form of their SGD escape theorem), whose
    noise model is C = H / B (Fisher ~ Hessian near critical points), eta = T:
    tau = 2 pi / (T sqrt(H_a |H_b|)) exp[(2 B dL / T) (s / H_a + (1 - s) / |H_b|)]."""
    T, B, _ = _cell(T, batch_size, depth, width)
    m = mean_loss_pit(float(depth), float(width))
    if m is None:
        return math.nan
    return _prefactor(T, m) + (2.0 * B * m.dL / T) * (s / m.h_min + (1.0 - s) / m.h_max)


def mori_tau(T, batch_size, depth=1.0, width=0.1) -> float:
    """ln tau of Mori, Ziyin, Liu & Ueda (ICML 2022), noise C = 2 L H / B with L >= 0: here
    L = Lbar - inf Lbar (the model's losses are negative; shifted so the global minimum of the
    mean loss is 0), n = 1 outlier direction, h* = Lbar''(min), eta = T:
    tau = 2 pi / (T sqrt(h* |h_s|)) (L_s / L_*)^(B / (T h*) + 1 - n/2)."""
    T, B, _ = _cell(T, batch_size, depth, width)
    m = mean_loss_pit(float(depth), float(width))
    if m is None:
        return math.nan
    Ls, La = m.L_max - m.L_floor, m.L_min - m.L_floor
    if not (La > 0.0 and Ls > La):
        return math.nan
    return _prefactor(T, m) + (B / (T * m.h_min) + 0.5) * math.log(Ls / La)


LAW_FUNCTIONS = {"diffusion": diffusion_tau, "runs": runs_tau, "kramers": kramers_tau,
                 "xie": xie_tau, "mori": mori_tau}


def ln_tau(law: str, T, batch_size, depth=1.0, width=0.1) -> float:
    """ln tau (steps) of one law for one cell; NaN where the law has nothing to say."""
    if law not in LAW_FUNCTIONS:
        raise ValueError(f"law={law!r}: unknown (laws: {', '.join(LAWS)})")
    return float(LAW_FUNCTIONS[law](T, batch_size, depth, width))


def _cell(T, batch_size, depth, width):
    T = check_positive("T", T)
    B = check_int("batch_size", batch_size, 1)
    return T, B, _find_pit(float(depth), float(width))
