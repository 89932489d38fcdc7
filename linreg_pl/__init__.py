"""linreg_pl: linear regression with PyTorch Lightning."""

# ruff: noqa: E402
from linreg_pl.runtime.startup import import_lightning

import_lightning()  # before any module of ours imports it: without scipy.signal, ~0.9 s sooner

from linreg_pl.data.csv import CSVSource
from linreg_pl.data.sources import (
    DataSource,
    MakeRegression,
    Points,
    SklearnDataset,
    SyntheticCurve,
    SyntheticLinear,
)
from linreg_pl.data.streaming import ParquetSource, StreamingSource
from linreg_pl.datamodule import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.model import LinearRegression
from linreg_pl.nets import MLP, LinearHead
from linreg_pl.scaling import Scaling

__all__ = [
    "CSVSource",
    "DataSource",
    "InputError",
    "LinearHead",
    "LinearRegression",
    "MLP",
    "MakeRegression",
    "ParquetSource",
    "Points",
    "RegressionDataModule",
    "Scaling",
    "SklearnDataset",
    "StreamingSource",
    "SyntheticCurve",
    "SyntheticLinear",
]
