"""Categorical columns: treatment coding learned from the training split, as statsmodels' C()."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from linreg_pl import CSVSource, InputError, RegressionDataModule
from linreg_pl.data.encoding import Encoding
from linreg_pl.exact.statistics import ols_inference
from tests.helpers import ROOT

GRUNFELD = ROOT / "tests" / "data" / "grunfeld.csv"


def grouped(path, groups: list[str]):
    rng = np.random.default_rng(0)
    x = rng.normal(size=len(groups))
    effect = {"a": 0.0, "b": 1.0, "c": -2.0}
    y = 2 * x + np.array([effect[g] for g in groups]) + 0.1 * rng.normal(size=len(groups))
    pd.DataFrame({"g": groups, "x": x, "y": y}).to_csv(path, index=False)
    return str(path)


def test_levels_come_from_the_training_split_and_an_unseen_one_is_named(tmp_path):
    groups = ["a", "b"] * 10
    split = RegressionDataModule(CSVSource(grouped(tmp_path / "ab.csv", groups), target="y"), test_fraction=0.1)
    test_row = int(split.indices["test"][0])
    groups[test_row] = "c"  # a level that only a test row holds
    path = grouped(tmp_path / "abc.csv", groups)
    with pytest.raises(InputError, match=r"column 'g' has level 'c' \(in dataset 'abc'\).*reference level 'a'"):
        RegressionDataModule(CSVSource(path, target="y"), test_fraction=0.1)
    dm = RegressionDataModule(CSVSource(path, target="y", unseen_levels="reference"), test_fraction=0.1)
    assert dm.feature_names == ["g[T.b]", "x"]  # no column for a level the model never trained on
    assert dm.encoding["levels"] == {"g": ["a", "b"]}
    x_test, _ = dm.arrays("test")
    assert x_test[list(dm.indices["test"]).index(test_row), 0] == 0.0  # coded as the reference 'a'


def test_numeric_codes_marked_categorical_equal_statsmodels_c(tmp_path):
    dm = RegressionDataModule(
        CSVSource(str(GRUNFELD), target="invest", categorical=["year"]), val_fraction=0, test_fraction=0
    )
    assert "year[T.1936]" in dm.feature_names and "year[T.1935]" not in dm.feature_names
    fit = ols_inference(dm.train_statistics(), dm.feature_names, dm.target_names)["targets"]["invest"]
    expected = smf.ols("invest ~ value + capital + C(year) + C(firm)", pd.read_csv(GRUNFELD, comment="#")).fit()
    names = [
        "Intercept" if n == "intercept" else n.replace("year[", "C(year)[").replace("firm[", "C(firm)[")
        for n in fit["parameters"]
    ]
    np.testing.assert_allclose(fit["estimate"], expected.params[names], rtol=1e-8)
    np.testing.assert_allclose(fit["std_error"], expected.bse[names], rtol=1e-8)


def test_missing_levels_follow_the_numeric_rule(tmp_path):
    groups = ["a", "b"] * 10
    path = tmp_path / "gaps.csv"
    frame = pd.read_csv(grouped(path, groups))
    frame.loc[[2, 5], "g"] = None
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"missing values \('g': 2\).*drop_missing"):
        CSVSource(str(path), target="y").load()
    table = CSVSource(str(path), target="y", drop_missing=True).load()
    assert len(table.x) == 18 and table.levels == {"g": ["a", "b"]}


def test_too_many_levels_and_broken_numbers_are_refused(tmp_path):
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": [f"row{i}" for i in range(30)], "y": np.arange(30.0)}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"'id' .* has 30 levels, more than max_levels=20 \(an identifier\?\)"):
        CSVSource(str(path), target="y", max_levels=20).load()
    # Numbers with one stray text value are a broken numeric column, not 30 levels.
    pd.DataFrame({"x": [str(i) for i in range(29)] + ["unknown"], "y": np.arange(30.0)}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"'x' .* is not numeric \(e.g. 'unknown' on data row 30\).*categorical"):
        CSVSource(str(path), target="y").load()


def test_design_of_new_rows_by_column_name():
    encoding = Encoding(["firm", "value"], {"firm": ["GE", "GM", "IBM"]})
    frame = pd.DataFrame({"value": [1.0, 2.0, 3.0], "firm": ["IBM", "GE", "GM"], "other": ["z", "z", "z"]})
    np.testing.assert_array_equal(
        encoding.design(frame, "new.csv"), [[0.0, 1.0, 1.0], [0.0, 0.0, 2.0], [1.0, 0.0, 3.0]]
    )
    assert Encoding.from_config(encoding.config()) == encoding
    with pytest.raises(InputError, match=r"column 'firm' has level 'HP' \(in 'new.csv'\)"):
        encoding.design(frame.assign(firm=["HP", "GE", "GM"]), "new.csv")
