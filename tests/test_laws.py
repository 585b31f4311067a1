"""pipeline.model.laws: the diffusion MFPT against a finite-difference solve of the backward
equation and a closed form, the run law's n* against direct l0 steps, each law against values
computed here from independent ingredients (loss values, not the package's gradients)."""

import math

import numpy as np
import pytest
from scipy.linalg import solve_banded
from scipy.optimize import minimize_scalar

from pipeline.model import laws
from pipeline.model.landscape import find_pit, l0, l1

PIT = find_pit(1.0, 0.1)


def fd_mfpt(mu, sigma2, a, b, x0, n=40_000):
    """Mean first-passage time to b from x0 by finite differences of the backward equation
    mu T' + sigma^2 / 2 T'' = -1, T(b) = 0; at a either sigma^2(a) = 0 (entrance: mu(a) T'(a) = -1,
    one-sided) or reflecting (T'(a) = 0, ghost node). Central differences, upwind where the cell
    Peclet number |mu| h / sigma^2 exceeds 1 (only next to an entrance boundary). Second order; with
    tau ~ e^12 its own error is ~1e-4 (finer grids lose more to rounding than they gain)."""
    x = np.linspace(a, b, n + 1)
    h = x[1] - x[0]
    m, s2 = mu(x), sigma2(x)
    lower, diag, upper = np.zeros(n + 1), np.zeros(n + 1), np.zeros(n + 1)
    rhs = -np.ones(n + 1)
    D = 0.5 * s2 / h**2
    central = np.abs(m) * h <= s2
    # interior rows: lower[i] multiplies T_(i-1), upper[i] T_(i+1)
    cl = np.where(central, D - m / (2 * h), D + np.where(m < 0, -m / h, 0.0))
    cu = np.where(central, D + m / (2 * h), D + np.where(m > 0, m / h, 0.0))
    lower[:], upper[:] = cl, cu
    diag[:] = -(cl + cu)
    if s2[0] == 0.0:
        lower[0], diag[0], upper[0] = 0.0, -m[0] / h, m[0] / h
    else:  # reflecting: ghost T_(-1) = T_1
        lower[0], diag[0], upper[0] = 0.0, -2 * D[0], 2 * D[0]
    lower[n], diag[n], upper[n], rhs[n] = 0.0, 1.0, 0.0, 0.0
    ab = np.zeros((3, n + 1))
    ab[0, 1:] = upper[:-1]
    ab[1] = diag
    ab[2, :-1] = lower[1:]
    T = solve_banded((1, 1), ab, rhs)
    return float(np.interp(x0, x, T))


def closed_form(mu, s2, a, b, x):
    """Constant drift mu and variance s2 on [a, b], reflecting at a, absorbing at b:
    T(x) = [(b - x) - (e^(-k (x - a)) - e^(-k (b - a))) / k] / mu, k = 2 mu / s2."""
    k = 2 * mu / s2
    return ((b - x) - (math.exp(-k * (x - a)) - math.exp(-k * (b - a))) / k) / mu


@pytest.mark.parametrize("mu,s2,x", [(-0.5, 0.2, 0.0), (-0.5, 0.2, 0.6), (0.3, 0.05, 0.2), (-2.0, 0.25, 0.1)])
def test_diffusion_mfpt_constant_coefficients(mu, s2, x):
    ln_tau, err = laws.diffusion_mfpt(lambda w: np.full_like(w, mu), lambda w: np.full_like(w, s2), 0.0, 1.0, x)
    exact = closed_form(mu, s2, 0.0, 1.0, x)
    assert ln_tau == pytest.approx(math.log(exact), abs=1e-7)
    assert err < 1e-5
    # the finite-difference check itself reproduces the closed form (it is the reference below)
    assert fd_mfpt(lambda w: np.full_like(w, mu), lambda w: np.full_like(w, s2), 0.0, 1.0, x) \
        == pytest.approx(exact, rel=2e-4)


@pytest.mark.parametrize("T,B", [(0.02, 1), (0.012, 2), (0.03, 3)])
def test_diffusion_tau_against_finite_differences(T, B):
    mu = lambda w: laws.drift(w, T, B, 1.0, 0.1)  # noqa: E731
    s2 = lambda w: laws.variance(w, T, B, 1.0, 0.1)  # noqa: E731
    # W = 1 is an entrance boundary: no noise, drift to the right
    assert laws.variance(1.0, T, B, 1.0, 0.1) == 0.0 and laws.drift(1.0, T, B, 1.0, 0.1) > 0
    tau_fd = fd_mfpt(mu, s2, 1.0, PIT.w_barrier, PIT.w_start)
    ln_tau = laws.diffusion_tau(T, B, 1.0, 0.1)
    assert abs(math.exp(ln_tau) / tau_fd - 1) < 1e-3, (math.exp(ln_tau), tau_fd)


def test_diffusion_tau_grid_converged_at_huge_tau():
    # tau ~ e^42 (B = 4, T = 0.008): log-space quadrature, no overflow, grid-independent to 1e-8
    a = laws.diffusion_tau(0.008, 4, 1.0, 0.1)
    b = laws.diffusion_tau(0.008, 4, 1.0, 0.1, n=32_000)
    assert 40 < a < 45 and abs(a - b) < 1e-8


