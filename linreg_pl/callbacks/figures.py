"""Fit snapshots (the line moving into place) as TensorBoard IMAGES and fit.gif, and the loss
landscape with the optimizer's path. Only rank 0 draws.
"""

from __future__ import annotations

import atexit
import io
import math
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from linreg_pl.callbacks import not_linear
from linreg_pl.callbacks.monitors import is_logged_step, tensorboard_logger, total_optimizer_steps
from linreg_pl.callbacks.plots import (
    Animation,
    Landscape,
    drawn_image,
    encode_gif,
    fit_animation,
    fit_figure,
    in_palette,
    line_limits,
    prediction_animation,
    prediction_figure,
)
from linreg_pl.data.streaming import MAX_MATERIALIZED_ROWS
from linreg_pl.datamodule import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.model import LinearRegression
from linreg_pl.runtime.files import atomic_open
from linreg_pl.runtime.offload import InProcess, Offloaded, OffloadFailed, offload

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

    Training records the parameters at the snapshot steps; a process beside it (on Linux;
    ``linreg_pl.runtime.offload``) draws each snapshot as it comes, the data and axes once for
    all, and the landscape's contours while the path moves. When training ends it adds the GIF
    and the landscape and writes them all (the images in an event file of its own in the run
    directory) while the run goes on: the test (whose model it draws too), the report. The run
    waits for it at its end (``settle``: the end of the next stage, the next fit, or the
    interpreter's exit). An interrupted run waits for the images of the snapshots reached. Should
    that process fail, this one draws them itself: the same figures.

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
        # The snapshots taken so far: (step, weight, bias, title) in original units.
        self.snapshots: list[tuple[int, np.ndarray, np.ndarray, str]] = []
        self.path: list[np.ndarray] | None = None
        self._path_sent = 0  # points of the path already handed to the drawing
        self.drawing: SnapshotDrawing | None = None
        self.drawer: Offloaded | InProcess | None = None
        # What the drawer was asked to write when training ended: (log_dir, step, gif_fps, landscape),
        # then for the tested model: (log_dir, step, weight, bias); and the data it draws.
        self._writing: tuple[Path, int, float | None, bool] | None = None
        self._tested: tuple[Path, int, np.ndarray, np.ndarray] | None = None
        self._datamodule: RegressionDataModule | None = None

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
        self.settle()  # a fit before this one
        if not self.active:
            return
        self.total_steps = total_optimizer_steps(trainer)
        self.steps = snapshot_steps(self.total_steps, self.n_snapshots)
        self.next_index, self._seen_step = 0, -1
        self.snapshots = []
        landscape = datamodule.n_targets == 1 and datamodule.n_features <= 2
        self.path, self._path_sent = ([] if landscape else None), 0
        self._datamodule = datamodule
        self.drawing = SnapshotDrawing(datamodule, pl_module.learned_parameters(), landscape)
        self.drawer = offload(lambda: self.drawing)  # the child's copy of the drawing does the work
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
        self._write(trainer, self.gif_fps, landscape=self.path is not None)
        atexit.register(self.settle)  # at the latest

    def on_test_end(self, trainer, pl_module: LinearRegression) -> None:
        logger, datamodule = tensorboard_logger(trainer), trainer.datamodule
        if logger is None or not trainer.is_global_zero or not isinstance(datamodule, RegressionDataModule):
            return
        if pl_module.linear is None or max(datamodule.split_sizes.values()) > MAX_MATERIALIZED_ROWS:
            return
        weight, bias = pl_module.learned_parameters()
        tested = Path(logger.log_dir), trainer.global_step, weight, bias
        if self._writing is not None and datamodule is self._datamodule:  # the fit's drawing is at hand
            self._tested = tested
            self.drawer.send("write_tested", *tested)  # settled when this stage ends
        else:
            SnapshotDrawing(datamodule, (weight, bias), landscape=False).write_tested(*tested)

    def on_exception(self, trainer, pl_module: LinearRegression, exception: BaseException) -> None:
        # Soon: a stop on a signal has 10 s before the process is ended (runtime.signals).
        if self.active and self.snapshots and self._writing is None:
            # An interrupted run keeps the snapshots it reached in TensorBoard (no GIF, no landscape).
            self._write(trainer, None, landscape=False)
        self.settle(timeout_s=3.0)

    def teardown(self, trainer, pl_module: LinearRegression, stage: str) -> None:
        if stage != "fit" or self._writing is None:  # the figures of a fit are written while the next stage runs
            self.settle()

    def settle(self, timeout_s: float | None = None) -> None:
        """Wait until the figures of the last fit are written, drawing them here if the process
        beside training failed, and end that process."""
        if self._writing is not None:
            atexit.unregister(self.settle)
            try:
                self.drawer.wait(timeout_s=timeout_s)
            except OffloadFailed:
                drawing = self.drawing
                for snapshot in self.snapshots:
                    drawing.add(*snapshot)
                log_dir, step, gif_fps, landscape = self._writing
                drawing.write(log_dir, step, None if self.path is None else np.array(self.path), gif_fps, landscape)
                if self._tested is not None:
                    drawing.write_tested(*self._tested)
        self._close()

    def _take(self, trainer: L.Trainer, model: LinearRegression) -> None:
        """Record the parameters at this step, and have the snapshot drawn."""
        step = trainer.global_step
        weight, bias = model.learned_parameters()
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            return  # diverging (DivergenceGuard stops the run): nothing to draw
        if self.path is not None:
            self.path.append(np.concatenate([weight[0], bias]))
        self.snapshots.append((step, weight, bias, self._title(step)))
        self.drawer.send("add", *self.snapshots[-1], self._recent_path())
        while self.next_index < len(self.steps) and self.steps[self.next_index] <= step:
            self.next_index += 1

    def _recent_path(self) -> np.ndarray | None:
        """The path's points recorded since the last call (the drawing keeps the path)."""
        if self.path is None:
            return None
        recent, self._path_sent = np.array(self.path[self._path_sent :]), len(self.path)
        return recent

    def _write(self, trainer: L.Trainer, gif_fps: float | None, landscape: bool) -> None:
        """Have the snapshots taken written, with the GIF at ``gif_fps`` (None: none) and the
        landscape if ``landscape``: beside training, or here (off Linux) before this returns."""
        self._writing = Path(tensorboard_logger(trainer).log_dir), trainer.global_step, gif_fps, landscape
        log_dir, step = self._writing[:2]
        self.drawer.send("write", log_dir, step, self._recent_path(), gif_fps, landscape)

    def _close(self) -> None:
        self.snapshots, self.drawing, self._writing, self._tested, self._datamodule = [], None, None, None, None
        if self.drawer is not None:
            self.drawer.close()
            self.drawer = None

    def _title(self, step: int) -> str:
        total = f" of {self.total_steps}" if math.isfinite(self.total_steps) else ""
        return f"step {step}{total}" + (" (initial parameters)" if step == 0 else "")


class Drawn(NamedTuple):
    """What ``SnapshotDrawing.finish`` returns, encoded: each snapshot's (step, PNG, (width,
    height)), the GIF of them all, and the landscape's (PNG, (width, height))."""

    snapshots: list[tuple[int, bytes, tuple[int, int]]]
    gif: bytes | None
    landscape: tuple[bytes, tuple[int, int]] | None

    def write(self, add_summary: Callable[[Summary, int], None], log_dir: Path, step: int) -> None:
        """The snapshots (tag ``fit``, at their steps) and the landscape (tag ``landscape``, at
        ``step``) to TensorBoard through ``add_summary(summary, step)``; fit.gif and landscape.png
        into ``log_dir``."""
        for at, png, size in self.snapshots:
            add_summary(image_summary("fit", png, size), at)
        if self.gif is not None:
            with atomic_open(log_dir / "fit.gif") as file:
                file.write(self.gif)
        if self.landscape is not None:
            add_summary(image_summary("landscape", *self.landscape), step)
            with atomic_open(log_dir / "landscape.png") as file:
                file.write(self.landscape[0])


class SnapshotDrawing:
    """The figures of one run's snapshots: each frame drawn and encoded (one palette for all) as
    ``add`` brings it, on one figure whose data and axes are drawn once; ``finish`` adds the GIF
    and the landscape. Built from NumPy arrays, it needs nothing of training: ``FitFigures`` runs
    it in a forked process.

    Parameters
    ----------
    datamodule : RegressionDataModule
        The run's data: the rows drawn, the names, the truth, the least-squares optimum.
    initial : tuple of (weight (t, d), bias (t,))
        The parameters at step 0, which fix the target axis of every frame.
    landscape : bool
        Whether to draw the loss landscape (one target, one or two features).
    """

    def __init__(
        self, datamodule: RegressionDataModule, initial: tuple[np.ndarray, np.ndarray], landscape: bool
    ) -> None:
        table = datamodule.table
        self.splits = drawn_splits(datamodule)
        self.true = (table.true_weight, table.true_bias) if table.true_weight is not None else None
        self.feature_names, self.target_names = table.feature_names, table.target_names
        self.one_line = datamodule.n_features == 1 and datamodule.n_targets == 1
        # One target axis for every frame, holding the data and the initial line.
        self.y_limits = line_limits(self.splits, *initial) if datamodule.n_features == 1 else None
        self.landscape_data = None
        if landscape:  # the rows and the optimum, computed here: the forked process runs no torch
            x, y = datamodule.arrays("train")
            start = np.concatenate([initial[0][0], initial[1]])
            self.landscape_data = (x, y, start, datamodule.train_statistics().solve())
        self.landscape: Landscape | None = None
        self.path: list[np.ndarray] = []  # pieces of the optimizer's path, (k, d + 1) each
        self.animation: Animation | None = None
        self.frames: list[Image.Image] = []  # in the palette of the first
        self.snapshots: list[tuple[int, bytes, tuple[int, int]]] = []

    def add(self, step: int, weight: np.ndarray, bias: np.ndarray, title: str, path: np.ndarray | None = None) -> None:
        """Draw the snapshot of ``step`` and encode it as a PNG; ``path`` (k, d + 1) holds the
        optimizer's points (w, b) recorded since the last call, which the landscape widens to."""
        if self.animation is None:
            self.animation = self._animation(weight, bias, title)
        image = in_palette(self.animation.frame(weight, bias, title), self.frames[0] if self.frames else None)
        self.frames.append(image)
        self.snapshots.append((step, png_bytes(image), image.size))
        if self.landscape is None and self.landscape_data is not None:  # its contours, while training runs
            x, y, start, optimum = self.landscape_data
            title = f"MSE of {self.target_names[0]} on the training rows, and the optimizer's path"
            self.landscape = Landscape(x, y, start, optimum, self.true, self.feature_names, title)
        self._extend_path(path)

    def finish(self, path: np.ndarray | None, gif_fps: float | None, landscape: bool) -> Drawn:
        """The snapshots as PNGs, with the GIF at ``gif_fps`` (None: none) and, if ``landscape``,
        the landscape with the whole path (``path``: its points since the last ``add``)."""
        self.animation.close()
        if path is not None and len(path):
            self.path.append(path)  # not held: the landscape's image sizes its window itself
        gif = encode_gif(self.frames, fps=gif_fps) if gif_fps is not None else None
        drawn_landscape = None
        if self.landscape is not None:
            path = np.concatenate(self.path) if self.path else np.zeros((0, 0))
            if landscape and len(path) > 1:
                image = self.landscape.image(path)
                drawn_landscape = png_bytes(image), image.size
            self.landscape.close()
        return Drawn(self.snapshots, gif, drawn_landscape)

    def write(self, log_dir: Path, step: int, path: np.ndarray | None, gif_fps: float | None, landscape: bool) -> None:
        """``finish``, then the figures written (``Drawn.write``), the images in an event file of
        this process's own (``event_file``)."""
        drawn = self.finish(path, gif_fps, landscape)
        with event_file(log_dir) as add_summary:
            drawn.write(add_summary, log_dir, step)

    def write_tested(self, log_dir: Path, step: int, weight: np.ndarray, bias: np.ndarray) -> None:
        """The tested model (weight (t, d), bias (t,)) on the rows: tag ``fit/tested`` at ``step``
        and ``fit.png`` in ``log_dir``."""
        if self.one_line:
            names = self.feature_names[0], self.target_names[0]
            figure = fit_figure(self.splits, weight, bias, *names, self.true, "tested model")
        else:
            predictions = {label: (y, x @ weight.T + bias) for label, (x, y) in self.splits.items()}
            figure = prediction_figure(predictions, self.target_names, "tested model")
        png, size = figure_png(figure)
        with event_file(log_dir) as add_summary:
            add_summary(image_summary("fit/tested", png, size), step)
        with atomic_open(log_dir / "fit.png") as file:
            file.write(png)

    def _extend_path(self, points: np.ndarray | None) -> None:
        if points is not None and len(points):
            self.path.append(points)
            if self.landscape is not None:
                self.landscape.hold(points)

    def _animation(self, weight: np.ndarray, bias: np.ndarray, title: str) -> Animation:
        if self.one_line:
            names = self.feature_names[0], self.target_names[0]
            return fit_animation(self.splits, weight, bias, title, *names, self.true, self.y_limits)
        return prediction_animation(self.splits, weight, bias, title, self.target_names)


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


def figure_png(figure: Figure) -> tuple[bytes, tuple[int, int]]:
    """``figure`` drawn and PNG-encoded, with its (width, height); the figure is closed."""
    figure.canvas.draw()
    image = drawn_image(figure)
    plt.close(figure)
    return png_bytes(image), image.size


def png_bytes(image: Image.Image) -> bytes:
    """A PIL image as a PNG, as it is (a palette image stays one)."""
    encoded = io.BytesIO()
    # zlib's run-length strategy: half the encoding time of its default for files a fifth larger.
    image.save(encoded, format="PNG", compress_type=zlib.Z_RLE)
    return encoded.getvalue()


@contextmanager
def event_file(log_dir: Path) -> Iterator[Callable[[Summary, int], None]]:
    """``add_summary(summary, step)`` into an event file of this process's own in ``log_dir``:
    TensorBoard reads every event file of a run."""
    events = EventFileWriter(str(log_dir), filename_suffix=".figures")
    try:
        yield lambda summary, step: events.add_event(Event(summary=summary, step=step, wall_time=time.time()))
    finally:
        events.close()


def image_summary(tag: str, png: bytes, size: tuple[int, int]) -> Summary:
    """The PNG of ``size`` (width, height) as TensorBoard's IMAGES show it (what ``add_image``
    writes, without decoding and encoding it again)."""
    width, height = size
    picture = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
    return Summary(value=[Summary.Value(tag=tag, image=picture)])


def _flat_parameters(model: LinearRegression) -> np.ndarray:
    weight, bias = model.learned_parameters()
    return np.concatenate([weight[0], bias])
