"""LinearRegression: a network (``nn.Linear`` by default) trained on the mean squared error, with
optional L1/L2 penalties.

The model takes and returns data in original units. The standardization fitted by the data
module is stored in buffers (``nets.Standardizer``, so a checkpoint alone predicts) and applied
around the network; the loss is computed in the standardized space, where gradient descent is well
conditioned.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection

from linreg_pl.errors import InputError
from linreg_pl.exact.autosgd import AutoSGD
from linreg_pl.metrics import MeanSquaredError, regression_metrics
from linreg_pl.nets import LinearHead, Standardizer
from linreg_pl.scaling import Scaling


class LinearRegression(L.LightningModule):
    """y = net(x) fitted by minimising MSE + l2 * ||W||² + l1 * ||W||₁; by default net(x) = x @ W.T + b.

    Batches are ``(x, y)``, or ``(x, y, weight)`` for weighted least squares: the loss and the
    validation and test metrics are then weighted means over the rows. A ``RegressionDataModule``
    whose ``steps_per_batch`` is above 1 hands the model several per Lightning batch; the model
    then steps through them itself (manual optimization), one optimizer step each.

    Parameters
    ----------
    n_features : int
        Number of input columns (linked from the data module by the CLI).
    n_targets : int
        Number of outputs; several make a multi-output regression.
    net : callable or nn.Module, optional
        The network: a class or factory called as ``net(n_features, n_targets)`` (``--model.net
        mynets.TwoLayer --model.net.hidden 32``), or an already built ``nn.Module`` (Python API: pass
        it again to ``load_from_checkpoint``, as its code is not saved). It maps standardized
        features to standardized targets. None means ``nets.LinearHead``, the
        linear model that the exact reference, AutoSGD's "auto" step, the coefficient table and
        the figures understand (``model.linear``); for any other network they step aside.
    optimizer : callable, optional
        ``params -> torch.optim.Optimizer``, injected from config (``--model.optimizer Adam
        --model.optimizer.lr 0.1``). None means ``AutoSGD``: gradient descent whose learning rate
        and momentum the training data chooses (``linreg_pl.exact.autosgd``).
    lr_scheduler : callable, optional
        ``optimizer -> LRScheduler``; ``ReduceLROnPlateau`` watches ``val/loss``.
    l1, l2 : float
        Penalties on the weights only, never the bias (as scikit-learn's Lasso and Ridge), added
        to the *mean* squared error: ``l2`` equals Ridge's ``alpha / n_samples``. With
        standardization on they act on the standardized weights. For another network they act on
        every weight matrix (each parameter of two or more dimensions), never on biases.
    feature_names, target_names : list of str, optional
        Column names, kept in the checkpoint for prediction by name.
    encoding : dict, optional
        How categorical columns become ``feature_names`` (``linreg_pl.data.encoding``), linked from
        the data module and kept in the checkpoint so that prediction applies the same coding.

    Examples
    --------
    >>> import lightning as L
    >>> from linreg_pl import RegressionDataModule, SyntheticLinear
    >>> _ = L.seed_everything(0, verbose=False)
    >>> dm = RegressionDataModule(SyntheticLinear(weight=[2.0, -3.4], bias=4.2), batch_size=None)
    >>> model = LinearRegression(n_features=2, optimizer=lambda p: torch.optim.LBFGS(p, max_iter=50))
    >>> trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
    ...                     enable_progress_bar=False, enable_model_summary=False)
    >>> trainer.fit(model, datamodule=dm)
    >>> weight, bias = model.learned_parameters()
    >>> np.round(weight, 2).tolist(), np.round(bias, 2).tolist()
    ([[2.0, -3.4]], [4.2])
    """

    def __init__(
        self,
        n_features: int,
        n_targets: int = 1,
        net: Callable[[int, int], nn.Module] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        feature_names: list[str] | None = None,
        target_names: list[str] | None = None,
        encoding: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"] if isinstance(net, nn.Module) else None)
        if not isinstance(self.hparams.get("net"), dict | None):
            # Kept only as plain config (the CLI's class_path and init_args), which a checkpoint
            # rebuilds without unpickling code; a Python object's weights are saved, its code is not.
            self.remove_ignored_hparams(["net"])
        for name, value in (("n_features", n_features), ("n_targets", n_targets)):
            if value < 1:
                raise InputError(f"model.{name}={value} must be a positive integer.")
        for name, value in (("l1", l1), ("l2", l2)):
            if not value >= 0:
                raise InputError(f"model.{name}={value} must be >= 0 (it is a penalty weight).")
        # Kept as attributes too: hparams drop what cannot be pickled (a lambda, say).
        self.make_optimizer, self.make_lr_scheduler = optimizer, lr_scheduler
        self.net = net if isinstance(net, nn.Module) else (net or LinearHead)(n_features, n_targets)
        self.scaler = Standardizer(n_features, n_targets)
        metrics = self.metric_collection()
        self.metrics = nn.ModuleDict({s: metrics.clone(prefix=f"{s}/") for s in ("val", "test")})
        # The loss in the model's (standardized) space, reduced exactly across processes.
        self.losses = nn.ModuleDict({s: MeanSquaredError() for s in ("val", "test")})
        # The epoch's training loss is summed on the device: no host sync and no self.log per step.
        self.register_buffer("_train_loss_sum", torch.zeros(()), persistent=False)
        self._train_rows = 0
        self._logs_this_step = True
        self.latest_loss: torch.Tensor | None = None  # of the latest training step, for callbacks that watch it
        self._make_optimizer()  # a bad optimizer config fails here, before any run directory exists

    @classmethod
    def metric_collection(cls) -> MetricCollection:
        """The run's metrics, defined once (``linreg_pl.metrics.regression_metrics``): logged per
        epoch (``val/*``, ``test/*``), and the numbers of the report (pooled, and each target's column
        alone), ``scripts/evaluate.py`` and the HPARAMS tab; a metric added here shows in all."""
        return regression_metrics()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in original units for features in original units."""
        return self.scaler.to_original(self.net(self.scaler.features(x)))

    @property
    def linear(self) -> nn.Linear | None:
        """The network when it is one linear layer (the default), else None: what the features
        that only apply to a linear model read."""
        return self.net if isinstance(self.net, nn.Linear) else None

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            return self._step(batch, "train")
        return self._steps(batch, last_of_epoch=batch_idx + 1 == self.trainer.num_training_batches)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self):
        optimizer = self._make_optimizer()
        if isinstance(optimizer, AutoSGD) and (optimizer.auto_lr or optimizer.auto_momentum):
            why = optimizer.choose_step_from(self.trainer.datamodule, self.scaling, self.hparams.l2)
            if self.trainer.is_global_zero:
                print(why)
        if self.make_lr_scheduler is None:
            return optimizer
        scheduler = {"scheduler": self.make_lr_scheduler(optimizer)}
        if isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler["monitor"] = "val/loss"  # the one kind that needs a metric
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def setup(self, stage: str) -> None:
        # A fresh fit takes the standardization the data module fitted on its training split;
        # evaluation keeps the one stored with the weights.
        if self.trainer.precision == "64-true":
            # Before the scaling is copied in: a mean or spread beyond float32 would become inf in
            # float32 buffers. torchmetrics states keep their dtype under .double() unless told.
            self.double()
            for metric in [*self.metrics.values(), *self.losses.values()]:
                metric.set_dtype(torch.float64)
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit":
            # Batches of several mini-batches (RegressionDataModule.steps_per_batch, settled in its
            # setup, which runs first): the model steps through them itself.
            self.automatic_optimization = getattr(datamodule, "steps_per_batch", 1) == 1
            if datamodule is not None:
                self.set_scaling(datamodule.scaling)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # train/loss only at the steps the logger writes: self.log costs ~0.8 ms a call whatever it writes.
        self._logs_this_step = (self.global_step + 1) % (self.trainer.log_every_n_steps or 1) == 0

    def on_train_epoch_end(self) -> None:
        # At the epochs that validate, beside val/loss (a full-batch lesson's every epoch is a step).
        if self._train_rows > 0 and validation_epoch(self.trainer):
            # Equal shards per process, so the mean of the processes' means is the global mean.
            loss = self._train_loss_sum / self._train_rows
            self.log("train/loss_epoch", loss, sync_dist=self.trainer.world_size > 1)  # no collective alone
        self._train_loss_sum.zero_()
        self._train_rows = 0

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        if not self.automatic_optimization and not self.trainer.sanity_checking:
            self._step_schedulers(plateau=True)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def set_scaling(self, scaling: Scaling) -> None:
        """Store the standardization applied to inputs and targets."""
        self.scaler.scaling = scaling

    @property
    def scaling(self) -> Scaling:
        return self.scaler.scaling

    def predict(self, features) -> np.ndarray:
        """Predictions (n, n_targets) in original units, from a NumPy array (n, n_features) or a
        pandas DataFrame whose columns are picked by the feature names saved at training time.

        Examples
        --------
        >>> model = LinearRegression(n_features=2, feature_names=["a", "b"])
        >>> with torch.no_grad():
        ...     _ = model.linear.weight.copy_(torch.tensor([[2.0, -1.0]])), model.linear.bias.fill_(0.5)
        >>> import pandas as pd
        >>> model.predict(pd.DataFrame({"b": [1.0], "extra": [9.0], "a": [3.0]})).tolist()
        [[5.5]]
        """
        if hasattr(features, "columns"):  # a DataFrame: select and order the columns by name
            names = self.hparams.feature_names
            if names is None:
                raise InputError("this model has no saved feature names; pass an array with the training column order.")
            if missing := [name for name in names if name not in features.columns]:
                if self.hparams.encoding:  # a frame of the columns as read: they need the coding first
                    raise InputError(
                        "this model codes categorical columns "
                        f"{list(self.hparams.encoding['levels'])}; predict from a DataFrame of the columns as "
                        "read with linreg_pl.serve.predict_frame(checkpoint, frame)."
                    )
                raise InputError(f"feature column(s) {missing} are missing; the model needs {names}.")
            features = features[names]
        x = np.ascontiguousarray(features, dtype=np.float64)  # a column-reordered frame may be strided
        if x.ndim != 2 or x.shape[1] != self.hparams.n_features:
            raise InputError(f"features of shape {x.shape} given; the model needs (n, {self.hparams.n_features}).")
        mean = self.scaler.feature_mean
        with torch.no_grad():
            output = self(torch.as_tensor(x, dtype=mean.dtype, device=mean.device))
        return output.double().cpu().numpy()

    def learned_parameters(self) -> tuple[np.ndarray, np.ndarray]:
        """The weights (n_targets, n_features) and bias (n_targets,) in original units."""
        if self.linear is None:
            raise InputError(f"learned_parameters() needs a linear network, but model.net={type(self.net).__name__}.")
        weight = self.linear.weight.detach().double().cpu().numpy()
        bias = self.linear.bias.detach().double().cpu().numpy()
        return self.scaling.to_original_units(weight, bias)

    def _objective(self, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if weight is None:
            loss = F.mse_loss(output, target)
        else:  # the weighted mean over rows (and the plain mean over targets)
            loss = (weight @ (output - target).square()).sum() / (weight.sum() * target.shape[1])
        if self.hparams.l1 or self.hparams.l2:
            weights = [p for p in self.net.parameters() if p.ndim > 1]  # for nn.Linear: W, not the bias
            if self.hparams.l2:
                loss = loss + self.hparams.l2 * sum(w.square().sum() for w in weights)
            if self.hparams.l1:
                loss = loss + self.hparams.l1 * sum(w.abs().sum() for w in weights)
        return loss

    def _make_optimizer(self) -> torch.optim.Optimizer:
        try:
            optimizer = (self.make_optimizer or AutoSGD)(self.parameters())
        except ValueError as error:  # torch's own check, e.g. "Invalid learning rate: -1"
            raise InputError(f"model.optimizer is invalid: {error}; fix its init_args.") from None
        if isinstance(optimizer, AutoSGD) and self.linear is None:
            optimizer.refuse_auto_for(self.net)
        if not all(group["lr"] > 0 for group in optimizer.param_groups):
            raise InputError(
                f"model.optimizer.lr={optimizer.param_groups[0]['lr']} trains nothing; give a positive learning rate."
            )
        return optimizer

    def _steps(self, batches, last_of_epoch: bool) -> torch.Tensor:
        """One optimizer step per mini-batch of a Lightning batch (manual optimization); the
        curves count optimizer steps, as one step per batch logs them."""
        optimizer, trainer = self.optimizers(), self.trainer
        every, logged, taken = trainer.log_every_n_steps or 1, [], 0
        for batch in batches:
            step = self.global_step
            if 0 < trainer.max_steps <= step:
                break  # max_steps counts optimizer steps, which Lightning checks only between batches

            def closure(batch=batch):
                loss = self._step(batch, "train")
                optimizer.zero_grad()
                self.manual_backward(loss)
                return loss

            loss = optimizer.step(closure=closure)
            taken += 1
            if (step + 1) % every == 0:  # where Lightning would log this step's loss
                logged.append((step, loss.detach()))
        # Lightning logs at its count of batches that stepped (epoch and validation metrics, the
        # learning rate) and adds this batch's one: make it count optimizer steps, as one per batch does.
        trainer.fit_loop.epoch_loop._batches_that_stepped += taken - 1
        if last_of_epoch:  # where Lightning steps them: before the epoch-end hooks save a checkpoint
            self._step_schedulers(plateau=False)
        self.log("train/loss", loss, prog_bar=True, logger=False, batch_size=len(batch[0]))
        if logged:
            values = torch.stack([value for _, value in logged]).tolist()  # one host sync per batch
            for logger in self.loggers:
                for (step, _), value in zip(logged, values, strict=True):
                    logger.log_metrics({"train/loss": value, "epoch": self.current_epoch}, step=step)  # as Lightning
        return loss

    def _step_schedulers(self, plateau: bool) -> None:
        # Under manual optimization the module steps its schedulers (Lightning's documented
        # pattern): per epoch, and the plateau kind once val/loss is known.
        schedulers = self.lr_schedulers() or []
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            is_plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            if is_plateau and plateau and "val/loss" in self.trainer.callback_metrics:
                scheduler.step(self.trainer.callback_metrics["val/loss"])
            elif not is_plateau and not plateau:
                scheduler.step()

    def _step(self, batch, stage: str) -> torch.Tensor | None:
        x, y, *weight = batch
        weight = weight[0] if weight else None
        output, target = self.net(self.scaler.features(x)), self.scaler.target(y)
        if stage == "train":
            loss = self._objective(output, target, weight)
            self.latest_loss = loss.detach()
            self._train_loss_sum.add_(self.latest_loss, alpha=len(x))
            self._train_rows += len(x)
            if self.automatic_optimization and self._logs_this_step:
                self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
            return loss
        self.losses[stage].update(output, target, weight)
        original = self.scaler.to_original(output).double()
        self.metrics[stage].update(original, y.double(), weight=None if weight is None else weight.double())
        return None

    def _log_metrics(self, stage: str) -> None:
        # Once per epoch, not per batch (self.log costs ~0.8 ms a call); the metrics hold the sums.
        self.log(f"{stage}/loss", self.losses[stage], prog_bar=True)
        self.log_dict(self.metrics[stage])


def validation_epoch(trainer: L.Trainer) -> bool:
    """Whether the epoch under way ends with a validation (``check_val_every_n_epoch``): the epoch
    cadence of everything logged beside ``val/loss``."""
    return (trainer.current_epoch + 1) % (trainer.check_val_every_n_epoch or 1) == 0
