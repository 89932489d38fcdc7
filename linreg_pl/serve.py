"""Use a trained model: score it on labelled data (``scripts/evaluate.py``), or predict for new rows
of a CSV file (``scripts/predict.py``).

Both are LightningCLI siblings of ``scripts/train.py``: the same ``--help``, ``--config``,
``--trainer.*`` flags and error handling. A checkpoint alone is enough: its saved hyper-parameters
become the defaults of ``--model.*`` (and, for evaluation, of ``--data.*``: the data it was trained
on), and its weights and standardization are loaded into the model. Predictions run in float64
(``--trainer.precision 64-true`` by default), and every number written is float64.

Categorical columns are coded as in training (the checkpoint keeps the levels), by column name.
``predict --interval 0.95`` adds the confidence interval of the mean and the prediction interval of
a new observation from the least-squares fit the checkpoint keeps (``RunReport``), as statsmodels'
``get_prediction(...).summary_frame()``; ``predict_frame`` does the same from Python.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.cli import LightningArgumentParser
from torch.utils.data import DataLoader, TensorDataset

from linreg_pl.callbacks.report import scores
from linreg_pl.cli import LINKED, LinearRegressionCLI
from linreg_pl.data.csv import numeric_columns, read_csv
from linreg_pl.data.encoding import Encoding, UnseenLevels
from linreg_pl.data.sources import checked_weights
from linreg_pl.errors import InputError
from linreg_pl.exact.statistics import prediction_intervals
from linreg_pl.model import LinearRegression
from linreg_pl.runtime.checkpoints import check_matches, read_checkpoint
from linreg_pl.runtime.files import write_text_atomically

# Scoring and prediction log nothing and write no checkpoint; float64 end to end.
TRAINER_DEFAULTS = {"logger": False, "enable_checkpointing": False, "precision": "64-true"}


class CheckpointCLI(LinearRegressionCLI):
    """A CLI whose ``--ckpt_path`` (a checkpoint, or a run directory: the model its run reported) is
    read before parsing, so that the checkpoint's hyper-parameters become the defaults."""

    restores_data = False

    def __init__(self, args: list[str] | None = None) -> None:
        quiet = {"enable_progress_bar": False, "enable_model_summary": False}
        super().__init__(args, trainer_defaults={**quiet, **TRAINER_DEFAULTS}, save_config_callback=None)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path",
            type=str,
            required=True,
            help="The checkpoint, or a run directory (the model its run reported).",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        given = _read_ahead("--ckpt_path", args)
        if given is not None:
            self.checkpoint_path = checkpoint_of(given)
            self.checkpoint = read_checkpoint(self.checkpoint_path)
            parser.set_defaults(self._defaults_from(self.checkpoint))
        super().parse_arguments(parser, args)

    def _defaults_from(self, checkpoint: dict) -> dict:
        model = checkpoint.get("hyper_parameters") or {}
        if "n_features" not in model:
            raise InputError(
                f"'{self.checkpoint_path}' is not a linreg_pl LinearRegression checkpoint; use a .ckpt "
                "from scripts/train.py."
            )
        # Only what this version's model takes: a checkpoint keeps the arguments of the version that wrote
        # it (steps_per_batch was the model's until the data module settled it).
        accepted = inspect.signature(LinearRegression).parameters
        defaults = {f"model.{k}": v for k, v in model.items() if k in accepted}
        if self.restores_data:
            data = checkpoint.get("datamodule_hyper_parameters") or {}
            defaults.update({f"data.{k}": v for k, v in data.items() if not k.startswith("_")})
            defaults = {k: v for k, v in defaults.items() if k.removeprefix("model.") not in LINKED}
        return defaults

    def predictions(self, x: np.ndarray) -> np.ndarray:
        """The checkpoint's predictions (n, n_targets) for float64 features (n, n_features)."""
        self.model.load_state_dict(self.checkpoint["state_dict"])  # weights and standardization
        loader = DataLoader(TensorDataset(torch.from_numpy(np.ascontiguousarray(x, np.float64))), batch_size=65536)
        return torch.cat(self.trainer.predict(self.model, loader)).double().cpu().numpy()


class EvaluateCLI(CheckpointCLI):
    """``scripts/evaluate.py``: the model's metrics (overall and per target) of a checkpoint on a
    split of the data it was trained on, or of other data given with ``--data.*``."""

    restores_data = True

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--split",
            type=Literal["all", "train", "val", "test"],
            default="test",
            help="Rows to score: a split of the data module, or all its rows (for a new file).",
        )
        parser.add_argument(
            "--output",
            type=str | None,
            default=None,
            help="Where to write the metrics (JSON); by default evaluation.json in the checkpoint's run directory.",
        )


