import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from linreg_pl import Scaling
from linreg_pl.errors import InputError
from linreg_pl.exact.solvers import ExactLeastSquares, Moments, QRFactor, exact_least_squares, merge_vectors
from tests.helpers import free_port, lstsq_with_intercept

NIST = Path(__file__).resolve().parents[2] / "data" / "nist_strd"  # public domain; see its README


def problem(seed, n=500, d=4, t=2, offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d) + offset
    y = x @ rng.normal(size=(d, t)) + rng.normal(size=t) + rng.normal(size=(n, t))
    return x, y


ACCUMULATORS = [Moments, QRFactor]
by_method = pytest.mark.parametrize("accumulator", ACCUMULATORS, ids=lambda a: a.method)


@pytest.mark.parametrize("method", ["normal", "qr"])
@pytest.mark.parametrize("seed", range(5))
def test_matches_numpy_lstsq_on_random_problems(seed, method):
    x, y = problem(seed, offset=1000.0 * seed)
    weight, bias = exact_least_squares(x, y, method=method)
    reference_weight, reference_bias = lstsq_with_intercept(x, y)
    np.testing.assert_allclose(weight, reference_weight, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bias, reference_bias, rtol=1e-8, atol=1e-8)


@by_method
@pytest.mark.parametrize("l2", [0.01, 1.0])
def test_l2_matches_augmented_lstsq_in_the_standardized_space(l2, accumulator):
    x, y = problem(7, t=1)
    scaling = Scaling(x.mean(0), x.std(0), y.mean(0), y.std(0))
    weight, bias = accumulator.of(x, y).solve(scaling, l2=l2)
    # mean((Xs w + b - ys)²) + l2 |w|²  <=>  lstsq on [Xs 1; sqrt(n l2) I 0] against [ys; 0].
    n, d = x.shape
    xs, ys = (x - scaling.feature_mean) / scaling.feature_scale, (y - scaling.target_mean) / scaling.target_scale
    design = np.block([[xs, np.ones((n, 1))], [np.sqrt(n * l2) * np.eye(d), np.zeros((d, 1))]])
    solution = np.linalg.lstsq(design, np.vstack([ys, np.zeros((d, 1))]), rcond=None)[0]
    expected = scaling.to_original_units(solution[:d].T, solution[d])
    np.testing.assert_allclose(weight, expected[0], rtol=1e-9)
    np.testing.assert_allclose(bias, expected[1], rtol=1e-9)
    assert not np.allclose(weight, exact_least_squares(x, y)[0], rtol=1e-3)  # the penalty mattered


def gram(accumulator):
    """The centred cross-products, whatever the accumulator holds (C, or R with RᵀR = C)."""
    return accumulator.comoment if isinstance(accumulator, Moments) else accumulator.r.T @ accumulator.r


