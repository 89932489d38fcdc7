"""Export a checkpoint for serving: ``python scripts/export.py --ckpt_path CKPT_OR_RUN_DIR --format onnx|pt2
--output FILE``.

The exported graph is the model's ``forward``: it takes features and returns predictions in
original units, the standardization folded in. It has one input, ``features``, a float tensor
(batch, n_features) with the columns in the order of the ``feature_names`` metadata, and one
output, ``predictions`` (batch, n_targets) in the order of ``target_names``; the batch size is
dynamic. A single 2-D input is what serving stacks batch (ONNX Runtime, Triton, KServe): a
client selects the named columns in order, as ``scripts/predict.py`` does.

- ``onnx``: through ``torch.onnx.export(..., dynamo=True)``; the names are in the model's
  metadata (``onnx.load(F).metadata_props``, or ``InferenceSession.get_modelmeta().custom_metadata_map``).
- ``pt2``: ``torch.export``; ``torch.export.load(F, extra_files={"metadata.json": ""})`` returns the names.

Before the file is written, the exported graph is run (ONNX Runtime for ONNX) on sample rows, the
rows of ``--input`` or rows drawn around the training data's mean, and must agree with the
checkpoint's own float64 predictions: to 1e-5 of the largest prediction in float32 (1e-12 in float64).
Needs the ``[export]`` extra for ONNX.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.cli import LightningArgumentParser
from torch import nn

from linreg_pl.data.csv import numeric_columns, read_csv
from linreg_pl.errors import InputError
from linreg_pl.runtime.files import atomic_open
from linreg_pl.serve import CheckpointCLI, _check_output

INSTALL_HINT = "pip install 'linreg_pl[export]'"
INPUT_NAME, OUTPUT_NAME = "features", "predictions"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Relative agreement with the checkpoint's float64 predictions that an export must reach.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
SAMPLE_ROWS = 256


class Predictor(nn.Module):
    """The model's ``forward`` under the input name that the exported graph shows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)


class ExportCLI(CheckpointCLI):
    """``scripts/export.py``: the checkpoint's model as an ONNX or ``torch.export`` file."""

    datamodule_class_for_cli = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--format", type=Literal["onnx", "pt2"], default="onnx", help="onnx, or pt2 (torch.export)."
        )
        parser.add_argument("--output", type=str, required=True, help="File to write; replaced only once verified.")
        parser.add_argument(
            "--input",
            type=str | None,
            default=None,
            help="CSV whose feature columns (by name) verify the export; default: rows around the training mean.",
        )
        parser.add_argument("--dtype", type=Literal["float32", "float64"], default="float32", help="The graph's dtype.")


def export(args: list[str] | None = None) -> dict:
    """Run ``scripts/export.py``; returns what it wrote and how well the export agrees."""
    cli = ExportCLI(args)
    config, model = cli.config, cli.model
    _check_output(config.output, [cli.checkpoint_path, config.input])
    if config.format == "onnx":
        _require("onnx", "onnxruntime", "onnxscript")
    names = model.hparams.feature_names or [f"x{i}" for i in range(model.hparams.n_features)]
    targets = model.hparams.target_names or [f"y{t}" for t in range(model.hparams.n_targets)]
    metadata = {
        "feature_names": json.dumps(names),
        "target_names": json.dumps(targets),
        "input": f"{INPUT_NAME}: ({config.dtype}, batch x {len(names)}) in the order of feature_names",
        "output": f"{OUTPUT_NAME}: (batch x {len(targets)}) in the order of target_names, original units",
        "checkpoint": str(cli.checkpoint_path),
    }
    predictor = Predictor(model).to(DTYPES[config.dtype]).eval()
    # In the graph's dtype before loading: a float64 checkpoint's standardization (a mean of 1e6,
    # say) copied into float32 buffers would lose the digits that --dtype float64 is asked to keep.
    model.load_state_dict(cli.checkpoint["state_dict"])  # weights and standardization
    rows = _verification_rows(config.input, names, model)
    # Two rows to trace with: a batch of one would be fixed as a constant; the batch stays dynamic.
    sample = torch.zeros(2, len(names), dtype=DTYPES[config.dtype])
    to_bytes, run = (_onnx, _run_onnx) if config.format == "onnx" else (_pt2, _run_pt2)
    exported = to_bytes(predictor, sample, metadata)
    expected = cli.predictions(rows)  # the checkpoint's own float64 predictions
    got = run(exported, rows.astype(config.dtype))
    error = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), np.finfo(float).tiny))
    if not error <= TOLERANCE[config.dtype]:
        remedy = (
            "features far from zero relative to their spread lose digits in float32: use --dtype float64"
            if config.dtype == "float32"
            else "this checkpoint cannot be exported faithfully"
        )
        raise InputError(
            f"--format {config.format}: the exported graph differs from the checkpoint by {error:.2g} (relative) on "
            f"{len(rows)} rows, more than {TOLERANCE[config.dtype]:g}; {remedy}."
        )
    with atomic_open(config.output) as file:
        file.write(exported)
    print(
        f"wrote {config.output} ({config.format}, {config.dtype}): input '{INPUT_NAME}' (batch, {len(names)}) = "
        f"{names}, output '{OUTPUT_NAME}' = {targets}; agrees with the checkpoint to {error:.1e} on {len(rows)} rows"
    )
    return {"output": config.output, "format": config.format, "rows": len(rows), "max_relative_error": error}


def _require(*modules: str) -> None:
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            raise InputError(f"--format onnx needs {name}, which is not installed: {INSTALL_HINT}") from None


def _verification_rows(path: str | None, names: list[str], model) -> np.ndarray:
    """The feature columns of ``path``, or rows drawn around the mean of the training features."""
    if path is not None:
        path = Path(path)
        frame = read_csv(path)
        x = numeric_columns(frame, names, path, for_training=False).to_numpy(np.float64)
        if not len(x):
            raise InputError(f"--input '{path}' has no rows to verify the export on.")
        return x
    scaling = model.scaling
    noise = np.random.default_rng(0).standard_normal((SAMPLE_ROWS, len(names)))
    return scaling.feature_mean + noise * scaling.feature_scale


def _onnx(predictor: nn.Module, sample: torch.Tensor, metadata: dict[str, str]) -> bytes:
    import onnx

    # The exporter logs a warning per torchvision operator it cannot register; no export uses them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = torch.onnx.export(
        predictor,
        (sample,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}},
        verbose=False,
    )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = f"linreg_pl model: {metadata['input']} -> {metadata['output']}"
    return proto.SerializeToString()


def _run_onnx(exported: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(exported, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float64)


def _pt2(predictor: nn.Module, sample: torch.Tensor, metadata: dict[str, str]) -> bytes:
    program = torch.export.export(predictor, (sample,), dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"metadata.json": json.dumps(metadata)})
    return buffer.getvalue()


def _run_pt2(exported: bytes, x: np.ndarray) -> np.ndarray:
    program = torch.export.load(io.BytesIO(exported))
    with torch.no_grad():
        return program.module()(torch.from_numpy(x)).double().numpy()