class PredictCLI(CheckpointCLI):
    """``scripts/predict.py``: predictions of a checkpoint for the rows of a CSV file, in original
    units, in columns ``<target>_predicted`` (with ``--interval``, also ``<target>_mean_lower``,
    ``<target>_mean_upper``, ``<target>_lower`` and ``<target>_upper``); every input column is
    passed through."""

    datamodule_class_for_cli = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--input", type=str, required=True, help="CSV file with the feature columns, by name.")
        parser.add_argument("--output", type=str, required=True, help="CSV file to write; replaced only once complete.")
        parser.add_argument(
            "--interval",
            type=float | None,
            default=None,
            help="Add intervals of this level, e.g. 0.95: of the mean, and of a new observation.",
        )
        parser.add_argument(
            "--unseen_levels",
            type=UnseenLevels,
            default="error",
            help="A categorical level the training rows lack: an error, or the reference level.",
        )


def evaluate(args: list[str] | None = None) -> dict:
    """Run ``scripts/evaluate.py``; returns what it wrote."""
    cli = EvaluateCLI(args)
    config, datamodule = cli.config, cli.datamodule
    output = config.output or str(run_directory_of(cli.checkpoint_path) / "evaluation.json")
    _check_output(output, [cli.checkpoint_path, getattr(datamodule.source, "path", None)])
    trained = cli.checkpoint["hyper_parameters"].get("feature_names")
    if trained and set(datamodule.feature_names) < set(trained):  # the same data, less a column
        missing = [name for name in trained if name not in datamodule.feature_names]
        raise InputError(
            f"'{cli.checkpoint_path}' was trained on features {trained}, but the data has no column(s) {missing}; "
            "give data with those columns."
        )
    check_matches(cli.checkpoint, cli.checkpoint_path, cli.model)
    _check_names(trained, datamodule.feature_names, cli.checkpoint_path)
    splits = ("train", "val", "test") if config.split == "all" else (config.split,)
    parts = [datamodule.arrays(split) for split in splits]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    weight = np.concatenate([datamodule.weights(split) for split in splits]) if datamodule.weighted else None
    if not len(x):
        raise InputError(f"--split {config.split} is empty for this data (its fraction is 0); use --split all.")
    pooled, by_target = scores(cli.model, cli.predictions(x), y, weight)
    result = {
        "checkpoint": str(Path(cli.checkpoint_path).resolve()),
        "dataset": datamodule.table.name,
        "split": config.split,
        "rows": len(x),
        **pooled,
        "per_target": dict(zip(datamodule.target_names, by_target, strict=True)),
    }
    write_text_atomically(output, json.dumps(result, indent=2) + "\n")
    print(
        f"{result['dataset']}, {config.split}: {len(x)} rows  "
        + "  ".join(f"{m} {v:.6g}" if v is not None else f"{m} undefined" for m, v in pooled.items())
    )
    print(f"wrote {output}")
    return result


def predict(args: list[str] | None = None) -> Path:
    """Run ``scripts/predict.py``; returns the path written."""
    cli = PredictCLI(args)
    source, output = Path(cli.config.input), Path(cli.config.output)
    _check_output(output, [cli.checkpoint_path, source])
    frame = read_csv(source, option="--input")
    x = design_matrix(cli.checkpoint, frame, source, cli.config.unseen_levels)
    if not np.isfinite(x).all():
        rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
        names = cli.checkpoint["hyper_parameters"].get("feature_names") or [f"x{j}" for j in range(x.shape[1])]
        columns = [name for name, finite in zip(names, np.isfinite(x).all(axis=0), strict=True) if not finite]
        raise InputError(
            f"--input '{source}' has infinite values in column(s) {columns} (data row {rows[0] + 1}"
            f"{f' and {len(rows) - 1} more' if len(rows) > 1 else ''}); a prediction there would be meaningless: "
            "fix or drop those rows."
        )
    predicted = cli.predictions(x)
    if not np.isfinite(predicted).all():
        row = np.flatnonzero(~np.isfinite(predicted).all(axis=1))[0]
        raise InputError(
            f"the prediction for data row {row + 1} of --input '{source}' overflows float64; its features are far "
            "outside the training data's range: check that row."
        )
    columns = output_columns(cli.checkpoint, predicted, x, frame, source, cli.config.interval)
    # Every input column passes through as the text it was in the file; only the new columns are numbers.
    text = read_csv(source, option="--input", as_text=True)
    text = text.assign(**{name: [repr(float(v)) for v in values] for name, values in columns.items()})  # shortest exact
    write_text_atomically(output, text.to_csv(index=False))
    print(f"wrote {len(frame)} predictions to {output}")
    return output