@by_method
def test_streaming_batches_and_merging_equal_one_pass(accumulator):
    x, y = problem(3, n=1001, offset=500.0)
    centred = np.hstack([x, y]) - np.hstack([x, y]).mean(axis=0)
    whole = accumulator.of(x, y, batch_rows=10**6)
    streamed = accumulator.of(x, y, batch_rows=37)
    merged = accumulator.of(x[:400], y[:400]).merge(accumulator.of(x[400:], y[400:]))
    for result in (whole, streamed, merged):
        assert result.count == 1001
        np.testing.assert_allclose(result.mean, np.hstack([x, y]).mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(gram(result), centred.T @ centred, rtol=1e-10, atol=1e-9)


def test_qr_factor_is_upper_triangular():
    x, y = problem(8, n=200)
    r = QRFactor.of(x, y, batch_rows=33).r
    assert np.array_equal(r, np.triu(r))


@by_method
def test_objective_equals_the_direct_mean_squared_error(accumulator):
    x, y = problem(4)
    weight, bias = np.full((2, 4), 0.3), np.array([1.0, -2.0])
    direct = np.mean((x @ weight.T + bias - y) ** 2)
    assert accumulator.of(x, y).objective(weight, bias) == pytest.approx(direct, rel=1e-10)


@by_method
def test_collinear_columns_are_detected_and_still_give_a_least_squares_fit(accumulator):
    x, y = problem(10, d=3, t=1)
    x = np.hstack([x, x[:, :1] * 2.0])  # the fourth column is twice the first
    result = accumulator.of(x, y)
    weight, bias = result.solve()
    reference_weight, reference_bias = lstsq_with_intercept(x, y)
    np.testing.assert_allclose(x @ weight.T + bias, x @ reference_weight.T + reference_bias, rtol=1e-8)
    assert result.factor().rank == 3


@by_method
def test_without_intercept(accumulator):
    x, y = problem(5, t=1)
    weight, bias = accumulator.of(x, y).solve(fit_intercept=False)
    np.testing.assert_allclose(weight.T, np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-9)
    assert bias.tolist() == [0.0]


@pytest.mark.parametrize("method", ["normal", "qr"])
def test_metric_updates_in_chunks_equal_one_pass(method):
    x, y = problem(12, n=700, offset=100.0)
    metric = ExactLeastSquares(4, 2, method=method)
    for start in range(0, 700, 128):  # numpy chunks and torch chunks alike
        chunk = slice(start, start + 128)
        metric.update(x[chunk], torch.from_numpy(y[chunk]) if start % 256 else y[chunk])
    result = metric.compute()
    assert result.method == method and result.count == 700
    assert metric.packed.dtype == torch.float64
    one_pass = exact_least_squares(x, y, method=method)
    for ours, expected in zip(result.solve(), one_pass, strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-11)


@pytest.mark.parametrize("method", ["normal", "qr"])
def test_dist_reduce_fx_merges_gathered_states_like_one_process(method):
    # What torchmetrics hands the reduction after an all-gather: one packed state per rank, stacked.
    x, y = problem(13, n=900)
    shares = [slice(0, 250), slice(250, 251), slice(251, 251), slice(251, 900)]  # one rank has no rows
    states = []
    for share in shares:
        metric = ExactLeastSquares(4, 2, method=method)
        metric.update(x[share], y[share])
        states.append(metric.packed)
    accumulator = ExactLeastSquares(4, 2, method=method).accumulator_type
    merged = accumulator.from_vector(4, merge_vectors(accumulator, 4, torch.stack(states)).numpy())
    assert merged.count == 900
    for ours, expected in zip(merged.solve(), exact_least_squares(x, y), strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_metric_merge_state_combines_two_metrics():
    x, y = problem(14, n=300)
    first, second = ExactLeastSquares(4, 2, method="qr"), ExactLeastSquares(4, 2, method="qr")
    first.update(x[:100], y[:100])
    second.update(x[100:], y[100:])
    first.merge_state(second)
    np.testing.assert_allclose(first.compute().solve()[0], exact_least_squares(x, y)[0], rtol=1e-10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_features": 0, "n_targets": 1}, "n_features must be a positive integer"),
        ({"n_features": 2, "n_targets": 1, "method": "svd"}, r"method must be one of \['normal', 'qr'\], got 'svd'"),
    ],
)
def test_metric_arguments_are_validated(arguments, message):
    with pytest.raises(InputError, match=message):
        ExactLeastSquares(**arguments)


def test_metric_rejects_chunks_of_the_wrong_shape():
    metric = ExactLeastSquares(3, 1)
    with pytest.raises(InputError, match=r"shapes \(m, 3\) and \(m, 1\); got \(5, 2\)"):
        metric.update(np.zeros((5, 2)), np.zeros((5, 1)))


def nist_sets():
    return sorted(NIST.glob("*.json"))


def load_nist(answer):
    spec = json.loads(answer.read_text())
    frame = pd.read_csv(answer.with_suffix(".csv"))
    x, y = frame[spec["features"]].to_numpy(float), frame[[spec["target"]]].to_numpy(float)
    certified = np.array([spec["certified"]["coefficients"][f] for f in spec["features"]])
    if spec["has_intercept"]:
        certified = np.r_[spec["certified"]["intercept"], certified]
    return spec, x, y, certified


def significant_digits(estimate, certified):
    with np.errstate(divide="ignore"):
        return np.minimum(15, -np.log10(np.abs(estimate - certified) / np.abs(certified)))


def nist_digits(accumulator, spec, certified):
    weight, bias = accumulator.solve(fit_intercept=spec["has_intercept"])
    estimate = np.r_[bias, weight[0]] if spec["has_intercept"] else weight[0]
    return significant_digits(estimate, certified).min()


def lapack_digits(x, y, spec, certified):
    """Independent float64 baseline: LAPACK's SVD least squares on the whole column-scaled design."""
    design = np.hstack([np.ones((len(x), 1)), x]) if spec["has_intercept"] else x
    norms = np.linalg.norm(design, axis=0)
    estimate = np.linalg.lstsq(design / norms, y[:, 0], rcond=None)[0] / norms
    return significant_digits(estimate, certified).min()


def centred_condition_number(x, spec):
    design = x - x.mean(axis=0) if spec["has_intercept"] else x
    return np.linalg.cond(design / np.linalg.norm(design, axis=0))


@pytest.mark.parametrize("answer", nist_sets(), ids=lambda p: p.stem if p else "absent")
def test_nist_qr_path_reaches_seven_digits_on_every_set(answer):
    """The QR path (one pass, then the refinement pass), from all rows at once and merged from two
    processes' halves, gets >= 7 significant digits on every parameter of every set."""
    spec, x, y, certified = load_nist(answer)
    half = len(x) // 2
    halves = [(x[:half], y[:half]), (x[half:], y[half:])]
    one_pass = QRFactor.of(x, y).refined([(x, y)])
    two_halves = QRFactor.of(*halves[0]).merge(QRFactor.of(*halves[1])).refined(halves)
    assert nist_digits(one_pass, spec, certified) >= 7
    assert nist_digits(two_halves, spec, certified) >= 7


def test_refinement_recovers_the_digits_a_float64_solve_loses_on_wampler5():
    """Wampler5's residuals are ~1e7 times its fit: float64 QR alone, like LAPACK's SVD solve of
    the whole matrix, loses the 7th digit; the extended-precision refinement pass brings it back."""
    answer = NIST / "wampler5.json"
    if not answer.is_file():
        pytest.skip(f"{answer} is absent")
    spec, x, y, certified = load_nist(answer)
    unrefined = QRFactor.of(x, y)
    assert nist_digits(unrefined, spec, certified) < 7
    assert lapack_digits(x, y, spec, certified) < 7
    assert nist_digits(unrefined.refined([(x, y)]), spec, certified) >= 9


def test_refinement_reads_nothing_where_the_first_pass_is_accurate():
    """Well-conditioned data with small residuals: the error estimate is ~1e-16, so no second
    pass is made (streamed files are not read again) and the factor is returned as is."""
    x, y = problem(0, offset=100.0)
    factor = QRFactor.of(x, y)

    def unread():
        raise AssertionError("the rows were read again")
        yield

    assert factor.error_estimate() < 1e-14
    assert factor.refined(unread()) is factor


def test_refinement_is_skipped_where_it_cannot_contract():
    """Refinement shrinks the error by ~κ²ε: with κ²ε >= 1, or dependent columns, the factor is
    returned unchanged (the step could only add error)."""
    t = np.linspace(0, 1, 50)[:, None]
    ill = np.hstack([t, t + 1e-9 * np.sin(7 * t)])  # κ ≈ 1e9 after centring and equilibration
    y = ill @ [[1.0], [2.0]] + np.cos(3 * t)
    factor = QRFactor.of(ill, y)
    assert factor.refined([(ill, y)]) is factor
    dependent = np.hstack([t, 2 * t])
    factor = QRFactor.of(dependent, y)
    assert factor.refined([(dependent, y)]) is factor


def test_datamodule_qr_statistics_are_refined(tmp_path):
    """The report's QR reference is the refined one: the data module makes the second pass."""
    answer = NIST / "wampler5.json"
    if not answer.is_file():
        pytest.skip(f"{answer} is absent")
    from linreg_pl.data.csv import CSVSource
    from linreg_pl.datamodule import RegressionDataModule

    spec, x, y, certified = load_nist(answer)
    source = CSVSource(path=str(answer.with_suffix(".csv")), target=spec["target"], features=spec["features"])
    datamodule = RegressionDataModule(source=source, val_fraction=0.0, test_fraction=0.0)
    assert nist_digits(datamodule.train_statistics("qr"), spec, certified) >= 7


@pytest.mark.parametrize("answer", nist_sets(), ids=lambda p: p.stem if p else "absent")
def test_nist_normal_path_gets_what_its_condition_number_allows_and_flags_the_rest(answer):
    """The normal equations square the condition number κ of the centred, equilibrated design:
    they must reach min(7, 15 - 2 log10 κ - 2.5) digits (7 on every set of lower and average
    difficulty). Where that leaves nothing (Filip, κ ≈ 4e9), the solve must say it could not
    resolve the columns (rank below the number of features), so the caller can switch to "qr"."""
    spec, x, y, certified = load_nist(answer)
    moments = Moments.of(x, y)
    allowed = np.floor(min(7.0, 15 - 2 * np.log10(centred_condition_number(x, spec)) - 2.5))
    if spec["difficulty"] in ("lower", "average"):
        assert allowed == 7
    if allowed >= 1:
        assert nist_digits(moments, spec, certified) >= allowed
    else:
        assert moments.factor(fit_intercept=spec["has_intercept"]).rank < x.shape[1]
        assert QRFactor.of(x, y).factor(fit_intercept=spec["has_intercept"]).rank == x.shape[1]


@pytest.mark.parametrize("answer", nist_sets(), ids=lambda p: p.stem if p else "absent")
def test_nist_certified_statistics_from_the_qr_path(answer):
    """Standard errors, residual SD, R² and F against NIST's certified values: >= 7 digits
    (Wampler1 and 2 fit exactly: their certified SEs and residual SD are 0, R² is 1)."""
    from linreg_pl.exact.statistics import ols_inference

    spec, x, y, _ = load_nist(answer)
    certified = spec["certified"]
    fit = ols_inference(QRFactor.of(x, y), spec["features"], ["y"], fit_intercept=spec["has_intercept"])
    fit = fit["targets"]["y"]
    assert fit["r_squared"] == pytest.approx(certified["r_squared"], rel=1e-7)
    if certified["residual_sd"] == 0:
        assert fit["residual_std_error"] < 1e-8 * np.abs(y).max()
        return
    assert significant_digits(np.array(fit["std_error"]), np.array(certified["parameter_std_errors"])).min() >= 7
    assert significant_digits(fit["residual_std_error"], certified["residual_sd"]) >= 7
    assert significant_digits(fit["f_statistic"], certified["anova"]["f_statistic"]) >= 7


def _metric_in_process(rank, world_size, port, method, x, y, queue):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    metric = ExactLeastSquares(x.shape[1], y.shape[1], method=method)
    share = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
    for start in range(share.start, share.stop, 50):  # chunks, as train_chunks yields them
        metric.update(x[start : min(start + 50, share.stop)], y[start : min(start + 50, share.stop)])
    merged = metric.compute()
    queue.put((rank, merged.count, merged.solve()))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["normal", "qr"])
