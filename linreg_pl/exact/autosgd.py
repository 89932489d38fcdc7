"""SGD whose step the data chooses: ``--model.optimizer.lr auto`` (the default optimizer).

For the mean squared error the Hessian is constant: 2/t times the second-moment matrix of
[x_s, 1] in the model's (standardized) space, plus the L2 term, with t the number of targets. Its
extreme eigenvalues L and mu give the classical steps for a quadratic:

- full batch: heavy-ball momentum with lr = 4 / (sqrt(L) + sqrt(mu))^2 and
  momentum = ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^2, which converges at the rate
  1 - 2/sqrt(kappa) per step, kappa = L / mu (capped, so nearly collinear columns, whose directions
  barely change the loss, do not stall the rest);
- mini-batches: lr = 1 / L and no momentum, stable under gradient noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch
from torch import nn

from linreg_pl.errors import InputError
from linreg_pl.exact.solvers import Moments
from linreg_pl.scaling import Scaling

# Directions flatter than L / MAX_CONDITION change the loss by too little to wait for.
MAX_CONDITION = 1e4


class AutoSGD(torch.optim.SGD):
    """``torch.optim.SGD`` whose ``lr`` and ``momentum`` may be ``"auto"``: the model sets them
    from the spectrum of the training data before the first step (see ``auto_step``).

    Parameters
    ----------
    params : iterable
        The parameters to optimize.
    lr : float or "auto"
        The learning rate, or "auto" to choose it from the data.
    momentum : float or "auto"
        Heavy-ball momentum, or "auto" (full batch: the optimal one for a quadratic; mini-batches: 0).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Literal["auto"] = "auto",
        momentum: float | Literal["auto"] = "auto",
    ) -> None:
        self.auto_lr, self.auto_momentum = lr == "auto", momentum == "auto"
        for name, value in (("lr", lr), ("momentum", momentum)):
            if value != "auto" and not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"model.optimizer.{name}={value!r} must be a number >= 0 or 'auto'.")
        # Placeholders until the data is known; a momentum buffer exists only if momentum can be > 0.
        super().__init__(params, lr=1.0 if self.auto_lr else lr, momentum=0.5 if self.auto_momentum else momentum)

    def refuse_auto_for(self, net: nn.Module) -> None:
        """The "auto" values come from a linear model's curvature: another network must give numbers."""
        if auto := [f"{name}='auto'" for name in ("lr", "momentum") if getattr(self, f"auto_{name}")]:
            raise InputError(
                f"model.optimizer.{' and '.join(auto)} (AutoSGD) takes its step from a linear model's curvature, "
                f"but model.net={type(net).__name__} is not linear; give numbers (--model.optimizer.lr 0.01 "
                "--model.optimizer.momentum 0.9) or another optimizer (--model.optimizer Adam)."
            )

    def choose_step_from(self, datamodule, scaling: Scaling, l2: float) -> str:
        """``choose_step`` from a ``RegressionDataModule``'s training rows (full batch when its
        ``batch_size`` is None)."""
        if datamodule is None or not hasattr(datamodule, "train_moments"):
            raise InputError("model.optimizer.lr='auto' needs a RegressionDataModule to learn from; give a number.")
        return self.choose_step(datamodule.train_moments(), scaling, l2, full_batch=datamodule.batch_size is None)

    def choose_step(self, moments: Moments, scaling: Scaling, l2: float, full_batch: bool) -> str:
        """Set the "auto" values from the training data; returns a sentence saying what and why."""
        lr, momentum, why = auto_step(moments, scaling, l2, full_batch)
        for group in self.param_groups:
            group["lr"] = lr if self.auto_lr else group["lr"]
            group["momentum"] = momentum if self.auto_momentum else group["momentum"]
        chosen = [f"lr {lr:.4g}"] * self.auto_lr + [f"momentum {momentum:.4g}"] * self.auto_momentum
        return f"{', '.join(chosen)} chosen from the data: {why}"


def auto_step(moments: Moments, scaling: Scaling, l2: float, full_batch: bool) -> tuple[float, float, str]:
    """``(lr, momentum, why)`` for gradient descent on the model's objective over these rows.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1000, 2)) * [1.0, 10.0]
    >>> moments = Moments.of(x, x @ [[1.0], [2.0]])
    >>> lr, momentum, _ = auto_step(moments, Scaling.identity(2, 1), 0.0, full_batch=False)
    >>> round(lr * 2 * 100, 1)  # 1 / L with L = 2 * (second moment of the wide column, ~100)
    1.0
    """
    d = moments.n_features
    n_targets = len(moments.mean) - d
    mean_x = (moments.mean[:d] - scaling.feature_mean) / scaling.feature_scale
    cov_x = moments.comoment[:d, :d] / moments.weight_sum / np.outer(scaling.feature_scale, scaling.feature_scale)
    second = np.block([[cov_x + np.outer(mean_x, mean_x), mean_x[:, None]], [mean_x[None, :], np.ones((1, 1))]])
    second[:d, :d] += l2 * n_targets * np.eye(d)
    eigenvalues = np.linalg.eigvalsh(2.0 / n_targets * second)
    largest = float(eigenvalues[-1])
    smallest = max(float(eigenvalues[0]), largest / MAX_CONDITION)
    if not full_batch:
        return 1.0 / largest, 0.0, f"1/L for mini-batches, L = {largest:.4g} (largest curvature)"
    root_l, root_mu = np.sqrt(largest), np.sqrt(smallest)
    lr = 4.0 / (root_l + root_mu) ** 2
    momentum = ((root_l - root_mu) / (root_l + root_mu)) ** 2
    return (
        float(lr),
        float(momentum),
        (
            f"heavy ball for a full batch, curvature L = {largest:.4g}, mu = {smallest:.4g} "
            f"(condition {largest / smallest:.3g}{', capped' if smallest > eigenvalues[0] else ''})"
        ),
    )
