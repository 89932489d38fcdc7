"""data.steps_per_batch: several optimizer steps per Lightning batch, chosen automatically where
the Trainer's flags allow it, must change nothing a user sees but the time it takes."""

from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from linreg_pl.errors import InputError

TWO_EPOCHS = ["--trainer.max_epochs=2"]  # d2l, the default lesson: 80 steps of 10 rows per epoch


def shown(run_dir: Path) -> dict:
    """Every scalar series (step, value) and the steps of every image, as TensorBoard reads them."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags["scalars"]}
    images = {tag: [e.step for e in accumulator.Images(tag)] for tag in tags["images"]}
    return {"scalars": scalars, "images": images}


@pytest.mark.slow
def test_auto_takes_a_whole_epoch_per_batch_and_shows_exactly_what_one_step_per_batch_shows(train_run, capsys):
    one = train_run(*TWO_EPOCHS, "--data.steps_per_batch=1")
    assert "steps_per_batch=auto" not in capsys.readouterr().out
    auto = train_run(*TWO_EPOCHS)
    assert "data.steps_per_batch=auto: 80 optimizer steps per Lightning batch" in capsys.readouterr().out
    assert auto["steps"] == one["steps"] == 160
    assert auto["learned"] == one["learned"]  # the same mini-batches, in the same order, the same updates
    one_dir, auto_dir = Path(one["run_dir"]), Path(auto["run_dir"])
    expected, got = shown(one_dir), shown(auto_dir)
    assert got == expected  # train/loss, params/*, log10 loss, epoch, val/*, lr: same steps, same values
    assert len(expected["scalars"]["train/loss"]) == 16 and len(expected["images"]["fit"]) >= 20
    gifs = [Image.open(d / "fit.gif") for d in (one_dir, auto_dir)]
    assert gifs[0].n_frames == gifs[1].n_frames


@pytest.mark.parametrize(
    "flag",
    [
        "--trainer.gradient_clip_val=1.0",
        "--trainer.accumulate_grad_batches=2",
        "--trainer.val_check_interval=0.5",
        "--trainer.limit_train_batches=0.5",
    ],
)
def test_auto_takes_one_step_per_batch_where_a_trainer_flag_counts_batches(train_run, capsys, flag):
    summary = train_run("--trainer.max_epochs=1", "--trainer.logger=false", flag)
    assert "steps_per_batch=auto" not in capsys.readouterr().out
    assert summary["steps"] in (80, 40)  # one optimizer step per Lightning batch (or per two, accumulated)


def test_max_steps_counts_optimizer_steps_within_a_batch(train_run):
    summary = train_run("--trainer.max_steps=37", "--trainer.logger=false")
    assert summary["steps"] == 37


def test_full_batch_training_takes_one_step_per_batch(train_run, capsys):
    summary = train_run("--data.batch_size=null", "--trainer.max_epochs=3", "--trainer.logger=false")
    assert summary["steps"] == 3 and "steps_per_batch=auto" not in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "many"])
def test_steps_per_batch_is_a_positive_integer_or_auto(train_run, value):
    with pytest.raises(InputError, match="steps_per_batch"):
        train_run(f"--data.steps_per_batch={value}")


STOP_AT_5 = "--trainer.callbacks+=tests.e2e.test_faults.CtrlCAtStep5"  # Ctrl-C after the batch reaching step 5


@pytest.mark.slow
def test_a_run_resumes_with_the_steps_per_batch_it_was_trained_with(train_run, in_tmp, capsys):
    from linreg_pl.runtime.signals import Interrupted

    with pytest.raises(Interrupted):  # one step per batch, stopped in the middle of epoch 0
        train_run(*TWO_EPOCHS, "--data.steps_per_batch=1", STOP_AT_5)
    capsys.readouterr()
    resumed = train_run(*TWO_EPOCHS, "--ckpt_path=last")  # auto: takes the checkpoint's one step per batch
    assert "steps_per_batch=auto" not in capsys.readouterr().out
    assert resumed["steps"] == 160
    # The walk goes on from step 5 (a switch of optimization mode would restart global_step at 0).
    walk = [e.step for e in EventAccumulator(resumed["run_dir"]).Reload().Scalars("params/b")]
    assert walk == [5, *range(10, 161, 10)]
    refused = "trained with 1 optimizer steps per batch; resume with --data.steps_per_batch 1"
    with pytest.raises(InputError, match=refused):
        train_run("--trainer.max_epochs=3", "--ckpt_path=last", "--data.steps_per_batch=4")


def test_a_checkpoint_of_several_steps_per_batch_refuses_flags_that_count_batches(train_run):
    train_run("--trainer.max_epochs=1")  # auto: 80 steps per batch
    with pytest.raises(InputError, match=r"data.steps_per_batch=80 \(the resumed checkpoint's\) runs several"):
        train_run("--trainer.max_epochs=2", "--ckpt_path=last", "--trainer.gradient_clip_val=1.0")


def test_a_module_other_than_linear_regression_gets_one_mini_batch_per_batch(in_tmp, capsys):
    import lightning as L
    import torch

    from linreg_pl import RegressionDataModule, SyntheticLinear

    class Plain(L.LightningModule):  # what a user's own module expects: (x, y) batches
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.03)

    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(Plain(), datamodule=RegressionDataModule(SyntheticLinear(weight=[2.0, -3.4], bias=4.2), batch_size=10))
    assert trainer.global_step == 80 and "steps_per_batch=auto" not in capsys.readouterr().out
