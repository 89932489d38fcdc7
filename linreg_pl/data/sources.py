"""Where regression data comes from: each source's ``load()`` returns a validated ``Table``.

Sources are chosen in config by class path (``--data.source CSVSource``), so each one documents
its parameters in its signature and checks them where they enter. CSV files: ``linreg_pl.data.csv``;
streamed Parquet/CSV folders: ``linreg_pl.data.streaming``.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from linreg_pl.errors import InputError


@dataclass
class Table:
    """Features ``x`` (n, d) and targets ``y`` (n, t) as float64, with names and known truth.

    ``true_weight`` (t, d) and ``true_bias`` (t,) are the generating parameters when the source
    knows them (synthetic sets), else None. ``levels`` maps each categorical feature column, whose
    ``x`` holds each row's index into them, to its sorted levels (``linreg_pl.data.encoding``).
    ``weight`` (n,) holds the rows' weights for weighted least squares, None for equal weights.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    true_weight: np.ndarray | None = None
    true_bias: np.ndarray | None = None
    levels: dict[str, list] | None = None
    weight: np.ndarray | None = None


class DataSource:
    """Base class of the data sources; subclasses implement ``load``.

    ``standardize_by_default`` says whether features are standardized when the data module's
    ``standardize_features`` is left unset: off for the textbook sets, whose lessons train on the
    raw x, on for real data whose columns differ in scale.
    """

    standardize_by_default = False
    # What a categorical level that the training rows lack means in validation and test rows.
    unseen_levels = "error"

    def __new__(cls, *args, **kwargs):
        # Keep the arguments as given, so that config() can describe the source in plain values.
        # (Copying and unpickling call __new__ without arguments, then restore the attributes.)
        source = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind_partial(source, *args, **kwargs)
        bound.apply_defaults()
        source.given_arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        return source

    def load(self) -> Table:
        raise NotImplementedError

    def config(self) -> dict:
        """``{"class_path": ..., "init_args": ...}`` in plain values: what a checkpoint stores to
        rebuild this source (paths made absolute, so it works from any directory)."""
        init_args = {name: _plain(value) for name, value in self.given_arguments.items()}
        return {"class_path": f"{type(self).__module__}.{type(self).__name__}", "init_args": init_args}


