"""Checkpoint cadence: last.ckpt at most every second of training (the clock read every 50
steps) and always at the end, the best checkpoint only when validation runs, and no cadence that
changes what is learned."""

import itertools
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from linreg_pl.errors import InputError
from linreg_pl.runtime import checkpoints
from linreg_pl.runtime.checkpoints import AtomicCheckpointIO, LastCheckpoint
from linreg_pl.runtime.signals import Interrupted
from tests.helpers import CONFIGS

LINE = ["--config", str(CONFIGS / "line.yaml")]


@pytest.fixture
def saves(monkeypatch) -> list[str]:
    """The names of the checkpoints written, in order."""
    written = []
    save = AtomicCheckpointIO.save_checkpoint

    def counted(self, checkpoint, path, storage_options=None):
        written.append(Path(path).name)
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", counted)
    return written


def clock(monkeypatch, seconds_per_reading: float) -> None:
    """LastCheckpoint's clock, moved on by ``seconds_per_reading`` each time it is read."""
    readings = itertools.count(step=seconds_per_reading)
    monkeypatch.setattr(checkpoints, "monotonic", lambda: next(readings))


@pytest.mark.parametrize(("seconds_per_reading", "last_saves"), [(1.0, 3), (0.1, 1)])
def test_a_full_batch_lesson_reads_the_clock_every_50_steps_and_saves_at_the_end(
    train_run, saves, monkeypatch, seconds_per_reading, last_saves
):
    clock(monkeypatch, seconds_per_reading)
    summary = train_run(*LINE, "--trainer.max_epochs=110")
    last = torch.load(summary["checkpoints"]["last"], weights_only=True)
    assert last["global_step"] == 110  # the trained model, though 110 is not a multiple of 50
    # A second per reading: after steps 50, 100 and at the end. A tenth: under a second, only the end.
    assert saves.count("last.ckpt") == last_saves
    # val/loss is known every 50 epochs: the best checkpoint is rewritten at most that often.
    assert 1 <= len([name for name in saves if name.startswith("best")]) <= 2


@pytest.mark.parametrize(("seconds_per_reading", "last_saves"), [(1.0, 3), (0.0, 1)])
def test_a_mini_batch_run_saves_at_the_first_epoch_end_a_second_after_the_last_save(
    train_run, saves, monkeypatch, seconds_per_reading, last_saves
):
    clock(monkeypatch, seconds_per_reading)
    train_run("--trainer.max_epochs=3")  # d2l: 80 steps per epoch, the clock read at each epoch's end
    assert saves.count("last.ckpt") == last_saves


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"every_n_seconds": -1.0}, "every_n_seconds=-1.0 must be a number >= 0"),
        ({"every_n_seconds": float("nan")}, "every_n_seconds=nan must be a number >= 0"),
        ({"every_n_steps": 0}, "every_n_steps=0 must be an integer >= 1"),
    ],
)
def test_a_cadence_that_cannot_be_kept_is_refused_by_name(arguments, message):
    with pytest.raises(InputError, match=message):
        LastCheckpoint(**arguments)


class CtrlCAtStep7(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 7:
            signal.raise_signal(signal.SIGINT)


def test_ctrl_c_between_two_saves_still_saves_and_keeps_the_snapshots(train_run, in_tmp, saves):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with pytest.raises(Interrupted):
        train_run(*LINE, "--trainer.callbacks+=tests.unit.runtime.test_checkpoints.CtrlCAtStep7")
    run_dir = in_tmp / "logs/line/version_0"
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 7
    assert saves == ["last.ckpt"]  # the one on the signal
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    # The snapshots taken before the interrupt (steps 0 to 6 of the log-spaced schedule) are drawn.
    assert [image.step for image in events.Images("fit")] == [0, 1, 2, 3, 4, 6]


@pytest.mark.slow
def test_logging_validation_and_checkpoint_cadence_do_not_change_what_is_learned(train_run):
    every_step = ["--trainer.log_every_n_steps=1", "--trainer.check_val_every_n_epoch=1"]
    default = train_run(*LINE, "--trainer.max_epochs=30", "--trainer.logger.name=default")
    dense = train_run(*LINE, "--trainer.max_epochs=30", "--trainer.logger.name=dense", *every_step)
    for key in ("weight", "bias"):
        np.testing.assert_array_equal(default["learned"][key], dense["learned"][key])
