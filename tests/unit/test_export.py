"""Export (linreg_pl.export): the ONNX and torch.export graphs predict what scripts/predict.py
predicts, by feature name, for any batch size; outputs never replace an input; the extra is named."""

import json
import sys

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch

from linreg_pl.errors import InputError
from linreg_pl.export import export
from linreg_pl.serve import predict
from tests.helpers import CONFIGS, file_snapshot


@pytest.fixture
def shuffled_csv(in_tmp):
    """configs/example.csv with its columns reordered and an extra one: columns go by name."""
    frame = pd.read_csv(CONFIGS / "example.csv")
    frame["note"] = 1.0
    path = in_tmp / "rows.csv"
    frame[["note", "age_years", "price_k", "area_m2", "rooms"]].to_csv(path, index=False)
    return path


def predicted_by_predict_py(run_dir: str, rows_csv) -> np.ndarray:
    predict(["--ckpt_path", run_dir, "--input", str(rows_csv), "--output", "predicted.csv"])
    return pd.read_csv("predicted.csv")[["price_k_predicted"]].to_numpy()


def test_onnx_runtime_predicts_what_predict_py_does_by_feature_name(csv_run, shuffled_csv):
    result = export(["--ckpt_path", csv_run["run_dir"], "--format", "onnx", "--output", "model.onnx"])
    assert result["max_relative_error"] <= 1e-5
    session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    names, targets = json.loads(metadata["feature_names"]), json.loads(metadata["target_names"])
    assert names == ["area_m2", "rooms", "age_years"] and targets == ["price_k"]
    (features,) = session.get_inputs()
    assert features.name == "features" and features.type == "tensor(float)" and features.shape[1] == 3
    assert isinstance(features.shape[0], str)  # a dynamic batch dimension
    frame = pd.read_csv(shuffled_csv)
    x = frame[names].to_numpy(np.float32)
    expected = predicted_by_predict_py(csv_run["run_dir"], shuffled_csv)
    np.testing.assert_allclose(session.run(["predictions"], {"features": x})[0], expected, rtol=1e-5)
    for batch in (1, 7):  # the batch size the graph was traced with is not baked in
        np.testing.assert_allclose(session.run(None, {"features": x[:batch]})[0], expected[:batch], rtol=1e-5)
    import onnx  # here, not at the top: its import (~1 s, ml_dtypes) would slow every worker's collection

    assert {p.key for p in onnx.load("model.onnx").metadata_props} >= {"feature_names", "target_names"}


@pytest.mark.slow
def test_a_nonlinear_net_exports_the_same_way(train_run, shuffled_csv):
    # The export is the model's forward, whatever the network: here an MLP between the scalings.
    run = train_run(
        "--config",
        str(CONFIGS / "csv.yaml"),
        "--model.net=linreg_pl.nets.MLP",
        "--model.optimizer=Adam",
        "--model.optimizer.lr=0.01",
        "--trainer.max_epochs=10",
    )
    export(["--ckpt_path", run["run_dir"], "--output", "mlp.onnx"])
    session = onnxruntime.InferenceSession("mlp.onnx", providers=["CPUExecutionProvider"])
    x = pd.read_csv(shuffled_csv)[["area_m2", "rooms", "age_years"]].to_numpy(np.float32)
    expected = predicted_by_predict_py(run["run_dir"], shuffled_csv)
    np.testing.assert_allclose(session.run(None, {"features": x})[0], expected, rtol=1e-5)


def test_a_pt2_program_predicts_what_predict_py_does(csv_run, shuffled_csv):
    export(["--ckpt_path", csv_run["checkpoints"]["last"], "--format", "pt2", "--output", "model.pt2"])
    extra = {"metadata.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra)
    names = json.loads(json.loads(extra["metadata.json"])["feature_names"])
    x = torch.from_numpy(pd.read_csv(shuffled_csv)[names].to_numpy(np.float32))
    expected = predicted_by_predict_py(csv_run["run_dir"], shuffled_csv)
    with torch.no_grad():
        np.testing.assert_allclose(program.module()(x).numpy(), expected, rtol=1e-5)


@pytest.mark.slow
def test_float32_that_would_lose_digits_is_refused_and_float64_exports(train_run, in_tmp):
    # A feature far from zero relative to its spread: 1e6 + u in float32 keeps u to 1/16 only.
    u = np.random.default_rng(0).uniform(0, 1, 100)
    pd.DataFrame({"x": 1e6 + u, "y": 3 * u}).to_csv(in_tmp / "far.csv", index=False)
    run = train_run(
        "--data.source=CSVSource",
        f"--data.source.path={in_tmp / 'far.csv'}",
        "--data.source.target=y",
        "--data.standardize_features=true",
        "--trainer.precision=64-true",  # what training itself needs here (float32 cannot resolve u)
        "--trainer.max_epochs=20",
    )
    with pytest.raises(InputError, match="differs from the checkpoint by .* use --dtype float64"):
        export(["--ckpt_path", run["run_dir"], "--output", "far.onnx"])
    assert not (in_tmp / "far.onnx").exists()
    assert (
        export(["--ckpt_path", run["run_dir"], "--output", "far.onnx", "--dtype", "float64"])["max_relative_error"]
        < 1e-12
    )
    assert onnxruntime.InferenceSession("far.onnx").get_inputs()[0].type == "tensor(double)"


@pytest.mark.parametrize("output", ["checkpoint", "input"])
def test_the_checkpoint_and_the_input_are_never_overwritten(csv_run, shuffled_csv, in_tmp, output):
    target = csv_run["checkpoints"]["last"] if output == "checkpoint" else str(shuffled_csv)
    folders = (in_tmp, csv_run["run_dir"])  # the shared run's directory is not under in_tmp
    before = [file_snapshot(folder) for folder in folders]
    with pytest.raises(InputError, match="is an input of this command"):
        export(["--ckpt_path", csv_run["run_dir"], "--input", str(shuffled_csv), "--output", target])
    assert [file_snapshot(folder) for folder in folders] == before


def test_without_onnxruntime_the_error_names_the_extra(csv_run, in_tmp, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(
        InputError, match=r"needs onnxruntime, which is not installed: pip install 'linreg_pl\[export\]'"
    ):
        export(["--ckpt_path", csv_run["run_dir"], "--output", "model.onnx"])
