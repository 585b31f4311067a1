"""The seed post's geometry facts (DESIGN.md section 1)."""

import numpy as np
import pytest

from pipeline.model.landscape import find_pit, g0, g1, gpit, l0, l1


def test_stationary_points_of_l1_match_the_post():
    pit = find_pit(1.0, 0.1)
    assert round(pit.w_start, 3) == 1.004
    assert round(pit.w_barrier, 3) == 1.196
    assert abs(g1(pit.w_start)) < 1e-12 and abs(g1(pit.w_barrier)) < 1e-12


def test_gradients_are_derivatives_of_losses():
    w = np.linspace(0.5, 2.5, 101)
    h = 1e-6
    for depth, width in [(1.0, 0.1), (0.5, 0.15), (2.0, 0.05)]:
        num0 = (l0(w + h) - l0(w - h)) / (2 * h)
        num1 = (l1(w + h, depth, width) - l1(w - h, depth, width)) / (2 * h)
        np.testing.assert_allclose(g0(w), num0, atol=1e-6)
        np.testing.assert_allclose(g1(w, depth, width), num1, atol=2e-4 * depth / width**2)
        np.testing.assert_allclose(g1(w, depth, width), g0(w) + gpit(w, depth, width))


def _l0_steps(w, n, T=0.05):
    for _ in range(n):
        w = w - T * g0(w)
    return w


def test_five_l0_steps_leave_the_pit_four_do_not():
    pit = find_pit(1.0, 0.1)
    assert round(_l0_steps(1.004, 5), 3) == 1.201
    assert _l0_steps(1.004, 5) > pit.w_barrier
    assert _l0_steps(1.004, 4) < pit.w_barrier


def test_pit_is_minimum_and_barrier_is_maximum():
    for depth, width in [(1.0, 0.1), (0.5, 0.1), (2.0, 0.1), (1.0, 0.15), (1.0, 0.01), (3.0, 0.3)]:
        pit = find_pit(depth, width)
        eps = 1e-4 * width
        assert l1(pit.w_start - eps, depth, width) > l1(pit.w_start, depth, width) < l1(pit.w_start + eps, depth, width)
        assert l1(pit.w_barrier - eps, depth, width) < l1(pit.w_barrier, depth, width) > l1(pit.w_barrier + eps, depth, width)
        assert pit.w_start < pit.w_barrier < 2.0


@pytest.mark.parametrize("depth,width", [(0.01, 0.1), (1.0, 1.0), (5.0, 0.5)])
def test_no_pit_is_a_clear_error(depth, width):
    with pytest.raises(ValueError, match=rf"depth={depth}.*width={width}.*no pit"):
        find_pit(depth, width)


@pytest.mark.parametrize("depth,width", [(0.0, 0.1), (-1.0, 0.1), (1.0, 0.0), (float("nan"), 0.1), (1.0, float("inf"))])
def test_non_positive_or_non_finite_geometry_is_refused(depth, width):
    with pytest.raises(ValueError, match="depth|width"):
        find_pit(depth, width)
