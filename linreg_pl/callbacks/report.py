"""The end-of-run report (a callback): what was learned, next to the least-squares optimum and the
truth, as text and as summary.json."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from linreg_pl.callbacks import not_linear
from linreg_pl.callbacks.plots import ridge_path_figure
from linreg_pl.data.streaming import MAX_MATERIALIZED_ROWS
from linreg_pl.datamodule import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.exact.solvers import Accumulator
from linreg_pl.exact.statistics import (
    SandwichMeat,
    format_coefficient_table,
    least_squares_fit,
    ols_inference,
    ridge_path,
)
from linreg_pl.model import LinearRegression
from linreg_pl.runtime.checkpoints import last_checkpoint_path
from linreg_pl.runtime.files import write_text_atomically

# A trained model whose train loss is this much above the exact optimum gets a hint, unless the
# excess is below float32 round-off relative to the loss of always predicting the mean.
LARGE_GAP = 0.05
# The ridge curve's l2 values (the model's convention: a penalty on the mean squared error).
DEFAULT_L2_GRID = [0.0] + [float(v) for v in np.logspace(-6, 1, 29)]
# Converged: every coefficient within this many of its own standard errors of least squares.
SE_TOLERANCE = 0.01
NEGLIGIBLE_EXCESS = 1e-6


class RunReport(Callback):
    """Prints the end-of-run report and writes it to ``summary.json`` in the run directory once
    testing ends (rank 0): learned, least-squares and true parameters side by side, the train loss
    against the exact optimum, the test metrics and the checkpoints; for real data also the
    least-squares inference (standard errors, t, p, intervals, R², F, AIC/BIC) and the closed-form
    ridge (GCV) curve. ``summary`` keeps the dict. Configured with ``--report.*``. A network other
    than the linear head has no coefficients: its report keeps the test metrics alone.

    Every checkpoint also gets the least-squares fit's coefficients and covariance
    (``checkpoint["least_squares"]``, ``linreg_pl.exact.statistics.least_squares_fit``): what
    ``scripts/predict.py --interval`` needs.

    Parameters
    ----------
    method : {"normal", "qr"}
        How the exact reference is computed: normal equations (fast; loses digits on
        ill-conditioned columns, e.g. high-degree polynomials) or a streaming QR (accurate).
    statistics : bool, optional
        Print and save the inference table and the ridge curve. Default: on for CSV and real
        sets, off for the lessons.
    level : float
        Confidence level of the intervals, in (0, 1).
    robust : bool
        Also give heteroskedasticity-robust (HC1 and HC3) standard errors: a second pass over the
        training rows, since residuals and leverages are not in the one-pass summary.
    l2_grid : list of float
        The ``l2`` values whose GCV error the ridge curve shows.
    """

    def __init__(
        self,
        method: Literal["normal", "qr"] = "normal",
        statistics: bool | None = None,
        level: float = 0.95,
        robust: bool = False,
        l2_grid: list[float] = DEFAULT_L2_GRID,
    ) -> None:
        if not 0 < level < 1:
            raise InputError(f"report.level={level} must be in (0, 1), e.g. 0.95.")
        self.method, self.statistics, self.level, self.robust, self.l2_grid = method, statistics, level, robust, l2_grid
        self.summary: dict = {}
        self._start = time.perf_counter()
        self._least_squares: dict | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._least_squares = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, RegressionDataModule) or pl_module.linear is None:
            return  # intervals of a least-squares fit describe a linear model only
        if self._least_squares is None:  # the training rows do not change during a fit
            self._least_squares = least_squares_fit(datamodule.train_statistics(self.method))
        checkpoint["least_squares"] = self._least_squares

    def on_test_end(self, trainer: L.Trainer, pl_module: LinearRegression) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, RegressionDataModule) or trainer.state.fn != "test" or trainer.sanity_checking:
            return
        test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        not_linear(trainer, pl_module, "the coefficient table and least-squares reference")
        self.summary = summarize(
            trainer, pl_module, datamodule, test_metrics, time.perf_counter() - self._start, self.method
        )
        with_statistics = self.statistics if self.statistics is not None else datamodule.real_data
        if with_statistics and self.summary["exact"] is not None:
            self.summary.update(self._statistics(trainer, pl_module, datamodule))
        if trainer.is_global_zero:
            write_summary(self.summary)
            print(format_report(self.summary))

    def _statistics(self, trainer: L.Trainer, model: LinearRegression, datamodule: RegressionDataModule) -> dict:
        """Inference of the least-squares fit and the ridge GCV curve, from the same one pass."""
        accumulator = datamodule.train_statistics(self.method)
        meat = None
        if self.robust:  # residuals and leverages are not in the sufficient statistics: a second pass
            sandwich = SandwichMeat(accumulator)
            for x, y, weight in datamodule.train_chunks():
                sandwich.update(x, y, weight)
            meat = sandwich.compute()
        inference = ols_inference(accumulator, datamodule.feature_names, datamodule.target_names, self.level, meat=meat)
        ridge = ridge_path(accumulator, self.l2_grid, model.scaling)
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is not None and trainer.is_global_zero:
            figure = ridge_path_figure(ridge, "ridge: generalized cross-validation error")
            logger.experiment.add_figure("ridge/gcv", figure, trainer.global_step)
        return {"inference": inference, "ridge": ridge}


def summarize(
    trainer: L.Trainer,
    model: LinearRegression,
    datamodule: RegressionDataModule,
    test_metrics: dict[str, float],
    wall_time: float,
    method: str = "normal",
) -> dict:
    """Everything a user checks after a run, as plain JSON-ready values."""
    linear = model.linear is not None
    weight, bias = model.learned_parameters() if linear else (None, None)
    table = datamodule.table
    checkpoint = trainer.checkpoint_callback
    last = last_checkpoint_path(trainer)
    summary = {
        "dataset": table.name,
        "features": table.feature_names,
        "targets": table.target_names,
        "split_sizes": datamodule.split_sizes,
        "evaluated_on": {stage: datamodule.evaluated_split(stage) for stage in ("val", "test")},
        "standardized": {
            "features": bool(datamodule.standardize_features),
            "target": bool(datamodule.standardize_target),
        },
        "learned": {"weight": weight.tolist(), "bias": bias.tolist()} if linear else None,
        "true": None,
        "test_metrics": {k: _json_number(v) for k, v in sorted(test_metrics.items())},
        "test_by_target": _test_by_target(model, datamodule),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "wall_time_s": round(wall_time, 3),
        "checkpoints": {
            "best": _absolute(checkpoint.best_model_path if checkpoint else ""),
            "last": _absolute(str(last) if last is not None and last.is_file() else ""),
        },
        "run_dir": _run_dir(trainer),
    }
    summary["exact"] = exact_reference(model, datamodule, method) if linear else None
    if table.true_weight is not None and linear:
        summary["true"] = {"weight": table.true_weight.tolist(), "bias": table.true_bias.tolist()}
        summary["max_abs_error_vs_true"] = float(
            max(np.abs(weight - table.true_weight).max(), np.abs(bias - table.true_bias).max())
        )
    return summary


def exact_reference(
    model: LinearRegression, datamodule: RegressionDataModule, method: str = "normal", optimum: tuple | None = None
) -> dict | None:
    """The exact least-squares optimum of the model's own training objective (same scaling, same
    L2), and how far the trained model's train loss is above it. None with an L1 penalty, which
    has no closed form. ``optimum`` (weight, bias) is that optimum from an earlier call of the same
    run: its solve costs O(d³), the rest O(d²)."""
    l1, l2 = model.hparams.l1, model.hparams.l2
    if l1:
        return None
    moments = datamodule.train_statistics(method)
    scaling = model.scaling
    weight, bias = optimum if optimum is not None else moments.solve(scaling, l2)
    learned_weight, learned_bias = model.learned_parameters()
    train_loss = moments.objective(learned_weight, learned_bias, scaling, l2)
    optimal_loss = moments.objective(weight, bias, scaling, l2)
    constant_loss = moments.objective(np.zeros_like(weight), moments.mean[moments.n_features :], scaling, l2)
    # Relative to an optimum of ~0 (a noiseless line) a gap means nothing: call that an exact fit.
    exact_fit = optimal_loss <= 1e-12 * constant_loss
    # With an L2 penalty the optimum is not OLS, whose standard errors then measure nothing here.
    off = None if l2 else standard_errors_off(moments, (learned_weight, learned_bias), (weight, bias))
    return {
        "weight": weight.tolist(),
        "bias": bias.tolist(),
        "train_loss": train_loss,
        "optimal_train_loss": optimal_loss,
        "constant_train_loss": constant_loss,
        "optimality_gap": None if exact_fit else train_loss / optimal_loss - 1,
        "standard_errors_off": off,
        "converged": is_converged(
            train_loss - optimal_loss, optimal_loss, constant_loss, off if datamodule.real_data else None
        ),
    }


def standard_errors_off(moments: Accumulator, parameters: tuple, ols: tuple) -> float | None:
    """How far ``parameters`` (weight, bias) are from the ordinary least-squares ones ``ols``, in
    units of its standard errors: an upper bound on max |coefficient - OLS| / SE over every
    coefficient, the intercept and any linear combination of them, for every target. None when
    standard errors do not exist (as many parameters as rows, or an exact fit).

    The excess residual sum of squares of parameters ``p`` over the OLS answer is
    Δᵀ G Δ with Δ = p - p_ols and G the Gram matrix of [x, 1]; by Cauchy-Schwarz
    |aᵀΔ|² <= ΔᵀGΔ · aᵀG⁻a = ΔᵀGΔ · SE(aᵀp)² / σ². So the bound is sqrt(excess RSS / σ²): one
    number per target, no inverse, and a direction the data do not determine (collinear columns)
    adds nothing to it, so it can be reached whatever the collinearity.
    """
    df_resid = moments.count - moments.n_features - 1
    if df_resid <= 0:
        return None
    rss, ols_rss = _residual_sums(moments, *parameters), _residual_sums(moments, *ols)
    total = _residual_sums(moments, np.zeros_like(ols[0]), moments.mean[moments.n_features :])
    if not (ols_rss > 1e-12 * total).all():
        return None  # an exact fit (as exact_reference calls it): every standard error is 0
    return float(np.sqrt(np.maximum(rss - ols_rss, 0.0) / (ols_rss / df_resid)).max())


def _residual_sums(moments: Accumulator, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The residual sum of squares of each target, in original units, from the moments alone."""
    d = moments.n_features
    directions = np.vstack([-np.asarray(weight, np.float64).T, np.eye(moments.n_targets)])
    residual_mean = moments.mean[d:] - weight @ moments.mean[:d] - bias
    return moments.quadratic_form(directions) + moments.weight_sum * residual_mean**2


