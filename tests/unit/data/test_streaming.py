"""Streamed files (linreg_pl.data.streaming): every row exactly once on any number of processes and
workers, deterministic shuffles, one clear error per bad file, and the in-memory answers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from linreg_pl import InputError, ParquetSource, RegressionDataModule
from linreg_pl.data import streaming
from linreg_pl.data.streaming import SPLITS, row_hash, write_linear_dataset
from linreg_pl.exact.solvers import Moments
from tests.helpers import CONFIGS, ROOT, lstsq_with_intercept, run_in_process, script_command, train_in

SEED, VAL, TEST = 0, 0.1, 0.1


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """1,000 rows in files of 300 (row groups of 70): 16 fragments of unequal sizes."""
    path = tmp_path_factory.mktemp("parquet")
    write_linear_dataset(path, rows=1000, features=3, rows_per_file=300, row_group_size=70, noise=0.1)
    return path


def reference_splits(folder: Path, pattern: str = "*.parquet") -> dict[str, np.ndarray]:
    """Each split's rows [x, y] read by pandas and split by the documented hash, in float64."""
    splits = {split: [] for split in SPLITS}
    for path in sorted(folder.glob(pattern)):
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        u = row_hash(SEED, path.name, np.arange(len(frame), dtype=np.uint64))
        code = np.where(u < TEST, 2, np.where(u < TEST + VAL, 1, 0))
        for index, split in enumerate(SPLITS):
            splits[split].append(frame.to_numpy(np.float64)[code == index])
    return {split: np.concatenate(rows) for split, rows in splits.items()}


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def batches_of(dm, split: str, rank: int, world_size: int, train: bool, epoch: int = 0) -> list:
    loader = dm.stream.loader(
        split, dm.batch_size, rank, world_size, train=train, shuffle=dm.shuffle, epoch=lambda: epoch
    )
    return [torch.cat([x, y], dim=1).double().numpy() for x, y in loader]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine
@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_row_is_read_once_by_one_process_and_steps_are_equal(folder, world_size, num_workers):
    source = ParquetSource(str(folder), target="y", num_workers=num_workers, shuffle_rows=100)
    dm = RegressionDataModule(source, batch_size=16, seed=SEED, val_fraction=VAL, test_fraction=TEST)
    reference = reference_splits(folder)
    for split, train in (("train", True), ("val", False)):
        per_rank = [batches_of(dm, split, rank, world_size, train) for rank in range(world_size)]
        rows = np.concatenate([b for batches in per_rank for b in batches])
        np.testing.assert_array_equal(sorted_rows(rows), sorted_rows(reference[split].astype(np.float32)))
        if train:  # DDP pairs the ranks' gradient all-reduces: every rank steps equally often
            assert len({len(batches) for batches in per_rank}) == 1
            assert all(len(b) for batches in per_rank for b in batches)  # no empty (padding) batch


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_own_their_memory(folder, shuffle):
    """Each batch holds only its rows: a view would keep the whole read window alive with every
    batch, and a DataLoader worker would copy that window into shared memory for each batch (one
    target's (1, m) row transposed counts as contiguous, so .contiguous() kept a view)."""
    source = ParquetSource(str(folder), target="y", shuffle_rows=200)
    dm = RegressionDataModule(source, batch_size=16, shuffle=shuffle)
    for x, y in dm.stream.loader("train", 16, 0, 1, train=True, shuffle=shuffle):
        for tensor in (x, y):
            assert tensor.is_contiguous()
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def test_read_ahead_yields_every_item_in_order_and_raises_the_readers_error():
    assert list(streaming.read_ahead(iter(range(100)), depth=2)) == list(range(100))

    def failing():
        yield 1
        raise InputError("'part-3.parquet' could not be read")

    with pytest.raises(InputError, match="part-3.parquet"):
        list(streaming.read_ahead(failing(), depth=2))


def test_read_ahead_stops_its_thread_when_the_consumer_stops():
    """A run that ends mid-epoch (max_steps, an interrupt) must not leave a reader behind."""
    import threading

    before = set(threading.enumerate())
    items = streaming.read_ahead(iter(range(1000)), depth=2)
    assert next(items) == 0
    (reader,) = [t for t in threading.enumerate() if t not in before and t.name == "linreg_pl-read-ahead"]
    items.close()
    reader.join(timeout=5 * streaming.READ_AHEAD_POLL_S)
    assert not reader.is_alive()


