"""What TensorBoard shows besides the loss: parameter trajectories (w and b in original units,
with their least-squares references), the learning rate, and the HPARAMS tab filled with the run's
real results.

Only rank 0 logs: on other ranks the logger writes nothing. Each callback works alone.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from linreg_pl.callbacks import not_linear
from linreg_pl.datamodule import RegressionDataModule
from linreg_pl.model import LinearRegression, validation_epoch


def tensorboard_logger(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def is_logged_step(trainer: L.Trainer, step: int | None = None) -> bool:
    """Whether the parameters after optimizer step ``step`` (default: the latest) are logged:
    every ``log_every_n_steps``, never at step 0. Cheap: callbacks ask it at every step."""
    every, step = trainer.log_every_n_steps, trainer.global_step if step is None else step
    return every > 0 and step > 0 and step % every == 0


def total_optimizer_steps(trainer: L.Trainer) -> float:
    """Optimizer steps the fit will take at most (inf when unbounded), whatever the number of
    optimizer steps per Lightning batch."""
    datamodule = trainer.datamodule
    if trainer.lightning_module.automatic_optimization or not isinstance(datamodule, RegressionDataModule):
        total = trainer.estimated_stepping_batches
    elif trainer.max_epochs in (None, -1):
        total = math.inf
    else:
        total = datamodule.train_steps_per_epoch(trainer.world_size) * trainer.max_epochs
    return min(total, trainer.max_steps) if trainer.max_steps > 0 else total


class ParameterTrajectory(Callback):
    """Logs every weight and the bias in original units as scalars ``params/w[x0]``, ``params/b``
    from step 0 (before any update) and then every ``log_every_n_steps`` steps, so one can watch w
    walk from its start towards the truth; with them ``train/log10_loss``, the training loss on a
    log scale (TensorBoard's charts have no log axis of their own).

    The least-squares optimum of the training rows and the truth (when the source knows it) are
    logged as constant series ``params_ref/lstsq/...`` and ``params_ref/true/...``; the CUSTOM
    SCALARS tab draws each parameter on one chart with its two references.

    Past ``max_scalars`` parameters it logs histograms of the weights instead, at the start, at
    each epoch that validates (a histogram costs a few milliseconds: every epoch of a full-batch
    run would be every step) and at the end. A
    network other than the linear head has no w and b: then only ``train/log10_loss`` is logged.
    """

    def __init__(self, max_scalars: int = 10) -> None:
        self.max_scalars = max_scalars
        self.references: dict[str, float] = {}
        self._seen_step = self._histogram_step = -1

    def on_train_start(self, trainer, pl_module: LinearRegression) -> None:
        self._seen_step = self._histogram_step = -1
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero or not_linear(trainer, pl_module, "parameter trajectories"):
            return
        if not self._as_scalars(pl_module):
            self._log_histograms(trainer, pl_module)  # of the initial weights
            return
        scalars = parameter_scalars(pl_module)
        self.references = reference_scalars(trainer.datamodule, pl_module)
        logger.log_metrics({**scalars, **self.references}, trainer.global_step)
        logger.experiment.add_custom_scalars(scalars_layout(list(scalars), self.references))

    def on_before_optimizer_step(self, trainer, pl_module: LinearRegression, optimizer) -> None:
        # Called at every optimizer step, also when a Lightning batch carries several (and after
        # every closure call: LBFGS evaluates several per step): the parameters are those after
        # step global_step, the loss just computed is step global_step's.
        step = trainer.global_step
        if step == self._seen_step:
            return
        self._seen_step = step
        params_now, loss_now = is_logged_step(trainer, step), is_logged_step(trainer, step + 1)
        if (
            not (params_now or loss_now)
            or not trainer.is_global_zero
            or (logger := tensorboard_logger(trainer)) is None
        ):
            return
        scalars = parameter_scalars(pl_module) if params_now and self._as_scalars(pl_module) else {}
        if loss_now and pl_module.latest_loss is not None:
            # Logged at the step Lightning gives train/loss. A loss of exactly 0 (noise-free data)
            # is shown at float32's floor.
            scalars["train/log10_loss"] = math.log10(max(float(pl_module.latest_loss), np.finfo(np.float32).tiny))
        if scalars:
            logger.log_metrics(scalars, step)

    def on_train_end(self, trainer, pl_module: LinearRegression) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        if not self._as_scalars(pl_module):
            if trainer.global_step != self._histogram_step:
                self._log_histograms(trainer, pl_module)
            return
        # The walk ends where training ended; the constant lines span the run.
        logger.log_metrics({**parameter_scalars(pl_module), **self.references}, trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module: LinearRegression) -> None:
        if validation_epoch(trainer):
            self._log_histograms(trainer, pl_module)

    def _log_histograms(self, trainer, pl_module: LinearRegression) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero or pl_module.linear is None or self._as_scalars(pl_module):
            return
        self._histogram_step = trainer.global_step
        weight, bias = pl_module.learned_parameters()
        logger.experiment.add_histogram("params/weight", weight, trainer.global_step)
        logger.experiment.add_histogram("params/bias", bias, trainer.global_step)

    def _as_scalars(self, model: LinearRegression) -> bool:
        linear = model.linear
        return linear is not None and linear.weight.numel() + linear.bias.numel() <= self.max_scalars


class LearningRates(Callback):
    """Logs each optimizer's learning rate as ``lr-<Optimizer>`` (``lr-<Optimizer>/pg<i>`` per
    parameter group when there are several, as Lightning's ``LearningRateMonitor`` names them) at
    step 0, every ``log_every_n_steps`` optimizer steps and at the end: the cadence of the other
    curves. A value logged at step s is the rate of the update that follows it.

    Lightning's monitor writes every epoch (every step of a full-batch lesson, ~10% of its training
    time) or by Lightning batches, which several optimizer steps per batch would thin out.
    """

    def __init__(self) -> None:
        self._seen_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._seen_step = -1
        self._log(trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Once per step: LBFGS calls this after every evaluation of its closure.
        if is_logged_step(trainer) and trainer.global_step != self._seen_step:
            self._seen_step = trainer.global_step
            self._log(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._log(trainer)

    @staticmethod
    def _log(trainer: L.Trainer) -> None:
        if not trainer.loggers or not trainer.is_global_zero:
            return
        rates = {}
        for optimizer in trainer.optimizers:
            name, groups = f"lr-{type(optimizer).__name__}", optimizer.param_groups
            for i, group in enumerate(groups, start=1):
                rates[name if len(groups) == 1 else f"{name}/pg{i}"] = float(group["lr"])
        for logger in trainer.loggers:
            logger.log_metrics(rates, trainer.global_step)


def parameter_scalars(model: LinearRegression) -> dict[str, float]:
    """{"params/w[x0]": ..., "params/b": ...} in original units, the target in the name for
    multi-output."""
    weight, bias = model.learned_parameters()
    return named_parameters(weight, bias, model.hparams.feature_names, model.hparams.target_names)


def named_parameters(
    weight: np.ndarray,
    bias: np.ndarray,
    feature_names: list[str] | None = None,
    target_names: list[str] | None = None,
    root: str = "params",
) -> dict[str, float]:
    """Scalar tags for weights (t, d) and bias (t,).

    Examples
    --------
    >>> named_parameters(np.array([[2.0, -3.4]]), np.array([4.2]), root="params_ref/true")
    {'params_ref/true/w[x0]': 2.0, 'params_ref/true/w[x1]': -3.4, 'params_ref/true/b': 4.2}
    """
    features = feature_names or [f"x{i}" for i in range(weight.shape[1])]
    targets = target_names or [f"y{i}" for i in range(weight.shape[0])]
    scalars = {}
    for t, target in enumerate(targets):
        prefix = f"{root}/{target}/" if len(targets) > 1 else f"{root}/"
        scalars.update({f"{prefix}w[{f}]": float(weight[t, i]) for i, f in enumerate(features)})
        scalars[f"{prefix}b"] = float(bias[t])
    return scalars


def reference_scalars(datamodule, model: LinearRegression) -> dict[str, float]:
    """The optimum of the training objective on the training rows (``params_ref/lstsq/...``; with
    the model's L2 penalty when it has one) and the truth if known (``params_ref/true/...``)."""
    if not isinstance(datamodule, RegressionDataModule):
        return {}
    names = model.hparams.feature_names, model.hparams.target_names
    optimum = datamodule.train_statistics().solve(datamodule.scaling, l2=model.hparams.l2)
    references = named_parameters(*optimum, *names, root="params_ref/lstsq")
    table = datamodule.table
    if table.true_weight is not None:
        references.update(named_parameters(table.true_weight, table.true_bias, *names, root="params_ref/true"))
    return references


def scalars_layout(parameter_tags: list[str], references: dict[str, float]) -> dict:
    """The CUSTOM SCALARS layout: one chart per parameter with its reference lines, and the loss.

    Examples
    --------
    >>> scalars_layout(["params/b"], {"params_ref/true/b": 4.2})["parameters"]
    {'b': ['Multiline', ['^params/b$', '^params_ref/true/b$']]}
    """
    exact = lambda tag: f"^{re.escape(tag)}$"  # noqa: E731 (chart tags are regular expressions)
    charts = {}
    for tag in parameter_tags:
        name = tag.removeprefix("params/")
        series = [tag] + [r for r in references if r.endswith(f"/{name}") and r.count("/") == tag.count("/") + 1]
        charts[name] = ["Multiline", [exact(s) for s in series]]
    return {
        "parameters": charts,
        "loss": {
            "train loss (log10)": ["Multiline", [exact("train/log10_loss")]],
            "train and validation loss per epoch": ["Multiline", [exact("train/loss_epoch"), exact("val/loss")]],
        },
    }


class HyperparameterMetrics(Callback):
    """Fills TensorBoard's HPARAMS tab once testing ends with what a person compares between runs
    (optimizer, lr, batch size, epochs, penalties, data source, standardization), against the last
    ``val/loss`` and the model's test metrics that Lightning logged (no placeholder metric)."""

    def __init__(self) -> None:
        self.val_loss: float | None = None
        self.training: dict[str, float | str] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        # Read now: the optimizer and its initial learning rate are gone or changed after fit.
        optimizer = trainer.optimizers[0]
        group = optimizer.param_groups[0]
        schedulers = trainer.lr_scheduler_configs
        self.training = {
            "optimizer": type(optimizer).__name__,
            "lr": float(group.get("initial_lr", group["lr"])),
            "lr_scheduler": type(schedulers[0].scheduler).__name__ if schedulers else "none",
            "max_epochs": trainer.max_epochs,
        }

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            self.val_loss = float(trainer.callback_metrics["val/loss"])

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        tested = pl_module.metrics["test"].keys()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in tested}
        if self.val_loss is not None:
            metrics["val/loss"] = self.val_loss
        params = {**self.training, "net": type(pl_module.net).__name__}
        params.update(l1=pl_module.hparams.l1, l2=pl_module.hparams.l2)
        if isinstance(trainer.datamodule, RegressionDataModule):
            params.update(data_hyperparameters(trainer.datamodule, trainer.world_size))
        # The metrics themselves are the scalars Lightning logged; the HPARAMS tab reads their last
        # values by tag. The summaries go through a writer of their own rather than the logger's
        # log_hyperparams, which would also merge these keys into the model's hparams.yaml.
        with SummaryWriter(log_dir=logger.log_dir) as writer:
            for summary in hparams(params, metrics):
                writer.file_writer.add_summary(summary, trainer.global_step)


