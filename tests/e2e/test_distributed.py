"""DDP on CPU with 2 real processes (gloo): the same answer as one process with the same global batch."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import CONFIGS, script_command, train_in

pytestmark = pytest.mark.slow  # real 2-process runs

# Full-batch gradient descent: the global batch is the whole training split on 1 or 2 processes.
FULL_BATCH = ["--data.batch_size=null", "--model.optimizer.lr=0.1", "--trainer.enable_progress_bar=false"]


def train(cwd: Path, *args: str) -> dict:
    result = subprocess.run(
        script_command("train.py", *FULL_BATCH, *args), cwd=cwd, capture_output=True, text=True, timeout=300
    )
    output = f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, output
    # Rank 1 shares the pipe of rank 0, so a stray line of its own may land after the report.
    run_dirs = [Path(line) for line in result.stdout.splitlines() if (Path(line) / "summary.json").is_file()]
    assert run_dirs, output
    return json.loads((run_dirs[-1] / "summary.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process reference, trained in this process (a program of its own is not what is compared)."""
    from linreg_pl.cli import ignore_third_party_warnings

    ignore_third_party_warnings()  # module-scoped: before the per-test fixture that applies them
    return train_in(tmp_path_factory.mktemp("single"), *FULL_BATCH, "--trainer.max_epochs=20")


def assert_same_run(summary, reference):
    np.testing.assert_allclose(summary["learned"]["weight"], reference["learned"]["weight"], atol=1e-5)
    np.testing.assert_allclose(summary["learned"]["bias"], reference["learned"]["bias"], atol=1e-5)
    assert summary["test_metrics"].keys() == reference["test_metrics"].keys()
    for key, value in reference["test_metrics"].items():
        assert summary["test_metrics"][key] == pytest.approx(value, rel=1e-5), key
    np.testing.assert_allclose(summary["exact"]["weight"], reference["exact"]["weight"], rtol=1e-12)


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_cpu_processes_match_one(tmp_path, single, strategy):
    summary = train(
        tmp_path,
        "--trainer.max_epochs=20",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        f"--trainer.strategy={strategy}",
    )
    assert_same_run(summary, single)
    # Written once, by rank 0: one run directory, one best and one last checkpoint.
    assert [p.name for p in (tmp_path / "logs" / "d2l").iterdir()] == ["version_0"]
    assert len(list((tmp_path / "logs" / "d2l" / "version_0" / "checkpoints").glob("*.ckpt"))) == 2
    # Rank 0's figures, written beside its training (under ddp_spawn by the time its process exits).
    assert {"fit.gif", "landscape.png", "fit.png"} <= {p.name for p in Path(summary["run_dir"]).iterdir()}


def test_ddp_cpu_preset_stacks_with_a_data_config(tmp_path):
    summary = train(
        tmp_path,
        "--config",
        str(CONFIGS / "line.yaml"),
        "--config",
        str(CONFIGS / "trainer" / "ddp_cpu.yaml"),
        "--trainer.max_epochs=2",
    )
    # line.yaml's data (y = 3x + 0.8), not the default lesson's (also "synthetic"), on 2 processes.
    assert summary["true"] == {"weight": [[3.0]], "bias": [0.8]} and summary["epochs"] == 2
    assert Path(summary["run_dir"]).parent.name == "line"


def test_ddp_with_several_steps_per_batch(tmp_path):
    summary = train(
        tmp_path,
        "--trainer.max_epochs=3",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--data.batch_size=20",
        "--data.steps_per_batch=5",
    )
    assert summary["steps"] == 3 * 400 // 20  # 400 rows per process, one step per mini-batch
    np.testing.assert_allclose(summary["learned"]["weight"], [[2.0, -3.4]], atol=0.01)


def test_resume_a_ddp_checkpoint_on_one_process(tmp_path, single):
    ddp = train(
        tmp_path,
        "--trainer.max_epochs=12",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    )
    resumed = train_in(tmp_path, *FULL_BATCH, "--trainer.max_epochs=20", f"--ckpt_path={ddp['checkpoints']['last']}")
    assert resumed["epochs"] == 20 and resumed["steps"] == 20
    assert_same_run(resumed, single)
