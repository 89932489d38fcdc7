"""When to stop: at the first non-finite loss (DivergenceGuard) or at the least-squares optimum
(StopAtOptimum).
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from linreg_pl.callbacks import not_linear
from linreg_pl.callbacks.monitors import is_logged_step
from linreg_pl.callbacks.report import exact_reference
from linreg_pl.datamodule import RegressionDataModule
from linreg_pl.errors import InputError, TrainingDiverged
from linreg_pl.model import LinearRegression
from linreg_pl.runtime.checkpoints import last_checkpoint_path

# Below this share of the loss of predicting the mean, a loss is float32 round-off: an exact fit.
NEGLIGIBLE_LOSS = 1e-6
_TINY = float(np.finfo(np.float64).tiny)


class DivergenceGuard(Callback):
    """Stops once the loss is NaN or infinite, naming the epoch, the step, the learning rate and
    what to try. Checkpoints written before it stay as they are.

    The loss is read on the host (a synchronisation on a GPU) only at the steps Lightning logs, at
    every batch of several optimizer steps, and at the last batch of each epoch, before any
    checkpoint of that epoch is written: a diverged model's loss stays non-finite, so the later
    look still sees it."""

    def __init__(self) -> None:
        self._lr = math.nan  # the rate of the batch under way

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The rate this batch trains with: an epoch's scheduler steps before its last batch ends.
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last_of_epoch = batch_idx + 1 == trainer.num_training_batches
        if pl_module.automatic_optimization and not is_logged_step(trainer) and not last_of_epoch:
            return  # a batch of several optimizer steps is looked at whole
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or math.isfinite(loss.item()):
            return
        last = last_checkpoint_path(trainer)
        last = last if last is not None and last.is_file() else None
        lr = self._lr
        raise TrainingDiverged(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: the loss is "
            f"{loss.item()} with learning rate {lr:g}; lower --model.optimizer.lr, standardize the features "
            "(--data.standardize_features true) or try another optimizer (--model.optimizer Adam)"
            + (f". The last good checkpoint is {last}." if last else "; no checkpoint had been saved yet.")
        )


class StopAtOptimum(Callback):
    """Ends training once the model is at the exact least-squares optimum of its own objective:
    every coefficient within ``se_tol`` of its own standard error of the least-squares value (the
    report's test, ``linreg_pl.callbacks.report.standard_errors_off``: directions that collinear
    columns leave undetermined do not count), or, where standard errors do not exist (an exact
    fit, as many parameters as rows, an L2 penalty), the train loss within ``rtol`` of the
    optimum. ``max_epochs`` is then a ceiling, not a guess. Checked from the data's moments (no
    pass over rows; the optimum is solved once per fit) at the end of the first epoch after each
    ``check_every_n_steps`` steps: every epoch of a mini-batch run, every tenth of a full-batch
    one. A network other than the linear head has no least-squares optimum: it then steps aside.
    A run with a progress bar also shows the live gap there (``train/gap``: the train loss's
    relative excess over the optimum), lessons included; a lesson without one (a log file)
    computes nothing.

    Parameters
    ----------
    rtol : float
        Relative excess of the train loss over the optimum that counts as converged where
        standard errors do not exist.
    se_tol : float
        Largest distance of any coefficient from its least-squares value, in its standard errors.
    when : {"real_data", "always", "never"}
        When to stop: "real_data" (default) for CSV and bundled real sets, not for the lessons,
        whose runs show the textbook's epochs; "never" also turns the gap off.
    check_every_n_steps : int
        Training steps between two checks, counted at the ends of epochs.
    """

    def __init__(
        self,
        rtol: float = 1e-4,
        se_tol: float = 0.01,
        when: Literal["real_data", "always", "never"] = "real_data",
        check_every_n_steps: int = 10,
    ) -> None:
        for name, value in (("rtol", rtol), ("se_tol", se_tol)):
            if not value > 0:
                raise InputError(f"StopAtOptimum {name}={value} must be > 0.")
        if check_every_n_steps < 1:
            raise InputError(f"StopAtOptimum check_every_n_steps={check_every_n_steps} must be an integer >= 1.")
        self.rtol, self.se_tol, self.when = rtol, se_tol, when
        self.check_every_n_steps = check_every_n_steps
        self._checked_step = 0
        self._optimum: tuple[np.ndarray, np.ndarray] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: LinearRegression) -> None:
        self._checked_step = trainer.global_step
        self._optimum = None  # a new fit may have other data
        if self.when != "never":
            not_linear(trainer, pl_module, "StopAtOptimum")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: LinearRegression) -> None:
        datamodule = trainer.datamodule
        if self.when == "never" or not isinstance(datamodule, RegressionDataModule) or pl_module.hparams.l1:
            return
        if pl_module.linear is None:  # no least-squares optimum to stop at
            return
        stops = self.when == "always" or datamodule.real_data
        if not stops and trainer.progress_bar_callback is None:
            return  # nothing would use the answer
        if trainer.global_step - self._checked_step < self.check_every_n_steps:
            return
        self._checked_step = trainer.global_step
        reference = exact_reference(pl_module, datamodule, optimum=self._optimum)
        # The data, their scaling and the penalty are fixed for the run: one solve is enough.
        self._optimum = np.array(reference["weight"]), np.array(reference["bias"])
        excess = reference["train_loss"] - reference["optimal_train_loss"]
        # The tiny floor: a constant target has an optimum and a constant model of loss 0.
        floor = max(reference["optimal_train_loss"], NEGLIGIBLE_LOSS * reference["constant_train_loss"], _TINY)
        pl_module.log("train/gap", excess / floor, prog_bar=True, sync_dist=trainer.world_size > 1)
        if not stops:
            return
        off = reference["standard_errors_off"]
        if off <= self.se_tol if off is not None else excess <= self.rtol * floor:
            trainer.should_stop = True
            if trainer.is_global_zero:
                closeness = f"within {off:.1e} standard errors" if off is not None else f"loss gap {excess / floor:.1e}"
                print(f"reached the least-squares optimum at epoch {trainer.current_epoch} ({closeness}): stopping")
