"""Matplotlib figures of a fit: the data with the fitted line (one feature), or predicted vs.
actual and residuals (several features or targets)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to TensorBoard and PNG files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def fit_figure(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    weight: np.ndarray,
    bias: np.ndarray,
    feature_name: str = "x",
    target_name: str = "y",
    true: tuple[np.ndarray, np.ndarray] | None = None,
    title: str = "",
) -> Figure:
    """One feature and one target: each split's points and the fitted (and true) line."""
    figure, axes = plt.subplots(figsize=(6, 4.5), layout="constrained")
    for (name, (x, y)), marker in zip(splits.items(), "o^s", strict=False):  # up to three splits
        axes.scatter(x[:, 0], y[:, 0], s=14, marker=marker, alpha=0.6, label=f"{name} ({len(x)})")
    low, high = min(x.min() for x, _ in splits.values()), max(x.max() for x, _ in splits.values())
    grid = np.linspace(low, high, 2)
    axes.plot(
        grid, weight[0, 0] * grid + bias[0], color="black", lw=2, label=f"fit: y = {weight[0, 0]:.4g}x + {bias[0]:.4g}"
    )
    if true is not None:
        axes.plot(
            grid,
            true[0][0, 0] * grid + true[1][0],
            "--",
            color="tab:red",
            lw=1.5,
            label=f"true: y = {true[0][0, 0]:.4g}x + {true[1][0]:.4g}",
        )
    axes.set(xlabel=feature_name, ylabel=target_name, title=title)
    axes.legend(fontsize=8)
    return figure


def prediction_figure(y: np.ndarray, predicted: np.ndarray, target_names: list[str], title: str = "") -> Figure:
    """Predicted vs. actual with the identity line, and residuals vs. predicted, per target."""
    n_targets = y.shape[1]
    figure, axes = plt.subplots(n_targets, 2, figsize=(9, 3.6 * n_targets), layout="constrained", squeeze=False)
    for t, name in enumerate(target_names):
        actual, guess = y[:, t], predicted[:, t]
        left, right = axes[t]
        left.scatter(actual, guess, s=12, alpha=0.6)
        limits = [min(actual.min(), guess.min()), max(actual.max(), guess.max())]
        left.plot(limits, limits, "--", color="black", lw=1, label="identity")
        left.set(xlabel=f"actual {name}", ylabel=f"predicted {name}")
        left.legend(fontsize=8)
        right.scatter(guess, actual - guess, s=12, alpha=0.6)
        right.axhline(0, color="black", lw=1, ls="--")
        right.set(xlabel=f"predicted {name}", ylabel="residual (actual - predicted)")
    figure.suptitle(title)
    return figure


def ridge_path_figure(path: dict, title: str = "") -> Figure:
    """The generalized cross-validation error against l2 (``linreg_pl.statistics.ridge_path``),
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
