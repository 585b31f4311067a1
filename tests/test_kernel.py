"""The numba kernel and `pipeline.simulate`: the post's numbers, the numpy reference, determinism."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import escaped_within, prob_se
from pipeline import simulate
from pipeline.model.kernels import DIVERGED, NOT_ESCAPED, escape_steps
from pipeline.model.landscape import find_pit
from pipeline.model.reference import numpy_escape_steps, scalar_escape_steps
from pipeline.model.simulate import cell_key
from pipeline.sweep.task import summarize


def prob_run_within(run: int, steps: int, p: float = 0.5) -> float:
    """Exact P(a run of >= `run` successes within `steps` Bernoulli(p) trials), by DP on run length."""
    dist = np.zeros(run + 1)
    dist[0] = 1.0
    for _ in range(steps):
        new = np.zeros(run + 1)
        new[run] = dist[run]
        new[0] += (1 - p) * dist[:run].sum()
        new[1:run + 1] += p * dist[:run]
        dist = new
    return float(dist[run])


def test_exact_run_probability_is_the_posts_81_percent():
    assert round(prob_run_within(5, 100), 4) == 0.8101
    # hand-checkable small cases: a run of 2 within 2 flips is 1/4, within 3 flips is 3/8
    assert prob_run_within(2, 2) == pytest.approx(0.25)
    assert prob_run_within(2, 3) == pytest.approx(0.375)


def test_monte_carlo_escapes_at_least_as_easily_as_runs_of_five():
    n = 20000
    p = escaped_within(simulate(0.05, 100, 1, 1.0, 0.1, n, seed=7, start=1.004), 100)
    exact = prob_run_within(5, 100)
    assert p >= exact - 4 * math.sqrt(exact * (1 - exact) / n)


CELLS = [  # (T, batch, depth, width): escape probabilities well inside (0, 1) at 1000 steps
    (0.016, 1, 1.0, 0.1), (0.012, 1, 1.0, 0.1), (0.02, 1, 1.0, 0.15), (0.015, 1, 0.5, 0.1),
    (0.018, 1, 0.5, 0.15), (0.02, 2, 1.0, 0.1), (0.013, 2, 2.0, 0.1), (0.014, 4, 2.0, 0.1),
    (0.015, 4, 2.0, 0.1), (0.02, 2, 0.5, 0.1),
]


@pytest.mark.parametrize("T,B,depth,width", CELLS)
def test_kernel_agrees_with_numpy_reference(T, B, depth, width):
    n = 6000
    pit = find_pit(depth, width)
    a = simulate(T, 1000, B, depth, width, n, seed=11)
    b = numpy_escape_steps(T, 1000, B, depth, width, pit.w_start, pit.w_barrier, n, seed=12)
    for budget in (100, 1000):
        pa, pb = escaped_within(a, budget), escaped_within(b, budget)
        assert abs(pa - pb) <= 4 * prob_se(pa, n, pb, n), (budget, pa, pb)
    # the escape-time distributions agree too (mean escape step of the escaped walkers)
    ea, eb = a[a > 0], b[b > 0]
    if ea.size > 50 and eb.size > 50:
        se = math.sqrt(ea.var() / ea.size + eb.var() / eb.size)
        assert abs(ea.mean() - eb.mean()) <= 4 * se


def test_scalar_numba_baseline_agrees_too():
    n = 6000
    pit = find_pit(1.0, 0.1)
    a = simulate(0.018, 300, 2, 1.0, 0.1, n, seed=3)
    c = scalar_escape_steps(0.018, 300, 2, 1.0, 0.1, pit.w_start, pit.w_barrier, n, 5)
    pa, pc = escaped_within(a, 300), escaped_within(c, 300)
    assert abs(pa - pc) <= 4 * prob_se(pa, n, pc, n)


def test_escape_probability_rises_with_T_like_the_post():
    n = 20000
    Ts = np.round(np.arange(0.01, 0.03001, 0.0025), 6)
    p100 = np.array([escaped_within(simulate(T, 100, 1, 1.0, 0.1, n, seed=1), 100) for T in Ts])
    p1000 = np.array([escaped_within(simulate(T, 1000, 1, 1.0, 0.1, n, seed=1), 1000) for T in Ts])
    assert p100[0] < 0.01 and p100[-1] > 0.99
    se = np.sqrt(np.maximum(p100 * (1 - p100), 1.0 / n) / n)
    assert np.all(np.diff(p100) >= -3 * (se[1:] + se[:-1])), p100
    assert np.all(p100[1:-1] > p100[0]) and np.all(p100[1:-1] < p100[-1])
    assert np.all(p1000 >= p100)  # same walkers, longer budget: can only add escapes


def test_same_seed_same_array_and_other_seed_differs():
    a = simulate(0.015, 1000, 1, 1.0, 0.1, 3000, seed=5)
    b = simulate(0.015, 1000, 1, 1.0, 0.1, 3000, seed=5)
    c = simulate(0.015, 1000, 1, 1.0, 0.1, 3000, seed=6)
    assert a.dtype == np.int64 and np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("B", [1, 3, 64, 100])
def test_walker_blocks_concatenate_to_one_call(B):
    pit = find_pit(1.0, 0.1)
    key = cell_key(9, 0.03, B, 1.0, 0.1)
    args = (0.03, 400, B, 1.0, 0.1, pit.w_start, pit.w_barrier, key)
    whole = escape_steps(*args, 0, 1000)
    parts = [escape_steps(*args, s, c) for s, c in [(0, 1), (1, 31), (32, 33), (65, 500), (565, 435)]]
    assert np.array_equal(whole, np.concatenate(parts))


def test_shorter_budget_is_the_same_walkers_censored():
    long = simulate(0.017, 2000, 1, 1.0, 0.1, 2000, seed=2)
    short = simulate(0.017, 300, 1, 1.0, 0.1, 2000, seed=2)
    assert np.array_equal(short, np.where((long > 0) & (long <= 300), long, NOT_ESCAPED))


def test_cell_key_depends_on_values_not_representation():
    assert cell_key(1, 0.015, 1, 1.0, 0.1) == cell_key(1, np.float64(0.015), np.int64(1), 1, 0.1)
    assert cell_key(1, 0.015, 1, 1.0, 0.1) != cell_key(1, 0.015, 2, 1.0, 0.1)
    assert cell_key(1, 0.015, 1, 1.0, 0.1) != cell_key(2, 0.015, 1, 1.0, 0.1)


def test_diverged_walkers_get_their_own_code():
    pit = find_pit(1.0, 0.1)
    esc = escape_steps(0.01, 50, 1, 1.0, 0.1, float("nan"), pit.w_barrier, np.uint64(1), 0, 5)
    assert np.all(esc == DIVERGED)
    s = summarize(esc, [10, 50], [1, 11, 51])
    assert s["n_diverged"] == 5 and s["n_escaped"].tolist() == [0, 0] and s["exposure"].tolist() == [0, 0]


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(T=0.0), "T"), (dict(T=-0.01), "T"), (dict(T=float("nan")), "T"), (dict(T=float("inf")), "T"),
        (dict(steps=0), "steps"), (dict(steps=-5), "steps"), (dict(steps=1.5), "steps"),
        (dict(batch_size=0), "batch_size"), (dict(width=0.0), "width"), (dict(width=-0.1), "width"),
        (dict(depth=0.0), "depth"), (dict(depth=float("nan")), "depth"), (dict(walkers=0), "walkers"),
        (dict(start=float("inf")), "start"), (dict(T="hot"), "T"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = dict(T=0.015, steps=100, batch_size=1, depth=1.0, width=0.1, walkers=10, seed=0) | kwargs
    with pytest.raises(ValueError, match=rf"^{name}="):
        simulate(**args)


@settings(max_examples=40, deadline=None)
@given(
    T=st.floats(0.001, 0.2), steps=st.integers(1, 300), B=st.integers(1, 130),
    depth=st.sampled_from([0.5, 1.0, 2.0]), width=st.sampled_from([0.05, 0.1, 0.15]),
    walkers=st.integers(1, 70), seed=st.integers(0, 2**63 - 1),
)
def test_escape_steps_are_in_range_or_sentinel(T, steps, B, depth, width, walkers, seed):
    esc = simulate(T, steps, B, depth, width, walkers, seed)
    assert esc.shape == (walkers,) and esc.dtype == np.int64
    assert np.all(((esc >= 1) & (esc <= steps)) | (esc == NOT_ESCAPED) | (esc == DIVERGED))
    s = summarize(esc, sorted({1, steps}), [1, steps + 1])
    assert s["n_escaped"][-1] == np.count_nonzero(esc > 0) == s["hist"].sum()
    assert np.all(s["exposure"] <= walkers * np.array(sorted({1, steps})))
