"""scripts/tune.py as a user runs it: a study that survives SIGKILL, a best config that reproduces
its trial, and a DDP trial run as its own processes."""

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import CONFIGS, run_train, script_command

pytestmark = pytest.mark.slow  # real tuning processes

TUNE = ["--config", str(CONFIGS / "diabetes.yaml"), "--tune", str(CONFIGS / "tune" / "ridge.yaml"), "--n_trials", "3"]


def last_scalar(run_dir: Path, tag: str) -> float:
    """The last value of a scalar as TensorBoard reads it from the run's event files."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events.Scalars(tag)[-1].value


def wait_for(path: Path, process: subprocess.Popen, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        assert process.poll() is None, "the study ended before trial 3 started"
        assert time.monotonic() < deadline, f"{path} did not appear within {deadline_s} s"
        time.sleep(0.02)


def test_a_study_killed_mid_trial_resumes_to_n_complete_trials_and_its_best_config_reproduces(tmp_path):
    experiment = tmp_path / "logs" / "diabetes"
    tuning = subprocess.Popen(
        script_command("tune.py", *TUNE),
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(experiment / "ridge" / "trial_2", tuning)  # trial 3 of 3 has started
    finally:
        os.killpg(tuning.pid, signal.SIGKILL)  # the whole process, no chance to clean up
        tuning.wait()
    storage = f"sqlite:///{experiment / 'optuna.db'}"
    killed = optuna.load_study(study_name="ridge", storage=storage).trials[2]
    assert killed.state == TrialState.RUNNING  # as the kill left it

    rerun = subprocess.run(script_command("tune.py", *TUNE), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "trial(s) [2] stopped mid-run" in rerun.stdout
    trials = optuna.load_study(study_name="ridge", storage=storage).trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3  # the same study, not 3 new trials
    assert trials[2].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 2]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    # Each trial's value is the validation metric its run logged last.
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(last_scalar(Path(trial.user_attrs["run_dir"]), "val/mse"), rel=1e-7)

    study = optuna.load_study(study_name="ridge", storage=storage)
    best_yaml = experiment / "ridge" / "best.yaml"
    assert str(study.best_trial.number) in best_yaml.read_text().splitlines()[0]
    reproduced = run_train("--config", str(best_yaml), cwd=tmp_path)
    assert reproduced.returncode == 0, reproduced.stderr[-3000:]
    run_dir = Path(reproduced.stdout.strip().splitlines()[-1])
    assert run_dir.parent == experiment  # a fresh version_N of the experiment, not a trial's directory
    assert last_scalar(run_dir, "val/mse") == pytest.approx(study.best_value, rel=1e-6)
    for figure in ("history.png", "importance.png"):
        assert (experiment / "ridge" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure


def test_a_ddp_trial_runs_as_its_own_processes_and_reports_through_the_storage(tmp_path):
    ddp = ["--config", str(CONFIGS / "line.yaml"), "--config", str(CONFIGS / "trainer" / "ddp_cpu.yaml")]
    tune = [
        *ddp,
        "--trainer.max_epochs=20",
        "--trainer.check_val_every_n_epoch=10",
        "--tune",
        str(CONFIGS / "tune" / "ridge.yaml"),
        "--n_trials",
        "1",
    ]
    result = subprocess.run(script_command("tune.py", *tune), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="ridge", storage=f"sqlite:///{tmp_path / 'logs' / 'line' / 'optuna.db'}")
    # One trial: no rank re-ran the study loop (Lightning's launcher re-executes the command per rank).
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert trial.value == pytest.approx(last_scalar(Path(trial.user_attrs["run_dir"]), "val/mse"), rel=1e-7)
    # The ranks' pruning callback reported every validation epoch to the parent's trial.
    assert sorted(trial.intermediate_values) == [9, 19]
