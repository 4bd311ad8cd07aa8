"""Schedules: pure functions of the step, with endpoints, clamping and monotonicity."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secateurs.core.schedules import constant, cosine, exponential, linear, piecewise, polynomial

FAST = settings(max_examples=40, deadline=None)

ramps = st.tuples(st.integers(0, 50), st.integers(1, 100)).map(lambda t: (t[0], t[0] + t[1]))
values = st.floats(0.01, 10.0)

FACTORIES = {
    "linear": linear,
    "polynomial": polynomial,
    "polynomial1": lambda s, e, a, b: polynomial(s, e, a, b, power=1.0),
    "cosine": cosine,
    "exponential": exponential,
}


@FAST
@given(ramp=ramps, v0=values, v1=values, kind=st.sampled_from(sorted(FACTORIES)))
def test_endpoints_clamping_and_monotonicity(ramp, v0, v1, kind):
    start, end = ramp
    f = FACTORIES[kind](start, end, v0, v1)
    assert f(start) == pytest.approx(v0, rel=1e-12)
    assert f(end) == pytest.approx(v1, rel=1e-12)
    for step in (-5, 0, start - 1, start):
        if step <= start:
            assert f(step) == pytest.approx(v0, rel=1e-12)  # clamped before the start
    for step in (end, end + 1, end + 1000):
        assert f(step) == pytest.approx(v1, rel=1e-12)  # clamped after the end
    seq = [f(s) for s in range(start - 2, end + 3)]
    lo, hi = min(v0, v1), max(v0, v1)
    assert all(lo - 1e-9 <= v <= hi + 1e-9 for v in seq)
    diffs = [b - a for a, b in zip(seq, seq[1:])]
    if v1 >= v0:
        assert all(d >= -1e-12 for d in diffs)
    else:
        assert all(d <= 1e-12 for d in diffs)


@FAST
@given(ramp=ramps, si=st.floats(0.0, 0.5), sf=st.floats(0.5, 0.99), power=st.sampled_from([1.0, 2.0, 3.0]))
def test_polynomial_closed_form(ramp, si, sf, power):
    start, end = ramp
    f = polynomial(start, end, si, sf, power)
    for step in range(start, end + 1):
        t = (step - start) / (end - start)
        assert f(step) == pytest.approx(sf + (si - sf) * (1 - t) ** power, abs=1e-12)


def test_cubic_schedule_of_zhu_and_gupta():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with t0 = 10, n dt = 100, s_i = 0, s_f = 0.9.
    f = polynomial(10, 110, 0.0, 0.9)
    assert f(10) == 0.0
    assert f(60) == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert f(35) == pytest.approx(0.9 * (1 - 0.75**3))
    assert f(110) == pytest.approx(0.9)
    # Fast early, slow late: the first quarter removes more than the last one.
    assert f(35) - f(10) > f(110) - f(85)
    # Default power is 3.
    assert polynomial(0, 10, 0.0, 1.0)(5) == pytest.approx(1 - 0.5**3)


def test_linear_and_cosine_midpoints():
    assert linear(0, 10, 0.0, 1.0)(5) == pytest.approx(0.5)
    assert linear(10, 20, 2.0, 4.0)(15) == pytest.approx(3.0)
    assert cosine(0, 10, 1.0, 0.0)(5) == pytest.approx(0.5)
    assert cosine(0, 10, 1.0, 0.0)(2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


def test_exponential_is_geometric_and_validates():
    f = exponential(0, 10, 1.0, 100.0)
    assert f(5) == pytest.approx(10.0)
    assert f(2) * f(8) == pytest.approx(f(5) ** 2)
    with pytest.raises(ValueError):
        exponential(0, 10, 0.0, 1.0)
    with pytest.raises(ValueError):
        exponential(0, 10, 1.0, -1.0)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_degenerate_ramp_is_a_step(kind):
    f = FACTORIES[kind](20, 20, 1.0, 5.0)
    assert f(19) == pytest.approx(1.0)
    assert f(20) == pytest.approx(5.0)
    assert f(1000) == pytest.approx(5.0)
    g = FACTORIES[kind](30, 20, 1.0, 5.0)  # end before start: the value switches at end
    assert g(19) == pytest.approx(1.0) and g(20) == pytest.approx(5.0)


def test_constant():
    f = constant(0.3)
    assert [f(s) for s in (-1, 0, 10**9)] == [0.3, 0.3, 0.3]


def test_piecewise():
    f = piecewise([10, 20], [1.0, 0.1, 0.01])
    assert f(-1) == 1.0 and f(0) == 1.0 and f(9) == 1.0
    assert f(10) == 0.1 and f(19) == 0.1
    assert f(20) == 0.01 and f(10**6) == 0.01
    assert piecewise([], [7.0])(123) == 7.0
    with pytest.raises(ValueError):
        piecewise([10, 20], [1.0, 0.1])
    with pytest.raises(ValueError):
        piecewise([10], [1.0, 0.1, 0.01])


@FAST
@given(bounds=st.lists(st.integers(0, 100), min_size=1, max_size=5, unique=True).map(sorted), step=st.integers(-10, 120))
def test_piecewise_property(bounds, step):
    vals = [float(i) for i in range(len(bounds) + 1)]
    f = piecewise(bounds, vals)
    assert f(step) == float(sum(1 for b in bounds if step >= b))


def test_schedules_are_pure_functions_of_the_step():
    schedules = [polynomial(5, 50, 0.0, 0.8), cosine(0, 30, 1.0, 0.0), linear(3, 9, 0.0, 1.0), piecewise([4, 8], [1, 2, 3])]
    steps = list(range(-3, 60))
    for f in schedules:
        forward = [f(s) for s in steps]
        shuffled = steps[:]
        random.Random(0).shuffle(shuffled)
        values = {s: f(s) for s in shuffled}
        assert [values[s] for s in steps] == forward
        assert [f(s) for s in steps] == forward  # calling again changes nothing
