"""The run report's least-squares inference, wired into a training run, against statsmodels."""

import numpy as np
import pytest

from linreg_pl import RegressionDataModule, SklearnDataset
from tests.helpers import CONFIGS


@pytest.mark.parametrize("method", ["normal", "qr"])
def test_real_data_run_reports_statsmodels_inference_on_its_training_rows(train_run, method):
    sm = pytest.importorskip("statsmodels.api")
    summary = train_run(
        "--config", str(CONFIGS / "diabetes.yaml"), "--trainer.max_epochs=2", f"--report.method={method}",
        "--report.robust=true", "--report.level=0.9",
    )  # fmt: skip
    x, y = RegressionDataModule(SklearnDataset("diabetes")).arrays("train")  # the run's split (same seed)
    ols = sm.OLS(y[:, 0], sm.add_constant(x)).fit()
    fit = summary["inference"]["targets"]["target"]
    np.testing.assert_allclose(fit["estimate"], ols.params, rtol=1e-8)
    np.testing.assert_allclose(fit["std_error"], ols.bse, rtol=1e-8)
    np.testing.assert_allclose(fit["p_value"], ols.pvalues, rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(np.c_[fit["ci_low"], fit["ci_high"]], ols.conf_int(0.1), rtol=1e-8)
    np.testing.assert_allclose(fit["hc3"]["std_error"], ols.get_robustcov_results("HC3").bse, rtol=1e-8)
    assert fit["r_squared"] == pytest.approx(ols.rsquared, rel=1e-10)
    assert fit["aic"] == pytest.approx(ols.aic, rel=1e-10)
    assert summary["ridge"]["best_l2"] in summary["ridge"]["l2"]


@pytest.mark.slow
def test_lessons_print_no_inference_unless_asked(train_run):
    assert "inference" not in train_run("--trainer.max_epochs=1")
    assert "inference" in train_run("--trainer.max_epochs=1", "--report.statistics=true")


def test_report_level_outside_0_1_is_refused(train_run):
    from linreg_pl.errors import InputError

    with pytest.raises(InputError, match=r"report.level=1.5 must be in \(0, 1\)"):
        train_run("--report.level=1.5")
