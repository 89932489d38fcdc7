"""Validation and test metrics with optional row weights (weighted least squares scores its rows
as it fits them). Without weights they equal torchmetrics' MeanSquaredError, MeanAbsoluteError and
R2Score (averaged over targets); every state is a sum, so processes reduce exactly.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric, Metric, MetricCollection


class MeanSquaredError(MeanMetric):
    """Σ w·mean_t (pred - target)² / Σ w over the rows; ``squared=False`` gives its root."""

    def __init__(self, squared: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.squared = squared

    def update(self, preds: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        super().update((preds - target).square().mean(dim=1), 1.0 if weight is None else weight)

    def compute(self) -> torch.Tensor:
        mse = super().compute()
        return mse if self.squared else mse.sqrt()


class MeanAbsoluteError(MeanMetric):
    """Σ w·mean_t |pred - target| / Σ w over the rows."""

    def update(self, preds: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        super().update((preds - target).abs().mean(dim=1), 1.0 if weight is None else weight)


class R2Score(Metric):
    """1 - Σ w (y - pred)² / Σ w (y - ȳ_w)² per target (ȳ_w the weighted mean, as statsmodels'
    WLS), averaged over targets; NaN (undefined) below two rows, where torchmetrics raises: a
    one-row split is legal (a tiny CSV at the default fractions)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("rows", "weight", "weighted_target", "weighted_square", "weighted_error"):
            self.add_state(name, default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        w = torch.ones(len(target), dtype=target.dtype, device=target.device) if weight is None else weight
        w = w[:, None]
        # Per-target sums; the first update sets the states' shape.
        self.rows = self.rows + len(target)
        self.weight = self.weight + w.sum()
        self.weighted_target = self.weighted_target + (w * target).sum(dim=0)
        self.weighted_square = self.weighted_square + (w * target.square()).sum(dim=0)
        self.weighted_error = self.weighted_error + (w * (target - preds).square()).sum(dim=0)

    def compute(self) -> torch.Tensor:
        if self.rows < 2:
            return torch.tensor(float("nan"), device=self.rows.device)
        total = self.weighted_square - self.weighted_target.square() / self.weight
        return (1 - self.weighted_error / total).mean()


def regression_metrics() -> MetricCollection:
    """MSE, RMSE, MAE and R², in that order (the report prints them so), in float64: a float32 sum
    of squared errors loses digits over a large split. Row weights reach every ``update``."""
    collection = MetricCollection({})
    for name, metric in {
        "mse": MeanSquaredError(),
        "rmse": MeanSquaredError(squared=False),
        "mae": MeanAbsoluteError(),
        "r2": R2Score(),
    }.items():  # one at a time: a whole dict would be sorted by name
        collection.add_metrics({name: metric})
    return collection.set_dtype(torch.float64)
