"""Divergence, interrupted runs, resume and checkpoints that are not ours."""

import itertools
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from linreg_pl.cli import train
from linreg_pl.errors import InputError, TrainingDiverged
from linreg_pl.runtime import checkpoints
from tests.helpers import run_in_process, script_command, train_in, wait_for_epochs

D2L_FAST = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.slow
def test_learning_rate_10_stops_with_the_divergence_message(train_run, recwarn):
    with pytest.raises(
        TrainingDiverged, match=r"diverged at epoch 0, step \d+: the loss is (nan|inf) with learning rate 10; lower"
    ):
        train_run("--model.optimizer.lr=10")
    # The one message: no numpy warning about the diverged parameters before it.
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in recwarn]


def test_divergence_keeps_the_last_good_checkpoint(train_run, in_tmp, monkeypatch):
    # A second passes at each reading of LastCheckpoint's clock: last.ckpt at every epoch's end.
    monkeypatch.setattr(checkpoints, "monotonic", itertools.count().__next__)
    # lr 0.03, 0.9, then 27: fine for two epochs, diverging in the third.
    growing_lr = ["--model.lr_scheduler=torch.optim.lr_scheduler.ExponentialLR", "--model.lr_scheduler.gamma=30"]
    with pytest.raises(
        TrainingDiverged, match=r"diverged at epoch 2, .*learning rate 27.*last good checkpoint is .*last.ckpt"
    ):
        train_run(*growing_lr, "--trainer.max_epochs=5")
    last = torch.load(in_tmp / "logs/d2l/version_0/checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and torch.isfinite(last["state_dict"]["net.weight"]).all()


def last_checkpoint_weights(run_root: Path, version: int) -> torch.Tensor:
    checkpoint = torch.load(run_root / f"version_{version}" / "checkpoints" / "last.ckpt", weights_only=True)
    return torch.cat([checkpoint["state_dict"]["net.weight"].ravel(), checkpoint["state_dict"]["net.bias"]])


# Small lr and many epochs: slow enough to be interrupted mid-run, deterministic from any epoch.
LONG_RUN = ["--trainer.max_epochs=40", "--model.optimizer.lr=0.001", *D2L_FAST]


@pytest.mark.slow  # a real training process, killed
def test_kill_9_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    uninterrupted, interrupted = tmp_path / "a", tmp_path / "b"
    uninterrupted.mkdir(), interrupted.mkdir()
    train_in(uninterrupted, *LONG_RUN)  # the reference and the resume need no process of their own

    process = subprocess.Popen(
        script_command("train.py", *LONG_RUN), cwd=interrupted, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_epochs(interrupted / "logs/d2l/version_0/checkpoints/last.ckpt", process, epochs=3)
        process.kill()  # SIGKILL: no handler runs
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    train_in(interrupted, *LONG_RUN, "--ckpt_path=last")
    expected = last_checkpoint_weights(uninterrupted / "logs" / "d2l", 0)
    torch.testing.assert_close(last_checkpoint_weights(interrupted / "logs" / "d2l", 1), expected, atol=1e-6, rtol=0)


@pytest.mark.slow  # a real training process
def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    process = subprocess.Popen(
        script_command("train.py", *LONG_RUN), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    last = tmp_path / "logs/d2l/version_0/checkpoints/last.ckpt"
    try:
        wait_for_epochs(last, process, epochs=2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert "interrupted at epoch" in stderr and "continue with --ckpt_path last" in stderr
    assert torch.load(last, weights_only=True)["global_step"] > 0


@pytest.mark.slow
def test_truncated_checkpoint(train_run, in_tmp):
    train_run("--trainer.max_epochs=1")
    last = in_tmp / "logs/d2l/version_0/checkpoints/last.ckpt"
    truncated = in_tmp / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.ckpt' is not a readable checkpoint"):
        train_run(f"--ckpt_path={truncated}")


@pytest.mark.slow
def test_checkpoint_of_a_3_feature_model_for_2_feature_data(train_run, in_tmp):
    three = ["--data.source.weight=[1.0,2.0,3.0]", "--trainer.max_epochs=1", "--trainer.logger.name=three"]
    summary = train_run(*three)
    with pytest.raises(
        InputError, match=r"a model of 3 feature\(s\) and 1 target\(s\), but the data has 2 feature\(s\)"
    ):
        train_run(f"--ckpt_path={summary['checkpoints']['last']}")


def test_random_file_and_missing_file(train_run, in_tmp):
    noise = in_tmp / "noise.ckpt"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="noise.ckpt' is not a readable checkpoint"):
        train_run(f"--ckpt_path={noise}")
    with pytest.raises(InputError, match="checkpoint not found: 'nowhere.ckpt'"):
        train_run("--ckpt_path=nowhere.ckpt")
    with pytest.raises(InputError, match="no last.ckpt under"):
        train_run("--ckpt_path=last")


class Payload:
    """Unpickling this runs os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload(marker)}, evil)
    # What scripts/train.py runs, in this process: a payload that ran would touch the marker all the same.
    result = run_in_process(train, f"--ckpt_path={evil}", *D2L_FAST, cwd=tmp_path)
    assert result.returncode == 2 and "was not loaded, since loading it could run code" in result.stderr
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # control: the payload does run when loaded unsafely
    assert marker.exists()


@pytest.mark.slow
def test_resume_with_an_epoch_lr_scheduler_matches_the_uninterrupted_run(train_run):
    step_lr = [
        "--model.lr_scheduler=torch.optim.lr_scheduler.StepLR",
        "--model.lr_scheduler.step_size=1",
        "--model.lr_scheduler.gamma=0.5",
    ]
    whole = train_run(*step_lr, "--trainer.max_epochs=4", "--trainer.logger.name=whole")
    train_run(*step_lr, "--trainer.max_epochs=2", "--trainer.logger.name=split")
    resumed = train_run(*step_lr, "--trainer.max_epochs=4", "--trainer.logger.name=split", "--ckpt_path=last")
    a, b = (torch.load(s["checkpoints"]["last"], weights_only=True) for s in (whole, resumed))
    assert a["lr_schedulers"][0]["_last_lr"] == b["lr_schedulers"][0]["_last_lr"] == [0.03 * 0.5**4]
    torch.testing.assert_close(a["state_dict"]["net.weight"], b["state_dict"]["net.weight"], atol=1e-7, rtol=0)


@pytest.mark.slow
def test_ckpt_path_last_refuses_a_finished_run_and_another_data_set(train_run, in_tmp):
    train_run("--trainer.max_epochs=2")
    with pytest.raises(InputError, match=r"is a finished run \(all 2 epochs of --trainer.max_epochs 2 trained\)"):
        train_run("--trainer.max_epochs=2", "--ckpt_path=last")
    with pytest.raises(InputError, match="which was trained on other data"):
        train_run("--trainer.max_epochs=4", "--data.source.n_samples=500", "--ckpt_path=last")
    assert [p.name for p in (in_tmp / "logs" / "d2l").iterdir()] == ["version_0"]  # no empty run left
    assert train_run("--trainer.max_epochs=3", "--ckpt_path=last")["epochs"] == 3  # raising the ceiling resumes
