"""Argument handling of scripts/train.py: the d2l lesson runs unless something chooses another data
source, wherever that choice is made, and a chosen source or optimizer starts from its own defaults
except where jsonargparse's documented rule keeps a config's arguments."""

import inspect
import json

import pytest
import yaml

from linreg_pl import (
    CSVSource,
    MakeRegression,
    ParquetSource,
    Points,
    SklearnDataset,
    SyntheticCurve,
    SyntheticLinear,
)
from linreg_pl.cli import TrainCLI
from tests.helpers import CONFIGS

# What each source needs besides its defaults (and one more value, to see it arrive).
GIVEN = {
    SyntheticLinear: {"weight": [1.5], "noise": 0.5},
    Points: {"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 7.0]},
    MakeRegression: {"noise": 20.0},
    SyntheticCurve: {"noise": 0.2},  # shares n_samples, low, high and seed with the lesson's SyntheticLinear
    SklearnDataset: {"name": "linnerud"},
    CSVSource: {"path": str(CONFIGS / "example.csv"), "target": "price_k"},
    ParquetSource: {"path": str(CONFIGS / "example_parquet"), "target": "y"},
}
LESSON = yaml.safe_load((CONFIGS / "d2l.yaml").read_text())


class ParseOnly(TrainCLI):
    def instantiate_classes(self) -> None:  # the resolved config is what is checked here
        pass


@pytest.fixture
def parse(in_tmp, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py"])
    return lambda *args: ParseOnly(list(args)).config


def source_of(config) -> tuple[str, dict]:
    return config.data.source.class_path.rsplit(".", 1)[-1], dict(vars(config.data.source.init_args))


def defaults(cls: type) -> dict:
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


def assert_no_lesson(config) -> None:
    """None of the lesson's training settings: configs/default.yaml's and the classes' own."""
    assert config.trainer.max_epochs == 1000 and config.trainer.logger.init_args.name == "run"
    assert config.data.batch_size is None
    assert config.model.optimizer.class_path.endswith("AutoSGD")


def test_with_no_source_chosen_the_run_is_the_d2l_lesson(parse):
    config = parse()
    name, init_args = source_of(config)
    assert name == "SyntheticLinear" and init_args == {
        **defaults(SyntheticLinear),
        **LESSON["data"]["source"]["init_args"],
    }
    assert config.trainer.max_epochs == 10 and config.data.batch_size == 10
    assert config.model.optimizer.class_path == "torch.optim.SGD" and config.model.optimizer.init_args.lr == 0.03


def test_arguments_of_the_lessons_source_change_the_lesson(parse):
    config = parse("--data.source.weight=[1.0,2.0,3.0]")
    _, init_args = source_of(config)
    assert init_args["weight"] == [1.0, 2.0, 3.0] and init_args["bias"] == 4.2  # the rest stays the lesson's
    assert config.trainer.max_epochs == 10 and config.model.optimizer.init_args.lr == 0.03


def write(path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content))
    return str(path)


# Every place a source can be chosen; MakeRegression shares bias, n_samples and noise with the
# lesson's SyntheticLinear, so any of the lesson that leaks in shows.
CHOICES = {
    "flag": lambda tmp, env: ["--data.source", "MakeRegression", "--data.source.noise=20"],
    "config": lambda tmp, env: [
        "--config",
        write(tmp / "c.yaml", {"data": {"source": {"class_path": "MakeRegression", "init_args": {"noise": 20.0}}}}),
    ],
    "group config": lambda tmp, env: [
        f"--data={write(tmp / 'data.yaml', {'source': {'class_path': 'MakeRegression', 'init_args': {'noise': 20.0}}})}"
    ],
    "environment": lambda tmp, env: (
        env.update(
            JSONARGPARSE_DEFAULT_ENV="true",
            PL_DATA__SOURCE='{"class_path": "MakeRegression", "init_args": {"noise": 20}}',
        )
        or []
    ),
}


@pytest.mark.parametrize("where", CHOICES)
def test_a_source_chosen_anywhere_gets_nothing_of_the_lesson(parse, in_tmp, monkeypatch, where):
    env = {}
    args = CHOICES[where](in_tmp, env)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = parse(*args)
    assert source_of(config) == ("MakeRegression", {**defaults(MakeRegression), "noise": 20.0})
    assert_no_lesson(config)


@pytest.mark.parametrize("source", GIVEN, ids=lambda c: c.__name__)
def test_a_source_chosen_by_name_gets_its_defaults_plus_what_was_given(parse, source):
    flags = [f"--data.source.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in GIVEN[source].items()]
    config = parse("--data.source", source.__name__, *flags)
    lesson = source is SyntheticLinear  # the lesson's own class: the lesson, with what was given
    expected = {**defaults(source), **(LESSON["data"]["source"]["init_args"] if lesson else {}), **GIVEN[source]}
    assert source_of(config) == (source.__name__, expected)
    if not lesson:
        assert_no_lesson(config)


def test_a_class_named_on_a_config_keeps_the_arguments_it_shares_with_the_configs_class(parse):
    # jsonargparse's rule (omni-us/jsonargparse#460), as TrainCLI documents it: make_regression.yaml's
    # n_samples and noise stay; what SyntheticLinear alone has comes from its defaults.
    config = parse(
        "--config", str(CONFIGS / "make_regression.yaml"), "--data.source=SyntheticLinear", "--data.source.weight=[1.0]"
    )
    _, init_args = source_of(config)
    configured = yaml.safe_load((CONFIGS / "make_regression.yaml").read_text())["data"]["source"]["init_args"]
    assert init_args["n_samples"] == configured["n_samples"] and init_args["noise"] == configured["noise"]
    assert init_args["distribution"] == "normal" and init_args["weight"] == [1.0]


@pytest.mark.slow
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


CSV = [f"--data.source.path={CONFIGS / 'example.csv'}", "--data.source.target=price_k"]


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], {"class_path": "torch.optim.SGD", "lr": 0.03, "momentum": 0.0}),  # the lesson's
        (["--model.optimizer.lr=0.2"], {"class_path": "torch.optim.SGD", "lr": 0.2, "momentum": 0.0}),
        # jsonargparse's rule: the lesson's lr stays with the class named on it.
        (["--model.optimizer=Adam"], {"class_path": "torch.optim.Adam", "lr": 0.03}),
        # No optimizer configured: the model's AutoSGD; "auto" is no value of Adam's lr and is dropped.
        (["--data.source=CSVSource", *CSV, "--model.optimizer.lr=0.1"], {"class_path": "AutoSGD", "lr": 0.1}),
        (["--data.source=CSVSource", *CSV], {"class_path": "AutoSGD", "lr": "auto", "momentum": "auto"}),
        (["--data.source=CSVSource", *CSV, "--model.optimizer=Adam"], {"class_path": "torch.optim.Adam", "lr": 0.001}),
    ],
)
def test_a_chosen_optimizer_gets_its_defaults_plus_what_was_given(parse, args, expected):
    optimizer = parse(*args).model.optimizer
    assert optimizer.class_path.endswith(expected["class_path"].rsplit(".", 1)[-1])
    for name, value in expected.items():
        if name != "class_path":
            assert optimizer.init_args[name] == value, name


