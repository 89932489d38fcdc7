"""Callbacks: the run's report, TensorBoard monitors, stopping rules and figures.

Those that read a linear model's coefficients (the coefficient table and least-squares reference,
parameter trajectories, fit snapshots and landscape, stopping at the optimum) step aside for any
other network, each saying so once per run.
"""

from __future__ import annotations

import lightning as L


def not_linear(trainer: L.Trainer, model: L.LightningModule, feature: str) -> bool:
    """Whether ``model``'s network is not linear; then ``feature``, which only applies to a linear
    model, says so (on rank 0). Call it from a hook that runs once per run."""
    if model.linear is not None:
        return False
    if trainer.is_global_zero:
        print(f"{feature}: applies to linear models; model.net={type(model.net).__name__} is not linear, skipped")
    return True