class SyntheticLinear(DataSource):
    """y = x @ weight.T + bias + noise, with x drawn uniform in [low, high) or standard normal.

    Parameters
    ----------
    weight : list of float, or list of lists of float
        True weights: one list per target (a flat list means one target).
    bias : float or list of float
        True bias, one per target.
    n_samples : int
        Number of rows to draw.
    distribution : {"normal", "uniform"}
        Input distribution: N(0, 1), or uniform in [low, high).
    low, high : float
        Bounds of the uniform distribution.
    noise : float
        Standard deviation of the Gaussian noise added to y.
    seed : int
        Seed of the generator: the same seed gives the same data.

    Examples
    --------
    >>> table = SyntheticLinear(weight=[2.0, -3.4], bias=4.2, n_samples=5).load()
    >>> table.x.shape, table.y.shape, table.true_weight.tolist(), table.true_bias.tolist()
    ((5, 2), (5, 1), [[2.0, -3.4]], [4.2])
    """

    def __init__(
        self,
        weight: list[float] | list[list[float]],
        bias: float | list[float] = 0.0,
        n_samples: int = 1000,
        distribution: Literal["normal", "uniform"] = "normal",
        low: float = 0.0,
        high: float = 1.0,
        noise: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.weight = _as_matrix(weight, "weight")
        n_targets = self.weight.shape[0]
        self.bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
        if self.bias.ndim != 1 or self.bias.size not in (1, n_targets):
            raise InputError(f"bias={bias!r} must be one number or one per target ({n_targets} targets in weight).")
        self.bias = np.broadcast_to(self.bias, (n_targets,)).copy()
        if n_samples < 1:
            raise InputError(f"n_samples={n_samples} must be a positive integer.")
        if distribution not in ("normal", "uniform"):
            raise InputError(f"distribution={distribution!r} must be 'normal' or 'uniform'.")
        if distribution == "uniform" and not low < high:
            raise InputError(f"low={low} must be below high={high} for the uniform distribution.")
        if noise < 0:
            raise InputError(f"noise={noise} must be >= 0 (it is a standard deviation).")
        self.n_samples, self.distribution = n_samples, distribution
        self.low, self.high, self.noise, self.seed = low, high, noise, seed

    def load(self) -> Table:
        rng = np.random.default_rng(self.seed)
        n_targets, n_features = self.weight.shape
        shape = (self.n_samples, n_features)
        if self.distribution == "uniform":
            x = rng.uniform(self.low, self.high, size=shape)
        else:
            x = rng.standard_normal(size=shape)
        y = x @ self.weight.T + self.bias + self.noise * rng.standard_normal((self.n_samples, n_targets))
        return Table(
            name="synthetic",
            x=x,
            y=y,
            feature_names=[f"x{i}" for i in range(n_features)],
            target_names=[f"y{i}" for i in range(n_targets)] if n_targets > 1 else ["y"],
            true_weight=self.weight.copy(),
            true_bias=self.bias.copy(),
        )


class SyntheticCurve(DataSource):
    """y = sin(frequency * x) + curvature * x² + noise, x uniform in [low, high): a curved relation
    that no line fits, where a small network (``configs/model/mlp.yaml``) beats the linear model.

    Parameters
    ----------
    n_samples : int
        Number of rows to draw.
    low, high : float
        Bounds of the uniform distribution of x.
    frequency : float
        Frequency of the sine.
    curvature : float
        Weight of the quadratic term.
    noise : float
        Standard deviation of the Gaussian noise added to y: the best test MSE any model can reach
        is about its square.
    seed : int
        Seed of the generator: the same seed gives the same data.

    Examples
    --------
    >>> table = SyntheticCurve(n_samples=4, noise=0.0).load()
    >>> bool(np.allclose(table.y[:, 0], np.sin(1.5 * table.x[:, 0]) + 0.3 * table.x[:, 0] ** 2))
    True
    """

    def __init__(
        self,
        n_samples: int = 1000,
        low: float = -3.0,
        high: float = 3.0,
        frequency: float = 1.5,
        curvature: float = 0.3,
        noise: float = 0.1,
        seed: int = 0,
    ) -> None:
        if n_samples < 1:
            raise InputError(f"n_samples={n_samples} must be a positive integer.")
        if not low < high:
            raise InputError(f"low={low} must be below high={high}.")
        if noise < 0:
            raise InputError(f"noise={noise} must be >= 0 (it is a standard deviation).")
        self.n_samples, self.low, self.high, self.seed = n_samples, low, high, seed
        self.frequency, self.curvature, self.noise = frequency, curvature, noise

    def load(self) -> Table:
        rng = np.random.default_rng(self.seed)
        x = rng.uniform(self.low, self.high, size=(self.n_samples, 1))
        y = np.sin(self.frequency * x) + self.curvature * x**2 + self.noise * rng.standard_normal(x.shape)
        return Table(name="curve", x=x, y=y, feature_names=["x"], target_names=["y"])


class Points(DataSource):
    """Explicit points written in the config, e.g. the four-point lesson y = 2x + 3 on x = 1..4.

    Parameters
    ----------
    x : list of float, or list of lists of float
        Inputs: one number per row (one feature) or one list per row.
    y : list of float, or list of lists of float
        Targets: one number per row (one target) or one list per row.
    true_weight, true_bias : optional
        The parameters that generated the points, when known, to report beside the learned ones.
    weight : list of float, optional
        One weight per row for weighted least squares (finite, >= 0, not all 0).

    Examples
    --------
    >>> t = Points(x=[1, 2, 3, 4], y=[5, 7, 9, 11], true_weight=[2.0], true_bias=3.0).load()
    >>> t.x.ravel().tolist(), t.y.ravel().tolist()
    ([1.0, 2.0, 3.0, 4.0], [5.0, 7.0, 9.0, 11.0])
    """

    def __init__(
        self,
        x: list[float] | list[list[float]],
        y: list[float] | list[list[float]],
        true_weight: list[float] | list[list[float]] | None = None,
        true_bias: float | list[float] | None = None,
        weight: list[float] | None = None,
    ) -> None:
        self.x = _as_rows(x, "x")
        self.y = _as_rows(y, "y")
        if len(self.x) != len(self.y):
            raise InputError(f"x has {len(self.x)} rows but y has {len(self.y)}: give one y per x.")
        self.weight = None if weight is None else checked_weights(weight, "weight")
        if self.weight is not None and len(self.weight) != len(self.x):
            raise InputError(f"weight has {len(self.weight)} values but x has {len(self.x)} rows: give one per row.")
        self.true_weight = None if true_weight is None else _as_matrix(true_weight, "true_weight")
        self.true_bias = None if true_bias is None else np.atleast_1d(np.asarray(true_bias, float))
        if self.true_weight is not None and self.true_weight.shape != (self.y.shape[1], self.x.shape[1]):
            raise InputError(
                f"true_weight has shape {self.true_weight.shape} but the points have "
                f"{self.x.shape[1]} feature(s) and {self.y.shape[1]} target(s)."
            )

    def load(self) -> Table:
        n_features, n_targets = self.x.shape[1], self.y.shape[1]
        return Table(
            name="points",
            x=self.x,
            y=self.y,
            feature_names=[f"x{i}" for i in range(n_features)] if n_features > 1 else ["x"],
            target_names=[f"y{i}" for i in range(n_targets)] if n_targets > 1 else ["y"],
            true_weight=self.true_weight,
            true_bias=self.true_bias,
            weight=self.weight,
        )


class MakeRegression(DataSource):
    """scikit-learn's ``make_regression``; its generating coefficients are kept as the truth.

    Under noise the least-squares optimum differs from the generating coefficients, so compare a
    trained model with the exact least-squares answer too (the run report prints both).
    """

    def __init__(
        self,
        n_samples: int = 100,
        n_features: int = 1,
        n_informative: int | None = None,
        n_targets: int = 1,
        bias: float = 0.0,
        noise: float = 0.0,
        random_state: int | None = 0,
    ) -> None:
        for name, value in (("n_samples", n_samples), ("n_features", n_features), ("n_targets", n_targets)):
            if value < 1:
                raise InputError(f"{name}={value} must be a positive integer.")
        if noise < 0:
            raise InputError(f"noise={noise} must be >= 0 (it is a standard deviation).")
        self.kwargs = dict(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=n_features if n_informative is None else n_informative,
            n_targets=n_targets,
            bias=bias,
            noise=noise,
            random_state=random_state,
        )

    def load(self) -> Table:
        from sklearn.datasets import make_regression

        x, y, coef = make_regression(coef=True, **self.kwargs)
        # make_regression returns y of shape (n,) for one target: keep targets 2-D everywhere.
        y = y.reshape(len(y), -1)
        weight = np.asarray(coef, dtype=np.float64).reshape(x.shape[1], -1).T
        n_targets = y.shape[1]
        return Table(
            name="make_regression",
            x=x.astype(np.float64),
            y=y.astype(np.float64),
            feature_names=[f"x{i}" for i in range(x.shape[1])],
            target_names=[f"y{i}" for i in range(n_targets)] if n_targets > 1 else ["y"],
            true_weight=weight,
            true_bias=np.full(n_targets, float(self.kwargs["bias"])),
        )


class SklearnDataset(DataSource):
    """A regression set bundled with scikit-learn (offline): ``diabetes``, or ``linnerud``
    (three targets: Weight, Waist, Pulse)."""

    standardize_by_default = True

    def __init__(self, name: Literal["diabetes", "linnerud"] = "diabetes") -> None:
        if name not in ("diabetes", "linnerud"):
            raise InputError(f"name={name!r} is not a bundled dataset; use 'diabetes' or 'linnerud'.")
        self.name = name

    def load(self) -> Table:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{self.name}")()
        y = np.asarray(bunch.target, dtype=np.float64)
        y = y.reshape(len(y), -1)
        target_names = list(getattr(bunch, "target_names", None) or ["target"])
        return Table(
            name=self.name,
            x=np.asarray(bunch.data, dtype=np.float64),
            y=y,
            feature_names=[str(n) for n in bunch.feature_names],
            target_names=[str(n) for n in target_names],
        )


def checked_weights(values, name: str) -> np.ndarray:
    """Row weights as float64 (n,): finite, >= 0, and not all zero (weighted least squares divides
    by their sum)."""
    try:
        weight = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{name} must hold numbers (row weights), got {values!r}.") from None
    if bad := np.flatnonzero(~np.isfinite(weight) | (weight < 0)).tolist():
        raise InputError(
            f"{name} holds {weight[bad[0]]:g} on data row {bad[0] + 1}; row weights must be finite numbers >= 0."
        )
    if not weight.sum() > 0:
        raise InputError(f"{name} sums to 0; give at least one row a positive weight.")
    return weight


def _plain(value):
    """A value a weights_only checkpoint can hold: no arrays or path objects."""
    if isinstance(value, os.PathLike):
        return str(Path(os.fspath(value)).resolve())
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _as_rows(values, name: str) -> np.ndarray:
    """A list of numbers (one column) or a list of equal-length lists, as a 2-D float array."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}={values!r} must be a list of numbers or of equal-length lists of numbers.") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"{name}={values!r} must be a non-empty list of numbers or of equal-length lists.")
    if not np.isfinite(array).all():
        raise InputError(f"{name}={values!r} holds a NaN or infinite value; give finite numbers.")
    return array


def _as_matrix(weight, name: str) -> np.ndarray:
    """Weights as (n_targets, n_features): a flat list is one target's weights."""
    matrix = _as_rows(weight, name)
    return matrix.T if np.ndim(weight) == 1 else matrix
