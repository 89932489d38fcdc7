import numpy as np
import pytest
import torch

from linreg_pl import InputError, Points, RegressionDataModule, Scaling, SyntheticLinear
from linreg_pl.data.csv import CSVSource
from linreg_pl.datamodule import InMemoryBatches
from tests.helpers import lstsq_with_intercept


def d2l(**kwargs):
    return RegressionDataModule(SyntheticLinear(weight=[2.0, -3.4], bias=4.2), **kwargs)


def test_splits_are_disjoint_cover_the_data_and_are_reproducible():
    dm = d2l(val_fraction=0.15, test_fraction=0.2, seed=5)
    parts = [dm.indices[s] for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [650, 150, 200]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1000))
    again = d2l(val_fraction=0.15, test_fraction=0.2, seed=5)
    other = d2l(val_fraction=0.15, test_fraction=0.2, seed=6)
    assert all(np.array_equal(dm.indices[s], again.indices[s]) for s in dm.indices)
    assert not np.array_equal(dm.indices["test"], other.indices["test"])


def test_empty_split_is_scored_on_the_training_rows():
    dm = RegressionDataModule(Points(x=[1, 2, 3, 4], y=[5, 7, 9, 11]), val_fraction=0, test_fraction=0, batch_size=None)
    assert dm.split_sizes == {"train": 4, "val": 0, "test": 0}
    assert dm.evaluated_split("test") == "train"
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 1) and y.shape == (4, 1)


def test_scaler_is_fitted_on_the_training_split_only():
    dm = d2l(standardize_features=True, standardize_target=True)
    x_train, y_train = dm.arrays("train")
    np.testing.assert_allclose(dm.scaling.feature_mean, x_train.mean(0))
    np.testing.assert_allclose(dm.scaling.feature_scale, x_train.std(0))
    np.testing.assert_allclose(dm.scaling.target_mean, y_train.mean(0))
    x_all = dm.table.x
    assert not np.allclose(dm.scaling.feature_mean, x_all.mean(0))


def test_standardization_default_follows_the_source(tmp_path):
    assert d2l().standardize_features is False
    path = tmp_path / "d.csv"
    path.write_text("a,y\n" + "".join(f"{i},{2 * i}\n" for i in range(20)))
    assert RegressionDataModule(CSVSource(str(path), target="y")).standardize_features is True


def test_original_unit_mapping_is_exact_against_a_direct_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * [1, 100, 0.01] + [5, -300, 2]
    y = x @ np.array([[1.5, 0.02, 300], [-2, 0.01, 50]]).T + [7, -3] + rng.normal(size=(200, 2))
    scaling = Scaling(x.mean(0), x.std(0), y.mean(0), y.std(0))
    weight_s, bias_s = lstsq_with_intercept(
        (x - scaling.feature_mean) / scaling.feature_scale, (y - scaling.target_mean) / scaling.target_scale
    )
    weight, bias = scaling.to_original_units(weight_s, bias_s)
    direct_weight, direct_bias = lstsq_with_intercept(x, y)
    np.testing.assert_allclose(weight, direct_weight, rtol=1e-9)
    np.testing.assert_allclose(bias, direct_bias, rtol=1e-9)


def test_training_batches_are_shuffled_per_epoch_and_cover_every_row():
    x = torch.arange(10.0)[:, None]
    epoch = [0]
    batches = InMemoryBatches(x, x * 2, batch_size=4, shuffle=True, seed=1, epoch=lambda: epoch[0])
    assert len(batches) == 3
    first = torch.cat([b[0] for b in batches]).ravel()
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, torch.cat([b[0] for b in batches]).ravel())  # same epoch, same order
    epoch[0] = 1
    assert not torch.equal(first, torch.cat([b[0] for b in batches]).ravel())
    for bx, by in batches:
        assert torch.equal(by, bx * 2)


