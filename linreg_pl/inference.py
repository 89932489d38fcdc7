"""Use a trained model: score it on labelled data, or predict for new rows of a CSV file.

A checkpoint alone is enough: it holds the weights, the standardization (as buffers), the feature
and target names, and the data configuration it was trained on.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import lightning as L
from jsonargparse import ArgumentParser

from linreg_pl.checkpoints import check_matches, read_checkpoint
from linreg_pl.data import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.files import write_text_atomically
from linreg_pl.model import LinearRegression
from linreg_pl.sources import numeric_columns, read_csv

METRICS = ("mse", "rmse", "mae", "r2")


def load_model(path: str | os.PathLike) -> tuple[LinearRegression, dict]:
    """The model of a checkpoint, loaded without executing code, and the checkpoint itself."""
    checkpoint = read_checkpoint(path)
    if "linear.weight" not in checkpoint["state_dict"] or "hyper_parameters" not in checkpoint:
        raise InputError(f"'{path}' is not a linreg_pl LinearRegression checkpoint; use a .ckpt from scripts/train.py.")
    model = LinearRegression.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return model.eval(), checkpoint


def evaluate(args: list[str] | None = None) -> dict:
    """``scripts/evaluate.py``: MSE, RMSE, MAE and R² of a checkpoint on a data module's test split
    (by default the data the checkpoint was trained on), printed and written as JSON."""
    checkpoint_path = _checkpoint_argument(args)
    parser = ArgumentParser(prog="evaluate.py", description=evaluate.__doc__)
    parser.add_argument("--ckpt_path", type=str, required=True, help="The checkpoint to score.")
    parser.add_argument("--output", type=str, default="evaluation.json", help="Where to write the metrics (JSON).")
    parser.add_class_arguments(RegressionDataModule, "data")
    if checkpoint_path:
        model, checkpoint = load_model(checkpoint_path)
        trained_on = {
            k: v for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")
        }
        parser.set_defaults({f"data.{key}": value for key, value in trained_on.items()})
    config = parser.parse_args(args)
    datamodule = parser.instantiate(config).data
    check_matches(checkpoint, config.ckpt_path, datamodule.n_features, datamodule.n_targets)
    _check_names(model, datamodule, config.ckpt_path)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    tested = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    split = datamodule.evaluated_split("test")
    result = {
        "checkpoint": str(Path(config.ckpt_path).resolve()),
        "dataset": datamodule.table.name,
        "split": split,
        "rows": len(datamodule.indices[split]),
        **{name: float(tested[f"test/{name}"]) for name in METRICS},
    }
    write_text_atomically(Path(config.output), json.dumps(result, indent=2) + "\n")
    print(
        f"{result['dataset']} {split} split, {result['rows']} rows: "
        + "  ".join(f"{m} {result[m]:.6g}" for m in METRICS)
    )
    print(f"wrote {config.output}")
    return result


def predict(args: list[str] | None = None) -> Path:
    """``scripts/predict.py``: predictions of a checkpoint for the rows of a CSV file, in original
    units, with the target names as headers; every input column is passed through."""
    parser = argparse.ArgumentParser(prog="predict.py", description=predict.__doc__)
    parser.add_argument("--ckpt_path", required=True, help="The trained model's checkpoint.")
    parser.add_argument("--input", required=True, help="CSV file with (at least) the feature columns, by name.")
    parser.add_argument("--output", required=True, help="CSV file to write; replaced only once complete.")
    config = parser.parse_args(args)
    source, output = Path(config.input), Path(config.output)
    if output.resolve() == source.resolve():
        raise InputError(f"--output '{output}' is the input file; write the predictions to another file.")
    model, _ = load_model(config.ckpt_path)
    frame = read_csv(source)
    names = model.hparams.feature_names or []
    predictions = model.predict(numeric_columns(frame, names, source, for_training=False))
    for t, target in enumerate(model.hparams.target_names or [f"y{t}" for t in range(predictions.shape[1])]):
        # A target column already in the input (labelled data) is kept beside the prediction.
        frame[target if target not in frame.columns else f"{target}_predicted"] = predictions[:, t]
    write_text_atomically(output, frame.to_csv(index=False))
    print(f"wrote {len(frame)} predictions to {output}")
    return output


def _checkpoint_argument(args: list[str] | None) -> str | None:
    """--ckpt_path, read ahead so that the checkpoint's data config can become the defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--ckpt_path")
    return pre.parse_known_args(args)[0].ckpt_path


def _check_names(model: LinearRegression, datamodule: RegressionDataModule, path: str) -> None:
    trained = model.hparams.feature_names
    if trained is not None and trained != datamodule.feature_names:
        raise InputError(
            f"'{path}' was trained on features {trained} but the data has {datamodule.feature_names}; "
            f"select them in that order with --data.source.features."
        )
