"""What a user sees in TensorBoard: read back with TensorBoard's own reader and its own server."""

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.helpers import CONFIGS, free_port


@pytest.fixture(scope="module")
def d2l_run(tmp_path_factory):
    """One short d2l run (2 epochs), shared by the tests of this module."""
    from linreg_pl.cli import train

    directory = tmp_path_factory.mktemp("tb")
    cwd = Path.cwd()
    try:
        import os

        os.chdir(directory)
        sys_argv, sys.argv = sys.argv, ["train.py"]
        summary = train(["--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    finally:
        sys.argv = sys_argv
        os.chdir(cwd)
    return Path(summary["run_dir"]), summary


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_event_files_hold_scalars_figure_and_hparams(d2l_run):
    run_dir, summary = d2l_run
    accumulator = events(run_dir)
    scalars = set(accumulator.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/loss_epoch",
        "val/loss",
        "val/rmse",
        "val/mae",
        "val/r2",
        "lr",
        "params/w[x0]",
        "params/w[x1]",
        "params/b",
        "test/mse",
        "test/r2",
    }
    assert expected <= scalars, expected - scalars
    trajectory = [e.value for e in accumulator.Scalars("params/w[x1]")]
    assert len(trajectory) >= 10 and abs(trajectory[-1] + 3.4) < abs(trajectory[0] + 3.4)  # walks to -3.4
    assert "fit" in accumulator.Tags()["images"]
    assert (run_dir / "fit.png").read_bytes()[:4] == b"\x89PNG"

    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert metric_tags == {"val/loss", "test/mse", "test/r2"}  # real metrics, no hp_metric placeholder
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["data/batch_size"].number_value == 10
    assert "hp_metric" not in scalars
    assert accumulator.Scalars("test/mse")[-1].value == pytest.approx(summary["test_metrics"]["test/mse"], rel=1e-6)
    assert (run_dir / "config.yaml").is_file()


def test_many_parameters_are_logged_as_histograms(train_run):
    summary = train_run("--config", str(CONFIGS / "diabetes.yaml"), "--trainer.max_epochs=1")
    accumulator = events(summary["run_dir"])
    assert {"params/weight", "params/bias"} <= set(accumulator.Tags()["histograms"])
    assert not any(tag.startswith("params/w[") for tag in accumulator.Tags()["scalars"])


def test_report_gives_the_exact_optimum_and_gap(d2l_run):
    _, summary = d2l_run
    exact = summary["exact"]
    assert exact["optimal_train_loss"] <= exact["train_loss"]
    assert exact["converged"] and 0 <= exact["optimality_gap"] < 0.05
    assert abs(exact["weight"][0][1] + 3.4) < 1e-3


def test_unconverged_run_gets_a_hint(train_run, capsys):
    train_run("--trainer.max_epochs=1", "--model.optimizer.lr=0.0005", "--trainer.logger=false")
    out = capsys.readouterr().out
    assert "hint: training has not reached the optimum" in out


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def test_tensorboard_server_serves_the_scalars_and_the_image(d2l_run):
    run_dir, _ = d2l_run
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(run_dir.parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline = time.monotonic() + 60
        while True:  # poll until the server has loaded the run (bounded by the deadline)
            try:
                tags = json.loads(get(f"{base}/scalars/tags"))
                if tags:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "tensorboard did not load the run within 60 s"
            time.sleep(0.5)
        run = run_dir.name
        assert {"val/loss", "train/loss", "params/w[x0]"} <= set(tags[run])
        images = json.loads(get(f"{base}/images/images?run={run}&tag=fit"))
        image = get(f"{base}/images/individualImage?{images[-1]['query']}")
        assert image[:4] == b"\x89PNG"
    finally:
        server.terminate()
        server.wait(timeout=30)