def test_shuffle_is_a_function_of_seed_and_epoch(folder):
    dm = RegressionDataModule(ParquetSource(str(folder), target="y", shuffle_rows=64), batch_size=16)
    first, again, second = (batches_of(dm, "train", 0, 1, True, epoch) for epoch in (0, 0, 1))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    np.testing.assert_array_equal(sorted_rows(np.concatenate(first)), sorted_rows(np.concatenate(second)))
    in_order = RegressionDataModule(ParquetSource(str(folder), target="y"), batch_size=16, shuffle=False)
    rows = np.concatenate(batches_of(in_order, "train", 0, 1, True))
    np.testing.assert_array_equal(rows, reference_splits(folder)["train"].astype(np.float32))


def test_streamed_moments_and_scaling_equal_the_in_memory_ones(folder):
    dm = RegressionDataModule(ParquetSource(str(folder), target="y"), standardize_target=True)
    train = reference_splits(folder)["train"]
    expected = Moments.of(train[:, :3], train[:, 3:])
    assert dm.split_sizes == {split: len(rows) for split, rows in reference_splits(folder).items()}
    for world_size in (1, 2, 3):
        merged = Moments.empty(3, 1)
        for rank in range(world_size):
            for x, y, _ in dm.train_chunks(rank, world_size):
                assert x.dtype == np.float64
                merged = merged.merge(Moments.of(x, y))
        for moments in (merged, dm.stream.train_moments):
            assert moments.count == expected.count
            np.testing.assert_allclose(moments.mean, expected.mean, rtol=0, atol=1e-10)
            np.testing.assert_allclose(moments.comoment, expected.comoment, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dm.scaling.feature_mean, train[:, :3].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(dm.scaling.feature_scale, train[:, :3].std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(dm.scaling.target_scale, train[:, 3:].std(axis=0), rtol=1e-10)


@pytest.mark.parametrize("suffix", ["csv", "csv.gz"])
def test_csv_and_gzip_csv_stream_the_same_rows(folder, tmp_path, suffix):
    csv = tmp_path / "csv"
    write_linear_dataset(csv, rows=1000, features=3, rows_per_file=300, row_group_size=70, noise=0.1, format=suffix)
    x, y = RegressionDataModule(ParquetSource(str(csv), target="y")).arrays("train")
    expected = reference_splits(csv, f"*.{suffix}")["train"]
    np.testing.assert_allclose(np.hstack([x, y]), expected, rtol=1e-6)


def write(path: Path, **columns) -> None:
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize(
    "bad_file, expected",
    [
        (lambda p: write(p, x0=[1.0], x1=[2.0], y=[3.0]), "column 'x2' is not in"),
        (lambda p: write(p, x0=["a"], x1=[2.0], x2=[1.0], y=[3.0]), "column 'x0' in"),
        (lambda p: p.write_bytes(b""), "could not be read as parquet"),
        (lambda p: write(p, x0=[1.0], x1=[float("nan")], x2=[1.0], y=[3.0]), "column 'x1' in"),
        (lambda p: write(p, x0=[1.0, None], x1=[2.0, 2.0], x2=[1.0, 1.0], y=[3.0, 1.0]), "missing value"),
    ],
    ids=["missing column", "wrong type", "empty file", "non-finite", "null"],
)
def test_a_bad_file_among_many_is_named_in_one_error(folder, tmp_path, bad_file, expected):
    for path in folder.glob("*.parquet"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    bad = tmp_path / "part-00002b.parquet"
    bad_file(bad)
    with pytest.raises(InputError, match=expected) as error:
        RegressionDataModule(ParquetSource(str(tmp_path), target="y"))
    assert str(bad) in str(error.value)


def test_non_numeric_csv_value_is_named_with_its_file(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n2,4\n3,6\n")
    (tmp_path / "b.csv").write_text("x,y\n1,2\nabc,4\n")
    with pytest.raises(InputError, match="invalid value 'abc'") as error:
        RegressionDataModule(ParquetSource(str(tmp_path), target="y"))
    assert str(tmp_path / "b.csv") in str(error.value)


def test_bad_paths_and_names_are_input_errors(folder, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="neither a file, a folder nor a glob"):
        ParquetSource(str(tmp_path / "nothing"), target="y")
    with pytest.raises(InputError, match="holds no"):
        ParquetSource(str(tmp_path), target="y")
    with pytest.raises(InputError, match="did you mean 'y'"):
        RegressionDataModule(ParquetSource(str(folder), target="Y"))
    monkeypatch.setattr(streaming, "MAX_MATERIALIZED_ROWS", 100)
    with pytest.raises(InputError, match="stream it with train_chunks"):
        RegressionDataModule(ParquetSource(str(folder), target="y")).arrays("train")


@pytest.mark.slow
def test_training_through_the_cli_reaches_least_squares(folder, train_run):
    summary = train_run(
        "--data.source", "ParquetSource", "--data.source.path", str(folder), "--data.source.target", "y",
        "--data.batch_size", "null", "--model.optimizer", "LBFGS", "--model.optimizer.lr", "1",
        "--trainer.max_epochs", "5",
    )  # fmt: skip
    train = reference_splits(folder)["train"]
    weight, bias = lstsq_with_intercept(train[:, :3], train[:, 3:])
    np.testing.assert_allclose(summary["exact"]["weight"], weight, atol=1e-10)
    np.testing.assert_allclose(summary["learned"]["weight"], weight, atol=1e-4)
    np.testing.assert_allclose(summary["learned"]["bias"], bias, atol=1e-4)
    assert summary["dataset"] == folder.name and summary["split_sizes"]["train"] == len(train)


def split_sizes(folder: Path, seed: int) -> dict[str, int]:
    return RegressionDataModule(ParquetSource(str(folder), "y"), seed=seed).split_sizes


def test_predict_covers_the_test_split(folder):
    import lightning as L

    from linreg_pl import LinearRegression

    dm = RegressionDataModule(ParquetSource(str(folder), target="y"), batch_size=32)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    predictions = trainer.predict(LinearRegression(3), datamodule=dm)  # Lightning rebuilds this loader
    assert sum(len(p) for p in predictions) == dm.split_sizes["test"] == len(reference_splits(folder)["test"])


def without_stopping(cwd: Path) -> Path:
    """A config whose StopAtOptimum never stops: 1 and 2 processes then run the same epochs (the
    two reach the optimum a float32 rounding apart, so they could stop an epoch apart)."""
    config = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("StopAtOptimum"):
            callback["init_args"] = {"when": "never"}
    path = cwd / "no_stop.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": config["trainer"]["callbacks"]}}))
    return path


