"""The benchmark is not part of the suite; this keeps it working, on tiny sizes, and checks its rows
against answers computed here independently."""

import json

import numpy as np
import pytest

from benchmarks.training import CASES, case_weights, main
from linreg_pl import RegressionDataModule, SyntheticLinear
from tests.helpers import lstsq_with_intercept


@pytest.mark.slow
def test_benchmark_rows_agree_with_an_independent_least_squares_fit(tmp_path):
    rows = main(["--cases", "small", "--n_samples", "2000", "--epochs", "2", "--repeats", "1", "--out", str(tmp_path)])
    by_key = {row.key: row for row in rows}
    assert set(by_key) == {
        "textbook", "hand_written", "hand_written_index_select", "lightning", "lightning_fast", "lightning_bare",
        "sklearn_exact", "sklearn_sgd", "exact_solver", "memory_floor",
    }  # fmt: skip
    weight, bias = case_weights(CASES["small"])
    x, y = RegressionDataModule(
        SyntheticLinear(weight=weight, bias=bias, n_samples=2000), val_fraction=0, test_fraction=0
    ).arrays("train")
    exact_weight, exact_bias = lstsq_with_intercept(x, y)
    for key in ("exact_solver", "sklearn_exact"):
        np.testing.assert_allclose(by_key[key].weight, exact_weight, rtol=1e-9)
        np.testing.assert_allclose(by_key[key].bias, exact_bias, rtol=1e-9)
    sgd = ("textbook", "hand_written", "hand_written_index_select", "lightning", "lightning_fast", "lightning_bare")
    for key in sgd:  # 400 SGD steps
        np.testing.assert_allclose(by_key[key].weight, exact_weight, atol=5e-3)
        assert 1 - 1e-6 <= by_key[key].mse_vs_optimum < 1.1, key
    hand_written = by_key["hand_written"].s_per_epoch
    assert by_key["lightning"].ratio_vs_hand_written == pytest.approx(by_key["lightning"].s_per_epoch / hand_written)
    written = json.loads((tmp_path / "results.json").read_text())
    assert [r["key"] for r in written] == [r.key for r in rows]
    assert "| 3 linreg_pl under Lightning |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_lessons_benchmark_times_the_three_ways_of_a_lesson(capsys):
    from benchmarks.lessons import main as lessons

    medians = lessons(["--lessons", "four_points", "--epochs", "60", "--repeats", "1"])
    assert set(medians) == {("four_points", way) for way in ("default", "bare", "plain")}
    assert all(0 < part["fit"] <= part["total"] for part in medians.values())
    ours, bare = medians[("four_points", "default")], medians[("four_points", "bare")]
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| four_points |"))
    assert f"| {ours['fit'] / bare['fit']:.2f}× |" in row
