"""Grunfeld's investment data (a text column of firms) against statsmodels: fixed effects by
treatment coding, weighted least squares and prediction intervals, from the command line."""

import re
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from linreg_pl import InputError, LinearRegression
from linreg_pl.cli import ignore_third_party_warnings, run_command, train
from linreg_pl.serve import evaluate, predict, predict_frame
from tests.helpers import QUIET, ROOT, run_in_process

GRUNFELD = ROOT / "tests" / "data" / "grunfeld.csv"
FORMULA = "invest ~ value + capital + year + C(firm)"
ALL_ROWS = ["--data.val_fraction", "0", "--data.test_fraction", "0"]


def grunfeld(weighted: bool = False) -> pd.DataFrame:
    frame = pd.read_csv(GRUNFELD, comment="#")
    # Heteroscedastic weights: the spread of investment grows with the firm's size.
    return frame.assign(w=1 / frame["value"]) if weighted else frame


def statsmodels_names(names: list[str]) -> list[str]:
    """Our parameter names as statsmodels' formula names them (``C(firm)[T.IBM]``, ``Intercept``)."""
    return ["Intercept" if n == "intercept" else n.replace("firm[", "C(firm)[") for n in names]


def train_csv(path, *args: str) -> dict:
    return train(
        ["--data.source", "CSVSource", "--data.source.path", str(path), "--data.source.target", "invest", *args, *QUIET]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three trainings, once for the module: defaults, every row (OLS), every row weighted (WLS)."""
    ignore_third_party_warnings()  # module-scoped: before the per-test fixture that applies them
    folder = tmp_path_factory.mktemp("grunfeld")
    grunfeld(weighted=True).to_csv(folder / "weighted.csv", index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["train.py"])
        return {
            "default": train_csv(GRUNFELD),
            "ols": train_csv(GRUNFELD, *ALL_ROWS, "--report.robust", "true"),
            "wls": train_csv(
                folder / "weighted.csv", *ALL_ROWS, "--data.source.weight", "w", "--report.robust", "true"
            ),
            "folder": folder,
        }


@pytest.mark.slow
def test_a_text_column_trains_with_no_other_flag(runs):
    summary = runs["default"]
    firms = sorted(grunfeld()["firm"].unique())
    # Treatment coding: the first firm in sorted order is the reference, each other one a column.
    assert summary["features"] == [f"firm[T.{firm}]" for firm in firms[1:]] + ["year", "value", "capital"]
    assert summary["split_sizes"] == {"train": 176, "val": 22, "test": 22}
    assert summary["exact"]["converged"]


@pytest.mark.parametrize("kind", ["ols", "wls"])
@pytest.mark.slow
def test_coefficient_table_equals_statsmodels(runs, kind):
    frame = grunfeld(weighted=True)
    if kind == "ols":
        expected = smf.ols(FORMULA, frame).fit()
    else:
        expected = smf.wls(FORMULA, frame, weights=frame["w"]).fit()
    inference = runs[kind]["inference"]
    fit = inference["targets"]["invest"]
    names = statsmodels_names(fit["parameters"])
    assert sorted(names) == sorted(expected.params.index)
    for ours, theirs in (("estimate", expected.params), ("std_error", expected.bse), ("p_value", expected.pvalues)):
        np.testing.assert_allclose(fit[ours], theirs[names], rtol=1e-6, err_msg=ours)
    ci = expected.conf_int(0.05).loc[names]
    np.testing.assert_allclose(fit["ci_low"], ci[0], rtol=1e-6)
    np.testing.assert_allclose(fit["ci_high"], ci[1], rtol=1e-6)
    for ours, theirs in (("r_squared", "rsquared"), ("adj_r_squared", "rsquared_adj"), ("f_statistic", "fvalue")):
        assert fit[ours] == pytest.approx(getattr(expected, theirs), rel=1e-6), ours
    for ours, theirs in (("log_likelihood", "llf"), ("aic", "aic"), ("bic", "bic")):
        assert fit[ours] == pytest.approx(getattr(expected, theirs), rel=1e-9), ours
    assert inference["df_resid"] == expected.df_resid
    for robust in ("HC1", "HC3"):
        np.testing.assert_allclose(
            fit[robust.lower()]["std_error"],
            expected.get_robustcov_results(robust).bse[_order(expected, names)],
            rtol=1e-6,
        )


def _order(result, names: list[str]) -> list[int]:
    return [list(result.params.index).index(name) for name in names]


@pytest.mark.slow
def test_weighted_training_reaches_the_weighted_least_squares_answer(runs):
    frame = grunfeld(weighted=True)
    expected = smf.wls(FORMULA, frame, weights=frame["w"]).fit()
    summary = runs["wls"]
    names = statsmodels_names(summary["inference"]["targets"]["invest"]["parameters"])
    learned = np.r_[summary["learned"]["bias"], summary["learned"]["weight"][0]]
    wls = expected.params[names].to_numpy()
    # The run's own convergence criterion, against an independent answer.
    assert summary["exact"]["converged"]
    assert np.abs(learned - wls).max() <= 0.01 * np.abs(wls).max()
    # The weighted answer is not the unweighted one: the weights were used.
    unweighted = np.r_[runs["ols"]["exact"]["bias"], runs["ols"]["exact"]["weight"][0]]
    assert np.abs(unweighted - wls).max() > 0.1 * np.abs(wls).max()


@pytest.mark.parametrize("kind", ["ols", "wls"])
@pytest.mark.slow
def test_prediction_intervals_equal_statsmodels_summary_frame(runs, kind, in_tmp):
    frame = grunfeld(weighted=True)
    if kind == "ols":
        frame = frame.drop(columns="w")
        expected = smf.ols(FORMULA, frame).fit()
    else:
        expected = smf.wls(FORMULA, frame, weights=frame["w"]).fit()
    frame.to_csv("rows.csv", index=False)
    predict(["--ckpt_path", runs[kind]["run_dir"], "--input", "rows.csv", "--output", "pred.csv", "--interval", "0.95"])
    written = pd.read_csv("pred.csv")
    # In-sample, statsmodels scales a new observation's variance by the rows' own weights.
    bands = expected.get_prediction().summary_frame(alpha=0.05)
    for ours, theirs in (("mean_lower", "mean_ci_lower"), ("mean_upper", "mean_ci_upper")):
        np.testing.assert_allclose(written[f"invest_{ours}"], bands[theirs], rtol=1e-6, err_msg=ours)
    for ours, theirs in (("lower", "obs_ci_lower"), ("upper", "obs_ci_upper")):
        np.testing.assert_allclose(written[f"invest_{ours}"], bands[theirs], rtol=1e-6, err_msg=ours)
    # The Python API gives the same columns.
    api = predict_frame(runs[kind]["checkpoints"]["last"], frame, interval=0.95)
    np.testing.assert_allclose(api.to_numpy(), written[api.columns].to_numpy(), rtol=1e-9)


@pytest.mark.slow
def test_unseen_level_is_an_error_or_the_reference(runs, in_tmp):
    frame = grunfeld().drop(columns="invest").head(3)
    frame.loc[1, "firm"] = "Acme"
    with pytest.raises(InputError, match=r"column 'firm' has level 'Acme' .*reference level 'American Steel'"):
        predict_frame(runs["ols"]["checkpoints"]["last"], frame)
    model = LinearRegression.load_from_checkpoint(runs["ols"]["checkpoints"]["last"], weights_only=True)
    with pytest.raises(InputError, match=r"codes categorical columns \['firm'\].*predict_frame"):
        model.predict(frame)
    as_reference = predict_frame(runs["ols"]["checkpoints"]["last"], frame, unseen_levels="reference")
    reference_row = predict_frame(runs["ols"]["checkpoints"]["last"], frame.assign(firm="American Steel"))
    assert as_reference["invest_predicted"][1] == reference_row["invest_predicted"][1]


def bad_grunfeld(folder, change) -> str:
    frame = grunfeld(weighted=True)
    change(frame)
    frame.to_csv(folder / "bad.csv", index=False)
    return str(folder / "bad.csv")


def negative_weight(frame):
    frame.loc[4, "w"] = -1


def text_weight(frame):
    frame["w"] = frame["w"].astype(str)
    frame.loc[4, "w"] = "heavy"


@pytest.mark.parametrize(
    "change, message",
    [
        (negative_weight, r"weight column 'w' holds -1 on data row 5; row weights must be finite numbers >= 0"),
        (text_weight, r"column 'w' in .* is not numeric \(e.g. 'heavy' on data row 5\)"),
    ],
)
def test_bad_weights_end_in_one_line_and_exit_2(in_tmp, monkeypatch, capsys, change, message):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    path = bad_grunfeld(in_tmp, change)
    with pytest.raises(SystemExit) as exit_:
        run_command(lambda args: train_csv(path, *args), ["--data.source.weight", "w"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and re.search(message, error[0])


@pytest.mark.slow
def test_unseen_level_from_the_command_line_is_one_line_and_exit_2(runs, in_tmp):
    frame = grunfeld().drop(columns="invest")
    frame.loc[7, "firm"] = "Acme"
    frame.to_csv("new.csv", index=False)
    # What scripts/predict.py runs, in this process (a fresh interpreter is not what is tested).
    args = ["--ckpt_path", runs["ols"]["run_dir"], "--input", "new.csv", "--output", "p.csv"]
    result = run_in_process(predict, *args, cwd=in_tmp)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "column 'firm' has level 'Acme' (in 'new.csv')" in result.stderr
    assert not (in_tmp / "p.csv").exists()


@pytest.mark.parametrize("kind, split", [("default", "test"), ("wls", "all")])
@pytest.mark.slow
def test_evaluate_codes_the_file_as_training_did_and_weighs_its_rows(runs, kind, split, in_tmp):
    # scikit-learn's weighted metrics on the checkpoint (evaluate) against the model's own
    # weighted torchmetrics at the end of training (on the training rows when the test split is empty).
    result = evaluate(["--ckpt_path", runs[kind]["run_dir"], "--split", split, "--output", "eval.json"])
    for name in ("mse", "mae", "r2"):
        assert result[name] == pytest.approx(runs[kind]["test_metrics"][f"test/{name}"], rel=1e-5), name
