"""Matplotlib figures of a fit: the data with the fitted line (one feature), or predicted vs.
actual and residuals (several features or targets); the loss landscape with the optimizer's path;
and an animated GIF of rendered fit snapshots.

Figures take NumPy arrays only. Axis limits come from the data alone, never from the parameters,
so the snapshots of one run share their axes and the line visibly moves between frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to TensorBoard and PNG files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from linreg_pl.runtime.files import atomic_open  # noqa: E402

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def fit_figure(
    splits: Splits,
    weight: np.ndarray,
    bias: np.ndarray,
    feature_name: str = "x",
    target_name: str = "y",
    true: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
    figure: Figure | None = None,
    y_limits: tuple[float, float] | None = None,
) -> Figure:
    """One feature and one target: each split's points and the fitted (and true) line.

    ``splits`` maps a legend label to (x, y); the first (the training rows) is drawn in filled
    markers, the others hollow. ``figure`` is cleared and drawn again when given (the frames of
    an animation); ``y_limits`` fixes the target axis (the same for every frame).

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> figure = fit_figure({"train (3)": (x, 2 * x + 1)}, np.array([[2.0]]), np.array([1.0]))
    >>> [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    ['train (3)', 'fit: y = 2x + 1']
    >>> plt.close(figure)
    """
    figure = _blank(figure, (6, 4.5))
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


def fit_frames(
    splits: Splits,
    parameters: Sequence[tuple[np.ndarray, np.ndarray]],
    titles: Sequence[str],
    feature_name: str = "x",
    target_name: str = "y",
    true: tuple[np.ndarray, np.ndarray] | None = None,
    y_limits: tuple[float, float] | None = None,
) -> list[Image.Image]:
    """``fit_figure`` for each (weight, bias) of ``parameters`` with its title, as RGB images: the
    fitted line, its legend and the title move; the data and the axes are drawn once.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> steps = [(np.array([[w]]), np.array([1.0])) for w in (0.0, 1.0, 2.0)]
    >>> frames = fit_frames({"train (3)": (x, 2 * x + 1)}, steps, ["step 0", "step 1", "step 2"])
    >>> len(frames), frames[0].mode, frames[0].size, frames[0] != frames[2]
    (3, 'RGB', (600, 450), True)
    """
    figure = fit_figure(splits, *parameters[0], feature_name, target_name, true, titles[0], y_limits=y_limits)
    axes = figure.axes[0]
    line = axes.lines[0]
    # Only the fit's entry of the legend moves (a whole legend costs ~30 ms to draw): its labels are
    # padded to one length with figure spaces (the width of a digit), so the box drawn once fits all.
    label = axes.get_legend().get_texts()[len(splits)]  # after the splits' entries
    labels = [_fit_label(*p) for p in parameters]
    width = max(map(len, labels))

    def show(index: int) -> None:
        weight, bias = parameters[index]
        line.set_ydata(weight[0, 0] * line.get_xdata() + bias[0])
        label.set_text(labels[index].ljust(width, "\u2007"))
        axes.title.set_text(titles[index])

    return _frames(figure, [line, label, axes.title], show, len(parameters))


def prediction_frames(
    splits: Splits,
    parameters: Sequence[tuple[np.ndarray, np.ndarray]],
    target_names: Sequence[str],
    titles: Sequence[str],
) -> list[Image.Image]:
    """``prediction_figure`` of the rows ``splits`` (label -> (x, y)) predicted with each (weight,
    bias) of ``parameters``, as RGB images: the points and the title move; the residuals' axes are
    drawn again only when their scale changes.

    Examples
    --------
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> steps = [(np.array([[w]]), np.array([0.0])) for w in (1.0, 2.0)]
    >>> frames = prediction_frames({"train": (x, 2 * x)}, steps, ["y"], ["step 0", "step 1"])
    >>> len(frames), frames[0].size
    (2, (900, 360))
    """

    def predictions(index: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        weight, bias = parameters[index]
        return {label: (y, x @ weight.T + bias) for label, (x, y) in splits.items()}

    figure = prediction_figure(predictions(0), target_names, titles[0])
    rows = np.reshape(figure.axes[: 2 * len(target_names)], (len(target_names), 2))
    points = [artist for left, right in rows for artist in (*left.collections, *right.collections)]

    def show(index: int) -> tuple:
        moved = predictions(index)
        for t, (left, right) in enumerate(rows):
            pairs = zip(moved.values(), left.collections, right.collections, strict=True)
            for (actual, predicted), on_left, on_right in pairs:
                on_left.set_offsets(np.column_stack([actual[:, t], predicted[:, t]]))
                on_right.set_offsets(np.column_stack([predicted[:, t], actual[:, t] - predicted[:, t]]))
            right.set_ylim(_residual_limits(moved, t))
        figure.texts[0].set_text(titles[index])  # the suptitle
        return tuple(right.get_ylim() for _, right in rows)

    return _frames(figure, [*points, figure.texts[0]], show, len(parameters), [right for _, right in rows])


def _frames(figure: Figure, moving: list, show, count: int, rescaled: Sequence = ()) -> list[Image.Image]:
    """Render ``count`` RGB images of ``figure``: ``show(i)`` moves the ``moving`` artists to frame i
    and returns the limits it gave the ``rescaled`` axes (or None). The rest of the figure is drawn
    once, each rescaled axes once per distinct limits, and copied; only the moving artists are
    drawn per frame (milliseconds, where a full draw takes ~40 ms)."""
    canvas = figure.canvas
    for artist in moving:  # skipped by the figure's and the axes' own drawing
        artist.set_animated(True)
    alphas = [artist.get_alpha() for artist in moving]
    show(0)  # frame 0's texts size the boxes around them (the legend's)
    # The rest, without the rescaled axes; moving children of other artists (a legend's label) are
    # drawn transparent.
    for artist in moving:
        artist.set_alpha(0)
    for axes in rescaled:
        axes.set_visible(False)
    canvas.draw()
    for artist, alpha in zip(moving, alphas, strict=True):
        artist.set_alpha(alpha)
    for axes in rescaled:
        axes.set_visible(True)
    rest = canvas.copy_from_bbox(figure.bbox)
    frames, backgrounds = [], {}
    for index in range(count):
        limits = show(index)
        if limits in backgrounds:
            canvas.restore_region(backgrounds[limits])
        else:
            canvas.restore_region(rest)
            for axes in rescaled:
                figure.draw_artist(axes)
            backgrounds[limits] = canvas.copy_from_bbox(figure.bbox)
        for artist in moving:
            figure.draw_artist(artist)
        frames.append(drawn_image(figure))
    plt.close(figure)
    return frames


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
    figure: Figure | None = None,
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
    figure = _blank(figure, (9, 3.6 * n_targets))
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


def landscape_figure(
    x: np.ndarray,
    y: np.ndarray,
    path: np.ndarray,
    optimum: tuple[np.ndarray, np.ndarray],
    true: tuple[np.ndarray, np.ndarray] | None = None,
    feature_names: Sequence[str] = ("x0", "x1"),
    title: str = "",
    resolution: int = 160,
) -> Figure:
    """Contours of the mean squared error of one target, with the optimizer's path on them.

    One feature: the MSE over (w, b). Two features: over (w0, w1), with the bias at its optimum
    for each pair of weights. The window holds the whole path, the optimum and the truth.

    Parameters
    ----------
    x, y : np.ndarray
        Training rows (n, d) with d in {1, 2}, and the target (n, 1), in original units.
    path : np.ndarray
        (k, d + 1): the weights and the bias at each recorded step, in original units.
    optimum, true : tuple of (weight (1, d), bias (1,))
        The least-squares optimum of these rows, and the generating parameters if known.

    Examples
    --------
    >>> x = np.linspace(0, 1, 20)[:, None]
    >>> path = np.array([[0.0, 0.0], [1.5, 0.5], [2.0, 1.0]])
    >>> figure = landscape_figure(x, 2 * x + 1, path, (np.array([[2.0]]), np.array([1.0])))
    >>> figure.axes[0].get_xlabel(), figure.axes[0].get_ylabel()
    ('w[x0]', 'b')
    >>> plt.close(figure)
    """
    d = x.shape[1]
    if d not in (1, 2) or y.shape[1] != 1:
        raise ValueError(f"a landscape needs 1 or 2 features and 1 target; got x {x.shape}, y {y.shape}")
    mean_x, mean_y = x.mean(axis=0), y[:, 0].mean()
    centred_x, centred_y = x - mean_x, y[:, 0] - mean_y
    cov_xx, cov_xy = centred_x.T @ centred_x / len(x), centred_x.T @ centred_y / len(x)
    var_y = centred_y @ centred_y / len(x)
    best = np.concatenate([optimum[0][0], optimum[1]])
    # The plotted coordinates: (w, b) for one feature, (w0, w1) for two.
    points = [path[:, :2], best[None, :2]]
    marks = [(best[:2], "*", "least squares", "white", 12)]
    if true is not None:  # drawn first: the least-squares star often sits on the truth
        truth = np.concatenate([true[0][0], true[1]])
        points.append(truth[None, :2])
        marks.insert(0, (truth[:2], "X", "truth", "tab:red", 16))
    (u_low, u_high), (v_low, v_high) = (_window(np.concatenate(points)[:, i], best[i]) for i in (0, 1))
    u, v = np.meshgrid(np.linspace(u_low, u_high, resolution), np.linspace(v_low, v_high, resolution))
    if d == 1:  # MSE(w, b) = var_y - 2 w cov_xy + w² var_x + (mean_y - w mean_x - b)²
        mse = var_y - 2 * u * cov_xy[0] + u**2 * cov_xx[0, 0] + (mean_y - u * mean_x[0] - v) ** 2
        labels = (f"w[{feature_names[0]}]", "b")
    else:  # the bias at its optimum leaves the centred quadratic form
        mse = var_y - 2 * (u * cov_xy[0] + v * cov_xy[1]) + u**2 * cov_xx[0, 0] + 2 * u * v * cov_xx[0, 1]
        mse = mse + v**2 * cov_xx[1, 1]
        labels = (f"w[{feature_names[0]}]", f"w[{feature_names[1]}]")
    # Log-spaced contours: the valley floor and the far walls both get lines.
    floor = min(float(np.min(mse)), float(var_y - cov_xy @ np.linalg.lstsq(cov_xx, cov_xy, rcond=None)[0]))
    log_excess = np.log10(np.maximum(mse - floor, 0) + max(1e-12, 1e-9 * (float(mse.max()) - floor)))
    figure = _blank(None, (6.4, 5))
    axes = figure.subplots()
    filled = axes.contourf(u, v, log_excess, levels=24, cmap="viridis")
    axes.contour(u, v, log_excess, levels=filled.levels[::2], colors="white", linewidths=0.4, alpha=0.5)
    colour_label = "log10(MSE - least-squares MSE)" + (", bias at its optimum" if d == 2 else "")
    figure.colorbar(filled, ax=axes, label=colour_label)
    axes.plot(path[:, 0], path[:, 1], "-", color="orange", lw=1.5, label=f"optimizer path ({len(path)} points)")
    axes.plot(path[:, 0], path[:, 1], ".", color="orange", ms=3)
    axes.plot(*path[0, :2], "o", color="orange", mec="black", ms=8, label="start")
    for point, marker, label, color, size in marks:
        axes.plot(*point, marker, color=color, mec="black", ms=size, label=label)
    axes.set(xlabel=labels[0], ylabel=labels[1], title=title, xlim=(u_low, u_high), ylim=(v_low, v_high))
    axes.legend(fontsize=8, loc="best")
    return figure


def palette_images(frames: Sequence[Image.Image]) -> list[Image.Image]:
    """The RGB images of one animation as images of one shared 255-colour palette: what a GIF
    holds, and a PNG a third the size of the RGB one, encoded in a fifth of the time. One palette
    for all: no colour flicker between frames.

    The palette comes from every fourth pixel of the first and the last frame: the frames of an
    animation share their background and move the same artists, so two hold their colours (as well
    as all of them, measured, in an eighth of the time).

    Examples
    --------
    >>> frames = [Image.new("RGB", (6, 4)) for _ in range(3)]
    >>> for index, frame in enumerate(frames):
    ...     frame.paste((255, 127, 14), (2 * index, 0, 2 * index + 2, 2))  # an orange square moving right
    >>> images = palette_images(frames)
    >>> [image.mode for image in images], [image.convert("RGB") == frame for image, frame in zip(images, frames)]
    (['P', 'P', 'P'], [True, True, True])
    """
    sample = np.concatenate([np.asarray(frames[0])[::2, ::2], np.asarray(frames[-1])[::2, ::2]])
    # 255 colours: the GIF writer makes the free 256th transparent in its frames' deltas, rather
    # than search each frame's histogram for an unused one (a third of its time).
    palette = Image.fromarray(sample).quantize(255, method=Image.Quantize.MEDIANCUT)
    return [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]


def write_gif(path: str | Path, images: Sequence[Image.Image], fps: float = 4.0, hold_last_s: float = 1.5) -> None:
    """Write ``palette_images`` as a looping animated GIF, the last frame held ``hold_last_s``
    seconds before the loop restarts, atomically (complete or absent).

    Examples
    --------
    >>> import tempfile
    >>> frames = [Image.new("RGB", (6, 4)) for _ in range(3)]
    >>> for index, frame in enumerate(frames):
    ...     frame.paste((255, 255, 255), (2 * index, 0, 2 * index + 2, 2))  # a white square moving right
    >>> target = Path(tempfile.mkdtemp()) / "square.gif"
    >>> write_gif(target, palette_images(frames), fps=4)
    >>> gif = Image.open(target)
    >>> gif.n_frames, gif.size, gif.info["loop"]
    (3, (6, 4), 0)
    """
    durations = [round(1000 / fps)] * (len(images) - 1) + [round(1000 * hold_last_s)]
    with atomic_open(path) as file:
        images[0].save(file, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)


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


def _blank(figure: Figure | None, size: tuple[float, float]) -> Figure:
    # Fixed margins, not a layout engine: a snapshot is drawn ~20 times a run, and constrained
    # layout measured every label each time (half of a short lesson's training time).
    if figure is None:
        figure = plt.figure(figsize=size)
        figure.subplots_adjust(left=0.12, right=0.97, bottom=0.11, top=0.91, wspace=0.3, hspace=0.45)
        return figure
    figure.clear()
    return figure


def _padded_range(arrays: Sequence[np.ndarray], pad: float = 0.08) -> tuple[float, float]:
    low, high = min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)
    margin = pad * (high - low) or max(abs(low), 1.0) * pad  # a constant column still gets a window
    return low - margin, high + margin


def _window(values: np.ndarray, centre: float, pad: float = 0.15) -> tuple[float, float]:
    """Limits that hold ``values`` with a margin; never narrower than a tenth of the optimum's size,
    so that a path along one axis still shows the valley across it."""
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 0.1 * abs(centre), 1e-3)
    middle = (low + high) / 2
    return middle - (0.5 + pad) * span, middle + (0.5 + pad) * span
