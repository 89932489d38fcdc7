"""Right by default: a CSV run with no option but the file and the target reaches least squares."""

import numpy as np
import pandas as pd
import pytest

from linreg_pl import CSVSource, RegressionDataModule
from tests.helpers import lstsq_with_intercept

# (rows, features, log10 of the smallest and largest feature scale, collinear pair, seed)
SHAPES = [
    (15, 1, (0, 0), False, 0),
    (15, 3, (-3, 6), False, 1),
    (200, 5, (-3, 6), False, 0),
    (200, 5, (-3, 6), False, 1),
    (200, 5, (-3, 6), False, 2),
    pytest.param(1000, 20, (0, 0), True, 0, marks=pytest.mark.slow),
    pytest.param(100_000, 50, (-2, 3), False, 0, marks=pytest.mark.slow),
]


def write_csv(path, rows, features, scales, collinear, seed):
    rng = np.random.default_rng(seed)
    scale = np.logspace(*scales, features)
    x = rng.normal(size=(rows, features)) * scale + rng.normal(size=features) * scale
    if collinear:  # two nearly identical columns
        x[:, 1] = x[:, 0] + 1e-3 * rng.normal(size=rows)
    weight = rng.normal(size=features) / scale  # every column matters about equally
    y = x @ weight + 3.0 + 0.5 * rng.normal(size=rows)
    pd.DataFrame(np.column_stack([x, y]), columns=[f"f{i}" for i in range(features)] + ["y"]).to_csv(path, index=False)


@pytest.mark.parametrize("rows, features, scales, collinear, seed", SHAPES)
def test_default_csv_run_reaches_the_least_squares_optimum(train_run, in_tmp, rows, features, scales, collinear, seed):
    write_csv(in_tmp / "data.csv", rows, features, scales, collinear, seed)
    summary = train_run("--data.source=CSVSource", "--data.source.path=data.csv", "--data.source.target=y")
    # Independently: numpy's SVD least squares on the same training rows.
    x, y = RegressionDataModule(CSVSource("data.csv", "y")).arrays("train")
    exact_weight, exact_bias = lstsq_with_intercept(x, y)
    learned_weight, learned_bias = np.array(summary["learned"]["weight"]), np.array(summary["learned"]["bias"])
    mse = np.mean((x @ learned_weight.T + learned_bias - y) ** 2)
    optimum = np.mean((x @ exact_weight.T + exact_bias - y) ** 2)
    assert mse <= 1.01 * optimum
    if not collinear:  # there the coefficients of the pair are barely determined
        learned, exact = np.append(learned_weight, learned_bias), np.append(exact_weight, exact_bias)
        assert np.abs(learned - exact).max() <= 1e-3 * np.abs(exact).max()


def test_the_progress_bar_shows_the_live_gap_to_the_optimum(in_tmp, monkeypatch):
    from linreg_pl.cli import TrainCLI

    monkeypatch.setattr("sys.argv", ["train.py"])
    cli = TrainCLI(["--trainer.max_epochs=2", "--trainer.logger=false", "--trainer.enable_progress_bar=true"])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    gap = cli.trainer.progress_bar_metrics["train/gap"]
    moments = cli.datamodule.train_moments()
    loss, optimum = moments.objective(*cli.model.learned_parameters()), moments.objective(*moments.solve())
    assert gap == pytest.approx(loss / optimum - 1, rel=1e-6)


def test_a_one_row_test_split_reports_r2_as_undefined_and_finishes(train_run, in_tmp):
    write_csv(in_tmp / "tiny.csv", 12, 2, (0, 0), False, 0)  # 12 rows: val and test get 1 row each
    summary = train_run("--data.source=CSVSource", "--data.source.path=tiny.csv", "--data.source.target=y")
    assert summary["split_sizes"]["test"] == 1
    assert summary["test_metrics"]["test/r2"] is None and summary["test_by_target"]["y"]["r2"] is None
    assert summary["test_metrics"]["test/mse"] > 0