def is_converged(excess: float, optimal_loss: float, constant_loss: float, standard_errors: float | None) -> bool:
    """Every coefficient within ``SE_TOLERANCE`` of its own standard error of least squares (so a
    small coefficient cannot hide behind a large one); where standard errors do not exist (an
    exact fit, no residual degrees of freedom, an L2 penalty) or are not the question (a lesson,
    whose constant-step mini-batch SGD ends at its noise floor by design and is compared with the
    truth), the train loss within ``LARGE_GAP`` of the optimum."""
    if standard_errors is not None:
        return standard_errors <= SE_TOLERANCE
    return excess <= max(LARGE_GAP * optimal_loss, NEGLIGIBLE_EXCESS * constant_loss)


def _test_by_target(model: LinearRegression, datamodule: RegressionDataModule) -> dict[str, dict]:
    """Test metrics of each target in its own units (pooled metrics mix targets of other scales);
    empty for a streamed split too large to hold (the pooled test metrics still stand)."""
    split = datamodule.evaluated_split("test")
    if datamodule.split_sizes[split] > MAX_MATERIALIZED_ROWS:
        return {}
    x, y = datamodule.arrays(split)
    _, by_target = scores(model, predict_float64(model, x), y, datamodule.weights(split))
    return dict(zip(datamodule.target_names, by_target, strict=True))


