"""Callbacks that show training as it happens (parameter trajectories, fit snapshots and the loss
landscape in TensorBoard, the HPARAMS tab filled with the run's real results), and the guard that
stops a diverging run.

Only rank 0 draws or logs: on other ranks the logger writes nothing. Each callback works alone.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure

from linreg_pl.checkpoints import last_checkpoint_path
from linreg_pl.data import RegressionDataModule
from linreg_pl.errors import InputError, TrainingDiverged
from linreg_pl.files import atomic_open
from linreg_pl.model import LinearRegression
from linreg_pl.plots import fit_figure, landscape_figure, line_limits, pixels, prediction_figure, write_gif
from linreg_pl.report import exact_reference
from linreg_pl.streaming import MAX_MATERIALIZED_ROWS

# Rows drawn per split in a figure: enough to show the cloud, cheap enough for every snapshot.
MAX_DRAWN_ROWS = 2000

# Below this share of the loss of predicting the mean, a loss is float32 round-off: an exact fit.
NEGLIGIBLE_LOSS = 1e-6


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def _logged_step(trainer: L.Trainer) -> bool:
    """Whether this step is one that Lightning logs (every ``log_every_n_steps``; never for 0)."""
    every = trainer.log_every_n_steps
    return bool(every) and trainer.global_step % every == 0


class ParameterTrajectory(Callback):
    """Logs every weight and the bias in original units as scalars ``params/w[x0]``, ``params/b``
    from step 0 (before any update) and then every ``log_every_n_steps`` steps, so one can watch w
    walk from its start towards the truth; with them ``train/log10_loss``, the training loss on a
    log scale (TensorBoard's charts have no log axis of their own).

    The least-squares optimum of the training rows and the truth (when the source knows it) are
    logged as constant series ``params_ref/lstsq/...`` and ``params_ref/true/...``; the CUSTOM
    SCALARS tab draws each parameter on one chart with its two references.

    Past ``max_scalars`` parameters it logs a histogram of the weights per epoch instead.
    """

    def __init__(self, max_scalars: int = 10) -> None:
        self.max_scalars = max_scalars
        self.references: dict[str, float] = {}

    def on_train_start(self, trainer, pl_module: LinearRegression) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        if not self._as_scalars(pl_module):
            self.on_train_epoch_end(trainer, pl_module)  # the histograms of the initial weights
            return
        scalars = parameter_scalars(pl_module)
        self.references = reference_scalars(trainer.datamodule, pl_module)
        logger.log_metrics({**scalars, **self.references}, step=trainer.global_step)
        logger.experiment.add_custom_scalars(scalars_layout(list(scalars), self.references))

    def on_train_batch_end(self, trainer, pl_module: LinearRegression, outputs, batch, batch_idx) -> None:
        if not _logged_step(trainer) or not trainer.is_global_zero or (logger := _tensorboard(trainer)) is None:
            return
        if self._as_scalars(pl_module):
            logger.log_metrics(parameter_scalars(pl_module), step=trainer.global_step)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            # The loss was computed before this step's update: logged at the step Lightning gives
            # train/loss. A loss of exactly 0 (noise-free data) is shown at float32's floor.
            log10_loss = math.log10(max(float(loss), np.finfo(np.float32).tiny))
            logger.log_metrics({"train/log10_loss": log10_loss}, step=trainer.global_step - 1)

    def on_train_end(self, trainer, pl_module: LinearRegression) -> None:
        logger = _tensorboard(trainer)
        if logger is not None and trainer.is_global_zero and self.references:
            logger.log_metrics(self.references, step=trainer.global_step)  # the constant lines span the run

    def on_train_epoch_end(self, trainer, pl_module: LinearRegression) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not trainer.is_global_zero or self._as_scalars(pl_module):
            return
        weight, bias = pl_module.learned_parameters()
        logger.experiment.add_histogram("params/weight", weight, trainer.global_step)
        logger.experiment.add_histogram("params/bias", bias, trainer.global_step)

    def _as_scalars(self, model: LinearRegression) -> bool:
        return model.linear.weight.numel() + model.linear.bias.numel() <= self.max_scalars


def parameter_scalars(model: LinearRegression) -> dict[str, float]:
    """{"params/w[x0]": ..., "params/b": ...} in original units, the target in the name for
    multi-output."""
    weight, bias = model.learned_parameters()
    return named_parameters(weight, bias, model.hparams.feature_names, model.hparams.target_names)


def named_parameters(
    weight: np.ndarray,
    bias: np.ndarray,
    feature_names: list[str] | None = None,
    target_names: list[str] | None = None,
    root: str = "params",
) -> dict[str, float]:
    """Scalar tags for weights (t, d) and bias (t,).

    Examples
    --------
    >>> named_parameters(np.array([[2.0, -3.4]]), np.array([4.2]), root="params_ref/true")
    {'params_ref/true/w[x0]': 2.0, 'params_ref/true/w[x1]': -3.4, 'params_ref/true/b': 4.2}
    """
    features = feature_names or [f"x{i}" for i in range(weight.shape[1])]
    targets = target_names or [f"y{i}" for i in range(weight.shape[0])]
    scalars = {}
    for t, target in enumerate(targets):
        prefix = f"{root}/{target}/" if len(targets) > 1 else f"{root}/"
        scalars.update({f"{prefix}w[{f}]": float(weight[t, i]) for i, f in enumerate(features)})
        scalars[f"{prefix}b"] = float(bias[t])
    return scalars


def reference_scalars(datamodule, model: LinearRegression) -> dict[str, float]:
    """The optimum of the training objective on the training rows (``params_ref/lstsq/...``; with
    the model's L2 penalty when it has one) and the truth if known (``params_ref/true/...``)."""
    if not isinstance(datamodule, RegressionDataModule):
        return {}
    names = model.hparams.feature_names, model.hparams.target_names
    optimum = datamodule.train_statistics().solve(datamodule.scaling, l2=model.hparams.l2)
    references = named_parameters(*optimum, *names, root="params_ref/lstsq")
    table = datamodule.table
    if table.true_weight is not None:
        references.update(named_parameters(table.true_weight, table.true_bias, *names, root="params_ref/true"))
    return references


def scalars_layout(parameter_tags: list[str], references: dict[str, float]) -> dict:
    """The CUSTOM SCALARS layout: one chart per parameter with its reference lines, and the loss.

    Examples
    --------
    >>> scalars_layout(["params/b"], {"params_ref/true/b": 4.2})["parameters"]
    {'b': ['Multiline', ['^params/b$', '^params_ref/true/b$']]}
    """
    exact = lambda tag: f"^{re.escape(tag)}$"  # noqa: E731 (chart tags are regular expressions)
    charts = {}
    for tag in parameter_tags:
        name = tag.removeprefix("params/")
        series = [tag] + [r for r in references if r.endswith(f"/{name}") and r.count("/") == tag.count("/") + 1]
        charts[name] = ["Multiline", [exact(s) for s in series]]
    return {
        "parameters": charts,
        "loss": {
            "train loss (log10)": ["Multiline", [exact("train/log10_loss")]],
            "train and validation loss per epoch": ["Multiline", [exact("train/loss_epoch"), exact("val/loss")]],
        },
    }


def snapshot_steps(total_steps: float, count: int = 20) -> np.ndarray:
    """Step 0 and ``count`` distinct, log-spaced global steps up to ``total_steps``: dense at the
    start, where the line moves most. An unbounded run gets five steps per decade.

    Examples
    --------
    >>> snapshot_steps(500).tolist()
    [0, 1, 2, 3, 4, 6, 8, 11, 14, 19, 26, 35, 47, 63, 85, 114, 153, 206, 277, 372, 500]
    >>> snapshot_steps(5).tolist()
    [0, 1, 2, 3, 4, 5]
    """
    if not math.isfinite(total_steps):
        return np.concatenate([[0], np.unique(np.rint(np.geomspace(1, 1e12, 61)).astype(np.int64))])
    total = int(total_steps)
    if total <= count:
        return np.arange(total + 1)
    points = count
    while len(steps := np.unique(np.rint(np.geomspace(1, total, points)).astype(np.int64))) < count:
        points += 1  # rounding merges the first steps: ask for more until there are enough
    return np.concatenate([[0], steps])


class FitFigures(Callback):
    """Snapshots of the fit on the training rows (test rows drawn hollow), at step 0 and at about
    ``n_snapshots`` log-spaced steps, in TensorBoard's IMAGES tab as tag ``fit`` (the slider
    animates the line rotating into place) and as ``fit.gif`` in the run directory; once more for
    the tested model (tag ``fit/tested``, ``fit.png``).

    For one target and one or two features it also draws the loss landscape with the optimizer's
    path (tag ``landscape``, ``landscape.png``), recording the parameters at every logged step.

    Parameters
    ----------
    n_snapshots : int
        Log-spaced snapshots after step 0, over the run's total steps.
    gif_fps : float
        Frames per second of ``fit.gif``.
    """

    def __init__(self, n_snapshots: int = 20, gif_fps: float = 4.0) -> None:
        if n_snapshots < 1:
            raise InputError(f"FitFigures n_snapshots={n_snapshots} must be >= 1 (snapshots after step 0).")
        if not gif_fps > 0:
            raise InputError(f"FitFigures gif_fps={gif_fps} must be > 0 (frames per second of fit.gif).")
        self.n_snapshots, self.gif_fps = n_snapshots, gif_fps
        self.active = False
        self.steps, self.next_index, self.total_steps = np.zeros(0, np.int64), 0, 0
        self.snapshot_steps: list[int] = []
        self.frames: list[np.ndarray] = []  # the rendered snapshots, for the GIF
        self.path: list[np.ndarray] | None = None

    def on_train_start(self, trainer, pl_module: LinearRegression) -> None:
        datamodule = trainer.datamodule
        self.active = (
            trainer.is_global_zero
            and _tensorboard(trainer) is not None
            and isinstance(datamodule, RegressionDataModule)
            # Streamed files: drawn only while a split can be held in memory.
            and max(datamodule.split_sizes.values()) <= MAX_MATERIALIZED_ROWS
        )
        if not self.active:
            return
        # Several optimizer steps per Lightning batch (the fast path) count as several steps.
        per_batch = 1 if pl_module.automatic_optimization else datamodule.steps_per_batch
        total = trainer.estimated_stepping_batches * per_batch
        self.total_steps = min(total, trainer.max_steps) if trainer.max_steps > 0 else total
        self.steps = snapshot_steps(self.total_steps, self.n_snapshots)
        self.next_index = 0
        self.snapshot_steps, self.frames = [], []
        self.splits = drawn_splits(datamodule)
        # One target axis for every frame, holding the data and the initial line.
        self.y_limits = (
            line_limits(self.splits, *pl_module.learned_parameters()) if datamodule.n_features == 1 else None
        )
        landscape = datamodule.n_targets == 1 and datamodule.n_features <= 2
        self.path = [] if landscape else None
        self._take(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module: LinearRegression, outputs, batch, batch_idx) -> None:
        if not self.active:
            return
        if self.next_index < len(self.steps) and trainer.global_step >= self.steps[self.next_index]:
            self._take(trainer, pl_module)
        elif self.path is not None and _logged_step(trainer):
            self.path.append(_flat_parameters(pl_module))

    def on_train_end(self, trainer, pl_module: LinearRegression) -> None:
        if not self.active or not self.frames:
            return
        if self.snapshot_steps[-1] != trainer.global_step:  # stopped early, or between scheduled steps
            self._take(trainer, pl_module)
        logger, datamodule = _tensorboard(trainer), trainer.datamodule
        run_dir = Path(logger.log_dir)
        write_gif(run_dir / "fit.gif", self.frames, fps=self.gif_fps)
        self.frames = []
        if self.path is not None and len(self.path) > 1:
            figure = draw_landscape(datamodule, np.array(self.path))
            logger.experiment.add_figure("landscape", figure, trainer.global_step, close=False)
            save_png(figure, run_dir / "landscape.png")

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        logger, datamodule = _tensorboard(trainer), trainer.datamodule
        if logger is None or not trainer.is_global_zero or not isinstance(datamodule, RegressionDataModule):
            return
        if max(datamodule.split_sizes.values()) > MAX_MATERIALIZED_ROWS:
            return
        figure = draw_fit(drawn_splits(datamodule), datamodule, *pl_module.learned_parameters(), "tested model")
        logger.experiment.add_figure("fit/tested", figure, trainer.global_step, close=False)
        save_png(figure, Path(logger.log_dir) / "fit.png")

    def _take(self, trainer: L.Trainer, model: LinearRegression) -> None:
        """Draw the fit at this step into TensorBoard and keep the parameters for the GIF."""
        step = trainer.global_step
        weight, bias = model.learned_parameters()
        if self.path is not None:
            self.path.append(np.concatenate([weight[0], bias]))
        figure = draw_fit(self.splits, trainer.datamodule, weight, bias, self._title(step), y_limits=self.y_limits)
        frame = pixels(figure)
        plt.close(figure)
        _tensorboard(trainer).experiment.add_image("fit", frame, step, dataformats="HWC")
        self.snapshot_steps.append(step)
        self.frames.append(frame)
        while self.next_index < len(self.steps) and self.steps[self.next_index] <= step:
            self.next_index += 1

    def _title(self, step: int) -> str:
        total = f" of {self.total_steps}" if math.isfinite(self.total_steps) else ""
        return f"step {step}{total}" + (" (initial parameters)" if step == 0 else "")


def drawn_splits(datamodule: RegressionDataModule) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The training rows, then the test rows when the test split is not empty, each cut to
    ``MAX_DRAWN_ROWS`` (a fixed sample), keyed by the legend label."""
    splits = {}
    for split in ("train", "test"):
        if not datamodule.split_sizes[split]:
            continue
        x, y = datamodule.arrays(split)
        label = f"{split} ({len(x)})"
        if len(x) > MAX_DRAWN_ROWS:
            rows = np.sort(np.random.default_rng(0).choice(len(x), MAX_DRAWN_ROWS, replace=False))
            x, y, label = x[rows], y[rows], f"{split} ({MAX_DRAWN_ROWS} of {len(x)} shown)"
        splits[label] = (x, y)
    return splits


def draw_fit(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    datamodule: RegressionDataModule,
    weight: np.ndarray,
    bias: np.ndarray,
    title: str = "",
    figure: Figure | None = None,
    y_limits: tuple[float, float] | None = None,
) -> Figure:
    """The fitted line for one feature and one target, else predicted vs. actual per target."""
    table = datamodule.table
    if datamodule.n_features == 1 and datamodule.n_targets == 1:
        true = (table.true_weight, table.true_bias) if table.true_weight is not None else None
        names = table.feature_names[0], table.target_names[0]
        return fit_figure(splits, weight, bias, *names, true, title, figure, y_limits)
    predictions = {label: (y, x @ weight.T + bias) for label, (x, y) in splits.items()}
    return prediction_figure(predictions, table.target_names, title, figure)


def draw_landscape(datamodule: RegressionDataModule, path: np.ndarray) -> Figure:
    """The MSE landscape of the training rows with the recorded path (k, d + 1) of (w, b)."""
    x, y = datamodule.arrays("train")
    table = datamodule.table
    true = (table.true_weight, table.true_bias) if table.true_weight is not None else None
    return landscape_figure(
        x,
        y,
        path,
        datamodule.train_statistics().solve(),
        true,
        table.feature_names,
        title=f"MSE of {table.target_names[0]} on the training rows, and the optimizer's path",
    )


def save_png(figure: Figure, path: Path) -> None:
    """Save and close ``figure``, atomically."""
    with atomic_open(path) as file:
        figure.savefig(file, format="png", dpi=100)
    plt.close(figure)


def _flat_parameters(model: LinearRegression) -> np.ndarray:
    weight, bias = model.learned_parameters()
    return np.concatenate([weight[0], bias])


class HyperparameterMetrics(Callback):
    """Fills TensorBoard's HPARAMS tab once testing ends with what a person compares between runs
    (optimizer, lr, batch size, epochs, penalties, data source, standardization), against the last
    ``val/loss`` and the test ``mse`` and ``r2`` that Lightning logged (no placeholder metric)."""

    def __init__(self) -> None:
        self.val_loss: float | None = None
        self.training: dict[str, float | str] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        # Read now: the optimizer and its initial learning rate are gone or changed after fit.
        optimizer = trainer.optimizers[0]
        group = optimizer.param_groups[0]
        schedulers = trainer.lr_scheduler_configs
        self.training = {
            "optimizer": type(optimizer).__name__,
            "lr": float(group.get("initial_lr", group["lr"])),
            "lr_scheduler": type(schedulers[0].scheduler).__name__ if schedulers else "none",
            "max_epochs": trainer.max_epochs,
        }

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/loss" in trainer.callback_metrics:
            self.val_loss = float(trainer.callback_metrics["val/loss"])

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        logger = _tensorboard(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("test/mse", "test/r2")}
        if self.val_loss is not None:
            metrics["val/loss"] = self.val_loss
        params = {**self.training, "l1": pl_module.hparams.l1, "l2": pl_module.hparams.l2}
        if isinstance(trainer.datamodule, RegressionDataModule):
            params.update(data_hyperparameters(trainer.datamodule, trainer.world_size))
        # The metrics themselves are the scalars Lightning logged; the HPARAMS tab reads their last
        # values by tag. The summaries go through a writer of their own rather than the logger's
        # log_hyperparams, which would also merge these keys into the model's hparams.yaml.
        with SummaryWriter(log_dir=logger.log_dir) as writer:
            for summary in hparams(params, metrics):
                writer.file_writer.add_summary(summary, trainer.global_step)


def data_hyperparameters(datamodule: RegressionDataModule, world_size: int = 1) -> dict[str, float | str]:
    """The data side of the HPARAMS table: the source in short, the batch size (the training rows
    per process for full-batch training) and the standardization."""
    batch_size = datamodule.batch_size or datamodule.split_sizes["train"] // world_size
    return {
        "source": source_label(datamodule.hparams["source"]),
        "batch_size": batch_size,
        # As words: TensorBoard would show a bool as 0 or 1.
        "standardize_features": str(bool(datamodule.standardize_features)).lower(),
        "standardize_target": str(bool(datamodule.standardize_target)).lower(),
    }


def source_label(config: dict) -> str:
    """A data source's config in short: its class name and the arguments that tell sets apart.

    Examples
    --------
    >>> source_label({"class_path": "linreg_pl.sources.CSVSource",
    ...               "init_args": {"path": "/data/houses.csv", "target": "price", "delimiter": ","}})
    'CSVSource(path=houses.csv, target=price)'
    """
    keys = ("name", "path", "target", "n_samples", "n_features", "noise")
    init_args = config.get("init_args", {})
    shown = {k: Path(v).name if k == "path" else v for k, v in init_args.items() if k in keys and v is not None}
    arguments = ", ".join(f"{k}={v}" for k, v in shown.items())
    return f"{config['class_path'].rsplit('.', 1)[-1]}({arguments})"


class DivergenceGuard(Callback):
    """Stops at the first step whose loss is NaN or infinite, naming the epoch, the step, the
    learning rate and what to try. Checkpoints written before it stay as they are."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # One host read per step: free on a CPU, one synchronisation per step on a GPU.
        if loss is None or math.isfinite(loss.item()):
            return
        last = last_checkpoint_path(trainer)
        last = last if last is not None and last.is_file() else None
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        raise TrainingDiverged(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: the loss is "
            f"{loss.item()} with learning rate {lr:g}; lower --model.optimizer.lr, standardize the features "
            "(--data.standardize_features true) or try another optimizer (--model.optimizer Adam)"
            + (f". The last good checkpoint is {last}." if last else "; no checkpoint had been saved yet.")
        )


class StopAtOptimum(Callback):
    """Ends training once the model is at the exact least-squares optimum of its own objective:
    the train loss within ``rtol`` of the optimum and every coefficient within ``coef_rtol``
    (relative to the largest one) of its least-squares value. ``max_epochs`` is then a ceiling, not
    a guess. Checked at the end of every training epoch from the data's moments: no pass over rows.
    Every run also shows the live gap on the progress bar (``train/gap``: the train loss's relative
    excess over the optimum), lessons included.

    Parameters
    ----------
    rtol : float
        Relative excess of the train loss over the optimum that counts as converged.
    coef_rtol : float
        Largest coefficient error, relative to the largest least-squares coefficient.
    when : {"real_data", "always", "never"}
        When to stop: "real_data" (default) for CSV and bundled real sets, not for the lessons,
        whose runs show the textbook's epochs; "never" also turns the gap off.
    """

    def __init__(
        self, rtol: float = 1e-4, coef_rtol: float = 1e-3, when: Literal["real_data", "always", "never"] = "real_data"
    ) -> None:
        for name, value in (("rtol", rtol), ("coef_rtol", coef_rtol)):
            if not value > 0:
                raise InputError(f"StopAtOptimum {name}={value} must be > 0.")
        self.rtol, self.coef_rtol, self.when = rtol, coef_rtol, when

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: LinearRegression) -> None:
        datamodule = trainer.datamodule
        if self.when == "never" or not isinstance(datamodule, RegressionDataModule) or pl_module.hparams.l1:
            return
        reference = exact_reference(pl_module, datamodule)
        excess = reference["train_loss"] - reference["optimal_train_loss"]
        floor = max(reference["optimal_train_loss"], NEGLIGIBLE_LOSS * reference["constant_train_loss"])
        pl_module.log("train/gap", excess / floor, prog_bar=True, sync_dist=True)
        if self.when == "real_data" and not datamodule.real_data:
            return
        if excess <= self.rtol * floor and reference["coefficient_error"] <= self.coef_rtol:
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(
                    f"reached the least-squares optimum at epoch {trainer.current_epoch} "
                    f"(loss gap {excess / floor:.1e}, coefficient error {reference['coefficient_error']:.1e}): stopping"
                )
