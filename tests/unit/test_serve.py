"""Use a trained model: evaluate and predict from a checkpoint, from the command line and Python."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from linreg_pl import InputError, LinearRegression, Points, RegressionDataModule
from linreg_pl.serve import evaluate, predict
from tests.helpers import CONFIGS, run_in_process


def test_evaluate_reproduces_the_metrics_printed_at_the_end_of_training(csv_run, in_tmp):
    result = evaluate(["--ckpt_path", csv_run["checkpoints"]["last"], "--output", "eval.json"])
    for name in ("mse", "rmse", "mae", "r2"):
        assert result[name] == pytest.approx(csv_run["test_metrics"][f"test/{name}"], rel=1e-6), name
    assert result["split"] == "test" and result["rows"] == csv_run["split_sizes"]["test"]
    assert (in_tmp / "eval.json").is_file()


def test_evaluate_a_run_directory_scores_the_model_its_run_reported_on_any_split(csv_run, in_tmp):
    run_dir = csv_run["run_dir"]
    for split in ("train", "val", "test", "all"):
        result = evaluate(["--ckpt_path", run_dir, "--split", split, "--output", f"{split}.json"])
        assert result["checkpoint"] == csv_run["checkpoints"]["last"]
        expected_rows = sum(csv_run["split_sizes"].values()) if split == "all" else csv_run["split_sizes"][split]
        assert result["rows"] == expected_rows
    # Independently: the learned parameters of the run on every row of the file, in float64.
    frame = pd.read_csv(CONFIGS / "example.csv")
    weight, bias = np.array(csv_run["learned"]["weight"]), np.array(csv_run["learned"]["bias"])
    residual = frame[["area_m2", "rooms", "age_years"]].to_numpy() @ weight.T + bias - frame[["price_k"]].to_numpy()
    assert result["mse"] == pytest.approx(np.mean(residual**2), rel=1e-5)


@pytest.mark.parametrize("output", ["checkpoint", "data", "directory"])
def test_an_output_that_is_an_input_or_a_directory_is_refused_and_nothing_changes(csv_run, in_tmp, output):
    checkpoint = csv_run["checkpoints"]["last"]
    pd.read_csv(CONFIGS / "example.csv").to_csv(in_tmp / "data.csv", index=False)
    (in_tmp / "out").mkdir()
    target = {"checkpoint": checkpoint, "data": str(in_tmp / "data.csv"), "directory": str(in_tmp / "out")}[output]
    before = {p: p.read_bytes() for p in in_tmp.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="is an input of this command|is a directory"):
        if output == "data":
            evaluate(["--ckpt_path", checkpoint, f"--data.source.path={target}", "--output", target])
        else:
            predict(["--ckpt_path", checkpoint, "--input", str(in_tmp / "data.csv"), "--output", target])
    assert {p: p.read_bytes() for p in in_tmp.rglob("*") if p.is_file()} == before


def test_evaluate_on_other_data_options(csv_run, in_tmp):
    result = evaluate(
        ["--ckpt_path", csv_run["checkpoints"]["last"], "--output", "eval.json", "--data.test_fraction=0.5"]
    )
    assert result["rows"] == 100


def test_a_checkpoint_of_an_earlier_version_evaluates_and_predicts(csv_run, in_tmp):
    # Until the data module settled it, the model took (and its checkpoints saved) steps_per_batch.
    checkpoint = torch.load(csv_run["checkpoints"]["last"], weights_only=True)
    checkpoint["hyper_parameters"]["steps_per_batch"] = 1
    torch.save(checkpoint, in_tmp / "earlier.ckpt")
    assert evaluate(["--ckpt_path", "earlier.ckpt", "--output", "eval.json"])["rows"] > 0
    frame = pd.read_csv(CONFIGS / "example.csv").drop(columns=["price_k"])
    frame.to_csv(in_tmp / "new.csv", index=False)
    predict(["--ckpt_path", "earlier.ckpt", "--input", "new.csv", "--output", "pred.csv"])
    assert len(pd.read_csv(in_tmp / "pred.csv")) == len(frame)


def test_predict_by_column_name_with_shuffled_columns_and_an_extra_one(csv_run, in_tmp):
    frame = pd.read_csv(CONFIGS / "example.csv").drop(columns=["price_k"])
    shuffled = frame[["age_years", "area_m2", "rooms"]].assign(note="passed through")
    shuffled.to_csv(in_tmp / "new.csv", index=False)
    predict(["--ckpt_path", csv_run["checkpoints"]["last"], "--input", "new.csv", "--output", "pred.csv"])
    written = pd.read_csv(in_tmp / "pred.csv")
    assert list(written.columns) == ["age_years", "area_m2", "rooms", "note", "price_k_predicted"]
    # Independently: the linear layer on the correctly ordered, standardized features, unscaled.
    model = LinearRegression.load_from_checkpoint(csv_run["checkpoints"]["last"], weights_only=True)
    x = torch.tensor(frame[["area_m2", "rooms", "age_years"]].to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        s = model.scaler
        expected = model.linear((x - s.feature_mean) / s.feature_scale) * s.target_scale + s.target_mean
    np.testing.assert_allclose(written["price_k_predicted"], expected[:, 0].numpy(), rtol=1e-6)


@pytest.mark.slow
def test_predict_multi_output(train_run, in_tmp):
    summary = train_run("--config", str(CONFIGS / "linnerud.yaml"), "--trainer.max_epochs=2")
    from sklearn.datasets import load_linnerud

    bunch = load_linnerud(as_frame=True)
    bunch.data.to_csv(in_tmp / "exercises.csv", index=False)
    predict(["--ckpt_path", summary["checkpoints"]["last"], "--input", "exercises.csv", "--output", "pred.csv"])
    written = pd.read_csv(in_tmp / "pred.csv")
    weight, bias = np.array(summary["learned"]["weight"]), np.array(summary["learned"]["bias"])
    expected = bunch.data.to_numpy() @ weight.T + bias
    np.testing.assert_allclose(
        written[["Weight_predicted", "Waist_predicted", "Pulse_predicted"]].to_numpy(), expected, rtol=1e-4
    )


def test_missing_feature_column_is_named(csv_run, in_tmp):
    pd.read_csv(CONFIGS / "example.csv").drop(columns=["rooms"]).to_csv(in_tmp / "new.csv", index=False)
    result = run_in_process(
        predict, "--ckpt_path", csv_run["checkpoints"]["last"], "--input", "new.csv", "--output", "p.csv", cwd=in_tmp
    )
    assert result.returncode == 2 and "column 'rooms' is not in 'new.csv'" in result.stderr
    assert not (in_tmp / "p.csv").exists()


def test_missing_values_in_prediction_input_name_the_fix_that_applies(csv_run, in_tmp):
    frame = pd.read_csv(CONFIGS / "example.csv")
    frame.loc[3, "rooms"] = None
    frame.to_csv(in_tmp / "gaps.csv", index=False)
    with pytest.raises(InputError, match=r"missing values \('rooms': 1\); fill them in\.$"):
        predict(["--ckpt_path", csv_run["checkpoints"]["last"], "--input", "gaps.csv", "--output", "p.csv"])


def test_checkpoint_of_another_model_is_refused(train_run, csv_run, in_tmp):
    d2l = train_run("--trainer.max_epochs=1")
    with pytest.raises(
        InputError, match=r"a model of 2 feature\(s\) and 1 target\(s\), but the data has 3 feature\(s\)"
    ):
        evaluate(
            [
                "--ckpt_path",
                d2l["checkpoints"]["last"],
                "--data.source=CSVSource",
                f"--data.source.path={CONFIGS / 'example.csv'}",
                "--data.source.target=price_k",
            ]
        )
    with pytest.raises(InputError, match=r"was trained on features \['area_m2', 'rooms', 'age_years'\]"):
        evaluate(
            [
                "--ckpt_path",
                csv_run["checkpoints"]["last"],
                f"--data.source.path={CONFIGS / 'example.csv'}",
                "--data.source.features=[rooms,area_m2,age_years]",
            ]
        )


def test_python_api_checkpoint_loads_safely_and_predicts(tmp_path):
    import lightning as L

    dm = RegressionDataModule(
        Points(x=[[1, 0], [0, 1], [1, 1], [2, 1]], y=[3, -1, 2, 5]),
        val_fraction=0,
        test_fraction=0,
        standardize_features=True,
        batch_size=None,
    )
    model = LinearRegression(
        n_features=2,
        feature_names=dm.feature_names,
        optimizer=lambda p: torch.optim.LBFGS(p, max_iter=100, line_search_fn="strong_wolfe"),
    )
    trainer = L.Trainer(
        max_epochs=3, logger=False, default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=dm)
    # The README's Python API: plain values only, so weights_only loading works.
    loaded = LinearRegression.load_from_checkpoint(trainer.checkpoint_callback.best_model_path, weights_only=True)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    np.testing.assert_allclose(loaded.predict(x)[:, 0], [3, -1, 2, 5], atol=1e-3)  # y = 3 x0 - x1, exactly
    assert loaded.predict(pd.DataFrame(x[:, ::-1], columns=["x1", "x0"])).tolist() == loaded.predict(x).tolist()


def test_evaluate_names_the_flag_for_a_run_directory_and_writes_into_that_run(csv_run, in_tmp):
    run_dir = csv_run["run_dir"]
    with pytest.raises(InputError, match=f"pass it as --ckpt_path {run_dir}"):
        evaluate([run_dir])
    evaluate(["--ckpt_path", run_dir])
    assert (Path(run_dir) / "evaluation.json").is_file() and not (in_tmp / "evaluation.json").exists()


def test_evaluate_on_data_without_a_feature_column_names_the_column(csv_run, in_tmp):
    pd.read_csv(CONFIGS / "example.csv").drop(columns=["age_years"]).to_csv(in_tmp / "less.csv", index=False)
    with pytest.raises(InputError, match=r"no column\(s\) \['age_years'\]"):
        evaluate(["--ckpt_path", csv_run["run_dir"], "--data.source.path", "less.csv", "--output", "e.json"])


def test_evaluate_split_choice_lists_the_choices(csv_run, in_tmp):
    with pytest.raises(InputError, match=r"--split bogus: expected one of 'all', 'train', 'val', 'test'"):
        evaluate(["--ckpt_path", csv_run["run_dir"], "--split", "bogus"])


def test_predict_copies_every_input_column_byte_for_byte(csv_run, in_tmp):
    predict(
        ["--ckpt_path", csv_run["checkpoints"]["last"], "--input", str(CONFIGS / "example.csv"), "--output", "p.csv"]
    )
    given = (CONFIGS / "example.csv").read_text().splitlines()
    written = (in_tmp / "p.csv").read_text().splitlines()
    assert [line.rpartition(",")[0] for line in written] == given  # '147.7' and '115.0' as they were
    assert written[0].endswith(",price_k_predicted")


def test_predict_refuses_infinite_features_and_writes_nothing(csv_run, in_tmp):
    frame = pd.read_csv(CONFIGS / "example.csv")
    frame.loc[4, "area_m2"] = np.inf
    frame.to_csv(in_tmp / "inf.csv", index=False)
    with pytest.raises(InputError, match=r"infinite values in column\(s\) \['area_m2'\] \(data row 5\)"):
        predict(["--ckpt_path", csv_run["checkpoints"]["last"], "--input", "inf.csv", "--output", "p.csv"])
    assert not (in_tmp / "p.csv").exists()


def test_predict_errors_name_its_own_options(csv_run, in_tmp, capsys):
    from linreg_pl.cli import run_command

    with pytest.raises(InputError, match="check the path given to --input"):
        predict(["--ckpt_path", csv_run["checkpoints"]["last"], "--input", "nope.csv", "--output", "p.csv"])
    unwritable = "/proc/linreg_pl_predictions.csv"  # no file can be created there, even by root
    args = [
        "--ckpt_path",
        csv_run["checkpoints"]["last"],
        "--input",
        str(CONFIGS / "example.csv"),
        "--output",
        unwritable,
    ]
    with pytest.raises(SystemExit):
        run_command(predict, args, output_option="--output")
    error = capsys.readouterr().err
    assert f"cannot write '{unwritable}'" in error and "with --output" in error and ".partial" not in error
