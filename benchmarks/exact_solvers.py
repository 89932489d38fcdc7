"""Cost and accuracy of the exact least-squares paths against scikit-learn and statsmodels.

    python benchmarks/exact_solvers.py                        # 1e6 x 100, 3 repeats
    python benchmarks/exact_solvers.py --rows 100000 --features 20 --repeats 5

Rows, on the same float64 data (features with very different scales and offsets, one target):
  sklearn LinearRegression   LAPACK least squares on the whole matrix in memory (the baseline)
  statsmodels OLS            pinv (SVD) of [1, x]; with .bse, the standard errors
  linreg_pl normal           ExactLeastSquares(method="normal") fed in chunks, compute, solve
  linreg_pl qr               ExactLeastSquares(method="qr") (streaming TSQR), compute,
                             QRFactor.refined (as the data module: a second pass only where the
                             error estimate asks for one; not on this well-conditioned data), solve
  + inference                the same followed by ols_inference (standard errors, t, p, F, ...)
  + HC second pass           SandwichMeat over the rows again (HC1/HC3 standard errors)
Times are medians over repeats (the rows interleaved); ratios are against the baseline row in the
same run. Digits are the worst parameter's agreement with the QR path's answer (15 = all).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from linreg_pl.exact.solvers import ExactLeastSquares
from linreg_pl.exact.statistics import SandwichMeat, ols_inference

CHUNK_ROWS = 65536  # as the data module's train_chunks would hand them over


def make_data(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale, offset = rng.uniform(0.1, 100, features), rng.normal(0, 100, features)
    x = rng.normal(size=(rows, features)) * scale + offset
    y = x @ rng.normal(size=(features, 1)) + 3.0 + rng.normal(size=(rows, 1))
    return x, y


def chunks(x: np.ndarray, y: np.ndarray):
    for start in range(0, len(x), CHUNK_ROWS):
        yield x[start : start + CHUNK_ROWS], y[start : start + CHUNK_ROWS]


def ours(x: np.ndarray, y: np.ndarray, method: str, inference: bool = False, robust: bool = False) -> np.ndarray:
    metric = ExactLeastSquares(x.shape[1], y.shape[1], method=method)
    for x_chunk, y_chunk in chunks(x, y):
        metric.update(x_chunk, y_chunk)
    accumulator = metric.compute()
    if method == "qr":
        accumulator = accumulator.refined(chunks(x, y))
    weight, bias = accumulator.solve()
    if inference:
        meat = None
        if robust:
            second_pass = SandwichMeat(accumulator)
            for x_chunk, y_chunk in chunks(x, y):
                second_pass.update(x_chunk, y_chunk)
            meat = second_pass.compute()
        ols_inference(accumulator, [f"x{i}" for i in range(x.shape[1])], ["y"], meat=meat)
    return np.r_[bias, weight[0]]


def sklearn_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(x, y[:, 0])
    return np.r_[model.intercept_, model.coef_]


def statsmodels_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import statsmodels.api as sm

    result = sm.OLS(y[:, 0], sm.add_constant(x)).fit()
    _ = result.bse  # the standard errors, as ours with inference
    return result.params


def digits(estimate: np.ndarray, reference: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(np.minimum(15, -np.log10(np.abs(estimate - reference) / np.abs(reference))).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x, y = make_data(args.rows, args.features)
    rows = [
        ("sklearn LinearRegression", lambda: sklearn_fit(x, y)),
        ("linreg_pl qr", lambda: ours(x, y, "qr")),
        ("linreg_pl normal", lambda: ours(x, y, "normal")),
        ("statsmodels OLS (+ bse)", lambda: statsmodels_fit(x, y)),
        ("linreg_pl normal + inference", lambda: ours(x, y, "normal", inference=True)),
        ("linreg_pl qr + inference", lambda: ours(x, y, "qr", inference=True)),
        ("linreg_pl qr + inference + HC pass", lambda: ours(x, y, "qr", inference=True, robust=True)),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    answers: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # interleaved: a slow spell of the machine hits every row alike
        for name, function in rows:
            start = time.perf_counter()
            answers[name] = function()
            times[name].append(time.perf_counter() - start)
    baseline, reference = statistics.median(times[rows[0][0]]), answers["linreg_pl qr"]
    print(f"{args.rows} rows x {args.features} features, median of {args.repeats}; digits vs linreg_pl qr")
    print(f"{'row':<36}{'time s':>10}{'ratio':>9}{'digits':>8}")
    for name, _ in rows:
        seconds = statistics.median(times[name])
        print(f"{name:<36}{seconds:>10.3f}{seconds / baseline:>9.2f}{digits(answers[name], reference):>8.1f}")


if __name__ == "__main__":
    main()
