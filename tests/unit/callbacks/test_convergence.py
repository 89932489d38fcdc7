"""Convergence is judged per coefficient, in its own standard errors: a small coefficient cannot
hide behind a large one, and a direction collinear columns leave undetermined does not count."""

import numpy as np
import pytest

from linreg_pl.callbacks.report import SE_TOLERANCE, standard_errors_off
from linreg_pl.exact.solvers import Moments
from tests.helpers import lstsq_with_intercept


def regression(rng, n=6366):
    x = np.column_stack([rng.normal(size=n) * 100, rng.normal(size=n)])
    y = x @ [500.0, 0.3] + 7 + rng.normal(size=n)  # w[1] is small next to w[0] but well determined
    return x, y[:, None]


def test_a_small_coefficient_31_percent_off_is_not_converged():
    sm = pytest.importorskip("statsmodels.api")
    x, y = regression(np.random.default_rng(0))
    moments = Moments.of(x, y)
    weight, bias = lstsq_with_intercept(x, y)
    off = weight.copy()
    off[0, 1] *= 1.31
    # The old test, relative to the largest coefficient, called this converged:
    assert abs(off[0, 1] - weight[0, 1]) / np.abs(weight).max() < 1e-3
    bound = standard_errors_off(moments, (off, bias), (weight, bias))
    se = sm.OLS(y[:, 0], sm.add_constant(x)).fit().bse[2]  # statsmodels: the standard error of w[1]
    assert bound >= abs(off[0, 1] - weight[0, 1]) / se * (1 - 1e-9) and bound > SE_TOLERANCE
    assert standard_errors_off(moments, (weight, bias), (weight, bias)) == pytest.approx(0, abs=1e-6)


def test_an_undetermined_direction_of_collinear_columns_does_not_count():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 1))
    x = np.hstack([x, x])  # two equal columns: only w0 + w1 is determined
    y = 2 * x[:, :1] + 1 + rng.normal(size=(500, 1))
    moments = Moments.of(x, y)
    weight, bias = moments.solve()
    shifted = weight + np.array([[5.0, -5.0]])  # the same predictions
    assert standard_errors_off(moments, (shifted, bias), (weight, bias)) == pytest.approx(0, abs=1e-4)


def test_no_standard_errors_without_residual_degrees_of_freedom_or_noise():
    x = np.arange(3.0)[:, None] * [1.0, 2.0]
    y = x[:, :1] + 1
    assert standard_errors_off(Moments.of(x, y), (np.zeros((1, 2)), np.zeros(1)), Moments.of(x, y).solve()) is None
    x = np.arange(10.0)[:, None]
    moments = Moments.of(x, 3 * x + 1)  # an exact fit: every standard error is 0
    assert standard_errors_off(moments, (np.array([[3.1]]), np.array([1.0])), moments.solve()) is None
