"""linreg_pl: linear regression with PyTorch Lightning."""

from linreg_pl.data import RegressionDataModule
from linreg_pl.errors import InputError
from linreg_pl.model import LinearRegression
from linreg_pl.scaling import Scaling
from linreg_pl.sources import CSVSource, DataSource, MakeRegression, Points, SklearnDataset, SyntheticLinear
from linreg_pl.streaming import ParquetSource, StreamingSource

__all__ = [
    "CSVSource",
    "DataSource",
    "InputError",
    "LinearRegression",
    "MakeRegression",
    "ParquetSource",
    "Points",
    "RegressionDataModule",
    "Scaling",
    "SklearnDataset",
    "StreamingSource",
    "SyntheticLinear",
]
