"""The end-of-run report: what was learned, next to the truth, as text and as summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np

from linreg_pl.data import RegressionDataModule
from linreg_pl.model import LinearRegression


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
            "last": _absolute(checkpoint.last_model_path if checkpoint else ""),
        },
        "run_dir": _run_dir(trainer),
    }
    if table.true_weight is not None:
        summary["true"] = {"weight": table.true_weight.tolist(), "bias": table.true_bias.tolist()}
        summary["max_abs_error_vs_true"] = float(
            max(np.abs(weight - table.true_weight).max(), np.abs(bias - table.true_bias).max())
        )
    return summary


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


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
    if summary["true"]:
        columns.append(("true", summary["true"]))
    lines.append(f"{'parameter':<28}" + "".join(f"{name:>14}" for name, _ in columns))
    for t, target in enumerate(summary["targets"]):
        prefix = f"{target}: " if len(summary["targets"]) > 1 else ""
        for f, feature in enumerate(summary["features"]):
            values = "".join(f"{p['weight'][t][f]:>14.6g}" for _, p in columns)
            lines.append(f"{prefix + 'w[' + feature + ']':<28}{values}")
        lines.append(f"{prefix + 'b':<28}" + "".join(f"{p['bias'][t]:>14.6g}" for _, p in columns))
    lines.append("")
    metrics = summary["test_metrics"]
    lines.append("test  " + "  ".join(f"{k.split('/')[-1]} {v:.6g}" for k, v in metrics.items()))
    if summary["checkpoints"]["best"]:
        lines.append(f"best checkpoint {summary['checkpoints']['best']}")
    lines.append(summary["run_dir"] or "(no run directory: logging is off)")
    return "\n".join(lines)
