"""Fit snapshots (the line moving into place) as TensorBoard IMAGES and fit.gif, and the loss
landscape with the optimizer's path. Only rank 0 draws.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure

from linreg_pl.callbacks import not_linear
from linreg_pl.callbacks.monitors import is_logged_step, tensorboard_logger
from linreg_pl.callbacks.plots import fit_figure, landscape_figure, line_limits, pixels, prediction_figure, write_gif
from linreg_pl.data.streaming import MAX_MATERIALIZED_ROWS
from linreg_pl.datamodule import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.model import LinearRegression
from linreg_pl.runtime.files import atomic_open

# Rows drawn per split in a figure: enough to show the cloud, cheap enough for every snapshot.
MAX_DRAWN_ROWS = 2000


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
    A network other than the linear head has no line to draw: the callback then steps aside.

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
            and tensorboard_logger(trainer) is not None
            and isinstance(datamodule, RegressionDataModule)
            # Streamed files: drawn only while a split can be held in memory.
            and max(datamodule.split_sizes.values()) <= MAX_MATERIALIZED_ROWS
            and not not_linear(trainer, pl_module, "fit snapshots and loss landscape")
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
        elif self.path is not None and is_logged_step(trainer):
            self.path.append(_flat_parameters(pl_module))

    def on_train_end(self, trainer, pl_module: LinearRegression) -> None:
        if not self.active or not self.frames:
            return
        if self.snapshot_steps[-1] != trainer.global_step:  # stopped early, or between scheduled steps
            self._take(trainer, pl_module)
        logger, datamodule = tensorboard_logger(trainer), trainer.datamodule
        run_dir = Path(logger.log_dir)
        write_gif(run_dir / "fit.gif", self.frames, fps=self.gif_fps)
        self.frames = []
        if self.path is not None and len(self.path) > 1:
            figure = draw_landscape(datamodule, np.array(self.path))
            logger.experiment.add_figure("landscape", figure, trainer.global_step, close=False)
            save_png(figure, run_dir / "landscape.png")

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        logger, datamodule = tensorboard_logger(trainer), trainer.datamodule
        if logger is None or not trainer.is_global_zero or not isinstance(datamodule, RegressionDataModule):
            return
        if pl_module.linear is None or max(datamodule.split_sizes.values()) > MAX_MATERIALIZED_ROWS:
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
        tensorboard_logger(trainer).experiment.add_image("fit", frame, step, dataformats="HWC")
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
