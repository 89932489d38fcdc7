"""Fit snapshots (the line moving into place) as TensorBoard IMAGES and fit.gif, and the loss
landscape with the optimizer's path. Only rank 0 draws.
"""

from __future__ import annotations

import io
import math
import zlib
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from linreg_pl.callbacks import not_linear
from linreg_pl.callbacks.monitors import is_logged_step, tensorboard_logger, total_optimizer_steps
from linreg_pl.callbacks.plots import (
    drawn_image,
    fit_figure,
    fit_frames,
    landscape_figure,
    line_limits,
    palette_images,
    prediction_figure,
    prediction_frames,
    write_gif,
)
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

    Training only records the parameters at the snapshot steps; the frames are drawn when training
    ends (or is interrupted), the data and axes once for all of them.

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
        self._seen_step = -1
        # The snapshots taken so far: (step, weight, bias) in original units, drawn at the end.
        self.snapshots: list[tuple[int, np.ndarray, np.ndarray]] = []
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
        self.total_steps = total_optimizer_steps(trainer)
        self.steps = snapshot_steps(self.total_steps, self.n_snapshots)
        self.next_index, self._seen_step = 0, -1
        self.snapshots = []
        self.splits = drawn_splits(datamodule)
        # One target axis for every frame, holding the data and the initial line.
        self.y_limits = (
            line_limits(self.splits, *pl_module.learned_parameters()) if datamodule.n_features == 1 else None
        )
        landscape = datamodule.n_targets == 1 and datamodule.n_features <= 2
        self.path = [] if landscape else None
        self._take(trainer, pl_module)

    def on_before_optimizer_step(self, trainer, pl_module: LinearRegression, optimizer) -> None:
        # Before step global_step + 1 the parameters are those after step global_step; called at
        # every optimizer step, also when a Lightning batch carries several.
        if not self.active or trainer.global_step == self._seen_step:
            return  # once per step: LBFGS calls this after every evaluation of its closure
        self._seen_step = trainer.global_step
        if self.next_index < len(self.steps) and trainer.global_step >= self.steps[self.next_index]:
            self._take(trainer, pl_module)
        elif self.path is not None and is_logged_step(trainer):
            point = _flat_parameters(pl_module)
            if np.isfinite(point).all():
                self.path.append(point)

    def on_train_end(self, trainer, pl_module: LinearRegression) -> None:
        if not self.active or not self.snapshots:
            return
        if self.snapshots[-1][0] != trainer.global_step:  # stopped early, or between scheduled steps
            self._take(trainer, pl_module)
        self._draw_snapshots(trainer)
        logger, datamodule = tensorboard_logger(trainer), trainer.datamodule
        if self.path is not None and len(self.path) > 1:
            figure = draw_landscape(datamodule, np.array(self.path))
            log_figure(logger, "landscape", figure, trainer.global_step, Path(logger.log_dir) / "landscape.png")

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        logger, datamodule = tensorboard_logger(trainer), trainer.datamodule
        if logger is None or not trainer.is_global_zero or not isinstance(datamodule, RegressionDataModule):
            return
        if pl_module.linear is None or max(datamodule.split_sizes.values()) > MAX_MATERIALIZED_ROWS:
            return
        figure = draw_fit(drawn_splits(datamodule), datamodule, *pl_module.learned_parameters(), "tested model")
        log_figure(logger, "fit/tested", figure, trainer.global_step, Path(logger.log_dir) / "fit.png")

    def on_exception(self, trainer, pl_module: LinearRegression, exception: BaseException) -> None:
        # An interrupted run keeps the snapshots it reached in TensorBoard, as it did when they were
        # drawn during training.
        if self.active and self.snapshots:
            self._draw_snapshots(trainer, gif=False)

    def _take(self, trainer: L.Trainer, model: LinearRegression) -> None:
        """Record the parameters at this step: a snapshot, drawn when training ends."""
        step = trainer.global_step
        weight, bias = model.learned_parameters()
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            return  # diverging (DivergenceGuard stops the run): nothing to draw
        if self.path is not None:
            self.path.append(np.concatenate([weight[0], bias]))
        self.snapshots.append((step, weight, bias))
        while self.next_index < len(self.steps) and self.steps[self.next_index] <= step:
            self.next_index += 1

    def _draw_snapshots(self, trainer: L.Trainer, gif: bool = True) -> None:
        """The recorded snapshots as TensorBoard images at their steps, and as fit.gif."""
        snapshots, self.snapshots = self.snapshots, []
        steps = [step for step, _, _ in snapshots]
        frames = snapshot_frames(
            self.splits,
            trainer.datamodule,
            [(weight, bias) for _, weight, bias in snapshots],
            [self._title(step) for step in steps],
            self.y_limits,
        )
        logger, images = tensorboard_logger(trainer), palette_images(frames)
        for step, image in zip(steps, images, strict=True):
            add_png(logger.experiment, "fit", image, step)
        if gif:
            write_gif(Path(logger.log_dir) / "fit.gif", images, fps=self.gif_fps)

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


def snapshot_frames(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    datamodule: RegressionDataModule,
    parameters: list[tuple[np.ndarray, np.ndarray]],
    titles: list[str],
    y_limits: tuple[float, float] | None = None,
) -> list[Image.Image]:
    """``draw_fit`` for each (weight, bias) of ``parameters``, as RGB images drawn on one figure."""
    table = datamodule.table
    if datamodule.n_features == 1 and datamodule.n_targets == 1:
        true = (table.true_weight, table.true_bias) if table.true_weight is not None else None
        names = table.feature_names[0], table.target_names[0]
        return fit_frames(splits, parameters, titles, *names, true, y_limits)
    return prediction_frames(splits, parameters, table.target_names, titles)


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


def log_figure(logger: TensorBoardLogger, tag: str, figure: Figure, step: int, path: Path) -> None:
    """Show ``figure`` in TensorBoard's IMAGES as ``tag`` and save it as the PNG ``path``, drawn
    and encoded once for both, then close it."""
    figure.canvas.draw()
    png = add_png(logger.experiment, tag, drawn_image(figure), step)
    with atomic_open(path) as file:
        file.write(png)
    plt.close(figure)


def add_png(writer: SummaryWriter, tag: str, image: Image.Image, step: int) -> bytes:
    """``writer.add_image`` for a PIL image, PNG-encoded as it is (a palette image stays one);
    returns the PNG."""
    encoded = io.BytesIO()
    # zlib's run-length strategy: half the encoding time of its default for files a fifth larger.
    image.save(encoded, format="PNG", compress_type=zlib.Z_RLE)
    png = encoded.getvalue()
    picture = Summary.Image(height=image.height, width=image.width, colorspace=3, encoded_image_string=png)
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)
    return png


def _flat_parameters(model: LinearRegression) -> np.ndarray:
    weight, bias = model.learned_parameters()
    return np.concatenate([weight[0], bias])