@pytest.mark.parametrize(
    "args, source, max_epochs",
    [
        ([], "SyntheticLinear", 10),
        (["--data.source=MakeRegression"], "MakeRegression", 1000),
        (["--config", str(CONFIGS / "csv.yaml")], "CSVSource", 1000),
    ],
)
def test_print_config_shows_the_whole_config_the_run_would_use(in_tmp, monkeypatch, capsys, args, source, max_epochs):
    monkeypatch.setattr("sys.argv", ["train.py"])
    with pytest.raises(SystemExit):
        ParseOnly([*args, "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == 0 and printed["trainer"]["max_epochs"] == max_epochs
    assert printed["data"]["source"]["class_path"].endswith(source)
    assert printed["model"]["optimizer"]["class_path"].endswith("SGD" if source == "SyntheticLinear" else "AutoSGD")


@pytest.mark.parametrize(
    "args, every",
    [
        ([], 10),  # the d2l lesson's own
        (["--config", str(CONFIGS / "csv.yaml")], 1),  # full batch: a point per epoch
        (["--config", str(CONFIGS / "csv.yaml"), "--data.batch_size=64"], 10),  # mini-batches: every 10th step
        (["--config", str(CONFIGS / "csv.yaml"), "--data.batch_size=64", "--trainer.log_every_n_steps=3"], 3),
    ],
)
def test_the_log_cadence_follows_the_batching_unless_set(in_tmp, monkeypatch, args, every):
    monkeypatch.setattr("sys.argv", ["train.py"])
    assert TrainCLI([*args, "--trainer.logger=false"]).trainer.log_every_n_steps == every


@pytest.mark.parametrize(
    "args, every",
    [
        ([], 1),  # d2l, mini-batches: every epoch
        (["--config", str(CONFIGS / "line.yaml")], 50),  # the lesson's own: as often as it prints
        (["--config", str(CONFIGS / "csv.yaml")], 10),  # full batch, max_epochs 1000: 100 validations
        (["--config", str(CONFIGS / "csv.yaml"), "--trainer.max_epochs=250"], 2),
        (["--config", str(CONFIGS / "csv.yaml"), "--data.batch_size=64"], 1),
        (["--config", str(CONFIGS / "csv.yaml"), "--trainer.check_val_every_n_epoch=1"], 1),
        # Validation counted in batches (Lightning's check_val_every_n_epoch=None) stays so.
        (["--config", str(CONFIGS / "csv.yaml"), "--trainer.val_check_interval=5"], None),
    ],
)
def test_the_validation_cadence_follows_the_batching_unless_set(in_tmp, monkeypatch, args, every):
    monkeypatch.setattr("sys.argv", ["train.py"])
    trainer = TrainCLI([*args, "--trainer.logger=false"]).trainer
    assert trainer.check_val_every_n_epoch == every