def test_two_process_metric_equals_one_process(method):
    x, y = problem(9, n=301, offset=10.0)
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(_metric_in_process, args=(2, free_port(), method, x, y, queue), nprocs=2, start_method="spawn")
    results = {rank: (count, solution) for rank, count, solution in (queue.get() for _ in range(2))}
    expected = exact_least_squares(x, y, method=method)
    for rank in (0, 1):
        count, (weight, bias) = results[rank]
        assert count == 301  # each rank sees every process's rows after compute
        np.testing.assert_allclose(weight, expected[0], rtol=1e-10)
        np.testing.assert_allclose(bias, expected[1], rtol=1e-10)


@by_method
def test_integer_weights_equal_repeated_rows(accumulator):
    # A weight of k is k copies of the row: an oracle that needs no weighted formula.
    x, y = problem(11, n=301, offset=1e4)
    weight = np.random.default_rng(1).integers(0, 4, len(x)).astype(float)
    weighted = accumulator.of(x, y, weight, batch_rows=64)  # chunks merge, some with zero weight sum
    repeated = accumulator.of(np.repeat(x, weight.astype(int), axis=0), np.repeat(y, weight.astype(int), axis=0))
    assert weighted.count == len(x) and weighted.weight_sum == repeated.count
    np.testing.assert_allclose(weighted.mean, repeated.mean, rtol=1e-12)
    for l2 in (0.0, 0.01):
        for got, want in zip(weighted.solve(l2=l2), repeated.solve(l2=l2), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    w, b = repeated.solve()
    assert weighted.objective(w, b) == pytest.approx(repeated.objective(w, b), rel=1e-10)


def test_weighted_metric_and_refinement_match_a_weighted_lstsq():
    x, y = problem(12, n=400)
    weight = np.random.default_rng(2).uniform(0, 3, len(x))
    metric = ExactLeastSquares(x.shape[1], y.shape[1], "qr")
    for start in range(0, len(x), 128):
        metric.update(x[start : start + 128], y[start : start + 128], weight[start : start + 128])
    root = np.sqrt(weight)[:, None]
    # Independent: numpy's least squares on the rows scaled by sqrt(w), the constant column too.
    solution = np.linalg.lstsq(np.hstack([x, np.ones((len(x), 1))]) * root, y * root, rcond=None)[0]
    refined = metric.compute().refined([(x, y, weight)])
    for accumulator in (metric.compute(), refined):
        weight_hat, bias_hat = accumulator.solve()
        np.testing.assert_allclose(weight_hat, solution[:-1].T, rtol=1e-9)
        np.testing.assert_allclose(bias_hat, solution[-1], rtol=1e-9)
    np.testing.assert_allclose(exact_least_squares(x, y, weight=weight)[0], solution[:-1].T, rtol=1e-9)