def ddp_train(cwd: Path, folder: Path, *args: str, in_process: bool = False) -> dict:
    """A full-batch run on the streamed folder: a program of its own (DDP launches its ranks from
    one), or, for the one-process reference, in this process."""
    cwd.mkdir()
    args = (
        "--config", str(without_stopping(cwd)),
        "--data.source", "ParquetSource", "--data.source.path", str(folder),
        "--data.source.target", "y", "--data.batch_size", "null", "--model.optimizer.lr", "0.3",
        "--trainer.max_epochs", "10", "--trainer.enable_progress_bar", "false", *args,
    )  # fmt: skip
    if in_process:
        return train_in(cwd, *args)
    result = subprocess.run(script_command("train.py", *args), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = [Path(line) for line in result.stdout.splitlines() if (Path(line) / "summary.json").is_file()]
    return json.loads((run_dirs[-1] / "summary.json").read_text())


@pytest.mark.slow
def test_two_ddp_processes_match_one(folder, tmp_path):
    # An even training split: full-batch DDP averages the two halves' mean gradients, which is the
    # mean over all rows only when the halves are equal (an odd split weighs one row differently).
    seed = next(s for s in range(10) if split_sizes(folder, s)["train"] % 2 == 0)
    single = ddp_train(tmp_path / "one", folder, f"--data.seed={seed}", in_process=True)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    double = ddp_train(tmp_path / "two", folder, f"--data.seed={seed}", *ddp)
    assert double["split_sizes"] == single["split_sizes"]
    assert double["steps"] == single["steps"] == 10
    np.testing.assert_allclose(double["exact"]["weight"], single["exact"]["weight"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(double["exact"]["bias"], single["exact"]["bias"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(double["learned"]["weight"], single["learned"]["weight"], atol=1e-5)
    for key, value in single["test_metrics"].items():
        assert double["test_metrics"][key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.slow
def test_ddp_with_unequal_shares_and_workers_takes_equal_steps(folder, tmp_path):
    seed = next(s for s in range(10) if split_sizes(folder, s)["train"] % 2)
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    summary = ddp_train(
        tmp_path / "run", folder, f"--data.seed={seed}", "--data.batch_size=16", "--data.source.num_workers=1",
        "--model.optimizer.lr=0.05", "--trainer.max_epochs=2", *ddp,
    )  # fmt: skip
    n = summary["split_sizes"]["train"]
    assert summary["steps"] == 2 * -(-(n // 2) // 16)  # the larger share's extra row joins its last batch
    np.testing.assert_allclose(summary["learned"]["weight"], summary["exact"]["weight"], atol=0.02)


def test_make_dataset_refuses_a_folder_with_files_and_overwrite_replaces_it_whole(tmp_path):
    write_linear_dataset(tmp_path / "set", rows=300, features=3, rows_per_file=100)
    before = {p.name: p.read_bytes() for p in (tmp_path / "set").iterdir()}
    with pytest.raises(InputError, match="already holds files.*--overwrite"):
        write_linear_dataset(tmp_path / "set", rows=100, features=2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "set").iterdir()} == before
    truth = write_linear_dataset(tmp_path / "set", rows=100, features=2, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["part-00000.parquet", "truth.json"]
    assert json.loads((tmp_path / "set" / "truth.json").read_text()) == truth
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no partial folder left


def make_dataset_main(monkeypatch):
    """scripts/make_dataset.py's main, loaded here without scripts/_start.py (which would turn this
    process's garbage collection off and take its signals; tests/unit/test_packaging.py runs the
    script as a program)."""
    import importlib.util
    import types

    monkeypatch.setitem(sys.modules, "_start", types.ModuleType("_start"))
    spec = importlib.util.spec_from_file_location("make_dataset_script", ROOT / "scripts" / "make_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.main


def test_make_dataset_bad_flags_end_in_one_line(tmp_path, monkeypatch):
    main = make_dataset_main(monkeypatch)
    result = run_in_process(main, "--rows", "x", "--features", "2", "--out", "d", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: argument --rows: invalid int value: 'x' (--help lists the options)"
    ]


def test_parquet_categorical_and_weights_equal_the_csv_table(tmp_path):
    from linreg_pl import CSVSource
    from linreg_pl.exact.statistics import ols_inference

    grunfeld = Path(__file__).resolve().parents[2] / "data" / "grunfeld.csv"
    frame = pd.read_csv(grunfeld, comment="#").assign(w=lambda f: 1 / f["value"])
    frame.to_csv(tmp_path / "grunfeld.csv", index=False)
    folder = tmp_path / "parts"
    folder.mkdir()
    for part, rows in enumerate((slice(0, 100), slice(100, None))):  # two files, several row groups
        pq.write_table(
            pa.Table.from_pandas(frame[rows], preserve_index=False), folder / f"{part}.parquet", row_group_size=40
        )
    everything = {"val_fraction": 0, "test_fraction": 0}
    streamed = RegressionDataModule(ParquetSource(str(folder), target="invest", weight="w"), **everything)
    in_memory = RegressionDataModule(
        CSVSource(str(tmp_path / "grunfeld.csv"), target="invest", weight="w"), **everything
    )
    assert streamed.feature_names == in_memory.feature_names and "firm[T.IBM]" in streamed.feature_names
    assert streamed.encoding == in_memory.encoding
    results = [
        ols_inference(dm.train_statistics(), dm.feature_names, dm.target_names)["targets"]["invest"]
        for dm in (streamed, in_memory)
    ]
    for key in ("estimate", "std_error", "r_squared", "log_likelihood"):
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-9, err_msg=key)
    x, y, w = next(iter(streamed.stream.loader("train", 64, 0, 1, train=True)))
    assert x.shape == (64, len(streamed.feature_names)) and y.shape == (64, 1) and w.shape == (64,)
    # The level pass stops as soon as a column has too many (of 11 firms).
    with pytest.raises(InputError, match=r"'firm' in .* has \d+ levels, more than max_levels=5"):
        RegressionDataModule(ParquetSource(str(folder), target="invest", max_levels=5), **everything)
    negative = frame.assign(w=frame["w"].where(frame.index != 7, -1.0))
    pq.write_table(pa.Table.from_pandas(negative, preserve_index=False), folder / "0.parquet")
    (folder / "1.parquet").unlink()
    with pytest.raises(InputError, match=r"column 'w' in .* holds -1 on data row 8; row weights must be finite"):
        RegressionDataModule(ParquetSource(str(folder), target="invest", weight="w"), **everything)