@pytest.mark.parametrize("train, steps_per_batch", [(True, 1), (True, 2), (False, 1)])
def test_batches_shard_across_ranks_every_row_once_with_equal_training_steps(train, steps_per_batch):
    x = torch.arange(11.0)[:, None]
    per_rank = [
        list(InMemoryBatches(x, x, 2, True, rank=r, world_size=2, train=train, steps_per_batch=steps_per_batch))
        for r in (0, 1)
    ]
    pieces = [b for batches in per_rank for b in batches]
    if steps_per_batch > 1:  # Lightning batches of several mini-batches
        pieces = [mini for batch in pieces for mini in batch]
    assert sorted(torch.cat([bx for bx, _ in pieces]).ravel().tolist()) == list(range(11))  # every row once
    if train:  # DDP all-reduces at every step: the ranks' Lightning batches and optimizer steps pair up
        assert len(per_rank[0]) == len(per_rank[1])
        steps = [sum(len(b) if steps_per_batch > 1 else 1 for b in batches) for batches in per_rank]
        assert steps[0] == steps[1]


def test_full_batch_is_one_batch():
    dm = d2l(batch_size=None)
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and batches[0][0].shape == (800, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(val_fraction=1.0), r"data.val_fraction=1.0 must be in \[0, 1\)"),
        (dict(test_fraction=-0.1), r"data.test_fraction=-0.1 must be in \[0, 1\)"),
        (dict(val_fraction=0.5, test_fraction=0.5), "must be below 1"),
        (dict(batch_size=0), "data.batch_size=0 must be >= 1"),
    ],
)
def test_bad_split_and_batch_parameters(kwargs, match):
    with pytest.raises(InputError, match=match):
        d2l(**kwargs)


def test_too_few_rows_for_the_splits():
    with pytest.raises(InputError, match="has 2 rows, too few"):
        RegressionDataModule(Points(x=[1, 2], y=[1, 2]), val_fraction=0.1, test_fraction=0.1)


@pytest.mark.parametrize(
    "x, y, match",
    [
        ([1, 2, 3, 1e39], [1, 2, 3, 4], r"\['x'\] hold values up to 1e\+39, too large for float32 .*64-true"),
        ([1, 2, 3, 4], [1, 2, 3, 1e19], r"\['y'\] hold values up to 1e\+19, too large for float32 training on 4 rows"),
        ([1, 2, 3, 4], [1e-30, 2e-30, 0, 1e-30], r"\['y'\] hold values no larger than 2e-30, too small for float32"),
    ],
)
def test_values_float32_cannot_square_are_refused_once_the_precision_is_known(x, y, match):
    dm = RegressionDataModule(Points(x=x, y=y), val_fraction=0, test_fraction=0, batch_size=None)  # float64 is fine
    with pytest.raises(InputError, match=match):
        dm.setup("fit")  # no Trainer: float32


def test_the_range_limit_is_where_float32_sums_of_squares_overflow():
    # 4 rows: sqrt(float32 max / 4) = 9.2e18. Independent check: the float32 sum of squares itself.
    for value, refused in ((9e18, False), (1e19, True)):
        y = [value, -value, value, value]  # not constant: a constant target is refused on its own
        assert torch.isinf(torch.tensor(y, dtype=torch.float32).square().sum()) == refused
        dm = RegressionDataModule(Points(x=[1, 2, 3, 4], y=y), val_fraction=0, test_fraction=0)
        if refused:
            with pytest.raises(InputError, match="too large for float32"):
                dm.setup("fit")
        else:
            dm.setup("fit")


def test_values_float64_cannot_square_are_refused_on_load():
    with pytest.raises(InputError, match=r"\['y'\] .* too large for float64 .*rescale them"):
        RegressionDataModule(Points(x=[1, 2, 3, 4], y=[1, 2, 3, 1e300]), val_fraction=0, test_fraction=0)