def data_hyperparameters(datamodule: RegressionDataModule, world_size: int = 1) -> dict[str, float | str]:
    """The data side of the HPARAMS table: the source in short, the batch size (the training rows
    per process for full-batch training) and the standardization."""
    batch_size = datamodule.batch_size or datamodule.split_sizes["train"] // world_size
    return {
        "source": source_label(datamodule.hparams["source"]),
        "batch_size": batch_size,
        # As words: TensorBoard would show a bool as 0 or 1.
        "standardize_features": str(bool(datamodule.standardize_features)).lower(),
        "standardize_target": str(bool(datamodule.standardize_target)).lower(),
    }


def source_label(config: dict) -> str:
    """A data source's config in short: its class name and the arguments that tell sets apart.

    Examples
    --------
    >>> source_label({"class_path": "linreg_pl.data.csv.CSVSource",
    ...               "init_args": {"path": "/data/houses.csv", "target": "price", "delimiter": ","}})
    'CSVSource(path=houses.csv, target=price)'
    """
    keys = ("name", "path", "target", "n_samples", "n_features", "noise")
    init_args = config.get("init_args", {})
    shown = {k: Path(v).name if k == "path" else v for k, v in init_args.items() if k in keys and v is not None}
    arguments = ", ".join(f"{k}={v}" for k, v in shown.items())
    return f"{config['class_path'].rsplit('.', 1)[-1]}({arguments})"
