"""Inference and ridge selection from the one-pass accumulators, against statsmodels and brute force."""

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.datasets import load_diabetes, load_linnerud

from linreg_pl import Scaling
from linreg_pl.errors import InputError
from linreg_pl.exact.solvers import ExactLeastSquares, Moments, QRFactor
from linreg_pl.exact.statistics import (
    SandwichMeat,
    format_coefficient_table,
    least_squares_fit,
    ols_inference,
    prediction_intervals,
    ridge_path,
)

ACCUMULATORS = [Moments, QRFactor]


def random_problem(seed, n=300, d=5, t=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d) + rng.normal(0, 50, d)
    # Heteroskedastic noise, so that the robust standard errors differ from the classical ones.
    noise = rng.normal(size=(n, t)) * (1 + np.abs(x[:, :1]) / 50)
    y = x @ rng.normal(size=(d, t)) + rng.normal(size=t) + noise
    return x, y


def diabetes():
    data = load_diabetes()
    return data.data, data.target[:, None], list(data.feature_names), ["progression"]


def linnerud():
    data = load_linnerud()
    return data.data, data.target, list(data.feature_names), list(data.target_names)


PROBLEMS = {
    "diabetes": diabetes,
    "linnerud": linnerud,
    **{
        f"random{seed}": (lambda seed=seed: (*random_problem(seed), [f"x{i}" for i in range(5)], ["y0", "y1"]))
        for seed in range(4)
    },
}


def statsmodels_fit(x, y_column, fit_intercept=True, cov_type="nonrobust"):
    design = sm.add_constant(x, has_constant="add") if fit_intercept else x
    return sm.OLS(y_column, design).fit(cov_type=cov_type)


def assert_close(ours, theirs, rtol=1e-8):
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float), rtol=rtol, atol=0)


@pytest.mark.parametrize("accumulator", ACCUMULATORS, ids=lambda a: a.method)
@pytest.mark.parametrize("problem", PROBLEMS)
def test_every_statistic_matches_statsmodels(problem, accumulator):
    x, y, features, targets = PROBLEMS[problem]()
    inference = ols_inference(accumulator.of(x, y, batch_rows=97), features, targets, level=0.9)
    assert inference["n_observations"] == len(x)
    for j, name in enumerate(targets):
        reference = statsmodels_fit(x, y[:, j])
        ours = inference["targets"][name]
        assert ours["parameters"] == ["intercept", *features]
        assert inference["df_model"] == reference.df_model and inference["df_resid"] == reference.df_resid
        assert_close(ours["estimate"], reference.params)
        assert_close(ours["std_error"], reference.bse)
        assert_close(ours["t"], reference.tvalues)
        assert_close(ours["p_value"], reference.pvalues)
        interval = reference.conf_int(alpha=0.1)
        assert_close(ours["ci_low"], interval[:, 0])
        assert_close(ours["ci_high"], interval[:, 1])
        assert_close(ours["residual_std_error"], np.sqrt(reference.scale))
        assert_close(ours["rss"], reference.ssr)
        for key, value in [
            ("r_squared", reference.rsquared),
            ("adj_r_squared", reference.rsquared_adj),
            ("f_statistic", reference.fvalue),
            ("f_p_value", reference.f_pvalue),
            ("log_likelihood", reference.llf),
            ("aic", reference.aic),
            ("bic", reference.bic),
        ]:
            assert_close(ours[key], value)


@pytest.mark.parametrize("accumulator", ACCUMULATORS, ids=lambda a: a.method)
def test_through_the_origin_matches_statsmodels_without_constant(accumulator):
    x, y = random_problem(11, t=1)
    inference = ols_inference(accumulator.of(x, y), [f"x{i}" for i in range(5)], ["y"], fit_intercept=False)
    reference = statsmodels_fit(x, y[:, 0], fit_intercept=False)
    ours = inference["targets"]["y"]
    assert_close(ours["estimate"], reference.params)
    assert_close(ours["std_error"], reference.bse)
    assert_close(ours["r_squared"], reference.rsquared)  # uncentred, as statsmodels without a constant
    assert_close(ours["f_statistic"], reference.fvalue)
    assert_close(ours["aic"], reference.aic)


