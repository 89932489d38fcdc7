"""The user's contract: every config runs, flags work, errors are one line, results are right."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LinearRegression as ExactOLS

from linreg_pl.cli import train
from tests.helpers import CONFIGS, QUIET, run_in_process, script_command

DATA_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "default.yaml")  # default.yaml: no data


def run_script(*args, cwd, env=None, timeout=300):
    return subprocess.run(
        script_command("train.py", *args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=lambda p: p.stem)
def test_every_config_runs_with_fast_dev_run(train_run, config):
    summary = train_run("--config", str(config), "--trainer.fast_dev_run=true")
    assert summary["steps"] == 1
    assert np.isfinite(summary["test_metrics"]["test/mse"])


def test_help_lists_data_model_trainer_and_checkpoint_options(tmp_path):
    result = run_in_process(train, "--help", cwd=tmp_path)
    assert result.returncode == 0
    out = result.stdout
    for option in (
        "--config",
        "--print_config",
        "--data.source",
        "--data.batch_size",
        "--data.val_fraction",
        "--data.standardize_features",
        "--model.optimizer",
        "--model.lr_scheduler",
        "--model.l2",
        "--trainer.devices",
        "--trainer.strategy",
        "--trainer.precision",
        "--trainer.callbacks",
        "--report.method",
        "--report.statistics",
        "--verbose",
        "--ckpt_path",
    ):
        assert option in out, option


def test_print_config_prints_the_resolved_yaml(tmp_path):
    result = run_in_process(train, "--config", str(CONFIGS / "csv.yaml"), "--print_config", cwd=tmp_path)
    assert result.returncode == 0
    config = yaml.safe_load(result.stdout)
    assert config["data"]["source"]["class_path"] == "linreg_pl.data.csv.CSVSource"
    assert config["model"]["optimizer"]["class_path"] == "linreg_pl.exact.autosgd.AutoSGD"  # lr and momentum: auto
    assert not (tmp_path / "logs").exists()  # printing the config trains nothing


@pytest.mark.slow
def test_default_run_from_another_directory_learns_the_d2l_truth(tmp_path):
    """`python scripts/train.py` as `make train` runs it, but from a foreign working directory."""
    result = run_script(cwd=tmp_path)  # stdout is a pipe, not a terminal: no progress bar
    assert result.returncode == 0, result.stderr[-2000:]
    # A quiet console: the report alone, no Lightning banner, tip, summary table or warning.
    assert len(result.stdout.splitlines()) <= 25, result.stdout
    assert result.stderr == "", result.stderr
    run_dir = tmp_path / result.stdout.strip().splitlines()[-1]
    assert run_dir.parent == tmp_path / "logs" / "d2l"
    summary = json.loads((run_dir / "summary.json").read_text())
    np.testing.assert_allclose(summary["learned"]["weight"], [[2.0, -3.4]], atol=0.01)
    np.testing.assert_allclose(summary["learned"]["bias"], [4.2], atol=0.01)
    assert summary["true"] == {"weight": [[2.0, -3.4]], "bias": [4.2]}
    assert Path(summary["checkpoints"]["best"]).is_file() and Path(summary["checkpoints"]["last"]).is_file()
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["n_features"] == 2 and hparams["feature_names"] == ["x0", "x1"]  # linked, not typed


@pytest.mark.parametrize("name", ["line", "four_points", "d2l"])
@pytest.mark.slow
def test_lesson_configs_learn_the_truth(train_run, name):
    summary = train_run("--config", str(CONFIGS / f"{name}.yaml"))
    np.testing.assert_allclose(summary["learned"]["weight"], summary["true"]["weight"], atol=0.02)
    np.testing.assert_allclose(summary["learned"]["bias"], summary["true"]["bias"], atol=0.02)


@pytest.mark.parametrize("name", ["make_regression", "diabetes", "linnerud"])
@pytest.mark.slow
def test_real_and_noisy_sets_match_exact_least_squares_on_the_same_split(train_run, name):
    from linreg_pl.cli import TrainCLI

    summary = train_run("--config", str(CONFIGS / f"{name}.yaml"))
    dm = TrainCLI(["--config", str(CONFIGS / f"{name}.yaml")]).datamodule
    (x, y), (x_test, y_test) = dm.arrays("train"), dm.arrays("test")
    exact_mse = np.mean((ExactOLS().fit(x, y).predict(x_test) - y_test) ** 2)
    assert summary["test_metrics"]["test/mse"] == pytest.approx(exact_mse, rel=0.01)


def test_stacked_configs_and_dotted_flags(train_run, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"data": {"batch_size": 25}, "trainer": {"max_epochs": 1}}))
    summary = train_run("--config", str(CONFIGS / "line.yaml"), "--config", str(extra), "--data.val_fraction=0.2")
    assert summary["epochs"] == 1 and summary["split_sizes"] == {"train": 350, "val": 100, "test": 50}
    assert summary["steps"] == 350 // 25


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--data.source=CSVSource", "--data.source.path=nope.csv", "--data.source.target=y"],
            "CSV file not found: 'nope.csv'",
        ),
        (
            ["--data.source=CSVSource", f"--data.source.path={CONFIGS / 'example.csv'}", "--data.source.target=price"],
            "column 'price' is not in",
        ),
        (["--data.test_fraction=1.2"], "data.test_fraction=1.2 must be in [0, 1)"),
        (["--model.optimizer.lr=-0.1"], "Invalid learning rate: -0.1"),
        (["--model.optimizer.lr=0"], "model.optimizer.lr=0.0 trains nothing"),
        (["--model.optimizer=Adamm"], "--model.optimizer Adamm is not a valid choice; did you mean 'Adam'?"),
        (["--model.optimizer.lrr=0.1"], "--model.optimizer.lrr is not an argument of SGD; did you mean 'lr'?"),
        (["fit"], "unrecognized arguments: fit"),
        (["--trainer.max_epochs=-5"], "`max_epochs` must be a non-negative integer or -1. You passed in -5."),
        (["--trainer.accelerator=gpu"], "gpu is not available on this machine: use --trainer.accelerator cpu"),
        (["--trainer.devices=0"], "invalid --trainer options: `Trainer(devices='0')` value is not a valid input"),
        (["--trainer.check_val_every_n_epoch=0"], "--trainer.check_val_every_n_epoch=0 must be an integer >= 1"),
        (["--trainer.log_every_n_steps=0"], "--trainer.log_every_n_steps=0 must be an integer >= 1"),
        (["--trainer.logger.init_args.save_dir=keep.txt/logs"], "keep.txt/logs/d2l' (Not a directory)"),
    ],
)
def test_user_errors_end_in_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "keep.txt").write_text("earlier work")
    (tmp_path / "keep.txt").write_text("a file, not a directory")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run_in_process(train, *args, "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "logs"]  # no config.yaml, no stray run


def test_verbose_switch_shows_the_traceback(tmp_path, monkeypatch):
    # In-process: the error leaves run_command as the exception itself (which a program prints
    # with its traceback), not as the one line and exit status 2.
    from linreg_pl.errors import InputError

    monkeypatch.setenv("LINREG_PL_VERBOSE", "1")
    with pytest.raises(InputError, match=r"data.test_fraction=1.2 must be in \[0, 1\)"):
        run_in_process(train, "--data.test_fraction=1.2", cwd=tmp_path)


@pytest.mark.parametrize(
    "flag",
    ["--trainer.enable_checkpointing=false", "--trainer.precision=64-true", "--trainer.logger=false"],
)
def test_trainer_flags_work_through_the_cli(train_run, flag):
    summary = train_run(flag, "--trainer.max_epochs=2")
    np.testing.assert_allclose(summary["learned"]["weight"], [[2.0, -3.4]], atol=0.05)
    if flag == "--trainer.enable_checkpointing=false":
        assert summary["checkpoints"] == {"best": "", "last": ""}
    if flag == "--trainer.precision=64-true":  # the model trained in float64: it saved float64 weights
        state = torch.load(summary["checkpoints"]["last"], weights_only=True)["state_dict"]
        assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float64}


DEFAULT_CALLBACKS = [
    c["class_path"] for c in yaml.safe_load((CONFIGS / "default.yaml").read_text())["trainer"]["callbacks"]
]


@pytest.mark.parametrize("left_out", DEFAULT_CALLBACKS)
def test_every_default_callback_can_be_left_out_by_config(in_tmp, monkeypatch, left_out):
    from linreg_pl.cli import TrainCLI

    monkeypatch.setattr("sys.argv", ["train.py"])
    config = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if c["class_path"] != left_out]
    (in_tmp / "fewer.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": config["trainer"]["callbacks"]}}))
    cli = TrainCLI(["--config", "fewer.yaml", "--trainer.max_epochs=1", *QUIET])
    names = {type(c).__name__ for c in cli.trainer.callbacks}
    if left_out.endswith("ModelCheckpoint"):  # Lightning then adds its own, which monitors nothing
        assert all(c.monitor is None for c in cli.trainer.callbacks if type(c).__name__ == "ModelCheckpoint")
    else:
        assert left_out.rsplit(".", 1)[-1] not in names
    assert {c.rsplit(".", 1)[-1] for c in DEFAULT_CALLBACKS if c != left_out} <= names
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)  # and the run works without it