def predict_frame(
    checkpoint_path: str | Path, frame, interval: float | None = None, unseen_levels: UnseenLevels = "error"
):
    """The Python API of ``scripts/predict.py``: a checkpoint's predictions for the rows of a pandas
    DataFrame (feature columns by name, categorical ones coded as in training), as a DataFrame of
    ``<target>_predicted`` (and, with ``interval``, the interval columns) aligned with ``frame``."""
    import pandas as pd

    from linreg_pl.model import LinearRegression

    checkpoint = read_checkpoint(checkpoint_path)
    model = LinearRegression.load_from_checkpoint(checkpoint_path, weights_only=True, map_location="cpu").double()
    where = Path("the DataFrame")
    x = design_matrix(checkpoint, frame, where, unseen_levels)
    return pd.DataFrame(output_columns(checkpoint, model.predict(x), x, frame, where, interval), index=frame.index)


def design_matrix(checkpoint: dict, frame, source: Path, unseen_levels: UnseenLevels = "error") -> np.ndarray:
    """The model's float64 inputs for the rows of ``frame``: its feature columns by name, the
    categorical ones coded with the checkpoint's levels."""
    model = checkpoint["hyper_parameters"]
    if model.get("encoding"):
        return Encoding.from_config(model["encoding"]).design(frame, source, unseen_levels)
    return numeric_columns(frame, model.get("feature_names") or [], source, for_training=False).to_numpy(np.float64)


def output_columns(
    checkpoint: dict, predicted: np.ndarray, x: np.ndarray, frame, source: Path, interval: float | None
) -> dict[str, np.ndarray]:
    """``<target>_predicted`` for each target and, with ``interval``, the least-squares fit's
    ``<target>_mean_lower``, ``_mean_upper`` (the mean) and ``_lower``, ``_upper`` (a new
    observation, of variance sigma² / w when ``frame`` holds the training weight column)."""
    targets = checkpoint["hyper_parameters"].get("target_names") or [f"y{t}" for t in range(predicted.shape[1])]
    columns = {f"{target}_predicted": predicted[:, t] for t, target in enumerate(targets)}
    if interval is None:
        return columns
    fit = checkpoint.get("least_squares")
    if fit is None:
        raise InputError(
            "--interval needs the least-squares fit that scripts/train.py saves in the checkpoints of a linear "
            "model; this checkpoint has none (a non-linear --model.net, or trained without the run report)."
        )
    source_config = ((checkpoint.get("datamodule_hyper_parameters") or {}).get("source") or {}).get("init_args", {})
    weight_column, weight = source_config.get("weight"), None
    if weight_column is not None and weight_column in frame.columns:
        values = numeric_columns(frame, [weight_column], source, for_training=False)[weight_column]
        weight = checked_weights(values, f"weight column '{weight_column}' in '{source}'")
    bands = prediction_intervals(fit, x, interval, weight)
    for t, target in enumerate(targets):
        for name in ("mean_lower", "mean_upper", "lower", "upper"):
            columns[f"{target}_{name}"] = bands[name][:, t]
    return columns


def checkpoint_of(path: str) -> str:
    """A checkpoint file as given, or for a run directory the model its run tested and reported
    (``last.ckpt``: the trained model), else its best checkpoint by validation loss."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        return path
    last = run_dir / "checkpoints" / "last.ckpt"
    best = sorted(run_dir.glob("checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if last.is_file():
        return str(last)
    if not best:
        raise InputError(f"--ckpt_path '{path}' is a directory without checkpoints/*.ckpt; give a .ckpt file.")
    return str(best[-1])


def run_directory_of(checkpoint: str | Path) -> Path:
    """The run directory of a checkpoint written by scripts/train.py (``RUN/checkpoints/x.ckpt``),
    else the checkpoint's own folder."""
    folder = Path(checkpoint).resolve().parent
    return folder.parent if folder.name == "checkpoints" else folder


def _read_ahead(flag: str, args) -> str | None:
    """A flag's value, read before the CLI parses (the checkpoint's hyper-parameters are defaults)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(flag)
    known, rest = pre.parse_known_args(sys.argv[1:] if args is None else args)
    given = getattr(known, flag.lstrip("-"))
    if given is None and (path := next((a for a in rest if not a.startswith("-") and Path(a).exists()), None)):
        raise InputError(f"'{path}' was given without its option; pass it as {flag} {path}.")
    return given


def _check_output(output: str | Path, inputs: list) -> None:
    output = Path(output)
    if output.is_dir():
        raise InputError(f"--output '{output}' is a directory; give a file name, e.g. '{output / 'out.csv'}'.")
    for given in inputs:
        if given is not None and Path(given).resolve() == output.resolve():
            raise InputError(f"--output '{output}' is an input of this command; write to another file.")


def _check_names(trained: list[str] | None, feature_names: list[str], path: str) -> None:
    if trained is not None and trained != feature_names:
        raise InputError(
            f"'{path}' was trained on features {trained} but the data has {feature_names}; "
            f"select them in that order with --data.source.features."
        )
