"""What a user sees in TensorBoard: read back with TensorBoard's own reader and its own server."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from tests.helpers import CONFIGS, QUIET, http_get, lstsq_with_intercept, tensorboard_server, train_in


@pytest.fixture(scope="module")
def d2l_run(tmp_path_factory):
    """One short d2l run (2 epochs), shared by the tests of this module."""
    from linreg_pl.cli import ignore_third_party_warnings

    ignore_third_party_warnings()  # before the function-scoped fixture that applies it
    summary = train_in(tmp_path_factory.mktemp("tb"), "--trainer.max_epochs=2")
    return Path(summary["run_dir"]), summary


def events(run_dir):
    accumulator = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def test_event_files_hold_scalars_figure_and_hparams(d2l_run):
    run_dir, summary = d2l_run
    accumulator = events(run_dir)
    scalars = set(accumulator.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/log10_loss",
        "train/loss_epoch",
        "val/loss",
        "val/rmse",
        "val/mae",
        "val/r2",
        "params/w[x0]",
        "params/w[x1]",
        "params/b",
        "params_ref/true/w[x1]",
        "params_ref/lstsq/w[x1]",
        "test/mse",
        "test/r2",
    }
    assert expected <= scalars, expected - scalars
    assert "lr-SGD" in scalars  # configs/default.yaml's LearningRates, named after the optimizer
    trajectory = [e.value for e in accumulator.Scalars("params/w[x1]")]
    assert len(trajectory) >= 10 and abs(trajectory[-1] + 3.4) < abs(trajectory[0] + 3.4)  # walks to -3.4
    assert {"fit", "fit/tested", "landscape"} <= set(accumulator.Tags()["images"])
    for name in ("fit.png", "landscape.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "fit.gif").read_bytes()[:6] == b"GIF89a"

    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    # Real metrics, no hp_metric placeholder: the model's test metrics and the validation loss.
    assert metric_tags == {"val/loss", "test/mse", "test/rmse", "test/mae", "test/r2"}
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    # What a person compares between runs, and no internals (optimizer flags, instantiators, class paths).
    assert set(session.hparams) == {
        "optimizer",
        "lr",
        "lr_scheduler",
        "net",
        "max_epochs",
        "batch_size",
        "l1",
        "l2",
        "source",
        "standardize_features",
        "standardize_target",
    }
    hparams = {k: v.string_value or v.number_value for k, v in session.hparams.items()}
    assert hparams["optimizer"] == "SGD" and hparams["lr"] == pytest.approx(0.03) and hparams["net"] == "LinearHead"
    assert hparams["batch_size"] == 10 and hparams["max_epochs"] == 2
    assert hparams["source"] == "SyntheticLinear(n_samples=1000, noise=0.01)"
    assert "hp_metric" not in scalars
    assert accumulator.Scalars("test/mse")[-1].value == pytest.approx(summary["test_metrics"]["test/mse"], rel=1e-6)
    assert (run_dir / "config.yaml").is_file()
    assert "max_epochs" not in yaml.safe_load((run_dir / "hparams.yaml").read_text())  # the model's own, untouched


@pytest.mark.slow
def test_learning_rate_is_logged_at_the_cadence_of_the_curves_and_follows_the_schedule(train_run):
    step_lr = ["--model.lr_scheduler=torch.optim.lr_scheduler.StepLR", "--model.lr_scheduler.step_size=1"]
    summary = train_run(*step_lr, "--model.lr_scheduler.gamma=0.5", "--trainer.max_epochs=3")
    rates = {e.step: e.value for e in events(Path(summary["run_dir"])).Scalars("lr-SGD")}
    # d2l: 80 steps per epoch, logged every 10; halved at each epoch's end, the last one included.
    assert sorted(rates) == list(range(0, 241, 10))
    for step, rate in rates.items():
        assert rate == pytest.approx(0.03 * 0.5 ** (step // 80)), step


def test_an_optimizer_that_evaluates_several_times_a_step_logs_each_step_once(train_run):
    # LBFGS calls its closure, and Lightning the per-step hook after it, several times a step.
    lbfgs = ["--model.optimizer=torch.optim.LBFGS", "--data.batch_size=null", "--trainer.max_epochs=4"]
    summary = train_run(*lbfgs, "--trainer.log_every_n_steps=1")
    accumulator = events(Path(summary["run_dir"]))
    for tag in ("train/log10_loss", "params/w[x0]", "lr-LBFGS"):
        steps = [e.step for e in accumulator.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)
    assert [e.step for e in accumulator.Scalars("train/log10_loss")] == [0, 1, 2, 3]
    assert [e.step for e in accumulator.Images("fit")] == [0, 1, 2, 3, 4]


def test_custom_scalars_put_each_parameter_with_its_references(d2l_run):
    run_dir, _ = d2l_run
    tensor = events(run_dir).Tensors("custom_scalars__config__")[0].tensor_proto
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(tensor).item())
    charts = {chart.title: list(chart.multiline.tag) for c in layout.category for chart in c.chart}
    assert charts["w[x1]"] == [r"^params/w\[x1\]$", r"^params_ref/lstsq/w\[x1\]$", r"^params_ref/true/w\[x1\]$"]
    assert charts["train loss (log10)"] == [r"^train/log10_loss$"]


LESSONS = {  # shortened runs: the schedule follows the run's length, so it still takes >= 10 snapshots
    "line": ["--trainer.max_epochs=40", "--trainer.check_val_every_n_epoch=10"],
    "four_points": ["--trainer.max_epochs=40", "--trainer.check_val_every_n_epoch=10"],
    "make_regression": ["--trainer.max_epochs=40", "--trainer.check_val_every_n_epoch=10"],
    "d2l": ["--trainer.max_epochs=1"],
}


@pytest.mark.parametrize("name", list(LESSONS))
@pytest.mark.slow
def test_every_lesson_shows_the_learning_from_step_0(train_run, name):
    from linreg_pl.cli import TrainCLI

    summary = train_run("--config", str(CONFIGS / f"{name}.yaml"), *LESSONS[name])
    run_dir = Path(summary["run_dir"])
    accumulator = events(run_dir)
    snapshots = [event.step for event in accumulator.Images("fit")]
    assert len(snapshots) >= 10 and snapshots[0] == 0, snapshots
    assert snapshots == sorted(set(snapshots))  # distinct steps, in order: the slider's positions
    assert len(accumulator.Images("landscape")) == 1 and (run_dir / "landscape.png").is_file()
    from PIL import Image

    assert Image.open(run_dir / "fit.gif").n_frames == len(snapshots)

    weight_tag = next(tag for tag in accumulator.Tags()["scalars"] if tag.startswith("params/w["))
    weight = accumulator.Scalars(weight_tag)
    assert weight[0].step == 0 and weight[-1].step == snapshots[-1]
    # The least-squares reference is the independent numpy answer on the same training rows.
    x, y = TrainCLI(["--config", str(CONFIGS / f"{name}.yaml")]).datamodule.arrays("train")
    exact_weight, exact_bias = lstsq_with_intercept(x, y)
    assert accumulator.Scalars(weight_tag.replace("params/", "params_ref/lstsq/"))[0].value == pytest.approx(
        exact_weight[0, 0], rel=1e-5
    )
    assert accumulator.Scalars("params_ref/lstsq/b")[-1].value == pytest.approx(exact_bias[0], rel=1e-5, abs=1e-6)
    # The walk from the initial value ends nearer the optimum than it started.
    assert abs(weight[-1].value - exact_weight[0, 0]) < abs(weight[0].value - exact_weight[0, 0])
    # train/log10_loss is train/loss on a log scale, at the same steps.
    loss = {e.step: e.value for e in accumulator.Scalars("train/loss")}
    log10_loss = {e.step: e.value for e in accumulator.Scalars("train/log10_loss")}
    assert loss.keys() == log10_loss.keys()
    assert [10**v for v in log10_loss.values()] == pytest.approx(list(loss.values()), rel=1e-4, abs=1e-30)


@pytest.mark.slow
def test_many_parameters_are_logged_as_histograms_at_the_epochs_that_validate(train_run):
    summary = train_run("--config", str(CONFIGS / "diabetes.yaml"), "--trainer.max_epochs=20")
    accumulator = events(summary["run_dir"])
    assert {"params/weight", "params/bias"} <= set(accumulator.Tags()["histograms"])
    assert not any(tag.startswith("params/w[") for tag in accumulator.Tags()["scalars"])
    # Full batch (a step per epoch), 20 epochs: validation, and the histograms, unless set every
    # 20 // 100 -> 1 epoch, from the start to where StopAtOptimum ends the run.
    steps = [e.step for e in accumulator.Histograms("params/weight")]
    assert steps == list(range(summary["steps"] + 1)) and len(steps) > 5
    # Validating every 4th epoch: the start, the ends of epochs 4, 8, ... and the end of training.
    every_4 = ["--trainer.max_epochs=20", "--trainer.check_val_every_n_epoch=4"]
    summary = train_run("--config", str(CONFIGS / "diabetes.yaml"), *every_4)
    steps = [e.step for e in events(summary["run_dir"]).Histograms("params/weight")]
    assert steps == sorted({*range(0, summary["steps"], 4), summary["steps"]}) and len(steps) > 2


def test_config_yaml_is_what_lightning_clis_callback_writes(d2l_run, in_tmp, monkeypatch):
    from linreg_pl.cli import TrainCLI

    run_dir, _ = d2l_run
    monkeypatch.setattr("sys.argv", ["train.py"])
    cli = TrainCLI(["--trainer.max_epochs=2", *QUIET])  # the fixture's run, parsed again
    # What Lightning's SaveConfigCallback writes: the config validated once more, then dumped.
    cli.parser.save(cli.config, in_tmp / "lightning.yaml", skip_none=False, multifile=False)
    assert (run_dir / "config.yaml").read_text() == (in_tmp / "lightning.yaml").read_text()


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


def test_tensorboard_server_serves_the_scalars_and_the_images(d2l_run):
    run_dir, _ = d2l_run
    # TensorBoard keeps a sample of 10 images per tag unless told to keep more (as `make tensorboard` does).
    with tensorboard_server(run_dir.parent, "--samples_per_plugin", "images=100") as base:
        api, run = f"{base}/data/plugin", run_dir.name
        tags = json.loads(http_get(f"{api}/scalars/tags"))
        assert {"val/loss", "train/loss", "train/log10_loss", "params/w[x0]", "params_ref/lstsq/b"} <= set(tags[run])
        snapshots = json.loads(http_get(f"{api}/images/images?run={run}&tag=fit"))
        steps = [snapshot["step"] for snapshot in snapshots]
        assert len(steps) >= 10 and steps[0] == 0 and len(set(steps)) == len(steps)
        image = http_get(f"{api}/images/individualImage?{snapshots[-1]['query']}")
        assert image[:4] == b"\x89PNG"
        assert len(json.loads(http_get(f"{api}/images/images?run={run}&tag=landscape"))) == 1


def test_event_checksums_in_c_are_tensorboards_own(tmp_path, monkeypatch):
    import os

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer
    from torch.utils.tensorboard import SummaryWriter

    from linreg_pl.logger import checksum_events_in_c

    monkeypatch.setattr(record_writer, "masked_crc32c", record_writer.masked_crc32c)  # undone after the test
    checksum_events_in_c()
    assert record_writer.masked_crc32c is not masked_crc32c
    for data in (b"", b"a", os.urandom(1000), os.urandom(70_001)):
        assert record_writer.masked_crc32c(data) == masked_crc32c(data)
    # TensorBoard's reader checks every record's checksums with its own pure-Python CRC.
    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(3):
            writer.add_scalar("x", step / 2, step)
    assert [event.value for event in events(tmp_path).Scalars("x")] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("prefix", ["", "fold1"])
def test_our_logger_writes_the_scalars_that_lightnings_writes_one_event_per_call(tmp_path, prefix):
    from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from linreg_pl.logger import TensorBoardLogger

    written = {}
    for way, kind in (("lightning", LightningTensorBoardLogger), ("ours", TensorBoardLogger)):
        logger = kind(tmp_path, name=way, prefix=prefix)
        for step in (0, 5, 10, 15):
            if step == 15:  # after the end of a fit: Lightning's finalize closed the writer
                logger.finalize("success")
            scalars = {"params/w[x0]": 2.0 + step / 3, "params/b": torch.tensor(-1e-30 * step), "lr-SGD": 0.03}
            logger.log_metrics(scalars, step=step)
        logger.finalize("success")
        # Lightning's two event files (its writer reopened after finalize) are read in the order of
        # their names, which end in a per-process counter sorted as text: "...10" before "...9". Hence by step.
        accumulator = events(logger.log_dir)
        tags = accumulator.Tags()["scalars"]
        written[way] = {tag: sorted((e.step, e.value) for e in accumulator.Scalars(tag)) for tag in tags}
    assert len(written["ours"]) == 3 and written["ours"] == written["lightning"]
    assert all(series[-1][0] == 15 for series in written["ours"].values())
    assert all(tag.startswith(f"{prefix}-") for tag in written["ours"]) == bool(prefix)
    # One file, reopened after finalize: the version record, then one event per call.
    (scalars_file,) = (tmp_path / "ours").glob("version_0/events.out.tfevents.*.scalars")
    records = list(EventFileLoader(str(scalars_file)).Load())
    assert records[0].file_version == "brain.Event:2"
    assert [(event.step, len(event.summary.value)) for event in records[1:]] == [(s, 3) for s in (0, 5, 10, 15)]


def test_our_logger_puts_its_scalars_on_disk_once_a_second_and_at_the_end(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from linreg_pl import logger as logger_module

    now = [10.0]  # the clock, set before each write
    monkeypatch.setattr(logger_module, "monotonic", lambda: now[0])
    logger = logger_module.TensorBoardLogger(tmp_path, name="live")

    def on_disk():  # what a TensorBoard reading the file now sees
        (path,) = Path(logger.log_dir).glob("*.scalars")
        return [event.step for event in EventFileLoader(str(path)).Load() if event.summary.value]

    for step, (clock, seen) in enumerate([(10.0, [0]), (10.5, [0]), (11.2, [0, 1, 2]), (11.3, [0, 1, 2])]):
        now[0] = clock
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        assert on_disk() == seen, step
    logger.finalize("success")
    assert on_disk() == [0, 1, 2, 3]