@pytest.mark.parametrize("accumulator", ACCUMULATORS, ids=lambda a: a.method)
@pytest.mark.parametrize("problem", ["diabetes", "random0", "random1"])
def test_robust_standard_errors_match_statsmodels(problem, accumulator):
    x, y, features, targets = PROBLEMS[problem]()
    first = accumulator.of(x, y)
    meat = SandwichMeat(first)
    for start in range(0, len(x), 64):  # the second pass, in chunks
        meat.update(x[start : start + 64], y[start : start + 64])
    inference = ols_inference(first, features, targets, meat=meat.compute())
    for j, name in enumerate(targets):
        for kind in ("hc1", "hc3"):
            reference = statsmodels_fit(x, y[:, j], cov_type=kind.upper())
            ours = inference["targets"][name][kind]
            assert_close(ours["std_error"], reference.bse)
            assert_close(ours["p_value"], reference.pvalues)
            assert not np.allclose(ours["std_error"], inference["targets"][name]["std_error"], rtol=1e-3)


def test_inference_is_json_ready_and_says_none_where_a_statistic_does_not_exist():
    import json

    x = np.array([[0.0], [1.0], [2.0]])
    inference = ols_inference(QRFactor.of(x, 2 * x + 1), ["x"], ["y"])  # exact fit: rss 0, t infinite
    fit = inference["targets"]["y"]
    assert fit["rss"] == pytest.approx(0.0, abs=1e-20)
    assert fit["r_squared"] == pytest.approx(1.0)
    json.dumps(inference, allow_nan=False)  # raises on NaN or infinity


def test_the_table_shows_every_parameter_and_the_fit_statistics():
    x, y, features, targets = linnerud()
    text = format_coefficient_table(ols_inference(Moments.of(x, y), features, targets))
    for name in targets:
        assert f"{name}: n 20, df 3/16" in text
    assert text.count("\nintercept ") == 3 and text.count("\nChins ") == 3
    assert "[0.025" in text and "0.975]" in text


@pytest.mark.parametrize("level", [0.0, 1.0, 95])
def test_level_outside_zero_one_is_an_input_error(level):
    x, y = random_problem(0, t=1)
    with pytest.raises(InputError, match="level must be in"):
        ols_inference(Moments.of(x, y), [f"x{i}" for i in range(5)], ["y"], level=level)


def brute_force_gcv(x, y, scaling, l2):
    """GCV from the explicit hat matrix of the model's ridge problem (intercept not penalized)."""
    n, t = y.shape
    xs = (x - scaling.feature_mean) / scaling.feature_scale
    ys = (y - scaling.target_mean) / scaling.target_scale
    centred = xs - xs.mean(axis=0)
    hat = np.full((n, n), 1 / n) + centred @ np.linalg.solve(
        centred.T @ centred + n * t * l2 * np.eye(x.shape[1]), centred.T
    )
    residual = ys - hat @ ys
    return (residual**2).mean(axis=0) / (1 - np.trace(hat) / n) ** 2, np.trace(hat)


@pytest.mark.parametrize("accumulator", ACCUMULATORS, ids=lambda a: a.method)
def test_gcv_equals_the_explicit_hat_matrix_computation(accumulator):
    x, y = random_problem(5, n=60, d=8, t=2)
    y = y + 5 * np.random.default_rng(1).normal(size=y.shape)  # noisy: shrinkage helps
    scaling = Scaling(x.mean(0), x.std(0), y.mean(0), y.std(0))
    grid = [0.0, 1e-3, 1e-2, 0.1, 1.0]
    path = ridge_path(accumulator.of(x, y), grid, scaling)
    for i, l2 in enumerate(grid):
        expected, trace = brute_force_gcv(x, y, scaling, l2)
        np.testing.assert_allclose([row[i] for row in path["gcv_per_target"]], expected, rtol=1e-9)
        assert path["gcv"][i] == pytest.approx(expected.mean(), rel=1e-9)
        assert path["effective_df"][i] == pytest.approx(trace, rel=1e-9)
    assert path["best_gcv"] == min(path["gcv"])
    assert path["best_l2"] == grid[int(np.argmin(path["gcv"]))]