@pytest.mark.parametrize("precision, dtype", [("64-true", torch.float64), ("32-true", torch.float32)])
def test_batches_follow_the_trainer_precision(precision, dtype):
    import lightning as L

    from linreg_pl import LinearRegression

    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch)

    y = [1e30, 2e30, 3e30, 5e30] if dtype == torch.float64 else [1.0, 2.0, 3.0, 5.0]
    dm = RegressionDataModule(Points(x=[1, 2, 3, 4], y=y), val_fraction=0, test_fraction=0, batch_size=None)
    trainer = L.Trainer(
        precision=precision,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    trainer.fit(LinearRegression(n_features=1), datamodule=dm)
    x_batch, y_batch = seen[0]
    assert x_batch.dtype == y_batch.dtype == dtype
    shuffled = np.sort(y_batch.numpy().ravel())
    np.testing.assert_array_equal(shuffled, np.asarray(y, dtype=dtype_to_numpy(dtype)))


def test_64_true_accepts_values_beyond_float32():
    import lightning as L

    dm = RegressionDataModule(Points(x=[1, 2, 3, 4], y=[1e39, 2e39, 3e39, 5e39]), val_fraction=0, test_fraction=0)
    dm.trainer = L.Trainer(precision="64-true", logger=False, enable_progress_bar=False)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert y.dtype == torch.float64 and sorted(y.ravel().tolist()) == [1e39, 2e39, 3e39, 5e39]


def dtype_to_numpy(dtype: torch.dtype) -> type:
    return {torch.float64: np.float64, torch.float32: np.float32}[dtype]


def test_constant_feature_cannot_be_standardized():
    with pytest.raises(InputError, match=r"\['x0'\] are constant .*standardize_features=false"):
        RegressionDataModule(
            Points(x=[[1, 1], [1, 2], [1, 3], [1, 5]], y=[1, 2, 3, 4]),
            val_fraction=0,
            test_fraction=0,
            standardize_features=True,
        )


def test_weights_and_feature_count_must_agree():
    with pytest.raises(InputError, match="true_weight has shape"):
        Points(x=[[1, 2], [3, 4]], y=[1, 2], true_weight=[1.0, 2.0, 3.0])


def test_steps_per_batch_groups_the_same_mini_batches_in_the_same_order():
    x = torch.arange(23.0)[:, None]
    single = list(InMemoryBatches(x, x, batch_size=4, shuffle=True, seed=3))
    grouped = list(InMemoryBatches(x, x, batch_size=4, shuffle=True, seed=3, steps_per_batch=3))
    assert len(grouped) == 2 and [len(chunk) for chunk in grouped] == [3, 3]  # 12 + 11 rows
    flattened = [piece for chunk in grouped for piece in chunk]
    assert len(flattened) == len(single)
    for (gx, gy), (sx, sy) in zip(flattened, single, strict=True):
        assert torch.equal(gx, sx) and torch.equal(gy, sy)


def test_steps_per_batch_must_be_positive():
    with pytest.raises(InputError, match="data.steps_per_batch=0 must be an integer >= 1, or auto"):
        d2l(steps_per_batch=0)


@pytest.mark.slow
def test_an_offset_float32_cannot_resolve_is_refused_and_float64_reaches_least_squares(train_run, in_tmp):
    rng = np.random.default_rng(0)
    t = 1.7e9 + rng.uniform(0, 1000, 300)  # a timestamp: float32 rounds it in steps of 128
    y = 0.01 * (t - 1.7e9) + rng.normal(size=300)
    (in_tmp / "ts.csv").write_text("t,y\n" + "".join(f"{a:.17g},{b:.17g}\n" for a, b in zip(t, y, strict=True)))
    source = ["--data.source=CSVSource", "--data.source.path=ts.csv", "--data.source.target=y"]
    with pytest.raises(InputError, match=r"column\(s\) \['t'\] .* float32 rounds in steps of 128 .* 64-true"):
        train_run(*source)
    summary = train_run(*source, "--trainer.precision=64-true")
    x_train, y_train = RegressionDataModule(CSVSource(in_tmp / "ts.csv", "y")).arrays("train")
    weight, _ = lstsq_with_intercept(x_train - x_train.mean(axis=0), y_train)  # centred: well conditioned
    assert summary["learned"]["weight"][0][0] == pytest.approx(weight[0, 0], rel=1e-6)


def test_a_table_too_wide_for_the_exact_reference_is_refused_before_any_pass(train_run, in_tmp):
    columns = [f"x{j}" for j in range(2000)]
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(300, 2001)).round(3)
    (in_tmp / "wide.csv").write_text(
        ",".join([*columns, "y"]) + "\n" + "\n".join(",".join(map(str, row)) for row in rows) + "\n"
    )
    with pytest.raises(InputError, match=r"2,000 feature columns, more than the 1,000 .* --data.source.features"):
        train_run("--data.source=CSVSource", "--data.source.path=wide.csv", "--data.source.target=y")
    assert not (in_tmp / "logs").exists()
