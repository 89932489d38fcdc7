"""The end-of-run report: what was learned, next to the truth, as text and as summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch.distributed as dist

from linreg_pl.checkpoints import last_checkpoint_path
from linreg_pl.data import RegressionDataModule
from linreg_pl.files import write_text_atomically
from linreg_pl.model import LinearRegression
from linreg_pl.solvers import ExactLeastSquares

# A trained model whose train loss is this much above the exact optimum gets a hint, unless the
# excess is below float32 round-off relative to the loss of always predicting the mean.
LARGE_GAP = 0.05
NEGLIGIBLE_EXCESS = 1e-6


def summarize(
    trainer: L.Trainer,
    model: LinearRegression,
    datamodule: RegressionDataModule,
    test_metrics: dict[str, float],
    wall_time: float,
) -> dict:
    """Everything a user checks after a run, as plain JSON-ready values."""
    weight, bias = model.learned_parameters()
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
        "learned": {"weight": weight.tolist(), "bias": bias.tolist()},
        "true": None,
        "test_metrics": {k: float(v) for k, v in sorted(test_metrics.items())},
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "wall_time_s": round(wall_time, 3),
        "checkpoints": {
            "best": _absolute(checkpoint.best_model_path if checkpoint else ""),
            "last": _absolute(str(last) if last is not None and last.is_file() else ""),
        },
        "run_dir": _run_dir(trainer),
    }
    summary["exact"] = exact_reference(trainer, model, datamodule)
    if table.true_weight is not None:
        summary["true"] = {"weight": table.true_weight.tolist(), "bias": table.true_bias.tolist()}
        summary["max_abs_error_vs_true"] = float(
            max(np.abs(weight - table.true_weight).max(), np.abs(bias - table.true_bias).max())
        )
    return summary


def exact_reference(trainer: L.Trainer, model: LinearRegression, datamodule: RegressionDataModule) -> dict | None:
    """The exact least-squares optimum of the model's own training objective (same scaling, same
    L2), and how far the trained model's train loss is above it. Each process accumulates its
    share of the training rows; the pieces are merged across processes. None with an L1 penalty,
    which has no closed form."""
    l1, l2 = model.hparams.l1, model.hparams.l2
    if l1:
        return None
    x, y = datamodule.arrays("train")
    # Shares only where a process group exists: after ddp_spawn the report runs in the parent alone.
    distributed = dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    share = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
    metric = ExactLeastSquares(x.shape[1], y.shape[1]).to(model.device)  # the backend's device (NCCL: CUDA)
    metric.update(x[share], y[share])
    moments = metric.compute()  # torchmetrics merges the shares of every process
    scaling = model.scaling
    weight, bias = moments.solve(scaling, l2)
    train_loss = moments.objective(*model.learned_parameters(), scaling, l2)
    optimal_loss = moments.objective(weight, bias, scaling, l2)
    constant_loss = moments.objective(np.zeros_like(weight), moments.mean[moments.n_features :], scaling, l2)
    # Relative to an optimum of ~0 (a noiseless line) a gap means nothing: call that an exact fit.
    exact_fit = optimal_loss <= 1e-12 * constant_loss
    return {
        "weight": weight.tolist(),
        "bias": bias.tolist(),
        "train_loss": train_loss,
        "optimal_train_loss": optimal_loss,
        "optimality_gap": None if exact_fit else train_loss / optimal_loss - 1,
        "converged": train_loss - optimal_loss <= max(LARGE_GAP * optimal_loss, NEGLIGIBLE_EXCESS * constant_loss),
    }


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


def _gap_line(exact: dict) -> str:
    line = f"train loss {exact['train_loss']:.6g}, exact optimum {exact['optimal_train_loss']:.6g}"
    gap = exact["optimality_gap"]
    line += " (an exact fit)" if gap is None else f", gap {gap:+.2%}"
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
        f"trained {summary['epochs']} epochs, {summary['steps']} steps in {summary['wall_time_s']:.1f} s",
        "",
    ]
    columns = [("learned", summary["learned"])]
    if summary["exact"]:
        columns.append(("least squares", summary["exact"]))
    if summary["true"]:
        columns.append(("true", summary["true"]))
    lines.append(f"{'parameter':<28}" + "".join(f"{name:>15}" for name, _ in columns))
    for t, target in enumerate(summary["targets"]):
        prefix = f"{target}: " if len(summary["targets"]) > 1 else ""
        for f, feature in enumerate(summary["features"]):
            values = "".join(f"{p['weight'][t][f]:>15.7g}" for _, p in columns)
            lines.append(f"{prefix + 'w[' + feature + ']':<28}{values}")
        lines.append(f"{prefix + 'b':<28}" + "".join(f"{p['bias'][t]:>15.7g}" for _, p in columns))
    lines.append("")
    if exact := summary["exact"]:
        lines.append(_gap_line(exact))
    metrics = summary["test_metrics"]
    lines.append("test  " + "  ".join(f"{k.split('/')[-1]} {v:.6g}" for k, v in metrics.items()))
    if summary["checkpoints"]["best"]:
        lines.append(f"best checkpoint {summary['checkpoints']['best']}")
    lines.append(summary["run_dir"] or "(no run directory: logging is off)")
    return "\n".join(lines)
