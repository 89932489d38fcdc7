"""Callbacks that show training as it happens (parameter trajectories and fit figures in
TensorBoard, the HPARAMS tab filled with the run's real results), and the guard that stops a
diverging run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from linreg_pl.checkpoints import last_checkpoint_path
from linreg_pl.data import RegressionDataModule
from linreg_pl.errors import InputError, TrainingDiverged
from linreg_pl.model import LinearRegression

# Below this share of the loss of predicting the mean, a loss is float32 round-off: an exact fit.
NEGLIGIBLE_LOSS = 1e-6


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


class ParameterTrajectory(Callback):
    """Logs the learning rate (``lr``) and every weight and the bias, in original units, as
    scalars ``params/w[x0]``, ``params/b``, every ``log_every_n_steps`` steps, so one can watch w
    walk towards the truth.

    Past ``max_scalars`` parameters it logs a histogram of the weights per epoch instead.
    """

    def __init__(self, max_scalars: int = 10) -> None:
        self.max_scalars = max_scalars

    def on_train_batch_end(self, trainer, pl_module: LinearRegression, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % trainer.log_every_n_steps or not trainer.is_global_zero or (logger := _tensorboard(trainer)) is None:
            return
        scalars = {"lr": trainer.optimizers[0].param_groups[0]["lr"]}
        if pl_module.linear.weight.numel() + pl_module.linear.bias.numel() <= self.max_scalars:
            scalars.update(parameter_scalars(pl_module))
        logger.log_metrics(scalars, step=step)

    def on_train_epoch_end(self, trainer, pl_module: LinearRegression) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        if pl_module.linear.weight.numel() + pl_module.linear.bias.numel() > self.max_scalars:
            weight, bias = pl_module.learned_parameters()
            logger.experiment.add_histogram("params/weight", weight, trainer.global_step)
            logger.experiment.add_histogram("params/bias", bias, trainer.global_step)


def parameter_scalars(model: LinearRegression) -> dict[str, float]:
    """{"params/w[x0]": ..., "params/b": ...}, with the target in the name for multi-output."""
    weight, bias = model.learned_parameters()
    features = model.hparams.feature_names or [f"x{i}" for i in range(weight.shape[1])]
    targets = model.hparams.target_names or [f"y{i}" for i in range(weight.shape[0])]
    scalars = {}
    for t, target in enumerate(targets):
        prefix = f"params/{target}/" if len(targets) > 1 else "params/"
        scalars.update({f"{prefix}w[{f}]": float(weight[t, i]) for i, f in enumerate(features)})
        scalars[f"{prefix}b"] = float(bias[t])
    return scalars


class FitFigures(Callback):
    """Draws the fit (see ``linreg_pl.plots``) into TensorBoard's IMAGES tab about ``n_figures``
    times during training, and once more for the tested model, also saved as ``fit.png`` in the
    run directory.

    Only rank 0 draws: on other ranks the logger writes nothing.
    """

    def __init__(self, n_figures: int = 10) -> None:
        self.n_figures = n_figures

    def on_validation_epoch_end(self, trainer, pl_module: LinearRegression) -> None:
        every = max(1, trainer.max_epochs // self.n_figures) if trainer.max_epochs and trainer.max_epochs > 0 else 1
        if trainer.sanity_checking or trainer.current_epoch % every:
            return
        self._draw(trainer, pl_module, f"epoch {trainer.current_epoch}, step {trainer.global_step}", save=False)

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        self._draw(trainer, pl_module, "tested model", save=True)

    def _draw(self, trainer: L.Trainer, model: LinearRegression, title: str, save: bool) -> None:
        logger, datamodule = _tensorboard(trainer), trainer.datamodule
        if logger is None or not trainer.is_global_zero or not isinstance(datamodule, RegressionDataModule):
            return
        import matplotlib.pyplot as plt

        figure = draw_fit(model, datamodule, title)
        logger.experiment.add_figure("fit", figure, trainer.global_step, close=False)
        if save:
            figure.savefig(Path(logger.log_dir) / "fit.png", dpi=100)
        plt.close(figure)


def draw_fit(model: LinearRegression, datamodule: RegressionDataModule, title: str = ""):
    """The figure for this model and data: fitted line for one feature, else predicted vs. actual."""
    from linreg_pl.plots import fit_figure, prediction_figure

    weight, bias = model.learned_parameters()
    table = datamodule.table
    if datamodule.n_features == 1 and datamodule.n_targets == 1:
        splits = {s: datamodule.arrays(s) for s in ("train", "test") if datamodule.split_sizes[s]}
        true = (table.true_weight, table.true_bias) if table.true_weight is not None else None
        return fit_figure(splits, weight, bias, table.feature_names[0], table.target_names[0], true, title)
    x, y = datamodule.arrays(datamodule.evaluated_split("test"))
    return prediction_figure(
        y, x @ weight.T + bias, table.target_names, title=f"{datamodule.evaluated_split('test')} split, {title}"
    )


class HyperparameterMetrics(Callback):
    """Fills TensorBoard's HPARAMS tab once testing ends: the model and data hyper-parameters
    against the last ``val/loss`` and the test ``mse`` and ``r2`` (no placeholder metric)."""

    def __init__(self) -> None:
        self.val_loss: float | None = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            self.val_loss = float(trainer.callback_metrics["val/loss"])

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        logger = _tensorboard(trainer)
        if logger is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("test/mse", "test/r2")}
        if self.val_loss is not None:
            metrics["val/loss"] = self.val_loss
        params = {"model": dict(pl_module.hparams)}
        if trainer.datamodule is not None:
            params["data"] = dict(trainer.datamodule.hparams)
        logger.log_hyperparams(_plain(params), metrics=metrics, step=trainer.global_step)


def _plain(value):
    """Hyper-parameters as TensorBoard takes them: numbers and strings, lists as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return str(value.tolist())
    return str(value)


