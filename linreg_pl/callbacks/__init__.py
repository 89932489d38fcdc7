"""Callbacks: the run's report, TensorBoard monitors, stopping rules and figures.

Those that read a linear model's coefficients (the coefficient table and least-squares reference,
parameter trajectories, fit snapshots and landscape, stopping at the optimum) step aside for any
other network, each saying so once per run.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import lightning as L
from lightning.pytorch.callbacks import Callback

# Lightning's callback hooks that it calls through its dispatcher only (the checkpoint hooks it
# calls directly).
DISPATCHED_HOOKS = tuple(
    name
    for name, _ in inspect.getmembers(Callback, inspect.isfunction)
    if name.startswith("on_") and name not in ("on_save_checkpoint", "on_load_checkpoint")
)


def not_linear(trainer: L.Trainer, model: L.LightningModule, feature: str) -> bool:
    """Whether ``model``'s network is not linear; then ``feature``, which only applies to a linear
    model, says so (on rank 0). Call it from a hook that runs once per run."""
    if model.linear is not None:
        return False
    if trainer.is_global_zero:
        print(f"{feature}: applies to linear models; model.net={type(model.net).__name__} is not linear, skipped")
    return True


def skip_hooks_not_overridden(callbacks: Iterable[Callback]) -> None:
    """Have Lightning skip each hook a callback leaves as ``Callback``'s no-op. Lightning calls every
    hook of every callback at every batch and optimizer step, each call ~4 µs through its profiler,
    but not a hook that is not callable (``lightning.pytorch.trainer.call._call_callback_hooks``):
    such hooks are set to None on the instance. A full-batch lesson's eleven callbacks made ~80
    calls an epoch, a fifth of its training time. A hook set on the instance (``LambdaCallback``)
    is kept."""
    for callback in callbacks:
        for name in DISPATCHED_HOOKS:
            if name not in vars(callback) and getattr(type(callback), name) is getattr(Callback, name):
                setattr(callback, name, None)