def test_run_length_against_direct_l0_steps():
    # the post: from W = 1.004 at T = 0.05 five l0 steps reach 1.201, out of the pit
    assert laws.run_length(0.05) == 5
    for T in (0.008, 0.013, 0.02, 0.03):
        n = laws.run_length(T)
        w, path = PIT.w_start, []
        eps = 1e-7  # l0's gradient from the loss itself (central differences), not from landscape.g0
        for _ in range(n):
            w = w - T * (float(l0(w + eps)) - float(l0(w - eps))) / (2 * eps)
            path.append(w)
        assert path[-1] > PIT.w_barrier and (n == 1 or path[-2] <= PIT.w_barrier), (T, n)


def test_runs_tau_hand_value():
    # n* = 5 at T = 0.05: B = 1 (p = 1/2): (1 - 2^-5) / (2^-1 2^-5) = 62; B = 2 (p = 1/4): 1364
    assert laws.runs_tau(0.05, 1) == pytest.approx(math.log(62.0), abs=1e-12)
    assert laws.runs_tau(0.05, 2) == pytest.approx(math.log((1 - 4.0**-5) / (0.75 * 4.0**-5)), abs=1e-12)
    assert laws.runs_tau(0.05, 2) == pytest.approx(math.log(1364.0), abs=1e-12)


def _mean_loss_by_hand(depth=1.0, width=0.1):
    """The mean loss (l0 + l1) / 2 from the loss values alone: minimum near the pit, barrier, curvatures."""
    L = lambda w: 0.5 * (float(l0(w)) + float(l1(w, depth, width)))  # noqa: E731
    wmin = minimize_scalar(L, bounds=(0.99, 1.05), method="bounded", options={"xatol": 1e-12}).x
    wmax = minimize_scalar(lambda w: -L(w), bounds=(1.1, 1.3), method="bounded", options={"xatol": 1e-12}).x
    e = 1e-4
    curv = lambda w: (L(w + e) - 2 * L(w) + L(w - e)) / e**2  # noqa: E731
    return L, wmin, wmax, curv(wmin), -curv(wmax)


def test_barrier_laws_hand_values():
    L, wmin, wmax, ha, hb = _mean_loss_by_hand()
    m = laws.mean_loss_pit(1.0, 0.1)
    assert m.w_min == pytest.approx(wmin, abs=1e-6) and m.w_max == pytest.approx(wmax, abs=1e-6)
    assert m.h_min == pytest.approx(ha, rel=1e-4) and m.h_max == pytest.approx(hb, rel=1e-4)
    dL = L(wmax) - L(wmin)
    # seed numbers: Lbar'' = 97.6 at the minimum (W = 1.00745), 24.7 at the barrier (1.17431), dL = 0.3409
    assert (ha, hb, dL) == pytest.approx((97.62, 24.69, 0.34093), rel=1e-3)
    T, B = 0.015, 2
    pre = math.log(2 * math.pi / (T * math.sqrt(ha * hb)))
    # gradient noise of the pit point at the minimum: Var(k/B) gpit^2 with gpit = l0' - l1'
    e = 1e-7
    gp = ((float(l0(wmin + e)) - float(l1(wmin + e))) - (float(l0(wmin - e)) - float(l1(wmin - e)))) / (2 * e)
    D = T * (gp**2 / (4 * B)) / 2
    assert laws.kramers_tau(T, B) == pytest.approx(pre + dL / D, rel=1e-5)
    assert laws.xie_tau(T, B) == pytest.approx(pre + (2 * B * dL / T) * (0.5 / ha + 0.5 / hb), rel=1e-5)
    # Mori et al.: losses shifted so the mean loss's global minimum (-1, at W = 2) is 0
    Ls, La = L(wmax) + 1.0, L(wmin) + 1.0
    assert laws.mori_tau(T, B) == pytest.approx(pre + (B / (T * ha) + 0.5) * math.log(Ls / La), rel=1e-5)


def test_laws_inputs_and_missing_pits():
    assert set(laws.LAWS) == set(laws.LAW_FUNCTIONS) == set(laws.LAW_TITLES)
    with pytest.raises(ValueError, match="law="):
        laws.ln_tau("nope", 0.01, 1)
    with pytest.raises(ValueError, match="T="):
        laws.ln_tau("runs", -0.01, 1)
    with pytest.raises(ValueError, match="batch_size="):
        laws.ln_tau("kramers", 0.01, 0)
    # a pit in l1 whose half-depth mean loss has none: the barrier laws say nothing (NaN), the others do
    d = 0.15
    find_pit(d, 0.1)
    assert laws.mean_loss_pit(d, 0.1) is None
    assert math.isnan(laws.kramers_tau(0.01, 1, d, 0.1)) and math.isnan(laws.mori_tau(0.01, 1, d, 0.1))
    assert math.isfinite(laws.runs_tau(0.01, 1, d, 0.1))
