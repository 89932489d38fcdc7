"""A network of the user's own, outside the package: trained, resumed, scored and used for
prediction through the real scripts, on data with a curved relation where it must beat the line."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from linreg_pl import SyntheticCurve
from linreg_pl.cli import train
from tests.helpers import ROOT, run_in_process, run_train, script_command

MYNETS = """
from torch import nn


class TwoLayer(nn.Module):
    def __init__(self, in_features, out_features, hidden=32):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, out_features))

    def forward(self, x):
        return self.layers(x)
"""
CSV_DATA = ["--data.source", "CSVSource", "--data.source.path", "curve.csv", "--data.source.target", "y"]
TWO_LAYER = ["--model.net", "mynets.TwoLayer", "--model.net.hidden", "32", "--model.optimizer", "Adam"]
QUICK = ["--trainer.enable_progress_bar=false", "--model.optimizer.lr=0.02", "--trainer.check_val_every_n_epoch=10"]
NOT_LINEAR = "applies to linear models; model.net=TwoLayer is not linear, skipped"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """curve.csv (y = sin(1.5 x) + 0.3 x² + noise, 400 rows) and mynets.py, in one folder."""
    folder = tmp_path_factory.mktemp("own_network")
    table = SyntheticCurve(n_samples=400, seed=1).load()
    pd.DataFrame({"x": table.x[:, 0], "y": table.y[:, 0]}).to_csv(folder / "curve.csv", index=False)
    (folder / "mynets.py").write_text(MYNETS)
    return folder


def run(workdir: Path, script: str, *args: str):
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(workdir), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if script == "train.py":
        return run_train(*args, cwd=workdir, env=env)
    return subprocess.run(
        script_command(script, *args), cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def two_layer_run(workdir) -> dict:
    result = run(workdir, "train.py", *CSV_DATA, *TWO_LAYER, *QUICK, "--trainer.max_epochs=300")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])  # the report's last line
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"summary": summary, "stdout": result.stdout}


def test_a_network_from_outside_the_package_beats_the_line_on_curved_data(workdir, two_layer_run):
    # The line, the reference to beat, is trained in this process: no network of the user's in it.
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]
    line = run_in_process(train, *CSV_DATA, *quiet, cwd=workdir)
    assert line.returncode == 0, line.stderr
    line_mse = float(line.stdout.split("test (original units)  mse ")[1].split()[0])
    network_mse = two_layer_run["summary"]["test_metrics"]["test/mse"]
    assert network_mse < line_mse / 5, (network_mse, line_mse)
    # The linear-only parts of the run said once that they step aside, and nothing else broke.
    stdout = two_layer_run["stdout"]
    for feature in ("StopAtOptimum", "parameter trajectories", "fit snapshots and loss landscape"):
        assert stdout.count(f"{feature}: {NOT_LINEAR}") == 1
    assert stdout.count(f"the coefficient table and least-squares reference: {NOT_LINEAR}") == 1
    assert two_layer_run["summary"]["learned"] is None and two_layer_run["summary"]["exact"] is None


def test_predict_and_evaluate_rebuild_the_network_from_its_checkpoint(workdir, two_layer_run):
    checkpoint = two_layer_run["summary"]["checkpoints"]["last"]
    evaluated = run(workdir, "evaluate.py", "--ckpt_path", checkpoint, "--output", "scores.json")
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads((workdir / "scores.json").read_text())
    assert scores["mse"] == pytest.approx(two_layer_run["summary"]["test_metrics"]["test/mse"], rel=1e-5)

    predicted = run(workdir, "predict.py", "--ckpt_path", checkpoint, "--input", "curve.csv", "--output", "pred.csv")
    assert predicted.returncode == 0, predicted.stderr
    # Independently: the saved weights in a network built here, between the saved standardization.
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    layers = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    layers.load_state_dict(
        {k.removeprefix("net.layers."): v.double() for k, v in state.items() if k.startswith("net.")}
    )
    x = torch.tensor(pd.read_csv(workdir / "curve.csv")[["x"]].to_numpy())
    with torch.no_grad():
        standardized = layers((x - state["scaler.feature_mean"].double()) / state["scaler.feature_scale"].double())
        expected = standardized * state["scaler.target_scale"].double() + state["scaler.target_mean"].double()
    np.testing.assert_allclose(pd.read_csv(workdir / "pred.csv")["y_predicted"], expected[:, 0].numpy(), rtol=1e-5)


def test_a_network_run_resumes_and_refuses_another_network(workdir, two_layer_run):
    checkpoint = two_layer_run["summary"]["checkpoints"]["last"]
    resumed = run(
        workdir, "train.py", *CSV_DATA, *TWO_LAYER, *QUICK, "--trainer.max_epochs=310", "--ckpt_path", checkpoint
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "trained 310 epochs" in resumed.stdout  # continued from epoch 300, not from scratch
    other = run(
        workdir,
        "train.py",
        *CSV_DATA,
        *TWO_LAYER[:2],
        "--model.net.hidden",
        "8",
        *TWO_LAYER[4:],
        *QUICK,
        "--ckpt_path",
        checkpoint,
    )
    assert other.returncode == 2
    assert "holds another network" in other.stderr and "give the --model.net of the run that wrote it" in other.stderr
