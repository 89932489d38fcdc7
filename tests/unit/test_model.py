import lightning as L
import numpy as np
import pytest
import torch

from linreg_pl import (
    MLP,
    CSVSource,
    InputError,
    LinearHead,
    LinearRegression,
    Points,
    RegressionDataModule,
    Scaling,
    SklearnDataset,
    SyntheticLinear,
)
from linreg_pl.exact.autosgd import AutoSGD
from tests.helpers import CONFIGS, lstsq_with_intercept


def test_shapes_single_and_multi_output():
    model = LinearRegression(n_features=3, n_targets=2)
    assert model(torch.zeros(5, 3)).shape == (5, 2)
    weight, bias = model.learned_parameters()
    assert weight.shape == (2, 3) and bias.shape == (2,)


def test_forward_applies_the_stored_scaling_in_original_units():
    model = LinearRegression(n_features=2)
    scaling = Scaling(np.array([1.0, -2.0]), np.array([2.0, 0.5]), np.array([10.0]), np.array([3.0]))
    model.set_scaling(scaling)
    x = torch.randn(7, 2)
    weight, bias = model.learned_parameters()
    expected = x.double().numpy() @ weight.T + bias
    np.testing.assert_allclose(model(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_training_loss_is_mse_plus_penalties_on_weights_only():
    torch.manual_seed(0)
    model = LinearRegression(n_features=3, l1=0.1, l2=0.5)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    model.log = lambda *args, **kwargs: None  # outside a Trainer
    loss = model.training_step((x, y), 0)
    w, b = model.linear.weight, model.linear.bias
    expected = ((x @ w.T + b - y) ** 2).mean() + 0.5 * (w**2).sum() + 0.1 * w.abs().sum()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    mse_only_bias_grad = (2 * (x @ w.T + b - y)).mean(0)
    torch.testing.assert_close(b.grad, mse_only_bias_grad.detach())  # the bias is not penalised


@pytest.mark.parametrize(
    "kwargs, match", [(dict(n_features=0), "n_features=0"), (dict(n_features=1, l2=-1.0), "l2=-1.0 must be >= 0")]
)
def test_impossible_hyper_parameters(kwargs, match):
    with pytest.raises(InputError, match=match):
        LinearRegression(**kwargs)


def fit(model, dm, epochs):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    return model.learned_parameters()


@pytest.mark.parametrize(
    "optimizer, batch_size, epochs",
    [
        ("--model.optimizer=torch.optim.SGD --model.optimizer.lr=0.03", 10, 5),
        ("--model.optimizer=torch.optim.Adam --model.optimizer.lr=0.05", 10, 5),
        ("--model.optimizer=torch.optim.AdamW --model.optimizer.lr=0.05 --model.optimizer.weight_decay=0", 10, 5),
        (
            "--model.optimizer=torch.optim.LBFGS --model.optimizer.lr=1 --model.optimizer.line_search_fn=strong_wolfe",
            None,
            3,
        ),
    ],
)
def test_each_optimizer_by_config_recovers_the_d2l_parameters(train_run, optimizer, batch_size, epochs):
    summary = train_run(
        *optimizer.split(),
        f"--data.batch_size={batch_size or 'null'}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.logger=false",
    )
    np.testing.assert_allclose(summary["learned"]["weight"], [[2.0, -3.4]], atol=0.01)
    np.testing.assert_allclose(summary["learned"]["bias"], [4.2], atol=0.01)


@pytest.mark.parametrize("seed, l2", [(0, 0.5), (1, 0.05), (2, 2.0)])
def test_ridge_penalty_matches_the_closed_form(seed, l2):
    dm = RegressionDataModule(SyntheticLinear(weight=[2.0, -3.4], bias=4.2, noise=1.0, seed=seed), batch_size=None)
    model = LinearRegression(
        n_features=2, l2=l2, optimizer=lambda p: torch.optim.LBFGS(p, max_iter=100, line_search_fn="strong_wolfe")
    )
    weight, bias = fit(model, dm, epochs=2)
    x, y = dm.arrays("train")
    # argmin mean((xw + b - y)^2) + l2 |w|^2 with a free intercept: centred ridge, alpha = n * l2.
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = np.linalg.solve(xc.T @ xc + len(x) * l2 * np.eye(2), xc.T @ yc).T
    b = y.mean(0) - w @ x.mean(0)
    np.testing.assert_allclose(weight, w, atol=1e-4)
    np.testing.assert_allclose(bias, b, atol=1e-4)


def test_negative_learning_rate_is_refused_when_the_model_is_built():
    with pytest.raises(InputError, match="model.optimizer is invalid: Invalid learning rate"):
        LinearRegression(n_features=1, optimizer=lambda p: torch.optim.SGD(p, lr=-1.0))


def test_several_steps_per_batch_train_exactly_like_one(train_run):
    common = ["--trainer.max_epochs=2", "--trainer.logger=false"]
    one = train_run(*common, "--data.steps_per_batch=1")
    several = train_run(*common, "--data.steps_per_batch=8")
    assert several["steps"] == one["steps"] == 160
    assert several["learned"] == one["learned"]  # same mini-batches, same order, same updates


STEP_LR = [
    "--model.lr_scheduler=torch.optim.lr_scheduler.StepLR",
    "--model.lr_scheduler.step_size=1",
    "--model.lr_scheduler.gamma=0.5",
]


@pytest.fixture
def fitted_cli(in_tmp, monkeypatch):
    """Build the CLI from flags and fit, without logger or progress bar: ``fitted_cli(*flags)``."""
    from linreg_pl.cli import TrainCLI

    monkeypatch.setattr("sys.argv", ["train.py"])

    def fit(*flags: str):
        cli = TrainCLI([*flags, "--trainer.logger=false", "--trainer.enable_progress_bar=false"])
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return cli

    return fit


@pytest.mark.parametrize("steps_per_batch", [1, 4])
def test_lr_scheduler_by_config_changes_the_learning_rate(fitted_cli, steps_per_batch):
    # With several steps per batch the model steps the scheduler itself (manual optimization).
    cli = fitted_cli(*STEP_LR, f"--data.steps_per_batch={steps_per_batch}", "--trainer.max_epochs=3")
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.03 * 0.5**3)


def test_lbfgs_with_several_steps_per_batch(fitted_cli):
    lbfgs = [
        "--model.optimizer=torch.optim.LBFGS",
        "--model.optimizer.lr=1",
        "--model.optimizer.line_search_fn=strong_wolfe",
    ]
    cli = fitted_cli(*lbfgs, "--data.batch_size=100", "--data.steps_per_batch=4", "--trainer.max_epochs=2")
    weight, _ = cli.model.learned_parameters()
    np.testing.assert_allclose(weight, [[2.0, -3.4]], atol=0.01)


def test_several_steps_per_batch_refuse_trainer_gradient_clipping(train_run):
    with pytest.raises(InputError, match="data.steps_per_batch=4 runs several optimizer steps per batch"):
        train_run("--data.steps_per_batch=4", "--trainer.gradient_clip_val=1.0")


@pytest.mark.slow
def test_a_metric_added_to_the_model_shows_in_the_log_report_hparams_and_evaluate(train_run, in_tmp, monkeypatch):
    from sklearn.metrics import explained_variance_score
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torchmetrics import ExplainedVariance

    from linreg_pl.serve import evaluate
    from linreg_pl.tune import SearchSpace

    defined = LinearRegression.metric_collection

    def with_explained_variance(cls):
        metrics = defined()
        metrics.add_metrics({"explained_variance": ExplainedVariance()})
        return metrics.set_dtype(torch.float64)

    monkeypatch.setattr(LinearRegression, "metric_collection", classmethod(with_explained_variance))
    summary = train_run("--config", str(CONFIGS / "linnerud.yaml"), "--trainer.max_epochs=2")
    assert "test/explained_variance" in summary["test_metrics"]  # logged, and in summary.json
    assert all("explained_variance" in values for values in summary["test_by_target"].values())  # the report
    events = EventAccumulator(summary["run_dir"])
    events.Reload()
    assert {"val/explained_variance", "test/explained_variance"} <= set(events.Tags()["scalars"])
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    tags = {m.name.tag for m in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.metric_infos}
    assert "test/explained_variance" in tags
    result = evaluate(["--ckpt_path", summary["checkpoints"]["last"], "--output", "eval.json"])
    space = in_tmp / "space.yaml"  # and a tuning study may optimize it
    space.write_text("params: {model.l2: {low: 1.0e-6, high: 1.0}}\nmetric: val/explained_variance\n")
    assert SearchSpace.from_file(space).metric == "val/explained_variance"
    x, y = TEST_SPLITS["linnerud.yaml"]().arrays("test")
    predicted = x @ np.array(summary["learned"]["weight"]).T + np.array(summary["learned"]["bias"])
    assert result["explained_variance"] == pytest.approx(explained_variance_score(y, predicted), rel=1e-9)
    for t, values in enumerate(result["per_target"].values()):
        assert values["explained_variance"] == pytest.approx(explained_variance_score(y[:, t], predicted[:, t]))


# Each config's data, built here as its run builds it (same seed, same split).
TEST_SPLITS = {
    "linnerud.yaml": lambda: RegressionDataModule(SklearnDataset("linnerud"), val_fraction=0.15, test_fraction=0.15),
    "csv.yaml": lambda: RegressionDataModule(CSVSource(str(CONFIGS / "example.csv"), target="price_k")),
}


@pytest.mark.parametrize("config", TEST_SPLITS)
@pytest.mark.slow
def test_report_and_evaluate_metrics_match_scikit_learn_pooled_and_per_target(train_run, in_tmp, config):
    from sklearn import metrics

    from linreg_pl.serve import evaluate

    summary = train_run("--config", str(CONFIGS / config), "--trainer.max_epochs=3")
    result = evaluate(["--ckpt_path", summary["checkpoints"]["last"], "--output", "eval.json"])
    x, y = TEST_SPLITS[config]().arrays("test")
    predicted = x @ np.array(summary["learned"]["weight"]).T + np.array(summary["learned"]["bias"])

    def sklearn_scores(y, predicted):
        mse = metrics.mean_squared_error(y, predicted)
        return {
            "mse": mse,
            "rmse": np.sqrt(mse),
            "mae": metrics.mean_absolute_error(y, predicted),
            "r2": metrics.r2_score(y, predicted),
        }

    for name, value in sklearn_scores(y, predicted).items():
        assert result[name] == pytest.approx(value, rel=1e-9), name
        assert summary["test_metrics"][f"test/{name}"] == pytest.approx(value, rel=1e-6), name  # logged in training
    for t, target in enumerate(summary["targets"]):
        for name, value in sklearn_scores(y[:, t], predicted[:, t]).items():
            assert result["per_target"][target][name] == pytest.approx(value, rel=1e-9), (target, name)
            assert summary["test_by_target"][target][name] == pytest.approx(value, rel=1e-9), (target, name)


def test_weighted_loss_and_metrics_equal_repeated_rows(tmp_path):
    x = [[0.0, 1.0], [1.0, 0.5], [2.0, 2.0], [3.0, -1.0], [4.0, 0.0], [5.0, 1.5]]
    y = [1.0, 2.5, 5.5, 6.0, 9.5, 9.0]
    weight = [1, 3, 0, 2, 1, 2]
    rows = [i for i, k in enumerate(weight) for _ in range(k)]

    def datamodule(source):
        return RegressionDataModule(source, val_fraction=0, test_fraction=0, batch_size=None)

    weighted = datamodule(Points(x=x, y=y, weight=weight))
    repeated = datamodule(Points(x=[x[i] for i in rows], y=[y[i] for i in rows]))
    L.seed_everything(0, verbose=False)
    model = LinearRegression(
        n_features=2,
        # Converged to float64 round-off, whatever the initial weights (LBFGS's default tolerances stop at ~1e-5).
        optimizer=lambda p: torch.optim.LBFGS(
            p, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
        ),
    )
    trainer = L.Trainer(
        max_epochs=3,
        precision="64-true",
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=weighted)
    # The weighted loss's optimum is the least-squares answer of the repeated rows.
    w, b = lstsq_with_intercept(*repeated.arrays("train"))
    learned_w, learned_b = model.learned_parameters()
    np.testing.assert_allclose(learned_w, w, atol=1e-5)
    np.testing.assert_allclose(learned_b, b, atol=1e-5)
    # Weighted metrics of these parameters are the plain metrics of the repeated rows.
    scores = [trainer.test(model, datamodule=dm, verbose=False)[0] for dm in (weighted, repeated)]
    # To float32 round-off: the data modules hold the features in float32, which the MAE feels to first
    # order (the MSE, stationary at the optimum, does not); ignoring the weights is off by far more.
    for name in ("test/mse", "test/rmse", "test/mae", "test/r2", "test/loss"):
        assert scores[0][name] == pytest.approx(scores[1][name], rel=1e-6), name


def adam(params):
    return torch.optim.Adam(params, lr=0.01)


def test_a_built_network_is_used_as_is_with_the_standardization_around_it():
    net = MLP(2, 1, hidden=(4,))
    model = LinearRegression(n_features=2, net=net, optimizer=adam)
    assert model.net is net and model.linear is None and "net" not in model.hparams
    model.set_scaling(Scaling(np.array([1.0, -2.0]), np.array([2.0, 0.5]), np.array([10.0]), np.array([3.0])))
    x = torch.randn(5, 2)
    expected = net((x - torch.tensor([1.0, -2.0])) / torch.tensor([2.0, 0.5])) * 3.0 + 10.0
    torch.testing.assert_close(model(x), expected)


def test_a_network_class_is_called_with_the_data_sizes_and_not_pickled_into_hparams():
    model = LinearRegression(n_features=3, n_targets=2, net=MLP, optimizer=adam)
    assert isinstance(model.net, MLP) and model.net(torch.zeros(1, 3)).shape == (1, 2)
    assert "net" not in model.hparams  # a class would make the checkpoint unreadable with weights_only


def test_the_default_network_is_the_linear_head():
    model = LinearRegression(n_features=2)
    assert isinstance(model.net, LinearHead) and model.linear is model.net
    assert model.hparams.net is None


def test_penalties_act_on_every_weight_matrix_of_a_network_never_on_biases():
    torch.manual_seed(0)
    model = LinearRegression(n_features=3, net=MLP(3, 1, hidden=(4,)), optimizer=adam, l1=0.1, l2=0.5)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    model.log = lambda *args, **kwargs: None  # outside a Trainer
    loss = model.training_step((x, y), 0)
    first, last = model.net[0], model.net[2]
    weights = first.weight, last.weight
    expected = ((model.net(x) - y) ** 2).mean() + sum(0.5 * (w**2).sum() + 0.1 * w.abs().sum() for w in weights)
    torch.testing.assert_close(loss, expected)


def test_auto_step_needs_a_linear_network():
    with pytest.raises(InputError, match=r"model.optimizer.lr='auto' and momentum='auto' \(AutoSGD\).*model.net=MLP"):
        LinearRegression(n_features=2, net=MLP)
    # A number is enough.
    LinearRegression(n_features=2, net=MLP, optimizer=lambda p: AutoSGD(p, lr=0.01, momentum=0.9))


def test_learned_parameters_need_a_linear_network():
    model = LinearRegression(n_features=2, net=MLP(2, 1), optimizer=adam)
    with pytest.raises(InputError, match="learned_parameters.. needs a linear network, but model.net=MLP"):
        model.learned_parameters()
    assert model.predict(np.zeros((3, 2))).shape == (3, 1)  # prediction works for any network


def test_the_default_lesson_learns_what_it_learned_before_the_network_became_injectable(train_run):
    # Recorded on main 92c9de5 (nn.Linear wired in) with `scripts/train.py --trainer.logger false
    # --trainer.enable_checkpointing false`, and reproduced bit for bit after: same seed, same steps.
    summary = train_run("--trainer.logger=false", "--trainer.enable_checkpointing=false")
    np.testing.assert_allclose(summary["learned"]["weight"], [[2.000065565109253, -3.3998281955718994]], atol=1e-6)
    np.testing.assert_allclose(summary["learned"]["bias"], [4.199859142303467], atol=1e-6)
    # and it is the least-squares answer of its training rows, to SGD's last-step noise
    np.testing.assert_allclose(summary["learned"]["weight"], summary["exact"]["weight"], atol=1e-3)
