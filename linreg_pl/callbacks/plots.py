"""Matplotlib figures of a fit: the data with the fitted line (one feature), or predicted vs.
actual and residuals (several features or targets); the loss landscape with the optimizer's path;
and an animated GIF of rendered fit snapshots.

Figures take NumPy arrays only. Axis limits come from the data alone, never from the parameters,
so the snapshots of one run share their axes and the line visibly moves between frames.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to TensorBoard and PNG files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def fit_figure(
    splits: Splits,
    weight: np.ndarray,
    bias: np.ndarray,
    feature_name: str = "x",
    target_name: str = "y",
    true: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
    y_limits: tuple[float, float] | None = None,
) -> Figure:
    """One feature and one target: each split's points and the fitted (and true) line.

    ``splits`` maps a legend label to (x, y); the first (the training rows) is drawn in filled
    markers, the others hollow. ``y_limits`` fixes the target axis (the same for every frame of
    an animation).

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> figure = fit_figure({"train (3)": (x, 2 * x + 1)}, np.array([[2.0]]), np.array([1.0]))
    >>> [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    ['train (3)', 'fit: y = 2x + 1']
    >>> plt.close(figure)
    """
    figure = _blank((6, 4.5))
    axes = figure.subplots()
    for index, (name, (x, y)) in enumerate(splits.items()):
        style = {"color": "tab:blue"} if index == 0 else {"facecolors": "none", "edgecolors": f"C{index}"}
        axes.scatter(x[:, 0], y[:, 0], s=14, marker="o^s"[index % 3], alpha=0.6, label=name, **style)
    x_low, x_high = _padded_range([x for x, _ in splits.values()])
    y_low, y_high = y_limits or _padded_range([y for _, y in splits.values()])
    grid = np.array([x_low, x_high])
    axes.plot(grid, weight[0, 0] * grid + bias[0], color="black", lw=2, label=_fit_label(weight, bias))
    if true is not None:
        axes.plot(
            grid,
            true[0][0, 0] * grid + true[1][0],
            "--",
            color="tab:red",
            lw=1.5,
            label=f"true: y = {true[0][0, 0]:.4g}x + {true[1][0]:.4g}",
        )
    axes.set(xlabel=feature_name, ylabel=target_name, title=title, xlim=(x_low, x_high), ylim=(y_low, y_high))
    axes.legend(fontsize=8, loc="upper left")
    return figure


def _fit_label(weight: np.ndarray, bias: np.ndarray) -> str:
    return f"fit: y = {weight[0, 0]:.4g}x + {bias[0]:.4g}"


# The longest fit label: both numbers as long as ".4g" writes them. Every frame's label is padded
# to it with figure spaces (the width of a digit), so the legend box drawn once holds them all.
FIT_LABEL_WIDTH = len(_fit_label(np.full((1, 1), -1.234e-15), np.full(1, -1.234e-15)))


class Animation:
    """RGB frames of ``figure`` in which only the ``moving`` artists change: the rest is drawn once
    and copied, each of the ``rescaled`` axes once per distinct limits, and only the moving artists
    are drawn per frame (milliseconds, where a full draw takes ~40 ms). Frames come one at a time,
    as snapshots of a run do.

    ``show(*args)`` moves the artists to the frame of ``args`` and returns the limits it gave the
    rescaled axes (or None); ``first`` are frame 0's arguments, whose texts size the boxes around
    them (the legend's).
    """

    def __init__(self, figure: Figure, moving: list, show, first: tuple, rescaled: Sequence = ()) -> None:
        self.figure, self.moving, self.show, self.rescaled = figure, moving, show, rescaled
        canvas = figure.canvas
        for artist in moving:  # skipped by the figure's and the axes' own drawing
            artist.set_animated(True)
        alphas = [artist.get_alpha() for artist in moving]
        show(*first)
        # The rest, without the rescaled axes; moving children of other artists (a legend's label)
        # are drawn transparent.
        for artist in moving:
            artist.set_alpha(0)
        for axes in rescaled:
            axes.set_visible(False)
        canvas.draw()
        for artist, alpha in zip(moving, alphas, strict=True):
            artist.set_alpha(alpha)
        for axes in rescaled:
            axes.set_visible(True)
        self.rest = canvas.copy_from_bbox(figure.bbox)
        self.backgrounds: dict = {}

    def frame(self, *args) -> Image.Image:
        """The figure with the moving artists at ``args``, as an RGB image."""
        canvas, limits = self.figure.canvas, self.show(*args)
        if limits in self.backgrounds:
            canvas.restore_region(self.backgrounds[limits])
        else:
            canvas.restore_region(self.rest)
            for axes in self.rescaled:
                self.figure.draw_artist(axes)
            self.backgrounds[limits] = canvas.copy_from_bbox(self.figure.bbox)
        for artist in self.moving:
            self.figure.draw_artist(artist)
        return drawn_image(self.figure)

    def close(self) -> None:
        plt.close(self.figure)


def fit_animation(
    splits: Splits,
    weight: np.ndarray,
    bias: np.ndarray,
    title: str,
    feature_name: str = "x",
    target_name: str = "y",
    true: tuple[np.ndarray, np.ndarray] | None = None,
    y_limits: tuple[float, float] | None = None,
) -> Animation:
    """``fit_figure`` as an ``Animation`` whose ``frame(weight, bias, title)`` moves the fitted
    line, its legend entry and the title; the data and the axes are drawn once.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> animation = fit_animation({"train (3)": (x, 2 * x + 1)}, np.array([[0.0]]), np.array([1.0]), "step 0")
    >>> frames = [animation.frame(np.array([[w]]), np.array([1.0]), f"step {w}") for w in (0, 1, 2)]
    >>> animation.close()
    >>> len(frames), frames[0].mode, frames[0].size, frames[0] != frames[2]
    (3, 'RGB', (600, 450), True)
    """
    figure = fit_figure(splits, weight, bias, feature_name, target_name, true, title, y_limits)
    axes = figure.axes[0]
    line = axes.lines[0]
    # Only the fit's entry of the legend moves (a whole legend costs ~30 ms to draw).
    label = axes.get_legend().get_texts()[len(splits)]  # after the splits' entries

    def show(weight: np.ndarray, bias: np.ndarray, title: str) -> None:
        line.set_ydata(weight[0, 0] * line.get_xdata() + bias[0])
        label.set_text(_fit_label(weight, bias).ljust(FIT_LABEL_WIDTH, "\u2007"))
        axes.title.set_text(title)

    return Animation(figure, [line, label, axes.title], show, (weight, bias, title))


def prediction_animation(
    splits: Splits,
    weight: np.ndarray,
    bias: np.ndarray,
    title: str,
    target_names: Sequence[str],
) -> Animation:
    """``prediction_figure`` of the rows ``splits`` (label -> (x, y)) as an ``Animation`` whose
    ``frame(weight, bias, title)`` moves the predicted points and the title; the residuals' axes
    are drawn again only when their scale changes.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> animation = prediction_animation({"train": (x, 2 * x)}, np.array([[1.0]]), np.array([0.0]), "step 0", ["y"])
    >>> frames = [animation.frame(np.array([[w]]), np.array([0.0]), f"step {w}") for w in (1, 2)]
    >>> animation.close()
    >>> len(frames), frames[0].size
    (2, (900, 360))
    """

    def predictions(weight: np.ndarray, bias: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {label: (y, x @ weight.T + bias) for label, (x, y) in splits.items()}

    figure = prediction_figure(predictions(weight, bias), target_names, title)
    rows = np.reshape(figure.axes[: 2 * len(target_names)], (len(target_names), 2))
    points = [artist for left, right in rows for artist in (*left.collections, *right.collections)]

    def show(weight: np.ndarray, bias: np.ndarray, title: str) -> tuple:
        moved = predictions(weight, bias)
        for t, (left, right) in enumerate(rows):
            pairs = zip(moved.values(), left.collections, right.collections, strict=True)
            for (actual, predicted), on_left, on_right in pairs:
                on_left.set_offsets(np.column_stack([actual[:, t], predicted[:, t]]))
                on_right.set_offsets(np.column_stack([predicted[:, t], actual[:, t] - predicted[:, t]]))
            right.set_ylim(_residual_limits(moved, t))
        figure.texts[0].set_text(title)  # the suptitle
        return tuple(right.get_ylim() for _, right in rows)

    moving = [*points, figure.texts[0]]
    return Animation(figure, moving, show, (weight, bias, title), [right for _, right in rows])


def drawn_image(figure: Figure) -> Image.Image:
    """What the canvas of ``figure`` holds, as an RGB image (converted by PIL: a third of the time
    of numpy's copy of every fourth byte)."""
    size, rgba = figure.canvas.get_width_height(), figure.canvas.buffer_rgba()
    return Image.frombuffer("RGBA", size, rgba, "raw", "RGBA", 0, 1).convert("RGB")


def line_limits(splits: Splits, weight: np.ndarray, bias: np.ndarray) -> tuple[float, float]:
    """Limits of the target axis that hold the data and the line y = w x + b over it, the line
    only as far as one more span of the data each way (a line far off would flatten the data).

    Examples
    --------
    >>> x = np.array([[0.0], [1.0]])
    >>> low, high = line_limits({"train": (x, 3 * x + 1)}, np.array([[0.0]]), np.array([0.0]))
    >>> bool(low < 0 < 1 < high < 4.5)
    True
    """
    x_low, x_high = _padded_range([x for x, _ in splits.values()])
    y_low, y_high = _padded_range([y for _, y in splits.values()])
    span = y_high - y_low
    ends = np.clip(weight[0, 0] * np.array([x_low, x_high]) + bias[0], y_low - span, y_high + span)
    return _padded_range([np.array([y_low, y_high]), ends], pad=0.02)


def prediction_figure(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    target_names: Sequence[str],
    title: str = "",
) -> Figure:
    """Predicted vs. actual with the identity line, and residuals vs. predicted, per target.

    ``splits`` maps a legend label to its (actual, predicted) arrays (n, n_targets); the first is
    drawn filled, the others hollow. The limits follow the actual values only.

    Examples
    --------
    >>> y = np.array([[1.0], [2.0], [4.0]])
    >>> figure = prediction_figure({"train": (y, y + 0.1)}, ["y"])
    >>> [a.get_xlabel() for a in figure.axes]
    ['actual y', 'predicted y']
    >>> plt.close(figure)
    """
    n_targets = len(target_names)
    figure = _blank((9, 3.6 * n_targets))
    axes = figure.subplots(n_targets, 2, squeeze=False)
    for t, name in enumerate(target_names):
        left, right = axes[t]
        limits = _padded_range([actual[:, t] for actual, _ in splits.values()])
        for index, (split, (actual, predicted)) in enumerate(splits.items()):
            style = {"color": "tab:blue"} if index == 0 else {"facecolors": "none", "edgecolors": f"C{index}"}
            left.scatter(actual[:, t], predicted[:, t], s=12, alpha=0.6, label=split, **style)
            right.scatter(predicted[:, t], actual[:, t] - predicted[:, t], s=12, alpha=0.6, **style)
        left.plot(limits, limits, "--", color="black", lw=1, label="identity")
        left.set(xlabel=f"actual {name}", ylabel=f"predicted {name}", xlim=limits, ylim=limits)
        left.legend(fontsize=8, loc="upper left")
        right.axhline(0, color="black", lw=1, ls="--")
        right.set(
            xlabel=f"predicted {name}",
            ylabel="residual (actual - predicted)",
            xlim=limits,
            ylim=_residual_limits(splits, t),
        )
    figure.suptitle(title)
    return figure


def ridge_path_figure(path: dict, title: str = "") -> Figure:
    """The generalized cross-validation error against l2 (``linreg_pl.exact.statistics.ridge_path``),
    the best l2 marked; l2 = 0 stays on the axis (symmetric log scale)."""
    figure, axes = plt.subplots(figsize=(6, 4.5), layout="constrained")
    axes.plot(path["l2"], path["gcv"], marker="o", color="tab:blue", label="GCV (mean over targets)")
    axes.plot(
        [path["best_l2"]], [path["best_gcv"]], "*", color="tab:red", ms=14, label=f"best l2 = {path['best_l2']:.3g}"
    )
    positive = [value for value in path["l2"] if value > 0]
    axes.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    axes.set(xlabel="l2", ylabel="GCV error (standardized units)", title=title or "ridge selection")
    axes.legend()
    return figure


class Landscape:
    """Contours of the mean squared error of one target, with an optimizer's path on them.

    One feature: the MSE over (w, b). Two features: over (w0, w1), with the bias at its optimum
    for each pair of weights. The window holds the ``start`` (where the path begins), the optimum
    and the truth, or, if the path leaves that window, the box of the whole path with them: it
    depends on the whole path alone. The contours are drawn when the landscape is made, and again
    whenever ``hold(points)`` brings points (the path so far, while training runs) outside the
    window they were drawn for; ``image(path)`` draws them once more only if the whole path's window
    differs, then only the path, its marks and the legend over a copy of them.

    Parameters
    ----------
    x, y : np.ndarray
        Training rows (n, d) with d in {1, 2}, and the target (n, 1), in original units.
    start : np.ndarray
        (d + 1,): the weights and the bias where the path begins, in original units.
    optimum, true : tuple of (weight (1, d), bias (1,))
        The least-squares optimum of these rows, and the generating parameters if known.

    Examples
    --------
    >>> x = np.linspace(0, 1, 20)[:, None]
    >>> landscape = Landscape(x, 2 * x + 1, np.zeros(2), (np.array([[2.0]]), np.array([1.0])))
    >>> landscape.axes.get_xlabel(), landscape.axes.get_ylabel()
    ('w[x0]', 'b')
    >>> image = landscape.image(np.array([[0.0, 0.0], [1.5, 0.5], [2.0, 1.0]]))
    >>> orange = (np.asarray(image) == (255, 165, 0)).all(axis=2)  # the path
    >>> image.mode, image.size, bool(orange.any()), landscape.axes.get_legend() is None  # drawn, then removed
    ('RGB', (640, 500), True, True)
    >>> landscape.close()
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        start: np.ndarray,
        optimum: tuple[np.ndarray, np.ndarray],
        true: tuple[np.ndarray, np.ndarray] | None = None,
        feature_names: Sequence[str] = ("x0", "x1"),
        title: str = "",
        resolution: int = 160,
    ) -> None:
        d = x.shape[1]
        if d not in (1, 2) or y.shape[1] != 1:
            raise ValueError(f"a landscape needs 1 or 2 features and 1 target; got x {x.shape}, y {y.shape}")
        mean_x, mean_y = x.mean(axis=0), y[:, 0].mean()
        centred_x, centred_y = x - mean_x, y[:, 0] - mean_y
        self.moments = (mean_x, mean_y, centred_x.T @ centred_x / len(x), centred_x.T @ centred_y / len(x))
        self.var_y = centred_y @ centred_y / len(x)
        self.best = np.concatenate([optimum[0][0], optimum[1]])
        self.truth = None if true is None else np.concatenate([true[0][0], true[1]])
        self.title, self.resolution = title, resolution
        # The plotted coordinates: (w, b) for one feature, (w0, w1) for two.
        self.labels = (f"w[{feature_names[0]}]", "b" if d == 1 else f"w[{feature_names[1]}]")
        self.figure = self.axes = None
        self.start_window = self._window(start[None, :2])
        self.box = start[None, :2]  # the corners of the box of the points held so far
        self._draw_contours(self.start_window)

    def hold(self, points: np.ndarray) -> None:
        """Draw the contours for a window that holds ``points`` (k, d + 1) too, if they lie outside
        the current one: the path so far, so that ``image`` finds them ready."""
        every = np.concatenate([self.box, points[:, :2]])
        self.box = np.stack([every.min(axis=0), every.max(axis=0)])
        if not _inside(points, self.window):
            self._draw_contours(self._window_of(self.box))

    def image(self, path: np.ndarray) -> Image.Image:
        """The landscape with ``path`` (k, d + 1), the weights and the bias at each recorded step,
        as an RGB image."""
        window = self._window_of(path[:, :2])
        if window != self.window:
            self._draw_contours(window)
        self.figure.canvas.restore_region(self.contours)
        axes = self.axes
        drawn = [
            *axes.plot(
                path[:, 0], path[:, 1], "-", color="orange", lw=1.5, label=f"optimizer path ({len(path)} points)"
            ),
            *axes.plot(path[:, 0], path[:, 1], ".", color="orange", ms=3),
            *axes.plot(*path[0, :2], "o", color="orange", mec="black", ms=8, label="start"),
        ]
        if self.truth is not None:  # drawn first: the least-squares star often sits on the truth
            drawn += axes.plot(*self.truth[:2], "X", color="tab:red", mec="black", ms=16, label="truth")
        drawn += axes.plot(*self.best[:2], "*", color="white", mec="black", ms=12, label="least squares")
        drawn.append(axes.legend(fontsize=8, loc="best"))
        for artist in drawn:
            self.figure.draw_artist(artist)
        image = drawn_image(self.figure)
        for artist in drawn:  # the next path starts from the contours alone
            artist.remove()
        return image

    def close(self) -> None:
        plt.close(self.figure)

    def _window_of(self, points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
        """The window of a path whose points (or the corners of their box) are ``points`` (k, 2)."""
        return self.start_window if _inside(points, self.start_window) else self._window(points)

    def _window(self, points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
        """Limits that hold ``points`` (k, 2), the optimum and the truth."""
        held = [points, self.best[None, :2]] + ([] if self.truth is None else [self.truth[None, :2]])
        u_limits, v_limits = (_window(np.concatenate(held)[:, i], self.best[i]) for i in (0, 1))
        return u_limits, v_limits

    def _draw_contours(self, window: tuple[tuple[float, float], tuple[float, float]]) -> None:
        """The contours, the colour bar and the axes of ``window``; kept as the background of
        every ``image``."""
        if self.figure is not None:
            self.close()
        mean_x, mean_y, cov_xx, cov_xy = self.moments
        self.window = window
        (u_low, u_high), (v_low, v_high) = window
        grid = np.linspace(u_low, u_high, self.resolution), np.linspace(v_low, v_high, self.resolution)
        u, v = np.meshgrid(*grid)
        if len(mean_x) == 1:  # MSE(w, b) = var_y - 2 w cov_xy + w² var_x + (mean_y - w mean_x - b)²
            mse = self.var_y - 2 * u * cov_xy[0] + u**2 * cov_xx[0, 0] + (mean_y - u * mean_x[0] - v) ** 2
        else:  # the bias at its optimum leaves the centred quadratic form
            mse = self.var_y - 2 * (u * cov_xy[0] + v * cov_xy[1]) + u**2 * cov_xx[0, 0] + 2 * u * v * cov_xx[0, 1]
            mse = mse + v**2 * cov_xx[1, 1]
        # Log-spaced contours: the valley floor and the far walls both get lines.
        least = self.var_y - cov_xy @ np.linalg.lstsq(cov_xx, cov_xy, rcond=None)[0]
        floor = min(float(np.min(mse)), float(least))
        log_excess = np.log10(np.maximum(mse - floor, 0) + max(1e-12, 1e-9 * (float(mse.max()) - floor)))
        self.figure = _blank((6.4, 5))
        self.axes = axes = self.figure.subplots()
        filled = axes.contourf(u, v, log_excess, levels=24, cmap="viridis")
        axes.contour(u, v, log_excess, levels=filled.levels[::2], colors="white", linewidths=0.4, alpha=0.5)
        colour_label = "log10(MSE - least-squares MSE)" + (", bias at its optimum" if len(mean_x) == 2 else "")
        self.figure.colorbar(filled, ax=axes, label=colour_label)
        axes.set(
            xlabel=self.labels[0], ylabel=self.labels[1], title=self.title, xlim=self.window[0], ylim=self.window[1]
        )
        self.figure.canvas.draw()
        self.contours = self.figure.canvas.copy_from_bbox(self.figure.bbox)


def in_palette(frame: Image.Image, palette: Image.Image | None = None) -> Image.Image:
    """An RGB frame of an animation as an image of the animation's 255-colour palette, which
    ``palette`` (an earlier frame's result) holds; the first frame makes it. A GIF holds such
    images; as a PNG one is a third the size of the RGB one, encoded in a fifth of the time. One
    palette for all: no colour flicker between frames.

    The palette comes from every fourth pixel of the first frame: an animation's frames share their
    background and move the same artists, so the first holds their colours (measured: as well as
    all frames together, in a tenth of the time, and before the other frames exist).

    Examples
    --------
    >>> frames = [Image.new("RGB", (6, 4)) for _ in range(3)]
    >>> for index, frame in enumerate(frames):
    ...     frame.paste((255, 127, 14), (2 * index, 0, 2 * index + 2, 2))  # an orange square moving right
    >>> first = in_palette(frames[0])
    >>> images = [first] + [in_palette(frame, first) for frame in frames[1:]]
    >>> [image.mode for image in images], [image.convert("RGB") == frame for image, frame in zip(images, frames)]
    (['P', 'P', 'P'], [True, True, True])
    """
    if palette is None:
        # 255 colours: the GIF writer makes the free 256th transparent in its frames' deltas, rather
        # than search each frame's histogram for an unused one (a third of its time).
        palette = Image.fromarray(np.asarray(frame)[::2, ::2]).quantize(255, method=Image.Quantize.MEDIANCUT)
    return frame.quantize(palette=palette, dither=Image.Dither.NONE)


def encode_gif(images: Sequence[Image.Image], fps: float = 4.0, hold_last_s: float = 1.5) -> bytes:
    """``in_palette`` images as a looping animated GIF, the last frame held ``hold_last_s`` seconds
    before the loop restarts.

    Examples
    --------
    >>> import io
    >>> frames = [Image.new("RGB", (6, 4)) for _ in range(3)]
    >>> for index, frame in enumerate(frames):
    ...     frame.paste((255, 255, 255), (2 * index, 0, 2 * index + 2, 2))  # a white square moving right
    >>> images = [in_palette(frame, in_palette(frames[0])) for frame in frames]
    >>> gif = Image.open(io.BytesIO(encode_gif(images, fps=4)))
    >>> gif.n_frames, gif.size, gif.info["loop"]
    (3, (6, 4), 0)
    """
    durations = [round(1000 / fps)] * (len(images) - 1) + [round(1000 * hold_last_s)]
    encoded = io.BytesIO()
    images[0].save(encoded, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return encoded.getvalue()


def _residual_limits(splits: dict[str, tuple[np.ndarray, np.ndarray]], t: int) -> tuple[float, float]:
    """Residuals within half the data's spread share one scale across frames; larger ones widen it
    to the next 1, 2 or 5 times a power of ten (so that the frames of a run share a few scales).

    Examples
    --------
    >>> actual = np.array([[0.0], [10.0]])
    >>> _residual_limits({"train": (actual, actual - 30)}, 0)
    (-50.0, 50.0)
    """
    low, high = _padded_range([actual[:, t] for actual, _ in splits.values()])
    largest = max(float(np.abs(actual[:, t] - predicted[:, t]).max()) for actual, predicted in splits.values())
    if 1.05 * largest <= (high - low) / 2:
        return -(high - low) / 2, (high - low) / 2
    power = 10.0 ** math.floor(math.log10(1.05 * largest))
    reach = next(m * power for m in (1, 2, 5, 10) if m * power >= 1.05 * largest)
    return -reach, reach


def _blank(size: tuple[float, float]) -> Figure:
    # Fixed margins, not a layout engine: constrained layout measures every label at each draw.
    figure = plt.figure(figsize=size)
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.11, top=0.91, wspace=0.3, hspace=0.45)
    return figure


def _padded_range(arrays: Sequence[np.ndarray], pad: float = 0.08) -> tuple[float, float]:
    low, high = min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)
    margin = pad * (high - low) or max(abs(low), 1.0) * pad  # a constant column still gets a window
    return low - margin, high + margin


def _inside(points: np.ndarray, window: tuple[tuple[float, float], tuple[float, float]]) -> bool:
    """Whether every point (k, >= 2) lies within ``window`` ((u_low, u_high), (v_low, v_high))."""
    (u_low, u_high), (v_low, v_high) = window
    u, v = points[:, 0], points[:, 1]
    return bool(((u_low <= u) & (u <= u_high) & (v_low <= v) & (v <= v_high)).all())


def _window(values: np.ndarray, centre: float, pad: float = 0.15) -> tuple[float, float]:
    """Limits that hold ``values`` with a margin; never narrower than a tenth of the optimum's size,
    so that a path along one axis still shows the valley across it."""
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 0.1 * abs(centre), 1e-3)
    middle = (low + high) / 2
    return middle - (0.5 + pad) * span, middle + (0.5 + pad) * span