def test_the_gcv_best_l2_is_the_model_optimum_of_that_l2():
    # The curve's penalty is the model's: at the best l2 the solver's ridge fit has the GCV's residuals.
    x, y = random_problem(6, n=80, d=6, t=1)
    scaling = Scaling(x.mean(0), x.std(0), y.mean(0), y.std(0))
    moments = Moments.of(x, y)
    path = ridge_path(moments, [0.05], scaling)
    weight, bias = moments.solve(scaling, l2=0.05)
    mse_s = np.mean(((x @ weight.T + bias - y) / scaling.target_scale) ** 2)
    _, trace = brute_force_gcv(x, y, scaling, 0.05)
    assert path["gcv"][0] == pytest.approx(mse_s / (1 - trace / len(x)) ** 2, rel=1e-9)


@pytest.mark.parametrize("grid", [[], [-1.0], [float("nan")]])
def test_bad_l2_grid_is_an_input_error(grid):
    x, y = random_problem(0, t=1)
    with pytest.raises(InputError, match="l2_grid"):
        ridge_path(Moments.of(x, y), grid)


def test_ridge_path_figure_marks_the_best_l2():
    from linreg_pl.callbacks.plots import ridge_path_figure

    x, y = random_problem(2, n=60, d=4, t=1)
    path = ridge_path(Moments.of(x, y), [0.0, 0.01, 0.1, 1.0])
    figure = ridge_path_figure(path)
    axes = figure.axes[0]
    assert list(axes.lines[0].get_ydata()) == path["gcv"]
    assert path["best_l2"] in axes.lines[1].get_xdata()


def test_metric_result_feeds_inference():
    x, y, features, targets = diabetes()
    metric = ExactLeastSquares(10, 1, method="qr")
    for start in range(0, len(x), 100):
        metric.update(x[start : start + 100], y[start : start + 100])
    reference = statsmodels_fit(x, y[:, 0])
    inference = ols_inference(metric.compute(), features, targets)
    assert_close(inference["targets"]["progression"]["std_error"], reference.bse)


@pytest.mark.parametrize("accumulator", ACCUMULATORS, ids=lambda a: a.method)
def test_weighted_inference_and_intervals_equal_statsmodels_wls(accumulator):
    x, y = random_problem(7, t=1)
    weight = np.random.default_rng(3).uniform(0.2, 5, len(x))
    summary = accumulator.of(x, y, weight, batch_rows=50)
    expected = sm.WLS(y[:, 0], sm.add_constant(x), weights=weight).fit()
    meat = SandwichMeat(summary)
    meat.update(x, y, weight)
    fit = ols_inference(summary, [f"x{i}" for i in range(5)], ["y"], meat=meat.compute())["targets"]["y"]
    np.testing.assert_allclose(fit["estimate"], expected.params, rtol=1e-8)
    np.testing.assert_allclose(fit["std_error"], expected.bse, rtol=1e-8)
    for ours, theirs in (("r_squared", "rsquared"), ("f_statistic", "fvalue"), ("log_likelihood", "llf")):
        assert fit[ours] == pytest.approx(getattr(expected, theirs), rel=1e-9), ours
    for kind in ("HC1", "HC3"):
        np.testing.assert_allclose(fit[kind.lower()]["std_error"], expected.get_robustcov_results(kind).bse, rtol=1e-8)
    # New rows: without a weight a new observation has weight 1; with one, sigma² / w.
    new = x[:7] + 0.5
    frame = expected.get_prediction(sm.add_constant(new), weights=weight[:7]).summary_frame(alpha=0.1)
    bands = prediction_intervals(least_squares_fit(summary), new, 0.9, weight[:7])
    for ours, theirs in (("mean", "mean"), ("mean_lower", "mean_ci_lower"), ("lower", "obs_ci_lower")):
        np.testing.assert_allclose(bands[ours][:, 0], frame[theirs], rtol=1e-8, err_msg=ours)
    unweighted = expected.get_prediction(sm.add_constant(new)).summary_frame(alpha=0.1)
    np.testing.assert_allclose(
        prediction_intervals(least_squares_fit(summary), new, 0.9)["upper"][:, 0], unweighted["obs_ci_upper"], rtol=1e-8
    )