class DivergenceGuard(Callback):
    """Stops at the first step whose loss is NaN or infinite, naming the epoch, the step, the
    learning rate and what to try. Checkpoints written before it stay as they are."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # One host read per step: free on a CPU, one synchronisation per step on a GPU.
        if loss is None or math.isfinite(loss.item()):
            return
        last = last_checkpoint_path(trainer)
        last = last if last is not None and last.is_file() else None
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        raise TrainingDiverged(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: the loss is "
            f"{loss.item()} with learning rate {lr:g}; lower --model.optimizer.lr, standardize the features "
            "(--data.standardize_features true) or try another optimizer (--model.optimizer Adam)"
            + (f". The last good checkpoint is {last}." if last else "; no checkpoint had been saved yet.")
        )


class StopAtOptimum(Callback):
    """Ends training once the model is at the exact least-squares optimum of its own objective:
    the train loss within ``rtol`` of the optimum and every coefficient within ``coef_rtol``
    (relative to the largest one) of its least-squares value. ``max_epochs`` is then a ceiling, not
    a guess. Checked at the end of every training epoch from the data's moments: no pass over rows.

    Parameters
    ----------
    rtol : float
        Relative excess of the train loss over the optimum that counts as converged.
    coef_rtol : float
        Largest coefficient error, relative to the largest least-squares coefficient.
    when : {"real_data", "always", "never"}
        "real_data" (default): for CSV and bundled real sets, not for the lessons, whose runs show
        the textbook's epochs.
    """

    def __init__(
        self, rtol: float = 1e-4, coef_rtol: float = 1e-3, when: Literal["real_data", "always", "never"] = "real_data"
    ) -> None:
        for name, value in (("rtol", rtol), ("coef_rtol", coef_rtol)):
            if not value > 0:
                raise InputError(f"StopAtOptimum {name}={value} must be > 0.")
        self.rtol, self.coef_rtol, self.when = rtol, coef_rtol, when

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: LinearRegression) -> None:
        datamodule = trainer.datamodule
        if self.when == "never" or not isinstance(datamodule, RegressionDataModule) or pl_module.hparams.l1:
            return
        if self.when == "real_data" and not datamodule.real_data:
            return
        from linreg_pl.report import exact_reference

        reference = exact_reference(pl_module, datamodule)
        excess = reference["train_loss"] - reference["optimal_train_loss"]
        floor = max(reference["optimal_train_loss"], NEGLIGIBLE_LOSS * reference["constant_train_loss"])
        if excess <= self.rtol * floor and reference["coefficient_error"] <= self.coef_rtol:
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(
                    f"reached the least-squares optimum at epoch {trainer.current_epoch} "
                    f"(loss gap {excess / floor:.1e}, coefficient error {reference['coefficient_error']:.1e}): stopping"
                )
