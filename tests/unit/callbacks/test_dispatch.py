"""Lightning skips the hooks a callback does not override (linreg_pl.callbacks.skip_hooks_not_overridden):
the others still run, at every call Lightning makes."""

import sys

import pytest
from lightning.pytorch.callbacks import Callback, LambdaCallback, ModelCheckpoint

from linreg_pl.callbacks import skip_hooks_not_overridden
from linreg_pl.callbacks.figures import FitFigures
from tests.helpers import QUIET


class CountsBatches(Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1


def test_only_the_hooks_a_callback_leaves_as_no_ops_are_skipped():
    epochs = []
    lambda_callback = LambdaCallback(on_train_epoch_end=lambda trainer, module: epochs.append(1))
    callbacks = [ModelCheckpoint(), FitFigures(), CountsBatches(), lambda_callback]
    skip_hooks_not_overridden(callbacks)
    checkpoint, figures, counter, _ = callbacks
    assert checkpoint.on_before_backward is None and callable(checkpoint.on_train_batch_end)
    assert figures.on_train_batch_start is None and callable(figures.on_before_optimizer_step)
    assert counter.on_train_epoch_end is None and callable(counter.on_train_batch_end)
    assert callable(lambda_callback.on_train_epoch_end) and lambda_callback.on_train_batch_end is None
    assert callable(checkpoint.on_save_checkpoint)  # Lightning calls it directly: never skipped


@pytest.mark.slow
def test_a_run_calls_every_hook_that_is_overridden(in_tmp, monkeypatch):
    from linreg_pl.cli import TrainCLI, train

    monkeypatch.setattr(sys, "argv", ["train.py"])
    epochs = []
    counter = CountsBatches()
    lambda_callback = LambdaCallback(on_train_epoch_end=lambda trainer, module: epochs.append(trainer.current_epoch))
    args = ["--trainer.max_epochs=3", "--data.steps_per_batch=1", *QUIET]
    train(args, callbacks=[counter, lambda_callback])
    assert epochs == [0, 1, 2]
    assert counter.batches == 3 * 80  # d2l: 800 training rows in batches of 10
    # The CLI applies it to every callback of the Trainer it builds.
    trainer = TrainCLI(["--trainer.max_epochs=1", *QUIET]).trainer
    kinds = {type(callback): callback for callback in trainer.callbacks}
    assert kinds[ModelCheckpoint].on_before_backward is None and callable(kinds[ModelCheckpoint].on_train_batch_end)
    assert kinds[FitFigures].on_train_batch_start is None and callable(kinds[FitFigures].on_before_optimizer_step)
