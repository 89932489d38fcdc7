"""Tuning (linreg_pl.tune): the search space file, the trials' flags, which trials need
subprocesses, the recovery of trials whose process died, and the optional dependency."""

import os
import socket
import subprocess
import sys

import lightning.pytorch as pl
import optuna
import pytest
from optuna.trial import TrialState

from linreg_pl.cli import run_command
from linreg_pl.errors import InputError
from linreg_pl.tune import SearchSpace, TrialPruning, Tuner, main, needs_processes, resolved_config
from tests.helpers import CONFIGS


def test_the_pruning_callback_is_a_callback_of_the_installed_lightning():
    # optuna#4689: it once subclassed pytorch_lightning's Callback, which Lightning's Trainer refuses.
    from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

    assert issubclass(PyTorchLightningPruningCallback, pl.Callback)
    study = optuna.create_study()
    callback = TrialPruning.of(study.ask(), "val/loss")
    trainer = pl.Trainer(callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert callback in trainer.callbacks


def test_each_example_space_samples_flags_of_train_py(tmp_path):
    space = SearchSpace.from_file(CONFIGS / "tune" / "lesson.yaml")
    trial = optuna.trial.FixedTrial({"model.optimizer": "torch.optim.Adam", "model.optimizer.lr": 0.05})
    assert space.suggest(trial) == ["--model.optimizer=torch.optim.Adam", "--model.optimizer.lr=0.05"]
    assert space.metric == "val/loss" and space.study_direction == "minimize"
    streaming = SearchSpace.from_file(CONFIGS / "tune" / "streaming.yaml")
    flags = streaming.suggest(optuna.trial.FixedTrial({"data.batch_size": 256, "model.optimizer.lr": 0.1}))
    assert flags == ["--data.batch_size=256", "--model.optimizer.lr=0.1"]
    ridge = SearchSpace.from_file(CONFIGS / "tune" / "ridge.yaml")
    assert ridge.suggest(optuna.trial.FixedTrial({"model.l2": 0.01})) == ["--model.l2=0.01"]
    # Integer bounds sample integers; a null choice is the parser's null.
    path = tmp_path / "space.yaml"
    path.write_text(
        "metric: val/r2\nparams:\n  trainer.max_epochs: {low: 2, high: 9}\n  data.batch_size: {choices: [null, 8]}\n"
    )
    space = SearchSpace.from_file(path)
    assert space.study_direction == "maximize"
    trial = optuna.create_study().ask()
    max_epochs, batch_size = space.suggest(trial)
    assert max_epochs.startswith("--trainer.max_epochs=") and isinstance(trial.params["trainer.max_epochs"], int)
    assert batch_size in ("--data.batch_size=null", "--data.batch_size=8")


@pytest.mark.parametrize(
    "text, match",
    [
        ("metric: val/mse\n", "has no 'params'"),
        ("params:\n  model.l2: {low: 0.0, high: 1.0}\nmetric: test/mse\n", "metric='test/mse' is not a validation"),
        ("params:\n  seed_everything: {low: 0, high: 9}\n", "params.seed_everything is not a --model"),
        ("params:\n  model.l2: 0.1\n", r"params.model.l2=0.1 needs either 'choices"),
        ("params:\n  model.l2: {low: 0.0, high: 1.0}\nsearch: grid\n", r"unknown key\(s\) \['search'\]"),
    ],
)
def test_a_bad_search_space_is_named_with_the_fix(tmp_path, text, match):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        SearchSpace.from_file(path)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], False),
        (["--config", str(CONFIGS / "trainer" / "ddp_cpu.yaml")], True),
        (["--trainer.accelerator=cpu", "--trainer.devices=2"], True),
        (["--trainer.accelerator=cpu", "--trainer.devices=1"], False),
        (["--trainer.num_nodes=2"], True),
    ],
)
def test_trials_of_several_processes_are_recognized(flags, expected):
    assert needs_processes(resolved_config(["--config", str(CONFIGS / "line.yaml"), *flags]).trainer) is expected


@pytest.mark.slow
def test_trials_killed_or_interrupted_are_queued_again_once_and_failed_ones_are_not(in_tmp):
    tuner = Tuner(SearchSpace.from_file(CONFIGS / "tune" / "ridge.yaml"), ["--config", str(CONFIGS / "line.yaml")], "s")
    assert tuner.storage == f"sqlite:///{in_tmp / 'logs' / 'line' / 'optuna.db'}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trials = {}
    for name in ("killed", "alive", "interrupted", "diverged"):
        trial = tuner.study.ask()
        trial.suggest_float("model.l2", 1e-5, 10.0, log=True)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", dead.pid if name == "killed" else os.getpid())
        if name == "interrupted":
            trial.set_user_attr("interrupted", True)
        if name in ("interrupted", "diverged"):
            tuner.study.tell(trial, state=TrialState.FAIL)
        trials[name] = trial
    lost = [trials["killed"].number, trials["interrupted"].number]
    assert tuner.retry_lost_trials() == lost
    assert tuner.retry_lost_trials() == []  # queued once, not at every rerun
    by_number = {t.number: t for t in tuner.study.get_trials()}
    assert by_number[trials["killed"].number].state == TrialState.FAIL
    assert by_number[trials["alive"].number].state == TrialState.RUNNING  # its process will finish it
    for number in lost:  # the queued trials come first, with the lost ones' values
        retry = tuner.study.ask()
        assert retry.suggest_float("model.l2", 1e-5, 10.0, log=True) == by_number[number].params["model.l2"]
        assert retry.user_attrs == {"retry_of": number}


def test_without_optuna_the_error_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails as if not installed
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, ["--tune", str(CONFIGS / "tune" / "ridge.yaml"), "--config", str(CONFIGS / "diabetes.yaml")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: tuning needs Optuna (optuna is not installed): pip install 'linreg_pl[tune]'"
    ]


@pytest.mark.slow
def test_the_best_config_of_a_csv_study_names_its_data_from_anywhere(in_tmp, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tune.py"])  # pytest's own flags are not the trials'
    summary = main(
        ["--tune", str(CONFIGS / "tune" / "ridge.yaml"), "--config", str(CONFIGS / "csv.yaml"), "--n_trials=1"]
    )
    best = in_tmp / "logs" / "csv" / "ridge" / "best.yaml"
    assert summary["config"] == str(best.relative_to(in_tmp)) and summary["best_trial"] == 0
    # The CSV was named relative to configs/csv.yaml; best.yaml is elsewhere and still finds it.
    config = resolved_config(["--config", str(best)])
    assert config.data.source.init_args.path.absolute == str(CONFIGS / "example.csv")
    assert config.model.l2 == summary["params"]["model.l2"]
    assert config.trainer.logger.init_args.version is None  # a new run, not trial_0's directory
