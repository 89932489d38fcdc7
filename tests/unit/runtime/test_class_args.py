"""Choosing a class (a data source, an optimizer) resets its arguments: nothing of another class's
config leaks in."""

import inspect
import json

import pytest
import yaml

from linreg_pl import CSVSource, MakeRegression, ParquetSource, Points, SklearnDataset, SyntheticLinear
from linreg_pl.cli import TrainCLI
from tests.helpers import CONFIGS

DATA_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "default.yaml")
# What each source needs besides its defaults (and one more value, to see it arrive).
GIVEN = {
    SyntheticLinear: {"weight": [1.5], "noise": 0.5},
    Points: {"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 7.0]},
    MakeRegression: {"noise": 20.0},
    SklearnDataset: {"name": "linnerud"},
    CSVSource: {"path": str(CONFIGS / "example.csv"), "target": "price_k"},
    ParquetSource: {"path": str(CONFIGS / "example_parquet"), "target": "y"},
}


class ParseOnly(TrainCLI):
    def instantiate_classes(self) -> None:  # the resolved config is what is checked here
        pass


def resolved_source(args: list[str]) -> tuple[str, dict]:
    cli = ParseOnly(args)
    source = cli.config.data.source
    return source.class_path.rsplit(".", 1)[-1], dict(vars(source.init_args))


@pytest.mark.parametrize("source", GIVEN, ids=lambda c: c.__name__)
@pytest.mark.parametrize("config", [None, *DATA_CONFIGS], ids=lambda p: p.stem if p else "no-config")
def test_a_source_chosen_by_name_gets_its_defaults_plus_what_was_given(in_tmp, monkeypatch, config, source):
    monkeypatch.setattr("sys.argv", ["train.py"])
    flags = [f"--data.source.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in GIVEN[source].items()]
    name, init_args = resolved_source(
        [*(["--config", str(config)] if config else []), "--data.source", source.__name__, *flags]
    )
    defaults = {
        k: p.default
        for k, p in inspect.signature(source).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    # The same class as the config's keeps the config's arguments for it: those were given for it.
    configured = (yaml.safe_load(config.read_text())["data"]["source"] if config else {}) or {}
    same_class = configured.get("class_path", "").rsplit(".", 1)[-1] == source.__name__
    assert name == source.__name__
    assert init_args == {**defaults, **(configured["init_args"] if same_class else {}), **GIVEN[source]}


def test_stacked_configs_of_two_sources_keep_only_the_second_ones_arguments(in_tmp, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py"])
    _, init_args = resolved_source(
        ["--config", str(CONFIGS / "d2l.yaml"), "--config", str(CONFIGS / "make_regression.yaml")]
    )
    assert init_args["bias"] == 0.0 and init_args["n_samples"] == 100  # not d2l's 4.2 and 1000


def test_make_regression_lesson_learns_scikit_learns_ols_answer(train_run):
    summary = train_run(
        "--config", str(CONFIGS / "make_regression.yaml"), "--data.val_fraction=0", "--data.test_fraction=0"
    )
    from sklearn.datasets import make_regression
    from sklearn.linear_model import LinearRegression

    assert summary["true"]["bias"] == [0.0]
    ols = LinearRegression().fit(*make_regression(n_samples=100, n_features=1, noise=20, random_state=1))  # 82.48, 4.05
    assert summary["exact"]["weight"][0][0] == pytest.approx(ols.coef_[0], rel=1e-9)
    assert summary["exact"]["bias"][0] == pytest.approx(ols.intercept_, rel=1e-9)
    assert summary["learned"]["weight"][0][0] == pytest.approx(summary["exact"]["weight"][0][0], rel=1e-3)
    assert summary["learned"]["bias"][0] == pytest.approx(summary["exact"]["bias"][0], rel=1e-3, abs=1e-3)


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], {"class_path": "torch.optim.SGD", "lr": 0.03, "momentum": 0.0}),  # d2l over AutoSGD: no "auto" leaks
        (["--model.optimizer.lr=0.2"], {"class_path": "torch.optim.SGD", "lr": 0.2, "momentum": 0.0}),
        (["--model.optimizer=Adam"], {"class_path": "torch.optim.Adam", "lr": 0.001}),  # not the book's SGD lr
        (
            ["--data.source=CSVSource", "--model.optimizer.lr=0.1"],
            {"class_path": "linreg_pl.exact.autosgd.AutoSGD", "lr": 0.1},
        ),
    ],
)
def test_a_chosen_optimizer_gets_its_defaults_plus_what_was_given(in_tmp, monkeypatch, args, expected):
    monkeypatch.setattr("sys.argv", ["train.py"])
    csv = (
        [f"--data.source.path={CONFIGS / 'example.csv'}", "--data.source.target=price_k"]
        if args[:1] == ["--data.source=CSVSource"]
        else []
    )
    optimizer = ParseOnly([*args, *csv]).config.model.optimizer
    assert optimizer.class_path.endswith(expected["class_path"].rsplit(".", 1)[-1])
    for name, value in expected.items():
        if name != "class_path":
            assert optimizer.init_args[name] == value, name