def _json_number(value: float) -> float | None:
    """NaN (e.g. R² of a one-row split, which is undefined) becomes JSON null."""
    return None if math.isnan(value) else value


def _run_dir(trainer: L.Trainer) -> str:
    # fast_dev_run swaps in a logger that writes nothing; the run then has no directory of its own.
    if trainer.logger is None or trainer.fast_dev_run:
        return ""
    return _absolute(trainer.log_dir or "")


def _absolute(path: str) -> str:
    """Absolute, so that summary.json stays valid wherever it is read from."""
    return str(Path(path).resolve()) if path else ""


def write_summary(summary: dict) -> Path | None:
    """Write summary.json into the run directory; None when the run has no directory."""
    if not summary["run_dir"]:
        return None
    path = Path(summary["run_dir"]) / "summary.json"
    write_text_atomically(path, json.dumps(summary, indent=2) + "\n")
    return path


def scores(
    model: LinearRegression, predicted: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
) -> tuple[dict[str, float | None], list[dict[str, float | None]]]:
    """The model's metrics (``metric_collection``) of float64 predictions (n, n_targets) against
    ``y``, weighted by the rows' ``weight`` if given: pooled over the targets, and one dict per
    target (each target's column scored alone, so any metric added to the collection has them).
    An undefined value (R² of one row) is None."""
    predicted, target = torch.as_tensor(predicted, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    row_weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float64)

    def computed(columns: slice) -> dict[str, float | None]:
        metrics = model.metric_collection()
        metrics.update(predicted[:, columns], target[:, columns], weight=row_weight)
        return {name: _json_number(float(value)) for name, value in metrics.compute().items()}

    return computed(slice(None)), [computed(slice(t, t + 1)) for t in range(target.shape[1])]


def predict_float64(model: LinearRegression, x: np.ndarray) -> torch.Tensor:
    """The model's predictions for ``x`` computed in float64 whatever precision it trained in
    (float32 parameters are exact in float64); the model itself is left as it is."""
    tensors = {
        name: t.double() if t.is_floating_point() else t
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    features = torch.as_tensor(x, dtype=torch.float64, device=model.device)
    with torch.no_grad():
        return torch.func.functional_call(model, tensors, (features,)).cpu()


def _gap_line(exact: dict, target_standardized: bool) -> str:
    space = "standardized target" if target_standardized else "original units"
    line = f"train loss ({space}) {exact['train_loss']:.6g}, exact optimum {exact['optimal_train_loss']:.6g}"
    gap = exact["optimality_gap"]
    line += " (an exact fit)" if gap is None else f", gap {gap:+.2%}"
    if exact["standard_errors_off"] is not None:
        line += f"; every coefficient within {exact['standard_errors_off']:.1e} standard errors of least squares"
    if not exact["converged"]:
        line += (
            "\nhint: training has not reached the optimum; try more epochs (--trainer.max_epochs), another "
            "learning rate (--model.optimizer.lr), --data.standardize_features true, or full-batch L-BFGS "
            "(--model.optimizer LBFGS --data.batch_size null)"
        )
    return line


def format_report(summary: dict) -> str:
    """A short, aligned text report; the run directory is the last line."""
    sizes = summary["split_sizes"]
    lines = [
        f"dataset {summary['dataset']}: train {sizes['train']}, val {sizes['val']}, test {sizes['test']} rows"
        + ("" if summary["evaluated_on"]["test"] == "test" else " (test split empty: scored on train)"),
        f"trained {_count(summary['epochs'], 'epoch')}, {_count(summary['steps'], 'step')} "
        f"in {summary['wall_time_s']:.1f} s",
        "",
    ]
    if summary["learned"]:
        lines += _coefficient_table(summary)
    if exact := summary["exact"]:
        lines.append(_gap_line(exact, summary["standardized"]["target"]))
    if "max_abs_error_vs_true" in summary:
        lines.append(f"largest |learned - true| {summary['max_abs_error_vs_true']:.3g}")
    by_target = summary["test_by_target"] or {"": {k.split("/")[-1]: v for k, v in summary["test_metrics"].items()}}
    for target, values in by_target.items():
        name = f"test {target}" if target and len(summary["targets"]) > 1 else "test"
        lines.append(f"{name} (original units)  " + "  ".join(f"{k} {_number(v)}" for k, v in values.items()))
    if "inference" in summary:
        lines += ["", format_coefficient_table(summary["inference"])]
        ridge = summary["ridge"]
        lines.append(
            f"ridge: the best l2 by generalized cross-validation is {ridge['best_l2']:g} (GCV {ridge['best_gcv']:.6g})"
        )
    if summary["checkpoints"]["last"]:
        lines.append(f"trained model {summary['checkpoints']['last']}")
    lines.append(summary["run_dir"] or "(no run directory: logging is off)")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _coefficient_table(summary: dict) -> list[str]:
    columns = [("learned", summary["learned"])]
    if summary["exact"]:
        columns.append(("least squares", summary["exact"]))
    if summary["true"]:
        columns.append(("true", summary["true"]))
    lines = [f"{'parameter':<28}" + "".join(f"{name:>15}" for name, _ in columns)]
    for t, target in enumerate(summary["targets"]):
        prefix = f"{target}: " if len(summary["targets"]) > 1 else ""
        for f, feature in enumerate(summary["features"]):
            values = "".join(f"{p['weight'][t][f]:>15.7g}" for _, p in columns)
            lines.append(f"{prefix + 'w[' + feature + ']':<28}{values}")
        lines.append(f"{prefix + 'b':<28}" + "".join(f"{p['bias'][t]:>15.7g}" for _, p in columns))
    return [*lines, ""]


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.6g}"
